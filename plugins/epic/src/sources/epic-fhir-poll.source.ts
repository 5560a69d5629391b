/** `type: epic-fhir-poll`: the vendor kit's checkpointed FHIR poller with Epic's profile and search shapes. */
import { coreTokens, type SourceContext } from '@ferry/core';
import {
  FhirPollSource,
  type PollSourceConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { epicProfile, epicSpecProblem } from '../epic-profile';

@injectable()
export class EpicPollSource extends FhirPollSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<PollSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, epicProfile, epicSpecProblem, shared);
  }
}
