/** Epic source, transform and sink classes (DI-constructed by the core). */
import { coreTokens, type SinkContext, type SourceContext } from '@ferry/core';
import { inject, injectable } from 'tsyringe';
import {
  BulkExportSource,
  FhirPollSource,
  type BulkSourceConfig,
  type PollResourceSpec,
  type PollSourceConfig,
  VendorFhirTransform,
  type NormalizeConfig,
  WriteBackSink,
  type WriteBackConfig,
  type VendorProfile,
  type VendorConnections,
  vendorConnectionsToken,
} from '@ferry/fhir-vendor-kit';

export const EPIC_CONTENT_TYPE = 'application/vnd.epic.fhir+json';
/** Epic sandbox (customer 0, environment 1) MRN system; production OIDs differ per customer. */
export const EPIC_SANDBOX_MRN_OID = 'urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14';
export const EPIC_WRITE_TYPES = ['Observation', 'DocumentReference', 'Condition'];

export const epicProfile: VendorProfile = {
  vendor: 'epic',
  idPrefix: 'epic',
  contentType: EPIC_CONTENT_TYPE,
  mrnSystems: [EPIC_SANDBOX_MRN_OID],
  canonicalMrnSystem: 'urn:ferry:id:mrn',
};

/** Epic's required search shapes (vendor-apis.md §3.3) for what the poller sends. */
export function epicSpecProblem(spec: PollResourceSpec): string | undefined {
  if (spec.type === 'Observation' && !spec.category && !spec.params?.code) return 'Epic Observation searches need a category (vital-signs, laboratory, social-history...) or a code';
  if (spec.type === 'Appointment' && !spec.params?.['service-category']) return 'Epic Appointment searches need params.service-category (appointment or surgery)';
  return undefined;
}

@injectable()
export class EpicPollSource extends FhirPollSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<PollSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, epicProfile, epicSpecProblem, shared);
  }
}

@injectable()
export class EpicBulkSource extends BulkExportSource {
  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<BulkSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, epicProfile, shared);
  }
}

@injectable()
export class EpicFhirTransform extends VendorFhirTransform {
  readonly name = 'epic-fhir';
  constructor(@inject(coreTokens.PluginConfig) cfg: Partial<NormalizeConfig>) {
    super(epicProfile, cfg, { mrnSystems: epicProfile.mrnSystems, canonicalMrnSystem: epicProfile.canonicalMrnSystem });
  }
}

@injectable()
export class EpicWriteBackSink extends WriteBackSink {
  constructor(
    @inject(coreTokens.SinkContext) ctx: SinkContext<WriteBackConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'epic', 'epic', EPIC_WRITE_TYPES, false, shared);
  }
}
