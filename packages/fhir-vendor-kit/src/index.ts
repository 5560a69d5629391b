/**
 * @ferry/fhir-vendor-kit: the machinery every vendor plugin shares (README.md here documents it).
 * SMART backend services (keys, connection), the paging FHIR client, the bulk $export client, the
 * checkpointed poller skeleton and the sources built on it, normalisation, the write-back sink,
 * and the athenaOne platform connection used by both athena plugins.
 */
export * from './keys';
export * from './vendor-connections';
export * from './connection';
export * from './fhir-client';
export * from './bulk-client';
export * from './normalize';
export * from './sources';
export * from './transform';
export * from './writeback.sink';
export * from './poller';
export * from './facade';
export * from './athena';
export * from './testing';
