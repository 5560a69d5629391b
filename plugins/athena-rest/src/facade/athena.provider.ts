/**
 * The FHIR facade's provider for athenaOne connections (`kind: athena`): raw records exactly as the
 * athena sources store them (REST envelopes `{ practiceid, kind, record, department }` for the
 * athena-rest transform; FHIR envelopes `{ practiceid, resource }` for the athena-fhir transform),
 * so the facade answers what the pipeline delivers.
 *
 * The decision rule (defaults; reasons from ../shared/docs/vendor-apis.md):
 * - clinical resources (Condition, Observation, AllergyIntolerance, MedicationRequest,
 *   DiagnosticReport, Encounter, DocumentReference) through FHIR R4: athena's FHIR API covers
 *   them with patient/category/code/date searches (2.3), the REST chart endpoints need a
 *   department per call and page by offset (1.4);
 * - Patient reads and searches through FHIR (2.3: read + identifier/name/birthdate/gender), with
 *   REST as the fallback; Patient create/update through REST (FHIR offers no Patient write, 2.3;
 *   REST POST/PUT /patients, 1.4);
 * - Appointments -- reads, day lists, open slots, book, cancel -- through REST: athena's FHIR
 *   Appointment search has only `_id` and group ids (2.3: no date, no patient), scheduling is
 *   practice management (1.4 /appointments/booked, /appointments/{id}, cancel; open slots are
 *   appointments with status `o`).
 */
import {
  FerryError,
  facadeError,
  type FacadeCallContext,
  type FacadeCapability,
  type FacadeProvider,
  type FacadeProviderContext,
  type FacadeProviderRegistration,
  type FacadeRecord,
} from '@ferry/core';
import type { DocumentReference, Patient, Resource } from '@medplum/fhirtypes';
import {
  AthenaConnection,
  athenaConnectionSchema,
  athenaErrorText,
  athenaSystem,
  type AthenaConnectionConfig,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { AthenaContentType, type AthenaEnvelope } from '../to-fhir/athena-records';
import { CHART_SECTIONS, chartEntityId, chartRecords, type AthenaChartSection } from '../to-fhir/athena-chart';

/** athena-fhir's content type (the athena-fhir plugin's transform reads it; without that plugin the FHIR path is unavailable). */
export const ATHENA_FHIR_ENVELOPE_TYPE = 'application/vnd.athena.fhir+json';

export const athenaFacadeConnectionSchema = {
  ...athenaConnectionSchema,
  departmentId: {
    doc: 'Department for facade calls that name none and whose patient names none (new patients; chart and document calls need one); empty = the first department for new patients',
    format: String,
    default: '',
  },
};

/**
 * The REST fallback for clinical searches (reference 1.4 `GET /chart/{patientid}/problems|allergies|
 * vitals|medications`, `departmentid` required, limit/offset paging): served where the athena-fhir
 * plugin is not loaded (no transform for FHIR records), or for types athena's FHIR API does not
 * serve in the shape the pipeline delivers (MedicationStatement: athena FHIR has only
 * MedicationRequest, 2.3). Records go through the chart transform the pipeline uses.
 */
const CHART_TYPES: Record<string, { section: AthenaChartSection; params: string[]; category?: string }> = {
  Condition: { section: 'problems', params: ['patient', 'category'], category: 'problem-list-item' },
  AllergyIntolerance: { section: 'allergies', params: ['patient'] },
  Observation: { section: 'vitals', params: ['patient', 'category'], category: 'vital-signs' },
  MedicationStatement: { section: 'medications', params: ['patient'] },
  Immunization: { section: 'vaccines', params: ['patient'] },
};

const CLINICAL = [
  'Condition',
  'Observation',
  'AllergyIntolerance',
  'MedicationRequest',
  'DiagnosticReport',
  'Encounter',
  'DocumentReference',
];
/** FHIR search parameters athena's CapabilityStatement lists per type (reference 2.3). */
const FHIR_PARAMS: Record<string, string[]> = {
  Patient: ['_id', 'identifier', 'name', 'family', 'given', 'birthdate', 'gender'],
  Condition: ['patient', 'category', 'code', 'encounter'],
  DiagnosticReport: ['patient', 'category', 'code', 'date'],
  DocumentReference: ['patient', 'category', 'type', 'date', 'encounter'],
  Encounter: ['patient', 'date', 'location', 'practitioner'],
  MedicationRequest: ['patient', 'intent', 'status', 'authoredon'],
  Observation: ['patient', 'category', 'code', 'date', 'encounter'],
  AllergyIntolerance: ['patient'],
};

const fhirDateToAthena = (d: string): string => {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(d);
  if (!m) throw facadeError('invalid', `date: expected YYYY-MM-DD, got ${d.slice(0, 30)}`);
  return `${m[2]}/${m[3]}/${m[1]}`;
};
const athenaDateOf = (d: string | undefined): string | undefined => {
  if (!d) return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(d);
  return m ? `${m[2]}/${m[3]}/${m[1]}` : undefined;
};

/** FHIR `date` parameters (`2026-12-07`, `ge2026-12-01`, `le2026-12-31`) -> athena startdate/enddate (days, inclusive). */
function dateRange(values: string[] | undefined): { startdate: string; enddate: string } {
  if (!values?.length)
    throw facadeError(
      'invalid',
      'Appointment search needs date (YYYY-MM-DD, or ge/le bounds): athena lists appointments by date range (reference 1.4)',
    );
  let start: string | undefined;
  let end: string | undefined;
  for (const v of values) {
    const m = /^(eq|ge|gt|le|lt)?(\d{4}-\d{2}-\d{2})/.exec(v);
    if (!m) throw facadeError('invalid', `date: expected [eq|ge|le]YYYY-MM-DD, got ${v.slice(0, 30)}`);
    const p = m[1] ?? 'eq';
    if (p === 'eq') start = end = m[2];
    else if (p === 'ge' || p === 'gt') start = m[2];
    else end = m[2];
  }
  if (!start || !end) throw facadeError('invalid', 'date: give a day, or both a ge and an le bound');
  return { startdate: fhirDateToAthena(start), enddate: fhirDateToAthena(end) };
}

function refId(v: string | undefined, re: RegExp): string | undefined {
  if (!v) return undefined;
  const m = re.exec(v.replace(/^.*\//, ''));
  return m?.[1] ?? (/^\d+$/.test(v) ? v : undefined);
}

export class AthenaFacadeProvider implements FacadeProvider {
  readonly vendor = 'athena';
  readonly conn: AthenaConnection;
  private departments?: { at: number; list: Record<string, any>[] };

  constructor(
    private readonly ctx: FacadeProviderContext<AthenaConnectionConfig & { departmentId: string }>,
    shared?: VendorConnections,
  ) {
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
  }

  private get p(): string {
    return this.conn.practiceId;
  }

  capabilities(): FacadeCapability[] {
    const rest = AthenaContentType;
    const caps: FacadeCapability[] = [
      { type: 'Patient', interaction: 'read', path: 'rest', contentType: rest.patient },
      {
        type: 'Patient',
        interaction: 'search',
        path: 'rest',
        contentType: rest.patient,
        searchParams: ['identifier', 'family', 'given', 'birthdate'],
      },
      {
        type: 'Patient',
        interaction: 'create',
        path: 'rest',
        contentType: rest.patient,
        note: 'athena FHIR has no Patient write (2.3)',
      },
      { type: 'Patient', interaction: 'update', path: 'rest', contentType: rest.patient },
      { type: 'Appointment', interaction: 'read', path: 'rest', contentType: rest.appointment },
      {
        type: 'Appointment',
        interaction: 'search',
        path: 'rest',
        contentType: rest.appointment,
        searchParams: ['date', 'location', 'practitioner', 'status'],
        note: 'athena FHIR Appointment search has no date (2.3)',
      },
      { type: 'Appointment', interaction: 'book', path: 'rest', contentType: rest.appointment },
      { type: 'Appointment', interaction: 'cancel', path: 'rest', contentType: rest.appointment },
      {
        type: 'Appointment',
        interaction: 'checkin',
        path: 'rest',
        contentType: rest.appointment,
        note: 'POST /appointments/{id}/checkin: not in the reference [U], athena public API',
      },
      {
        type: 'DocumentReference',
        interaction: 'search',
        path: 'rest',
        contentType: rest.document,
        searchParams: ['patient'],
        note: 'GET /patients/{patientid}/documents/admin (1.4)',
      },
      {
        type: 'DocumentReference',
        interaction: 'read',
        path: 'rest',
        contentType: rest.document,
        note: 'a document the facade listed or created: GET /patients/{patientid}/documents/clinicaldocument/{id} [U], admin ones from the list (1.4)',
      },
      {
        type: 'DocumentReference',
        interaction: 'create',
        path: 'rest',
        contentType: rest.document,
        note: 'POST /documents/clinicaldocument (1.4); athena FHIR has no DocumentReference write (2.3)',
      },
      { type: 'Patient', interaction: 'read', path: 'fhir', contentType: ATHENA_FHIR_ENVELOPE_TYPE },
      {
        type: 'Patient',
        interaction: 'search',
        path: 'fhir',
        contentType: ATHENA_FHIR_ENVELOPE_TYPE,
        searchParams: FHIR_PARAMS.Patient,
      },
    ];
    for (const [type, c] of Object.entries(CHART_TYPES))
      caps.push({
        type,
        interaction: 'search',
        path: 'rest',
        contentType: AthenaContentType[CHART_SECTIONS[c.section]],
        searchParams: c.params,
        note: `GET /chart/{patientid}/${c.section} (1.4): served when athena FHIR is absent or lacks the type`,
      });
    for (const type of CLINICAL) {
      caps.push({ type, interaction: 'read', path: 'fhir', contentType: ATHENA_FHIR_ENVELOPE_TYPE });
      caps.push({
        type,
        interaction: 'search',
        path: 'fhir',
        contentType: ATHENA_FHIR_ENVELOPE_TYPE,
        searchParams: FHIR_PARAMS[type],
      });
    }
    return caps;
  }

  defaultPaths(): Record<string, string[]> {
    // Documents are practice management (1.4 /documents): REST first; FHIR DocumentReference reads stay FHIR.
    return {
      'Patient.read': ['fhir', 'rest'],
      'Patient.search': ['fhir', 'rest'],
      'Patient.*': ['rest'],
      'Appointment.*': ['rest'],
      'DocumentReference.search': ['rest', 'fhir'],
      'DocumentReference.create': ['rest'],
      '*': ['fhir', 'rest'],
    };
  }

  vendorId(type: string, canonicalId: string): string | undefined {
    const p = this.p;
    if (type === 'Patient') return new RegExp(`^athena-${p}-patient-(\\d+)$`).exec(canonicalId)?.[1];
    if (type === 'Appointment') return new RegExp(`^athena-${p}-appointment-(\\d+)$`).exec(canonicalId)?.[1];
    const doc =
      type === 'DocumentReference' ? new RegExp(`^athena-${p}-document-(\\d+)$`).exec(canonicalId)?.[1] : undefined;
    if (doc) return doc;
    // athena-fhir ids: athena-{p}-{type}-{kind}-{local} <- a-{p}.{kind}-{local}
    const m = new RegExp(`^athena-${p}-${type.toLowerCase()}-([A-Za-z]+)-([A-Za-z0-9.\\-]+)$`).exec(canonicalId);
    return m ? `a-${p}.${m[1]}-${m[2]}` : undefined;
  }

  /** Department records (timezonename for appointment wall times), read once an hour. */
  private async departmentList(signal?: AbortSignal): Promise<Record<string, any>[]> {
    if (this.departments && Date.now() - this.departments.at < 3_600_000) return this.departments.list;
    const list: Record<string, any>[] = [];
    for await (const page of this.conn.pages('/departments', 'departments', { limit: 1000 }, { signal }))
      list.push(...page.items);
    this.departments = { at: Date.now(), list };
    return list;
  }

  private async department(id: unknown, signal?: AbortSignal): Promise<Record<string, any> | undefined> {
    return (await this.departmentList(signal)).find((d) => String(d.departmentid) === String(id));
  }

  private restRecord(
    kind: 'patient' | 'appointment',
    record: Record<string, any>,
    department?: Record<string, any>,
  ): FacadeRecord {
    const env: AthenaEnvelope = {
      practiceid: this.p,
      kind,
      feed: 'facade',
      record,
      ...(department ? { department } : {}),
    };
    return {
      contentType: AthenaContentType[kind],
      body: Buffer.from(JSON.stringify(env)),
      vendorId: String(kind === 'patient' ? record.patientid : record.appointmentid),
    };
  }

  private fhirRecord(resource: Resource, type: string): FacadeRecord {
    const vendorId = type === 'Patient' ? (/\.E-(\d+)$/.exec(resource.id ?? '')?.[1] ?? resource.id!) : resource.id!;
    return {
      contentType: ATHENA_FHIR_ENVELOPE_TYPE,
      body: Buffer.from(JSON.stringify({ practiceid: this.p, resource })),
      vendorId,
    };
  }

  /** Vendor calls with their refusals mapped (404 -> not found, other 4xx -> invalid with athena's reason). */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!FerryError.is(e)) throw e;
      if (e.details?.facadeIssue) throw e;
      const status = e.details?.status as number | undefined;
      if (status === 404) throw facadeError('not-found', 'not found at athena', {}, e);
      if (e.code === 'FERRY_E_ATHENA_WRITE_REFUSED') {
        const text = String(e.details?.errormessage ?? '');
        if (
          /not open|already (booked|scheduled|checked in|cancel)|cannot be checked in|slot.*(taken|unavailable)/i.test(
            text,
          )
        )
          throw facadeError('conflict', `athena refused: ${text}`, { vendorMessage: text }, e);
        throw facadeError('invalid', `athena refused: ${text}`, { vendorMessage: text }, e);
      }
      if (status && status >= 400 && status < 500 && status !== 401 && status !== 403 && status !== 429) {
        const text = athenaErrorText(e);
        if (/already (checked in|cancel)|cannot be checked in/i.test(text))
          throw facadeError('conflict', `athena refused: ${text}`, { vendorMessage: text }, e);
        throw facadeError(
          'invalid',
          `athena refused the request (${status})${text ? `: ${text}` : ''}`,
          { vendorMessage: text },
          e,
        );
      }
      throw e;
    }
  }

  async read(type: string, vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord | undefined> {
    const signal = ctx.signal;
    // A REST document's id (`athena-{p}-document-{id}`) is read where it came from, whichever path reads the type.
    if (type === 'DocumentReference' && (ctx.path === 'rest' || /^(admin|clinical)\//.test(vendorId)))
      return this.readDocument(vendorId, ctx);
    if (ctx.path === 'fhir') {
      const id = type === 'Patient' ? `a-${this.p}.E-${vendorId}` : vendorId;
      const r = await this.call(() => this.conn.fhir.request({ url: `${type}/${encodeURIComponent(id)}`, signal }));
      return this.fhirRecord(r.json<Resource>(), type);
    }
    if (type === 'Patient') {
      const [rec] = await this.call(() =>
        this.conn.get<Record<string, any>[]>(`/patients/${encodeURIComponent(vendorId)}`, undefined, { signal }),
      );
      return rec ? this.restRecord('patient', rec) : undefined;
    }
    if (type === 'Appointment') {
      const [rec] = await this.call(() =>
        this.conn.get<Record<string, any>[]>(`/appointments/${encodeURIComponent(vendorId)}`, undefined, { signal }),
      );
      return rec ? this.restRecord('appointment', rec, await this.department(rec.departmentid, signal)) : undefined;
    }
    return undefined;
  }

  async search(
    type: string,
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    if (ctx.path === 'fhir') return this.fhirSearch(type, params, page, ctx);
    if (type === 'Patient') return this.restPatients(params, page, ctx);
    if (type === 'Appointment') return this.restAppointments(params, page, ctx);
    if (CHART_TYPES[type]) return this.restChart(type, params, page, ctx);
    if (type === 'DocumentReference') return this.restDocuments(params, page, ctx);
    throw facadeError('not-supported', `search of ${type} through athena REST`);
  }

  private async fhirSearch(
    type: string,
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    let url: string;
    let query: Record<string, string | string[]> | undefined;
    if (page.cursor) {
      if (!page.cursor.startsWith(`${this.conn.fhirBase}/`))
        throw facadeError('invalid', '_cursor: not an athena FHIR page of this connection');
      url = page.cursor;
    } else {
      query = { 'ah-practice': this.conn.fhirPracticeOrg, _count: String(page.count) };
      for (const [k, vs] of Object.entries(params)) {
        const out: string[] = [];
        for (const v of vs) {
          if (k === 'patient') {
            const r = await ctx.resolve(v.includes('/') ? v : `Patient/${v}`);
            out.push(r ? `a-${this.p}.E-${r.vendorId}` : v);
          } else if (k === 'identifier' && v.startsWith(`${athenaSystem('patient', this.p)}|`)) {
            query._id = `a-${this.p}.E-${v.split('|')[1]}`;
            continue;
          } else out.push(v);
        }
        if (out.length) query[k] = out.length === 1 ? out[0] : out;
      }
      url = type;
    }
    const body = (await this.call(() => this.conn.fhir.request({ url, query, signal: ctx.signal }))).json<any>();
    const records = (body?.entry ?? [])
      .map((e: any) => e.resource)
      .filter((r: Resource | undefined): r is Resource => r?.resourceType === type)
      .map((r: Resource) => this.fhirRecord(r, type));
    const next = (body?.link ?? []).find((l: any) => l.relation === 'next')?.url as string | undefined;
    return { records, next, total: typeof body?.total === 'number' ? body.total : undefined };
  }

  private async restPatients(
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    const ident = params.identifier?.[0];
    if (ident) {
      const [system, value] = ident.includes('|') ? ident.split('|') : ['', ident];
      if (system && system !== athenaSystem('patient', this.p)) return { records: [] };
      const r = await this.read('Patient', value, ctx).catch((e) =>
        FerryError.is(e) && e.details?.facadeIssue === 'not-found' ? undefined : Promise.reject(e),
      );
      return { records: r ? [r] : [], total: r ? 1 : 0 };
    }
    const q: Record<string, string> = { limit: String(page.count), offset: page.cursor ?? '0' };
    if (params.family?.[0]) q.lastname = params.family[0];
    if (params.given?.[0]) q.firstname = params.given[0];
    if (params.birthdate?.[0]) q.dob = athenaDateOf(params.birthdate[0]) ?? fhirDateToAthena(params.birthdate[0]);
    if (!q.lastname && !q.firstname && !q.dob)
      throw facadeError(
        'invalid',
        'Patient search through athena REST needs family, given or birthdate (or identifier)',
      );
    const body = await this.call(() => this.conn.get<any>('/patients', q, { signal: ctx.signal }));
    const items: Record<string, any>[] = body?.patients ?? [];
    return {
      records: items.map((r) => this.restRecord('patient', r)),
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
  private async restChart(
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
    const { pid, d, department } = await this.patientDepartment(pv, ctx);
    const offset = page.cursor ?? '0';
    if (!/^\d+$/.test(offset)) throw facadeError('invalid', '_cursor: not a chart page of this connection');
    const body = await this.call(() =>
      this.conn.get<any>(
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
        practiceid: this.p,
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
  private async patientDepartment(
    ref: string,
    ctx: FacadeCallContext,
  ): Promise<{ pid: string; d: string; department?: Record<string, any> }> {
    const pat = await ctx.resolve(ref.includes('/') ? ref : `Patient/${ref}`);
    const pid = pat?.type === 'Patient' ? pat.vendorId : /^\d+$/.test(ref) ? ref : undefined;
    if (!pid) throw facadeError('invalid', `patient: ${ref.slice(0, 80)} is not a patient of this connection`);
    const [prec] = await this.call(() =>
      this.conn.get<Record<string, any>[]>(`/patients/${encodeURIComponent(pid)}`, undefined, { signal: ctx.signal }),
    );
    if (!prec) throw facadeError('not-found', 'patient not found at athena');
    const d = prec.departmentid ?? prec.primarydepartmentid ?? (this.ctx.config.departmentId || undefined);
    if (d === undefined || d === null || d === '')
      throw facadeError(
        'invalid',
        `athena names no department for the patient: set connections.${this.ctx.id}.departmentId (athena needs departmentid, reference 1.4)`,
      );
    return { pid, d: String(d), department: await this.department(d, ctx.signal) };
  }

  /**
   * A document's record. Its vendor id (kept in the identity table) is `{class}/{patientid}/{id}`:
   * athena reads a document only under its patient (reference 1.4), so a read by canonical id needs both.
   */
  private documentRecord(
    record: Record<string, any>,
    department: Record<string, any> | undefined,
    feed: string,
  ): FacadeRecord {
    const env: AthenaEnvelope = {
      practiceid: this.p,
      kind: 'document',
      feed,
      record,
      ...(department ? { department } : {}),
    };
    const cls = feed === 'documents/admin' ? 'admin' : 'clinical';
    const vendorId = `${cls}/${record.patientid}/${String(record.clinicaldocumentid ?? record.adminid ?? record.documentid)}`;
    return { contentType: AthenaContentType.document, body: Buffer.from(JSON.stringify(env)), vendorId };
  }

  /**
   * A document by the vendor id the facade recorded when it listed or created it: a clinical one
   * through `GET /patients/{patientid}/documents/clinicaldocument/{id}` [U], an admin one found in
   * the patient's `GET /patients/{patientid}/documents/admin` list (the reference has no admin read by id).
   */
  private async readDocument(vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord | undefined> {
    const m = /^(admin|clinical)\/(\d+)\/(\d+)$/.exec(vendorId);
    if (!m)
      throw facadeError(
        'not-found',
        'athena reads a document only under its patient: find it with DocumentReference?patient= (or create it) through this facade first',
      );
    const [, cls, pid, id] = m;
    const { d, department } = await this.patientDepartment(pid, ctx);
    if (cls === 'clinical') {
      const [rec] = await this.call(() =>
        this.conn.get<Record<string, any>[]>(`/patients/${pid}/documents/clinicaldocument/${id}`, undefined, {
          signal: ctx.signal,
        }),
      );
      if (!rec) return undefined;
      return this.documentRecord(
        { ...rec, clinicaldocumentid: id, documentclass: rec.documentclass ?? 'CLINICALDOCUMENT', patientid: pid },
        department,
        'documents/clinicaldocument',
      );
    }
    for (let offset = 0; ;) {
      const body = await this.call(() =>
        this.conn.get<any>(
          `/patients/${pid}/documents/admin`,
          { departmentid: d, limit: '100', offset: String(offset) },
          { signal: ctx.signal },
        ),
      );
      const items: Record<string, any>[] = (Array.isArray(body) ? body : (body?.admins ?? [])).filter(
        (x: unknown) => !!x && typeof x === 'object',
      );
      const hit = items.find((x) => String(x.adminid ?? x.documentid) === id);
      if (hit)
        return this.documentRecord({ documentclass: 'ADMIN', ...hit, patientid: pid }, department, 'documents/admin');
      if (!body?.next || !items.length) return undefined;
      offset += items.length;
    }
  }

  /** A patient's admin documents (reference 1.4 `GET /patients/{patientid}/documents/admin`, departmentid required; list key `admins` [U]). */
  private async restDocuments(
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    const pv = params.patient?.[0];
    if (!pv || (params.patient?.length ?? 0) > 1)
      throw facadeError(
        'invalid',
        'DocumentReference search through athena REST needs exactly one patient (GET /patients/{patientid}/documents/admin, reference 1.4)',
      );
    const { pid, d, department } = await this.patientDepartment(pv, ctx);
    const offset = page.cursor ?? '0';
    if (!/^\d+$/.test(offset)) throw facadeError('invalid', '_cursor: not a document page of this connection');
    const body = await this.call(() =>
      this.conn.get<any>(
        `/patients/${encodeURIComponent(pid)}/documents/admin`,
        { departmentid: d, limit: String(page.count), offset },
        { signal: ctx.signal },
      ),
    );
    const items: Record<string, any>[] = (Array.isArray(body) ? body : (body?.admins ?? [])).filter(
      (x: unknown) => !!x && typeof x === 'object',
    );
    const records = items.map((x) =>
      this.documentRecord({ documentclass: 'ADMIN', ...x, patientid: pid }, department, 'documents/admin'),
    );
    return {
      records,
      next: body?.next ? String(Number(offset) + items.length) : undefined,
      total: body?.totalcount !== undefined ? Number(body.totalcount) : undefined,
    };
  }

  /**
   * A clinical document (reference 1.4 `POST /documents/clinicaldocument`, `{clinicaldocumentid,
   * success}` / `{success:false, errormessage}`), read back from athena for the answer
   * (`GET /patients/{patientid}/documents/clinicaldocument/{id}` [U]). From the DocumentReference:
   * subject (the patient), type (the athena document subclass: a code of
   * `urn:athenahealth:athenanet:documentsubclass`, else the first coding), description (internal
   * note), context.period.start (document date), content[0].attachment (data base64, contentType).
   */
  private async createDocument(doc: DocumentReference, ctx: FacadeCallContext): Promise<FacadeRecord> {
    const subject =
      doc.subject?.reference ??
      (doc.subject?.identifier?.system === athenaSystem('patient', this.p) ? doc.subject.identifier.value : undefined);
    if (!subject) throw facadeError('invalid', 'DocumentReference.subject: a Patient of this connection is required');
    const codings = doc.type?.coding ?? [];
    const sub = (codings.find((c) => c.system === 'urn:athenahealth:athenanet:documentsubclass') ?? codings[0])?.code;
    if (!sub)
      throw facadeError(
        'invalid',
        'DocumentReference.type: the athena document subclass is required (coding urn:athenahealth:athenanet:documentsubclass, e.g. CONSULTNOTE)',
      );
    const att = doc.content?.[0]?.attachment;
    const { pid, d, department } = await this.patientDepartment(subject, ctx);
    // The department the document names (context.related Location with athena's department system), else the patient's.
    const named = doc.context?.related?.find((x) => x.identifier?.system === athenaSystem('department', this.p))
      ?.identifier?.value;
    const form: Record<string, string> = { patientid: pid, departmentid: named ?? d, documentsubclass: sub };
    if (doc.description) form.internalnote = doc.description;
    const date = doc.context?.period?.start ?? doc.date;
    if (date) form.documentdate = fhirDateToAthena(date);
    if (att?.data) form.attachmentcontents = att.data;
    if (att?.contentType) form.attachmenttype = att.contentType;
    const out = await this.call(() =>
      this.conn.write<Record<string, any>>('POST', '/documents/clinicaldocument', form, { signal: ctx.signal }),
    );
    const id = out?.clinicaldocumentid;
    if (!id)
      throw new FerryError(
        'VENDOR_BAD_RESPONSE',
        'athena POST /documents/clinicaldocument answered no clinicaldocumentid',
        { kind: 'transient' },
      );
    const [rec] = await this.call(() =>
      this.conn.get<Record<string, any>[]>(
        `/patients/${encodeURIComponent(pid)}/documents/clinicaldocument/${encodeURIComponent(String(id))}`,
        undefined,
        { signal: ctx.signal },
      ),
    );
    return this.documentRecord(
      {
        ...(rec ?? form),
        clinicaldocumentid: String(id),
        documentclass: rec?.documentclass ?? 'CLINICALDOCUMENT',
        patientid: pid,
      },
      department,
      'documents/clinicaldocument',
    );
  }

  /** Booked appointments (or open slots with status=proposed) over one or every department, department by department. */
  private async restAppointments(
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    const range = dateRange(params.date);
    const status = params.status?.[0];
    if (status && status !== 'booked' && status !== 'proposed')
      throw facadeError('invalid', 'status: booked (default) or proposed (open slots)');
    const endpoint = status === 'proposed' ? '/appointments/open' : '/appointments/booked';
    const loc = params.location?.[0];
    const deptId = refId(loc, new RegExp(`^athena-${this.p}-department-(\\d+)$`));
    if (loc && !deptId)
      throw facadeError('invalid', 'location: Location/athena-{practice}-department-{id} or a department id');
    const providerId = refId(params.practitioner?.[0], new RegExp(`^athena-${this.p}-provider-(\\d+)$`));
    const depts = deptId
      ? [await this.department(deptId, ctx.signal)].filter((d): d is Record<string, any> => !!d)
      : await this.departmentList(ctx.signal);
    let { d, o } = page.cursor ? (JSON.parse(page.cursor) as { d: number; o: number }) : { d: 0, o: 0 };
    for (; d < depts.length; d++, o = 0) {
      const dept = depts[d];
      const q: Record<string, string> = {
        departmentid: String(dept.departmentid),
        ...range,
        limit: String(page.count),
        offset: String(o),
      };
      if (providerId) q.providerid = providerId;
      const body = await this.call(() => this.conn.get<any>(endpoint, q, { signal: ctx.signal }));
      const items: Record<string, any>[] = body?.appointments ?? [];
      if (!items.length && !body?.next) continue;
      const records = items.map((r) => this.restRecord('appointment', r, dept));
      const next = body?.next ? { d, o: o + items.length } : d + 1 < depts.length ? { d: d + 1, o: 0 } : undefined;
      return { records, next: next ? JSON.stringify(next) : undefined };
    }
    return { records: [] };
  }

  /** The athena patient form of a FHIR Patient (reference 1.4: form-encoded, dob MM/DD/YYYY). */
  private patientForm(p: Patient): Record<string, string> {
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

  async create(type: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (type === 'DocumentReference') return this.createDocument(resource as DocumentReference, ctx);
    if (type !== 'Patient') throw facadeError('not-supported', `create of ${type} through athena`);
    const form = this.patientForm(resource as Patient);
    const missing = ['lastname', 'firstname', 'dob'].filter((k) => !form[k]);
    if (missing.length)
      throw facadeError(
        'invalid',
        `athena needs ${missing.map((m) => ({ lastname: 'name.family', firstname: 'name.given', dob: 'birthDate' })[m]).join(', ')} to register a patient`,
      );
    // athena registers a second chart for the same person without complaint: look first (same names and birth date).
    const same = await this.call(() =>
      this.conn.get<any>(
        '/patients',
        { lastname: form.lastname, firstname: form.firstname, dob: form.dob, limit: 2 },
        { signal: ctx.signal },
      ),
    );
    const existing = (same?.patients ?? [])[0];
    if (existing)
      throw facadeError(
        'duplicate',
        `a patient with the same name and birth date exists at athena: Patient/athena-${this.p}-patient-${existing.patientid}`,
        { existing: `Patient/athena-${this.p}-patient-${existing.patientid}` },
      );
    const departmentid =
      this.ctx.config.departmentId || String((await this.departmentList(ctx.signal))[0]?.departmentid ?? '');
    const [created] = await this.call(() =>
      this.conn.write<Record<string, any>[]>('POST', '/patients', { ...form, departmentid }, { signal: ctx.signal }),
    );
    if (!created?.patientid)
      throw new FerryError('VENDOR_BAD_RESPONSE', 'athena POST /patients answered no patientid', { kind: 'transient' });
    return (await this.read('Patient', String(created.patientid), { ...ctx, path: 'rest' }))!;
  }

  async update(type: string, vendorId: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (type !== 'Patient') throw facadeError('not-supported', `update of ${type} through athena`);
    await this.call(() =>
      this.conn.write('PUT', `/patients/${encodeURIComponent(vendorId)}`, this.patientForm(resource as Patient), {
        signal: ctx.signal,
      }),
    );
    return (await this.read('Patient', vendorId, { ...ctx, path: 'rest' }))!;
  }

  async book(
    vendorId: string,
    request: { patient: string; appointmentType?: string },
    ctx: FacadeCallContext,
  ): Promise<FacadeRecord> {
    const pat = await ctx.resolve(request.patient);
    if (!pat || pat.type !== 'Patient')
      throw facadeError('invalid', `patient: ${request.patient.slice(0, 80)} is not a patient of this connection`);
    const form: Record<string, string> = { patientid: pat.vendorId };
    if (request.appointmentType) form.appointmenttypeid = request.appointmentType;
    const out = await this.call(() =>
      this.conn.write<Record<string, any>[]>('PUT', `/appointments/${encodeURIComponent(vendorId)}`, form, {
        signal: ctx.signal,
      }),
    );
    const rec = Array.isArray(out) && out[0]?.appointmentid ? out[0] : undefined;
    if (rec) return this.restRecord('appointment', rec, await this.department(rec.departmentid, ctx.signal));
    return (await this.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
  }

  async cancel(vendorId: string, request: { reason?: string }, ctx: FacadeCallContext): Promise<FacadeRecord> {
    const cur = await this.read('Appointment', vendorId, { ...ctx, path: 'rest' });
    if (!cur) throw facadeError('not-found', 'appointment not found at athena');
    const rec = JSON.parse(cur.body.toString('utf8')).record as Record<string, any>;
    if (!rec.patientid) throw facadeError('conflict', 'the appointment is an open slot: nothing to cancel');
    await this.call(() =>
      this.conn.write(
        'PUT',
        `/appointments/${encodeURIComponent(vendorId)}/cancel`,
        { patientid: String(rec.patientid), ...(request.reason ? { cancellationreason: request.reason } : {}) },
        { signal: ctx.signal },
      ),
    );
    return (await this.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
  }

  /**
   * Check-in (`POST /appointments/{id}/checkin`: not in the reference [U]; athena's public API has
   * it): only a booked appointment (`appointmentstatus` f) can be checked in -- an open slot, a
   * cancelled or an already checked-in appointment is a conflict, refused before the call (and
   * athena's own refusal is mapped the same way). Answers the appointment read back (status 2 ->
   * `arrived`).
   */
  async checkin(vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord> {
    const cur = await this.read('Appointment', vendorId, { ...ctx, path: 'rest' });
    if (!cur) throw facadeError('not-found', 'appointment not found at athena');
    const st = String(
      (JSON.parse(cur.body.toString('utf8')).record as Record<string, any>).appointmentstatus ?? '',
    ).toLowerCase();
    if (st === 'o') throw facadeError('conflict', 'the appointment is an open slot: book it before checking in');
    if (st === 'x') throw facadeError('conflict', 'the appointment is cancelled: it cannot be checked in');
    if (st === '2' || st === '3' || st === '4')
      throw facadeError('conflict', `the appointment is already checked in (athena appointmentstatus ${st})`);
    await this.call(() =>
      this.conn.write('POST', `/appointments/${encodeURIComponent(vendorId)}/checkin`, {}, { signal: ctx.signal }),
    );
    return (await this.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
  }
}

/** @param connections the engine's `VendorConnections` (absent: each provider has its own). */
export const athenaFacadeProvider = (connections?: () => VendorConnections): FacadeProviderRegistration => ({
  connectionSchema: athenaFacadeConnectionSchema,
  sourceTypes: ['athena-rest', 'athena-fhir'],
  sinkTypes: ['athena-rest', 'athena-fhir'],
  create: (ctx) => new AthenaFacadeProvider(ctx, connections?.()),
});
