/** Bundle lookups for FHIR -> v2: references (literal and logical), the patient the message is about. */
import type {
  Bundle,
  DiagnosticReport,
  Encounter,
  Location,
  Observation,
  Patient,
  Practitioner,
  Reference,
  Resource,
} from '@medplum/fhirtypes';

/** Stand-ins for logical references (identifier only): the Patient's name is then not required. */
export const LOGICAL = new WeakSet<Resource>();

/** Bundle lookups: references by fullUrl or Type/id, and logical references by identifier. */
export class Ctx {
  private readonly byRef = new Map<string, Resource>();
  constructor(readonly bundle: Bundle) {
    for (const e of bundle.entry ?? []) {
      const r = e.resource;
      if (!r) continue;
      if (e.fullUrl) this.byRef.set(e.fullUrl, r);
      if (r.id) {
        this.byRef.set(`${r.resourceType}/${r.id}`, r);
        this.byRef.set(`urn:uuid:${r.id}`, r);
      }
    }
  }
  resolve<T extends Resource>(r: Reference | undefined): T | undefined {
    if (!r) return undefined;
    if (r.reference) {
      const found = this.byRef.get(r.reference) as T | undefined;
      if (found) return found;
    }
    return this.logical<T>(r);
  }

  /**
   * A logical reference (`{ type, identifier, display }`, as the athena and Epic sources send for the
   * patient, provider and department of an appointment or result): a stand-in resource carrying the
   * identifier and the display, so PID-3 / XCN / PL can still be written.
   */
  private logical<T extends Resource>(r: Reference): T | undefined {
    const type = r.type ?? /^(Patient|Practitioner|Location)\//.exec(r.reference ?? '')?.[1];
    if (!r.identifier?.value || !type) return undefined;
    const key = `${type}|${r.identifier.system ?? ''}|${r.identifier.value}`;
    let res = this.logicals.get(key);
    if (!res) {
      const name = r.display ? [{ text: r.display }] : undefined;
      if (type === 'Patient') res = { resourceType: 'Patient', identifier: [r.identifier], name } as Patient;
      else if (type === 'Practitioner')
        res = { resourceType: 'Practitioner', identifier: [r.identifier], name } as Practitioner;
      else if (type === 'Location')
        res = {
          resourceType: 'Location',
          identifier: [r.identifier],
          name: r.display ?? r.identifier.value,
        } as Location;
      else return undefined;
      LOGICAL.add(res);
      this.logicals.set(key, res);
    }
    return res as T;
  }
  private readonly logicals = new Map<string, Resource>();
  /** The Patient written in PID of the message being built (the Z-segments of Patient use it). */
  messagePatient: Patient | undefined;
  /** A Patient alone is new (ADT^A28 add person) when the Bundle creates it (request POST) or it is its first version. */
  patientIsNew(): boolean {
    const p = this.patient();
    if (!p) return false;
    const e = (this.bundle.entry ?? []).find((x) => x.resource === p);
    return e?.request?.method === 'POST' || p.meta?.versionId === '1';
  }
  all<T extends Resource>(type: T['resourceType']): T[] {
    return (this.bundle.entry ?? []).map((e) => e.resource).filter((r): r is T => r?.resourceType === type);
  }
  patient(): Patient | undefined {
    const dr = this.all<DiagnosticReport>('DiagnosticReport')[0];
    const o = this.all<Observation>('Observation')[0];
    const e = this.all<Encounter>('Encounter')[0];
    const ref = dr?.subject ?? o?.subject ?? e?.subject;
    const subj = this.resolve<Patient>(
      ref && !ref.type && !/^Patient\//.test(ref.reference ?? '') && ref.identifier ? { ...ref, type: 'Patient' } : ref,
    );
    return subj?.resourceType === 'Patient'
      ? subj
      : (this.all<Patient>('Patient').find((p) => !p.link?.some((l) => l.type === 'replaced-by')) ??
          this.all<Patient>('Patient')[0]);
  }
}

/** The elements through which a resource names the patient the message is about (PID). */
const PATIENT_REFS: Record<string, (r: any) => (Reference | undefined)[]> = {
  Observation: (r) => [r.subject],
  DiagnosticReport: (r) => [r.subject],
  Encounter: (r) => [r.subject],
  ServiceRequest: (r) => [r.subject],
  DocumentReference: (r) => [r.subject],
  Condition: (r) => [r.subject],
  AllergyIntolerance: (r) => [r.patient],
  Immunization: (r) => [r.patient],
  Coverage: (r) => [r.beneficiary],
  Appointment: (r) => (r.participant ?? []).map((p: { actor?: Reference }) => p.actor),
};

/**
 * Literal Patient references (`Patient/epic-123`) the Bundle's resources use for their patient but the
 * Bundle does not hold, and that carry no identifier (an Epic or Cerner Observation): PID-3 cannot be
 * written without the Patient, so a sink looks them up (the store's newest canonical Patient) first.
 * Empty when the Bundle has a Patient of its own.
 */
export function unresolvedPatientReferences(bundle: Bundle): string[] {
  const entries = (bundle.entry ?? []).filter((e) => e.resource);
  if (entries.some((e) => e.resource!.resourceType === 'Patient')) return [];
  const known = new Set(entries.flatMap((e) => [e.fullUrl, `${e.resource!.resourceType}/${e.resource!.id}`]));
  const out = new Set<string>();
  for (const e of entries)
    for (const ref of PATIENT_REFS[e.resource!.resourceType]?.(e.resource) ?? [])
      if (
        ref?.reference &&
        /^Patient\/[^/]+$/.test(ref.reference) &&
        !ref.identifier?.value &&
        !known.has(ref.reference)
      )
        out.add(ref.reference);
  return [...out];
}
