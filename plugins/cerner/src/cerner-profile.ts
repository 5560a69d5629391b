/**
 * What Oracle Health (Cerner) Millennium does differently from the vendor kit's generic FHIR R4 code
 * (@ferry/fhir-vendor-kit holds the FHIR client, bulk client, sources, normalisation and write-back):
 * the vendor profile (content type, id prefix, MRN system), the writable types (with update) and the
 * search shapes Cerner requires. The sources, transform, sink and facade provider are built from these.
 */
import type { PollResourceSpec, VendorProfile } from '@ferry/fhir-vendor-kit';

export const CERNER_CONTENT_TYPE = 'application/vnd.cerner.fhir+json';
export const CERNER_MRN_OID = 'urn:oid:2.16.840.1.113883.6.1000';
export const CERNER_WRITE_TYPES = [
  'Observation',
  'Condition',
  'DocumentReference',
  'AllergyIntolerance',
  'Encounter',
  'Appointment',
  'MedicationRequest',
  'Patient',
];

export const cernerProfile: VendorProfile = {
  vendor: 'cerner',
  idPrefix: 'cerner',
  contentType: CERNER_CONTENT_TYPE,
  mrnSystems: [CERNER_MRN_OID],
  canonicalMrnSystem: 'urn:ferry:id:mrn',
};

/** Cerner's required search shapes (vendor-apis.md §4.3) for what the poller sends. */
export function cernerSpecProblem(spec: PollResourceSpec): string | undefined {
  if (spec.type === 'Appointment' && !spec.params?.date && !spec.params?.['-date-or-req-period'])
    return 'Cerner Appointment searches need params.date (or -date-or-req-period) with the patient';
  return undefined;
}
