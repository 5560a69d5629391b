/**
 * `type: cerner-bulk-export`: the vendor kit's Bulk Data export source with Cerner's profile (the
 * schema allows Group export only). Cerner needs a system read scope for every exported type.
 */
import { coreTokens, FerryError, type SourceContext } from '@ferry/core';
import {
  BulkExportSource,
  type BulkSourceConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { cernerProfile } from '../cerner-profile';

@injectable()
export class CernerBulkSource extends BulkExportSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<BulkSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, cernerProfile, shared);
    // Cerner needs a system read scope for every exported type (not Group.read): say so at startup.
    const scopes = ctx.config.auth.scopes;
    const missing = ctx.config.bulk.types.filter(
      (t) => !scopes.includes(`system/${t}.read`) && !scopes.includes(`system/${t}.rs`),
    );
    if (scopes.length && missing.length)
      throw new FerryError(
        'CONFIG_BULK_SCOPES',
        `sources.${ctx.id}: exporting ${missing.join(', ')} needs ${missing.map((t) => `system/${t}.read`).join(' ')} in auth.scopes`,
        { kind: 'config', retryable: false },
      );
  }
}
