/**
 * Oracle Health (Cerner) Millennium source, transform and sink classes. The FHIR client, bulk
 * client, sources, normalisation and write-back logic are shared with the Epic plugin
 * (@ferry/plugin-epic exports them); this file holds what differs: the vendor profile (content
 * type, id prefix, MRN system), the auth default (system account, HTTP Basic, explicit scopes,
 * ~570 s tokens refreshed 120 s ahead), Group-only bulk export and the writable types (with update).
 */
import { coreTokens, FerryError, type SinkContext, type SourceContext } from '@ferry/core';
import {
  BulkExportSource,
  FhirPollSource,
  VendorFhirTransform,
  vendorConnectionsToken,
  WriteBackSink,
  type BulkSourceConfig,
  type NormalizeConfig,
  type PollResourceSpec,
  type PollSourceConfig,
  type VendorConnections,
  type VendorProfile,
  type WriteBackConfig,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';

export const CERNER_CONTENT_TYPE = 'application/vnd.cerner.fhir+json';
export const CERNER_MRN_OID = 'urn:oid:2.16.840.1.113883.6.1000';
export const CERNER_WRITE_TYPES = ['Observation', 'Condition', 'DocumentReference', 'AllergyIntolerance', 'Encounter', 'Appointment', 'MedicationRequest', 'Patient'];

export const cernerProfile: VendorProfile = {
  vendor: 'cerner',
  idPrefix: 'cerner',
  contentType: CERNER_CONTENT_TYPE,
  mrnSystems: [CERNER_MRN_OID],
  canonicalMrnSystem: 'urn:ferry:id:mrn',
};

/** Cerner's required search shapes (vendor-apis.md §4.3) for what the poller sends. */
export function cernerSpecProblem(spec: PollResourceSpec): string | undefined {
  if (spec.type === 'Appointment' && !spec.params?.date && !spec.params?.['-date-or-req-period']) return 'Cerner Appointment searches need params.date (or -date-or-req-period) with the patient';
  return undefined;
}

@injectable()
export class CernerPollSource extends FhirPollSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<PollSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    // Cerner caps _count at 200.
    super({ ...ctx, config: { ...ctx.config, pageSize: Math.min(200, ctx.config.pageSize) } } as SourceContext<PollSourceConfig>, cernerProfile, cernerSpecProblem, shared);
  }
}

@injectable()
export class CernerBulkSource extends BulkExportSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<BulkSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, cernerProfile, shared);
    // Cerner needs a system read scope for every exported type (not Group.read): say so at startup.
    const scopes = ctx.config.auth.scopes;
    const missing = ctx.config.bulk.types.filter((t) => !scopes.includes(`system/${t}.read`) && !scopes.includes(`system/${t}.rs`));
    if (scopes.length && missing.length)
      throw new FerryError('CONFIG_BULK_SCOPES', `sources.${ctx.id}: exporting ${missing.join(', ')} needs ${missing.map((t) => `system/${t}.read`).join(' ')} in auth.scopes`, { kind: 'config', retryable: false });
  }
}

@injectable()
export class CernerFhirTransform extends VendorFhirTransform {
  readonly name = 'cerner-fhir';
  constructor(@inject(coreTokens.PluginConfig) cfg: Partial<NormalizeConfig>) {
    super(cernerProfile, cfg, { mrnSystems: cernerProfile.mrnSystems, canonicalMrnSystem: cernerProfile.canonicalMrnSystem });
  }
}

@injectable()
export class CernerWriteBackSink extends WriteBackSink {
  constructor(
    @inject(coreTokens.SinkContext) ctx: SinkContext<WriteBackConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'cerner', 'cerner', CERNER_WRITE_TYPES, true, shared);
  }
}
