/**
 * `import … from './errors'` (and `@ferry/core`) keep working: the error type, its helpers and the
 * error catalogue live in ./errors/ (index.ts, catalogue.ts). This file stays so that a build over
 * an older core/dist, which has dist/errors.js, does not pick that stale file up.
 */
export * from './errors/index';
