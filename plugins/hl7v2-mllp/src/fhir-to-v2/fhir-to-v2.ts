/**
 * Canonical FHIR R4 Bundle -> HL7 v2 message(s): the v2-to-FHIR IG's segment maps
 * (../shared/v2-to-fhir/mappings/segments, e.g. `PID[Patient]`, `OBX[Observation]`, `SCH[Appointment]`)
 * read right to left. Each writer names the IG map it reverses; the rows used are the ones whose
 * FHIR attribute the resource carries. Segments are written with the plugin's encoder (`encodeField`,
 * which escapes every leaf with `escapeHl7`), standard delimiters `|^~\&`, CR segment ends, UTF-8 (MSH-18).
 *
 * Known losses (what v2 -> FHIR -> v2 does not give back) are listed in FHIR-TO-V2.md, measured by
 * `npm run roundtrip` and checked by roundtrip.test.ts (the core FHIR fields must come back unchanged).
 */
import { createHash } from 'node:crypto';
import { fhirpathEval, fhirpathTest, inputError } from '@ferry/core';
import type {
  AllergyIntolerance,
  Appointment,
  Bundle,
  CodeableConcept,
  Coding,
  Condition,
  Coverage,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  Identifier,
  Immunization,
  Location,
  MessageHeader,
  Observation,
  Organization,
  Patient,
  Practitioner,
  Reference,
  RelatedPerson,
  Resource,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import { STANDARD_DELIMITERS, type Delimiters } from '../hl7v2/delimiters';
import { encodeField, type Hl7WriteField } from '../hl7v2/parser';
import { type Comps, dt, dtm, nm, unitsCwe, V2Writer, v2CodeOf, xad, xpn, xtn } from './datatypes';
import { type BundleKind, KIND_OF_MESSAGE, type ReceiverProfile, receiverProfile } from './profile';

export interface FhirToV2Options {
  /** Receiver profile (defaults: v2.5.1, MSH-3 FERRY). */
  profile?: ReceiverProfile;
  /**
   * Seed of the control ids (MSH-10): the stored message id + the sink id, so a replay of the same
   * delivery sends the same control id and another sink gets its own.
   */
  controlIdSeed: string;
  /** MSH-7 (default: Bundle.timestamp, else now). */
  now?: Date | string;
}

export interface V2Message {
  /** The message text, CR segment ends. */
  text: string;
  messageType: string;
  controlId: string;
}

class Seg {
  readonly fields: Hl7WriteField[] = [];
  constructor(readonly name: string) {}
  set(n: number, v: Hl7WriteField | undefined): this {
    if (v === undefined || v === null) return this;
    this.fields[n] = v;
    return this;
  }
  reps(n: number, vs: (Comps | undefined)[]): this {
    const r = vs.filter((x): x is Comps => !!x);
    if (r.length) this.fields[n] = { reps: r };
    return this;
  }
}

function missing(element: string, field: string): Error {
  return inputError('FHIR_TO_V2_MISSING', `cannot express the Bundle in HL7 v2: ${element} is required for ${field}`, { element, field });
}

/** A profile HD value, `LAB^1.2.3^ISO`: its components. */
const hd = (v: string): string[] => v.split('^');

const first = <T>(xs: T[] | undefined): T | undefined => xs?.[0];

/** A deterministic control id: 20 characters (the v2.5.1 MSH-10 length) from a SHA-1 of the seed. */
export function controlIdFor(seed: string, index = 0): string {
  return createHash('sha1').update(index ? `${seed}#${index}` : seed).digest('hex').slice(0, 20).toUpperCase();
}

/**
 * OBX-11 from Observation.status: the IG map ObservationResultStatusCodesInterpretation in reverse, plus
 * the statuses it has no row for: registered -> I (specimen in lab), unknown -> R (entered, not verified).
 */
function obxStatus(s: string | undefined): string | undefined {
  if (s === 'registered') return 'I';
  if (s === 'unknown') return 'R';
  if (s === 'amended') return 'C';
  return v2CodeOf('ObservationResultStatusCodesInterpretation', s);
}

/**
 * ORC-1 order control and ORC-5 order status from ServiceRequest.status, so that the inbound map gives the
 * status back: ORC-5 through OrderStatus reversed (the inbound reads ORC-5 first); `unknown` (and a missing
 * status) as ORC-1 SC (status changed) with ORC-5 empty: SC has no OrderControlCode[ServiceRequest.status]
 * row, so the inbound keeps `unknown` (no table 0038 code means "unknown": `A` would claim partial results).
 * `draft` has no row in either map: it is written as `unknown` (a known loss, see FHIR-TO-V2.md) rather than
 * as a new order (NW) the receiver would act on.
 */
export function orcStatus(status: string | undefined): [control: string, orderStatus: string | undefined] {
  const orderStatus = v2CodeOf('OrderStatus', status);
  if (!orderStatus) return ['SC', undefined];
  const control = status === 'revoked' || status === 'entered-in-error' ? 'CA' : status === 'on-hold' ? 'HD' : status === 'completed' ? 'SC' : 'NW';
  return [control, orderStatus];
}

/** Message type and structure per event (HL7 v2.5.1 Chapter 2 message structure table 0354). */
const STRUCTURE: Record<string, string> = {
  'ADT^A01': 'ADT_A01',
  'ADT^A02': 'ADT_A02',
  'ADT^A03': 'ADT_A03',
  'ADT^A04': 'ADT_A01',
  'ADT^A05': 'ADT_A05',
  'ADT^A06': 'ADT_A06',
  'ADT^A08': 'ADT_A01',
  'ADT^A11': 'ADT_A09',
  'ADT^A13': 'ADT_A01',
  'ADT^A28': 'ADT_A05',
  'ADT^A31': 'ADT_A05',
  'ADT^A40': 'ADT_A39',
  'ORU^R01': 'ORU_R01',
  'VXU^V04': 'VXU_V04',
  'MDM^T02': 'MDM_T02',
  'ORM^O01': 'ORM_O01',
  'OML^O21': 'OML_O21',
  'SIU^S12': 'SIU_S12',
  'SIU^S13': 'SIU_S12',
  'SIU^S14': 'SIU_S12',
  'SIU^S15': 'SIU_S12',
  'SIU^S17': 'SIU_S12',
  'SIU^S26': 'SIU_S12',
};

export class FhirToV2 {
  readonly profile: ReceiverProfile;
  private readonly w: V2Writer;
  private readonly d: Delimiters = STANDARD_DELIMITERS;

  constructor(profile?: ReceiverProfile | unknown) {
    this.profile = receiverProfile(profile);
    this.w = new V2Writer(this.profile);
  }

  /** The Bundle kinds present, in the order messages are produced. */
  kindOf(bundle: Bundle): BundleKind {
    const types = new Set((bundle.entry ?? []).map((e) => e.resource?.resourceType));
    const event = this.header(bundle)?.eventCoding?.display ?? '';
    if (types.has('Appointment')) return 'appointment';
    if (types.has('Immunization')) return 'immunization';
    if (types.has('DocumentReference') && (/^MDM/.test(event) || !types.has('DiagnosticReport'))) return 'document';
    if (/^(ORM|OML)/.test(event) && types.has('ServiceRequest')) return 'order';
    if (/^ORU/.test(event) || types.has('DiagnosticReport')) return 'result';
    if (types.has('ServiceRequest') && !/^ADT/.test(event)) return 'order';
    if (types.has('Observation') && !/^ADT/.test(event)) return 'result';
    if (types.has('Patient') || types.has('Encounter')) return 'adt';
    throw inputError('FHIR_TO_V2_UNSUPPORTED', `cannot express the Bundle in HL7 v2: it holds no Patient, Encounter, DiagnosticReport, Observation, ServiceRequest, Immunization, DocumentReference or Appointment (has ${[...types].filter(Boolean).join(', ') || 'nothing'})`, {});
  }

  /** Convert one Bundle. Throws a FerryError (kind input) naming the FHIR element and v2 field when data is missing. */
  convert(bundle: Bundle, opts: FhirToV2Options): V2Message[] {
    if (!bundle || bundle.resourceType !== 'Bundle') throw inputError('FHIR_TO_V2_NOT_BUNDLE', 'cannot express the input in HL7 v2: it is not a FHIR Bundle', {});
    const ctx = new Ctx(bundle);
    // the profile's FHIRPath rules first (first match wins): the type names the message built
    const ruled = this.ruleType(bundle);
    const kind = ruled ? KIND_OF_MESSAGE[ruled.slice(0, 3)] : this.kindOf(bundle);
    const when = opts.now ?? bundle.timestamp ?? new Date();
    const ts = dtm(typeof when === 'string' ? when : when.toISOString()) ?? '';
    const out: V2Message[] = [];
    const one = (build: (type: string) => Seg[], i = 0, appt?: Appointment) => {
      const type = this.messageType(kind, ctx, appt, ruled);
      ctx.messagePatient = undefined;
      out.push(this.finish(build(type), type, kind, ctx, ts, controlIdFor(opts.controlIdSeed, i)));
    };
    if (kind === 'appointment') ctx.all<Appointment>('Appointment').forEach((a, i) => one(() => this.siu(a, ctx), i, a));
    else if (kind === 'result') one(() => this.oru(ctx));
    else if (kind === 'immunization') one(() => this.vxu(ctx));
    else if (kind === 'document') one(() => this.mdm(ctx));
    else if (kind === 'order') one((type) => this.orm(ctx, type));
    else one((type) => this.adt(ctx, type));
    return out;
  }

  /** The message type of the first `messageTypeRules` entry whose FHIRPath is true on the Bundle. */
  private ruleType(bundle: Bundle): string | undefined {
    for (const r of this.profile.messageTypeRules) {
      let hit: boolean;
      try {
        hit = fhirpathTest(r.when, bundle);
      } catch (e) {
        throw inputError('FHIR_TO_V2_RULE', `cannot choose the HL7 v2 message type: messageTypeRules "${r.when}" failed on the Bundle: ${(e as Error).message.split('\n')[0]}`, { rule: r.when });
      }
      if (hit) return r.type;
    }
    return undefined;
  }

  private header(bundle: Bundle): MessageHeader | undefined {
    return bundle.entry?.find((e) => e.resource?.resourceType === 'MessageHeader')?.resource as MessageHeader | undefined;
  }

  /** MSH-9: the profile's type for this kind, else the MessageHeader event, else derived from the statuses. */
  private messageType(kind: BundleKind, ctx: Ctx, appt?: Appointment, ruled?: string): string {
    let t = ruled ?? this.profile.messageTypes[kind];
    if (!t) {
      const ev = this.header(ctx.bundle)?.eventCoding?.display;
      const evOk = ev && /^[A-Z]{3}\^[A-Z0-9]{3}$/.test(ev) ? ev : undefined;
      if (kind === 'adt') {
        if (evOk?.startsWith('ADT^') && STRUCTURE[evOk]) t = evOk;
        else {
          const e = ctx.all<Encounter>('Encounter')[0];
          // a merge (a Patient replaced by another: Patient.link replaced-by / replaces): A40 merge patient
          if (ctx.all<Patient>('Patient').some((p) => p.link?.some((l) => l.type === 'replaced-by' || l.type === 'replaces'))) t = 'ADT^A40';
          // a Patient alone: A28 add person when it is new (created in the Bundle: request POST, or its first version), else A31 update person
          else if (!e) t = ctx.patientIsNew() ? 'ADT^A28' : 'ADT^A31';
          // IG Event[EncounterStatus] in reverse: A01 in-progress, A03 finished, A04 planned; cancelled (or entered in error): A11 cancel admit
          else t = e.status === 'in-progress' ? 'ADT^A01' : e.status === 'finished' ? 'ADT^A03' : e.status === 'planned' || e.status === 'arrived' ? 'ADT^A04' : e.status === 'cancelled' || e.status === 'entered-in-error' ? 'ADT^A11' : 'ADT^A08';
        }
      } else if (kind === 'appointment') {
        const s = appt?.status;
        t = s === 'cancelled' ? 'SIU^S15' : s === 'noshow' ? 'SIU^S26' : s === 'entered-in-error' ? 'SIU^S17' : evOk?.startsWith('SIU^') && STRUCTURE[evOk] ? evOk : 'SIU^S12';
      } else if (kind === 'order') t = evOk === 'OML^O21' ? 'OML^O21' : 'ORM^O01';
      else t = kind === 'immunization' ? 'VXU^V04' : kind === 'document' ? 'MDM^T02' : 'ORU^R01';
    }
    const parts = t.split('^');
    if (parts.length === 2) parts.push(STRUCTURE[t] ?? '');
    return parts.filter(Boolean).join('^');
  }

  private finish(segs: Seg[], type: string, kind: BundleKind, ctx: Ctx, ts: string, controlId: string): V2Message {
    const p = this.profile;
    const hdr = this.header(ctx.bundle);
    // MSH[MessageHeader] in reverse: MSH-3 source.name, MSH-4 sender, MSH-5 destination.name, MSH-6 receiver
    const msh = new Seg('MSH')
      .set(3, p.sendingApplication ? hd(p.sendingApplication) : hdr?.source?.name || 'FERRY')
      .set(4, p.sendingFacility ? hd(p.sendingFacility) : hdr?.sender?.display || undefined)
      .set(5, p.receivingApplication ? hd(p.receivingApplication) : hdr?.destination?.[0]?.name || undefined)
      .set(6, p.receivingFacility ? hd(p.receivingFacility) : hdr?.destination?.[0]?.receiver?.display || undefined)
      .set(7, ts)
      .set(9, type.split('^'))
      .set(10, controlId)
      .set(11, p.processingId)
      .set(12, p.version)
      .set(15, p.acceptAckType || undefined)
      .set(16, p.applicationAckType || undefined)
      .set(18, 'UNICODE UTF-8');
    const all = [msh];
    if ((kind === 'adt' || kind === 'document') && this.on('EVN')) all.push(new Seg('EVN').set(1, p.version.startsWith('2.3') ? type.split('^')[1] : undefined).set(2, ts));
    all.push(...segs);
    this.zSegments(all, ctx);
    const lines = all.map((s) => this.encode(s));
    return { text: lines.join('\r') + '\r', messageType: type.split('^').slice(0, 2).join('^'), controlId };
  }

  private encode(s: Seg): string {
    const d = this.d;
    const fields: string[] = [];
    const max = s.fields.length - 1;
    for (let n = 1; n <= Math.max(max, 0); n++) fields[n] = encodeField(s.fields[n], d);
    for (const [ref, raw] of Object.entries(this.profile.fieldOverrides)) {
      const [seg, num] = ref.split('-');
      if (seg === s.name) fields[Number(num)] = raw;
    }
    for (let n = 1; n < fields.length; n++) if (fields[n] === undefined) fields[n] = '';
    if (s.name === 'MSH') {
      // MSH-1 is the field separator itself, MSH-2 the encoding characters
      const rest = fields.slice(3);
      while (rest.length && rest[rest.length - 1] === '') rest.pop();
      return ['MSH', d.component + d.repetition + d.escape + d.subcomponent, ...rest].join(d.field);
    }
    const rest = fields.slice(1);
    while (rest.length && rest[rest.length - 1] === '') rest.pop();
    return [s.name, ...rest].join(d.field);
  }

  private on(seg: keyof ReceiverProfile['segments']): boolean {
    return this.profile.segments[seg] !== false;
  }

  // -------------------------------------------------------------------------------------------
  // ADT: PID, PV1, NK1, AL1, DG1 (IG message map ADT_A01)

  private adt(ctx: Ctx, type: string): Seg[] {
    const structure = type.split('^')[2];
    if (structure === 'ADT_A39') return this.merge(ctx);
    const patient = ctx.patient();
    if (!patient) throw missing('Patient', 'PID');
    // ADT_A09 (A11 cancel admit) and ADT_A02 have no NK1, AL1 or insurance; ADT_A02 no DG1
    const full = structure !== 'ADT_A09' && structure !== 'ADT_A02';
    const out = [this.pid(patient, ctx)];
    if (full && this.on('NK1')) this.nextOfKin(ctx, patient).forEach((rp, i) => out.push(this.nk1(rp, i + 1)));
    const enc = ctx.all<Encounter>('Encounter')[0];
    if (this.on('PV1')) out.push(enc ? this.pv1(enc, ctx) : new Seg('PV1').set(1, '1').set(2, 'N'));
    // ADT_A01 {OBX}: observations sent with the visit (height, weight, heart rate…)
    ctx.all<Observation>('Observation').forEach((o, i) => out.push(this.obx(o, i + 1)));
    if (full) for (const [i, a] of ctx.all<AllergyIntolerance>('AllergyIntolerance').entries()) if (this.on('AL1')) out.push(this.al1(a, i + 1));
    if (structure !== 'ADT_A02') for (const [i, c] of ctx.all<Condition>('Condition').entries()) if (this.on('DG1')) out.push(this.dg1(c, i + 1, enc, ctx));
    if (full) out.push(...this.insurance(ctx));
    return out;
  }

  /**
   * ADT^A40 (ADT_A39): {PID, MRG, [PV1]} — the surviving Patient in PID, each Patient it replaces in MRG
   * (MRG-1 its identifiers, MRG-7 its name), as the inbound MRG map links them (Patient.link replaced-by on
   * the prior patient, replaces on the survivor; either side may be a reference with an identifier).
   */
  private merge(ctx: Ctx): Seg[] {
    const patients = ctx.all<Patient>('Patient');
    const replacedBy = (p: Patient) => p.link?.find((l) => l.type === 'replaced-by')?.other;
    const asPatient = (r: Reference) => ctx.resolve<Patient>(r.type || !r.identifier ? r : { ...r, type: 'Patient' });
    // the surviving patients: those that replace another (one PID/MRG pair per merged patient)
    const pairs: [Patient, Patient][] = [];
    const seen = new Set<Patient>();
    for (const survivor of patients.filter((p) => !replacedBy(p) && p.link?.some((l) => l.type === 'replaces')))
      for (const l of survivor.link ?? []) {
        const prior = l.type === 'replaces' ? asPatient(l.other) : undefined;
        if (prior?.resourceType === 'Patient' && prior !== survivor && !seen.has(prior)) {
          pairs.push([survivor, prior]);
          seen.add(prior);
        }
      }
    // merged patients whose survivor is not in the Bundle (a reference with an identifier)
    for (const prior of patients)
      if (!seen.has(prior) && replacedBy(prior)) {
        const survivor = asPatient(replacedBy(prior)!);
        if (survivor?.resourceType !== 'Patient') throw missing('Patient.link.other (the surviving Patient of a merge: in the Bundle or a reference with an identifier)', 'PID-3 (ADT^A40 patient identifier list)');
        pairs.push([survivor, prior]);
        seen.add(prior);
      }
    if (!pairs.length) throw missing('Patient.link (type replaces, with the merged Patient in the Bundle or an identifier)', 'MRG-1 (prior patient identifier list)');
    const enc = ctx.all<Encounter>('Encounter')[0];
    const out: Seg[] = [];
    for (const [survivor, prior] of pairs) {
      const ids = (prior.identifier ?? []).filter((i) => i.value);
      if (!ids.length) throw missing('Patient.identifier (of the merged Patient)', 'MRG-1 (prior patient identifier list)');
      out.push(this.pid(survivor, ctx));
      out.push(new Seg('MRG').reps(1, ids.map((i) => this.w.cx(i))).reps(7, (prior.name ?? []).map(xpn)));
      if (enc && this.on('PV1') && pairs.length === 1) out.push(this.pv1(enc, ctx));
    }
    return out;
  }

  /**
   * NK1s: the Patient's contacts (NK1[Patient]: the inbound map makes an NK1 with a contact role a
   * Patient.contact), then the RelatedPersons — not the insured persons written in IN1-16..19 (a
   * Coverage's subscriber, when IN1 is sent) nor the guarantors (an Account's guarantor party).
   */
  private nextOfKin(ctx: Ctx, patient: Patient): NextOfKin[] {
    const elsewhere = new Set<Resource | undefined>();
    if (this.on('IN1')) for (const c of ctx.all<Coverage>('Coverage')) if (!financialClassOnly(c)) elsewhere.add(ctx.resolve(c.subscriber));
    for (const a of ctx.all<Resource>('Account' as Resource['resourceType']) as { guarantor?: { party?: Reference }[] }[]) for (const g of a.guarantor ?? []) elsewhere.add(ctx.resolve(g.party));
    const role = (cc: CodeableConcept) => cc.coding?.some((c) => c.system === V2_0131);
    const contacts: NextOfKin[] = (patient.contact ?? []).map((c) => ({
      name: c.name ? [c.name] : [],
      relationship: (c.relationship ?? []).map((r) => ({ ...r, coding: r.coding?.filter((x) => x.system !== V2_0131) })).filter((r) => r.coding?.length || (r.text && !role(r))),
      address: c.address ? [c.address] : [],
      telecom: c.telecom,
      role: (c.relationship ?? []).flatMap((r) => r.coding ?? []).find((x) => x.system === V2_0131),
    }));
    return [...contacts, ...ctx.all<RelatedPerson>('RelatedPerson').filter((rp) => !elsewhere.has(rp))];
  }

  /** The insurance group: one IN1 per Coverage (in Coverage.order), IN1[Coverage] in reverse. */
  private insurance(ctx: Ctx): Seg[] {
    if (!this.on('IN1')) return [];
    const covs = ctx.all<Coverage>('Coverage').filter((c) => !financialClassOnly(c)).sort((a, b) => (a.order ?? Infinity) - (b.order ?? Infinity));
    return covs.map((c, i) => this.in1(c, i + 1, ctx));
  }

  private in1(cov: Coverage, setId: number, ctx: Ctx): Seg {
    const w = this.w;
    const cls = (code: string) => cov.class?.find((c) => c.type?.coding?.some((x) => x.code === code));
    const plan = cls('plan');
    const group = cls('group');
    const planCwe: Comps | undefined = plan?.value ? [plan.value, plan.name ?? ''] : w.cwe(cov.type, 'IN1-2');
    if (!planCwe) throw missing('Coverage.class (type plan) or Coverage.type', 'IN1-2 (health plan id)');
    const payorRef = cov.payor?.[0];
    const payor = ctx.resolve<Resource>(payorRef);
    const org = payor?.resourceType === 'Organization' ? (payor as Organization) : undefined;
    const holder = ctx.resolve<Resource>(cov.policyHolder);
    const sub = ctx.resolve<Resource>(cov.subscriber);
    const insured = sub?.resourceType === 'RelatedPerson' ? (sub as RelatedPerson) : undefined;
    const policy = cov.identifier?.find((i) => i.type?.coding?.some((c) => c.code === 'MB'));
    return new Seg('IN1')
      .set(1, String(setId))
      .set(2, planCwe)
      .set(3, w.cx(first(org?.identifier)))
      .set(4, org?.name ? [org.name] : payor?.resourceType !== 'Patient' && payorRef?.display ? [payorRef.display] : undefined)
      .set(5, xad(first(org?.address)))
      .reps(7, (org?.telecom ?? []).map(xtn))
      .set(8, group?.value)
      .set(9, group?.name)
      .set(11, holder?.resourceType === 'Organization' && (holder as Organization).name ? [(holder as Organization).name!] : undefined)
      .set(12, dt(cov.period?.start?.slice(0, 10)))
      .set(13, dt(cov.period?.end?.slice(0, 10)))
      .set(15, plan?.value ? w.cwe(cov.type, 'IN1-15') : undefined)
      .reps(16, (insured?.name ?? []).map(xpn))
      .set(17, w.cwe(cov.relationship, 'IN1-17', 'Relationship'))
      .set(18, dt(insured?.birthDate))
      .reps(19, (insured?.address ?? []).map(xad))
      .set(22, cov.order !== undefined ? String(cov.order) : undefined)
      .set(36, policy?.value)
      .set(43, insured?.gender ? v2CodeOf('AdministrativeSex', insured.gender) : undefined)
      .set(49, cov.subscriberId ? [cov.subscriberId] : undefined);
  }

  /**
   * The profile's Z-segments: one per resource of the rule's type (the message's Patient for Patient),
   * each field the FHIRPath result on that resource, placed after the last segment named `after`.
   */
  private zSegments(all: Seg[], ctx: Ctx): void {
    for (const z of this.profile.zSegments) {
      const resources: Resource[] =
        z.resource === 'Patient' && ctx.messagePatient ? [ctx.messagePatient] : ctx.all<Resource>(z.resource as Resource['resourceType']).filter((r) => !LOGICAL.has(r));
      const segs = resources.map((r, i) => {
        const seg = new Seg(z.segment);
        for (const [n, expr] of Object.entries(z.fields)) {
          let vals: unknown[];
          try {
            vals = fhirpathEval(expr, r);
          } catch (e) {
            throw inputError('FHIR_TO_V2_ZSEGMENT', `cannot write ${z.segment}-${n}: FHIRPath "${expr}" failed on ${r.resourceType}: ${(e as Error).message.split('\n')[0]}`, { segment: z.segment, field: Number(n) });
          }
          seg.reps(Number(n), vals.map((v) => this.zValue(v, `${z.segment}-${n}`)));
        }
        if (!seg.fields.length) seg.set(1, String(i + 1));
        return seg;
      });
      if (!segs.length) continue;
      let at = all.length;
      if (z.after) {
        const last = all.map((s) => s.name).lastIndexOf(z.after);
        if (last >= 0) at = last + 1;
      }
      all.splice(at, 0, ...segs);
    }
  }

  /** A FHIRPath result as a v2 value: primitives as text (dates as DT/DTM), Coding/CodeableConcept CWE, Identifier CX, Quantity its value, HumanName XPN, Address XAD. */
  private zValue(v: unknown, field: string): Comps | undefined {
    if (v === null || v === undefined) return undefined;
    if (typeof v === 'boolean') return [v ? 'Y' : 'N'];
    if (typeof v === 'number') return [nm(v) ?? String(v)];
    if (typeof v === 'string') return [/^\d{4}-\d{2}(-\d{2})?$/.test(v) ? (dt(v) ?? v) : /^\d{4}-\d{2}-\d{2}T/.test(v) ? (dtm(v) ?? v) : v];
    if (typeof v !== 'object') return [String(v)];
    const o = v as Record<string, unknown>;
    if ('coding' in o || ('text' in o && Object.keys(o).length === 1)) return this.w.cwe(o as CodeableConcept, field);
    if ('code' in o && ('system' in o || 'display' in o)) return this.w.cwe({ coding: [o as Coding] }, field);
    if ('value' in o && ('system' in o || 'type' in o || 'assigner' in o) && typeof o.value === 'string') return this.w.cx(o as Identifier);
    if ('value' in o && typeof o.value === 'number') return [nm(o.value) ?? String(o.value)];
    if ('family' in o || 'given' in o) return xpn(o as never);
    if ('line' in o || 'city' in o || 'postalCode' in o) return xad(o as never);
    if ('reference' in o || 'display' in o) return [String(o.display ?? o.reference)];
    return undefined;
  }

  /** PID[Patient] in reverse. */
  private pid(p: Patient, ctx?: Ctx): Seg {
    const w = this.w;
    if (ctx) ctx.messagePatient = p;
    const ids = p.identifier ?? [];
    const isType = (i: Identifier, code: string) => i.type?.coding?.some((c) => c.code === code);
    const main = ids.filter((i) => !(isType(i, 'SS') && i.system === 'http://hl7.org/fhir/sid/us-ssn') && !isType(i, 'DL'));
    if (!main.some((i) => i.value)) throw missing('Patient.identifier', 'PID-3 (patient identifier list)');
    const names = (p.name ?? []).map(xpn).filter(Boolean);
    // a patient known only by a logical reference (identifier) is sent by PID-3 alone
    if (!names.length && !LOGICAL.has(p)) throw missing('Patient.name', 'PID-5 (patient name)');
    const s = new Seg('PID').set(1, '1');
    s.reps(3, main.map((i) => w.cx(i)));
    s.reps(5, names);
    const mmn = p.extension?.find((e) => e.url === 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')?.valueString;
    if (mmn) s.set(6, [mmn]);
    const birthTime = (p as Patient & { _birthDate?: { extension?: { url: string; valueDateTime?: string }[] } })._birthDate?.extension?.find(
      (e) => e.url === 'http://hl7.org/fhir/StructureDefinition/patient-birthTime',
    )?.valueDateTime;
    s.set(7, (birthTime ? dtm(birthTime) : undefined) ?? dt(p.birthDate));
    s.set(8, v2CodeOf('AdministrativeSex', p.gender));
    s.reps(11, (p.address ?? []).map(xad));
    const tel = p.telecom ?? [];
    s.reps(13, tel.filter((t) => t.use !== 'work').map(xtn));
    s.reps(14, tel.filter((t) => t.use === 'work').map(xtn));
    s.set(16, w.cwe(p.maritalStatus, 'PID-16', 'MaritalStatus'));
    const ssn = ids.find((i) => isType(i, 'SS') && i.system === 'http://hl7.org/fhir/sid/us-ssn');
    s.set(19, ssn?.value);
    const dl = ids.find((i) => isType(i, 'DL'));
    if (dl?.value) s.set(20, [dl.value, dl.system?.startsWith('urn:ferry:id:DL-') ? decodeURIComponent(dl.system.slice(16)) : '', dt(dl.period?.end) ?? '']);
    if (p.deceasedDateTime) s.set(29, dtm(p.deceasedDateTime)).set(30, 'Y');
    else if (p.deceasedBoolean !== undefined) s.set(30, p.deceasedBoolean ? 'Y' : 'N');
    return s;
  }

  /** NK1[RelatedPerson] in reverse. */
  private nk1(rp: NextOfKin, setId: number): Seg {
    return new Seg('NK1')
      .set(1, String(setId))
      .reps(2, (rp.name ?? []).map(xpn))
      .set(3, this.w.cwe(first(rp.relationship), 'NK1-3', 'Relationship'))
      .reps(4, (rp.address ?? []).map(xad))
      .reps(5, (rp.telecom ?? []).filter((t) => t.use !== 'work').map(xtn))
      .reps(6, (rp.telecom ?? []).filter((t) => t.use === 'work').map(xtn))
      .set(7, 'role' in rp && rp.role ? this.w.cwe({ coding: [rp.role] }, 'NK1-7') : undefined);
  }

  /** PV1[Encounter] in reverse. */
  private pv1(e: Encounter, ctx: Ctx): Seg {
    const w = this.w;
    const s = new Seg('PV1').set(1, '1');
    const cls = v2CodeOf('PatientClass[EncounterClass]', e.class?.code, e.class?.system) ?? (e.class?.code ? e.class.code : undefined);
    s.set(2, cls ?? 'U');
    const loc = first(e.location)?.location;
    if (loc) s.set(3, this.pl(loc, ctx));
    const role = (code: string) => (e.participant ?? []).filter((p) => p.type?.some((t) => t.coding?.some((c) => c.code === code)));
    s.reps(7, role('ATND').map((p) => this.xcn(p.individual, ctx)));
    s.reps(8, role('REF').map((p) => this.xcn(p.individual, ctx)));
    s.reps(9, role('CON').map((p) => this.xcn(p.individual, ctx)));
    s.set(10, w.cwe(e.serviceType, 'PV1-10', 'HospitalService')?.[0] as string | undefined);
    const vn = (e.identifier ?? []).find((i) => i.type?.coding?.some((c) => c.code === 'VN')) ?? first(e.identifier);
    s.set(19, w.cx(vn));
    s.set(50, w.cx((e.identifier ?? []).find((i) => i !== vn)));
    // PV1-20 financial class: a Coverage with only a type and no known payor (as the inbound PV1[Coverage] row makes it)
    const fc = ctx.all<Coverage>('Coverage').filter(financialClassOnly);
    s.reps(20, fc.map((c) => [w.cwe(c.type, 'PV1-20', 'FinancialClass')?.[0] as string, dt(c.period?.start?.slice(0, 10)) ?? '']));
    s.set(44, dtm(e.period?.start));
    s.set(45, dtm(e.period?.end));
    return s;
  }

  /** A Location (and its partOf chain, as the inbound PL map builds it) -> PL. */
  private pl(r: Reference, ctx: Ctx): Comps | undefined {
    const out: (string | string[])[] = [];
    let l = ctx.resolve<Location>(r);
    if (!l) return r.display ? [r.display] : undefined;
    const pos: Record<string, number> = { si: 4, bu: 7, lvl: 8, ro: 2, bd: 3 };
    for (let guard = 0; l && guard < 8; guard++) {
      const t = l.physicalType?.coding?.[0]?.code;
      const n = (t && pos[t]) || 1;
      if (!out[n - 1] && l.name) out[n - 1] = l.name;
      l = l.partOf ? ctx.resolve<Location>(l.partOf) : undefined;
    }
    for (let i = 0; i < out.length; i++) if (out[i] === undefined) out[i] = '';
    return out.length ? out : undefined;
  }

  /** XCN from a Practitioner: id, family, given, second given, suffix, prefix, …, assigning authority (9). */
  private xcn(r: Reference | undefined, ctx: Ctx): Comps | undefined {
    if (!r) return undefined;
    const p = ctx.resolve<Practitioner>(r);
    const id = first(p?.identifier);
    const n = first(p?.name);
    const name = n ? xpn(n) : r.display ? ['', r.display] : undefined;
    if (!id?.value && !name) return undefined;
    const c: Comps = [id?.value ?? '', ...((name ?? []).slice(0, 5) as string[])];
    while (c.length < 8) c.push('');
    if (id?.system) c.push(this.w.hd(id.system, id.assigner?.display));
    return c;
  }

  /** AL1[AllergyIntolerance] in reverse. */
  private al1(a: AllergyIntolerance, setId: number): Seg {
    const code = this.w.cwe(a.code, 'AL1-3');
    if (!code) throw missing('AllergyIntolerance.code', 'AL1-3 (allergen code)');
    const sev = a.reaction?.[0]?.severity;
    return new Seg('AL1')
      .set(1, String(setId))
      .set(2, v2CodeOf('AllergenType[AllergyIntoleranceCategory]', a.category?.[0]))
      .set(3, code)
      .set(4, v2CodeOf('AllergySeverity[AllergyIntolerance.reaction.severity]', sev) ?? v2CodeOf('AllergySeverity[AllergyIntolerance.criticality]', a.criticality))
      .reps(5, (a.reaction?.[0]?.manifestation ?? []).map((m) => (m.text ?? m.coding?.[0]?.display ?? m.coding?.[0]?.code ? [m.text ?? m.coding?.[0]?.display ?? m.coding![0].code!] : undefined)))
      .set(6, dt(a.onsetDateTime));
  }

  /** DG1[Condition] (and Encounter.diagnosis use/rank) in reverse. */
  private dg1(c: Condition, setId: number, enc: Encounter | undefined, ctx: Ctx): Seg {
    const code = this.w.cwe(c.code, 'DG1-3');
    if (!code) throw missing('Condition.code', 'DG1-3 (diagnosis code)');
    const diag = enc?.diagnosis?.find((d) => ctx.resolve(d.condition) === c);
    const type = this.w.cwe(diag?.use, 'DG1-6', 'DiagnosisType')?.[0];
    return new Seg('DG1')
      .set(1, String(setId))
      .set(3, code)
      .set(5, dtm(c.onsetDateTime))
      .set(6, (type as string | undefined) || 'W')
      .set(15, diag?.rank !== undefined ? String(diag.rank) : undefined)
      .set(19, dtm(c.recordedDate))
      .set(21, c.verificationStatus?.coding?.some((x) => x.code === 'entered-in-error') ? 'D' : undefined);
  }

  // -------------------------------------------------------------------------------------------
  // ORU^R01: PID, [PV1], {OBR, {NTE}, {OBX, {NTE}}, {SPM}} (IG message map ORU_R01)

  private oru(ctx: Ctx): Seg[] {
    const patient = ctx.patient();
    if (!patient) {
      // a literal reference to a Patient outside the Bundle (Epic: Observation.subject Patient/<id>, no identifier) that nobody could resolve
      const dr = ctx.all<DiagnosticReport>('DiagnosticReport')[0];
      const ref = (dr ?? ctx.all<Observation>('Observation')[0])?.subject?.reference;
      if (ref && /^Patient\//.test(ref))
        throw missing(`${dr ? 'DiagnosticReport' : 'Observation'}.subject (${ref}: not in the Bundle, not found in the store nor at the source's EHR, and the reference has no identifier)`, 'PID-3 (patient identifier list)');
      throw missing('a Patient (DiagnosticReport.subject / Observation.subject: a Patient in the Bundle or a reference with an identifier)', 'PID');
    }
    const out = [this.pid(patient, ctx)];
    const enc = ctx.all<Encounter>('Encounter')[0];
    if (enc && this.on('PV1')) out.push(this.pv1(enc, ctx));
    const reports = ctx.all<DiagnosticReport>('DiagnosticReport');
    const used = new Set<Observation>();
    let obrSet = 0;
    for (const dr of reports) {
      const obs = (dr.result ?? []).map((r) => ctx.resolve<Observation>(r)).filter((o): o is Observation => !!o);
      obs.forEach((o) => used.add(o));
      out.push(...this.obrGroup(++obrSet, dr, obs, ctx));
    }
    // Observations without a report (an EHR's Observation feed): each gets its own OBR with its code
    for (const o of ctx.all<Observation>('Observation')) {
      if (used.has(o) || ctx.all<Observation>('Observation').some((p) => p.hasMember?.some((m) => ctx.resolve(m) === o))) continue;
      out.push(...this.obrGroup(++obrSet, undefined, [o], ctx));
    }
    if (!obrSet) throw missing('DiagnosticReport or Observation', 'OBR/OBX');
    return out;
  }

  private obrGroup(setId: number, dr: DiagnosticReport | undefined, obs: Observation[], ctx: Ctx): Seg[] {
    const w = this.w;
    const code = dr ? dr.code : obs[0]?.code;
    const obr4 = w.cwe(code, 'OBR-4');
    if (!obr4) throw missing(dr ? 'DiagnosticReport.code' : 'Observation.code', 'OBR-4 (universal service identifier)');
    const ids = dr?.identifier ?? [];
    const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
    const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
    const eff = dr ? (dr.effectiveDateTime ?? dr.effectivePeriod?.start) : (obs[0]?.effectiveDateTime ?? obs[0]?.effectivePeriod?.start);
    const status = dr ? v2CodeOf('ResultStatus[Non-Queries]', dr.status) : obxStatus(obs[0]?.status);
    // ORC for the order the report is based on (ORC[ServiceRequest]: 2/3 numbers, 5 status, 12 requester)
    const sr = (dr?.basedOn ?? []).map((r) => ctx.resolve<ServiceRequest>(r)).find((x) => x?.resourceType === 'ServiceRequest');
    const orc = sr
      ? new Seg('ORC')
          .set(1, 'RE')
          .set(2, w.ei(sr.identifier?.find((x) => x.type?.coding?.some((c) => c.code === 'PLAC'))))
          .set(3, w.ei(sr.identifier?.find((x) => x.type?.coding?.some((c) => c.code === 'FILL'))))
          .set(5, v2CodeOf('OrderStatus', sr.status))
          .set(12, this.xcn(sr.requester, ctx))
      : undefined;
    const obr = new Seg('OBR')
      .set(1, String(setId))
      .set(2, w.ei(placer))
      .set(3, w.ei(filler))
      .set(4, obr4)
      .set(7, dtm(eff))
      .set(8, dtm(dr?.effectivePeriod?.end))
      .set(22, dtm(dr?.issued ?? obs[0]?.issued))
      .set(24, dr ? (w.cwe(first(dr.category), 'OBR-24', 'DiagnosticServiceSectionID')?.[0] as string | undefined) : undefined)
      .set(25, status === 'A' ? 'C' : status);
    const out = orc ? [orc, obr] : [obr];
    if (dr?.conclusion && this.on('NTE')) out.push(new Seg('NTE').set(1, '1').set(3, dr.conclusion));
    obs.forEach((o, i) => {
      out.push(this.obx(o, i + 1));
      if (this.on('NTE')) (o.note ?? []).forEach((n, k) => n.text && out.push(new Seg('NTE').set(1, String(k + 1)).set(3, n.text)));
    });
    // SPM exists from v2.5 on
    if (this.on('SPM') && !w.legacy) {
      const specs = [...(dr?.specimen ?? []), ...obs.flatMap((o) => (o.specimen ? [o.specimen] : []))]
        .map((r) => ctx.resolve<Specimen>(r))
        .filter((s, i, a): s is Specimen => !!s && a.indexOf(s) === i);
      specs.forEach((sp, i) => out.push(this.spm(sp, i + 1)));
    }
    return out;
  }

  /** OBX[Observation] in reverse: value type from the value[x] kind. */
  private obx(o: Observation, setId: number): Seg {
    const w = this.w;
    const code = w.cwe(o.code, 'OBX-3');
    if (!code) throw missing('Observation.code', 'OBX-3 (observation identifier)');
    const status = obxStatus(o.status);
    if (!status) throw missing('Observation.status', 'OBX-11 (observation result status)');
    const s = new Seg('OBX').set(1, String(setId)).set(3, code);
    let type: string | undefined;
    let value: Hl7WriteField | undefined;
    if (o.valueQuantity?.value !== undefined) {
      const q = o.valueQuantity;
      if (q.comparator) {
        type = 'SN';
        value = [q.comparator, nm(q.value)!];
      } else {
        type = 'NM';
        value = nm(q.value);
      }
      s.set(6, unitsCwe(w, q));
    } else if (o.valueInteger !== undefined) {
      type = 'NM';
      value = String(o.valueInteger);
    } else if (o.valueString !== undefined) {
      type = o.valueString.length > 199 || /[\r\n]/.test(o.valueString) ? 'TX' : 'ST';
      value = o.valueString;
    } else if (o.valueCodeableConcept) {
      type = w.legacy ? 'CE' : 'CWE';
      value = w.cwe(o.valueCodeableConcept, 'OBX-5');
    } else if (o.valueDateTime) {
      type = o.valueDateTime.length <= 10 ? 'DT' : 'DTM';
      value = dtm(o.valueDateTime);
    } else if (o.valueBoolean !== undefined) {
      type = 'ST';
      value = o.valueBoolean ? 'true' : 'false';
    } else if (o.valueTime) {
      type = 'TM';
      value = o.valueTime.replace(/:/g, '');
    } else if (o.valueRange && (o.valueRange.low?.value !== undefined || o.valueRange.high?.value !== undefined)) {
      type = 'SN';
      value = ['', nm(o.valueRange.low?.value) ?? '', '-', nm(o.valueRange.high?.value) ?? ''];
      s.set(6, unitsCwe(w, o.valueRange.low ?? o.valueRange.high));
    }
    if (type) s.set(2, type).set(5, value);
    const rr = first(o.referenceRange);
    if (rr) {
      const lo = nm(rr.low?.value);
      const hi = nm(rr.high?.value);
      s.set(7, rr.text ?? (lo !== undefined && hi !== undefined ? `${lo}-${hi}` : lo !== undefined ? `>${lo}` : hi !== undefined ? `<${hi}` : undefined));
    }
    s.reps(8, (o.interpretation ?? []).map((i) => w.cwe(i, 'OBX-8', 'InterpretationCodes')));
    s.set(11, status);
    s.set(14, dtm(o.effectiveDateTime ?? o.effectivePeriod?.start));
    s.set(17, w.cwe(o.method, 'OBX-17'));
    s.set(19, dtm(o.issued));
    return s;
  }

  /** SPM[Specimen] in reverse. */
  private spm(sp: Specimen, setId: number): Seg {
    const w = this.w;
    const type = w.cwe(sp.type, 'SPM-4');
    if (!type) throw missing('Specimen.type', 'SPM-4 (specimen type)');
    const ids = sp.identifier ?? [];
    const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
    const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
    const eip = placer || filler ? [w.eiSub(placer) ?? '', w.eiSub(filler) ?? ''] : undefined;
    const coll = sp.collection;
    return new Seg('SPM')
      .set(1, String(setId))
      .set(2, eip as Hl7WriteField)
      .set(4, type)
      .set(7, w.cwe(coll?.method, 'SPM-7'))
      .set(8, w.cwe(coll?.bodySite, 'SPM-8'))
      .set(17, coll?.collectedDateTime || coll?.collectedPeriod ? [dtm(coll.collectedDateTime ?? coll.collectedPeriod?.start) ?? '', dtm(coll.collectedPeriod?.end) ?? ''] : undefined)
      .set(18, dtm(sp.receivedTime));
  }

  // -------------------------------------------------------------------------------------------
  // VXU^V04: PID, {ORC, RXA, [RXR], {OBX}} (IG message map VXU_V04; RXA[Immunization], RXR[Immunization], ORC[Immunization])

  private vxu(ctx: Ctx): Seg[] {
    const w = this.w;
    const patient = ctx.resolve<Patient>(ctx.all<Immunization>('Immunization')[0]?.patient) ?? ctx.patient();
    if (!patient) throw missing('Immunization.patient', 'PID');
    const out = [this.pid(patient, ctx)];
    // VXU_V04 patient group: {NK1}, [PV1]
    if (this.on('NK1')) this.nextOfKin(ctx, patient).forEach((rp, i) => out.push(this.nk1(rp, i + 1)));
    const enc = ctx.all<Encounter>('Encounter')[0];
    if (enc && this.on('PV1')) out.push(this.pv1(enc, ctx));
    const observations = ctx.all<Observation>('Observation');
    const obsOf = (im: Immunization) => observations.filter((o) => o.partOf?.some((r) => ctx.resolve(r) === im));
    const anyLinked = ctx.all<Immunization>('Immunization').some((im) => obsOf(im).length);
    // observations about the patient, not an administration (v2.8 PATIENT_OBSERVATION group)
    if (anyLinked) observations.filter((o) => !o.partOf?.length).forEach((o, k) => out.push(this.obx(o, k + 1)));
    for (const [n, im] of ctx.all<Immunization>('Immunization').entries()) {
      const ids = im.identifier ?? [];
      const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
      const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
      const fn = (code: string) => (im.performer ?? []).filter((p) => p.function?.coding?.some((c) => c.code === code));
      out.push(
        new Seg('ORC')
          .set(1, 'RE')
          .set(2, w.ei(placer))
          .set(3, w.ei(filler) ?? ['9999'])
          .reps(12, fn('OP').map((p) => this.xcn(p.actor, ctx))),
      );
      const when = dtm(im.occurrenceDateTime);
      if (!when) throw missing('Immunization.occurrenceDateTime', 'RXA-3 (date/time start of administration)');
      const vaccine = w.cwe(im.vaccineCode, 'RXA-5');
      if (!vaccine) throw missing('Immunization.vaccineCode', 'RXA-5 (administered code)');
      const mfr = ctx.resolve<{ resourceType: 'Organization'; name?: string; identifier?: Identifier[] } & Resource>(im.manufacturer);
      const mvx = mfr?.identifier?.[0];
      const completion = im.status === 'not-done' ? 'RE' : im.status === 'entered-in-error' ? 'CP' : im.isSubpotent ? 'PA' : 'CP';
      out.push(
        new Seg('RXA')
          .set(1, '0')
          .set(2, '1')
          .set(3, when)
          .set(4, when)
          .set(5, vaccine)
          .set(6, nm(im.doseQuantity?.value) ?? '999')
          .set(7, im.doseQuantity ? unitsCwe(w, im.doseQuantity) : undefined)
          .set(9, im.primarySource === undefined ? undefined : im.primarySource ? ['00', 'New Record', 'NIP001'] : ['01', 'Historical Administration', 'NIP001'])
          .reps(10, fn('AP').map((p) => this.xcn(p.actor, ctx)))
          .set(11, im.location ? ['', '', '', ctx.resolve<Location>(im.location)?.name ?? im.location.display ?? ''] : undefined)
          .set(15, im.lotNumber)
          .set(16, dt(im.expirationDate))
          .set(17, mvx?.value || mfr?.name || im.manufacturer?.display ? [mvx?.value ?? '', mfr?.name ?? im.manufacturer?.display ?? '', mvx ? w.codingSystem(mvx.system) : ''] : undefined)
          .set(18, w.cwe(im.statusReason, 'RXA-18'))
          .reps(19, (im.reasonCode ?? []).map((r) => w.cwe(r, 'RXA-19')))
          .set(20, completion)
          .set(21, im.status === 'entered-in-error' ? 'D' : 'A')
          .set(22, dtm(im.recorded)),
      );
      if ((im.route || im.site) && this.on('RXR')) out.push(new Seg('RXR').set(1, w.cwe(im.route, 'RXR-1') ?? ['']).set(2, w.cwe(im.site, 'RXR-2')));
      // the administration's observations (funding, VIS…): those partOf it, else all of them after the first RXA
      (anyLinked ? obsOf(im) : n === 0 ? observations : []).forEach((o, k) => out.push(this.obx(o, k + 1)));
    }
    // VXU_V04 {INSURANCE} after the orders
    out.push(...this.insurance(ctx));
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // ORM^O01: PID, [PV1], {IN1}, {AL1}, {ORC, OBR, {NTE}, {DG1}, {OBX}} (ORC[ServiceRequest], OBR[ServiceRequest])
  // OML^O21: PID, [PV1], {IN1}, {AL1}, {ORC, [TQ1], OBR, {NTE}, {DG1}, {OBX}, {SPM}} (IG message map OML_O21)

  private orm(ctx: Ctx, type: string): Seg[] {
    const oml = type.startsWith('OML^');
    const orders = ctx.all<ServiceRequest>('ServiceRequest');
    const patient = ctx.resolve<Patient>(orders[0]?.subject) ?? ctx.patient();
    if (!patient) throw missing('ServiceRequest.subject (Patient)', 'PID');
    const out = [this.pid(patient, ctx)];
    // OML_O21 patient group: {NK1} (ORM_O01 has none)
    if (oml && this.on('NK1')) this.nextOfKin(ctx, patient).forEach((rp, i) => out.push(this.nk1(rp, i + 1)));
    const enc = ctx.all<Encounter>('Encounter')[0];
    if (enc && this.on('PV1')) out.push(this.pv1(enc, ctx));
    // ORM_O01 / OML_O21 patient group: {INSURANCE}, {AL1}
    out.push(...this.insurance(ctx));
    if (this.on('AL1')) ctx.all<AllergyIntolerance>('AllergyIntolerance').forEach((a, i) => out.push(this.al1(a, i + 1)));
    const linked = (sr: ServiceRequest) =>
      (sr.supportingInfo ?? []).map((r) => ctx.resolve<Observation>(r)).filter((o): o is Observation => o?.resourceType === 'Observation');
    const anyLinked = orders.some((sr) => linked(sr).length);
    orders.forEach((sr, i) => {
      out.push(...this.orderSegs(sr, i + 1, ctx, oml));
      if (this.on('NTE')) (sr.note ?? []).forEach((n, k) => n.text && out.push(new Seg('NTE').set(1, String(k + 1)).set(3, n.text)));
      // the order's diagnoses and observations: those it references, else (first order) all in the Bundle
      const reasons = (sr.reasonReference ?? []).map((r) => ctx.resolve<Condition>(r)).filter((c): c is Condition => c?.resourceType === 'Condition');
      const dg = reasons.length ? reasons : i === 0 ? ctx.all<Condition>('Condition') : [];
      if (this.on('DG1')) dg.forEach((c, k) => out.push(this.dg1(c, k + 1, enc, ctx)));
      const obs = anyLinked ? linked(sr) : i === 0 ? ctx.all<Observation>('Observation') : [];
      obs.forEach((o, k) => out.push(this.obx(o, k + 1)));
      // OML_O21 SPECIMEN group: the order's specimens (SPM exists from v2.5 on)
      if (oml && this.on('SPM') && !this.w.legacy)
        (sr.specimen ?? [])
          .map((r) => ctx.resolve<Specimen>(r))
          .filter((x): x is Specimen => x?.resourceType === 'Specimen')
          .forEach((sp, k) => out.push(this.spm(sp, k + 1)));
    });
    return out;
  }

  /**
   * ORC[ServiceRequest] + OBR[ServiceRequest] in reverse (ORM_O01 and MDM_T02 order groups). No OBR for an
   * order without a code (ORM_O01's order detail is optional: diet, supply… orders).
   */
  private orderSegs(sr: ServiceRequest, setId: number, ctx: Ctx, tq1 = false): Seg[] {
    const w = this.w;
    const ids = sr.identifier ?? [];
    const placer = ids.find((x) => x.type?.coding?.some((c) => c.code === 'PLAC')) ?? ids.find((x) => !x.type);
    const filler = ids.find((x) => x.type?.coding?.some((c) => c.code === 'FILL'));
    const code = w.cwe(sr.code, 'OBR-4');
    // an order known only by its group (requisition, ORC-4) is an order too (OML_O21 orders of a panel)
    if (!placer?.value && !filler?.value && !sr.requisition?.value) throw missing('ServiceRequest.identifier', 'ORC-2/ORC-3 (placer/filler order number)');
    const [control, orderStatus] = orcStatus(sr.status);
    const requester = this.xcn(sr.requester, ctx);
    const when = dtm(sr.occurrenceDateTime ?? sr.occurrencePeriod?.start);
    const out = [
      new Seg('ORC')
        .set(1, control)
        .set(2, w.ei(placer))
        .set(3, w.ei(filler))
        .set(4, w.ei(sr.requisition))
        .set(5, orderStatus)
        .set(7, sr.priority ? ['', '', '', when ?? '', '', v2CodeOf('ExtendedPriorityCodes', sr.priority) ?? ''] : undefined)
        .set(9, dtm(sr.authoredOn))
        .set(12, requester),
    ];
    // OML_O21 TIMING: TQ1-7 start, TQ1-9 priority (ORC-7 is kept for receivers that read it)
    if (tq1 && (when || sr.priority) && this.on('TQ1'))
      out.push(new Seg('TQ1').set(1, '1').set(7, when).set(9, sr.priority ? [v2CodeOf('ExtendedPriorityCodes', sr.priority) ?? '', '', 'HL70485'] : undefined));
    // a DiagnosticReport based on this order (the inbound map makes one when OBR-22/25 are valued) gives OBR-7/22/25
    const dr = ctx.all<DiagnosticReport>('DiagnosticReport').find((d) => d.basedOn?.some((r) => ctx.resolve(r) === sr));
    if (code)
      out.push(
        new Seg('OBR')
          .set(1, String(setId))
          .set(2, w.ei(placer))
          .set(3, w.ei(filler))
          .set(4, code)
          .set(7, dtm(dr?.effectiveDateTime ?? dr?.effectivePeriod?.start) ?? when)
          .set(16, requester)
          .set(22, dtm(dr?.issued))
          .set(25, dr ? v2CodeOf('ResultStatus[Non-Queries]', dr.status) : undefined),
      );
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // MDM^T02: EVN, PID, PV1, TXA, {OBX} (IG message map MDM_T02; TXA[DocumentReference], OBX[DocumentReference])

  private mdm(ctx: Ctx): Seg[] {
    const w = this.w;
    const doc = ctx.all<DocumentReference>('DocumentReference')[0];
    const patient = ctx.resolve<Patient>(doc.subject) ?? ctx.patient();
    if (!patient) throw missing('DocumentReference.subject (Patient)', 'PID');
    const out = [this.pid(patient, ctx)];
    const enc = ctx.resolve<Encounter>(doc.context?.encounter?.[0]) ?? ctx.all<Encounter>('Encounter')[0];
    if (enc?.resourceType === 'Encounter' && this.on('PV1')) out.push(this.pv1(enc, ctx));
    // MDM_T02 {ORC, OBR}: the order the document belongs to (no OBX: the content follows TXA). The inbound
    // MDM_T02 map makes OBR a ServiceRequest only (ORC[ServiceRequest], OBR[ServiceRequest]): each ServiceRequest
    // is written as ORC + OBR; a DiagnosticReport (a Bundle from another source) as its OBR group, with the
    // ServiceRequest it is based on as its ORC
    const reports = ctx.all<DiagnosticReport>('DiagnosticReport');
    const reported = new Set(reports.flatMap((dr) => (dr.basedOn ?? []).map((r) => ctx.resolve<Resource>(r)).filter((x): x is Resource => !!x)));
    let obrSet = 0;
    ctx.all<ServiceRequest>('ServiceRequest').forEach((sr) => {
      if (!reported.has(sr)) out.push(...this.orderSegs(sr, ++obrSet, ctx));
    });
    reports.forEach((dr) => out.push(...this.obrGroup(++obrSet, dr, [], ctx)));
    const type = w.cwe(doc.type, 'TXA-2')?.[0];
    if (!type) throw missing('DocumentReference.type', 'TXA-2 (document type)');
    const master = doc.masterIdentifier ?? doc.identifier?.[0];
    if (!master?.value) throw missing('DocumentReference.masterIdentifier', 'TXA-12 (unique document number)');
    const attachments = (doc.content ?? []).map((c) => c.attachment).filter((a) => a.data || a.url);
    const text = attachments.length > 0 && attachments.every((a) => !a.contentType || a.contentType.startsWith('text/plain'));
    // TXA-17 completion: final -> AU (authenticated), preliminary -> IP; TXA-19 availability from the status
    const completion = doc.docStatus === 'final' || doc.docStatus === 'amended' ? 'AU' : doc.docStatus === 'preliminary' ? 'IP' : 'DO';
    out.push(
      new Seg('TXA')
        .set(1, '1')
        .set(2, type as string)
        .set(3, text ? 'TX' : attachments.length ? 'AP' : undefined)
        .set(4, dtm(doc.date))
        .set(6, dtm(doc.date))
        .reps(9, (doc.author ?? []).map((a) => this.xcn(a, ctx)))
        .set(12, w.ei(master))
        .set(13, w.ei(doc.relatesTo?.[0]?.target?.identifier))
        .set(17, completion)
        .set(19, doc.status === 'superseded' ? 'OB' : doc.status === 'entered-in-error' ? 'CA' : 'AV')
        .set(25, doc.description),
    );
    // the content: text/plain as TX (one OBX per line), anything else as ED (Base64) or RP (a URL)
    let set = 0;
    for (const a of attachments) {
      if (a.data && (!a.contentType || a.contentType.startsWith('text/plain'))) {
        for (const line of Buffer.from(a.data, 'base64').toString('utf8').split(/\r\n|\n|\r/))
          out.push(new Seg('OBX').set(1, String(++set)).set(2, 'TX').set(3, w.cwe(doc.type, 'OBX-3') ?? ['']).set(5, line).set(11, 'F'));
      } else if (a.data) {
        const [mt, sub] = (a.contentType ?? 'application/octet-stream').split('/');
        out.push(new Seg('OBX').set(1, String(++set)).set(2, 'ED').set(3, w.cwe(doc.type, 'OBX-3') ?? ['']).set(5, ['', mt, sub ?? '', 'Base64', a.data]).set(11, 'F'));
      } else if (a.url) {
        out.push(new Seg('OBX').set(1, String(++set)).set(2, 'RP').set(3, w.cwe(doc.type, 'OBX-3') ?? ['']).set(5, [a.url, '', a.contentType?.split('/')[0] ?? '', a.contentType?.split('/')[1] ?? '']).set(11, 'F'));
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // SIU^S12: SCH, [NTE], PID, [PV1], RGS, [AIS], [AIL], [AIP] (IG message map SIU_S12)

  private siu(a: Appointment, ctx: Ctx): Seg[] {
    const w = this.w;
    const ids = a.identifier ?? [];
    const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
    const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
    if (!placer?.value && !filler?.value) throw missing('Appointment.identifier', 'SCH-1/SCH-2 (placer/filler appointment id)');
    if (!a.start) throw missing('Appointment.start', 'SCH-11.4 (appointment timing: start)');
    const actors = (a.participant ?? []).map((p) => ({ p, r: p.actor ? ctx.resolve<Resource>(p.actor) : undefined }));
    const patient = actors.find((x) => x.r?.resourceType === 'Patient')?.r as Patient | undefined;
    if (!patient) throw missing('Appointment.participant.actor (a Patient in the Bundle or a reference with an identifier)', 'PID');
    const minutes = a.minutesDuration ?? (a.end ? Math.round((Date.parse(a.end) - Date.parse(a.start)) / 60000) : undefined);
    // SCH[Appointment]: 1 placer, 2 filler, 6 event reason (required: the status), 7 reason, 8 type, 9/10 duration, 11 TQ, 25 status
    const fillerStatus = v2CodeOf('FillerStatusCodes[Appointment]', a.status);
    const reason = w.cwe(first(a.reasonCode), 'SCH-7', 'AppointmentReasonCodes');
    const sch = new Seg('SCH')
      .set(1, w.ei(placer))
      .set(2, w.ei(filler))
      .set(6, reason ?? (fillerStatus ? [fillerStatus, '', 'HL70278'] : undefined))
      .set(7, reason)
      .set(8, w.cwe(a.appointmentType, 'SCH-8', 'AppointmentTypeCodes'))
      .set(9, minutes !== undefined && minutes >= 0 ? String(minutes) : undefined)
      .set(10, minutes !== undefined && minutes >= 0 ? ['min', 'minutes', 'UCUM'] : undefined)
      .set(11, ['', '', minutes !== undefined && minutes >= 0 ? `M${minutes}` : '', dtm(a.start) ?? '', dtm(a.end) ?? ''])
      .set(25, fillerStatus ? [fillerStatus, '', 'HL70278'] : undefined);
    const out = [sch];
    if (a.comment && this.on('NTE')) out.push(new Seg('NTE').set(1, '1').set(3, a.comment));
    out.push(this.pid(patient, ctx));
    const enc = ctx.all<Encounter>('Encounter')[0];
    if (enc && this.on('PV1')) out.push(this.pv1(enc, ctx));
    // SIU_S12 patient group: {OBX}, {DG1}
    ctx.all<Observation>('Observation').forEach((o, i) => out.push(this.obx(o, i + 1)));
    if (this.on('DG1')) ctx.all<Condition>('Condition').forEach((c, i) => out.push(this.dg1(c, i + 1, enc, ctx)));
    if (this.on('RGS')) out.push(new Seg('RGS').set(1, '1'));
    const start = (p: { period?: { start?: string } }) => dtm(p.period?.start ?? a.start);
    if (this.on('AIS')) a.serviceType?.forEach((st, i) => out.push(new Seg('AIS').set(1, String(i + 1)).set(3, w.cwe(st, 'AIS-3')).set(4, dtm(a.start)).set(7, minutes !== undefined ? String(minutes) : undefined).set(8, minutes !== undefined ? ['min', 'minutes', 'UCUM'] : undefined)));
    // resource group order (SIU_S12): {AIS}, {AIG}, {AIL}, {AIP}
    const ail: Seg[] = [];
    const aip: Seg[] = [];
    for (const { p, r } of actors) {
      if (r?.resourceType === 'Location' && this.on('AIL')) ail.push(new Seg('AIL').set(1, String(ail.length + 1)).set(3, this.pl(p.actor!, ctx)).set(6, start(p)));
      else if (r?.resourceType === 'Practitioner' && this.on('AIP') && !p.type?.some((t) => t.coding?.some((c) => ['CON', 'ENT'].includes(c.code ?? ''))))
        aip.push(new Seg('AIP').set(1, String(aip.length + 1)).set(3, this.xcn(p.actor, ctx)).set(4, w.cwe(first(p.type), 'AIP-4')).set(6, start(p)));
    }
    out.push(...ail, ...aip);
    return out;
  }
}

/** v2 table 0131 (contact role): NK1-7, kept by the inbound map on Patient.contact.relationship. */
const V2_0131 = 'http://terminology.hl7.org/CodeSystem/v2-0131';

/** What an NK1 is written from: a RelatedPerson, or a Patient.contact (with its 0131 contact role). */
type NextOfKin = Pick<RelatedPerson, 'name' | 'relationship' | 'address' | 'telecom'> & { role?: Coding };

/** A Coverage that is only a financial class (PV1-20): a type, no plan, no payor reference. */
function financialClassOnly(c: Coverage): boolean {
  return !!c.type && !c.class?.length && !(c.payor ?? []).some((p) => p.reference || p.identifier);
}

/** Stand-ins for logical references (identifier only): the Patient's name is then not required. */
const LOGICAL = new WeakSet<Resource>();

/** Bundle lookups: references by fullUrl or Type/id, and logical references by identifier. */
class Ctx {
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
      else if (type === 'Practitioner') res = { resourceType: 'Practitioner', identifier: [r.identifier], name } as Practitioner;
      else if (type === 'Location') res = { resourceType: 'Location', identifier: [r.identifier], name: r.display ?? r.identifier.value } as Location;
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
    const subj = this.resolve<Patient>(ref && !ref.type && !/^Patient\//.test(ref.reference ?? '') && ref.identifier ? { ...ref, type: 'Patient' } : ref);
    return subj?.resourceType === 'Patient' ? subj : this.all<Patient>('Patient').find((p) => !p.link?.some((l) => l.type === 'replaced-by')) ?? this.all<Patient>('Patient')[0];
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
      if (ref?.reference && /^Patient\/[^/]+$/.test(ref.reference) && !ref.identifier?.value && !known.has(ref.reference)) out.add(ref.reference);
  return [...out];
}
