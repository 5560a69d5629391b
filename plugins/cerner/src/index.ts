/**
 * @ferry/plugin-cerner: Oracle Health (Cerner) Millennium FHIR R4 -- system-account auth
 * (client_credentials with HTTP Basic and explicit scopes, or private_key_jwt), incremental polling
 * and Group Bulk Data export sources, a normalising transform to canonical FHIR R4, and a
 * create/update (If-Match) write-back sink. Built on @ferry/fhir-vendor-kit.
 */
import { definePlugin } from '@ferry/core';
import {
  bulkSourceSchema,
  VendorConnections,
  vendorConnectionsToken,
  normalizeConfigSchema,
  pollSourceSchema,
  writeBackSchema,
} from '@ferry/fhir-vendor-kit';
import { CERNER_MRN_OID, CERNER_WRITE_TYPES } from './cerner-profile';
import { cernerFacadeProvider } from './facade/cerner.provider';
import { CernerWriteBackSink } from './sinks/cerner-fhir-write.sink';
import { CernerBulkSource } from './sources/cerner-bulk-export.source';
import { CernerPollSource } from './sources/cerner-fhir-poll.source';
import { CernerFhirTransform } from './transforms/cerner-fhir.transform';

export * from './cerner-profile';
export { CernerPollSource, CernerBulkSource, CernerFhirTransform, CernerWriteBackSink };
export { cernerFacadeProvider } from './facade/cerner.provider';

const auth = { method: 'client_secret_basic' as const, refreshSkewSec: 120 };

export const cernerPlugin = definePlugin({
  manifest: {
    id: 'cerner',
    version: '0.1.0',
    engine: '^0.1.0',
    description: 'Oracle Health (Cerner) Millennium FHIR R4: system accounts, polling, bulk export, write-back',
  },
  configSchema: normalizeConfigSchema([CERNER_MRN_OID]),
  register(reg) {
    // the engine's OAuth tokens, rate-limit buckets and running exports, shared with the other vendor plugins
    reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true });
    reg.addSourceType('cerner-fhir-poll', CernerPollSource, pollSourceSchema(auth));
    reg.addSourceType('cerner-bulk-export', CernerBulkSource, bulkSourceSchema(auth, ['group']));
    reg.addTransform(CernerFhirTransform);
    reg.addSinkType(
      'cerner-fhir-write',
      CernerWriteBackSink,
      writeBackSchema(auth, CERNER_WRITE_TYPES, CERNER_MRN_OID),
    );
    reg.registerFacadeProvider(
      'cerner',
      cernerFacadeProvider(reg.config, () => reg.container.resolve(vendorConnectionsToken)),
    );
  },
});
export default cernerPlugin;
