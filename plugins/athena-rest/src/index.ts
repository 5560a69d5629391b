import { definePlugin } from '@ferry/core';
import { VendorConnections, vendorConnectionsToken } from '@ferry/fhir-vendor-kit';
import { athenaSubscriptionsCommand } from './cli/subscriptions.command';
import { AthenaRestSink, athenaRestSinkSchema } from './sink/athena-rest.sink';
import { AthenaRestSource, athenaRestSourceSchema } from './source/athena-rest.source';
import { AthenaRestTransform } from './transform/athena.to-fhir';
import { athenaFacadeProvider } from './facade';

export * from './transform/athena.to-fhir';
export * from './transform/athena-chart.to-fhir';
export * from './source/athena-rest.source';
export * from './sink/athena-rest.sink';
export * from './cli/subscriptions.command';
export * from './facade';

/**
 * athenaOne proprietary REST ("v1"): OAuth client credentials, changed-data feeds, form-encoded
 * writes. Source and sink type `athena-rest`; a transform for `application/vnd.athena.*+json`.
 */
export const athenaRestPlugin = definePlugin({
  manifest: { id: 'athena-rest', version: '0.1.0', engine: '^0.1.0', description: 'athenaOne REST API: changed-data feeds, writes, canonical FHIR' },
  configSchema: {},
  register(reg) {
    // the engine's athena tokens and per-practice buckets, shared with athena-fhir
    reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true });
    reg.addSourceType('athena-rest', AthenaRestSource, athenaRestSourceSchema);
    reg.addSinkType('athena-rest', AthenaRestSink, athenaRestSinkSchema);
    reg.addTransform(AthenaRestTransform);
    reg.addCommand(athenaSubscriptionsCommand());
    reg.registerFacadeProvider('athena', athenaFacadeProvider(() => reg.container.resolve(vendorConnectionsToken)));
  },
});
export default athenaRestPlugin;
