/**
 * @ferry/plugin-epic: Epic FHIR R4 -- SMART Backend Services auth (RS384 JWT client assertions),
 * incremental polling and Bulk Data export sources, a normalising transform to canonical FHIR R4,
 * write-back sink, and `ferry epic jwks`. Built on @ferry/fhir-vendor-kit.
 */
import { definePlugin } from '@ferry/core';
import {
  bulkSourceSchema,
  VendorConnections,
  vendorConnectionsToken,
  pollSourceSchema,
  normalizeConfigSchema,
  writeBackSchema,
} from '@ferry/fhir-vendor-kit';
import { epicJwksCommand } from './cli/jwks.command';
import { EPIC_SANDBOX_MRN_OID, EPIC_WRITE_TYPES } from './epic-profile';
import { epicFacadeProvider } from './facade/epic.provider';
import { EpicWriteBackSink } from './sinks/epic-fhir-write.sink';
import { EpicBulkSource } from './sources/epic-bulk-export.source';
import { EpicPollSource } from './sources/epic-fhir-poll.source';
import { EpicFhirTransform } from './transforms/epic-fhir.transform';

export * from './epic-profile';
export { EpicPollSource, EpicBulkSource, EpicFhirTransform, EpicWriteBackSink };
export { epicJwksCommand, keysFromConfig } from './cli/jwks.command';
export { epicFacadeProvider } from './facade/epic.provider';

const auth = { method: 'private_key_jwt' as const, refreshSkewSec: 120 };

export const epicPlugin = definePlugin({
  manifest: {
    id: 'epic',
    version: '0.1.0',
    engine: '^0.1.0',
    description: 'Epic FHIR R4: SMART backend services, polling, bulk export, write-back',
  },
  configSchema: normalizeConfigSchema([EPIC_SANDBOX_MRN_OID]),
  register(reg) {
    // the engine's OAuth tokens, rate-limit buckets and running exports, shared with the other vendor plugins
    reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true });
    reg.addSourceType('epic-fhir-poll', EpicPollSource, pollSourceSchema(auth));
    reg.addSourceType('epic-bulk-export', EpicBulkSource, bulkSourceSchema(auth, ['group', 'patient', 'system']));
    reg.addTransform(EpicFhirTransform);
    reg.addSinkType(
      'epic-fhir-write',
      EpicWriteBackSink,
      writeBackSchema(auth, EPIC_WRITE_TYPES, EPIC_SANDBOX_MRN_OID),
    );
    reg.addCommand(epicJwksCommand);
    reg.registerFacadeProvider(
      'epic',
      epicFacadeProvider(reg.config, () => reg.container.resolve(vendorConnectionsToken)),
    );
  },
});
export default epicPlugin;
