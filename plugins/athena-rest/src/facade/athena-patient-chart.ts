/** The athena facade provider's REST patient searches, patient form, and chart sections (clinical REST fallback). */
import { facadeError, FerryError, type FacadeCallContext, type FacadeRecord } from '@ferry/core';
import type { Patient } from '@medplum/fhirtypes';
import { athenaSystem } from '@ferry/fhir-vendor-kit';
import { AthenaContentType, type AthenaEnvelope } from '../to-fhir/athena-records';
import { CHART_SECTIONS, chartEntityId, chartRecords, type AthenaChartSection } from '../to-fhir/athena-chart';
import type { AthenaFacadeProvider } from './athena.provider';
import { athenaDateOf, fhirDateToAthena } from './athena-dates';
import { callAthena } from './athena-errors';

/**
 * The REST fallback for clinical searches (reference 1.4 `GET /chart/{patientid}/problems|allergies|
 * vitals|medications`, `departmentid` required, limit/offset paging): served where the athena-fhir
 * plugin is not loaded (no transform for FHIR records), or for types athena's FHIR API does not
 * serve in the shape the pipeline delivers (MedicationStatement: athena FHIR has only
 * MedicationRequest, 2.3). Records go through the chart transform the pipeline uses.
 */
export const CHART_TYPES: Record<string, { section: AthenaChartSection; params: string[]; category?: string }> = {
  Condition: { section: 'problems', params: ['patient', 'category'], category: 'problem-list-item' },
  AllergyIntolerance: { section: 'allergies', params: ['patient'] },
  Observation: { section: 'vitals', params: ['patient', 'category'], category: 'vital-signs' },
  MedicationStatement: { section: 'medications', params: ['patient'] },
  Immunization: { section: 'vaccines', params: ['patient'] },
};

export async function restPatients(
  athena: AthenaFacadeProvider,
  params: Record<string, string[]>,
  page: { cursor?: string; count: number },
  ctx: FacadeCallContext,
) {
  const ident = params.identifier?.[0];
  if (ident) {
    const [system, value] = ident.includes('|') ? ident.split('|') : ['', ident];
    if (system && system !== athenaSystem('patient', athena.p)) return { records: [] };
    const r = await athena
      .read('Patient', value, ctx)
      .catch((e) => (FerryError.is(e) && e.details?.facadeIssue === 'not-found' ? undefined : Promise.reject(e)));
    return { records: r ? [r] : [], total: r ? 1 : 0 };
  }
  const q: Record<string, string> = { limit: String(page.count), offset: page.cursor ?? '0' };
  if (params.family?.[0]) q.lastname = params.family[0];
  if (params.given?.[0]) q.firstname = params.given[0];
  if (params.birthdate?.[0]) q.dob = athenaDateOf(params.birthdate[0]) ?? fhirDateToAthena(params.birthdate[0]);
  if (!q.lastname && !q.firstname && !q.dob)
    throw facadeError('invalid', 'Patient search through athena REST needs family, given or birthdate (or identifier)');
  const body = await callAthena(() => athena.conn.get<any>('/patients', q, { signal: ctx.signal }));
  const items: Record<string, any>[] = body?.patients ?? [];
  return {
    records: items.map((r) => athena.restRecord('patient', r)),
    next: body?.next ? String(Number(q.offset) + items.length) : undefined,
    total: body?.totalcount !== undefined ? Number(body.totalcount) : undefined,
  };
}

/**
 * One chart section of a patient, as the athena-rest source reads it for the pipeline: the
 * department the patient record names (`departmentid`, else `primarydepartmentid`, else the
 * connection's `departmentId`), each item `{ ...item, patientid, departmentid }` with the
 * department record, vitals groups flattened to readings; offset paging as the cursor.
 */
export async function restChart(
  athena: AthenaFacadeProvider,
  type: string,
  params: Record<string, string[]>,
  page: { cursor?: string; count: number },
  ctx: FacadeCallContext,
) {
  const spec = CHART_TYPES[type];
  const pv = params.patient?.[0];
  if (!pv || (params.patient?.length ?? 0) > 1)
    throw facadeError(
      'invalid',
      `${type} search through athena REST needs exactly one patient (GET /chart/{patientid}/${spec.section}, reference 1.4)`,
    );
  const cat = params.category?.[0];
  if (cat !== undefined && cat.replace(/^.*\|/, '') !== spec.category)
    throw facadeError('invalid', `category: athena's chart serves only ${spec.category} ${type} resources`);
  const { pid, d, department } = await patientDepartment(athena, pv, ctx);
  const offset = page.cursor ?? '0';
  if (!/^\d+$/.test(offset)) throw facadeError('invalid', '_cursor: not a chart page of this connection');
  const body = await callAthena(() =>
    athena.conn.get<any>(
      `/chart/${encodeURIComponent(pid)}/${spec.section}`,
      { departmentid: String(d), limit: String(page.count), offset },
      { signal: ctx.signal },
    ),
  );
  const items: unknown[] = Array.isArray(body?.[spec.section]) ? body[spec.section] : [];
  const kind = CHART_SECTIONS[spec.section];
  const records: FacadeRecord[] = chartRecords(spec.section, items).map((item) => {
    const record = { ...item, patientid: pid, departmentid: String(d) };
    const env: AthenaEnvelope = {
      practiceid: athena.p,
      kind,
      feed: `chart/${spec.section}`,
      record,
      ...(department ? { department } : {}),
    };
    return {
      contentType: AthenaContentType[kind],
      body: Buffer.from(JSON.stringify(env)),
      vendorId: chartEntityId(kind, record) ?? '',
    };
  });
  return {
    records,
    next: body?.next ? String(Number(offset) + items.length) : undefined,
    total: body?.totalcount !== undefined ? Number(body.totalcount) : undefined,
  };
}

/**
 * A patient named by a reference (or athena id) and the department athena calls for it need:
 * the patient record's `departmentid`, else `primarydepartmentid`, else the connection's
 * `departmentId` -- as the athena-rest source picks it for the pipeline.
 */
export async function patientDepartment(
  athena: AthenaFacadeProvider,
  ref: string,
  ctx: FacadeCallContext,
): Promise<{ pid: string; d: string; department?: Record<string, any> }> {
  const pat = await ctx.resolve(ref.includes('/') ? ref : `Patient/${ref}`);
  const pid = pat?.type === 'Patient' ? pat.vendorId : /^\d+$/.test(ref) ? ref : undefined;
  if (!pid) throw facadeError('invalid', `patient: ${ref.slice(0, 80)} is not a patient of this connection`);
  const [prec] = await callAthena(() =>
    athena.conn.get<Record<string, any>[]>(`/patients/${encodeURIComponent(pid)}`, undefined, { signal: ctx.signal }),
  );
  if (!prec) throw facadeError('not-found', 'patient not found at athena');
  const d = prec.departmentid ?? prec.primarydepartmentid ?? (athena.ctx.config.departmentId || undefined);
  if (d === undefined || d === null || d === '')
    throw facadeError(
      'invalid',
      `athena names no department for the patient: set connections.${athena.ctx.id}.departmentId (athena needs departmentid, reference 1.4)`,
    );
  return { pid, d: String(d), department: await athena.department(d, ctx.signal) };
}

/** The athena patient form of a FHIR Patient (reference 1.4: form-encoded, dob MM/DD/YYYY). */
export function patientForm(p: Patient): Record<string, string> {
  const name = p.name?.find((n) => n.use === 'official') ?? p.name?.[0];
  const f: Record<string, string> = {};
  if (name?.family) f.lastname = name.family;
  if (name?.given?.[0]) f.firstname = name.given[0];
  if (name?.given?.[1]) f.middlename = name.given[1];
  if (p.birthDate) f.dob = athenaDateOf(p.birthDate) ?? '';
  if (p.gender) f.sex = p.gender === 'male' ? 'M' : p.gender === 'female' ? 'F' : '';
  for (const t of p.telecom ?? []) {
    if (t.system === 'email' && t.value) f.email = t.value;
    if (t.system === 'phone' && t.value)
      f[t.use === 'mobile' ? 'mobilephone' : t.use === 'work' ? 'workphone' : 'homephone'] = t.value;
  }
  const a = p.address?.[0];
  if (a?.line?.[0]) f.address1 = a.line[0];
  if (a?.city) f.city = a.city;
  if (a?.state) f.state = a.state;
  if (a?.postalCode) f.zip = a.postalCode;
  return Object.fromEntries(Object.entries(f).filter(([, v]) => v !== ''));
}
