/** One jest run across every package. ts-jest transpiles only (isolatedModules); `npm run typecheck` (run by pretest) type-checks sources and tests. */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/core', '<rootDir>/packages', '<rootDir>/plugins', '<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  modulePathIgnorePatterns: ['<rootDir>/.*/dist/'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.jest.json' }],
  },
  moduleNameMapper: {
    '^@ferry/core$': '<rootDir>/core/src/index.ts',
    '^@ferry/plugin-([a-z0-9-]+)$': '<rootDir>/plugins/$1/src/index.ts',
    '^@ferry/(fhir-vendor-kit|testkit)$': '<rootDir>/packages/$1/src/index.ts',
  },
  setupFiles: ['reflect-metadata'],
  testTimeout: 30000,
  // Suites bind real ports and run real databases; two workers match this 2-core machine.
  maxWorkers: 2,
  // A worker that has run ~84 files holds 2.5-2.7 GB (V8's committed heap) and needs 0.6-0.7 s to free it at
  // exit on this machine: longer than jest's default 500 ms, after which it is force-killed and reported as a
  // leak. A real leak (a handle left open) still is, after 5 s. See README "Tests that leave nothing running".
  workerGracefulExitTimeout: 5000,
};
