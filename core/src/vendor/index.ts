export * from './token-cache';
export * from './rate-limiter';
export * from './http-client';
export * from './resource-version';
