/**
 * @ferry/testkit: test a Ferry plugin against real parts in a few lines (PLUGINS.md "Testing").
 * - harness: a real SQLite store, the contexts the engine injects, a capturing logger;
 * - engine: a real engine from YAML over a temporary store;
 * - VendorSimulator: an HTTP vendor double (token endpoint, paging, 401/429/5xx/hang faults);
 * - FakeClock: time that moves when the test says;
 * - contract suites: runSourceContract, runSinkContract, runTransformContract.
 */
export * from './harness';
export * from './clock';
export * from './vendor-simulator';
export * from './engine';
export * from './contracts';
