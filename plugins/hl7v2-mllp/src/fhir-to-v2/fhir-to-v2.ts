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
  Appointment,
  Bundle,
  CodeableConcept,
  Coding,
  Encounter,
  Identifier,
  MessageHeader,
  Patient,
  Resource,
} from '@medplum/fhirtypes';
import { type Delimiters, STANDARD_DELIMITERS } from '../hl7v2/delimiters';
import { encodeField } from '../hl7v2/parser';
import { adt } from './adt';
import { Ctx, LOGICAL } from './bundle-context';
import { type Comps, dt, dtm, nm, xad, xpn } from './datatypes';
import { mdm } from './document';
import { vxu } from './immunization';
import { orm } from './orders';
import { type BundleKind, KIND_OF_MESSAGE, type ReceiverProfile, receiverProfile } from './profile';
import { oru } from './results';
import { siu } from './scheduling';
import { Seg, V2Out } from './segment';

export { unresolvedPatientReferences } from './bundle-context';
export { orcStatus } from './orders';

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

/** A profile HD value, `LAB^1.2.3^ISO`: its components. */
const hd = (v: string): string[] => v.split('^');

/** A deterministic control id: 20 characters (the v2.5.1 MSH-10 length) from a SHA-1 of the seed. */
export function controlIdFor(seed: string, index = 0): string {
  return createHash('sha1')
    .update(index ? `${seed}#${index}` : seed)
    .digest('hex')
    .slice(0, 20)
    .toUpperCase();
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
  private readonly out: V2Out;
  private readonly d: Delimiters = STANDARD_DELIMITERS;

  constructor(profile?: ReceiverProfile | unknown) {
    this.profile = receiverProfile(profile);
    this.out = new V2Out(this.profile);
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
    throw inputError(
      'FHIR_TO_V2_UNSUPPORTED',
      `cannot express the Bundle in HL7 v2: it holds no Patient, Encounter, DiagnosticReport, Observation, ServiceRequest, Immunization, DocumentReference or Appointment (has ${[...types].filter(Boolean).join(', ') || 'nothing'})`,
      {},
    );
  }

  /** Convert one Bundle. Throws a FerryError (kind input) naming the FHIR element and v2 field when data is missing. */
  convert(bundle: Bundle, opts: FhirToV2Options): V2Message[] {
    if (!bundle || bundle.resourceType !== 'Bundle')
      throw inputError('FHIR_TO_V2_NOT_BUNDLE', 'cannot express the input in HL7 v2: it is not a FHIR Bundle', {});
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
    if (kind === 'appointment')
      ctx.all<Appointment>('Appointment').forEach((a, i) => one(() => siu(this.out, a, ctx), i, a));
    else if (kind === 'result') one(() => oru(this.out, ctx));
    else if (kind === 'immunization') one(() => vxu(this.out, ctx));
    else if (kind === 'document') one(() => mdm(this.out, ctx));
    else if (kind === 'order') one((type) => orm(this.out, ctx, type));
    else one((type) => adt(this.out, ctx, type));
    return out;
  }

  /** The message type of the first `messageTypeRules` entry whose FHIRPath is true on the Bundle. */
  private ruleType(bundle: Bundle): string | undefined {
    for (const r of this.profile.messageTypeRules) {
      let hit: boolean;
      try {
        hit = fhirpathTest(r.when, bundle);
      } catch (e) {
        throw inputError(
          'FHIR_TO_V2_RULE',
          `cannot choose the HL7 v2 message type: messageTypeRules "${r.when}" failed on the Bundle: ${(e as Error).message.split('\n')[0]}`,
          { rule: r.when },
        );
      }
      if (hit) return r.type;
    }
    return undefined;
  }

  private header(bundle: Bundle): MessageHeader | undefined {
    return bundle.entry?.find((e) => e.resource?.resourceType === 'MessageHeader')?.resource as
      MessageHeader | undefined;
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
          if (
            ctx
              .all<Patient>('Patient')
              .some((p) => p.link?.some((l) => l.type === 'replaced-by' || l.type === 'replaces'))
          )
            t = 'ADT^A40';
          // a Patient alone: A28 add person when it is new (created in the Bundle: request POST, or its first version), else A31 update person
          else if (!e) t = ctx.patientIsNew() ? 'ADT^A28' : 'ADT^A31';
          // IG Event[EncounterStatus] in reverse: A01 in-progress, A03 finished, A04 planned; cancelled (or entered in error): A11 cancel admit
          else
            t =
              e.status === 'in-progress'
                ? 'ADT^A01'
                : e.status === 'finished'
                  ? 'ADT^A03'
                  : e.status === 'planned' || e.status === 'arrived'
                    ? 'ADT^A04'
                    : e.status === 'cancelled' || e.status === 'entered-in-error'
                      ? 'ADT^A11'
                      : 'ADT^A08';
        }
      } else if (kind === 'appointment') {
        const s = appt?.status;
        t =
          s === 'cancelled'
            ? 'SIU^S15'
            : s === 'noshow'
              ? 'SIU^S26'
              : s === 'entered-in-error'
                ? 'SIU^S17'
                : evOk?.startsWith('SIU^') && STRUCTURE[evOk]
                  ? evOk
                  : 'SIU^S12';
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
    if ((kind === 'adt' || kind === 'document') && this.out.on('EVN'))
      all.push(new Seg('EVN').set(1, p.version.startsWith('2.3') ? type.split('^')[1] : undefined).set(2, ts));
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

  /**
   * The profile's Z-segments: one per resource of the rule's type (the message's Patient for Patient),
   * each field the FHIRPath result on that resource, placed after the last segment named `after`.
   */
  private zSegments(all: Seg[], ctx: Ctx): void {
    for (const z of this.profile.zSegments) {
      const resources: Resource[] =
        z.resource === 'Patient' && ctx.messagePatient
          ? [ctx.messagePatient]
          : ctx.all<Resource>(z.resource as Resource['resourceType']).filter((r) => !LOGICAL.has(r));
      const segs = resources.map((r, i) => {
        const seg = new Seg(z.segment);
        for (const [n, expr] of Object.entries(z.fields)) {
          let vals: unknown[];
          try {
            vals = fhirpathEval(expr, r);
          } catch (e) {
            throw inputError(
              'FHIR_TO_V2_ZSEGMENT',
              `cannot write ${z.segment}-${n}: FHIRPath "${expr}" failed on ${r.resourceType}: ${(e as Error).message.split('\n')[0]}`,
              { segment: z.segment, field: Number(n) },
            );
          }
          seg.reps(
            Number(n),
            vals.map((v) => this.zValue(v, `${z.segment}-${n}`)),
          );
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
    if (typeof v === 'string')
      return [/^\d{4}-\d{2}(-\d{2})?$/.test(v) ? (dt(v) ?? v) : /^\d{4}-\d{2}-\d{2}T/.test(v) ? (dtm(v) ?? v) : v];
    if (typeof v !== 'object') return [String(v)];
    const o = v as Record<string, unknown>;
    if ('coding' in o || ('text' in o && Object.keys(o).length === 1))
      return this.out.w.cwe(o as CodeableConcept, field);
    if ('code' in o && ('system' in o || 'display' in o)) return this.out.w.cwe({ coding: [o as Coding] }, field);
    if ('value' in o && ('system' in o || 'type' in o || 'assigner' in o) && typeof o.value === 'string')
      return this.out.w.cx(o as Identifier);
    if ('value' in o && typeof o.value === 'number') return [nm(o.value) ?? String(o.value)];
    if ('family' in o || 'given' in o) return xpn(o as never);
    if ('line' in o || 'city' in o || 'postalCode' in o) return xad(o as never);
    if ('reference' in o || 'display' in o) return [String(o.display ?? o.reference)];
    return undefined;
  }
}
