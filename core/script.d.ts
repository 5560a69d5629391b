/**
 * Types for route `script` steps: `/** @type {import('@ferry/core/script').ScriptStep} *\/`
 * above `module.exports = (bundle, message, ferry) => ...` (with `// @ts-check`) lets an editor
 * type-check a script. See "Script steps" in the README.
 */
export * from './dist/pipeline/script-api';
