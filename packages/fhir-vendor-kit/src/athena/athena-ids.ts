/** athenaOne identifier systems and stable ids, shared by the athena-rest and athena-fhir plugins. */
import { createHash } from 'node:crypto';

/** Identifier systems of the canonical form: the ones athena itself uses in event notifications (reference 2.4). */
export const athenaSystem = (
  kind: 'patient' | 'appointment' | 'department' | 'provider' | 'labresult' | 'analyte' | 'appointmenttype',
  practiceId: string,
) => `urn:athenahealth:athenanet:${kind}:${practiceId}`;
export const AH_PATIENT_SYSTEM = 'https://fhir.athena.io/sid/ah-patient';

/** A stable UUID (v5-shaped) from a string, for `urn:uuid:` fullUrls. */
export function stableUuid(s: string): string {
  const h = createHash('sha256').update(s).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
