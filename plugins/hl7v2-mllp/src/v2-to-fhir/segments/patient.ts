/** The patient: PID, PD1, NK1, MRG (IG segment maps PID[Patient], PD1[Patient], NK1[RelatedPerson], MRG[Patient]…). */
import type {
  CodeableConcept,
  Extension,
  Identifier,
  Observation,
  Patient,
  PatientContact,
  RelatedPerson,
} from '@medplum/fhirtypes';
import type { Hl7Rep, Hl7Segment } from '../../hl7v2/parser';
import { mapCode, mapDisplay, V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { toDate } from '../dates';
import { c, codeOf, compact, cwe, cweMapped, cx, valued, xad, xtn } from '../datatypes';
import { all, type Handler, idKey, names, push } from './common';
import { accountFor } from './financial';
import { flushOrder } from './order';
import { practitioner, xonOrg } from './shared-resources';

export const pid: Handler = (seg, ctx) => {
  // PID[Patient]
  const identifiers = [
    ...all(seg, 2, (r) => cx(r, ctx)),
    ...all(seg, 3, (r) => cx(r, ctx)),
    ...all(seg, 4, (r) => cx(r, ctx)),
  ];
  const ssn = seg.get(19);
  if (valued(ssn))
    identifiers.push({
      type: { coding: [{ system: V2_TABLE('0203'), code: 'SS' }] },
      system: 'http://hl7.org/fhir/sid/us-ssn',
      value: ssn,
    });
  const dln = seg.rep(20);
  if (valued(c(dln, 1)))
    identifiers.push(
      compact<Identifier>({
        type: { coding: [{ system: V2_TABLE('0203'), code: 'DL' }] },
        system: valued(c(dln, 2)) ? ctx.systems.identifier(`DL-${c(dln, 2)}`) : undefined,
        value: c(dln, 1),
        period: valued(c(dln, 3)) ? { end: ctx.dt(c(dln, 3)) } : undefined,
      })!,
    );
  // the same identifier sent in PID-2 and PID-3 (common) is kept once
  const seen = new Set<string>();
  const unique = identifiers.filter((i) => {
    const k = `${i.system ?? ''}|${i.value}|${i.type?.coding?.[0]?.code ?? ''}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  identifiers.length = 0;
  identifiers.push(...unique);
  const p: Patient = { resourceType: 'Patient' };
  const key =
    idKey(
      identifiers.find((i) => i.value && i.system),
      ctx,
    ) ?? idKey(identifiers[0], ctx);
  p.id = key ? ctx.b.idFor('Patient', key) : ctx.localId('Patient', seg);
  if (identifiers.length) p.identifier = identifiers;
  const pn = [...names(seg, 5, ctx), ...names(seg, 9, ctx)];
  if (pn.length) p.name = pn;
  const extension: Extension[] = [];
  const mmn = seg.rep(6);
  if (valued(c(mmn, 1)))
    extension.push({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName',
      valueString: [c(mmn, 2), c(mmn, 1)].filter(valued).join(' '),
    });
  const dob = seg.get(7);
  const bd = toDate(dob);
  if (bd) {
    p.birthDate = bd;
    const full = ctx.dt(dob);
    if (dob.replace(/[+-]\d{4}$/, '').length > 8 && full)
      (p as Patient & { _birthDate?: unknown })._birthDate = {
        extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: full }],
      };
  }
  const g = codeOf('AdministrativeSex', seg.get(8));
  if (g) p.gender = g as Patient['gender'];
  const race = all(seg, 10, (r) => cwe(r, ctx));
  for (const r of race)
    extension.push({
      url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
      extension: [{ url: 'text', valueString: r.text ?? r.coding?.[0]?.display ?? r.coding?.[0]?.code ?? 'unknown' }],
    });
  const addresses = all(seg, 11, (r) => xad(r, ctx));
  const county = seg.get(12);
  if (valued(county)) {
    if (addresses.length === 1 && !addresses[0].district) addresses[0].district = county;
    else addresses.push({ district: county });
  }
  if (addresses.length) p.address = addresses;
  const telecom = [
    ...all(seg, 13, (r) => xtn(r, ctx, 'home')),
    ...all(seg, 14, (r) => xtn(r, ctx, 'work')),
    ...all(seg, 40, (r) => xtn(r, ctx)),
  ];
  if (telecom.length) p.telecom = telecom;
  const lang = cweMapped(seg.rep(15), 'PrimaryLanguage', ctx);
  if (lang) p.communication = [{ language: lang }];
  const ms = cweMapped(seg.rep(16), 'MaritalStatus', ctx, '0002');
  if (ms) p.maritalStatus = ms;
  const religion = cwe(seg.rep(17), ctx);
  if (religion)
    extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-religion', valueCodeableConcept: religion });
  const eth = all(seg, 22, (r) => cwe(r, ctx));
  for (const e of eth)
    extension.push({
      url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity',
      extension: [{ url: 'text', valueString: e.text ?? e.coding?.[0]?.display ?? e.coding?.[0]?.code ?? 'unknown' }],
    });
  const birthPlace = seg.get(23);
  if (valued(birthPlace))
    extension.push({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace',
      valueAddress: { text: birthPlace },
    });
  const order = Number(seg.get(25));
  if (Number.isInteger(order) && order > 0) p.multipleBirthInteger = order;
  else if (valued(seg.get(24))) {
    const yn = seg.get(24);
    if (yn === 'Y' || yn === 'N') p.multipleBirthBoolean = yn === 'Y';
  }
  const nat = cwe(seg.rep(28), ctx);
  if (nat)
    extension.push({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-nationality',
      extension: [{ url: 'code', valueCodeableConcept: nat }],
    });
  // PID[Patient] rows 42-44 (PID-26 citizenship) and 63-65 (PID-39 tribal citizenship) -> patient-citizenship
  for (const n of [26, 39])
    for (const cc of all(seg, n, (r) => cwe(r, ctx)))
      extension.push({
        url: 'http://hl7.org/fhir/StructureDefinition/patient-citizenship',
        extension: [{ url: 'code', valueCodeableConcept: cc }],
      });
  const death = ctx.dt(seg.get(29));
  if (death) p.deceasedDateTime = death;
  else if (seg.get(30) === 'Y' || seg.get(30) === 'N') p.deceasedBoolean = seg.get(30) === 'Y';
  const species = cwe(seg.rep(35), ctx);
  const breed = cwe(seg.rep(36), ctx);
  if (species)
    extension.push({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-animal',
      extension: [
        { url: 'species', valueCodeableConcept: species },
        ...(breed ? [{ url: 'breed', valueCodeableConcept: breed }] : []),
      ],
    });
  if (extension.length) p.extension = extension;
  const meta = ctx.dt(seg.get(33));
  if (meta) p.meta = { lastUpdated: ctx.instant(seg.get(33)) };
  const prev = ctx.b.get(p.id!);
  const patient = ctx.b.add(p);
  if (prev) {
    /* same patient listed twice: keep the first */
  }
  flushOrder(ctx); // the previous patient's pending ORC-only order
  ctx.state.patient = patient;
  ctx.state.encounter = undefined;
  ctx.state.order = undefined;
  ctx.state.specimenGroup = undefined;
  ctx.state.last = patient;
  ctx.state.mergeTargets.push({ segment: seg, patient });
  mother(seg, patient, ctx);
  // BAR/DFT are about the patient's account (PID-18): it is the subject of the message; in ADT the IG's message maps
  // (ADT_A01 row 6 and its family) make PID[Account] from PID-18 (row 22 -> Account.identifier, subject the Patient)
  if (ctx.messageCode === 'BAR' || ctx.messageCode === 'DFT' || (ctx.messageCode === 'ADT' && valued(seg.get(18))))
    accountFor(ctx);
};

/**
 * PID-21 mother's identifier -> a RelatedPerson for the mother, linked to the Patient
 * (PID[Patient] row 37: PID-21 -> CX[RelatedPerson-Mother]). Every repetition identifies the same
 * mother, so one RelatedPerson carries them all (CX[RelatedPerson-Mother] rows 6-18: CX.1 value,
 * CX.2/3 check digit, CX.4 system/assigner, CX.5 type, CX.7/8 period); relationship MTH from
 * v3-RoleCode (rows 4-5: "MTH as default if no further context is known"). Its id comes from the
 * mother's identifier, so every message about her children names the same RelatedPerson per child.
 */
function mother(seg: Hl7Segment, patient: Patient, ctx: ConvertContext): void {
  const ids = all(seg, 21, (r) => cx(r, ctx));
  if (!ids.length) return;
  const key =
    idKey(
      ids.find((i) => i.value && i.system),
      ctx,
    ) ?? idKey(ids[0], ctx)!;
  const rp: RelatedPerson = {
    resourceType: 'RelatedPerson',
    id: ctx.b.idFor('RelatedPerson', `mother|${patient.id}|${key}`),
    identifier: ids,
    patient: ref(patient),
    relationship: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'MTH', display: 'mother' }] },
    ],
  };
  ctx.b.add(rp);
}

export const pd1: Handler = (seg, ctx) => {
  const p = ctx.state.patient;
  if (!p) return;
  const gp = [...all(seg, 3, (r) => xonOrg(r, ctx)), ...all(seg, 4, (r) => practitioner(r, ctx))];
  if (gp.length) p.generalPractitioner = push(p.generalPractitioner, ...gp);
  const disability = cwe(seg.rep(6), ctx); // PD1-6 handicap
  if (disability)
    p.extension = push(p.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/patient-disability',
      valueCodeableConcept: disability,
    });
  const congregation = seg.get(14, 0, 1); // PD1-14 place of worship (XON[string])
  if (valued(congregation))
    p.extension = push(p.extension, {
      url: 'http://hl7.org/fhir/StructureDefinition/patient-congregation',
      valueString: congregation,
    });
  // PD1[Observation-LivingWill] (ADT_A01 message map: IF PD1-7 VALUED): rows 3-5 status final, code LOINC 75320-2,
  // row 13 PD1-7 -> valueCodeableConcept through LivingWillCode (v2-0315), the sent coding kept
  const will = cweMapped(seg.rep(7), 'LivingWillCode', ctx, '0315');
  if (will) {
    const o: Observation = {
      resourceType: 'Observation',
      id: ctx.b.idFor('Observation', `living-will|${p.id}`),
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '75320-2', display: 'Advance directive' }] },
      subject: ref(p),
      valueCodeableConcept: will,
    };
    ctx.b.add(o);
  }
};

export const nk1: Handler = (seg, ctx) => {
  // NK1[RelatedPerson] + Patient.contact (NK1[Patient])
  const p = ctx.state.patient;
  if (!p) return;
  const rp: RelatedPerson = { resourceType: 'RelatedPerson', id: ctx.localId('RelatedPerson', seg), patient: ref(p) };
  const ids = [...all(seg, 12, (r) => cx(r, ctx)), ...all(seg, 33, (r) => cx(r, ctx))];
  if (valued(seg.get(37)))
    ids.push({
      type: { coding: [{ system: V2_TABLE('0203'), code: 'SS' }] },
      system: 'http://hl7.org/fhir/sid/us-ssn',
      value: seg.get(37),
    });
  if (ids.length) rp.identifier = ids;
  const nkNames = [...names(seg, 2, ctx), ...names(seg, 30, ctx)];
  if (nkNames.length) rp.name = nkNames;
  // NK1[RelatedPerson] rows 5 and 10 / NK1[Patient] rows 5 and 10: NK1-3 through the Relationship concept map
  // (v3-RoleCode, or v2-0063/v2-0131 where the map says), NK1-7 through ContactRole; the original coding is kept
  const rel = [
    relationship(seg.rep(3), 'Relationship', ctx, '0063'),
    relationship(seg.rep(7), 'ContactRole', ctx, '0131'),
  ].filter((x): x is CodeableConcept => !!x);
  if (rel.length) rp.relationship = rel;
  const addr = [...all(seg, 4, (r) => xad(r, ctx)), ...all(seg, 32, (r) => xad(r, ctx))];
  if (addr.length) rp.address = addr;
  const tel = [
    ...all(seg, 5, (r) => xtn(r, ctx)),
    ...all(seg, 6, (r) => xtn(r, ctx, 'work')),
    ...all(seg, 31, (r) => xtn(r, ctx)),
    ...all(seg, 40, (r) => xtn(r, ctx)),
    ...all(seg, 41, (r) => xtn(r, ctx)),
  ];
  if (tel.length) rp.telecom = tel;
  const period = compact({ start: ctx.dt(seg.get(8)), end: ctx.dt(seg.get(9)) });
  if (period) rp.period = period;
  const g = codeOf('AdministrativeSex', seg.get(15));
  if (g) rp.gender = g as RelatedPerson['gender'];
  const bd = toDate(seg.get(16));
  if (bd) rp.birthDate = bd;
  const lang = cweMapped(seg.rep(20), 'PrimaryLanguage', ctx);
  if (lang) rp.communication = [{ language: lang }];
  ctx.b.add(rp);
  const contact: PatientContact | undefined = compact({
    relationship: rel.length ? rel : undefined,
    name: nkNames.find((n) => n.use !== 'nickname'),
    telecom: tel.length ? tel : undefined,
    address: addr[0],
    gender: rp.gender,
    period,
    organization: xonOrg(seg.rep(13), ctx),
  }) as PatientContact | undefined;
  // pat-1: a contact needs a name, telecom, address or organization
  if (contact && (contact.name || contact.telecom || contact.address || contact.organization))
    p.contact = push(p.contact, contact);
  ctx.state.last = rp;
};

/**
 * A relationship CWE through its concept map (cweMapped), and when the code is not in the map but the words
 * are (`Mother`, `SPOUSE`, `Emergency Contact` sent as the code or the text), the mapped coding by its display:
 * a clinician reads "mother" either way. The sent coding/text is kept after the mapped one.
 */
export function relationship(
  r: Hl7Rep | undefined,
  map: string,
  ctx: ConvertContext,
  table: string,
): CodeableConcept | undefined {
  const cc = cweMapped(r, map, ctx, table);
  if (!cc || mapCode(map, c(r, 1))) return cc;
  const m = mapDisplay(map, c(r, 1)) ?? mapDisplay(map, c(r, 2)) ?? mapDisplay(map, c(r, 9));
  if (!m) return cc;
  const coding = {
    ...(m.system ? { system: m.system } : {}),
    code: m.code,
    ...(m.display ? { display: m.display } : {}),
  };
  return { ...cc, coding: [coding, ...(cc.coding ?? [])] };
}

export const mrg: Handler = (seg, ctx) => {
  // MRG: the prior patient (MRG-1 prior patient identifier list, MRG-4 prior patient id) is linked
  // to the surviving patient of the PID above it: Patient.link replaced-by / replaces.
  const survivor = ctx.state.patient;
  if (!survivor) return;
  const ids = [...all(seg, 1, (r) => cx(r, ctx)), ...all(seg, 4, (r) => cx(r, ctx))];
  const key =
    idKey(
      ids.find((i) => i.value && i.system),
      ctx,
    ) ?? idKey(ids[0], ctx);
  if (!key) return;
  const old: Patient = { resourceType: 'Patient', id: ctx.b.idFor('Patient', key), identifier: ids, active: false };
  const priorNames = names(seg, 7, ctx);
  if (priorNames.length) old.name = priorNames;
  if (old.id === survivor.id) return;
  const prior = ctx.b.add(old);
  prior.link = push(prior.link, { other: ref(survivor), type: 'replaced-by' });
  survivor.link = push(survivor.link, { other: ref(prior), type: 'replaces' });
  // MRG-5 prior visit number / MRG-3 prior account: kept as identifiers of the old visit
  ctx.state.last = prior;
};
