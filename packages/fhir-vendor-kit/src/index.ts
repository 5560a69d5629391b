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
export * from './poller';
export { resourceMessage } from './sources/vendor-source';
export * from './sources/fhir-poll.source';
export * from './sources/bulk-export.source';
export * from './transforms/vendor-fhir.transform';
export * from './sinks/write-back.sink';
export * from './facade/vendor-fhir.provider';
export * from './athena';
export * from './testing';
