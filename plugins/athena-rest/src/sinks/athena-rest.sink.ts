/**
 * `type: athena-rest` sink: the writes an integration needs (reference 1.4): create/update a
 * patient, book/cancel an appointment, post a lab result document. athena writes are
 * form-encoded and NOT idempotent (reference 0, 1.3), so the sink never blind-retries: before
 * every create it reads (patient search by name + dob; the patient's lab results by LOINC, date and analytes;
 * the appointment's current state) and only writes what is missing. A `200 {success:false}` body
 * is a refused write (permanent); HTTP errors keep the kit's retryable classification.
 */
import { inject, injectable } from 'tsyringe';
import {
  coreTokens,
  FerryError,
  permanentDeliveryError,
  retryableDeliveryError,
  type Delivery,
  type MessageSink,
  type QueryValue,
} from '@ferry/core';
import type { SinkContext } from '@ferry/core';
import type {
  Appointment,
  BundleEntry,
  DiagnosticReport,
  Identifier,
  Observation,
  Patient,
  Reference,
} from '@medplum/fhirtypes';
import {
  AthenaConnection,
  vendorConnectionsToken,
  type VendorConnections,
  athenaConnectionSchema,
  formatAthenaDate,
  AH_PATIENT_SYSTEM,
  athenaSystem,
} from '@ferry/fhir-vendor-kit';
import { defineSchema, type SchemaType } from '@ferry/core';

export const athenaRestSinkSchema = defineSchema({
  ...athenaConnectionSchema,
  departmentId: {
    doc: 'Department for new patients and lab result documents',
    format: (v: unknown) => {
      if (typeof v !== 'string' && typeof v !== 'number') throw new Error('must be a string or a number');
    },
    default: '' as string | number,
  },
  timeZone: {
    doc: 'Zone used to turn instants into athena MM/DD/YYYY dates',
    format: String,
    default: 'America/New_York',
  },
  writes: {
    patients: { doc: 'Create/update patients', format: Boolean, default: true },
    appointments: { doc: 'Book/cancel appointments', format: Boolean, default: true },
    labresults: { doc: 'Post lab result documents', format: Boolean, default: true },
  },
});

export type AthenaRestSinkConfig = SchemaType<typeof athenaRestSinkSchema>;

const str = (v: unknown) => (v === undefined || v === null || v === '' ? undefined : String(v));
const dob = (d?: string) =>
  d && /^\d{4}-\d{2}-\d{2}$/.test(d) ? `${d.slice(5, 7)}/${d.slice(8, 10)}/${d.slice(0, 4)}` : undefined;

/** What one delivery did (for logs and tests; ids only). */
export interface SinkReport {
  patients: { created: string[]; updated: string[] };
  appointments: { booked: string[]; cancelled: string[]; unchanged: string[] };
  labresults: { created: string[]; existing: string[] };
  skipped: number;
}

@injectable()
export class AthenaRestSink implements MessageSink {
  readonly conn: AthenaConnection;
  private readonly cfg: AthenaRestSinkConfig;
  lastReport?: SinkReport;

  constructor(
    @inject(coreTokens.SinkContext) private readonly ctx: SinkContext<AthenaRestSinkConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    this.cfg = ctx.config;
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
  }

  async deliver(delivery: Delivery): Promise<void> {
    const report: SinkReport = {
      patients: { created: [], updated: [] },
      appointments: { booked: [], cancelled: [], unchanged: [] },
      labresults: { created: [], existing: [] },
      skipped: 0,
    };
    const entries = delivery.bundle.entry ?? [];
    /** Bundle fullUrl / Patient identifier -> athena patientid. */
    const patientIds = new Map<string, string>();
    try {
      for (const e of entries) {
        if (e.resource?.resourceType === 'Patient' && this.cfg.writes.patients)
          await this.patient(e as BundleEntry<Patient>, patientIds, report, delivery.signal);
      }
      for (const e of entries) {
        const r = e.resource;
        if (!r || r.resourceType === 'Patient') continue;
        if (r.resourceType === 'Appointment' && this.cfg.writes.appointments)
          await this.appointment(r, patientIds, report, delivery.signal);
        else if (r.resourceType === 'DiagnosticReport' && this.cfg.writes.labresults)
          await this.labResult(r, entries, patientIds, report, delivery.signal);
        else if (r.resourceType !== 'Observation') report.skipped++;
      }
    } catch (e) {
      throw this.classify(e);
    }
    this.lastReport = report;
    this.ctx.logger.info('athena writes done', {
      sink: this.ctx.id,
      deliveryId: delivery.deliveryId,
      patientsCreated: report.patients.created.length,
      patientsUpdated: report.patients.updated.length,
      appointmentsBooked: report.appointments.booked.length,
      appointmentsCancelled: report.appointments.cancelled.length,
      labResultsCreated: report.labresults.created.length,
      skipped: report.skipped,
    });
  }

  private classify(e: unknown): FerryError {
    if (FerryError.is(e) && e.code.startsWith('FERRY_E_DELIVERY_')) return e;
    const fe = FerryError.from(e);
    const details = { ...(fe.details ?? {}), body: undefined, cause: fe.code };
    return fe.retryable
      ? retryableDeliveryError('ATHENA', fe.message, details, fe)
      : permanentDeliveryError('ATHENA', fe.message, details, fe);
  }

  private athenaPatientId(ids: Identifier[] | undefined): string | undefined {
    const p = this.conn.practiceId;
    for (const i of ids ?? []) {
      if (i.system === athenaSystem('patient', p) && i.value) return i.value;
      const m = i.system === AH_PATIENT_SYSTEM ? /^a-(\d+)\.E-(\d+)$/.exec(i.value ?? '') : null;
      if (m && m[1] === p) return m[2];
    }
    return undefined;
  }

  private patientForm(pat: Patient): Record<string, QueryValue> {
    const name = pat.name?.find((n) => n.use === 'official') ?? pat.name?.[0];
    const addr = pat.address?.find((a) => a.use === 'home') ?? pat.address?.[0];
    const phone = (use: string) => pat.telecom?.find((t) => t.system === 'phone' && t.use === use)?.value;
    return {
      departmentid: str(this.cfg.departmentId),
      firstname: name?.given?.[0],
      middlename: name?.given?.[1],
      lastname: name?.family,
      dob: dob(pat.birthDate),
      sex: pat.gender === 'male' ? 'M' : pat.gender === 'female' ? 'F' : undefined,
      address1: addr?.line?.[0],
      address2: addr?.line?.[1],
      city: addr?.city,
      state: addr?.state,
      zip: addr?.postalCode,
      homephone: phone('home'),
      mobilephone: phone('mobile'),
      workphone: phone('work'),
      email: pat.telecom?.find((t) => t.system === 'email')?.value,
    };
  }

  /** `signal`: the engine's, aborted when the attempt runs past the sink's deliveryTimeoutMs (no more requests, no more retries). */
  private async patient(
    e: BundleEntry<Patient>,
    patientIds: Map<string, string>,
    report: SinkReport,
    signal?: AbortSignal,
  ): Promise<void> {
    const pat = e.resource!;
    const form = this.patientForm(pat);
    let id = this.athenaPatientId(pat.identifier);
    if (!id) {
      // Reconcile by reading: a create that timed out may have happened.
      if (!form.firstname || !form.lastname || !form.dob)
        throw permanentDeliveryError(
          'ATHENA_PATIENT_INCOMPLETE',
          'a new athena patient needs given name, family name and birth date',
        );
      const found = await this.conn.get<{ patients?: { patientid: unknown }[] }>(
        '/patients',
        { firstname: form.firstname, lastname: form.lastname, dob: form.dob, limit: 2 },
        { signal },
      );
      const matches = found?.patients ?? [];
      if (matches.length > 1)
        throw permanentDeliveryError(
          'ATHENA_PATIENT_AMBIGUOUS',
          `${matches.length} athena patients match name and birth date; not writing`,
        );
      if (matches.length === 1) id = String(matches[0].patientid);
    }
    if (id) {
      const { departmentid, ...update } = form;
      void departmentid;
      await this.conn.write('PUT', `/patients/${id}`, update, { signal });
      report.patients.updated.push(id);
    } else {
      if (!form.departmentid)
        throw permanentDeliveryError('ATHENA_NO_DEPARTMENT', 'creating an athena patient needs the sink departmentId');
      const res = await this.conn.write<{ patientid: unknown }[]>('POST', '/patients', form, { signal });
      id = str(Array.isArray(res) ? res[0]?.patientid : (res as any)?.patientid);
      if (!id)
        throw permanentDeliveryError('ATHENA_NO_PATIENTID', 'athena answered a patient create without a patientid');
      report.patients.created.push(id);
    }
    if (e.fullUrl) patientIds.set(e.fullUrl, id);
    for (const i of pat.identifier ?? []) patientIds.set(`${i.system}|${i.value}`, id);
  }

  private refPatient(ref: Reference | undefined, patientIds: Map<string, string>): string | undefined {
    if (!ref) return undefined;
    if (ref.identifier) {
      const direct = this.athenaPatientId([ref.identifier]);
      if (direct) return direct;
      const mapped = patientIds.get(`${ref.identifier.system}|${ref.identifier.value}`);
      if (mapped) return mapped;
    }
    if (ref.reference) return patientIds.get(ref.reference);
    return undefined;
  }

  private async appointment(
    a: Appointment,
    patientIds: Map<string, string>,
    report: SinkReport,
    signal?: AbortSignal,
  ): Promise<void> {
    const p = this.conn.practiceId;
    const aid = a.identifier?.find((i) => i.system === athenaSystem('appointment', p))?.value;
    if (!aid)
      throw permanentDeliveryError(
        'ATHENA_NO_SLOT',
        'booking on athena needs the athena appointment (open slot) id as identifier',
      );
    const pid = this.refPatient(
      a.participant?.find(
        (x) =>
          x.actor?.type === 'Patient' ||
          x.actor?.reference?.startsWith('Patient/') ||
          x.actor?.reference?.startsWith('urn:'),
      )?.actor,
      patientIds,
    );
    if (!pid)
      throw permanentDeliveryError(
        'ATHENA_NO_PATIENT',
        `appointment ${aid}: no athena patient id for the patient participant`,
      );
    // Read first: the state tells us whether the write already happened.
    const current = (await this.conn.get<any[]>(`/appointments/${aid}`, undefined, { signal }))?.[0];
    if (!current) throw permanentDeliveryError('ATHENA_NO_SLOT', `appointment ${aid} not found`);
    const status = String(current.appointmentstatus ?? '');
    if (a.status === 'cancelled' || a.status === 'noshow') {
      if (status === 'x') {
        report.appointments.unchanged.push(aid);
        return;
      }
      await this.conn.write(
        'PUT',
        `/appointments/${aid}/cancel`,
        { patientid: pid, cancellationreason: a.cancelationReason?.text },
        { signal },
      );
      report.appointments.cancelled.push(aid);
      return;
    }
    if (status !== 'o') {
      if (String(current.patientid ?? '') === pid) {
        report.appointments.unchanged.push(aid);
        return;
      }
      throw permanentDeliveryError('ATHENA_SLOT_TAKEN', `appointment ${aid} is not an open slot`);
    }
    const typeId = a.serviceType
      ?.flatMap((s) => s.coding ?? [])
      .find((c) => c.system === athenaSystem('appointmenttype', p))?.code;
    await this.conn.write('PUT', `/appointments/${aid}`, { patientid: pid, appointmenttypeid: typeId }, { signal });
    report.appointments.booked.push(aid);
  }

  /**
   * Post a lab result document once. athena has no idempotency key for writes (reference 0, 1.3)
   * and its lab result shape documents no accession id (1.4, 1.10: `labresultid`,
   * `labresultloinc`, `labresultdatetime`, `description`, `analytes[{analytename, value, …}]`), so
   * "already posted?" is answered from those documented fields: a result in the patient's chart
   * (the department's, read page by page) with the same LOINC (or description when there is none),
   * the same observation date and the same analytes (name + value) is this one. Two results that
   * agree on all of that are the same result for the chart.
   */
  private async labResult(
    rep: DiagnosticReport,
    entries: BundleEntry[],
    patientIds: Map<string, string>,
    report: SinkReport,
    signal?: AbortSignal,
  ): Promise<void> {
    const pid = this.refPatient(rep.subject, patientIds);
    if (!pid) throw permanentDeliveryError('ATHENA_NO_PATIENT', 'lab result: no athena patient id for the subject');
    const dept = str(this.cfg.departmentId);
    if (!dept) throw permanentDeliveryError('ATHENA_NO_DEPARTMENT', 'posting a lab result needs the sink departmentId');
    const byUrl = new Map(entries.map((e) => [e.fullUrl, e.resource]));
    const observations = (rep.result ?? [])
      .map((r) => byUrl.get(r.reference) as Observation | undefined)
      .filter((o): o is Observation => o?.resourceType === 'Observation');
    const analytes = observations.map((o) => ({
      analytename: o.code?.text ?? o.code?.coding?.[0]?.display,
      loinc: o.code?.coding?.find((c) => c.system === 'http://loinc.org')?.code,
      value: o.valueQuantity?.value ?? o.valueString ?? o.valueCodeableConcept?.text,
      units: o.valueQuantity?.unit,
      referencerange: o.referenceRange?.[0]?.text,
      abnormalflag: o.interpretation?.[0]?.coding?.[0]?.code,
    }));
    const when = rep.effectiveDateTime ?? rep.issued;
    const form = {
      departmentid: dept,
      labresultloinc: rep.code?.coding?.find((c) => c.system === 'http://loinc.org')?.code,
      description: rep.code?.text,
      observationdate: when ? formatAthenaDate(Date.parse(when), this.cfg.timeZone) : undefined,
      resultstatus: rep.status,
      analytes: analytes.length ? JSON.stringify(analytes) : undefined,
    };
    // Reconcile: was it already posted (a timed-out or replayed earlier attempt)?
    const existing = await this.findLabResult(
      pid,
      dept,
      form.labresultloinc,
      form.description,
      form.observationdate,
      analytes,
      signal,
    );
    if (existing) {
      report.labresults.existing.push(existing);
      return;
    }
    const res = await this.conn.write<{ labresultid?: unknown }>('POST', `/patients/${pid}/documents/labresult`, form, {
      signal,
    });
    report.labresults.created.push(String(res?.labresultid ?? ''));
  }

  /** The labresultid of a chart result matching the documented fields (see `labResult`), if any. */
  private async findLabResult(
    pid: string,
    dept: string,
    loinc: string | undefined,
    description: string | undefined,
    date: string | undefined,
    analytes: { analytename?: string; value?: unknown }[],
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const key = (list: { analytename?: unknown; value?: unknown }[]) =>
      list
        .map(
          (a) =>
            `${String(a.analytename ?? '')
              .trim()
              .toLowerCase()}=${String(a.value ?? '').trim()}`,
        )
        .sort()
        .join('|');
    const want = key(analytes);
    const query = {
      departmentid: dept,
      showhidden: 'true',
      limit: 1000,
      ...(date ? { startdate: date, enddate: date } : {}),
    };
    for await (const page of this.conn.pages<Record<string, any>>(`/chart/${pid}/labresults`, 'results', query, {
      signal,
    })) {
      for (const r of page.items) {
        const sameTest = loinc ? str(r.labresultloinc) === loinc : str(r.description) === description;
        const sameDate = !date || String(r.labresultdatetime ?? '').startsWith(date);
        if (sameTest && sameDate && key(Array.isArray(r.analytes) ? r.analytes : []) === want)
          return String(r.labresultid);
      }
    }
    return undefined;
  }
}
