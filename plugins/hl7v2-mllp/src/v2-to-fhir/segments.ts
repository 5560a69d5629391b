/**
 * Segment maps, written from the IG's segment CSVs
 * (../shared/v2-to-fhir/mappings/segments/HL7 Segment - FHIR R4_ <SEG>[<Resource>].csv).
 * Each handler reads one segment, creates/extends resources in the Bundle and updates the walk
 * state (see convert.ts for the grouping rules).
 */
import type {
  Account,
  AllergyIntolerance,
  Annotation,
  Appointment,
  AppointmentParticipant,
  CareTeam,
  ChargeItem,
  CodeableConcept,
  Condition,
  Coverage,
  Device,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  EpisodeOfCare,
  EncounterLocation,
  EncounterParticipant,
  Extension,
  HumanName,
  Identifier,
  Immunization,
  Location,
  MedicationDispense,
  MedicationRequest,
  MessageHeader,
  Observation,
  Organization,
  Patient,
  PatientContact,
  Practitioner,
  PractitionerRole,
  Procedure,
  Provenance,
  Reference,
  RelatedPerson,
  Resource,
  ServiceRequest,
  Specimen,
} from '@medplum/fhirtypes';
import type { Hl7Rep, Hl7Segment } from '../hl7v2/parser';
import { V2_TABLE, mapCode, mapDisplay } from './codes';
import { ref } from './context';
import { type ConvertContext, FERRY_SEGMENT_EXTENSION, type OrderGroup, segmentText } from './convert';
import { toDate } from './dates';
import { in3CareTeam, rolCareTeam } from './segments/care-team';
import { deleteEncounterHistory, encounterHistory, episodeDiagnosis, visitEpisode } from './segments/visit';
import {
  FILLER,
  PLACER,
  c,
  codeOf,
  codeStr,
  mimeCode,
  compact,
  cwe,
  cweMapped,
  cx,
  decimal,
  dr,
  ed,
  ei,
  eiNested,
  hdDisplay,
  hdSystem,
  isCode,
  nest,
  nr,
  rp,
  sn,
  units,
  valued,
  xad,
  xpn,
  xtn,
} from './datatypes';

type Handler = (seg: Hl7Segment, ctx: ConvertContext) => void;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Ref = Reference<any>;

/** `arr` plus the defined items, as a new array (`arr` itself is never changed; returned as is when nothing is added). */
const push = <T>(arr: T[] | undefined, ...items: (T | undefined)[]): T[] | undefined => {
  let out = arr;
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    if (v === undefined) continue;
    if (out === arr) out = arr ? arr.slice() : [];
    out!.push(v);
  }
  return out;
};
const all = <T>(seg: Hl7Segment, n: number, f: (r: Hl7Rep) => T | undefined): T[] => {
  const out: T[] = [];
  const reps = seg.reps(n);
  for (let i = 0; i < reps.length; i++) {
    const v = f(reps[i]);
    if (v !== undefined) out.push(v);
  }
  return out;
};
/**
 * The key a deterministic id is derived from: system|value, and for an identifier without a system
 * (no assigning authority) the sending facility/application stands in, so two senders' bare "12345"
 * never become the same resource.
 */
/**
 * Every name of an XPN field: each repetition's HumanName (XPN[HumanName]) and, when XPN.15 "called by" is
 * valued, an additional HumanName `use: nickname` with it as given name (XPN[HumanName] rows 18-19: XPN.15 ->
 * [2].given, [2].use = "nickname", for resource attributes that allow several names).
 */
const names = (seg: Hl7Segment, n: number, ctx: ConvertContext): HumanName[] => {
  const out: HumanName[] = [];
  for (const r of seg.reps(n)) {
    const name = xpn(r, ctx);
    if (name) out.push(name);
    const calledBy = c(r, 15);
    if (valued(calledBy)) out.push({ use: 'nickname', given: [calledBy.trim()] });
  }
  return out;
};
const idKey = (id: Identifier | undefined, ctx: ConvertContext) => (id?.value ? `${id.system ?? `scope:${ctx.scope}`}|${id.value}` : undefined);

// ---------------------------------------------------------------------------------------------
// Shared resources: Practitioner (XCN), Organization (XON/HD), Location (PL)

/** XCN[Practitioner]: one Practitioner per identifier (or name), shared across the Bundle. */
export function practitioner(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r) return undefined;
  const idv = c(r, 1);
  const nameParts = [c(r, 2), c(r, 3), c(r, 4)].filter(valued);
  if (!valued(idv) && !nameParts.length) return undefined;
  const hd = nest(r, 9);
  const sys = valued(idv) ? hdSystem(hd, ctx) : undefined;
  const key = valued(idv) ? `id|${sys ?? `scope:${ctx.scope}`}|${idv}` : `name|${nameParts.join('^')}`;
  const pid = ctx.b.idFor('Practitioner', key);
  const existing = ctx.b.get(pid) as Practitioner | undefined;
  const fam = r[1] ?? [];
  if (existing) return ref(existing, [c(r, 3), fam[0]].filter(valued).join(' ') || undefined);
  const p: Practitioner = { resourceType: 'Practitioner', id: pid };
  if (valued(idv)) {
    const id: Identifier = {};
    if (sys) id.system = sys;
    id.value = idv;
    const t = c(r, 13);
    if (valued(t)) id.type = { coding: [{ system: V2_TABLE('0203'), code: codeStr(t) }] };
    const asg = hdDisplay(hd);
    if (asg) id.assigner = { display: asg };
    p.identifier = [id];
  }
  const name = compact({
    family: valued(fam[0]) ? fam[0] : undefined,
    given: [c(r, 3), c(r, 4)].filter(valued),
    suffix: [c(r, 5), c(r, 21)].filter(valued),
    prefix: [c(r, 6)].filter(valued),
    use: codeOf('NameType', c(r, 10)) as 'official' | undefined,
  });
  if (name) p.name = [name];
  const q = c(r, 7);
  if (valued(q)) p.qualification = [{ code: { coding: [{ system: V2_TABLE('0360'), code: codeStr(q) }] } }];
  const added = ctx.b.add(p);
  return ref(added, name ? [c(r, 3), fam[0]].filter(valued).join(' ') || undefined : undefined);
}

/** XON / HD / name -> Organization (org-1: a name or an identifier). */
export function organization(name: string | undefined, identifier: Identifier | undefined, ctx: ConvertContext): Ref | undefined {
  if (!valued(name) && !identifier?.value) return undefined;
  const o: Organization = { resourceType: 'Organization' };
  if (identifier?.value) o.identifier = [identifier];
  if (valued(name)) o.name = name;
  o.id = ctx.b.idFor('Organization', identifier?.value ? `id|${idKey(identifier, ctx)}` : `name|${name}`);
  return ref(ctx.b.add(o), valued(name) ? name : undefined);
}

export function xonOrg(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r) return undefined;
  const idv = c(r, 10) || c(r, 3);
  let identifier: Identifier | undefined;
  if (valued(idv)) {
    identifier = { value: idv };
    const sys = hdSystem(nest(r, 6), ctx);
    if (sys) identifier.system = sys;
  }
  return organization(c(r, 1), identifier, ctx);
}

export function hdOrg(hd: Hl7Rep, ctx: ConvertContext): Ref | undefined {
  const ns = c(hd, 1);
  const uid = c(hd, 2);
  let identifier: Identifier | undefined;
  if (valued(uid)) {
    // HD.2 universal id: an OID / UUID / URI is a URI identifier (system urn:ietf:rfc:3986, value the URI)
    const t = c(hd, 3).toUpperCase();
    if (/^[0-2](\.(0|[1-9]\d*))+$/.test(uid)) identifier = { system: 'urn:ietf:rfc:3986', value: `urn:oid:${uid}` };
    else if (t === 'UUID' || /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uid)) identifier = { system: 'urn:ietf:rfc:3986', value: `urn:uuid:${uid.toLowerCase()}` };
    else if (/^[a-z][a-z0-9+.-]*:\S+$/i.test(uid)) identifier = { system: 'urn:ietf:rfc:3986', value: uid };
    else identifier = { value: uid };
  }
  return organization(ns || uid, identifier, ctx);
}

const LOC_TYPE = 'http://terminology.hl7.org/CodeSystem/location-physical-type';
/** HD[Location] rows 3-6: HD.1 -> name, HD.2 -> identifier.value (when HD.3 is ISO/UUID), physicalType "si" (site). */
export function hdLocation(hd: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  const ns = c(hd, 1);
  const uid = c(hd, 2);
  if (!valued(ns) && !valued(uid)) return undefined;
  const l: Location = { resourceType: 'Location', id: ctx.b.idFor('Location', `hd|${ns}|${uid}`), mode: 'instance' };
  if (valued(ns)) l.name = ns;
  if (valued(uid)) {
    const t = c(hd, 3).toUpperCase();
    const oid = /^[0-2](\.(0|[1-9]\d*))+$/.test(uid);
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uid);
    l.identifier = [(t === 'ISO' && oid) || (t === 'UUID' && uuid) ? { system: 'urn:ietf:rfc:3986', value: oid ? `urn:oid:${uid}` : `urn:uuid:${uid.toLowerCase()}` } : { value: uid }];
    l.physicalType = { coding: [{ system: LOC_TYPE, code: 'si', display: 'Site' }] };
  }
  const added = ctx.b.add(l);
  return ref(added, added.name);
}
/** PL[Location]: facility (PL.4) > building (PL.7) > floor (PL.8) > point of care (PL.1) > room (PL.2) > bed (PL.3), linked by partOf; returns the most specific. */
export function location(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r || r.length === 0) return undefined;
  const memoKey = r.map((x) => x.join('&')).join('^');
  const memo = ctx.state.locations.get(memoKey);
  if (memo !== undefined) return memo ?? undefined;
  const out = locationUncached(r, ctx);
  ctx.state.locations.set(memoKey, out ?? null);
  return out;
}

function locationUncached(r: Hl7Rep, ctx: ConvertContext): Ref | undefined {
  const levels: [number, string | undefined][] = [
    [4, 'si'],
    [7, 'bu'],
    [8, 'lvl'],
    [1, undefined],
    [2, 'ro'],
    [3, 'bd'],
  ];
  let parent: Location | undefined;
  let path = '';
  for (const [i, type] of levels) {
    const v = i === 4 ? c(nest(r, 4), 1) || c(nest(r, 4), 2) : c(r, i);
    if (!valued(v)) continue;
    path += `^${i}=${v}`;
    const l: Location = { resourceType: 'Location', id: ctx.b.idFor('Location', path), name: v, mode: 'instance' };
    l.identifier = [{ value: v }];
    if (type) l.physicalType = { coding: [{ system: LOC_TYPE, code: type }] };
    if (i === 1 || (!parent && valued(c(r, 9)))) {
      /* description at the most specific level is set below */
    }
    if (parent) l.partOf = ref(parent);
    parent = ctx.b.add(l);
  }
  if (!parent) return undefined;
  if (valued(c(r, 9)) && !parent.description) parent.description = c(r, 9);
  return ref(parent, parent.name);
}

// ---------------------------------------------------------------------------------------------
// MSH, SFT, EVN

const msh: Handler = (seg, ctx) => {
  // MSH[MessageHeader]
  const code = seg.get(9, 0, 1);
  const trig = seg.get(9, 0, 2);
  const src = seg.rep(3);
  const endpoint = c(src, 2) ? (/^[0-2](\.\d+)+$/.test(c(src, 2)) ? `urn:oid:${c(src, 2)}` : c(src, 2)) : undefined;
  const h: MessageHeader = {
    resourceType: 'MessageHeader',
    id: ctx.b.idFor('MessageHeader', 'MSH', true),
    eventCoding: { system: V2_TABLE('0003'), code: codeStr(trig) ?? codeStr(code) ?? 'unknown' },
    source: { endpoint: '' },
  };
  ctx.header = ctx.b.add(h); // first entry; filled below
  if (valued(code)) h.eventCoding = { system: 'http://terminology.hl7.org/CodeSystem/v2-0003', code: codeStr(trig) ?? codeStr(code), display: `${code}^${trig}` };
  const srcName = c(src, 1) || c(src, 2);
  if (srcName) h.source.name = srcName;
  h.source.endpoint = seg.get(24) || endpoint || (srcName ? `urn:ferry:hl7v2:app:${encodeURIComponent(srcName)}` : 'urn:ferry:hl7v2:app:unknown');
  const dst = seg.rep(5);
  const dstName = c(dst, 1) || c(dst, 2);
  // MSH[MessageHeader] row 30: MSH-23 receiving responsible organization (XON[Organization]); row 11: MSH-6 only IF MSH-23 NOT VALUED
  const receiver = xonOrg(seg.rep(23), ctx) ?? hdOrg(seg.rep(6), ctx);
  if (dstName || receiver) {
    h.destination = [
      {
        ...(dstName ? { name: dstName } : {}),
        endpoint: seg.get(25) || (dstName ? `urn:ferry:hl7v2:app:${encodeURIComponent(dstName)}` : 'urn:ferry:hl7v2:app:unknown'),
        ...(receiver ? { receiver } : {}),
      },
    ];
  }
  const sender = hdOrg(seg.rep(4), ctx);
  if (sender) h.sender = sender;
  const meta: Resource['meta'] = {};
  const pt = seg.get(11);
  if (valued(pt)) meta.tag = [{ system: V2_TABLE('0103'), code: codeStr(pt) }];
  const sec = mapCode('ConfidentialityCode', seg.get(8));
  if (valued(seg.get(8))) meta.security = [{ system: sec?.system ?? V2_TABLE('0952'), code: sec?.code ?? codeStr(seg.get(8)) }];
  if (meta.tag || meta.security) h.meta = meta;
  const lang = seg.get(19);
  if (valued(lang) && /^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$/.test(lang.trim())) h.language = lang.trim();
  const responsible = xonOrg(seg.rep(22), ctx);
  if (responsible) h.responsible = responsible;
};

const sft: Handler = (seg, ctx) => {
  // SFT[MessageHeader]: source.software / source.version
  const s = ctx.header?.source;
  if (s) {
    if (valued(seg.get(3)) && !s.software) s.software = seg.get(3);
    if (valued(seg.get(2)) && !s.version) s.version = seg.get(2);
  }
  // SFT[Device] (ADT_A01 message map rows 8-9: Provenance.entity.what(Device)): row 4 SFT-1 XON.1 -> manufacturer,
  // row 6 SFT-2 -> version.value, rows 7-8 SFT-3 -> deviceName (manufacturer-name), row 9 SFT-4 -> modelNumber,
  // row 10 SFT-5 -> note, rows 11-12 SFT-6 -> version installDate (R5 backport extension)
  const name = seg.get(3);
  const version = seg.get(2);
  if (!valued(name) && !valued(version)) return;
  const d: Device = { resourceType: 'Device', id: ctx.b.idFor('Device', `software|${seg.get(1, 0, 1)}|${name}|${version}|${seg.get(4)}`) };
  if (valued(seg.get(1, 0, 1))) d.manufacturer = seg.get(1, 0, 1);
  if (valued(name)) d.deviceName = [{ name, type: 'manufacturer-name' }];
  if (valued(seg.get(4))) d.modelNumber = seg.get(4);
  if (valued(version)) {
    const installed = ctx.dt(seg.get(6));
    d.version = [{ value: version, ...(installed ? { extension: [{ url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Device.version.installDate', valueDateTime: installed }] } : {}) }];
  }
  if (valued(seg.get(5))) d.note = [{ text: seg.get(5) }];
  ctx.state.software = push(ctx.state.software, ctx.b.add(d));
};

const evn: Handler = (seg, ctx) => {
  // EVN[Provenance]
  const p: Provenance = {
    resourceType: 'Provenance',
    id: ctx.b.idFor('Provenance', 'EVN', true),
    target: [],
    recorded: ctx.instant(seg.get(2)) ?? ctx.instant(ctx.msg.msh.get(7)) ?? '1970-01-01T00:00:00Z',
    activity: {
      coding: [
        { system: V2_TABLE('0003'), code: (valued(seg.get(1)) ? seg.get(1).trim() : '') || ctx.trigger || ctx.messageCode || 'unknown', display: `event - :${ctx.messageCode}^${ctx.trigger}` },
      ],
    },
    agent: [],
  };
  const occurred = ctx.dt(seg.get(6));
  if (occurred) p.occurredDateTime = occurred;
  const reason = seg.get(4) !== 'U' ? cweMapped(seg.rep(4), 'EventReason', ctx, '0062') : undefined;
  if (reason) p.reason = [reason];
  const who = practitioner(seg.rep(5), ctx);
  if (who) p.agent.push({ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'enterer' }] }, who });
  // EVN[Provenance] row 12: EVN-7 event facility -> location (HD[Location])
  const where = hdLocation(seg.rep(7), ctx);
  if (where) p.location = where;
  ctx.provenance = ctx.b.add(p);
};

// ---------------------------------------------------------------------------------------------
// PID, PD1, NK1, MRG

const pid: Handler = (seg, ctx) => {
  // PID[Patient]
  const identifiers = [...all(seg, 2, (r) => cx(r, ctx)), ...all(seg, 3, (r) => cx(r, ctx)), ...all(seg, 4, (r) => cx(r, ctx))];
  const ssn = seg.get(19);
  if (valued(ssn)) identifiers.push({ type: { coding: [{ system: V2_TABLE('0203'), code: 'SS' }] }, system: 'http://hl7.org/fhir/sid/us-ssn', value: ssn });
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
  const key = idKey(identifiers.find((i) => i.value && i.system), ctx) ?? idKey(identifiers[0], ctx);
  p.id = key ? ctx.b.idFor('Patient', key) : ctx.localId('Patient', seg);
  if (identifiers.length) p.identifier = identifiers;
  const pn = [...names(seg, 5, ctx), ...names(seg, 9, ctx)];
  if (pn.length) p.name = pn;
  const extension: Extension[] = [];
  const mmn = seg.rep(6);
  if (valued(c(mmn, 1)))
    extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName', valueString: [c(mmn, 2), c(mmn, 1)].filter(valued).join(' ') });
  const dob = seg.get(7);
  const bd = toDate(dob);
  if (bd) {
    p.birthDate = bd;
    const full = ctx.dt(dob);
    if (dob.replace(/[+-]\d{4}$/, '').length > 8 && full)
      (p as Patient & { _birthDate?: unknown })._birthDate = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: full }] };
  }
  const g = codeOf('AdministrativeSex', seg.get(8));
  if (g) p.gender = g as Patient['gender'];
  const race = all(seg, 10, (r) => cwe(r, ctx));
  for (const r of race) extension.push({ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', extension: [{ url: 'text', valueString: r.text ?? r.coding?.[0]?.display ?? r.coding?.[0]?.code ?? 'unknown' }] });
  const addresses = all(seg, 11, (r) => xad(r, ctx));
  const county = seg.get(12);
  if (valued(county)) {
    if (addresses.length === 1 && !addresses[0].district) addresses[0].district = county;
    else addresses.push({ district: county });
  }
  if (addresses.length) p.address = addresses;
  const telecom = [...all(seg, 13, (r) => xtn(r, ctx, 'home')), ...all(seg, 14, (r) => xtn(r, ctx, 'work')), ...all(seg, 40, (r) => xtn(r, ctx))];
  if (telecom.length) p.telecom = telecom;
  const lang = cweMapped(seg.rep(15), 'PrimaryLanguage', ctx);
  if (lang) p.communication = [{ language: lang }];
  const ms = cweMapped(seg.rep(16), 'MaritalStatus', ctx, '0002');
  if (ms) p.maritalStatus = ms;
  const religion = cwe(seg.rep(17), ctx);
  if (religion) extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-religion', valueCodeableConcept: religion });
  const eth = all(seg, 22, (r) => cwe(r, ctx));
  for (const e of eth)
    extension.push({ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity', extension: [{ url: 'text', valueString: e.text ?? e.coding?.[0]?.display ?? e.coding?.[0]?.code ?? 'unknown' }] });
  const birthPlace = seg.get(23);
  if (valued(birthPlace)) extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthPlace', valueAddress: { text: birthPlace } });
  const order = Number(seg.get(25));
  if (Number.isInteger(order) && order > 0) p.multipleBirthInteger = order;
  else if (valued(seg.get(24))) {
    const yn = seg.get(24);
    if (yn === 'Y' || yn === 'N') p.multipleBirthBoolean = yn === 'Y';
  }
  const nat = cwe(seg.rep(28), ctx);
  if (nat) extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-nationality', extension: [{ url: 'code', valueCodeableConcept: nat }] });
  // PID[Patient] rows 42-44 (PID-26 citizenship) and 63-65 (PID-39 tribal citizenship) -> patient-citizenship
  for (const n of [26, 39])
    for (const cc of all(seg, n, (r) => cwe(r, ctx))) extension.push({ url: 'http://hl7.org/fhir/StructureDefinition/patient-citizenship', extension: [{ url: 'code', valueCodeableConcept: cc }] });
  const death = ctx.dt(seg.get(29));
  if (death) p.deceasedDateTime = death;
  else if (seg.get(30) === 'Y' || seg.get(30) === 'N') p.deceasedBoolean = seg.get(30) === 'Y';
  const species = cwe(seg.rep(35), ctx);
  const breed = cwe(seg.rep(36), ctx);
  if (species)
    extension.push({
      url: 'http://hl7.org/fhir/StructureDefinition/patient-animal',
      extension: [{ url: 'species', valueCodeableConcept: species }, ...(breed ? [{ url: 'breed', valueCodeableConcept: breed }] : [])],
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
  if (ctx.messageCode === 'BAR' || ctx.messageCode === 'DFT' || (ctx.messageCode === 'ADT' && valued(seg.get(18)))) accountFor(ctx);
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
  const key = idKey(ids.find((i) => i.value && i.system), ctx) ?? idKey(ids[0], ctx)!;
  const rp: RelatedPerson = {
    resourceType: 'RelatedPerson',
    id: ctx.b.idFor('RelatedPerson', `mother|${patient.id}|${key}`),
    identifier: ids,
    patient: ref(patient),
    relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'MTH', display: 'mother' }] }],
  };
  ctx.b.add(rp);
}

const pd1: Handler = (seg, ctx) => {
  const p = ctx.state.patient;
  if (!p) return;
  const gp = [...all(seg, 3, (r) => xonOrg(r, ctx)), ...all(seg, 4, (r) => practitioner(r, ctx))];
  if (gp.length) p.generalPractitioner = push(p.generalPractitioner, ...gp);
  const disability = cwe(seg.rep(6), ctx); // PD1-6 handicap
  if (disability) p.extension = push(p.extension, { url: 'http://hl7.org/fhir/StructureDefinition/patient-disability', valueCodeableConcept: disability });
  const congregation = seg.get(14, 0, 1); // PD1-14 place of worship (XON[string])
  if (valued(congregation)) p.extension = push(p.extension, { url: 'http://hl7.org/fhir/StructureDefinition/patient-congregation', valueString: congregation });
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

const nk1: Handler = (seg, ctx) => {
  // NK1[RelatedPerson] + Patient.contact (NK1[Patient])
  const p = ctx.state.patient;
  if (!p) return;
  const rp: RelatedPerson = { resourceType: 'RelatedPerson', id: ctx.localId('RelatedPerson', seg), patient: ref(p) };
  const ids = [...all(seg, 12, (r) => cx(r, ctx)), ...all(seg, 33, (r) => cx(r, ctx))];
  if (valued(seg.get(37))) ids.push({ type: { coding: [{ system: V2_TABLE('0203'), code: 'SS' }] }, system: 'http://hl7.org/fhir/sid/us-ssn', value: seg.get(37) });
  if (ids.length) rp.identifier = ids;
  const nkNames = [...names(seg, 2, ctx), ...names(seg, 30, ctx)];
  if (nkNames.length) rp.name = nkNames;
  // NK1[RelatedPerson] rows 5 and 10 / NK1[Patient] rows 5 and 10: NK1-3 through the Relationship concept map
  // (v3-RoleCode, or v2-0063/v2-0131 where the map says), NK1-7 through ContactRole; the original coding is kept
  const rel = [relationship(seg.rep(3), 'Relationship', ctx, '0063'), relationship(seg.rep(7), 'ContactRole', ctx, '0131')].filter((x): x is CodeableConcept => !!x);
  if (rel.length) rp.relationship = rel;
  const addr = [...all(seg, 4, (r) => xad(r, ctx)), ...all(seg, 32, (r) => xad(r, ctx))];
  if (addr.length) rp.address = addr;
  const tel = [...all(seg, 5, (r) => xtn(r, ctx)), ...all(seg, 6, (r) => xtn(r, ctx, 'work')), ...all(seg, 31, (r) => xtn(r, ctx)), ...all(seg, 40, (r) => xtn(r, ctx)), ...all(seg, 41, (r) => xtn(r, ctx))];
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
  if (contact && (contact.name || contact.telecom || contact.address || contact.organization)) p.contact = push(p.contact, contact);
  ctx.state.last = rp;
};

/**
 * A relationship CWE through its concept map (cweMapped), and when the code is not in the map but the words
 * are (`Mother`, `SPOUSE`, `Emergency Contact` sent as the code or the text), the mapped coding by its display:
 * a clinician reads "mother" either way. The sent coding/text is kept after the mapped one.
 */
function relationship(r: Hl7Rep | undefined, map: string, ctx: ConvertContext, table: string): CodeableConcept | undefined {
  const cc = cweMapped(r, map, ctx, table);
  if (!cc || mapCode(map, c(r, 1))) return cc;
  const m = mapDisplay(map, c(r, 1)) ?? mapDisplay(map, c(r, 2)) ?? mapDisplay(map, c(r, 9));
  if (!m) return cc;
  const coding = { ...(m.system ? { system: m.system } : {}), code: m.code, ...(m.display ? { display: m.display } : {}) };
  return { ...cc, coding: [coding, ...(cc.coding ?? [])] };
}

const mrg: Handler = (seg, ctx) => {
  // MRG: the prior patient (MRG-1 prior patient identifier list, MRG-4 prior patient id) is linked
  // to the surviving patient of the PID above it: Patient.link replaced-by / replaces.
  const survivor = ctx.state.patient;
  if (!survivor) return;
  const ids = [...all(seg, 1, (r) => cx(r, ctx)), ...all(seg, 4, (r) => cx(r, ctx))];
  const key = idKey(ids.find((i) => i.value && i.system), ctx) ?? idKey(ids[0], ctx);
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

// ---------------------------------------------------------------------------------------------
// PV1, PV2, DG1, PR1, AL1, IAM, ROL, PRT

const pv1: Handler = (seg, ctx) => {
  // PV1[Encounter]
  const p = ctx.state.patient;
  const visit = cx(seg.rep(19), ctx);
  if (visit) visit.type = { coding: [{ system: V2_TABLE('0203'), code: 'VN', display: 'Visit number' }], text: 'visit number' };
  const key = idKey(visit, ctx);
  const pclass = seg.get(2, 0, 1);
  const mclass = mapCode('PatientClass[EncounterClass]', pclass);
  const e: Encounter = {
    resourceType: 'Encounter',
    id: key ? ctx.b.idFor('Encounter', key) : ctx.localId('Encounter', seg),
    status: 'unknown',
    class: mclass
      ? { system: mclass.system, code: mclass.code, display: mclass.display }
      : valued(pclass)
        ? { system: V2_TABLE('0004'), code: codeStr(pclass) }
        : { system: 'http://terminology.hl7.org/CodeSystem/v3-NullFlavor', code: 'UNK', display: 'unknown' },
  };
  const ids = [visit, cx(seg.rep(50), ctx)].filter((x): x is Identifier => !!x);
  if (ids.length) e.identifier = ids;
  if (!valued(seg.get(45))) {
    const st = codeOf('PatientClass[EncounterStatus]', pclass);
    if (st) e.status = st as Encounter['status'];
  }
  if (p) e.subject = ref(p);
  const locations: EncounterLocation[] = [];
  const loc = (n: number, status: EncounterLocation['status']) => {
    const l = location(seg.rep(n), ctx);
    if (l) locations.push({ location: l, status });
  };
  loc(3, pclass === 'P' ? 'planned' : 'active');
  loc(6, 'completed');
  loc(11, 'active');
  loc(42, 'reserved');
  loc(43, 'completed');
  if (locations.length) e.location = locations;
  const type = cweMapped(seg.rep(4), 'AdmissionType', ctx, '0007');
  if (type) e.type = [type];
  const participants: EncounterParticipant[] = [];
  const part = (n: number, code: string, display: string) => {
    for (const r of seg.reps(n)) {
      const who = practitioner(r, ctx);
      if (who) participants.push({ type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code, display }] }], individual: who });
    }
  };
  part(7, 'ATND', 'attender');
  part(8, 'REF', 'referrer');
  part(9, 'CON', 'consultant');
  part(17, 'ADM', 'admitter');
  part(52, 'PART', 'Participation');
  if (participants.length) e.participant = participants;
  const svc = cweMapped(seg.rep(10), 'HospitalService', ctx, '0069');
  if (svc) e.serviceType = svc;
  const hosp: Encounter['hospitalization'] = {};
  const pre = cx(seg.rep(5), ctx);
  if (pre) hosp.preAdmissionIdentifier = pre;
  const readm = cweMapped(seg.rep(13), 'ReadmissionIndicator', ctx, '0092');
  if (readm) hosp.reAdmission = readm;
  const src = cwe(seg.rep(14), ctx);
  if (src) hosp.admitSource = src;
  const arr = all(seg, 15, (r) => cweMapped(r, 'AmbulatoryStatus', ctx, '0009'));
  if (arr.length) hosp.specialArrangement = arr;
  const vip = cweMapped(seg.rep(16), 'VIPIndicator', ctx, '0099');
  if (vip) {
    hosp.specialCourtesy = [vip];
    // PV1[Patient]: PV1-16 -> Patient patient-importance extension
    if (p && !p.extension?.some((x) => x.url === 'http://hl7.org/fhir/StructureDefinition/patient-importance'))
      p.extension = push(p.extension, { url: 'http://hl7.org/fhir/StructureDefinition/patient-importance', valueCodeableConcept: vip });
  }
  const dd = cweMapped(seg.rep(36), 'DischargeDisposition', ctx, '0112');
  if (dd) hosp.dischargeDisposition = dd;
  const dest = location([[seg.get(37, 0, 1)]], ctx);
  if (dest) hosp.destination = dest;
  const diet = all(seg, 38, (r) => cweMapped(r, 'DietType', ctx, '0114'));
  if (diet.length) hosp.dietPreference = diet;
  if (Object.keys(hosp).length) e.hospitalization = hosp;
  const period = compact({ start: ctx.dt(seg.get(44)), end: ctx.dt(seg.get(45)) });
  if (period) e.period = period;
  if (valued(seg.get(45))) e.status = 'finished';
  ctx.state.encounter = ctx.b.add(e);
  if (p) financialClass(seg, p, ctx);
  if (ctx.state.encounter === e) {
    visitEpisode(seg, e, p, ctx); // PV1-53/54 -> EpisodeOfCare (segments/visit.ts)
    encounterHistory(seg, e, p, ctx); // PV1-43 -> Basic EncounterHistory (segments/visit.ts)
  }
  ctx.state.last = ctx.state.encounter;
};

/**
 * PV1[Coverage] (ADT_A01 message map row 37: IF PV1-20 VALUED -> Coverage, beneficiary the Patient): row 22 PV1-20
 * financial class -> Coverage.type (FinancialClass; v2 table 0064 is site-defined, so the sent code is kept),
 * FC.2 effective date -> period.start. The IG gives no payor, which Coverage requires: `payor` says it is
 * unknown (a display-only reference) rather than inventing one.
 */
function financialClass(seg: Hl7Segment, p: Patient, ctx: ConvertContext): void {
  for (const r of seg.reps(20)) {
    const type = cweMapped(nest(r, 1), 'FinancialClass', ctx, '0064');
    if (!type) continue;
    const cov: Coverage = {
      resourceType: 'Coverage',
      id: ctx.b.idFor('Coverage', `${p.id}|PV1-20|${c(r, 1)}`),
      status: 'active',
      type,
      beneficiary: ref(p),
      payor: [{ display: 'unknown (PV1-20 financial class only)' }],
    };
    const start = ctx.dt(c(r, 2));
    if (start) cov.period = { start };
    ctx.b.add(cov);
  }
}

const pv2: Handler = (seg, ctx) => {
  // PV2[Encounter]
  const e = ctx.state.encounter;
  if (!e) return;
  const reason = cwe(seg.rep(3), ctx);
  if (reason) e.reasonCode = push(e.reasonCode, reason);
  const los = decimal(seg.get(11));
  if (los !== undefined && los >= 0) e.length = { value: los, unit: 'd', system: 'http://unitsofmeasure.org', code: 'd' };
  const desc = seg.get(12);
  if (valued(desc)) e.text = { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${escapeXml(desc)}</div>` };
  const prio = cweMapped(seg.rep(25), 'EncounterPriority', ctx, '0217');
  if (prio) e.priority = prio;
  const expected = ctx.dt(seg.get(8));
  if (expected) e.extension = push(e.extension, { url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate', valueDateTime: expected });
  const expectedEnd = ctx.dt(seg.get(9));
  if (expectedEnd) e.extension = push(e.extension, { url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate', valueDateTime: expectedEnd });
  const prior = location(seg.rep(1), ctx); // PV2-1 prior pending location
  if (prior) e.location = push(e.location, { location: prior, status: 'planned' });
  for (const r of seg.reps(13)) {
    const who = practitioner(r, ctx); // PV2-13 referral source code
    if (who) e.participant = push(e.participant, { type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'REF' }], text: 'referrer' }], individual: who });
  }
  const arrival = cwe(seg.rep(38), ctx)?.coding?.[0];
  if (arrival) e.extension = push(e.extension, { url: 'http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival', valueCoding: arrival });
  const ml = cweMapped(seg.rep(40), 'AdmissionLevelOfCareCode', ctx, '0432');
  if (ml) e.type = push(e.type, ml);
};

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const dg1: Handler = (seg, ctx) => {
  // DG1[Condition] (+ Encounter.diagnosis, DG1[Encounter])
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(20), ctx);
  const code = cwe(seg.rep(3), ctx) ?? (valued(seg.get(4)) ? { text: seg.get(4) } : undefined);
  if (code && valued(seg.get(4)) && !code.text) code.text = seg.get(4);
  const cond: Condition = {
    resourceType: 'Condition',
    id: id ? ctx.b.idFor('Condition', idKey(id, ctx)!) : ctx.localId('Condition', seg),
    subject: ref(p),
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis', display: 'Encounter Diagnosis' }] }],
  };
  if (seg.get(21) === 'D') {
    delete cond.clinicalStatus;
    cond.verificationStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'entered-in-error' }] };
  }
  if (id) cond.identifier = [id];
  if (code) cond.code = code;
  const onset = ctx.dt(seg.get(5));
  if (onset) cond.onsetDateTime = onset;
  const asserter = practitioner(seg.rep(16), ctx);
  if (asserter) cond.asserter = asserter;
  const rec = ctx.dt(seg.get(19));
  if (rec) {
    // DG1[Condition] rows 21-23: DG1-19 attestation date -> assertedDate extension (the CSV names its page,
    // www.hl7.org/fhir/extension-condition-asserteddate; this is its canonical URL) and recordedDate
    cond.recordedDate = rec;
    cond.extension = push(cond.extension, { url: 'http://hl7.org/fhir/StructureDefinition/condition-assertedDate', valueDateTime: rec });
  }
  // rows 27-28: DG1-22 parent diagnosis (EI[Condition]) -> condition-dueTo, a reference by identifier
  const parentDx = ei(seg.rep(22), ctx);
  if (parentDx) cond.extension = push(cond.extension, { url: 'http://hl7.org/fhir/StructureDefinition/condition-dueTo', valueReference: { type: 'Condition', identifier: parentDx } });
  const e = ctx.state.encounter;
  const added = ctx.b.add(cond);
  if (e) {
    cond.encounter = ref(e);
    const use = cweMapped(seg.rep(6), 'DiagnosisType', ctx, '0052');
    const n = Number(seg.get(15));
    const rank = Number.isInteger(n) && n > 0 ? n : undefined;
    e.diagnosis = push(e.diagnosis, compact({ condition: ref(cond), use, rank })!);
    // DG1[EpisodeOfCare]: the visit's episode of care (PV1-54) lists the diagnosis too, role DG1-6, rank DG1-15
    const eoc = e.episodeOfCare?.[0]?.reference ? (ctx.b.get(e.episodeOfCare[0].reference.slice('urn:uuid:'.length)) as EpisodeOfCare | undefined) : undefined;
    if (eoc && added === cond) episodeDiagnosis(eoc, cond, use, rank);
  }
  ctx.state.last = added;
};

const prb: Handler = (seg, ctx) => {
  // PRB (problem detail) -> Condition (problem-list-item); PRB-1 action code DE deletes it
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(4), ctx);
  const code = cwe(seg.rep(3), ctx) ?? { text: 'unknown' };
  const cond: Condition = {
    resourceType: 'Condition',
    id: id ? ctx.b.idFor('Condition', idKey(id, ctx)!) : ctx.localId('Condition', seg),
    subject: ref(p),
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'problem-list-item', display: 'Problem List Item' }] }],
    code,
  };
  if (id) cond.identifier = [id];
  const rec = ctx.dt(seg.get(2));
  if (rec) cond.recordedDate = rec;
  const onset = ctx.dt(seg.get(16));
  if (onset) cond.onsetDateTime = onset;
  const resolved = ctx.dt(seg.get(9)) ?? ctx.dt(seg.get(8));
  cond.clinicalStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: resolved ? 'resolved' : 'active' }] };
  if (resolved) cond.abatementDateTime = resolved;
  if (ctx.state.encounter) cond.encounter = ref(ctx.state.encounter);
  const added = ctx.b.add(cond);
  if (seg.get(1) === 'DE') ctx.b.markDelete(added);
  ctx.state.last = added;
};

const pr1: Handler = (seg, ctx) => {
  // PR1[Procedure]
  const p = ctx.state.patient;
  if (!p) return;
  const id = ei(seg.rep(19), ctx);
  const code = cwe(seg.rep(3), ctx) ?? (valued(seg.get(4)) ? { text: seg.get(4) } : { text: 'unknown' });
  if (valued(seg.get(4)) && !c(seg.rep(3), 9)) code.text = seg.get(4);
  const proc: Procedure = {
    resourceType: 'Procedure',
    id: id ? ctx.b.idFor('Procedure', idKey(id, ctx)!) : ctx.localId('Procedure', seg),
    status: 'completed',
    subject: ref(p),
    code,
  };
  if (id) proc.identifier = [id];
  const start = ctx.dt(seg.get(5));
  const minutes = decimal(seg.get(7));
  if (start && minutes !== undefined && minutes > 0) {
    const end = new Date(Date.parse(start) + minutes * 60000);
    proc.performedPeriod = { start, ...(Number.isNaN(end.getTime()) ? {} : { end: isoWithOffset(end, start) }) };
  } else if (start) proc.performedDateTime = start;
  const cat = cwe(seg.rep(6), ctx) ?? isCode(seg.get(6), '0230');
  if (cat) proc.category = cat;
  const performers = [
    ...seg.reps(8).map((r) => [r, '88189002', 'Anesthesiologist'] as const),
    ...seg.reps(11).map((r) => [r, '304292004', 'Surgeon'] as const),
    ...seg.reps(12).map((r) => [r, undefined, undefined] as const),
  ];
  for (const [r, fn, disp] of performers) {
    const actor = practitioner(r, ctx);
    if (actor) proc.performer = push(proc.performer, { actor, ...(fn ? { function: { coding: [{ system: 'http://snomed.info/sct', code: fn, display: disp }] } } : {}) });
  }
  const reason = cwe(seg.rep(15), ctx);
  if (reason) proc.reasonCode = [reason];
  const loc = location(seg.rep(23), ctx);
  if (loc) proc.location = loc;
  if (ctx.state.encounter) proc.encounter = ref(ctx.state.encounter);
  // PR1[Procedure] row 35: PR1-25 parent procedure id -> partOf, a reference by identifier (EI; the parent's
  // resource may be in another message), the PR1 in this message with that PR1-19 id when there is one
  const parent = ei(seg.rep(25), ctx);
  if (parent) {
    const here = ctx.b.resources().find((r) => r.resourceType === 'Procedure' && (r as Procedure).identifier?.some((i) => i.value === parent.value && i.system === parent.system));
    proc.partOf = [here ? ref(here) : { type: 'Procedure', identifier: parent }];
  }
  ctx.state.last = ctx.b.add(proc);
};

/** Adds minutes to a dateTime keeping its offset. */
function isoWithOffset(d: Date, like: string): string {
  const m = /([+-])(\d{2}):(\d{2})$/.exec(like);
  if (!m || like.endsWith('Z')) return d.toISOString().replace(/\.000Z$/, 'Z');
  const off = (m[1] === '-' ? -1 : 1) * (+m[2] * 60 + +m[3]);
  const local = new Date(d.getTime() + off * 60000).toISOString().slice(0, 19);
  return `${local}${m[1]}${m[2]}:${m[3]}`;
}

const al1: Handler = (seg, ctx) => {
  // AL1[AllergyIntolerance]
  const p = ctx.state.patient;
  if (!p) return;
  const code = cwe(seg.rep(3), ctx);
  const a: AllergyIntolerance = {
    resourceType: 'AllergyIntolerance',
    id: ctx.b.idFor('AllergyIntolerance', `${p.id}|${code?.coding?.[0]?.code ?? code?.text ?? seg.sequence}`),
    patient: ref(p),
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
  };
  const type = seg.get(2);
  const cat = codeOf('AllergenType[AllergyIntoleranceCategory]', type);
  if (cat) a.category = [cat as 'food'];
  const t = codeOf('AllergyType', type);
  if (t === 'allergy' || t === 'intolerance') a.type = t;
  if (code) a.code = code;
  const sev = seg.get(4);
  const crit = codeOf('AllergySeverity[AllergyIntolerance.criticality]', sev);
  if (crit) a.criticality = crit as AllergyIntolerance['criticality'];
  const rsev = codeOf('AllergySeverity[AllergyIntolerance.reaction.severity]', sev);
  const manif = all(seg, 5, (r) => (valued(c(r, 1)) ? { text: c(r, 1) } : undefined));
  if (manif.length) a.reaction = [{ manifestation: manif, ...(rsev ? { severity: rsev as 'mild' } : {}) }];
  const onset = ctx.dt(seg.get(6));
  if (onset) a.onsetDateTime = onset;
  if (ctx.state.encounter) a.encounter = ref(ctx.state.encounter);
  ctx.state.last = ctx.b.add(a);
};

const iam: Handler = (seg, ctx) => {
  // IAM[AllergyIntolerance]; IAM-6 action code D deletes
  const p = ctx.state.patient;
  if (!p) return;
  const code = cwe(seg.rep(3), ctx);
  const uid = ei(seg.rep(7), ctx);
  const a: AllergyIntolerance = {
    resourceType: 'AllergyIntolerance',
    id: uid ? ctx.b.idFor('AllergyIntolerance', idKey(uid, ctx)!) : ctx.b.idFor('AllergyIntolerance', `${p.id}|${code?.coding?.[0]?.code ?? seg.sequence}`),
    patient: ref(p),
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
  };
  if (uid) a.identifier = [uid];
  const cat = codeOf('AllergenType[AllergyIntoleranceCategory]', seg.get(2));
  if (cat) a.category = [cat as 'food'];
  if (code) a.code = code;
  const crit = codeOf('AllergySeverity[AllergyIntolerance.criticality]', seg.get(4));
  if (crit) a.criticality = crit as AllergyIntolerance['criticality'];
  const manif = all(seg, 5, (r) => cwe(r, ctx));
  if (manif.length) a.reaction = [{ manifestation: manif }];
  const onset = ctx.dt(seg.get(11));
  if (onset) a.onsetDateTime = onset;
  const rec = ctx.dt(seg.get(13));
  if (rec) a.recordedDate = rec;
  const added = ctx.b.add(a);
  if (seg.get(6) === 'D') ctx.b.markDelete(added);
  ctx.state.last = added;
};

const rol: Handler = (seg, ctx) => {
  // ROL: a role on the visit (ROL[Encounter-PractitionerRole]), the patient's care provider (PP,
  // ROL[Patient-GeneralPractitioner]) or, any other role after PID, a member of the patient's CareTeam
  // (ROL[CareTeam], ADT_A01 message map row 13; segments/care-team.ts)
  const who = practitioner(seg.rep(4), ctx);
  const role = cwe(seg.rep(3), ctx);
  const e = ctx.state.lastSegment === 'PV1' || ctx.state.lastSegment === 'PV2' || ctx.state.last === ctx.state.encounter ? ctx.state.encounter : undefined;
  if (e) {
    if (who) e.participant = push(e.participant, compact({ type: role ? [role] : undefined, individual: who, period: compact({ start: ctx.dt(seg.get(5)), end: ctx.dt(seg.get(6)) }) })!);
  } else if (ctx.state.patient) {
    if (c(seg.rep(3), 1) === 'PP') {
      if (who) ctx.state.patient.generalPractitioner = push(ctx.state.patient.generalPractitioner, who);
    } else if (ctx.state.last === ctx.state.patient) rolCareTeam(seg, ctx.state.patient, ctx); // the patient's own ROL group (after PID/PD1), not a procedure's or an insurance's
  }
};

/**
 * PRT[Device] (ORU_R01 message map rows 25, 67: IF PRT-10 VALUED -> Device, Observation.device): row 13/14 PRT-10 ->
 * udiCarrier (HRF/AIDC) or identifier, row 20 PRT-16 -> udiCarrier.deviceIdentifier, rows 21-25 PRT-17..21 ->
 * manufactureDate, expirationDate, lotNumber, serialNumber, distinctIdentifier, row 26 PRT-22 -> type.
 */
function prtDevice(seg: Hl7Segment, ctx: ConvertContext): Resource | undefined {
  const ids = all(seg, 10, (r) => ei(r, ctx));
  const udi = c(seg.rep(16), 1);
  if (!ids.length && !valued(udi)) return undefined;
  const key = ids[0] ? idKey(ids[0], ctx)! : `udi|${udi}`;
  const d: Device = { resourceType: 'Device', id: ctx.b.idFor('Device', key) };
  if (ids.length) d.identifier = ids;
  if (valued(udi)) d.udiCarrier = [{ deviceIdentifier: udi }];
  const made = ctx.dt(seg.get(17));
  if (made) d.manufactureDate = made;
  const exp = ctx.dt(seg.get(18));
  if (exp) d.expirationDate = exp;
  if (valued(seg.get(19))) d.lotNumber = seg.get(19);
  if (valued(seg.get(20))) d.serialNumber = seg.get(20);
  if (valued(seg.get(21, 0, 1))) d.distinctIdentifier = seg.get(21, 0, 1);
  const type = cwe(seg.rep(22), ctx);
  if (type) d.type = type;
  if (seg.get(2) === 'D') d.status = 'inactive'; // PRT[Device] row 4: PRT-2 "D" inactivates the relationship
  const added = ctx.b.add(d);
  const target = ctx.state.last;
  if (target?.resourceType === 'Observation' && !(target as Observation).device) (target as Observation).device = ref(added);
  return added;
}

const prt: Handler = (seg, ctx) => {
  prtDevice(seg, ctx);
  // PRT[PractitionerRole]: a person's participation in the segment above (PRT-5 person; org-only PRT are skipped)
  const who = practitioner(seg.rep(5), ctx);
  if (!who) return;
  const code = cweMapped(seg.rep(4), 'Participation', ctx, '0912');
  const org = xonOrg(seg.rep(8), ctx);
  const role: PractitionerRole = {
    resourceType: 'PractitionerRole',
    id: ctx.b.idFor('PractitionerRole', `${who.reference}|${c(seg.rep(4), 1)}|${org?.reference ?? ''}`, true),
    practitioner: who,
  };
  if (code) role.code = [code];
  const spec = cwe(seg.rep(6), ctx);
  if (spec) role.specialty = [spec];
  if (org) role.organization = org;
  const loc = location(seg.rep(9), ctx);
  if (loc) role.location = [loc];
  const period = compact({ start: ctx.dt(seg.get(11)), end: ctx.dt(seg.get(12)) });
  if (period) role.period = period;
  const tel = all(seg, 15, (r) => xtn(r, ctx));
  if (tel.length) role.telecom = tel;
  const r = ref(ctx.b.add(role));
  const target = ctx.state.last;
  switch (target?.resourceType) {
    case 'Encounter':
      (target as Encounter).participant = push((target as Encounter).participant, compact({ type: code ? [code] : undefined, individual: r, period })!);
      break;
    case 'ServiceRequest':
      (target as ServiceRequest).performer = push((target as ServiceRequest).performer, r);
      break;
    case 'Observation':
      (target as Observation).performer = push((target as Observation).performer, r);
      break;
    case 'DiagnosticReport':
      (target as DiagnosticReport).performer = push((target as DiagnosticReport).performer, r);
      break;
    case 'Procedure':
      (target as Procedure).performer = push((target as Procedure).performer, compact({ actor: r, function: code })!);
      break;
    case 'MedicationRequest':
      if (!(target as MedicationRequest).performer) (target as MedicationRequest).performer = r;
      break;
    case 'Immunization':
      (target as Immunization).performer = push((target as Immunization).performer, compact({ actor: r, function: code })!);
      break;
    case 'Patient':
      // ADT_A01 message map rows 25-26: PRT-4 PP -> Patient.generalPractitioner; the other roles -> CareTeam
      if (c(seg.rep(4), 1) === 'PP') (target as Patient).generalPractitioner = push((target as Patient).generalPractitioner, r);
      else careTeam(target as Patient, ctx).participant!.push(compact({ role: code ? [code] : undefined, member: r, onBehalfOf: org, period })!);
      break;
    default:
  }
};

/**
 * The patient's care team of this message (PRT[CareTeam]: row 7 PRT-4 -> participant.role, rows 8-10 PRT-5 ->
 * participant.member, row 14 PRT-8 -> participant.onBehalfOf, rows 18-19 PRT-11/12 -> participant.period).
 */
export function careTeam(p: Patient, ctx: ConvertContext): CareTeam {
  const id = ctx.b.idFor('CareTeam', `patient|${p.id}`, true);
  const existing = ctx.b.get(id) as CareTeam | undefined;
  if (existing) return existing;
  return ctx.b.add<CareTeam>({ resourceType: 'CareTeam', id, status: 'active', subject: ref(p), participant: [] });
}

// ---------------------------------------------------------------------------------------------
// Insurance, guarantor, financial

const in1: Handler = (seg, ctx) => {
  // IN1[Coverage]
  const p = ctx.state.patient;
  if (!p) return;
  const payorId = cx(seg.rep(3), ctx);
  const payor = xonOrg(seg.rep(4), ctx) ?? organization(undefined, payorId, ctx) ?? ref(p);
  const payorOrg = payor.reference?.startsWith('urn:uuid:') ? (ctx.b.get(payor.reference.slice(9)) as Organization | undefined) : undefined;
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
  if (plan?.coding?.[0]?.code) ids.push({ ...(plan.coding[0].system ? { system: plan.coding[0].system } : {}), value: plan.coding[0].code });
  if (valued(polNo)) ids.push({ type: { coding: [{ system: V2_TABLE('0203'), code: 'MB' }] }, value: polNo });
  if (ids.length) cov.identifier = ids;
  if (plan) cov.class = [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'plan' }] }, value: plan.coding?.[0]?.code ?? plan.text ?? 'unknown', ...(plan.coding?.[0]?.display ? { name: plan.coding[0].display } : {}) }];
  const grp = seg.get(8);
  if (valued(grp)) cov.class = push(cov.class, { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'group' }] }, value: grp, ...(valued(seg.get(9)) ? { name: seg.get(9) } : {}) });
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
      const sub: RelatedPerson = { resourceType: 'RelatedPerson', id: ctx.localId('RelatedPerson', seg, '|IN1-16'), patient: ref(p), name: insured };
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
    cov.extension = push(cov.extension, { url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-subscriberId', valueIdentifier: subId });
  }
  const order = Number(seg.get(22));
  if (Number.isInteger(order) && order > 0) cov.order = order;
  ctx.state.last = ctx.b.add(cov);
};

const in2: Handler = (seg, ctx) => {
  const cov = ctx.state.last;
  if (cov?.resourceType !== 'Coverage') return;
  const ids = all(seg, 1, (r) => cx(r, ctx));
  if (ids.length) (cov as Coverage).identifier = push((cov as Coverage).identifier, ...ids);
};

const gt1: Handler = (seg, ctx) => {
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
function accountFor(ctx: ConvertContext): Account | undefined {
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

const ft1: Handler = (seg, ctx) => {
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
  if (amt !== undefined) ci.priceOverride = { value: amt, ...(/^[A-Z]{3}$/.test(cur) ? { currency: cur as 'USD' } : {}) };
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

// ---------------------------------------------------------------------------------------------
// Orders and results: ORC, OBR, TQ1, OBX, SPM, NTE

function newOrder(ctx: ConvertContext): OrderGroup {
  const g: OrderGroup = { observations: [], specimens: [] };
  ctx.state.order = g;
  ctx.state.medication = undefined;
  if (ctx.state.specimenGroup) g.specimens.push(ctx.state.specimenGroup);
  return g;
}

/** ServiceRequest of the group, created from ORC (+OBR when present). */
function serviceRequest(g: OrderGroup, ctx: ConvertContext, seg: Hl7Segment): ServiceRequest {
  if (g.serviceRequest) return g.serviceRequest as ServiceRequest;
  const orc = g.orc;
  const obr = g.obr;
  const placer = ei(obr?.rep(2), ctx, PLACER()) ?? ei(orc?.rep(2), ctx, PLACER());
  const filler = ei(obr?.rep(3), ctx, FILLER()) ?? ei(orc?.rep(3), ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    id: key ? ctx.b.idFor('ServiceRequest', key) : ctx.localId('ServiceRequest', seg),
    status: 'unknown',
    intent: 'order',
    subject: ctx.subject() ?? { display: 'unknown' },
  };
  const ids = [placer, filler].filter((x): x is Identifier => !!x);
  const grp = orc ? c(orc.rep(4), 1) : '';
  if (valued(grp)) sr.requisition = { type: { coding: [{ system: V2_TABLE('0203'), code: 'PGN' }] }, value: grp };
  if (ids.length) sr.identifier = ids;
  // ORC[ServiceRequest] row 24: ORC-5 order status through OrderStatus; row 3: ORC-1 order control through
  // OrderControlCode[ServiceRequest.status] only IF ORC-5 NOT VALUED (an unmapped ORC-5 stays unknown)
  const st = orc && (valued(orc.get(5)) ? codeOf('OrderStatus', orc.get(5)) : codeOf('OrderControlCode[ServiceRequest.status]', orc.get(1)));
  if (st) sr.status = st as ServiceRequest['status'];
  if (orc && orc.get(1) === 'NW') {
    const authored = ctx.dt(orc.get(9));
    if (authored) sr.authoredOn = authored;
  } else if (orc) {
    const authored = ctx.dt(orc.get(9));
    if (authored) sr.authoredOn = authored;
  }
  const requester = practitioner(orc?.rep(12), ctx) ?? practitioner(obr?.rep(16), ctx) ?? xonOrg(orc?.rep(21), ctx);
  if (requester) sr.requester = requester;
  const oType = orc ? cweMapped(orc.rep(29), 'OrderType', ctx, '0482') : undefined;
  if (oType) sr.locationCode = [oType];
  if (ctx.state.encounter) sr.encounter = ref(ctx.state.encounter);
  const code = obr ? cwe(obr.rep(4), ctx) : undefined;
  sr.code = code ?? (orc ? cwe(orc.rep(16), ctx) : undefined);
  if (!sr.code) delete sr.code;
  if (obr) {
    const prio = codeOf('ExtendedPriorityCodes', obr.get(5)) ?? codeOf('ExtendedPriorityCodes', obr.get(27, 0, 6));
    if (prio) sr.priority = prio as ServiceRequest['priority'];
    const occ = ctx.dt(obr.get(6));
    if (occ) sr.occurrenceDateTime = occ;
    const ac = obr.get(11);
    if (ac === 'G') sr.intent = 'reflex-order';
    const reason = all(obr, 31, (r) => cwe(r, ctx));
    if (reason.length) sr.reasonCode = reason;
    const details = [...all(obr, 46, (r) => cwe(r, ctx)), ...all(obr, 47, (r) => cwe(r, ctx))];
    if (details.length) sr.orderDetail = details;
    const parentPlacer = eiNested(obr.rep(29), 1, ctx, PLACER());
    const parentFiller = eiNested(obr.rep(29), 2, ctx, FILLER());
    const based = [parentPlacer, parentFiller].filter((x): x is Identifier => !!x).map((identifier) => ({ type: 'ServiceRequest', identifier }));
    if (based.length) sr.basedOn = based as ServiceRequest['basedOn'];
    const rr = all(obr, 13, (r) => (valued(c(r, 1)) ? c(r, 1) : undefined));
    if (rr.length) sr.patientInstruction = rr.join('; ');
  }
  if (g.specimens.length) sr.specimen = g.specimens.map((x) => ref(x));
  g.serviceRequest = ctx.b.add(sr) as OrderGroup['serviceRequest'];
  for (const t of g.timing ?? []) applyTq1(t, ctx, g.serviceRequest!);
  g.timing = undefined;
  return g.serviceRequest as ServiceRequest;
}

const orc: Handler = (seg, ctx) => {
  flushOrder(ctx); // an ORC with nothing after it (ORC-only order) still becomes a ServiceRequest
  const g = newOrder(ctx);
  g.orc = seg;
  // the resource is created by what follows (OBR, RXO, RXE, RXA...), or at the next group / the end
  ctx.state.last = undefined;
};

function flushOrder(ctx: ConvertContext): void {
  const g = ctx.state.order;
  if (g && g.orc && !g.serviceRequest && !g.obr && !ctx.state.medication) {
    serviceRequest(g, ctx, g.orc);
  }
}

/** Messages whose OBR is a result (DiagnosticReport): the IG's ORU_R01 / OUL message maps put OBR[DiagnosticReport] there. */
const RESULT_MESSAGES = new Set(['ORU', 'OUL', 'OPL', 'ORL', 'PPR']);
/**
 * Order messages: their OBR is the request only (OBR[ServiceRequest]); no DiagnosticReport is made even when
 * OBR-22/OBR-25 are valued (the IG's ORM_O01, OML_O21, OMG_O19, RDE_O11, MDM_T02 maps list no
 * OBR[DiagnosticReport]); their OBX stay the order's supportingInfo.
 */
const ORDER_MESSAGES = new Set(['ORM', 'OML', 'OMG', 'OMI', 'OMB', 'OMD', 'OMN', 'OMP', 'OMS', 'OMQ', 'MDM', 'RDE', 'RDS', 'RGV', 'RAS', 'SIU', 'SRM', 'REF', 'RRI']);
const makesReport = (seg: Hl7Segment, ctx: ConvertContext) =>
  RESULT_MESSAGES.has(ctx.messageCode) || (!ORDER_MESSAGES.has(ctx.messageCode) && (valued(seg.get(25)) || valued(seg.get(22))));

const obr: Handler = (seg, ctx) => {
  // OBR[ServiceRequest] + OBR[DiagnosticReport] (results)
  let g = ctx.state.order;
  if (!g || g.obr || !g.orc || g.serviceRequest || ctx.state.medication) {
    if (g) flushOrder(ctx);
    g = newOrder(ctx);
  }
  g.obr = seg;
  const sr = serviceRequest(g, ctx, seg);
  ctx.state.last = sr;
  if (makesReport(seg, ctx)) {
    const placer = ei(seg.rep(2), ctx, PLACER()) ?? ei(g.orc?.rep(2), ctx, PLACER());
    const filler = ei(seg.rep(3), ctx, FILLER()) ?? ei(g.orc?.rep(3), ctx, FILLER());
    const key = idKey(filler, ctx) ?? idKey(placer, ctx);
    const status = codeOf('ResultStatus[Non-Queries]', seg.get(25));
    const dr: DiagnosticReport = {
      resourceType: 'DiagnosticReport',
      id: key ? ctx.b.idFor('DiagnosticReport', key) : ctx.localId('DiagnosticReport', seg),
      status: (status as DiagnosticReport['status']) ?? 'unknown',
      code: cwe(seg.rep(4), ctx) ?? { text: 'unknown' },
      basedOn: [ref(sr)],
    };
    const ids = [placer, filler].filter((x): x is Identifier => !!x);
    if (ids.length) dr.identifier = ids;
    if (ctx.state.patient) dr.subject = ref(ctx.state.patient);
    if (ctx.state.encounter) dr.encounter = ref(ctx.state.encounter);
    const start = ctx.dt(seg.get(7));
    const end = ctx.dt(seg.get(8));
    if (start && end) dr.effectivePeriod = { start, end };
    else if (start) dr.effectiveDateTime = start;
    const issued = ctx.instant(seg.get(22));
    if (issued && /T/.test(ctx.dt(seg.get(22)) ?? '')) dr.issued = issued;
    const cat = cweMapped([[seg.get(24)]], 'DiagnosticServiceSectionID', ctx, '0074');
    if (cat && valued(seg.get(24))) dr.category = [cat];
    const interp = practitioner(ndlToXcn(seg.rep(32)), ctx);
    if (interp) dr.resultsInterpreter = [interp];
    const perf = [practitioner(ndlToXcn(seg.rep(34)), ctx), practitioner(ndlToXcn(seg.rep(35)), ctx)].filter((x): x is Ref => !!x);
    if (perf.length) dr.performer = perf;
    if (g.specimens.length) dr.specimen = g.specimens.map((x) => ref(x));
    g.report = ctx.b.add(dr) as OrderGroup['report'];
    ctx.state.last = g.report;
  }
  // OBR-15 specimen source (v2.3-2.4) -> Specimen
  const spSrc = cwe(nest(seg.rep(15), 1), ctx);
  if (spSrc) {
    const sp: Specimen = { resourceType: 'Specimen', id: ctx.localId('Specimen', seg), type: spSrc };
    if (ctx.state.patient) sp.subject = ref(ctx.state.patient);
    const coll = ctx.dt(seg.get(7));
    if (coll) sp.collection = { collectedDateTime: coll };
    attachSpecimen(g, ctx.b.add(sp));
  }
};

/** NDL (name^start^end^poc^room^bed...): its first component is a CNN with subcomponents. */
function ndlToXcn(r: Hl7Rep): Hl7Rep | undefined {
  const cnn = r[0];
  if (!cnn || !cnn.some(valued)) return undefined;
  return cnn.map((s) => [s]);
}

function attachSpecimen(g: OrderGroup, sp: Resource): void {
  g.specimens.push(sp);
  const r = ref(sp);
  if (g.serviceRequest) (g.serviceRequest as ServiceRequest).specimen = push((g.serviceRequest as ServiceRequest).specimen, r);
  if (g.report) (g.report as DiagnosticReport).specimen = push((g.report as DiagnosticReport).specimen, r);
  for (const o of g.observations) if (!(o as Observation).specimen) (o as Observation).specimen = r;
}

const tq1: Handler = (seg, ctx) => {
  // TQ1[ServiceRequest] / TQ1[MedicationRequest]; in OML/ORM the TQ1 comes between ORC and OBR: kept until the request exists
  const target = ctx.state.medication ?? ctx.state.order?.serviceRequest;
  if (!target) {
    if (ctx.state.order) (ctx.state.order.timing ??= []).push(seg);
    return;
  }
  applyTq1(seg, ctx, target);
};

function applyTq1(seg: Hl7Segment, ctx: ConvertContext, target: Resource): void {
  const start = ctx.dt(seg.get(7));
  const end = ctx.dt(seg.get(8));
  const prio = codeOf('ExtendedPriorityCodes', seg.get(9, 0, 1));
  if (target.resourceType === 'ServiceRequest') {
    const sr = target as ServiceRequest;
    if (start && end) {
      delete sr.occurrenceDateTime;
      sr.occurrencePeriod = { start, end };
    } else if (start && !sr.occurrenceDateTime) sr.occurrenceDateTime = start;
    if (prio) sr.priority = prio as ServiceRequest['priority'];
    const qty = decimal(seg.get(2, 0, 1));
    if (qty !== undefined && qty >= 0) sr.quantityQuantity = { value: qty };
  } else if (target.resourceType === 'MedicationRequest') {
    const mr = target as MedicationRequest;
    if (prio) mr.priority = prio as MedicationRequest['priority'];
    const text = seg.get(11);
    const bounds = start ? compact({ start, end }) : undefined;
    const rep = c(seg.rep(3), 1);
    if (bounds || valued(text) || valued(rep)) {
      const d = (mr.dosageInstruction ??= [{}])[0];
      d.timing = compact({ ...(d.timing ?? {}), repeat: bounds ? { boundsPeriod: bounds } : undefined, code: valued(rep) ? { coding: [{ system: V2_TABLE('0335'), code: codeStr(rep) }] } : undefined });
      if (valued(text)) d.text = text;
    }
  }
}

/** The value[x] elements an Observation and an Observation.component share. */
type ObsValue = Pick<
  Observation,
  'valueQuantity' | 'valueCodeableConcept' | 'valueString' | 'valueRange' | 'valueRatio' | 'valueDateTime' | 'valueTime' | 'valuePeriod' | 'extension'
>;

/**
 * The R5 `Observation.value[x]` backported to R4 (R5 allows Attachment): OBX[Observation] rows 26-27 (ED) and
 * 29-30 (RP) name it `extension-Observation.valueAttachment`; the cross-version extension's canonical URL for
 * the choice element is `http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value`.
 */
export const OBSERVATION_VALUE_ATTACHMENT = 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value';

/** OBX-5 text types (OBX[Observation] row 8 -> valueString; OBX[Observation-Component] row 10 -> component[each].valueString). */
const TEXT_TYPES = new Set(['ST', 'TX', 'FT']);

/**
 * One OBX-5 text repetition as sent: a ST/TX/FT value has no components, so a component or subcomponent
 * separator inside it is text the sender did not escape; it is kept as the message's own separator
 * character (nothing after the first `^` is lost). Escaped separators (`\S\`) were decoded by the reader.
 */
export function repText(r: Hl7Rep, seg: Hl7Segment): string {
  const d = seg.delimiters;
  return r.length === 1 && r[0].length === 1 ? r[0][0] : r.map((comp) => comp.join(d.subcomponent || '&')).join(d.component);
}

/**
 * OBX-5 -> Observation.value[x] by OBX-2 (OBX[Observation] rows 7-30). A repeating OBX-5 of any type (text
 * types too, below) keeps every repetition: one `component` per repetition with OBX-3 as its code and the value mapped
 * the same way (OBX[Observation-Component] rows 6 and 8-32: `component[each].code` = OBX-3,
 * `component[each].value[x]` = OBX-5 by OBX-2), so `60~120` NM becomes two valueQuantity components and a
 * coded OBX-5 loses none of its codes.
 */
function observationValue(o: Observation, seg: Hl7Segment, ctx: ConvertContext): void {
  const vt = seg.get(2).toUpperCase();
  const reps = seg.reps(5);
  if (!reps[0]) return;
  const u = seg.rep(6);
  if (TEXT_TYPES.has(vt)) {
    // ORU_R01 message map rows 4.2.4.3.1: OBX-5 LST.count <= 1 -> OBX[Observation] row 8 valueString; > 1 ->
    // OBX[Observation-Component] row 10 component[each].valueString (code = OBX-3, row 6): each repetition (a TX/FT
    // line, a ST value) is its own component, none joined into another and none dropped; blank repetitions
    // (empty lines) carry no value and make no component
    const texts = reps.map((r) => repText(r, seg)).filter(valued);
    if (texts.length === 1) o.valueString = texts[0];
    else if (texts.length > 1) o.component = texts.map((t) => ({ code: o.code, valueString: t }));
    return;
  }
  const values = reps.map((r) => {
    const v: ObsValue = {};
    oneValue(v, vt, r, u, ctx);
    return v;
  }).filter((v) => Object.keys(v).length > 0);
  if (values.length === 1) Object.assign(o, values[0].extension ? { ...values[0], extension: push(o.extension, ...values[0].extension) } : values[0]);
  else if (values.length > 1) o.component = values.map((v) => ({ code: o.code, ...v }));
}

/** One OBX-5 repetition -> value[x] (or the attachment extension) on an Observation or a component. */
function oneValue(o: ObsValue, vt: string, first: Hl7Rep, u: Hl7Rep, ctx: ConvertContext): void {
  switch (vt) {
    case 'NM': {
      // OBX[Observation] row 7 NM[Quantity], row 31 OBX-6 units
      const v = decimal(c(first, 1));
      if (v !== undefined) o.valueQuantity = units({ value: v }, u, ctx);
      else if (valued(c(first, 1))) o.valueString = c(first, 1);
      return;
    }
    case 'CE':
    case 'CWE':
    case 'CNE':
    case 'CF':
    case 'IS':
    case 'ID':
    case 'CK':
    case 'CN': {
      // rows 9-13 CWE/CNE/CE/CF/IS[CodeableConcept]
      const cc = vt === 'IS' || vt === 'ID' ? (valued(c(first, 1)) ? { coding: [{ code: codeStr(c(first, 1)) }] } : undefined) : cwe(first, ctx);
      if (cc) o.valueCodeableConcept = cc;
      return;
    }
    case 'CX': {
      const id = cx(first, ctx);
      if (id?.value) o.valueString = id.value;
      return;
    }
    case 'SN': {
      // rows 19-24, OBX-6 rows 32-36
      const v = sn(first);
      if (!v) return;
      if (v.kind === 'quantity') o.valueQuantity = units(v.q, u, ctx);
      else if (v.kind === 'range') o.valueRange = { low: units(v.r.low!, u, ctx), high: units(v.r.high!, u, ctx) };
      else if (v.kind === 'ratio') o.valueRatio = { numerator: units(v.r.numerator!, u, ctx), denominator: units(v.r.denominator!, u, ctx) };
      else o.valueString = v.s;
      return;
    }
    case 'NR': {
      // row 16 NR[Range]
      const r = nr(first);
      if (r) o.valueRange = r;
      return;
    }
    case 'DT':
    case 'DTM':
    case 'TS': {
      // row 15
      const d = ctx.dt(c(first, 1));
      if (d) o.valueDateTime = d;
      else if (valued(c(first, 1))) o.valueString = c(first, 1);
      return;
    }
    case 'TM': {
      // row 18
      const m = /^(\d{2})(\d{2})?(\d{2})?/.exec(c(first, 1));
      if (m && +m[1] < 24 && +(m[2] ?? 0) < 60 && +(m[3] ?? 0) < 60) o.valueTime = `${m[1]}:${m[2] ?? '00'}:${m[3] ?? '00'}`;
      return;
    }
    case 'DR': {
      // row 14 DR[Period]
      const p = dr(first, ctx);
      if (p) o.valuePeriod = p;
      return;
    }
    case 'ED': {
      // rows 26-27: extension valueAttachment = ED[Attachment] (base64 data + content type); no value[x]
      const a = ed(first);
      if (a) o.extension = push(o.extension, { url: OBSERVATION_VALUE_ATTACHMENT, valueAttachment: a });
      return;
    }
    case 'RP': {
      // rows 29-30: extension valueAttachment = RP[Attachment] (url + content type); no value[x]
      const a = rp(first);
      if (a) o.extension = push(o.extension, { url: OBSERVATION_VALUE_ATTACHMENT, valueAttachment: a });
      return;
    }
    default: {
      const text = first.map((comp) => comp.filter(valued).join(' ')).filter(valued).join(' ');
      if (valued(text)) o.valueString = text;
    }
  }
}

const obx: Handler = (seg, ctx) => {
  const st = ctx.state;
  // MDM: OBX under TXA carry the document body
  if (st.document && ctx.messageCode === 'MDM') {
    const vt = seg.get(2).toUpperCase();
    if (vt === 'ED') {
      const a = ed(seg.rep(5));
      if (a) (st.document as DocumentReference).content.push({ attachment: a });
    } else if (vt === 'RP') {
      const a = rp(seg.rep(5));
      if (a) (st.document as DocumentReference).content.push({ attachment: a });
    } else {
      const t = seg.reps(5).map((r) => repText(r, seg)).join('\n');
      (st.documentText ??= []).push(t);
    }
    return;
  }
  // OBX[Observation]
  const g = st.order;
  const parent = g?.report ?? g?.serviceRequest;
  const code = cwe(seg.rep(3), ctx) ?? { text: 'unknown' };
  const sub = seg.get(4);
  const filler = g?.report?.identifier?.find((i) => i.type?.coding?.[0]?.code === 'FILL') ?? (g?.serviceRequest && (g.serviceRequest as ServiceRequest).identifier?.[0]);
  const key = filler?.value ? `${filler.system ?? `scope:${ctx.scope}`}|${filler.value}|${code.coding?.[0]?.code ?? code.text}|${sub}|${seg.get(1)}` : undefined;
  const status = codeOf('ObservationResultStatusCodesInterpretation', seg.get(11));
  const o: Observation = {
    resourceType: 'Observation',
    id: key ? ctx.b.idFor('Observation', key) : ctx.localId('Observation', seg),
    status: (status as Observation['status']) ?? (valued(seg.get(11)) ? 'unknown' : 'final'),
    code,
  };
  if (seg.get(11) === 'X') (o as Observation & { _status?: unknown })._status = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'not-performed' }] };
  if (ctx.state.patient) o.subject = ref(ctx.state.patient);
  if (ctx.state.encounter) o.encounter = ref(ctx.state.encounter);
  if (valued(sub)) o.extension = [{ url: 'http://hl7.org/fhir/StructureDefinition/observation-v2-subid', valueString: sub }];
  observationValue(o, seg, ctx);
  const rr = seg.get(7);
  if (valued(rr)) {
    const m = /^\s*([-+]?\d*\.?\d+)\s*-\s*([-+]?\d*\.?\d+)\s*$/.exec(rr);
    const lo = m ? decimal(m[1]) : undefined;
    const hi = m ? decimal(m[2]) : undefined;
    o.referenceRange = [{ ...(lo !== undefined && hi !== undefined ? { low: { value: lo }, high: { value: hi } } : {}), text: rr }];
  }
  const interp = all(seg, 8, (r) => {
    const m = mapCode('InterpretationCodes', c(r, 1));
    if (!m) return cwe(r, ctx);
    return { coding: [{ system: m.system, code: m.code, ...(m.display ? { display: m.display } : {}) }], ...(valued(c(r, 2)) ? { text: c(r, 2) } : {}) };
  });
  if (interp.length) o.interpretation = interp;
  const eff = ctx.dt(seg.get(14)) ?? (g?.obr ? ctx.dt(g.obr.get(7)) : undefined);
  if (eff) o.effectiveDateTime = eff;
  // OBX[Observation] rows 58-59: OBX-19 date/time of the analysis -> extension observation-analysis-date-time (the IG
  // maps no OBX field to issued: the analysis is not the release; the report's OBR-22 is DiagnosticReport.issued)
  const analysed = ctx.dt(seg.get(19));
  if (analysed) o.extension = push(o.extension, { url: 'http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time', valueDateTime: analysed });
  // rows 74-75: OBX-29 observation type -> category (v2-0936)
  const otype = codeStr(seg.get(29));
  if (otype) o.category = [{ coding: [{ system: V2_TABLE('0936'), code: otype }] }];
  const performers = [...all(seg, 16, (r) => practitioner(r, ctx)), xonOrg(seg.rep(23), ctx)].filter((x): x is Ref => !!x);
  if (performers.length) o.performer = performers;
  const method = cwe(seg.rep(17), ctx);
  if (method) o.method = method;
  const site = cwe(seg.rep(20), ctx);
  if (site) o.bodySite = site;
  const device = all(seg, 18, (r) => ei(r, ctx));
  if (device.length) o.device = { identifier: device[0] };
  const instance = ei(seg.rep(21), ctx, FILLER()); // OBX-21 observation instance identifier (type FILL)
  if (instance) o.identifier = [instance];
  const nature = all(seg, 10, (r) => isCode(c(r, 1), '0080'));
  if (nature.length) o.extension = push(o.extension, ...nature.map((cc) => ({ url: 'http://hl7.org/fhir/StructureDefinition/observation-nature-of-abnormal-test', valueCodeableConcept: cc })));
  if (g?.serviceRequest) o.basedOn = [ref(g.serviceRequest)];
  if (g?.specimens.length) o.specimen = ref(g.specimens[0]);
  else if (!g && st.specimenGroup) o.specimen = ref(st.specimenGroup); // OBX directly under SPM (specimen observations)
  if (!parent && st.medication?.resourceType === 'Immunization') o.partOf = [ref(st.medication)];
  const added = ctx.b.add(o);
  if (g?.report) (g.report as DiagnosticReport).result = push((g.report as DiagnosticReport).result, ref(added));
  else if (g?.serviceRequest) (g.serviceRequest as ServiceRequest).supportingInfo = push((g.serviceRequest as ServiceRequest).supportingInfo, ref(added));
  g?.observations.push(added);
  st.last = added;
};

const spm: Handler = (seg, ctx) => {
  // SPM[Specimen]
  const placer = eiNested(seg.rep(2), 1, ctx, PLACER());
  const filler = eiNested(seg.rep(2), 2, ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const sp: Specimen = { resourceType: 'Specimen', id: key ? ctx.b.idFor('Specimen', key) : ctx.localId('Specimen', seg) };
  const ids = [placer, filler, ...all(seg, 31, (r) => cx(r, ctx))].filter((x): x is Identifier => !!x);
  if (ids.length) sp.identifier = ids;
  const acc = cx(seg.rep(30), ctx);
  if (acc) sp.accessionIdentifier = acc;
  const type = cwe(seg.rep(4), ctx);
  if (type) sp.type = type;
  if (ctx.state.patient) sp.subject = ref(ctx.state.patient);
  const coll: NonNullable<Specimen['collection']> = {};
  const method = cwe(seg.rep(7), ctx);
  if (method) coll.method = method;
  const site = cwe(seg.rep(8), ctx);
  if (site) coll.bodySite = site;
  const q = decimal(seg.get(12, 0, 1));
  if (q !== undefined) coll.quantity = units({ value: q }, nest(seg.rep(12), 2), ctx);
  const period = dr(seg.rep(17), ctx);
  if (period?.end) coll.collectedPeriod = period;
  else if (period?.start) coll.collectedDateTime = period.start;
  if (Object.keys(coll).length) sp.collection = coll;
  const recv = ctx.dt(seg.get(18));
  if (recv) sp.receivedTime = recv;
  const avail = seg.get(20);
  if (avail === 'Y') sp.status = 'available';
  else if (avail === 'N') sp.status = 'unavailable';
  const cond = all(seg, 24, (r) => cwe(r, ctx));
  if (cond.length) sp.condition = cond;
  const ctype = cwe(seg.rep(27), ctx);
  const additive = cwe(seg.rep(6), ctx);
  if (ctype || additive) sp.container = [compact({ type: ctype, additiveCodeableConcept: additive })!];
  const desc = seg.get(14);
  if (valued(desc)) sp.note = [{ text: desc }];
  const added = ctx.b.add(sp);
  if (SPECIMEN_FIRST.has(ctx.trigger)) {
    // OUL^R22/R23, OML^O33/O35: SPM heads its group; the orders that follow belong to this specimen
    ctx.state.order = undefined;
    ctx.state.specimenGroup = added;
  } else if (ctx.state.order) attachSpecimen(ctx.state.order, added);
  ctx.state.specimen = added;
  ctx.state.last = added;
};

/** Message structures where the specimen group contains the orders (OUL_R22, OUL_R23, OML_O33, OML_O35). */
const SPECIMEN_FIRST = new Set(['R22', 'R23', 'O33', 'O35']);

const nte: Handler = (seg, ctx) => {
  // NTE -> note on the resource the segment above created
  // NTE-3 (FT, repeating): each repetition a line; a separator inside the text kept as the message's own (repText)
  const text = seg.reps(3).map((r) => repText(r, seg)).join('\n');
  if (!valued(text)) return;
  const target = ctx.state.last;
  if (!target) return;
  const note: Annotation = { text };
  const author = practitioner(seg.rep(5), ctx);
  if (author) note.authorReference = author;
  const time = ctx.dt(seg.get(6));
  if (time) note.time = time;
  const withNote = ['ServiceRequest', 'Observation', 'AllergyIntolerance', 'Condition', 'Procedure', 'Immunization', 'MedicationRequest', 'MedicationDispense', 'Specimen', 'ChargeItem'];
  if (withNote.includes(target.resourceType)) {
    const t = target as { note?: Annotation[] };
    t.note = push(t.note, note);
  } else if (target.resourceType === 'Appointment') {
    const a = target as Appointment;
    a.comment = a.comment ? `${a.comment}\n${text}` : text;
    // NTE[Appointment-Comment] rows 5-6: NTE-3 -> extension-Appointment.note valueAnnotation (R5 Appointment.note,
    // which keeps the author and time R4's comment string cannot)
    a.extension = push(a.extension, { url: 'http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note', valueAnnotation: note });
  } else if (target.resourceType === 'DiagnosticReport') {
    const d = target as DiagnosticReport;
    d.conclusion = d.conclusion ? `${d.conclusion}\n${text}` : text;
  } else if (target.resourceType === 'DocumentReference') {
    const d = target as DocumentReference;
    d.description = d.description ? `${d.description}\n${text}` : text;
  }
};

// ---------------------------------------------------------------------------------------------
// Referrals: RF1, PRD (REF/RRI messages). The IG has no segment map for them; mapped the way a clinician
// reads a referral: the referral is a ServiceRequest (category SNOMED 3457005 "Patient referral"), each
// provider a PractitionerRole (referring -> requester, referred-to/consulting -> performer, primary care ->
// the patient's general practitioner).

const RF1_STATUS: Record<string, ServiceRequest['status']> = { A: 'active', P: 'active', R: 'revoked', E: 'revoked' };
/** A CWE of an HL7 table with no IG concept map: the table's code system when CWE-3 names none. */
function tableCwe(r: Hl7Rep | undefined, ctx: ConvertContext, table: string): CodeableConcept | undefined {
  const cc = cwe(r, ctx);
  if (cc?.coding?.length && !c(r, 3) && cc.coding[0].code) cc.coding[0].system = V2_TABLE(table);
  return cc;
}

const rf1: Handler = (seg, ctx) => {
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
  const reasons = [...all(seg, 10, (r) => tableCwe(r, ctx, '0336')), ...all(seg, 14, (r) => (valued(c(r, 1)) ? { text: c(r, 1) } : undefined))];
  if (reasons.length) sr.reasonCode = reasons;
  const units = decimal(seg.get(15)); // RF1-15 number of authorized treatments/units
  if (units !== undefined && units >= 0) sr.quantityQuantity = { value: units };
  if (ctx.state.encounter) sr.encounter = ref(ctx.state.encounter);
  ctx.state.referral = ctx.b.add(sr);
  ctx.state.last = ctx.state.referral;
};

const prd: Handler = (seg, ctx) => {
  // PRD-2 name (XPN), PRD-3 address, PRD-5 telecom, PRD-7 identifiers (PLN: id^type^state^expiration) -> Practitioner
  const idsOf = all(seg, 7, (r) =>
    valued(c(r, 1)) ? compact<Identifier>({ type: valued(c(r, 2)) ? { coding: [{ system: V2_TABLE('0338'), code: codeStr(c(r, 2)) }] } : undefined, system: ctx.systems.identifier(c(r, 2) ? `${c(r, 2)}${c(r, 3) ? `-${c(r, 3)}` : ''}` : undefined), value: c(r, 1), period: valued(c(r, 4)) ? { end: ctx.dt(c(r, 4)) } : undefined }) : undefined,
  );
  const nm = names(seg, 2, ctx);
  if (!idsOf.length && !nm.length) return;
  const key = idsOf[0]?.value ? `id|${idsOf[0].system ?? `scope:${ctx.scope}`}|${idsOf[0].value}` : `name|${seg.get(2)}`;
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

// ---------------------------------------------------------------------------------------------
// Pharmacy and immunization: RXO, RXE, RXR, RXA, RXD, RXG

function medicationRequest(seg: Hl7Segment, ctx: ConvertContext, codeField: number): MedicationRequest {
  let g = ctx.state.order;
  if (!g || ctx.state.medication || g.obr) g = newOrder(ctx);
  const orc = g.orc;
  const placer = ei(orc?.rep(2), ctx, PLACER());
  const filler = ei(orc?.rep(3), ctx, FILLER());
  const key = idKey(filler, ctx) ?? idKey(placer, ctx);
  const med = cwe(seg.rep(codeField), ctx) ?? { text: 'unknown' };
  const st = orc && (codeOf('OrderStatus', orc.get(5)) ?? codeOf('OrderControlCode[ServiceRequest.status]', orc.get(1)));
  const mrStatus: Record<string, MedicationRequest['status']> = { active: 'active', completed: 'completed', revoked: 'cancelled', 'on-hold': 'on-hold', 'entered-in-error': 'entered-in-error', draft: 'draft', unknown: 'unknown' };
  const mr: MedicationRequest = {
    resourceType: 'MedicationRequest',
    id: key ? ctx.b.idFor('MedicationRequest', key) : ctx.localId('MedicationRequest', seg),
    status: (st && mrStatus[st]) || (orc?.get(1) === 'CA' || orc?.get(1) === 'DC' ? 'cancelled' : orc?.get(1) === 'NW' ? 'active' : 'unknown'),
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

const rxo: Handler = (seg, ctx) => {
  // RXO[MedicationRequest]
  const mr = medicationRequest(seg, ctx, 1);
  const lo = decimal(seg.get(2));
  const hi = decimal(seg.get(3));
  const unit = seg.rep(4);
  if (lo !== undefined) {
    const dose = hi !== undefined && hi !== lo ? { doseRange: { low: units({ value: lo }, unit, ctx), high: units({ value: hi }, unit, ctx) } } : { doseQuantity: units({ value: lo }, unit, ctx) };
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

const rxe: Handler = (seg, ctx) => {
  // RXE (pharmacy encoded order) -> MedicationRequest
  const mr = medicationRequest(seg, ctx, 2);
  const lo = decimal(seg.get(3));
  const hi = decimal(seg.get(4));
  const unit = seg.rep(5);
  const d = { ...(mr.dosageInstruction?.[0] ?? {}) };
  if (lo !== undefined) d.doseAndRate = [hi !== undefined && hi !== lo ? { doseRange: { low: units({ value: lo }, unit, ctx), high: units({ value: hi }, unit, ctx) } } : { doseQuantity: units({ value: lo }, unit, ctx) }];
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
  if (valued(rx)) mr.identifier = push(mr.identifier, { type: { coding: [{ system: V2_TABLE('0203'), code: 'RXN' }] }, value: rx });
};

const rxr: Handler = (seg, ctx) => {
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

const rxa: Handler = (seg, ctx) => {
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
    ...performer.map((actor) => ({ function: { coding: [{ system: V2_TABLE('0443'), code: 'AP', display: 'Administering Provider' }] }, actor })),
    ...(orderer ? [{ function: { coding: [{ system: V2_TABLE('0443'), code: 'OP', display: 'Ordering Provider' }] }, actor: orderer }] : []),
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

const rxd: Handler = (seg, ctx) => {
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

const rxg: Handler = (seg, ctx) => {
  // RXG (give) -> MedicationRequest dosage of the current order
  const mr = ctx.state.medication?.resourceType === 'MedicationRequest' ? (ctx.state.medication as MedicationRequest) : undefined;
  if (!mr) return;
  const lo = decimal(seg.get(5));
  if (lo !== undefined) mr.dosageInstruction = [{ ...(mr.dosageInstruction?.[0] ?? {}), doseAndRate: [{ doseQuantity: units({ value: lo }, seg.rep(7), ctx) }] }];
};

// ---------------------------------------------------------------------------------------------
// Scheduling: SCH, RGS, AIS, AIG, AIL, AIP

const sch: Handler = (seg, ctx) => {
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
    if (who) a.participant.push({ actor: who, type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code, display }] }], status: 'accepted' });
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

function apptParticipant(ctx: ConvertContext, p: AppointmentParticipant, seg: Hl7Segment, startField: number, offsetField: number, durField: number): void {
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
  const m: Record<string, AppointmentParticipant['status']> = { Booked: 'accepted', Confirmed: 'accepted', Pending: 'tentative', Cancelled: 'declined', Deleted: 'declined', Blocked: 'declined', Waitlist: 'needs-action', Overbook: 'accepted', Started: 'accepted', Complete: 'accepted', Noshow: 'declined' };
  return m[code] ?? 'accepted';
};

const ais: Handler = (seg, ctx) => {
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

const aig: Handler = (seg, ctx) => {
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
  apptParticipant(ctx, compact({ type: t ? [t] : undefined, actor, status: aipStatus(seg.get(14, 0, 1)) })!, seg, 8, 9, 10);
};

const ail: Handler = (seg, ctx) => {
  // AIL[Appointment]: a location
  const loc = location(seg.rep(3), ctx);
  if (!loc) return;
  apptParticipant(ctx, { actor: loc, status: aipStatus(seg.get(12, 0, 1)) }, seg, 6, 7, 8);
};

const aip: Handler = (seg, ctx) => {
  // AIP[Appointment]: a person
  const who = practitioner(seg.rep(3), ctx);
  if (!who) return;
  const role = cwe(seg.rep(4), ctx);
  apptParticipant(ctx, compact({ actor: who, type: role ? [role] : undefined, status: aipStatus(seg.get(12, 0, 1)) })!, seg, 6, 7, 8);
};

// ---------------------------------------------------------------------------------------------
// Documents: TXA

const txa: Handler = (seg, ctx) => {
  // TXA[DocumentReference]
  const master = ei(seg.rep(12), ctx);
  const key = idKey(master, ctx);
  const avail = seg.get(19);
  const d: DocumentReference = {
    resourceType: 'DocumentReference',
    id: key ? ctx.b.idFor('DocumentReference', key) : ctx.localId('DocumentReference', seg),
    status: avail === 'OB' || avail === 'UN' ? 'superseded' : avail === 'CA' ? 'entered-in-error' : 'current',
    content: [],
  };
  if (master) d.masterIdentifier = master;
  const uid = seg.get(16);
  if (valued(uid)) d.identifier = [{ value: uid }];
  const type = cwe(seg.rep(2), ctx) ?? isCode(seg.get(2), '0270');
  if (type) d.type = type;
  const docStatus: Record<string, DocumentReference['docStatus']> = { AU: 'final', LA: 'final', DI: 'preliminary', DO: 'preliminary', IP: 'preliminary', IN: 'preliminary', PA: 'preliminary' };
  const ds = docStatus[seg.get(17)];
  if (ds) d.docStatus = ds;
  const date = ctx.instant(seg.get(6)) ?? ctx.instant(seg.get(4));
  if (date) d.date = date;
  if (ctx.state.patient) d.subject = ref(ctx.state.patient);
  const authors = all(seg, 9, (r) => practitioner(r, ctx));
  if (authors.length) d.author = authors;
  const auth = practitioner(seg.rep(10), ctx);
  if (auth) d.authenticator = auth;
  const conf = seg.get(18);
  if (valued(conf)) {
    const m = mapCode('DocumentConfidentialityStatus', conf);
    d.securityLabel = [{ coding: [m ? { system: m.system, code: m.code } : { system: V2_TABLE('0272'), code: conf }] }];
  }
  const desc = seg.get(25);
  if (valued(desc)) d.description = desc;
  // MDM T05/T06/T09/T10 (addendum / replacement): TXA-13 parent document
  const parent = ei(seg.rep(13), ctx);
  if (parent) {
    const code = ctx.trigger === 'T05' || ctx.trigger === 'T06' ? 'appends' : ctx.trigger === 'T09' || ctx.trigger === 'T10' ? 'replaces' : 'transforms';
    d.relatesTo = [{ code, target: { identifier: parent, type: 'DocumentReference' } }];
  }
  const related = ctx.state.order?.serviceRequest; // MDM COMMON_ORDER: the order the document answers
  if (ctx.state.encounter || related)
    d.context = { ...(ctx.state.encounter ? { encounter: [ref(ctx.state.encounter)] } : {}), ...(related ? { related: [ref(related)] } : {}) };
  const contentType = seg.get(3);
  d.content.push({ attachment: { contentType: (contentType ? mimeCode(mimeOf(contentType)) : undefined) ?? 'text/plain', ...(valued(seg.get(23)) ? { title: seg.get(23) } : {}) } });
  ctx.state.document = ctx.b.add(d);
  ctx.state.documentText = [];
  ctx.state.last = ctx.state.document;
};

function mimeOf(v: string): string {
  if (v.includes('/')) return v.toLowerCase();
  const m: Record<string, string> = { TX: 'text/plain', FT: 'text/plain', TEXT: 'text/plain', ST: 'text/plain', HTML: 'text/html', PDF: 'application/pdf', RTF: 'text/rtf', XML: 'text/xml', AP: 'application/octet-stream' };
  return m[v.toUpperCase()] ?? 'text/plain';
}

// ---------------------------------------------------------------------------------------------

export const SEGMENT_HANDLERS: Record<string, Handler> = {
  MSH: msh,
  SFT: sft,
  EVN: evn,
  PID: pid,
  PD1: pd1,
  NK1: nk1,
  MRG: mrg,
  PV1: pv1,
  PV2: pv2,
  DG1: dg1,
  PRB: prb,
  PR1: pr1,
  AL1: al1,
  IAM: iam,
  ROL: rol,
  IN1: in1,
  IN2: in2,
  GT1: gt1,
  FT1: ft1,
  ORC: orc,
  OBR: obr,
  TQ1: tq1,
  OBX: obx,
  SPM: spm,
  NTE: nte,
  RXO: rxo,
  RXE: rxe,
  RXR: rxr,
  RXA: rxa,
  RXD: rxd,
  RXG: rxg,
  SCH: sch,
  RGS: (_s, ctx) => {
    ctx.state.last = ctx.state.appointment;
  },
  AIS: ais,
  AIG: aig,
  AIL: ail,
  AIP: aip,
  TXA: txa,
  RF1: rf1,
  PRD: prd,
  // IN3-21 case manager -> the patient's CareTeam (IN3[CareTeam], segments/care-team.ts)
  IN3: (seg, ctx) => void (ctx.state.patient && in3CareTeam(seg, ctx.state.patient, ctx)),
  // segments known to the walker but carrying nothing the canonical model keeps
  RXC: () => undefined,
  PRT: prt,
};

// ---------------------------------------------------------------------------------------------
// Message-level: event semantics, Provenance, kept segments

export function finishMessage(ctx: ConvertContext): void {
  flushOrder(ctx);
  const st = ctx.state;
  // REF/RRI: RF1 and PRD come before PID; the referral's subject and the primary care providers are the patient's
  if (st.patient) {
    const sr = st.referral as ServiceRequest | undefined;
    if (sr && !sr.subject.reference) sr.subject = ref(st.patient);
    if (st.primaryCare) st.patient.generalPractitioner = push(st.patient.generalPractitioner, ...(st.primaryCare as Ref[]));
  }
  // MDM: OBX text becomes the document's content
  if (st.document && st.documentText?.length) {
    const d = st.document as DocumentReference;
    const text = st.documentText.join('\n');
    d.content = [{ attachment: { ...d.content[0].attachment, contentType: 'text/plain', data: Buffer.from(text, 'utf8').toString('base64') } }, ...d.content.slice(1)];
  }
  if (st.document && (st.document as DocumentReference).content.length > 1 && !(st.document as DocumentReference).content[0].attachment.data) {
    (st.document as DocumentReference).content.shift();
  }
  eventSemantics(ctx);
  // kept Z-/unknown segments
  if (st.kept.length && ctx.header) {
    ctx.header.extension = st.kept.map((s) => ({ url: FERRY_SEGMENT_EXTENSION, valueString: segmentText(s) }));
  }
  // MessageHeader.focus: the primary resources
  const focus = ctx.b
    .resources()
    .filter((r) => r !== ctx.header && r !== ctx.provenance && ['Patient', 'Encounter', 'DiagnosticReport', 'ServiceRequest', 'Appointment', 'DocumentReference', 'Immunization', 'MedicationRequest'].includes(r.resourceType));
  if (ctx.header && focus.length) ctx.header.focus = focus.map((r) => ref(r));
  messageProvenance(ctx);
}

const PARTICIPANT_TYPE = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';
/** The converter's own version (the package's), recorded as the Provenance assembler. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const FERRY_VERSION: string = (require('../../package.json') as { version: string }).version;

/**
 * One Provenance per converted message, targeting every resource the message produced:
 * - the event: EVN[Provenance] (row 3 activity display "event - :" MSG.1^MSG.2, row 5 EVN-2 recorded, rows 7-9
 *   EVN-4 reason, row 10 EVN-5 agent, row 11 EVN-6 occurred, row 12 EVN-7 location); without EVN the message
 *   time: MSH[Provenance-Source] rows 16-17 (MSH-7 -> recorded and occurred);
 * - the source: MSH[Provenance-Source] rows 11-13 (MSH-4 sending facility -> agent author, IF MSH-22 NOT VALUED)
 *   and rows 32-34 (MSH-22 -> agent author), rows 9-10 (MSH-3 sending application -> entity role source, a
 *   Device by identifier), with the message control id (MSH-10) in the entity's display;
 * - the conversion: MSH[Provenance-Transformation] rows 7-9 (agent type "assembler", who = the Device
 *   performing the transformation: Ferry, with its version).
 */
function messageProvenance(ctx: ConvertContext): void {
  const msh = ctx.msg.msh;
  const targets = ctx.b.resources().filter((r) => r !== ctx.header && r !== ctx.provenance && r.resourceType !== 'Provenance');
  let prov = ctx.provenance;
  if (!targets.length) {
    if (prov) ctx.b.markDelete(prov);
    return;
  }
  if (!prov) {
    prov = ctx.b.add<Provenance>({
      resourceType: 'Provenance',
      id: ctx.b.idFor('Provenance', 'MSH', true),
      target: [],
      recorded: ctx.instant(msh.get(7)) ?? '1970-01-01T00:00:00Z',
      activity: { coding: [{ system: V2_TABLE('0003'), code: ctx.trigger || ctx.messageCode || 'unknown', display: `message - ${msh.get(9, 0, 1)}^${msh.get(9, 0, 2)}^${msh.get(9, 0, 3)}` }] },
      agent: [],
    });
    const occurred = ctx.dt(msh.get(7));
    if (occurred) prov.occurredDateTime = occurred;
  }
  // MSH[Provenance-Source] row 17: MSH-7 -> occurred, when EVN-6 (the event's own time) did not give it
  if (!prov.occurredDateTime && !prov.occurredPeriod) {
    const occurred = ctx.dt(msh.get(7));
    if (occurred) prov.occurredDateTime = occurred;
  }
  prov.target = targets.map((r) => ref(r));
  // source: MSH-22 when valued, else MSH-4 (the MessageHeader's sender)
  const responsible = xonOrg(msh.rep(22), ctx);
  const author = responsible ?? ctx.header?.sender;
  if (author) prov.agent.push({ type: { coding: [{ system: PARTICIPANT_TYPE, code: 'author' }] }, who: author });
  if (responsible && ctx.header?.sender && ctx.header.sender.reference !== responsible.reference)
    prov.agent.push({ type: { coding: [{ system: PARTICIPANT_TYPE, code: 'author' }] }, who: ctx.header.sender });
  // the conversion: Ferry as the assembler
  prov.agent.push({ type: { coding: [{ system: PARTICIPANT_TYPE, code: 'assembler', display: 'Assembler' }] }, who: ref(ferryDevice(ctx), `Ferry ${FERRY_VERSION}`) });
  const app = msh.rep(3);
  const appId = c(app, 1) || c(app, 2);
  const control = msh.get(10);
  if (valued(appId) || valued(control)) {
    const what: Ref = { type: 'Device' };
    if (valued(appId)) what.identifier = { ...(valued(c(app, 2)) && /^[0-2](\.\d+)+$/.test(c(app, 2)) ? { system: 'urn:ietf:rfc:3986', value: `urn:oid:${c(app, 2)}` } : { value: appId }) };
    what.display = `HL7 v2 ${msh.get(9, 0, 1)}^${msh.get(9, 0, 2)} message${valued(control) ? ` ${control}` : ''}${valued(appId) ? ` from ${appId}` : ''}`;
    prov.entity = [{ role: 'source', what }];
  }
  // ADT_A01 message map rows 8-9: SFT -> Provenance.entity.what(Device), role "derivation" (software that handled
  // the message on its way, the usual case: an interface engine's SFT)
  for (const d of ctx.state.software ?? []) prov.entity = push(prov.entity, { role: 'derivation', what: ref(d) });
}

/** The Device standing for this converter (one per Ferry version, shared by every message). */
function ferryDevice(ctx: ConvertContext): Resource {
  return ctx.b.add({
    resourceType: 'Device',
    id: ctx.b.idFor('Device', `ferry|${FERRY_VERSION}`),
    deviceName: [{ name: 'Ferry HL7 v2 to FHIR R4 conversion', type: 'user-friendly-name' }],
    version: [{ value: FERRY_VERSION }],
  } as Resource & { id: string });
}

/** Trigger-event semantics (ADT status changes, merges, deletes; SIU status). */
function eventSemantics(ctx: ConvertContext): void {
  const { messageCode: code, trigger } = ctx;
  const st = ctx.state;
  const e = st.encounter;
  if (code === 'ADT') {
    const evnTime = ctx.dt(ctx.msg.get('EVN', 2)) ?? ctx.dt(ctx.msg.get('EVN', 6)) ?? ctx.dt(ctx.msg.msh.get(7));
    // Event[EncounterStatus] concept map (A01 in-progress, A03 finished, A04/A05 planned, A11 cancelled, A13 in-progress)
    const mapped = codeOf('Event[EncounterStatus]', trigger);
    if (e) {
      if (mapped && mapped !== 'unknown') e.status = mapped as Encounter['status'];
      switch (trigger) {
        case 'A03':
          e.status = 'finished';
          if (!e.period?.end) {
            const end = ctx.dt(ctx.msg.get('PV1', 45)) ?? evnTime;
            if (end) e.period = { ...(e.period ?? {}), end };
          }
          break;
        case 'A13':
        case 'A25':
          // cancel discharge / cancel pending discharge: the visit goes on
          e.status = 'in-progress';
          if (e.period?.end) {
            delete e.period.end;
            if (!e.period.start) delete e.period;
          }
          break;
        case 'A11':
        case 'A27':
          e.status = 'cancelled';
          break;
        case 'A12':
          // cancel transfer: PV1-3 holds the location the patient stays in (active); the transfer location
          // in PV1-6 never happened, so it is not kept as a completed stay
          if (e.location) {
            e.location = e.location.filter((l) => l.status !== 'completed');
            if (!e.location.length) delete e.location;
          }
          e.status = 'in-progress';
          break;
        case 'A14':
        case 'A15':
        case 'A16':
          e.status = trigger === 'A14' ? 'planned' : 'in-progress';
          break;
        case 'A10':
          e.status = 'arrived';
          break;
        case 'A26':
        case 'A02':
        case 'A06':
        case 'A07':
        case 'A09':
          e.status = 'in-progress';
          break;
        case 'A23':
          ctx.b.markDelete(e);
          deleteEncounterHistory(e, ctx); // the visit's history goes with it
          break;
        default:
      }
    }
    if (trigger === 'A29' && st.patient) {
      // delete person information: the patient's visit data goes (DELETE entries); the Patient record is kept inactive
      if (e) {
        ctx.b.markDelete(e);
        deleteEncounterHistory(e, ctx);
      }
      st.patient.active = false;
    }
  }
  if (code === 'BAR' && trigger === 'P02') {
    // purge patient accounts
    for (const r of ctx.b.resources()) if (r.resourceType === 'Account') (r as Account).status = 'inactive';
  }
  for (const appt of st.appointments) {
    const a = appt as Appointment;
    if (code === 'SIU') {
      const byTrigger: Record<string, Appointment['status']> = { S15: 'cancelled', S16: 'cancelled', S17: 'entered-in-error', S26: 'noshow' };
      if (byTrigger[trigger]) a.status = byTrigger[trigger];
      if (trigger === 'S15' || trigger === 'S16') {
        const reason = cwe(ctx.msg.segment('SCH')?.rep(6), ctx);
        if (reason) a.cancelationReason = reason;
      }
    }
    // Appointment invariants: start and end together; required unless proposed/cancelled/waitlist
    if (!a.start || !a.end) {
      delete a.start;
      delete a.end;
      // app-3: only proposed / cancelled / waitlist may lack times
      if (a.status === 'entered-in-error' || a.status === 'noshow') a.status = 'cancelled';
      else if (!['proposed', 'cancelled', 'waitlist'].includes(a.status)) a.status = 'proposed';
    }
    if (st.patient && !a.participant.some((p) => p.actor?.reference === `urn:uuid:${st.patient!.id}`))
      a.participant.unshift({ actor: ref(st.patient), status: 'accepted' });
    if (!a.participant.length) a.participant.push({ status: 'needs-action', type: [{ text: 'unknown' }] });
  }
}
