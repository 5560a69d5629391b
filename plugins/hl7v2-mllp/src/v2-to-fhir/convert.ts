/**
 * HL7 v2 message -> canonical FHIR R4 transaction Bundle, following the HL7 v2-to-FHIR IG
 * (../shared/v2-to-fhir/mappings: messages -> segments -> datatypes -> concept maps).
 *
 * The walker reads segments in order and assigns each to its group the way the v2 message
 * structures nest them: a PID starts a patient (and its visit), an ORC starts an order group,
 * an OBR starts an observation request (joining the ORC above it, or its own group), an OBX
 * belongs to the OBR/RXA/TXA/SPM above it (or to the patient when none), an NTE annotates the
 * segment above it, an SCH starts an appointment and RGS resource groups add AIS/AIG/AIL/AIP
 * participants to it. Segment maps live in ./segments/*.ts.
 */
import type { Bundle, Encounter, MessageHeader, Patient, Provenance, Reference, Resource } from '@medplum/fhirtypes';
import type { Hl7Message, Hl7Segment } from '../hl7v2/parser';
import { type ConversionOptions, conversionOptions } from './conversion.schema';
import { BundleBuilder, Systems, ref, stableUuid } from './context';
import { dtmOffset, toDateTime, toInstant } from './dates';
import { type DefaultTz, zoneResolver } from './timezone';
import type { DtCtx } from './datatypes';
import { type IssueReporter, checkSegment, unknownSegment } from './quality';
import { SEGMENT_HANDLERS, finishMessage } from './segments';

export const FERRY_SEGMENT_EXTENSION = 'http://ferry.dev/fhir/StructureDefinition/hl7v2-segment';

/** Mutable state of the walk. */
export interface WalkState {
  patient?: Patient;
  encounter?: Encounter;
  /** The current order group (ORC and what follows). */
  order?: OrderGroup;
  /** The resource an NTE/OBX after the last segment refers to. */
  last?: Resource;
  lastSegment?: string;
  /** SIU: the appointment being built, and every appointment of the message. */
  appointment?: Resource;
  appointments: Resource[];
  /** VXU/RDE...: the last resource an RXR/RXC/OBX attaches to. */
  medication?: Resource;
  /** MDM: the document being built. */
  document?: Resource;
  /** OBX texts gathered for the MDM document. */
  documentText?: string[];
  specimen?: Resource;
  /** OUL^R22/R23, OML^O33/O35: the specimen heading the current group. */
  specimenGroup?: Resource;
  /** Resources created while under PID (for merges and subject). */
  mergeTargets: { segment: Hl7Segment; patient: Patient }[];
  /** REF/RRI: the referral (RF1) and the primary care providers (PRD PP) for the patient that follows. */
  referral?: Resource;
  primaryCare?: Reference[];
  /** SFT[Device]: the software that handled the message (Provenance entities). */
  software?: Resource[];
  /** Z / unknown segments kept. */
  kept: Hl7Segment[];
  /** Counters for message-local ids. */
  n: Map<string, number>;
  /** PL text -> Location reference (null: no location), per message. */
  locations: Map<string, Reference | null>;
}

export interface OrderGroup {
  orc?: Hl7Segment;
  obr?: Hl7Segment;
  serviceRequest?: Resource & { resourceType: 'ServiceRequest' };
  report?: Resource & { resourceType: 'DiagnosticReport' };
  observations: Resource[];
  specimens: Resource[];
  /** TQ1 segments seen before the request they time. */
  timing?: Hl7Segment[];
}

export class ConvertContext implements DtCtx {
  readonly systems: Systems;
  readonly b: BundleBuilder;
  /** MSH-7's offset when it has one (HL7 v2: the sender's zone), else the source's / the default zone. */
  readonly tz: DefaultTz;
  readonly messageCode: string;
  readonly trigger: string;
  /** Sending facility (else application): scopes identifiers that carry no assigning authority. */
  readonly scope: string;
  readonly state: WalkState = { mergeTargets: [], kept: [], n: new Map(), locations: new Map(), appointments: [] };
  header!: MessageHeader;
  provenance?: Provenance;

  constructor(
    readonly msg: Hl7Message,
    readonly opts: ConversionOptions,
    systems?: Systems,
    zone?: string,
    /** Where the values the conversion cannot use are reported (see quality.ts); none: not checked. */
    readonly report?: IssueReporter,
  ) {
    const msh = msg.msh;
    this.systems = systems ?? new Systems(opts);
    // an IANA zone (the source's, else the default) knows the sender's offset at each timestamp, DST included,
    // which MSH-7's single offset does not (a winter birth time in a summer message); a fixed offset is only
    // the fallback after MSH-7's
    const configured = zoneResolver(zone ?? opts.defaultTimezone);
    this.tz = typeof configured === 'function' ? configured : (dtmOffset(msh.get(7)) ?? configured);
    this.messageCode = msh.get(9, 0, 1).toUpperCase();
    this.trigger = msh.get(9, 0, 2).toUpperCase();
    this.scope = msh.get(4, 0, 1) || msh.get(4, 0, 2) || msh.get(3, 0, 1) || msh.get(3, 0, 2);
    const controlId = msh.get(10);
    const key = controlId ? `${msh.get(3)}|${msh.get(4)}|${controlId}|${msh.get(7)}` : `text|${msg.toString()}`;
    this.b = new BundleBuilder(key);
  }

  dt(v: string | undefined): string | undefined {
    return toDateTime(v, this.tz);
  }
  instant(v: string | undefined): string | undefined {
    return toInstant(v, this.tz);
  }

  /** A message-local id for the n-th resource of a kind (deterministic: by segment position). */
  localId(type: string, seg: Hl7Segment, extra = ''): string {
    return this.b.idFor(type, `${seg.name}#${seg.sequence}${extra}`, true);
  }

  subject(): Reference<any> | undefined {
    return this.state.patient ? ref(this.state.patient) : undefined;
  }
}

/** Converts a parsed message. Deterministic: the same input gives the same Bundle. */
const prepared = new WeakMap<object, { opts: ConversionOptions; systems: Systems }>();

/**
 * `sourceId`: the Ferry source the message came in on; its `sourceTimezones` entry, when there is one, is the
 * zone of times sent without an offset (instead of `defaultTimezone`). `report`: where the values the
 * conversion cannot use are reported (see quality.ts); none: not checked.
 */
export function convertMessage(
  msg: Hl7Message,
  options?: Partial<ConversionOptions>,
  sourceId?: string,
  report?: IssueReporter,
): Bundle {
  // options objects are usually long-lived (one per transform): cache the resolved options and system lookups
  let p = options ? prepared.get(options) : undefined;
  if (!p) {
    const opts = conversionOptions(options);
    p = { opts, systems: new Systems(opts) };
    if (options) prepared.set(options, p);
  }
  const opts = p.opts;
  const ctx = new ConvertContext(
    msg,
    opts,
    p.systems,
    sourceId !== undefined ? opts.sourceTimezones[sourceId] : undefined,
    report,
  );
  // Occurrences of each segment name so far (an issue names OBX 3, not the 7th segment).
  const seen = report ? new Map<string, number>() : undefined;
  for (const seg of msg.segments) {
    let occurrence = 0;
    if (seen) {
      occurrence = (seen.get(seg.name) ?? 0) + 1;
      seen.set(seg.name, occurrence);
      checkSegment(seg, occurrence, report!);
    }
    const h = SEGMENT_HANDLERS[seg.name];
    if (h) h(seg, ctx);
    else if (seg.name.startsWith('Z')) {
      if (opts.zSegments === 'extension') ctx.state.kept.push(seg);
    } else if (opts.unknownSegments === 'extension') ctx.state.kept.push(seg);
    else report?.(unknownSegment(seg, occurrence));
    ctx.state.lastSegment = seg.name;
  }
  finishMessage(ctx);
  const bundleId = stableUuid(`Bundle|${ctx.b.messageKey}`);
  const bundle = ctx.b.build(bundleId, toInstant(msg.msh.get(7), ctx.tz));
  // MSH[Bundle] rows 13-14: MSH-10 message control id -> Bundle.identifier; the system (left to the implementer)
  // names the sender, since control ids are unique per sending application and facility only
  const control = msg.msh.get(10).trim();
  if (control) {
    const app = msg.msh.get(3, 0, 1) || msg.msh.get(3, 0, 2);
    const fac = msg.msh.get(4, 0, 1) || msg.msh.get(4, 0, 2);
    bundle.identifier = {
      system: `urn:ferry:hl7v2:control-id:${encodeURIComponent(app.trim())}@${encodeURIComponent(fac.trim())}`,
      value: control,
    };
  }
  return bundle;
}

export function segmentText(seg: Hl7Segment): string {
  const fs = seg.delimiters.field;
  return seg.name === 'MSH' ? 'MSH' + fs + seg.fields.slice(2).join(fs) : seg.fields.join(fs);
}

export { ref, toDateTime };
