/** `type: epic-bulk-export`: the vendor kit's Bulk Data export source with Epic's profile. */
import { coreTokens, type SourceContext } from '@ferry/core';
import {
  BulkExportSource,
  type BulkSourceConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { epicProfile } from '../epic-profile';

@injectable()
export class EpicBulkSource extends BulkExportSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<BulkSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, epicProfile, shared);
  }
}
