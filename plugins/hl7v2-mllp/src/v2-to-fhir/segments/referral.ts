/**
 * Referrals: RF1, PRD (REF/RRI messages). The IG has no segment map for them; mapped the way a clinician
 * reads a referral: the referral is a ServiceRequest (category SNOMED 3457005 "Patient referral"), each
 * provider a PractitionerRole (referring -> requester, referred-to/consulting -> performer, primary care ->
 * the patient's general practitioner).
 */
import type {
  CodeableConcept,
  Identifier,
  Organization,
  Practitioner,
  PractitionerRole,
  ServiceRequest,
} from '@medplum/fhirtypes';
import type { Hl7Rep } from '../../hl7v2/parser';
import { V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { c, codeOf, codeStr, compact, cwe, decimal, ei, PLACER, valued, xad, xtn } from '../datatypes';
import { all, type Handler, idKey, names, push } from './common';
import { location, xonOrg } from './shared-resources';

const RF1_STATUS: Record<string, ServiceRequest['status']> = { A: 'active', P: 'active', R: 'revoked', E: 'revoked' };
/** A CWE of an HL7 table with no IG concept map: the table's code system when CWE-3 names none. */
function tableCwe(r: Hl7Rep | undefined, ctx: ConvertContext, table: string): CodeableConcept | undefined {
  const cc = cwe(r, ctx);
  if (cc?.coding?.length && !c(r, 3) && cc.coding[0].code) cc.coding[0].system = V2_TABLE(table);
  return cc;
}

export const rf1: Handler = (seg, ctx) => {
  const origin = ei(seg.rep(6), ctx, PLACER()); // RF1-6 originating referral identifier
  const external = ei(seg.rep(11), ctx); // RF1-11 external referral identifier
  const key = idKey(origin, ctx) ?? idKey(external, ctx);
  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    id: key ? ctx.b.idFor('ServiceRequest', `referral|${key}`) : ctx.localId('ServiceRequest', seg),
    status: RF1_STATUS[seg.get(1, 0, 1).trim()] ?? 'unknown', // RF1-1 referral status (HL7 0283)
    intent: 'order',
    category: [{ coding: [{ system: 'http://snomed.info/sct', code: '3457005', display: 'Patient referral' }] }],
    subject: ctx.subject() ?? { display: 'unknown' },
  };
  const ids = [origin, external].filter((x): x is Identifier => !!x);
  if (ids.length) sr.identifier = ids;
  const prio = codeOf('ExtendedPriorityCodes', seg.get(2, 0, 1)); // RF1-2 referral priority (0280)
  if (prio) sr.priority = prio as ServiceRequest['priority'];
  const type = tableCwe(seg.rep(3), ctx, '0281'); // RF1-3 referral type
  if (type) sr.code = type;
  const cat = tableCwe(seg.rep(5), ctx, '0284'); // RF1-5 referral category (inpatient/outpatient...)
  if (cat) sr.locationCode = [cat];
  const period = compact({ start: ctx.dt(seg.get(7)), end: ctx.dt(seg.get(8)) }); // RF1-7 effective, RF1-8 expiration
  if (period) sr.occurrencePeriod = period;
  const authored = ctx.dt(seg.get(9)); // RF1-9 process date
  if (authored) sr.authoredOn = authored;
  const reasons = [
    ...all(seg, 10, (r) => tableCwe(r, ctx, '0336')),
    ...all(seg, 14, (r) => (valued(c(r, 1)) ? { text: c(r, 1) } : undefined)),
  ];
  if (reasons.length) sr.reasonCode = reasons;
  const units = decimal(seg.get(15)); // RF1-15 number of authorized treatments/units
  if (units !== undefined && units >= 0) sr.quantityQuantity = { value: units };
  if (ctx.state.encounter) sr.encounter = ref(ctx.state.encounter);
  ctx.state.referral = ctx.b.add(sr);
  ctx.state.last = ctx.state.referral;
};

export const prd: Handler = (seg, ctx) => {
  // PRD-2 name (XPN), PRD-3 address, PRD-5 telecom, PRD-7 identifiers (PLN: id^type^state^expiration) -> Practitioner
  const idsOf = all(seg, 7, (r) =>
    valued(c(r, 1))
      ? compact<Identifier>({
          type: valued(c(r, 2)) ? { coding: [{ system: V2_TABLE('0338'), code: codeStr(c(r, 2)) }] } : undefined,
          system: ctx.systems.identifier(c(r, 2) ? `${c(r, 2)}${c(r, 3) ? `-${c(r, 3)}` : ''}` : undefined),
          value: c(r, 1),
          period: valued(c(r, 4)) ? { end: ctx.dt(c(r, 4)) } : undefined,
        })
      : undefined,
  );
  const nm = names(seg, 2, ctx);
  if (!idsOf.length && !nm.length) return;
  const key = idsOf[0]?.value
    ? `id|${idsOf[0].system ?? `scope:${ctx.scope}`}|${idsOf[0].value}`
    : `name|${seg.get(2)}`;
  const p: Practitioner = { resourceType: 'Practitioner', id: ctx.b.idFor('Practitioner', key) };
  if (idsOf.length) p.identifier = idsOf;
  if (nm.length) p.name = nm;
  const addr = all(seg, 3, (r) => xad(r, ctx));
  if (addr.length) p.address = addr;
  const tel = all(seg, 5, (r) => xtn(r, ctx, 'work'));
  if (tel.length) p.telecom = tel;
  const who = ref(ctx.b.add(p), [nm[0]?.given?.[0], nm[0]?.family].filter(valued).join(' ') || undefined);
  // PRD-1 provider role (0286), PRD-4 location, PRD-8/9 period, PRD-10 organization (+ PRD-11 address, PRD-13 telecom)
  const roleCode = seg.get(1, 0, 1).trim();
  const org = xonOrg(seg.rep(10), ctx);
  if (org) {
    const o = ctx.b.get(org.reference!.slice(9)) as Organization | undefined;
    const oa = all(seg, 11, (r) => xad(r, ctx));
    if (o && oa.length && !o.address) o.address = oa;
    const ot = all(seg, 13, (r) => xtn(r, ctx, 'work'));
    if (o && ot.length && !o.telecom) o.telecom = ot;
  }
  const role: PractitionerRole = {
    resourceType: 'PractitionerRole',
    id: ctx.b.idFor('PractitionerRole', `${who.reference}|${roleCode}|${org?.reference ?? ''}`, true),
    practitioner: who,
  };
  const code = tableCwe(seg.rep(1), ctx, '0286');
  if (code) role.code = [code];
  if (org) role.organization = org;
  const loc = location(seg.rep(4), ctx);
  if (loc) role.location = [loc];
  const period = compact({ start: ctx.dt(seg.get(8)), end: ctx.dt(seg.get(9)) });
  if (period) role.period = period;
  if (tel.length) role.telecom = tel;
  const r = ref(ctx.b.add(role));
  const sr = ctx.state.referral as ServiceRequest | undefined;
  if (roleCode === 'RP' && sr && !sr.requester) sr.requester = r;
  else if ((roleCode === 'RT' || roleCode === 'CP') && sr) sr.performer = push(sr.performer, r);
  else if (roleCode === 'PP') ctx.state.primaryCare = push(ctx.state.primaryCare, r);
};
