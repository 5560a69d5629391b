/**
 * ADT: PID, PV1, NK1, AL1, DG1, IN1 (IG message map ADT_A01), and ADT^A40 merges (ADT_A39: PID + MRG).
 */
import type {
  AllergyIntolerance,
  CodeableConcept,
  Coding,
  Condition,
  Coverage,
  Encounter,
  Observation,
  Organization,
  Patient,
  Reference,
  RelatedPerson,
  Resource,
} from '@medplum/fhirtypes';
import type { Ctx } from './bundle-context';
import { type Comps, dt, dtm, v2CodeOf, xad, xpn, xtn } from './datatypes';
import { financialClassOnly, pid, pv1 } from './patient-segments';
import { obx } from './results';
import { first, missing, Seg, type V2Out } from './segment';

/** v2 table 0131 (contact role): NK1-7, kept by the inbound map on Patient.contact.relationship. */
const V2_0131 = 'http://terminology.hl7.org/CodeSystem/v2-0131';

/** What an NK1 is written from: a RelatedPerson, or a Patient.contact (with its 0131 contact role). */
type NextOfKin = Pick<RelatedPerson, 'name' | 'relationship' | 'address' | 'telecom'> & { role?: Coding };

export function adt(rcv: V2Out, ctx: Ctx, type: string): Seg[] {
  const structure = type.split('^')[2];
  if (structure === 'ADT_A39') return merge(rcv, ctx);
  const patient = ctx.patient();
  if (!patient) throw missing('Patient', 'PID');
  // ADT_A09 (A11 cancel admit) and ADT_A02 have no NK1, AL1 or insurance; ADT_A02 no DG1
  const full = structure !== 'ADT_A09' && structure !== 'ADT_A02';
  const out = [pid(rcv, patient, ctx)];
  if (full && rcv.on('NK1')) nextOfKin(rcv, ctx, patient).forEach((rp, i) => out.push(nk1(rcv, rp, i + 1)));
  const enc = ctx.all<Encounter>('Encounter')[0];
  if (rcv.on('PV1')) out.push(enc ? pv1(rcv, enc, ctx) : new Seg('PV1').set(1, '1').set(2, 'N'));
  // ADT_A01 {OBX}: observations sent with the visit (height, weight, heart rate…)
  ctx.all<Observation>('Observation').forEach((o, i) => out.push(obx(rcv, o, i + 1)));
  if (full)
    for (const [i, a] of ctx.all<AllergyIntolerance>('AllergyIntolerance').entries())
      if (rcv.on('AL1')) out.push(al1(rcv, a, i + 1));
  if (structure !== 'ADT_A02')
    for (const [i, c] of ctx.all<Condition>('Condition').entries())
      if (rcv.on('DG1')) out.push(dg1(rcv, c, i + 1, enc, ctx));
  if (full) out.push(...insurance(rcv, ctx));
  return out;
}

/**
 * ADT^A40 (ADT_A39): {PID, MRG, [PV1]} — the surviving Patient in PID, each Patient it replaces in MRG
 * (MRG-1 its identifiers, MRG-7 its name), as the inbound MRG map links them (Patient.link replaced-by on
 * the prior patient, replaces on the survivor; either side may be a reference with an identifier).
 */
export function merge(rcv: V2Out, ctx: Ctx): Seg[] {
  const patients = ctx.all<Patient>('Patient');
  const replacedBy = (p: Patient) => p.link?.find((l) => l.type === 'replaced-by')?.other;
  const asPatient = (r: Reference) => ctx.resolve<Patient>(r.type || !r.identifier ? r : { ...r, type: 'Patient' });
  // the surviving patients: those that replace another (one PID/MRG pair per merged patient)
  const pairs: [Patient, Patient][] = [];
  const seen = new Set<Patient>();
  for (const survivor of patients.filter((p) => !replacedBy(p) && p.link?.some((l) => l.type === 'replaces')))
    for (const l of survivor.link ?? []) {
      const prior = l.type === 'replaces' ? asPatient(l.other) : undefined;
      if (prior?.resourceType === 'Patient' && prior !== survivor && !seen.has(prior)) {
        pairs.push([survivor, prior]);
        seen.add(prior);
      }
    }
  // merged patients whose survivor is not in the Bundle (a reference with an identifier)
  for (const prior of patients)
    if (!seen.has(prior) && replacedBy(prior)) {
      const survivor = asPatient(replacedBy(prior)!);
      if (survivor?.resourceType !== 'Patient')
        throw missing(
          'Patient.link.other (the surviving Patient of a merge: in the Bundle or a reference with an identifier)',
          'PID-3 (ADT^A40 patient identifier list)',
        );
      pairs.push([survivor, prior]);
      seen.add(prior);
    }
  if (!pairs.length)
    throw missing(
      'Patient.link (type replaces, with the merged Patient in the Bundle or an identifier)',
      'MRG-1 (prior patient identifier list)',
    );
  const enc = ctx.all<Encounter>('Encounter')[0];
  const out: Seg[] = [];
  for (const [survivor, prior] of pairs) {
    const ids = (prior.identifier ?? []).filter((i) => i.value);
    if (!ids.length)
      throw missing('Patient.identifier (of the merged Patient)', 'MRG-1 (prior patient identifier list)');
    out.push(pid(rcv, survivor, ctx));
    out.push(
      new Seg('MRG')
        .reps(
          1,
          ids.map((i) => rcv.w.cx(i)),
        )
        .reps(7, (prior.name ?? []).map(xpn)),
    );
    if (enc && rcv.on('PV1') && pairs.length === 1) out.push(pv1(rcv, enc, ctx));
  }
  return out;
}

/**
 * NK1s: the Patient's contacts (NK1[Patient]: the inbound map makes an NK1 with a contact role a
 * Patient.contact), then the RelatedPersons — not the insured persons written in IN1-16..19 (a
 * Coverage's subscriber, when IN1 is sent) nor the guarantors (an Account's guarantor party).
 */
export function nextOfKin(rcv: V2Out, ctx: Ctx, patient: Patient): NextOfKin[] {
  const elsewhere = new Set<Resource | undefined>();
  if (rcv.on('IN1'))
    for (const c of ctx.all<Coverage>('Coverage')) if (!financialClassOnly(c)) elsewhere.add(ctx.resolve(c.subscriber));
  for (const a of ctx.all<Resource>('Account' as Resource['resourceType']) as { guarantor?: { party?: Reference }[] }[])
    for (const g of a.guarantor ?? []) elsewhere.add(ctx.resolve(g.party));
  const role = (cc: CodeableConcept) => cc.coding?.some((c) => c.system === V2_0131);
  const contacts: NextOfKin[] = (patient.contact ?? []).map((c) => ({
    name: c.name ? [c.name] : [],
    relationship: (c.relationship ?? [])
      .map((r) => ({ ...r, coding: r.coding?.filter((x) => x.system !== V2_0131) }))
      .filter((r) => r.coding?.length || (r.text && !role(r))),
    address: c.address ? [c.address] : [],
    telecom: c.telecom,
    role: (c.relationship ?? []).flatMap((r) => r.coding ?? []).find((x) => x.system === V2_0131),
  }));
  return [...contacts, ...ctx.all<RelatedPerson>('RelatedPerson').filter((rp) => !elsewhere.has(rp))];
}

/** The insurance group: one IN1 per Coverage (in Coverage.order), IN1[Coverage] in reverse. */
export function insurance(rcv: V2Out, ctx: Ctx): Seg[] {
  if (!rcv.on('IN1')) return [];
  const covs = ctx
    .all<Coverage>('Coverage')
    .filter((c) => !financialClassOnly(c))
    .sort((a, b) => (a.order ?? Infinity) - (b.order ?? Infinity));
  return covs.map((c, i) => in1(rcv, c, i + 1, ctx));
}

export function in1(rcv: V2Out, cov: Coverage, setId: number, ctx: Ctx): Seg {
  const w = rcv.w;
  const cls = (code: string) => cov.class?.find((c) => c.type?.coding?.some((x) => x.code === code));
  const plan = cls('plan');
  const group = cls('group');
  const planCwe: Comps | undefined = plan?.value ? [plan.value, plan.name ?? ''] : w.cwe(cov.type, 'IN1-2');
  if (!planCwe) throw missing('Coverage.class (type plan) or Coverage.type', 'IN1-2 (health plan id)');
  const payorRef = cov.payor?.[0];
  const payor = ctx.resolve<Resource>(payorRef);
  const org = payor?.resourceType === 'Organization' ? (payor as Organization) : undefined;
  const holder = ctx.resolve<Resource>(cov.policyHolder);
  const sub = ctx.resolve<Resource>(cov.subscriber);
  const insured = sub?.resourceType === 'RelatedPerson' ? (sub as RelatedPerson) : undefined;
  const policy = cov.identifier?.find((i) => i.type?.coding?.some((c) => c.code === 'MB'));
  return new Seg('IN1')
    .set(1, String(setId))
    .set(2, planCwe)
    .set(3, w.cx(first(org?.identifier)))
    .set(
      4,
      org?.name ? [org.name] : payor?.resourceType !== 'Patient' && payorRef?.display ? [payorRef.display] : undefined,
    )
    .set(5, xad(first(org?.address)))
    .reps(7, (org?.telecom ?? []).map(xtn))
    .set(8, group?.value)
    .set(9, group?.name)
    .set(
      11,
      holder?.resourceType === 'Organization' && (holder as Organization).name
        ? [(holder as Organization).name!]
        : undefined,
    )
    .set(12, dt(cov.period?.start?.slice(0, 10)))
    .set(13, dt(cov.period?.end?.slice(0, 10)))
    .set(15, plan?.value ? w.cwe(cov.type, 'IN1-15') : undefined)
    .reps(16, (insured?.name ?? []).map(xpn))
    .set(17, w.cwe(cov.relationship, 'IN1-17', 'Relationship'))
    .set(18, dt(insured?.birthDate))
    .reps(19, (insured?.address ?? []).map(xad))
    .set(22, cov.order !== undefined ? String(cov.order) : undefined)
    .set(36, policy?.value)
    .set(43, insured?.gender ? v2CodeOf('AdministrativeSex', insured.gender) : undefined)
    .set(49, cov.subscriberId ? [cov.subscriberId] : undefined);
}

/** NK1[RelatedPerson] in reverse. */
export function nk1(rcv: V2Out, rp: NextOfKin, setId: number): Seg {
  return new Seg('NK1')
    .set(1, String(setId))
    .reps(2, (rp.name ?? []).map(xpn))
    .set(3, rcv.w.cwe(first(rp.relationship), 'NK1-3', 'Relationship'))
    .reps(4, (rp.address ?? []).map(xad))
    .reps(5, (rp.telecom ?? []).filter((t) => t.use !== 'work').map(xtn))
    .reps(6, (rp.telecom ?? []).filter((t) => t.use === 'work').map(xtn))
    .set(7, 'role' in rp && rp.role ? rcv.w.cwe({ coding: [rp.role] }, 'NK1-7') : undefined);
}

/** AL1[AllergyIntolerance] in reverse. */
export function al1(rcv: V2Out, a: AllergyIntolerance, setId: number): Seg {
  const code = rcv.w.cwe(a.code, 'AL1-3');
  if (!code) throw missing('AllergyIntolerance.code', 'AL1-3 (allergen code)');
  const sev = a.reaction?.[0]?.severity;
  return new Seg('AL1')
    .set(1, String(setId))
    .set(2, v2CodeOf('AllergenType[AllergyIntoleranceCategory]', a.category?.[0]))
    .set(3, code)
    .set(
      4,
      v2CodeOf('AllergySeverity[AllergyIntolerance.reaction.severity]', sev) ??
        v2CodeOf('AllergySeverity[AllergyIntolerance.criticality]', a.criticality),
    )
    .reps(
      5,
      (a.reaction?.[0]?.manifestation ?? []).map((m) =>
        (m.text ?? m.coding?.[0]?.display ?? m.coding?.[0]?.code)
          ? [m.text ?? m.coding?.[0]?.display ?? m.coding![0].code!]
          : undefined,
      ),
    )
    .set(6, dt(a.onsetDateTime));
}

/** DG1[Condition] (and Encounter.diagnosis use/rank) in reverse. */
export function dg1(rcv: V2Out, c: Condition, setId: number, enc: Encounter | undefined, ctx: Ctx): Seg {
  const code = rcv.w.cwe(c.code, 'DG1-3');
  if (!code) throw missing('Condition.code', 'DG1-3 (diagnosis code)');
  const diag = enc?.diagnosis?.find((d) => ctx.resolve(d.condition) === c);
  const type = rcv.w.cwe(diag?.use, 'DG1-6', 'DiagnosisType')?.[0];
  return new Seg('DG1')
    .set(1, String(setId))
    .set(3, code)
    .set(5, dtm(c.onsetDateTime))
    .set(6, (type as string | undefined) || 'W')
    .set(15, diag?.rank !== undefined ? String(diag.rank) : undefined)
    .set(19, dtm(c.recordedDate))
    .set(21, c.verificationStatus?.coding?.some((x) => x.code === 'entered-in-error') ? 'D' : undefined);
}
