/** Scheduling: SCH (Appointment), AIS, AIG, AIL, AIP (its participants); RGS is handled in the table (index.ts). */
import type { Appointment, AppointmentParticipant, Identifier } from '@medplum/fhirtypes';
import type { Hl7Segment } from '../../hl7v2/parser';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { c, codeOf, compact, cwe, cweMapped, decimal, ei, FILLER, PLACER, valued } from '../datatypes';
import { isoWithOffset } from './clinical';
import { type Handler, idKey, push } from './common';
import { location, practitioner } from './shared-resources';

export const sch: Handler = (seg, ctx) => {
  // SCH[Appointment]
  const placer = ei(seg.rep(1), ctx, PLACER());
  const filler = ei(seg.rep(2), ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const status = codeOf('FillerStatusCodes[Appointment]', seg.get(25, 0, 1));
  const a: Appointment = {
    resourceType: 'Appointment',
    id: key ? ctx.b.idFor('Appointment', key) : ctx.localId('Appointment', seg),
    status: (status as Appointment['status']) ?? 'booked',
    participant: [],
  };
  const ids = [placer, filler].filter((x): x is Identifier => !!x);
  if (ids.length) a.identifier = ids;
  const r7 = seg.rep(7);
  if (c(r7, 3) === 'HL70277') a.appointmentType = cweMapped(r7, 'AppointmentTypeCodes', ctx);
  else {
    const reason = cweMapped(r7, 'AppointmentReasonCodes', ctx);
    if (reason) a.reasonCode = [reason];
  }
  const type = cweMapped(seg.rep(8), 'AppointmentTypeCodes', ctx, '0277');
  if (type && !a.appointmentType) a.appointmentType = type;
  const dur = Number(seg.get(9));
  const unit = seg.get(10, 0, 1).toLowerCase();
  if (Number.isFinite(dur) && dur > 0) {
    const mins = unit.startsWith('h') ? dur * 60 : unit === 's' || unit.startsWith('sec') ? dur / 60 : dur;
    if (Number.isInteger(mins) && mins > 0) a.minutesDuration = mins;
  }
  // SCH-11 TQ: TQ.4 start, TQ.5 end
  const start = ctx.instant(seg.get(11, 0, 4));
  const end = ctx.instant(seg.get(11, 0, 5));
  if (start && end && valued(seg.get(11, 0, 4)) && valued(seg.get(11, 0, 5))) {
    a.start = start;
    a.end = end;
  }
  const part = (n: number, code: string, display: string) => {
    const who = practitioner(seg.rep(n), ctx);
    if (who)
      a.participant.push({
        actor: who,
        type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code, display }] }],
        status: 'accepted',
      });
  };
  part(12, 'CON', 'contact');
  part(16, 'CON', 'contact');
  part(20, 'ENT', 'data entry person');
  if (ctx.state.order?.serviceRequest) a.basedOn = [ref(ctx.state.order.serviceRequest)];
  // SCH-26/27 placer/filler order numbers -> basedOn (ServiceRequest) as logical references
  const orderIds = [ei(seg.rep(26), ctx, PLACER()), ei(seg.rep(27), ctx, FILLER())].filter((x): x is Identifier => !!x);
  for (const identifier of orderIds) a.basedOn = push(a.basedOn, { type: 'ServiceRequest', identifier });
  ctx.state.appointment = ctx.b.add(a);
  ctx.state.appointments.push(ctx.state.appointment);
  ctx.state.last = ctx.state.appointment;
};

function apptParticipant(
  ctx: ConvertContext,
  p: AppointmentParticipant,
  seg: Hl7Segment,
  startField: number,
  offsetField: number,
  durField: number,
): void {
  const a = ctx.state.appointment as Appointment | undefined;
  if (!a) return;
  const ps = ctx.dt(seg.get(startField));
  if (ps && ps.includes('T')) p.period = { start: ps };
  a.participant.push(p);
  // resource start + duration give the appointment's times when SCH-11 did not
  if (!a.start) {
    const s = ctx.instant(seg.get(startField));
    const mins = decimal(seg.get(durField));
    if (s && mins !== undefined && mins > 0 && valued(seg.get(startField))) {
      const unit = seg.get(durField + 1, 0, 1).toLowerCase();
      const m = unit.startsWith('h') ? mins * 60 : unit.startsWith('s') ? mins / 60 : mins;
      const endMs = Date.parse(s) + m * 60000;
      if (!Number.isNaN(endMs)) {
        a.start = s;
        a.end = isoWithOffset(new Date(endMs), s);
      }
    }
  }
  void offsetField;
}

const aipStatus = (code: string): AppointmentParticipant['status'] => {
  const m: Record<string, AppointmentParticipant['status']> = {
    Booked: 'accepted',
    Confirmed: 'accepted',
    Pending: 'tentative',
    Cancelled: 'declined',
    Deleted: 'declined',
    Blocked: 'declined',
    Waitlist: 'needs-action',
    Overbook: 'accepted',
    Started: 'accepted',
    Complete: 'accepted',
    Noshow: 'declined',
  };
  return m[code] ?? 'accepted';
};

export const ais: Handler = (seg, ctx) => {
  // AIS[Appointment]: the service
  const a = ctx.state.appointment as Appointment | undefined;
  if (!a) return;
  const svc = cwe(seg.rep(3), ctx);
  if (svc) a.serviceType = push(a.serviceType, svc);
  const s = ctx.instant(seg.get(4));
  const mins = decimal(seg.get(7));
  if (!a.start && s && mins !== undefined && mins > 0) {
    const unit = seg.get(8, 0, 1).toLowerCase();
    const m = unit.startsWith('h') ? mins * 60 : unit.startsWith('s') ? mins / 60 : mins;
    a.start = s;
    a.end = isoWithOffset(new Date(Date.parse(s) + m * 60000), s);
  }
  ctx.state.last = a;
};

export const aig: Handler = (seg, ctx) => {
  // AIG[Appointment]: a general resource (AIG-3 resource id, AIG-4 type)
  const r = cwe(seg.rep(3), ctx);
  const t = cwe(seg.rep(4), ctx);
  if (!r && !t) return;
  // AIG-3 -> participant.actor(Location.identifier) (CWE[Identifier]): a logical reference by identifier
  const rid = seg.rep(3);
  const actor = r
    ? compact({
        identifier: valued(c(rid, 1)) ? compact({ system: ctx.systems.code(c(rid, 3)), value: c(rid, 1) }) : undefined,
        display: valued(c(rid, 2)) ? c(rid, 2) : undefined,
      })
    : undefined;
  apptParticipant(
    ctx,
    compact({ type: t ? [t] : undefined, actor, status: aipStatus(seg.get(14, 0, 1)) })!,
    seg,
    8,
    9,
    10,
  );
};

export const ail: Handler = (seg, ctx) => {
  // AIL[Appointment]: a location
  const loc = location(seg.rep(3), ctx);
  if (!loc) return;
  apptParticipant(ctx, { actor: loc, status: aipStatus(seg.get(12, 0, 1)) }, seg, 6, 7, 8);
};

export const aip: Handler = (seg, ctx) => {
  // AIP[Appointment]: a person
  const who = practitioner(seg.rep(3), ctx);
  if (!who) return;
  const role = cwe(seg.rep(4), ctx);
  apptParticipant(
    ctx,
    compact({ actor: who, type: role ? [role] : undefined, status: aipStatus(seg.get(12, 0, 1)) })!,
    seg,
    6,
    7,
    8,
  );
};
