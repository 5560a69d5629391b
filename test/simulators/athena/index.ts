export * from './athena-simulator';
export * from './fixtures';
export * from './harness';
