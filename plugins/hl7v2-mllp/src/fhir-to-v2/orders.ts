/**
 * ORM^O01: PID, [PV1], {IN1}, {AL1}, {ORC, OBR, {NTE}, {DG1}, {OBX}} (ORC[ServiceRequest], OBR[ServiceRequest])
 * OML^O21: PID, [PV1], {IN1}, {AL1}, {ORC, [TQ1], OBR, {NTE}, {DG1}, {OBX}, {SPM}} (IG message map OML_O21)
 */
import type {
  AllergyIntolerance,
  Condition,
  DiagnosticReport,
  Encounter,
  Observation,
  Patient,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import { al1, dg1, insurance, nextOfKin, nk1 } from './adt';
import type { Ctx } from './bundle-context';
import { dtm, v2CodeOf } from './datatypes';
import { pid, pv1, xcn } from './patient-segments';
import { obx, spm } from './results';
import { missing, Seg, type V2Out } from './segment';

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
  const control =
    status === 'revoked' || status === 'entered-in-error'
      ? 'CA'
      : status === 'on-hold'
        ? 'HD'
        : status === 'completed'
          ? 'SC'
          : 'NW';
  return [control, orderStatus];
}

export function orm(rcv: V2Out, ctx: Ctx, type: string): Seg[] {
  const oml = type.startsWith('OML^');
  const orders = ctx.all<ServiceRequest>('ServiceRequest');
  const patient = ctx.resolve<Patient>(orders[0]?.subject) ?? ctx.patient();
  if (!patient) throw missing('ServiceRequest.subject (Patient)', 'PID');
  const out = [pid(rcv, patient, ctx)];
  // OML_O21 patient group: {NK1} (ORM_O01 has none)
  if (oml && rcv.on('NK1')) nextOfKin(rcv, ctx, patient).forEach((rp, i) => out.push(nk1(rcv, rp, i + 1)));
  const enc = ctx.all<Encounter>('Encounter')[0];
  if (enc && rcv.on('PV1')) out.push(pv1(rcv, enc, ctx));
  // ORM_O01 / OML_O21 patient group: {INSURANCE}, {AL1}
  out.push(...insurance(rcv, ctx));
  if (rcv.on('AL1')) ctx.all<AllergyIntolerance>('AllergyIntolerance').forEach((a, i) => out.push(al1(rcv, a, i + 1)));
  const linked = (sr: ServiceRequest) =>
    (sr.supportingInfo ?? [])
      .map((r) => ctx.resolve<Observation>(r))
      .filter((o): o is Observation => o?.resourceType === 'Observation');
  const anyLinked = orders.some((sr) => linked(sr).length);
  orders.forEach((sr, i) => {
    out.push(...orderSegs(rcv, sr, i + 1, ctx, oml));
    if (rcv.on('NTE'))
      (sr.note ?? []).forEach((n, k) => n.text && out.push(new Seg('NTE').set(1, String(k + 1)).set(3, n.text)));
    // the order's diagnoses and observations: those it references, else (first order) all in the Bundle
    const reasons = (sr.reasonReference ?? [])
      .map((r) => ctx.resolve<Condition>(r))
      .filter((c): c is Condition => c?.resourceType === 'Condition');
    const dg = reasons.length ? reasons : i === 0 ? ctx.all<Condition>('Condition') : [];
    if (rcv.on('DG1')) dg.forEach((c, k) => out.push(dg1(rcv, c, k + 1, enc, ctx)));
    const obs = anyLinked ? linked(sr) : i === 0 ? ctx.all<Observation>('Observation') : [];
    obs.forEach((o, k) => out.push(obx(rcv, o, k + 1)));
    // OML_O21 SPECIMEN group: the order's specimens (SPM exists from v2.5 on)
    if (oml && rcv.on('SPM') && !rcv.w.legacy)
      (sr.specimen ?? [])
        .map((r) => ctx.resolve<Specimen>(r))
        .filter((x): x is Specimen => x?.resourceType === 'Specimen')
        .forEach((sp, k) => out.push(spm(rcv, sp, k + 1)));
  });
  return out;
}

/**
 * ORC[ServiceRequest] + OBR[ServiceRequest] in reverse (ORM_O01 and MDM_T02 order groups). No OBR for an
 * order without a code (ORM_O01's order detail is optional: diet, supply… orders).
 */
export function orderSegs(rcv: V2Out, sr: ServiceRequest, setId: number, ctx: Ctx, tq1 = false): Seg[] {
  const w = rcv.w;
  const ids = sr.identifier ?? [];
  const placer = ids.find((x) => x.type?.coding?.some((c) => c.code === 'PLAC')) ?? ids.find((x) => !x.type);
  const filler = ids.find((x) => x.type?.coding?.some((c) => c.code === 'FILL'));
  const code = w.cwe(sr.code, 'OBR-4');
  // an order known only by its group (requisition, ORC-4) is an order too (OML_O21 orders of a panel)
  if (!placer?.value && !filler?.value && !sr.requisition?.value)
    throw missing('ServiceRequest.identifier', 'ORC-2/ORC-3 (placer/filler order number)');
  const [control, orderStatus] = orcStatus(sr.status);
  const requester = xcn(rcv, sr.requester, ctx);
  const when = dtm(sr.occurrenceDateTime ?? sr.occurrencePeriod?.start);
  const out = [
    new Seg('ORC')
      .set(1, control)
      .set(2, w.ei(placer))
      .set(3, w.ei(filler))
      .set(4, w.ei(sr.requisition))
      .set(5, orderStatus)
      .set(
        7,
        sr.priority ? ['', '', '', when ?? '', '', v2CodeOf('ExtendedPriorityCodes', sr.priority) ?? ''] : undefined,
      )
      .set(9, dtm(sr.authoredOn))
      .set(12, requester),
  ];
  // OML_O21 TIMING: TQ1-7 start, TQ1-9 priority (ORC-7 is kept for receivers that read it)
  if (tq1 && (when || sr.priority) && rcv.on('TQ1'))
    out.push(
      new Seg('TQ1')
        .set(1, '1')
        .set(7, when)
        .set(9, sr.priority ? [v2CodeOf('ExtendedPriorityCodes', sr.priority) ?? '', '', 'HL70485'] : undefined),
    );
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
