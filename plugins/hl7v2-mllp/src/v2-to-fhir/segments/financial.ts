/** Insurance, guarantor, financial: IN1 / IN2 (Coverage), GT1 (guarantor), FT1 (ChargeItem, Account). */
import type { Account, ChargeItem, Coverage, Identifier, Organization, RelatedPerson } from '@medplum/fhirtypes';
import { V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { toDate } from '../dates';
import { c, codeOf, compact, cwe, cweMapped, cx, decimal, dr, valued, xad, xtn } from '../datatypes';
import { all, type Handler, idKey, names, push, type Ref } from './common';
import { relationship } from './patient';
import { organization, practitioner, xonOrg } from './shared-resources';

export const in1: Handler = (seg, ctx) => {
  // IN1[Coverage]
  const p = ctx.state.patient;
  if (!p) return;
  const payorId = cx(seg.rep(3), ctx);
  const payor = xonOrg(seg.rep(4), ctx) ?? organization(undefined, payorId, ctx) ?? ref(p);
  const payorOrg = payor.reference?.startsWith('urn:uuid:')
    ? (ctx.b.get(payor.reference.slice(9)) as Organization | undefined)
    : undefined;
  if (payorOrg?.resourceType === 'Organization') {
    // IN1[Coverage] rows 5-8: IN1-3 company id, IN1-5 company address (row 7), IN1-7 phone -> the payor Organization
    // (also when it has no IN1-3 id: the address of a payor named by IN1-4 alone was dropped)
    const org: Organization | undefined = payorOrg;
    if (payorId && !org.identifier) org.identifier = [payorId];
    const addr = xad(seg.rep(5), ctx);
    if (org && addr && !org.address) org.address = [addr];
    const tel = all(seg, 7, (r) => xtn(r, ctx));
    if (org && tel.length && !org.telecom) org.telecom = tel;
  }
  const plan = cwe(seg.rep(2), ctx);
  const polNo = seg.get(36);
  const cov: Coverage = {
    resourceType: 'Coverage',
    id: valued(polNo) ? ctx.b.idFor('Coverage', `${p.id}|${c(seg.rep(3), 1)}|${polNo}`) : ctx.localId('Coverage', seg),
    status: 'active',
    beneficiary: ref(p),
    payor: [payor],
  };
  const ids: Identifier[] = [];
  if (plan?.coding?.[0]?.code)
    ids.push({ ...(plan.coding[0].system ? { system: plan.coding[0].system } : {}), value: plan.coding[0].code });
  if (valued(polNo)) ids.push({ type: { coding: [{ system: V2_TABLE('0203'), code: 'MB' }] }, value: polNo });
  if (ids.length) cov.identifier = ids;
  if (plan)
    cov.class = [
      {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'plan' }] },
        value: plan.coding?.[0]?.code ?? plan.text ?? 'unknown',
        ...(plan.coding?.[0]?.display ? { name: plan.coding[0].display } : {}),
      },
    ];
  const grp = seg.get(8);
  if (valued(grp))
    cov.class = push(cov.class, {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'group' }] },
      value: grp,
      ...(valued(seg.get(9)) ? { name: seg.get(9) } : {}),
    });
  const period = compact({ start: ctx.dt(seg.get(12)), end: ctx.dt(seg.get(13)) });
  if (period) cov.period = period;
  const holder = xonOrg(seg.rep(11), ctx); // IN1-11 insured's group employer name -> policyHolder(Organization)
  if (holder) cov.policyHolder = holder;
  const type = cweMapped(seg.rep(15), 'PlanId', ctx, '0086');
  if (type) cov.type = type;
  const rel = relationship(seg.rep(17), 'Relationship', ctx, '0063');
  if (rel) cov.relationship = rel;
  const relCode = c(seg.rep(17), 1);
  if (relCode === 'SEL' || relCode === '01' || !valued(relCode)) cov.subscriber = ref(p);
  else {
    const insured = names(seg, 16, ctx);
    if (insured.length) {
      const sub: RelatedPerson = {
        resourceType: 'RelatedPerson',
        id: ctx.localId('RelatedPerson', seg, '|IN1-16'),
        patient: ref(p),
        name: insured,
      };
      if (rel) sub.relationship = [rel];
      const bd = toDate(seg.get(18));
      if (bd) sub.birthDate = bd;
      const addr = all(seg, 19, (r) => xad(r, ctx));
      if (addr.length) sub.address = addr;
      const g = codeOf('AdministrativeSex', seg.get(43));
      if (g) sub.gender = g as RelatedPerson['gender'];
      cov.subscriber = ref(ctx.b.add(sub));
    }
  }
  const subId = cx(seg.rep(49), ctx);
  if (subId?.value) {
    cov.subscriberId = subId.value;
    // IN1[Coverage] rows 54-55: IN1-49 insured's id -> extension subscriberId (R5 Coverage.subscriberId is an
    // Identifier; R4's is a string and keeps only the value, so the system and type ride in the extension)
    cov.extension = push(cov.extension, {
      url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-subscriberId',
      valueIdentifier: subId,
    });
  }
  const order = Number(seg.get(22));
  if (Number.isInteger(order) && order > 0) cov.order = order;
  ctx.state.last = ctx.b.add(cov);
};

export const in2: Handler = (seg, ctx) => {
  const cov = ctx.state.last;
  if (cov?.resourceType !== 'Coverage') return;
  const ids = all(seg, 1, (r) => cx(r, ctx));
  if (ids.length) (cov as Coverage).identifier = push((cov as Coverage).identifier, ...ids);
};

export const gt1: Handler = (seg, ctx) => {
  // GT1 -> Account (guarantor) with the guarantor as RelatedPerson (or the patient when GT1-11 is SEL)
  const p = ctx.state.patient;
  if (!p) return;
  const rel = relationship(seg.rep(11), 'Relationship', ctx, '0063');
  let party: Ref;
  if (c(seg.rep(11), 1) === 'SEL') party = ref(p);
  else {
    const g: RelatedPerson = { resourceType: 'RelatedPerson', id: ctx.localId('RelatedPerson', seg), patient: ref(p) };
    const ids = all(seg, 2, (r) => cx(r, ctx));
    if (ids.length) g.identifier = ids;
    const gNames = names(seg, 3, ctx);
    if (gNames.length) g.name = gNames;
    const addr = all(seg, 5, (r) => xad(r, ctx));
    if (addr.length) g.address = addr;
    const tel = [...all(seg, 6, (r) => xtn(r, ctx, 'home')), ...all(seg, 7, (r) => xtn(r, ctx, 'work'))];
    if (tel.length) g.telecom = tel;
    const bd = toDate(seg.get(8));
    if (bd) g.birthDate = bd;
    const sex = codeOf('AdministrativeSex', seg.get(9));
    if (sex) g.gender = sex as RelatedPerson['gender'];
    if (rel) g.relationship = [rel];
    party = ref(ctx.b.add(g));
  }
  const acct = accountFor(ctx);
  if (acct) {
    const period = compact({ start: ctx.dt(seg.get(13)), end: ctx.dt(seg.get(14)) });
    acct.guarantor = push(acct.guarantor, compact({ party, period })!);
  }
  ctx.state.last = acct;
};

/** The patient's account (PID-18), created on first use. */
export function accountFor(ctx: ConvertContext): Account | undefined {
  const p = ctx.state.patient;
  if (!p) return undefined;
  const pidSeg = ctx.state.mergeTargets[ctx.state.mergeTargets.length - 1]?.segment;
  const acctId = pidSeg ? cx(pidSeg.rep(18), ctx) : undefined;
  const id = acctId ? ctx.b.idFor('Account', idKey(acctId, ctx)!) : ctx.b.idFor('Account', `patient|${p.id}`, true);
  const existing = ctx.b.get(id) as Account | undefined;
  if (existing) return existing;
  const a: Account = { resourceType: 'Account', id, status: 'active', subject: [ref(p)] };
  if (acctId) a.identifier = [acctId];
  return ctx.b.add(a);
}

export const ft1: Handler = (seg, ctx) => {
  // FT1 -> ChargeItem (financial transaction), on the patient's Account
  const p = ctx.state.patient;
  if (!p) return;
  const code = cwe(seg.rep(7), ctx) ?? (valued(seg.get(8)) ? { text: seg.get(8) } : { text: 'unknown' });
  if (valued(seg.get(8)) && !code.text) code.text = seg.get(8);
  const tid = seg.get(2) || seg.get(3);
  const ci: ChargeItem = {
    resourceType: 'ChargeItem',
    id: valued(tid) ? ctx.b.idFor('ChargeItem', `${p.id}|${tid}`) : ctx.localId('ChargeItem', seg),
    status: seg.get(6) === 'CR' ? 'aborted' : 'billable',
    code,
    subject: ref(p),
  };
  if (valued(tid)) ci.identifier = [{ value: tid }];
  const when = dr(seg.rep(4), ctx);
  if (when?.end) ci.occurrencePeriod = when;
  else if (when?.start) ci.occurrenceDateTime = when.start;
  const posted = ctx.dt(seg.get(5));
  if (posted) ci.enteredDate = posted;
  const qty = decimal(seg.get(10));
  if (qty !== undefined) ci.quantity = { value: qty };
  const amt = decimal(seg.get(11, 0, 1)) ?? decimal(seg.get(11, 0, 1, 1));
  const cur = seg.get(11, 0, 1, 2).trim();
  if (amt !== undefined)
    ci.priceOverride = { value: amt, ...(/^[A-Z]{3}$/.test(cur) ? { currency: cur as 'USD' } : {}) };
  const diag = all(seg, 19, (r) => cwe(r, ctx));
  if (diag.length) ci.reason = diag;
  const performer = practitioner(seg.rep(20), ctx);
  if (performer) ci.performer = [{ actor: performer }];
  const enterer = practitioner(seg.rep(24), ctx);
  if (enterer) ci.enterer = enterer;
  if (ctx.state.encounter) ci.context = ref(ctx.state.encounter);
  const acct = accountFor(ctx);
  if (acct) ci.account = [ref(acct)];
  ctx.state.last = ctx.b.add(ci);
};
