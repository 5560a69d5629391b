/**
 * Round trip v2 -> FHIR -> v2 -> FHIR, for the round-trip test and `npm run roundtrip`:
 * - `coreFields(bundle)`: the canonical core fields of the Patient, Encounter, Observations,
 *   DiagnosticReports and Appointments (what the outbound maps write), as flat `path = value` lines;
 * - `v2Fields(text)`: the v2 fields the outbound maps write, as `SEG[n]-f = value` lines, to measure
 *   the per-type field agreement of the regenerated v2 against the original.
 */
import type {
  Appointment,
  Bundle,
  CodeableConcept,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  Immunization,
  Observation,
  Patient,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import { decodeHl7Bytes } from '../hl7v2/charset';
import { parseHl7 } from '../hl7v2/parser';
import type { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { FhirToV2 } from './fhir-to-v2';

/** The corpus message types the round trip covers: those whose Bundles the outbound conversion expresses. */
export const ROUND_TRIP_TYPES =
  /^(ADT\^A0[1-8]|ADT\^A1[13]|ADT\^A28|ADT\^A31|ADT\^A40|ORU\^R01|ORM\^O01|OML\^O21|VXU\^V04|MDM\^T02|SIU\^S1[2-7]|SIU\^S26)$/;

const code = (cc: CodeableConcept | undefined) => cc?.coding?.[0]?.code ?? cc?.text ?? '';
const codes = (ccs: CodeableConcept[] | undefined) => (ccs ?? []).map(code).join(',');

function ofType<T extends Resource>(b: Bundle, t: T['resourceType']): T[] {
  return (b.entry ?? []).map((e) => e.resource).filter((r): r is T => r?.resourceType === t);
}

/** The core fields compared by the round trip (the ones the outbound maps write; see FHIR-TO-V2.md). */
export function coreFields(
  b: Bundle,
  opts: { orders?: boolean; documents?: boolean } = { orders: true, documents: true },
): Record<string, string> {
  const out: Record<string, string> = {};
  // an instant compares by meaning: ...Z = ...+00:00
  const put = (k: string, v: unknown) => {
    if (v !== undefined && v !== '' && v !== null) out[k] = String(v).replace(/([T\d:.]\d)\+00:00(\/|$)/g, '$1Z$2');
  };
  // the Patient the message is about (an MRG's prior patient is not sent)
  const p = ofType<Patient>(b, 'Patient').find((x) => !x.link?.some((l) => l.type === 'replaced-by'));
  if (p) {
    put(
      'Patient.identifier',
      (p.identifier ?? [])
        .map((i) => `${i.system ?? ''}|${i.value}`)
        .sort()
        .join(' '),
    );
    put('Patient.name', (p.name ?? []).map((n) => `${n.family ?? ''}/${(n.given ?? []).join(' ')}`).join(' '));
    put('Patient.birthDate', p.birthDate);
    put('Patient.gender', p.gender);
    put(
      'Patient.address',
      (p.address ?? [])
        .map((a) => `${(a.line ?? []).join(', ')}/${a.city ?? ''}/${a.state ?? ''}/${a.postalCode ?? ''}`)
        .join(' '),
    );
    put(
      'Patient.telecom',
      (p.telecom ?? [])
        .map((t) => t.value)
        .sort()
        .join(' '),
    );
    put('Patient.maritalStatus', code(p.maritalStatus));
    put('Patient.deceased', p.deceasedDateTime ?? p.deceasedBoolean);
  }
  const e = ofType<Encounter>(b, 'Encounter')[0];
  if (e) {
    put('Encounter.class', e.class?.code);
    put('Encounter.identifier', (e.identifier ?? []).map((i) => i.value).join(' '));
    put('Encounter.period', `${e.period?.start ?? ''}/${e.period?.end ?? ''}`);
  }
  ofType<DiagnosticReport>(b, 'DiagnosticReport').forEach((d, i) => {
    put(`DiagnosticReport[${i}].code`, code(d.code));
    put(`DiagnosticReport[${i}].status`, d.status);
    put(`DiagnosticReport[${i}].effective`, d.effectiveDateTime ?? d.effectivePeriod?.start);
  });
  // Observations keyed by code + rank among those with the same code (sorted by content: the
  // regenerated message may order them differently)
  const byCode = new Map<string, Record<string, string>[]>();
  for (const o of ofType<Observation>(b, 'Observation')) {
    const f: Record<string, string> = {};
    const set = (k: string, v: unknown) => {
      if (v !== undefined && v !== '' && v !== null) f[k] = String(v);
    };
    set('status', o.status);
    set(
      'value',
      o.valueQuantity
        ? `${o.valueQuantity.value} ${o.valueQuantity.code ?? o.valueQuantity.unit ?? ''}`.trim()
        : (o.valueString ?? (o.valueCodeableConcept ? code(o.valueCodeableConcept) : (o.valueDateTime ?? undefined))),
    );
    set('interpretation', codes(o.interpretation));
    set(
      'referenceRange',
      o.referenceRange?.[0]
        ? `${o.referenceRange[0].low?.value ?? ''}-${o.referenceRange[0].high?.value ?? ''} ${o.referenceRange[0].text ?? ''}`.trim()
        : undefined,
    );
    set('effective', o.effectiveDateTime);
    const c = code(o.code);
    byCode.set(c, [...(byCode.get(c) ?? []), f]);
  }
  for (const [c, list] of byCode) {
    list.sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
    list.forEach((f, n) => {
      for (const [k, v] of Object.entries(f)) put(`Observation[${c}#${n}].${k}`, v);
    });
  }
  ofType<Immunization>(b, 'Immunization').forEach((im, i) => {
    put(`Immunization[${i}].vaccineCode`, code(im.vaccineCode));
    put(`Immunization[${i}].status`, im.status);
    put(`Immunization[${i}].occurrence`, im.occurrenceDateTime);
    put(
      `Immunization[${i}].doseQuantity`,
      im.doseQuantity ? `${im.doseQuantity.value} ${im.doseQuantity.code ?? ''}` : undefined,
    );
    put(`Immunization[${i}].lotNumber`, im.lotNumber);
    put(`Immunization[${i}].identifier`, (im.identifier ?? []).map((x) => x.value).join(' '));
    put(`Immunization[${i}].route`, code(im.route));
  });
  // orders only where the message carries them (ORM, ORU); an ADT does not send its orders
  if (opts.orders)
    ofType<ServiceRequest>(b, 'ServiceRequest').forEach((sr, i) => {
      put(`ServiceRequest[${i}].code`, code(sr.code));
      put(`ServiceRequest[${i}].status`, sr.status);
      put(
        `ServiceRequest[${i}].identifier`,
        (sr.identifier ?? [])
          .map((x) => x.value)
          .sort()
          .join(' '),
      );
    });
  if (opts.documents)
    ofType<DocumentReference>(b, 'DocumentReference').forEach((d, i) => {
      put(`DocumentReference[${i}].type`, code(d.type));
      put(`DocumentReference[${i}].status`, d.status);
      put(`DocumentReference[${i}].docStatus`, d.docStatus);
      put(`DocumentReference[${i}].masterIdentifier`, d.masterIdentifier?.value);
      put(`DocumentReference[${i}].date`, d.date);
    });
  ofType<Appointment>(b, 'Appointment').forEach((a, i) => {
    put(`Appointment[${i}].identifier`, (a.identifier ?? []).map((x) => x.value).join(' '));
    put(`Appointment[${i}].status`, a.status);
    put(`Appointment[${i}].start`, a.start);
    put(`Appointment[${i}].end`, a.end);
    put(`Appointment[${i}].minutesDuration`, a.minutesDuration);
    put(`Appointment[${i}].serviceType`, codes(a.serviceType));
  });
  return out;
}

/** The v2 fields the outbound maps write, per type (first component unless the field is a date). */
const COMPARED: Record<string, number[]> = {
  PID: [3, 5, 7, 8, 11, 16, 19, 29, 30],
  PV1: [2, 3, 7, 19, 44, 45],
  NK1: [2, 3],
  AL1: [2, 3, 4],
  MRG: [1],
  IN1: [2, 3, 4, 8, 12, 13],
  DG1: [3, 6],
  OBR: [4, 7, 25],
  OBX: [2, 3, 5, 6, 7, 8, 11, 14],
  SPM: [4, 17],
  SCH: [1, 2, 25],
  ORC: [1, 2, 3, 5],
  RXA: [3, 5, 6, 15, 20],
  RXR: [1, 2],
  TXA: [2, 12, 17],
  AIS: [3],
  AIL: [3],
  AIP: [3],
};

/** `SEG#k-n` -> first component of the first repetition (normalised: offsets and trailing zero seconds compared as written). */
export function v2Fields(text: string): Record<string, string> {
  const msg = parseHl7(text);
  const out: Record<string, string> = {};
  const count = new Map<string, number>();
  for (const s of msg.segments) {
    const fields = COMPARED[s.name];
    if (!fields) continue;
    const k = count.get(s.name) ?? 0;
    count.set(s.name, k + 1);
    for (const n of fields) {
      let v = s.get(n, 0, 1, 1);
      if (s.name === 'PID' && n === 3)
        v = s
          .reps(3)
          .map((r) => r[0]?.[0] ?? '')
          .filter(Boolean)
          .sort()
          .join(' ');
      // a DTM compares by meaning: 198808181126+0215 = 19880818112600+0215
      if (/^\d{12}([+-]\d{4})?$/.test(v)) v = v.slice(0, 12) + '00' + v.slice(12);
      if (v) out[`${s.name}#${k}-${n}`] = v;
    }
  }
  return out;
}

export interface RoundTrip {
  type: string;
  /** The regenerated v2 (undefined when the Bundle cannot be expressed). */
  v2?: string;
  error?: string;
  /** FHIR core fields of the first conversion that the second one lost or changed. */
  fhirDiffs: string[];
  fhirCompared: number;
  /** v2 fields of the original that the regenerated message has the same (and compared). */
  v2Same: number;
  v2Compared: number;
  v2Diffs: string[];
}

/** v2 -> FHIR -> v2 -> FHIR for one message. */
export function roundTrip(body: Buffer, t: Hl7v2Transform, out = new FhirToV2()): RoundTrip {
  const text = decodeHl7Bytes(body).text;
  const msg = parseHl7(text);
  const type = `${msg.msh.get(9, 0, 1)}^${msg.msh.get(9, 0, 2)}`;
  const b1 = t.convert(body);
  const r: RoundTrip = { type, fhirDiffs: [], fhirCompared: 0, v2Same: 0, v2Compared: 0, v2Diffs: [] };
  let v2: string;
  try {
    v2 = out.convert(b1, { controlIdSeed: 'roundtrip', now: '2026-01-01T00:00:00Z' })[0].text;
  } catch (e) {
    r.error = (e as Error).message;
    return r;
  }
  r.v2 = v2;
  const b2 = t.convert(Buffer.from(v2, 'utf8'));
  const orders = /^(ORM|OML|ORU|MDM)/.test(type);
  const documents = /^MDM/.test(type);
  const f1 = coreFields(b1, { orders, documents });
  const f2 = coreFields(b2, { orders, documents });
  for (const [k, v] of Object.entries(f1)) {
    r.fhirCompared++;
    if (f2[k] !== v) r.fhirDiffs.push(`${k}: ${v} -> ${f2[k] ?? '(none)'}`);
  }
  const o1 = v2Fields(text);
  const o2 = v2Fields(v2);
  for (const [k, v] of Object.entries(o1)) {
    r.v2Compared++;
    if (o2[k] === v) r.v2Same++;
    else r.v2Diffs.push(`${k}: ${v} -> ${o2[k] ?? '(none)'}`);
  }
  return r;
}
