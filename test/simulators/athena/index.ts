export * from './athena-simulator';
export * from './fixtures';
