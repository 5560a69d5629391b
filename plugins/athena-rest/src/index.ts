import { definePlugin } from '@ferry/core';
import { VendorConnections, vendorConnectionsToken } from '@ferry/fhir-vendor-kit';
import { athenaSubscriptionsCommand } from './cli/subscriptions.command';
import { athenaFacadeProvider } from './facade/athena.provider';
import { AthenaRestSink, athenaRestSinkSchema } from './sinks/athena-rest.sink';
import { AthenaRestSource, athenaRestSourceSchema } from './sources/athena-rest.source';
import { AthenaRestTransform } from './transforms/athena-rest.transform';

export * from './to-fhir/athena-records';
export * from './to-fhir/athena-chart';
export * from './sources/athena-rest.source';
export * from './sinks/athena-rest.sink';
export * from './transforms/athena-rest.transform';
export * from './cli/subscriptions.command';
export * from './facade/athena.provider';

/**
 * athenaOne proprietary REST ("v1"): OAuth client credentials, changed-data feeds, form-encoded
 * writes. Source and sink type `athena-rest`; a transform for `application/vnd.athena.*+json`.
 */
export const athenaRestPlugin = definePlugin({
  manifest: {
    id: 'athena-rest',
    version: '0.1.0',
    engine: '^0.1.0',
    description: 'athenaOne REST API: changed-data feeds, writes, canonical FHIR',
  },
  configSchema: {},
  register(reg) {
    // the engine's athena tokens and per-practice buckets, shared with athena-fhir
    reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true });
    reg.addSourceType('athena-rest', AthenaRestSource, athenaRestSourceSchema);
    reg.addSinkType('athena-rest', AthenaRestSink, athenaRestSinkSchema);
    reg.addTransform(AthenaRestTransform);
    reg.addCommand(athenaSubscriptionsCommand());
    reg.registerFacadeProvider(
      'athena',
      athenaFacadeProvider(() => reg.container.resolve(vendorConnectionsToken)),
    );
  },
});
export default athenaRestPlugin;
