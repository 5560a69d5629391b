/**
 * VXU^V04: PID, {ORC, RXA, [RXR], {OBX}} (IG message map VXU_V04; RXA[Immunization], RXR[Immunization],
 * ORC[Immunization]).
 */
import type { Encounter, Identifier, Immunization, Location, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { insurance, nextOfKin, nk1 } from './adt';
import type { Ctx } from './bundle-context';
import { dt, dtm, nm, unitsCwe } from './datatypes';
import { pid, pv1, xcn } from './patient-segments';
import { obx } from './results';
import { missing, Seg, type V2Out } from './segment';

export function vxu(rcv: V2Out, ctx: Ctx): Seg[] {
  const w = rcv.w;
  const patient = ctx.resolve<Patient>(ctx.all<Immunization>('Immunization')[0]?.patient) ?? ctx.patient();
  if (!patient) throw missing('Immunization.patient', 'PID');
  const out = [pid(rcv, patient, ctx)];
  // VXU_V04 patient group: {NK1}, [PV1]
  if (rcv.on('NK1')) nextOfKin(rcv, ctx, patient).forEach((rp, i) => out.push(nk1(rcv, rp, i + 1)));
  const enc = ctx.all<Encounter>('Encounter')[0];
  if (enc && rcv.on('PV1')) out.push(pv1(rcv, enc, ctx));
  const observations = ctx.all<Observation>('Observation');
  const obsOf = (im: Immunization) => observations.filter((o) => o.partOf?.some((r) => ctx.resolve(r) === im));
  const anyLinked = ctx.all<Immunization>('Immunization').some((im) => obsOf(im).length);
  // observations about the patient, not an administration (v2.8 PATIENT_OBSERVATION group)
  if (anyLinked) observations.filter((o) => !o.partOf?.length).forEach((o, k) => out.push(obx(rcv, o, k + 1)));
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
        .reps(
          12,
          fn('OP').map((p) => xcn(rcv, p.actor, ctx)),
        ),
    );
    const when = dtm(im.occurrenceDateTime);
    if (!when) throw missing('Immunization.occurrenceDateTime', 'RXA-3 (date/time start of administration)');
    const vaccine = w.cwe(im.vaccineCode, 'RXA-5');
    if (!vaccine) throw missing('Immunization.vaccineCode', 'RXA-5 (administered code)');
    const mfr = ctx.resolve<{ resourceType: 'Organization'; name?: string; identifier?: Identifier[] } & Resource>(
      im.manufacturer,
    );
    const mvx = mfr?.identifier?.[0];
    const completion =
      im.status === 'not-done' ? 'RE' : im.status === 'entered-in-error' ? 'CP' : im.isSubpotent ? 'PA' : 'CP';
    out.push(
      new Seg('RXA')
        .set(1, '0')
        .set(2, '1')
        .set(3, when)
        .set(4, when)
        .set(5, vaccine)
        .set(6, nm(im.doseQuantity?.value) ?? '999')
        .set(7, im.doseQuantity ? unitsCwe(w, im.doseQuantity) : undefined)
        .set(
          9,
          im.primarySource === undefined
            ? undefined
            : im.primarySource
              ? ['00', 'New Record', 'NIP001']
              : ['01', 'Historical Administration', 'NIP001'],
        )
        .reps(
          10,
          fn('AP').map((p) => xcn(rcv, p.actor, ctx)),
        )
        .set(
          11,
          im.location ? ['', '', '', ctx.resolve<Location>(im.location)?.name ?? im.location.display ?? ''] : undefined,
        )
        .set(15, im.lotNumber)
        .set(16, dt(im.expirationDate))
        .set(
          17,
          mvx?.value || mfr?.name || im.manufacturer?.display
            ? [mvx?.value ?? '', mfr?.name ?? im.manufacturer?.display ?? '', mvx ? w.codingSystem(mvx.system) : '']
            : undefined,
        )
        .set(18, w.cwe(im.statusReason, 'RXA-18'))
        .reps(
          19,
          (im.reasonCode ?? []).map((r) => w.cwe(r, 'RXA-19')),
        )
        .set(20, completion)
        .set(21, im.status === 'entered-in-error' ? 'D' : 'A')
        .set(22, dtm(im.recorded)),
    );
    if ((im.route || im.site) && rcv.on('RXR'))
      out.push(new Seg('RXR').set(1, w.cwe(im.route, 'RXR-1') ?? ['']).set(2, w.cwe(im.site, 'RXR-2')));
    // the administration's observations (funding, VIS…): those partOf it, else all of them after the first RXA
    (anyLinked ? obsOf(im) : n === 0 ? observations : []).forEach((o, k) => out.push(obx(rcv, o, k + 1)));
  }
  // VXU_V04 {INSURANCE} after the orders
  out.push(...insurance(rcv, ctx));
  return out;
}
