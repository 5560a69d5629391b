/** Results: OBX (Observation, its value[x] by OBX-2), SPM (Specimen) and NTE (a note on the resource above it). */
import type {
  Annotation,
  Appointment,
  DiagnosticReport,
  DocumentReference,
  Identifier,
  Observation,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import type { Hl7Rep, Hl7Segment } from '../../hl7v2/parser';
import { mapCode, V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import {
  c,
  codeOf,
  codeStr,
  compact,
  cwe,
  cx,
  dataAbsent,
  decimal,
  dr,
  ed,
  ei,
  eiNested,
  FILLER,
  isCode,
  nest,
  nr,
  PLACER,
  rp,
  sn,
  units,
  valued,
} from '../datatypes';
import { all, type Handler, idKey, push, type Ref } from './common';
import { attachSpecimen } from './order';
import { practitioner, xonOrg } from './shared-resources';

/** The value[x] elements an Observation and an Observation.component share. */
type ObsValue = Pick<
  Observation,
  | 'valueQuantity'
  | 'valueCodeableConcept'
  | 'valueString'
  | 'valueRange'
  | 'valueRatio'
  | 'valueDateTime'
  | 'valueTime'
  | 'valuePeriod'
  | 'extension'
>;

/**
 * The R5 `Observation.value[x]` backported to R4 (R5 allows Attachment): OBX[Observation] rows 26-27 (ED) and
 * 29-30 (RP) name it `extension-Observation.valueAttachment`; the cross-version extension's canonical URL for
 * the choice element is `http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value`.
 */
export const OBSERVATION_VALUE_ATTACHMENT = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value';

/** OBX-5 text types (OBX[Observation] row 8 -> valueString; OBX[Observation-Component] row 10 -> component[each].valueString). */
const TEXT_TYPES = new Set(['ST', 'TX', 'FT']);

/**
 * One OBX-5 text repetition as sent: a ST/TX/FT value has no components, so a component or subcomponent
 * separator inside it is text the sender did not escape; it is kept as the message's own separator
 * character (nothing after the first `^` is lost). Escaped separators (`\S\`) were decoded by the reader.
 */
export function repText(r: Hl7Rep, seg: Hl7Segment): string {
  const d = seg.delimiters;
  return r.length === 1 && r[0].length === 1
    ? r[0][0]
    : r.map((comp) => comp.join(d.subcomponent || '&')).join(d.component);
}

/**
 * OBX-5 -> Observation.value[x] by OBX-2 (OBX[Observation] rows 7-30). A repeating OBX-5 of any type (text
 * types too, below) keeps every repetition: one `component` per repetition with OBX-3 as its code and the value mapped
 * the same way (OBX[Observation-Component] rows 6 and 8-32: `component[each].code` = OBX-3,
 * `component[each].value[x]` = OBX-5 by OBX-2), so `60~120` NM becomes two valueQuantity components and a
 * coded OBX-5 loses none of its codes.
 */
function observationValue(o: Observation, seg: Hl7Segment, ctx: ConvertContext): void {
  const vt = seg.get(2).toUpperCase();
  const reps = seg.reps(5);
  if (!reps[0]) return;
  const u = seg.rep(6);
  if (TEXT_TYPES.has(vt)) {
    // ORU_R01 message map rows 4.2.4.3.1: OBX-5 LST.count <= 1 -> OBX[Observation] row 8 valueString; > 1 ->
    // OBX[Observation-Component] row 10 component[each].valueString (code = OBX-3, row 6): each repetition (a TX/FT
    // line, a ST value) is its own component, none joined into another and none dropped; blank repetitions
    // (empty lines) carry no value and make no component
    const texts = reps.map((r) => repText(r, seg)).filter(valued);
    if (texts.length === 1) o.valueString = texts[0];
    else if (texts.length > 1) o.component = texts.map((t) => ({ code: o.code, valueString: t }));
    return;
  }
  const values = reps
    .map((r) => {
      const v: ObsValue = {};
      oneValue(v, vt, r, u, ctx);
      return v;
    })
    .filter((v) => Object.keys(v).length > 0);
  if (values.length === 1)
    Object.assign(
      o,
      values[0].extension ? { ...values[0], extension: push(o.extension, ...values[0].extension) } : values[0],
    );
  else if (values.length > 1) o.component = values.map((v) => ({ code: o.code, ...v }));
}

/** One OBX-5 repetition -> value[x] (or the attachment extension) on an Observation or a component. */
function oneValue(o: ObsValue, vt: string, first: Hl7Rep, u: Hl7Rep, ctx: ConvertContext): void {
  switch (vt) {
    case 'NM': {
      // OBX[Observation] row 7 NM[Quantity], row 31 OBX-6 units
      const v = decimal(c(first, 1));
      if (v !== undefined) o.valueQuantity = units({ value: v }, u, ctx);
      else if (valued(c(first, 1))) o.valueString = c(first, 1);
      return;
    }
    case 'CE':
    case 'CWE':
    case 'CNE':
    case 'CF':
    case 'IS':
    case 'ID':
    case 'CK':
    case 'CN': {
      // rows 9-13 CWE/CNE/CE/CF/IS[CodeableConcept]
      const cc =
        vt === 'IS' || vt === 'ID'
          ? valued(c(first, 1))
            ? { coding: [{ code: codeStr(c(first, 1)) }] }
            : undefined
          : cwe(first, ctx);
      if (cc) o.valueCodeableConcept = cc;
      return;
    }
    case 'CX': {
      const id = cx(first, ctx);
      if (id?.value) o.valueString = id.value;
      return;
    }
    case 'SN': {
      // rows 19-24, OBX-6 rows 32-36
      const v = sn(first);
      if (!v) return;
      if (v.kind === 'quantity') o.valueQuantity = units(v.q, u, ctx);
      else if (v.kind === 'range') o.valueRange = { low: units(v.r.low!, u, ctx), high: units(v.r.high!, u, ctx) };
      else if (v.kind === 'ratio')
        o.valueRatio = { numerator: units(v.r.numerator!, u, ctx), denominator: units(v.r.denominator!, u, ctx) };
      else o.valueString = v.s;
      return;
    }
    case 'NR': {
      // row 16 NR[Range]
      const r = nr(first);
      if (r) o.valueRange = r;
      return;
    }
    case 'DT':
    case 'DTM':
    case 'TS': {
      // row 15
      const d = ctx.dt(c(first, 1));
      if (d) o.valueDateTime = d;
      else if (valued(c(first, 1))) o.valueString = c(first, 1);
      return;
    }
    case 'TM': {
      // row 18
      const m = /^(\d{2})(\d{2})?(\d{2})?/.exec(c(first, 1));
      if (m && +m[1] < 24 && +(m[2] ?? 0) < 60 && +(m[3] ?? 0) < 60)
        o.valueTime = `${m[1]}:${m[2] ?? '00'}:${m[3] ?? '00'}`;
      return;
    }
    case 'DR': {
      // row 14 DR[Period]
      const p = dr(first, ctx);
      if (p) o.valuePeriod = p;
      return;
    }
    case 'ED': {
      // rows 26-27: extension valueAttachment = ED[Attachment] (base64 data + content type); no value[x]
      const a = ed(first);
      if (a) o.extension = push(o.extension, { url: OBSERVATION_VALUE_ATTACHMENT, valueAttachment: a });
      return;
    }
    case 'RP': {
      // rows 29-30: extension valueAttachment = RP[Attachment] (url + content type); no value[x]
      const a = rp(first);
      if (a) o.extension = push(o.extension, { url: OBSERVATION_VALUE_ATTACHMENT, valueAttachment: a });
      return;
    }
    default: {
      const text = first
        .map((comp) => comp.filter(valued).join(' '))
        .filter(valued)
        .join(' ');
      if (valued(text)) o.valueString = text;
    }
  }
}

export const obx: Handler = (seg, ctx) => {
  const st = ctx.state;
  // MDM: OBX under TXA carry the document body
  if (st.document && ctx.messageCode === 'MDM') {
    const vt = seg.get(2).toUpperCase();
    if (vt === 'ED') {
      const a = ed(seg.rep(5));
      if (a) (st.document as DocumentReference).content.push({ attachment: a });
    } else if (vt === 'RP') {
      const a = rp(seg.rep(5));
      if (a) (st.document as DocumentReference).content.push({ attachment: a });
    } else {
      const t = seg
        .reps(5)
        .map((r) => repText(r, seg))
        .join('\n');
      (st.documentText ??= []).push(t);
    }
    return;
  }
  // OBX[Observation]
  const g = st.order;
  const parent = g?.report ?? g?.serviceRequest;
  const code = cwe(seg.rep(3), ctx) ?? { text: 'unknown' };
  const sub = seg.get(4);
  const filler =
    g?.report?.identifier?.find((i) => i.type?.coding?.[0]?.code === 'FILL') ??
    (g?.serviceRequest && (g.serviceRequest as ServiceRequest).identifier?.[0]);
  const key = filler?.value
    ? `${filler.system ?? `scope:${ctx.scope}`}|${filler.value}|${code.coding?.[0]?.code ?? code.text}|${sub}|${seg.get(1)}`
    : undefined;
  const status = codeOf('ObservationResultStatusCodesInterpretation', seg.get(11));
  const o: Observation = {
    resourceType: 'Observation',
    id: key ? ctx.b.idFor('Observation', key) : ctx.localId('Observation', seg),
    status: (status as Observation['status']) ?? (valued(seg.get(11)) ? 'unknown' : 'final'),
    code,
  };
  if (seg.get(11) === 'X') (o as Observation & { _status?: unknown })._status = dataAbsent('not-performed');
  if (ctx.state.patient) o.subject = ref(ctx.state.patient);
  if (ctx.state.encounter) o.encounter = ref(ctx.state.encounter);
  if (valued(sub))
    o.extension = [{ url: 'http://hl7.org/fhir/StructureDefinition/observation-v2-subid', valueString: sub }];
  observationValue(o, seg, ctx);
  const rr = seg.get(7);
  if (valued(rr)) {
    const m = /^\s*([-+]?\d*\.?\d+)\s*-\s*([-+]?\d*\.?\d+)\s*$/.exec(rr);
    const lo = m ? decimal(m[1]) : undefined;
    const hi = m ? decimal(m[2]) : undefined;
    o.referenceRange = [
      { ...(lo !== undefined && hi !== undefined ? { low: { value: lo }, high: { value: hi } } : {}), text: rr },
    ];
  }
  const interp = all(seg, 8, (r) => {
    const m = mapCode('InterpretationCodes', c(r, 1));
    if (!m) return cwe(r, ctx);
    return {
      coding: [{ system: m.system, code: m.code, ...(m.display ? { display: m.display } : {}) }],
      ...(valued(c(r, 2)) ? { text: c(r, 2) } : {}),
    };
  });
  if (interp.length) o.interpretation = interp;
  const eff = ctx.dt(seg.get(14)) ?? (g?.obr ? ctx.dt(g.obr.get(7)) : undefined);
  if (eff) o.effectiveDateTime = eff;
  // OBX[Observation] rows 58-59: OBX-19 date/time of the analysis -> extension observation-analysis-date-time (the IG
  // maps no OBX field to issued: the analysis is not the release; the report's OBR-22 is DiagnosticReport.issued)
  const analysed = ctx.dt(seg.get(19));
  if (analysed)
    o.extension = push(o.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time',
      valueDateTime: analysed,
    });
  // rows 74-75: OBX-29 observation type -> category (v2-0936)
  const otype = codeStr(seg.get(29));
  if (otype) o.category = [{ coding: [{ system: V2_TABLE('0936'), code: otype }] }];
  const performers = [...all(seg, 16, (r) => practitioner(r, ctx)), xonOrg(seg.rep(23), ctx)].filter(
    (x): x is Ref => !!x,
  );
  if (performers.length) o.performer = performers;
  const method = cwe(seg.rep(17), ctx);
  if (method) o.method = method;
  const site = cwe(seg.rep(20), ctx);
  if (site) o.bodySite = site;
  const device = all(seg, 18, (r) => ei(r, ctx));
  if (device.length) o.device = { identifier: device[0] };
  const instance = ei(seg.rep(21), ctx, FILLER()); // OBX-21 observation instance identifier (type FILL)
  if (instance) o.identifier = [instance];
  const nature = all(seg, 10, (r) => isCode(c(r, 1), '0080'));
  if (nature.length)
    o.extension = push(
      o.extension,
      ...nature.map((cc) => ({
        url: 'http://hl7.org/fhir/StructureDefinition/observation-nature-of-abnormal-test',
        valueCodeableConcept: cc,
      })),
    );
  if (g?.serviceRequest) o.basedOn = [ref(g.serviceRequest)];
  if (g?.specimens.length) o.specimen = ref(g.specimens[0]);
  else if (!g && st.specimenGroup) o.specimen = ref(st.specimenGroup); // OBX directly under SPM (specimen observations)
  if (!parent && st.medication?.resourceType === 'Immunization') o.partOf = [ref(st.medication)];
  const added = ctx.b.add(o);
  if (g?.report) (g.report as DiagnosticReport).result = push((g.report as DiagnosticReport).result, ref(added));
  else if (g?.serviceRequest)
    (g.serviceRequest as ServiceRequest).supportingInfo = push(
      (g.serviceRequest as ServiceRequest).supportingInfo,
      ref(added),
    );
  g?.observations.push(added);
  st.last = added;
};

export const spm: Handler = (seg, ctx) => {
  // SPM[Specimen]
  const placer = eiNested(seg.rep(2), 1, ctx, PLACER());
  const filler = eiNested(seg.rep(2), 2, ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const sp: Specimen = {
    resourceType: 'Specimen',
    id: key ? ctx.b.idFor('Specimen', key) : ctx.localId('Specimen', seg),
  };
  const ids = [placer, filler, ...all(seg, 31, (r) => cx(r, ctx))].filter((x): x is Identifier => !!x);
  if (ids.length) sp.identifier = ids;
  const acc = cx(seg.rep(30), ctx);
  if (acc) sp.accessionIdentifier = acc;
  const type = cwe(seg.rep(4), ctx);
  if (type) sp.type = type;
  if (ctx.state.patient) sp.subject = ref(ctx.state.patient);
  const coll: NonNullable<Specimen['collection']> = {};
  const method = cwe(seg.rep(7), ctx);
  if (method) coll.method = method;
  const site = cwe(seg.rep(8), ctx);
  if (site) coll.bodySite = site;
  const q = decimal(seg.get(12, 0, 1));
  if (q !== undefined) coll.quantity = units({ value: q }, nest(seg.rep(12), 2), ctx);
  const period = dr(seg.rep(17), ctx);
  if (period?.end) coll.collectedPeriod = period;
  else if (period?.start) coll.collectedDateTime = period.start;
  if (Object.keys(coll).length) sp.collection = coll;
  const recv = ctx.dt(seg.get(18));
  if (recv) sp.receivedTime = recv;
  const avail = seg.get(20);
  if (avail === 'Y') sp.status = 'available';
  else if (avail === 'N') sp.status = 'unavailable';
  const cond = all(seg, 24, (r) => cwe(r, ctx));
  if (cond.length) sp.condition = cond;
  const ctype = cwe(seg.rep(27), ctx);
  const additive = cwe(seg.rep(6), ctx);
  if (ctype || additive) sp.container = [compact({ type: ctype, additiveCodeableConcept: additive })!];
  const desc = seg.get(14);
  if (valued(desc)) sp.note = [{ text: desc }];
  const added = ctx.b.add(sp);
  if (SPECIMEN_FIRST.has(ctx.trigger)) {
    // OUL^R22/R23, OML^O33/O35: SPM heads its group; the orders that follow belong to this specimen
    ctx.state.order = undefined;
    ctx.state.specimenGroup = added;
  } else if (ctx.state.order) attachSpecimen(ctx.state.order, added);
  ctx.state.specimen = added;
  ctx.state.last = added;
};

/** Message structures where the specimen group contains the orders (OUL_R22, OUL_R23, OML_O33, OML_O35). */
const SPECIMEN_FIRST = new Set(['R22', 'R23', 'O33', 'O35']);

export const nte: Handler = (seg, ctx) => {
  // NTE -> note on the resource the segment above created
  // NTE-3 (FT, repeating): each repetition a line; a separator inside the text kept as the message's own (repText)
  const text = seg
    .reps(3)
    .map((r) => repText(r, seg))
    .join('\n');
  if (!valued(text)) return;
  const target = ctx.state.last;
  if (!target) return;
  const note: Annotation = { text };
  const author = practitioner(seg.rep(5), ctx);
  if (author) note.authorReference = author;
  const time = ctx.dt(seg.get(6));
  if (time) note.time = time;
  const withNote = [
    'ServiceRequest',
    'Observation',
    'AllergyIntolerance',
    'Condition',
    'Procedure',
    'Immunization',
    'MedicationRequest',
    'MedicationDispense',
    'Specimen',
    'ChargeItem',
  ];
  if (withNote.includes(target.resourceType)) {
    const t = target as { note?: Annotation[] };
    t.note = push(t.note, note);
  } else if (target.resourceType === 'Appointment') {
    const a = target as Appointment;
    a.comment = a.comment ? `${a.comment}\n${text}` : text;
    // NTE[Appointment-Comment] rows 5-6: NTE-3 -> extension-Appointment.note valueAnnotation (R5 Appointment.note,
    // which keeps the author and time R4's comment string cannot)
    a.extension = push(a.extension, {
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note',
      valueAnnotation: note,
    });
  } else if (target.resourceType === 'DiagnosticReport') {
    const d = target as DiagnosticReport;
    d.conclusion = d.conclusion ? `${d.conclusion}\n${text}` : text;
  } else if (target.resourceType === 'DocumentReference') {
    const d = target as DocumentReference;
    d.description = d.description ? `${d.description}\n${text}` : text;
  }
};
