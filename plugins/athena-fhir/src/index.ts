import { definePlugin } from '@ferry/core';
import { VendorConnections, vendorConnectionsToken } from '@ferry/fhir-vendor-kit';
import { AthenaFhirSink, athenaFhirSinkSchema } from './sinks/athena-fhir.sink';
import { AthenaFhirSource, athenaFhirSourceSchema } from './sources/athena-fhir.source';
import { AthenaFhirTransform } from './transforms/athena-fhir.transform';

export * from './client/athena-fhir.client';
export * from './to-fhir/athena-fhir-canonical';
export * from './sources/athena-fhir.source';
export * from './sinks/athena-fhir.sink';
export * from './transforms/athena-fhir.transform';

/**
 * athenaOne FHIR R4: incremental `_lastUpdated` polling with `ah-practice` on every search, id
 * scheme mapped both ways, QuestionnaireResponse writes. Auth, rate limit and call policy come
 * from the athena-rest plugin's connection (one token per environment + client for both APIs).
 */
export const athenaFhirPlugin = definePlugin({
  manifest: {
    id: 'athena-fhir',
    version: '0.1.0',
    engine: '^0.1.0',
    dependsOn: ['athena-rest'],
    description: 'athenaOne FHIR R4 API',
  },
  configSchema: {},
  register(reg) {
    // provided by athena-rest too (the first wins): one per engine, shared by both athena plugins
    reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true });
    reg.addSourceType('athena-fhir', AthenaFhirSource, athenaFhirSourceSchema);
    reg.addSinkType('athena-fhir', AthenaFhirSink, athenaFhirSinkSchema);
    reg.addTransform(AthenaFhirTransform);
  },
});
export default athenaFhirPlugin;
