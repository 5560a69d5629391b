/** Pharmacy and immunization: RXO, RXE, RXR, RXA, RXD, RXG (MedicationRequest, Immunization, MedicationDispense…). */
import type { Identifier, Immunization, MedicationDispense, MedicationRequest } from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import { V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { toDate } from '../dates';
import { c, codeOf, compact, cwe, cweMapped, decimal, ei, FILLER, PLACER, units, valued } from '../datatypes';
import { all, type Handler, idKey, push } from './common';
import { applyTq1, newOrder } from './order';
import { location, organization, practitioner } from './shared-resources';

function medicationRequest(seg: Hl7Segment, ctx: ConvertContext, codeField: number): MedicationRequest {
  let g = ctx.state.order;
  if (!g || ctx.state.medication || g.obr) g = newOrder(ctx);
  const orc = g.orc;
  const placer = ei(orc?.rep(2), ctx, PLACER());
  const filler = ei(orc?.rep(3), ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const med = cwe(seg.rep(codeField), ctx) ?? { text: 'unknown' };
  const st =
    orc && (codeOf('OrderStatus', orc.get(5)) ?? codeOf('OrderControlCode[ServiceRequest.status]', orc.get(1)));
  const mrStatus: Record<string, MedicationRequest['status']> = {
    active: 'active',
    completed: 'completed',
    revoked: 'cancelled',
    'on-hold': 'on-hold',
    'entered-in-error': 'entered-in-error',
    draft: 'draft',
    unknown: 'unknown',
  };
  const mr: MedicationRequest = {
    resourceType: 'MedicationRequest',
    id: key ? ctx.b.idFor('MedicationRequest', key) : ctx.localId('MedicationRequest', seg),
    status:
      (st && mrStatus[st]) ||
      (orc?.get(1) === 'CA' || orc?.get(1) === 'DC' ? 'cancelled' : orc?.get(1) === 'NW' ? 'active' : 'unknown'),
    intent: 'order',
    medicationCodeableConcept: med,
    subject: ctx.subject() ?? { display: 'unknown' },
  };
  const ids = [placer, filler].filter((x): x is Identifier => !!x);
  if (ids.length) mr.identifier = ids;
  const authored = ctx.dt(orc?.get(9));
  if (authored) mr.authoredOn = authored;
  const requester = practitioner(orc?.rep(12), ctx);
  if (requester) mr.requester = requester;
  if (ctx.state.encounter) mr.encounter = ref(ctx.state.encounter);
  ctx.state.medication = ctx.b.add(mr);
  ctx.state.last = ctx.state.medication;
  for (const t of g.timing ?? []) applyTq1(t, ctx, mr);
  g.timing = undefined;
  return ctx.state.medication as MedicationRequest;
}

export const rxo: Handler = (seg, ctx) => {
  // RXO[MedicationRequest]
  const mr = medicationRequest(seg, ctx, 1);
  const lo = decimal(seg.get(2));
  const hi = decimal(seg.get(3));
  const unit = seg.rep(4);
  if (lo !== undefined) {
    const dose =
      hi !== undefined && hi !== lo
        ? { doseRange: { low: units({ value: lo }, unit, ctx), high: units({ value: hi }, unit, ctx) } }
        : { doseQuantity: units({ value: lo }, unit, ctx) };
    mr.dosageInstruction = [{ ...(mr.dosageInstruction?.[0] ?? {}), doseAndRate: [dose] }];
  }
  const instr = all(seg, 7, (r) => cwe(r, ctx));
  if (instr.length) mr.dosageInstruction = [{ ...(mr.dosageInstruction?.[0] ?? {}), additionalInstruction: instr }];
  const qty = decimal(seg.get(11));
  const refills = Number(seg.get(13));
  const dr0 = compact({
    quantity: qty !== undefined ? units({ value: qty }, seg.rep(12), ctx) : undefined,
    numberOfRepeatsAllowed: Number.isInteger(refills) && refills >= 0 && valued(seg.get(13)) ? refills : undefined,
  });
  if (dr0) mr.dispenseRequest = dr0;
  if (seg.get(9) === 'N') mr.substitution = { allowedBoolean: false };
  else if (seg.get(9) === 'G' || seg.get(9) === 'T') mr.substitution = { allowedBoolean: true };
};

export const rxe: Handler = (seg, ctx) => {
  // RXE (pharmacy encoded order) -> MedicationRequest
  const mr = medicationRequest(seg, ctx, 2);
  const lo = decimal(seg.get(3));
  const hi = decimal(seg.get(4));
  const unit = seg.rep(5);
  const d = { ...(mr.dosageInstruction?.[0] ?? {}) };
  if (lo !== undefined)
    d.doseAndRate = [
      hi !== undefined && hi !== lo
        ? { doseRange: { low: units({ value: lo }, unit, ctx), high: units({ value: hi }, unit, ctx) } }
        : { doseQuantity: units({ value: lo }, unit, ctx) },
    ];
  const instr = all(seg, 7, (r) => cwe(r, ctx));
  if (instr.length) d.additionalInstruction = instr;
  if (Object.keys(d).length) mr.dosageInstruction = [d];
  const qty = decimal(seg.get(10));
  const refills = Number(seg.get(12));
  const dr0 = compact({
    quantity: qty !== undefined ? units({ value: qty }, seg.rep(11), ctx) : undefined,
    numberOfRepeatsAllowed: valued(seg.get(12)) && Number.isInteger(refills) && refills >= 0 ? refills : undefined,
  });
  if (dr0) mr.dispenseRequest = dr0;
  const rx = seg.get(15);
  if (valued(rx))
    mr.identifier = push(mr.identifier, { type: { coding: [{ system: V2_TABLE('0203'), code: 'RXN' }] }, value: rx });
};

export const rxr: Handler = (seg, ctx) => {
  // RXR[Immunization] / RXR[MedicationRequest]
  const target = ctx.state.medication;
  if (!target) return;
  const route = cweMapped(seg.rep(1), 'RouteOfAdministration', ctx, '0162');
  const site = cweMapped(seg.rep(2), 'BodySite', ctx, '0163');
  const method = cweMapped(seg.rep(4), 'AdministrationMethod', ctx, '0165');
  if (target.resourceType === 'Immunization') {
    const im = target as Immunization;
    if (route && !im.route) im.route = route;
    if (site && !im.site) im.site = site;
  } else if (target.resourceType === 'MedicationRequest') {
    const mr = target as MedicationRequest;
    const d = (mr.dosageInstruction ??= [{}])[0];
    if (route && !d.route) d.route = route;
    if (site && !d.site) d.site = site;
    if (method && !d.method) d.method = method;
  }
};

export const rxa: Handler = (seg, ctx) => {
  // RXA[Immunization] (+ ORC[Immunization])
  const p = ctx.state.patient;
  if (!p) return;
  const g = ctx.state.order && !ctx.state.medication ? ctx.state.order : undefined;
  const orc = g?.orc;
  const filler = ei(orc?.rep(3), ctx, FILLER());
  const placer = ei(orc?.rep(2), ctx, PLACER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const occurrence = ctx.dt(seg.get(3)) ?? ctx.dt(ctx.msg.msh.get(7));
  const action = seg.get(21);
  const im: Immunization = {
    resourceType: 'Immunization',
    id: key ? ctx.b.idFor('Immunization', key) : ctx.localId('Immunization', seg),
    status: 'completed',
    vaccineCode: cwe(seg.rep(5), ctx) ?? { text: 'unknown' },
    patient: ref(p),
    ...(occurrence ? { occurrenceDateTime: occurrence } : { occurrenceString: 'unknown' }),
  };
  if (action === 'D') im.status = 'entered-in-error';
  else {
    const st = codeOf('CompletionStatus', seg.get(20));
    if (st === 'completed' || st === 'not-done' || st === 'entered-in-error') im.status = st;
    else if (seg.get(20) === 'RE' || seg.get(20) === 'NA') im.status = 'not-done';
    if (seg.get(20) === 'PA') im.isSubpotent = true;
  }
  const ids = [placer, filler].filter((x): x is Identifier => !!x);
  if (ids.length) im.identifier = ids;
  const amount = decimal(seg.get(6));
  if (amount !== undefined && amount !== 999) im.doseQuantity = units({ value: amount }, seg.rep(7), ctx);
  const performer = all(seg, 10, (r) => practitioner(r, ctx));
  const orderer = practitioner(orc?.rep(12), ctx);
  im.performer = [
    ...performer.map((actor) => ({
      function: { coding: [{ system: V2_TABLE('0443'), code: 'AP', display: 'Administering Provider' }] },
      actor,
    })),
    ...(orderer
      ? [
          {
            function: { coding: [{ system: V2_TABLE('0443'), code: 'OP', display: 'Ordering Provider' }] },
            actor: orderer,
          },
        ]
      : []),
  ];
  if (!im.performer.length) delete im.performer;
  const lot = seg.get(15);
  if (valued(lot)) im.lotNumber = lot;
  const exp = toDate(seg.get(16));
  if (exp) im.expirationDate = exp;
  const mvx = seg.rep(17);
  if (valued(c(mvx, 1)) || valued(c(mvx, 2))) {
    const sys = ctx.systems.code(c(mvx, 3));
    const ident = valued(c(mvx, 1)) ? { ...(sys ? { system: sys } : {}), value: c(mvx, 1) } : undefined;
    const org = organization(c(mvx, 2) || c(mvx, 1), ident, ctx);
    if (org) im.manufacturer = org;
  }
  const sr = cwe(seg.rep(18), ctx);
  if (sr) im.statusReason = sr;
  const reason = all(seg, 19, (r) => cwe(r, ctx));
  if (reason.length) im.reasonCode = reason;
  if (action === 'A') {
    const rec = ctx.dt(seg.get(22));
    if (rec) im.recorded = rec;
  }
  const loc = location(seg.rep(27), ctx) ?? location(seg.rep(11), ctx);
  if (loc) im.location = loc;
  if (ctx.state.encounter) im.encounter = ref(ctx.state.encounter);
  const src = seg.get(9, 0, 1);
  if (src === '00') im.primarySource = true;
  else if (/^0[1-8]$/.test(src)) im.primarySource = false;
  ctx.state.medication = ctx.b.add(im);
  ctx.state.last = ctx.state.medication;
  if (ctx.state.order) ctx.state.order = undefined;
};

export const rxd: Handler = (seg, ctx) => {
  // RXD -> MedicationDispense (authorizingPrescription: the order's MedicationRequest)
  const mr = ctx.state.medication?.resourceType === 'MedicationRequest' ? ctx.state.medication : undefined;
  const rx = seg.get(7);
  const md: MedicationDispense = {
    resourceType: 'MedicationDispense',
    id: valued(rx) ? ctx.b.idFor('MedicationDispense', `${rx}|${seg.get(1)}`) : ctx.localId('MedicationDispense', seg),
    status: 'completed',
    medicationCodeableConcept: cwe(seg.rep(2), ctx) ?? { text: 'unknown' },
  };
  if (ctx.state.patient) md.subject = ref(ctx.state.patient);
  if (mr) md.authorizingPrescription = [ref(mr)];
  const when = ctx.dt(seg.get(3));
  if (when) md.whenHandedOver = when;
  const q = decimal(seg.get(4));
  if (q !== undefined) md.quantity = units({ value: q }, seg.rep(5), ctx);
  if (valued(rx)) md.identifier = [{ value: rx }];
  const days = decimal(seg.get(12));
  if (days !== undefined) md.daysSupply = { value: days, unit: 'd', system: 'http://unitsofmeasure.org', code: 'd' };
  ctx.state.last = ctx.b.add(md);
};

export const rxg: Handler = (seg, ctx) => {
  // RXG (give) -> MedicationRequest dosage of the current order
  const mr =
    ctx.state.medication?.resourceType === 'MedicationRequest'
      ? (ctx.state.medication as MedicationRequest)
      : undefined;
  if (!mr) return;
  const lo = decimal(seg.get(5));
  if (lo !== undefined)
    mr.dosageInstruction = [
      { ...(mr.dosageInstruction?.[0] ?? {}), doseAndRate: [{ doseQuantity: units({ value: lo }, seg.rep(7), ctx) }] },
    ];
};
