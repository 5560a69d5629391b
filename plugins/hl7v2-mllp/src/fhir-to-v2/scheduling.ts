/** SIU^S12: SCH, [NTE], PID, [PV1], RGS, [AIS], [AIL], [AIP] (IG message map SIU_S12). */
import type { Appointment, Condition, Encounter, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { dg1 } from './adt';
import type { Ctx } from './bundle-context';
import { dtm, v2CodeOf } from './datatypes';
import { pid, pl, pv1, xcn } from './patient-segments';
import { obx } from './results';
import { first, missing, Seg, type V2Out } from './segment';

export function siu(rcv: V2Out, a: Appointment, ctx: Ctx): Seg[] {
  const w = rcv.w;
  const ids = a.identifier ?? [];
  const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
  const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
  if (!placer?.value && !filler?.value)
    throw missing('Appointment.identifier', 'SCH-1/SCH-2 (placer/filler appointment id)');
  if (!a.start) throw missing('Appointment.start', 'SCH-11.4 (appointment timing: start)');
  const actors = (a.participant ?? []).map((p) => ({ p, r: p.actor ? ctx.resolve<Resource>(p.actor) : undefined }));
  const patient = actors.find((x) => x.r?.resourceType === 'Patient')?.r as Patient | undefined;
  if (!patient)
    throw missing('Appointment.participant.actor (a Patient in the Bundle or a reference with an identifier)', 'PID');
  const minutes =
    a.minutesDuration ?? (a.end ? Math.round((Date.parse(a.end) - Date.parse(a.start)) / 60000) : undefined);
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
  if (a.comment && rcv.on('NTE')) out.push(new Seg('NTE').set(1, '1').set(3, a.comment));
  out.push(pid(rcv, patient, ctx));
  const enc = ctx.all<Encounter>('Encounter')[0];
  if (enc && rcv.on('PV1')) out.push(pv1(rcv, enc, ctx));
  // SIU_S12 patient group: {OBX}, {DG1}
  ctx.all<Observation>('Observation').forEach((o, i) => out.push(obx(rcv, o, i + 1)));
  if (rcv.on('DG1')) ctx.all<Condition>('Condition').forEach((c, i) => out.push(dg1(rcv, c, i + 1, enc, ctx)));
  if (rcv.on('RGS')) out.push(new Seg('RGS').set(1, '1'));
  const start = (p: { period?: { start?: string } }) => dtm(p.period?.start ?? a.start);
  if (rcv.on('AIS'))
    a.serviceType?.forEach((st, i) =>
      out.push(
        new Seg('AIS')
          .set(1, String(i + 1))
          .set(3, w.cwe(st, 'AIS-3'))
          .set(4, dtm(a.start))
          .set(7, minutes !== undefined ? String(minutes) : undefined)
          .set(8, minutes !== undefined ? ['min', 'minutes', 'UCUM'] : undefined),
      ),
    );
  // resource group order (SIU_S12): {AIS}, {AIG}, {AIL}, {AIP}
  const ail: Seg[] = [];
  const aip: Seg[] = [];
  for (const { p, r } of actors) {
    if (r?.resourceType === 'Location' && rcv.on('AIL'))
      ail.push(
        new Seg('AIL')
          .set(1, String(ail.length + 1))
          .set(3, pl(p.actor!, ctx))
          .set(6, start(p)),
      );
    else if (
      r?.resourceType === 'Practitioner' &&
      rcv.on('AIP') &&
      !p.type?.some((t) => t.coding?.some((c) => ['CON', 'ENT'].includes(c.code ?? '')))
    )
      aip.push(
        new Seg('AIP')
          .set(1, String(aip.length + 1))
          .set(3, xcn(rcv, p.actor, ctx))
          .set(4, w.cwe(first(p.type), 'AIP-4'))
          .set(6, start(p)),
      );
  }
  out.push(...ail, ...aip);
  return out;
}
