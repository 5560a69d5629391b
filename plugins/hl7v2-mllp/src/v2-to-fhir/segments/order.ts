/**
 * Orders: ORC, OBR, TQ1 -- the order group (ServiceRequest, and DiagnosticReport for OBR in result messages) and
 * its timing. Results (OBX, SPM, NTE) are in result.ts.
 */
import type {
  DiagnosticReport,
  Identifier,
  MedicationRequest,
  Observation,
  Resource,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import type { Hl7Rep, Hl7Segment } from '../../hl7v2/parser';
import { V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext, OrderGroup } from '../convert';
import {
  c,
  codeOf,
  codeStr,
  compact,
  cwe,
  cweMapped,
  decimal,
  ei,
  eiNested,
  FILLER,
  nest,
  PLACER,
  valued,
} from '../datatypes';
import { all, type Handler, idKey, push, type Ref } from './common';
import { practitioner, xonOrg } from './shared-resources';

export function newOrder(ctx: ConvertContext): OrderGroup {
  const g: OrderGroup = { observations: [], specimens: [] };
  ctx.state.order = g;
  ctx.state.medication = undefined;
  if (ctx.state.specimenGroup) g.specimens.push(ctx.state.specimenGroup);
  return g;
}

/** ServiceRequest of the group, created from ORC (+OBR when present). */
function serviceRequest(g: OrderGroup, ctx: ConvertContext, seg: Hl7Segment): ServiceRequest {
  if (g.serviceRequest) return g.serviceRequest as ServiceRequest;
  const orc = g.orc;
  const obr = g.obr;
  const placer = ei(obr?.rep(2), ctx, PLACER()) ?? ei(orc?.rep(2), ctx, PLACER());
  const filler = ei(obr?.rep(3), ctx, FILLER()) ?? ei(orc?.rep(3), ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    id: key ? ctx.b.idFor('ServiceRequest', key) : ctx.localId('ServiceRequest', seg),
    status: 'unknown',
    intent: 'order',
    subject: ctx.subject() ?? { display: 'unknown' },
  };
  const ids = [placer, filler].filter((x): x is Identifier => !!x);
  const grp = orc ? c(orc.rep(4), 1) : '';
  if (valued(grp)) sr.requisition = { type: { coding: [{ system: V2_TABLE('0203'), code: 'PGN' }] }, value: grp };
  if (ids.length) sr.identifier = ids;
  // ORC[ServiceRequest] row 24: ORC-5 order status through OrderStatus; row 3: ORC-1 order control through
  // OrderControlCode[ServiceRequest.status] only IF ORC-5 NOT VALUED (an unmapped ORC-5 stays unknown)
  const st =
    orc &&
    (valued(orc.get(5))
      ? codeOf('OrderStatus', orc.get(5))
      : codeOf('OrderControlCode[ServiceRequest.status]', orc.get(1)));
  if (st) sr.status = st as ServiceRequest['status'];
  if (orc && orc.get(1) === 'NW') {
    const authored = ctx.dt(orc.get(9));
    if (authored) sr.authoredOn = authored;
  } else if (orc) {
    const authored = ctx.dt(orc.get(9));
    if (authored) sr.authoredOn = authored;
  }
  const requester = practitioner(orc?.rep(12), ctx) ?? practitioner(obr?.rep(16), ctx) ?? xonOrg(orc?.rep(21), ctx);
  if (requester) sr.requester = requester;
  const oType = orc ? cweMapped(orc.rep(29), 'OrderType', ctx, '0482') : undefined;
  if (oType) sr.locationCode = [oType];
  if (ctx.state.encounter) sr.encounter = ref(ctx.state.encounter);
  const code = obr ? cwe(obr.rep(4), ctx) : undefined;
  sr.code = code ?? (orc ? cwe(orc.rep(16), ctx) : undefined);
  if (!sr.code) delete sr.code;
  if (obr) {
    const prio = codeOf('ExtendedPriorityCodes', obr.get(5)) ?? codeOf('ExtendedPriorityCodes', obr.get(27, 0, 6));
    if (prio) sr.priority = prio as ServiceRequest['priority'];
    const occ = ctx.dt(obr.get(6));
    if (occ) sr.occurrenceDateTime = occ;
    const ac = obr.get(11);
    if (ac === 'G') sr.intent = 'reflex-order';
    const reason = all(obr, 31, (r) => cwe(r, ctx));
    if (reason.length) sr.reasonCode = reason;
    const details = [...all(obr, 46, (r) => cwe(r, ctx)), ...all(obr, 47, (r) => cwe(r, ctx))];
    if (details.length) sr.orderDetail = details;
    const parentPlacer = eiNested(obr.rep(29), 1, ctx, PLACER());
    const parentFiller = eiNested(obr.rep(29), 2, ctx, FILLER());
    const based = [parentPlacer, parentFiller]
      .filter((x): x is Identifier => !!x)
      .map((identifier) => ({ type: 'ServiceRequest', identifier }));
    if (based.length) sr.basedOn = based as ServiceRequest['basedOn'];
    const rr = all(obr, 13, (r) => (valued(c(r, 1)) ? c(r, 1) : undefined));
    if (rr.length) sr.patientInstruction = rr.join('; ');
  }
  if (g.specimens.length) sr.specimen = g.specimens.map((x) => ref(x));
  g.serviceRequest = ctx.b.add(sr) as OrderGroup['serviceRequest'];
  for (const t of g.timing ?? []) applyTq1(t, ctx, g.serviceRequest!);
  g.timing = undefined;
  return g.serviceRequest as ServiceRequest;
}

export const orc: Handler = (seg, ctx) => {
  flushOrder(ctx); // an ORC with nothing after it (ORC-only order) still becomes a ServiceRequest
  const g = newOrder(ctx);
  g.orc = seg;
  // the resource is created by what follows (OBR, RXO, RXE, RXA...), or at the next group / the end
  ctx.state.last = undefined;
};

export function flushOrder(ctx: ConvertContext): void {
  const g = ctx.state.order;
  if (g && g.orc && !g.serviceRequest && !g.obr && !ctx.state.medication) {
    serviceRequest(g, ctx, g.orc);
  }
}

/** Messages whose OBR is a result (DiagnosticReport): the IG's ORU_R01 / OUL message maps put OBR[DiagnosticReport] there. */
const RESULT_MESSAGES = new Set(['ORU', 'OUL', 'OPL', 'ORL', 'PPR']);
/**
 * Order messages: their OBR is the request only (OBR[ServiceRequest]); no DiagnosticReport is made even when
 * OBR-22/OBR-25 are valued (the IG's ORM_O01, OML_O21, OMG_O19, RDE_O11, MDM_T02 maps list no
 * OBR[DiagnosticReport]); their OBX stay the order's supportingInfo.
 */
export const ORDER_MESSAGES: ReadonlySet<string> = new Set([
  'ORM',
  'OML',
  'OMG',
  'OMI',
  'OMB',
  'OMD',
  'OMN',
  'OMP',
  'OMS',
  'OMQ',
  'MDM',
  'RDE',
  'RDS',
  'RGV',
  'RAS',
  'SIU',
  'SRM',
  'REF',
  'RRI',
]);
const makesReport = (seg: Hl7Segment, ctx: ConvertContext) =>
  RESULT_MESSAGES.has(ctx.messageCode) ||
  (!ORDER_MESSAGES.has(ctx.messageCode) && (valued(seg.get(25)) || valued(seg.get(22))));

export const obr: Handler = (seg, ctx) => {
  // OBR[ServiceRequest] + OBR[DiagnosticReport] (results)
  let g = ctx.state.order;
  if (!g || g.obr || !g.orc || g.serviceRequest || ctx.state.medication) {
    if (g) flushOrder(ctx);
    g = newOrder(ctx);
  }
  g.obr = seg;
  const sr = serviceRequest(g, ctx, seg);
  ctx.state.last = sr;
  if (makesReport(seg, ctx)) {
    const placer = ei(seg.rep(2), ctx, PLACER()) ?? ei(g.orc?.rep(2), ctx, PLACER());
    const filler = ei(seg.rep(3), ctx, FILLER()) ?? ei(g.orc?.rep(3), ctx, FILLER());
    const key = idKey(filler, ctx) ?? idKey(placer, ctx);
    const status = codeOf('ResultStatus[Non-Queries]', seg.get(25));
    const dr: DiagnosticReport = {
      resourceType: 'DiagnosticReport',
      id: key ? ctx.b.idFor('DiagnosticReport', key) : ctx.localId('DiagnosticReport', seg),
      status: (status as DiagnosticReport['status']) ?? 'unknown',
      code: cwe(seg.rep(4), ctx) ?? { text: 'unknown' },
      basedOn: [ref(sr)],
    };
    const ids = [placer, filler].filter((x): x is Identifier => !!x);
    if (ids.length) dr.identifier = ids;
    if (ctx.state.patient) dr.subject = ref(ctx.state.patient);
    if (ctx.state.encounter) dr.encounter = ref(ctx.state.encounter);
    const start = ctx.dt(seg.get(7));
    const end = ctx.dt(seg.get(8));
    if (start && end) dr.effectivePeriod = { start, end };
    else if (start) dr.effectiveDateTime = start;
    const issued = ctx.instant(seg.get(22));
    if (issued && /T/.test(ctx.dt(seg.get(22)) ?? '')) dr.issued = issued;
    const cat = cweMapped([[seg.get(24)]], 'DiagnosticServiceSectionID', ctx, '0074');
    if (cat && valued(seg.get(24))) dr.category = [cat];
    const interp = practitioner(ndlToXcn(seg.rep(32)), ctx);
    if (interp) dr.resultsInterpreter = [interp];
    const perf = [practitioner(ndlToXcn(seg.rep(34)), ctx), practitioner(ndlToXcn(seg.rep(35)), ctx)].filter(
      (x): x is Ref => !!x,
    );
    if (perf.length) dr.performer = perf;
    if (g.specimens.length) dr.specimen = g.specimens.map((x) => ref(x));
    g.report = ctx.b.add(dr) as OrderGroup['report'];
    ctx.state.last = g.report;
  }
  // OBR-15 specimen source (v2.3-2.4) -> Specimen
  const spSrc = cwe(nest(seg.rep(15), 1), ctx);
  if (spSrc) {
    const sp: Specimen = { resourceType: 'Specimen', id: ctx.localId('Specimen', seg), type: spSrc };
    if (ctx.state.patient) sp.subject = ref(ctx.state.patient);
    const coll = ctx.dt(seg.get(7));
    if (coll) sp.collection = { collectedDateTime: coll };
    attachSpecimen(g, ctx.b.add(sp));
  }
};

/** NDL (name^start^end^poc^room^bed...): its first component is a CNN with subcomponents. */
function ndlToXcn(r: Hl7Rep): Hl7Rep | undefined {
  const cnn = r[0];
  if (!cnn || !cnn.some(valued)) return undefined;
  return cnn.map((s) => [s]);
}

export function attachSpecimen(g: OrderGroup, sp: Resource): void {
  g.specimens.push(sp);
  const r = ref(sp);
  if (g.serviceRequest)
    (g.serviceRequest as ServiceRequest).specimen = push((g.serviceRequest as ServiceRequest).specimen, r);
  if (g.report) (g.report as DiagnosticReport).specimen = push((g.report as DiagnosticReport).specimen, r);
  for (const o of g.observations) if (!(o as Observation).specimen) (o as Observation).specimen = r;
}

export const tq1: Handler = (seg, ctx) => {
  // TQ1[ServiceRequest] / TQ1[MedicationRequest]; in OML/ORM the TQ1 comes between ORC and OBR: kept until the request exists
  const target = ctx.state.medication ?? ctx.state.order?.serviceRequest;
  if (!target) {
    if (ctx.state.order) (ctx.state.order.timing ??= []).push(seg);
    return;
  }
  applyTq1(seg, ctx, target);
};

export function applyTq1(seg: Hl7Segment, ctx: ConvertContext, target: Resource): void {
  const start = ctx.dt(seg.get(7));
  const end = ctx.dt(seg.get(8));
  const prio = codeOf('ExtendedPriorityCodes', seg.get(9, 0, 1));
  if (target.resourceType === 'ServiceRequest') {
    const sr = target as ServiceRequest;
    if (start && end) {
      delete sr.occurrenceDateTime;
      sr.occurrencePeriod = { start, end };
    } else if (start && !sr.occurrenceDateTime) sr.occurrenceDateTime = start;
    if (prio) sr.priority = prio as ServiceRequest['priority'];
    const qty = decimal(seg.get(2, 0, 1));
    if (qty !== undefined && qty >= 0) sr.quantityQuantity = { value: qty };
  } else if (target.resourceType === 'MedicationRequest') {
    const mr = target as MedicationRequest;
    if (prio) mr.priority = prio as MedicationRequest['priority'];
    const text = seg.get(11);
    const bounds = start ? compact({ start, end }) : undefined;
    const rep = c(seg.rep(3), 1);
    if (bounds || valued(text) || valued(rep)) {
      const d = (mr.dosageInstruction ??= [{}])[0];
      d.timing = compact({
        ...(d.timing ?? {}),
        repeat: bounds ? { boundsPeriod: bounds } : undefined,
        code: valued(rep) ? { coding: [{ system: V2_TABLE('0335'), code: codeStr(rep) }] } : undefined,
      });
      if (valued(text)) d.text = text;
    }
  }
}
