/** `type: cerner-fhir-poll`: the vendor kit's checkpointed FHIR poller with Cerner's profile, search shapes and page cap. */
import { coreTokens, type SourceContext } from '@ferry/core';
import {
  FhirPollSource,
  type PollSourceConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { cernerProfile, cernerSpecProblem } from '../cerner-profile';

@injectable()
export class CernerPollSource extends FhirPollSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<PollSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    // Cerner caps _count at 200.
    super(
      {
        ...ctx,
        config: { ...ctx.config, pageSize: Math.min(200, ctx.config.pageSize) },
      } as SourceContext<PollSourceConfig>,
      cernerProfile,
      cernerSpecProblem,
      shared,
    );
  }
}
