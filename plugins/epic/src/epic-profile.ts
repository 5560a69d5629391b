/**
 * What Epic does differently from the vendor kit's generic FHIR R4 code: the vendor profile (content
 * type, id prefix, MRN system), the writable types and the search shapes Epic requires. The
 * sources, transform, sink and facade provider are built from these.
 */
import type { PollResourceSpec, VendorProfile } from '@ferry/fhir-vendor-kit';

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
  if (spec.type === 'Observation' && !spec.category && !spec.params?.code)
    return 'Epic Observation searches need a category (vital-signs, laboratory, social-history...) or a code';
  if (spec.type === 'Appointment' && !spec.params?.['service-category'])
    return 'Epic Appointment searches need params.service-category (appointment or surgery)';
  return undefined;
}
