/** ORU^R01: PID, [PV1], {OBR, {NTE}, {OBX, {NTE}}, {SPM}} (IG message map ORU_R01). */
import type { DiagnosticReport, Encounter, Observation, ServiceRequest, Specimen } from '@medplum/fhirtypes';
import type { Hl7WriteField } from '../hl7v2/parser';
import type { Ctx } from './bundle-context';
import { dtm, nm, unitsCwe, v2CodeOf } from './datatypes';
import { pid, pv1, xcn } from './patient-segments';
import { first, missing, Seg, type V2Out } from './segment';

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

export function oru(rcv: V2Out, ctx: Ctx): Seg[] {
  const patient = ctx.patient();
  if (!patient) {
    // a literal reference to a Patient outside the Bundle (Epic: Observation.subject Patient/<id>, no identifier) that nobody could resolve
    const dr = ctx.all<DiagnosticReport>('DiagnosticReport')[0];
    const ref = (dr ?? ctx.all<Observation>('Observation')[0])?.subject?.reference;
    if (ref && /^Patient\//.test(ref))
      throw missing(
        `${dr ? 'DiagnosticReport' : 'Observation'}.subject (${ref}: not in the Bundle, not found in the store nor at the source's EHR, and the reference has no identifier)`,
        'PID-3 (patient identifier list)',
      );
    throw missing(
      'a Patient (DiagnosticReport.subject / Observation.subject: a Patient in the Bundle or a reference with an identifier)',
      'PID',
    );
  }
  const out = [pid(rcv, patient, ctx)];
  const enc = ctx.all<Encounter>('Encounter')[0];
  if (enc && rcv.on('PV1')) out.push(pv1(rcv, enc, ctx));
  const reports = ctx.all<DiagnosticReport>('DiagnosticReport');
  const used = new Set<Observation>();
  let obrSet = 0;
  for (const dr of reports) {
    const obs = (dr.result ?? []).map((r) => ctx.resolve<Observation>(r)).filter((o): o is Observation => !!o);
    obs.forEach((o) => used.add(o));
    out.push(...obrGroup(rcv, ++obrSet, dr, obs, ctx));
  }
  // Observations without a report (an EHR's Observation feed): each gets its own OBR with its code
  for (const o of ctx.all<Observation>('Observation')) {
    if (used.has(o) || ctx.all<Observation>('Observation').some((p) => p.hasMember?.some((m) => ctx.resolve(m) === o)))
      continue;
    out.push(...obrGroup(rcv, ++obrSet, undefined, [o], ctx));
  }
  if (!obrSet) throw missing('DiagnosticReport or Observation', 'OBR/OBX');
  return out;
}

export function obrGroup(
  rcv: V2Out,
  setId: number,
  dr: DiagnosticReport | undefined,
  obs: Observation[],
  ctx: Ctx,
): Seg[] {
  const w = rcv.w;
  const code = dr ? dr.code : obs[0]?.code;
  const obr4 = w.cwe(code, 'OBR-4');
  if (!obr4) throw missing(dr ? 'DiagnosticReport.code' : 'Observation.code', 'OBR-4 (universal service identifier)');
  const ids = dr?.identifier ?? [];
  const placer = ids.find((i) => i.type?.coding?.some((c) => c.code === 'PLAC'));
  const filler = ids.find((i) => i.type?.coding?.some((c) => c.code === 'FILL')) ?? ids.find((i) => i !== placer);
  const eff = dr
    ? (dr.effectiveDateTime ?? dr.effectivePeriod?.start)
    : (obs[0]?.effectiveDateTime ?? obs[0]?.effectivePeriod?.start);
  const status = dr ? v2CodeOf('ResultStatus[Non-Queries]', dr.status) : obxStatus(obs[0]?.status);
  // ORC for the order the report is based on (ORC[ServiceRequest]: 2/3 numbers, 5 status, 12 requester)
  const sr = (dr?.basedOn ?? [])
    .map((r) => ctx.resolve<ServiceRequest>(r))
    .find((x) => x?.resourceType === 'ServiceRequest');
  const orc = sr
    ? new Seg('ORC')
        .set(1, 'RE')
        .set(2, w.ei(sr.identifier?.find((x) => x.type?.coding?.some((c) => c.code === 'PLAC'))))
        .set(3, w.ei(sr.identifier?.find((x) => x.type?.coding?.some((c) => c.code === 'FILL'))))
        .set(5, v2CodeOf('OrderStatus', sr.status))
        .set(12, xcn(rcv, sr.requester, ctx))
    : undefined;
  const obr = new Seg('OBR')
    .set(1, String(setId))
    .set(2, w.ei(placer))
    .set(3, w.ei(filler))
    .set(4, obr4)
    .set(7, dtm(eff))
    .set(8, dtm(dr?.effectivePeriod?.end))
    .set(22, dtm(dr?.issued ?? obs[0]?.issued))
    .set(
      24,
      dr ? (w.cwe(first(dr.category), 'OBR-24', 'DiagnosticServiceSectionID')?.[0] as string | undefined) : undefined,
    )
    .set(25, status === 'A' ? 'C' : status);
  const out = orc ? [orc, obr] : [obr];
  if (dr?.conclusion && rcv.on('NTE')) out.push(new Seg('NTE').set(1, '1').set(3, dr.conclusion));
  obs.forEach((o, i) => {
    out.push(obx(rcv, o, i + 1));
    if (rcv.on('NTE'))
      (o.note ?? []).forEach((n, k) => n.text && out.push(new Seg('NTE').set(1, String(k + 1)).set(3, n.text)));
  });
  // SPM exists from v2.5 on
  if (rcv.on('SPM') && !w.legacy) {
    const specs = [...(dr?.specimen ?? []), ...obs.flatMap((o) => (o.specimen ? [o.specimen] : []))]
      .map((r) => ctx.resolve<Specimen>(r))
      .filter((s, i, a): s is Specimen => !!s && a.indexOf(s) === i);
    specs.forEach((sp, i) => out.push(spm(rcv, sp, i + 1)));
  }
  return out;
}

/** OBX[Observation] in reverse: value type from the value[x] kind. */
export function obx(rcv: V2Out, o: Observation, setId: number): Seg {
  const w = rcv.w;
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
    s.set(
      7,
      rr.text ??
        (lo !== undefined && hi !== undefined
          ? `${lo}-${hi}`
          : lo !== undefined
            ? `>${lo}`
            : hi !== undefined
              ? `<${hi}`
              : undefined),
    );
  }
  s.reps(
    8,
    (o.interpretation ?? []).map((i) => w.cwe(i, 'OBX-8', 'InterpretationCodes')),
  );
  s.set(11, status);
  s.set(14, dtm(o.effectiveDateTime ?? o.effectivePeriod?.start));
  s.set(17, w.cwe(o.method, 'OBX-17'));
  s.set(19, dtm(o.issued));
  return s;
}

/** SPM[Specimen] in reverse. */
export function spm(rcv: V2Out, sp: Specimen, setId: number): Seg {
  const w = rcv.w;
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
    .set(
      17,
      coll?.collectedDateTime || coll?.collectedPeriod
        ? [dtm(coll.collectedDateTime ?? coll.collectedPeriod?.start) ?? '', dtm(coll.collectedPeriod?.end) ?? '']
        : undefined,
    )
    .set(18, dtm(sp.receivedTime));
}
