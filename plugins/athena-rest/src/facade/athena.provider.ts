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
 *
 * The class keeps the interactions' entry points and the shared plumbing (departments, records);
 * the work per concern is in sibling modules, functions over the provider: athena-patient-chart.ts
 * (REST patient search, patient form, chart sections), athena-documents.ts, athena-scheduling.ts
 * (appointment search, $book/$cancel/$checkin), athena-dates.ts and athena-errors.ts (refusals
 * mapped to facade issues). The members those modules read (ctx, p, department, departmentList,
 * restRecord) are therefore not private.
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
  athenaSystem,
  type AthenaConnectionConfig,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { AthenaContentType, type AthenaEnvelope } from '../to-fhir/athena-records';
import { CHART_SECTIONS } from '../to-fhir/athena-chart';
import { createDocument, readDocument, restDocuments } from './athena-documents';
import { callAthena } from './athena-errors';
import { CHART_TYPES, patientForm, restChart, restPatients } from './athena-patient-chart';
import { bookAppointment, cancelAppointment, checkinAppointment, restAppointments } from './athena-scheduling';

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

export class AthenaFacadeProvider implements FacadeProvider {
  readonly vendor = 'athena';
  readonly conn: AthenaConnection;
  private departments?: { at: number; list: Record<string, any>[] };

  constructor(
    readonly ctx: FacadeProviderContext<AthenaConnectionConfig & { departmentId: string }>,
    shared?: VendorConnections,
  ) {
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
  }

  get p(): string {
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
  async departmentList(signal?: AbortSignal): Promise<Record<string, any>[]> {
    if (this.departments && Date.now() - this.departments.at < 3_600_000) return this.departments.list;
    const list: Record<string, any>[] = [];
    for await (const page of this.conn.pages('/departments', 'departments', { limit: 1000 }, { signal }))
      list.push(...page.items);
    this.departments = { at: Date.now(), list };
    return list;
  }

  async department(id: unknown, signal?: AbortSignal): Promise<Record<string, any> | undefined> {
    return (await this.departmentList(signal)).find((d) => String(d.departmentid) === String(id));
  }

  restRecord(
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

  async read(type: string, vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord | undefined> {
    const signal = ctx.signal;
    // A REST document's id (`athena-{p}-document-{id}`) is read where it came from, whichever path reads the type.
    if (type === 'DocumentReference' && (ctx.path === 'rest' || /^(admin|clinical)\//.test(vendorId)))
      return readDocument(this, vendorId, ctx);
    if (ctx.path === 'fhir') {
      const id = type === 'Patient' ? `a-${this.p}.E-${vendorId}` : vendorId;
      const r = await callAthena(() => this.conn.fhir.request({ url: `${type}/${encodeURIComponent(id)}`, signal }));
      return this.fhirRecord(r.json<Resource>(), type);
    }
    if (type === 'Patient') {
      const [rec] = await callAthena(() =>
        this.conn.get<Record<string, any>[]>(`/patients/${encodeURIComponent(vendorId)}`, undefined, { signal }),
      );
      return rec ? this.restRecord('patient', rec) : undefined;
    }
    if (type === 'Appointment') {
      const [rec] = await callAthena(() =>
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
    if (type === 'Patient') return restPatients(this, params, page, ctx);
    if (type === 'Appointment') return restAppointments(this, params, page, ctx);
    if (CHART_TYPES[type]) return restChart(this, type, params, page, ctx);
    if (type === 'DocumentReference') return restDocuments(this, params, page, ctx);
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
    const body = (await callAthena(() => this.conn.fhir.request({ url, query, signal: ctx.signal }))).json<any>();
    const records = (body?.entry ?? [])
      .map((e: any) => e.resource)
      .filter((r: Resource | undefined): r is Resource => r?.resourceType === type)
      .map((r: Resource) => this.fhirRecord(r, type));
    const next = (body?.link ?? []).find((l: any) => l.relation === 'next')?.url as string | undefined;
    return { records, next, total: typeof body?.total === 'number' ? body.total : undefined };
  }

  async create(type: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (type === 'DocumentReference') return createDocument(this, resource as DocumentReference, ctx);
    if (type !== 'Patient') throw facadeError('not-supported', `create of ${type} through athena`);
    const form = patientForm(resource as Patient);
    const missing = ['lastname', 'firstname', 'dob'].filter((k) => !form[k]);
    if (missing.length)
      throw facadeError(
        'invalid',
        `athena needs ${missing.map((m) => ({ lastname: 'name.family', firstname: 'name.given', dob: 'birthDate' })[m]).join(', ')} to register a patient`,
      );
    // athena registers a second chart for the same person without complaint: look first (same names and birth date).
    const same = await callAthena(() =>
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
    const [created] = await callAthena(() =>
      this.conn.write<Record<string, any>[]>('POST', '/patients', { ...form, departmentid }, { signal: ctx.signal }),
    );
    if (!created?.patientid)
      throw new FerryError('VENDOR_BAD_RESPONSE', 'athena POST /patients answered no patientid', { kind: 'transient' });
    return (await this.read('Patient', String(created.patientid), { ...ctx, path: 'rest' }))!;
  }

  async update(type: string, vendorId: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (type !== 'Patient') throw facadeError('not-supported', `update of ${type} through athena`);
    await callAthena(() =>
      this.conn.write('PUT', `/patients/${encodeURIComponent(vendorId)}`, patientForm(resource as Patient), {
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
    return bookAppointment(this, vendorId, request, ctx);
  }

  async cancel(vendorId: string, request: { reason?: string }, ctx: FacadeCallContext): Promise<FacadeRecord> {
    return cancelAppointment(this, vendorId, request, ctx);
  }

  /** Check-in (see checkinAppointment in athena-scheduling.ts). */
  async checkin(vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord> {
    return checkinAppointment(this, vendorId, ctx);
  }
}

/** @param connections the engine's `VendorConnections` (absent: each provider has its own). */
export const athenaFacadeProvider = (connections?: () => VendorConnections): FacadeProviderRegistration => ({
  connectionSchema: athenaFacadeConnectionSchema,
  sourceTypes: ['athena-rest', 'athena-fhir'],
  sinkTypes: ['athena-rest', 'athena-fhir'],
  create: (ctx) => new AthenaFacadeProvider(ctx, connections?.()),
});
