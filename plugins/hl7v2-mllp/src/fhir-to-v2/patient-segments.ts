/** PID and PV1 (PID[Patient], PV1[Encounter] in reverse), and the PL / XCN values other segments use too. */
import type { Coverage, Encounter, Identifier, Location, Patient, Practitioner, Reference } from '@medplum/fhirtypes';
import { type Ctx, LOGICAL } from './bundle-context';
import { type Comps, dt, dtm, v2CodeOf, xad, xpn, xtn } from './datatypes';
import { first, missing, Seg, type V2Out } from './segment';

/** A Coverage that is only a financial class (PV1-20): a type, no plan, no payor reference. */
export function financialClassOnly(c: Coverage): boolean {
  return !!c.type && !c.class?.length && !(c.payor ?? []).some((p) => p.reference || p.identifier);
}

/** PID[Patient] in reverse. */
export function pid(rcv: V2Out, p: Patient, ctx?: Ctx): Seg {
  const w = rcv.w;
  if (ctx) ctx.messagePatient = p;
  const ids = p.identifier ?? [];
  const isType = (i: Identifier, code: string) => i.type?.coding?.some((c) => c.code === code);
  const main = ids.filter(
    (i) => !(isType(i, 'SS') && i.system === 'http://hl7.org/fhir/sid/us-ssn') && !isType(i, 'DL'),
  );
  if (!main.some((i) => i.value)) throw missing('Patient.identifier', 'PID-3 (patient identifier list)');
  const names = (p.name ?? []).map(xpn).filter(Boolean);
  // a patient known only by a logical reference (identifier) is sent by PID-3 alone
  if (!names.length && !LOGICAL.has(p)) throw missing('Patient.name', 'PID-5 (patient name)');
  const s = new Seg('PID').set(1, '1');
  s.reps(
    3,
    main.map((i) => w.cx(i)),
  );
  s.reps(5, names);
  const mmn = p.extension?.find(
    (e) => e.url === 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName',
  )?.valueString;
  if (mmn) s.set(6, [mmn]);
  const birthTime = (
    p as Patient & { _birthDate?: { extension?: { url: string; valueDateTime?: string }[] } }
  )._birthDate?.extension?.find(
    (e) => e.url === 'http://hl7.org/fhir/StructureDefinition/patient-birthTime',
  )?.valueDateTime;
  s.set(7, (birthTime ? dtm(birthTime) : undefined) ?? dt(p.birthDate));
  s.set(8, v2CodeOf('AdministrativeSex', p.gender));
  s.reps(11, (p.address ?? []).map(xad));
  const tel = p.telecom ?? [];
  s.reps(13, tel.filter((t) => t.use !== 'work').map(xtn));
  s.reps(14, tel.filter((t) => t.use === 'work').map(xtn));
  s.set(16, w.cwe(p.maritalStatus, 'PID-16', 'MaritalStatus'));
  const ssn = ids.find((i) => isType(i, 'SS') && i.system === 'http://hl7.org/fhir/sid/us-ssn');
  s.set(19, ssn?.value);
  const dl = ids.find((i) => isType(i, 'DL'));
  if (dl?.value)
    s.set(20, [
      dl.value,
      dl.system?.startsWith('urn:ferry:id:DL-') ? decodeURIComponent(dl.system.slice(16)) : '',
      dt(dl.period?.end) ?? '',
    ]);
  if (p.deceasedDateTime) s.set(29, dtm(p.deceasedDateTime)).set(30, 'Y');
  else if (p.deceasedBoolean !== undefined) s.set(30, p.deceasedBoolean ? 'Y' : 'N');
  return s;
}

/** PV1[Encounter] in reverse. */
export function pv1(rcv: V2Out, e: Encounter, ctx: Ctx): Seg {
  const w = rcv.w;
  const s = new Seg('PV1').set(1, '1');
  const cls =
    v2CodeOf('PatientClass[EncounterClass]', e.class?.code, e.class?.system) ??
    (e.class?.code ? e.class.code : undefined);
  s.set(2, cls ?? 'U');
  const loc = first(e.location)?.location;
  if (loc) s.set(3, pl(loc, ctx));
  const role = (code: string) =>
    (e.participant ?? []).filter((p) => p.type?.some((t) => t.coding?.some((c) => c.code === code)));
  s.reps(
    7,
    role('ATND').map((p) => xcn(rcv, p.individual, ctx)),
  );
  s.reps(
    8,
    role('REF').map((p) => xcn(rcv, p.individual, ctx)),
  );
  s.reps(
    9,
    role('CON').map((p) => xcn(rcv, p.individual, ctx)),
  );
  s.set(10, w.cwe(e.serviceType, 'PV1-10', 'HospitalService')?.[0] as string | undefined);
  const vn = (e.identifier ?? []).find((i) => i.type?.coding?.some((c) => c.code === 'VN')) ?? first(e.identifier);
  s.set(19, w.cx(vn));
  s.set(50, w.cx((e.identifier ?? []).find((i) => i !== vn)));
  // PV1-20 financial class: a Coverage with only a type and no known payor (as the inbound PV1[Coverage] row makes it)
  const fc = ctx.all<Coverage>('Coverage').filter(financialClassOnly);
  s.reps(
    20,
    fc.map((c) => [w.cwe(c.type, 'PV1-20', 'FinancialClass')?.[0] as string, dt(c.period?.start?.slice(0, 10)) ?? '']),
  );
  s.set(44, dtm(e.period?.start));
  s.set(45, dtm(e.period?.end));
  return s;
}

/** A Location (and its partOf chain, as the inbound PL map builds it) -> PL. */
export function pl(r: Reference, ctx: Ctx): Comps | undefined {
  const out: (string | string[])[] = [];
  let l = ctx.resolve<Location>(r);
  if (!l) return r.display ? [r.display] : undefined;
  const pos: Record<string, number> = { si: 4, bu: 7, lvl: 8, ro: 2, bd: 3 };
  for (let guard = 0; l && guard < 8; guard++) {
    const t = l.physicalType?.coding?.[0]?.code;
    const n = (t && pos[t]) || 1;
    if (!out[n - 1] && l.name) out[n - 1] = l.name;
    l = l.partOf ? ctx.resolve<Location>(l.partOf) : undefined;
  }
  for (let i = 0; i < out.length; i++) if (out[i] === undefined) out[i] = '';
  return out.length ? out : undefined;
}

/** XCN from a Practitioner: id, family, given, second given, suffix, prefix, …, assigning authority (9). */
export function xcn(rcv: V2Out, r: Reference | undefined, ctx: Ctx): Comps | undefined {
  if (!r) return undefined;
  const p = ctx.resolve<Practitioner>(r);
  const id = first(p?.identifier);
  const n = first(p?.name);
  const name = n ? xpn(n) : r.display ? ['', r.display] : undefined;
  if (!id?.value && !name) return undefined;
  const c: Comps = [id?.value ?? '', ...((name ?? []).slice(0, 5) as string[])];
  while (c.length < 8) c.push('');
  if (id?.system) c.push(rcv.w.hd(id.system, id.assigner?.display));
  return c;
}
