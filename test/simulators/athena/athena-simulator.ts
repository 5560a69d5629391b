/**
 * A local athenaOne simulator, built from `../shared/docs/vendor-apis.md` §0–2 (not from the
 * plugins' assumptions): the OAuth 2.0 client-credentials token endpoint, the proprietary REST
 * API under `/v1/{practiceid}` and the FHIR R4 API under `/fhir/r4`, on a real HTTP server bound
 * to 127.0.0.1.
 *
 * Modelled behaviour (reference section in brackets):
 * - `POST /oauth2/v1/token`, HTTP Basic client id/secret, `grant_type=client_credentials` [1.2];
 *   `expires_in` as a string or a number; missing/expired/revoked bearer -> 401 [1.2, 1.8].
 * - Form-encoded writes; single-entity GETs answer arrays; mixed string/number types
 *   (`/labresults/changed` ids are ints) [1.3, 1.10].
 * - `limit`/`offset` paging with `next`/`previous` relative URLs including `/v1/{practiceid}` [1.6].
 * - Changed-data feeds per (practice, feed, client): 403 "not subscribed" until a subscription
 *   POST (activation delay configurable); plain GET dequeues; `leaveunprocessed=true` peeks;
 *   `showprocessedstartdatetime/enddatetime` re-read processed messages in a window [1.5].
 * - Errors `{error, detailedmessage}`; 200 `{success:false, errormessage}` on some writes [1.8].
 * - Department-local appointment wall times, departments with `timezonename` [1.7].
 * - FHIR: athena id scheme `a-{p}.E-{id}`, identifier systems, `ah-*` extensions, searches
 *   refused without `ah-practice`, `_count` + `cursor` paging with absolute `next` links,
 *   `_lastUpdated` prefixes [2.2, 2.3]; only the search parameters the captured
 *   CapabilityStatement lists per type (no `_lastUpdated` on Patient: 400) [2.3]; resources served
 *   without `meta` when changed with `changeClinical(…, { unversioned: true })`.
 * - Token scopes enforced: REST needs `athena/service/Athenanet.MDP.*`, FHIR `system/<Type>.read`
 *   (create `.write`); otherwise 403 "The access token lacks …" [1.2, 2.1].
 * - Lab results: the changed feed carries the event fields only (no analytes, no LOINC), the chart
 *   read answers the documented shape (`labresultid`, `labresultloinc`, `labresultdatetime`,
 *   `description`, `analytes`; no accession id) [1.4, 1.10].
 * - Chart sections `GET /chart/{patientid}/problems|medications|allergies|vitals|vaccines`
 *   (departmentid required, paged), set with `setChart` (item fields [U]); problems/medications changes feed the `problems` /
 *   `prescriptions` changed feeds [1.4].
 * - Documents [1.4]: `GET /patients/{patientid}/documents/admin` (departmentid required; list key
 *   `admins` and item fields [U]), `POST /documents/clinicaldocument` (form `patientid`,
 *   `departmentid`, `documentsubclass` [U], `attachmentcontents` base64 [U]; answers
 *   `{clinicaldocumentid, success}` / `{success:false, errormessage}`), and the read-back
 *   `GET /patients/{patientid}/documents/clinicaldocument/{id}` [U: not in the reference].
 * - Check-in `POST /appointments/{id}/checkin` [U: not in the reference; athena's public API has
 *   it]: a future appointment becomes `appointmentstatus` 2 (a `CheckIn` event); open, cancelled or
 *   already checked-in ones are refused (`checkinRefusal`: 200 `{success:false}` or HTTP 400).
 * - Fault injection [0]: token TTL, 401 on the Nth call, 429 with/without Retry-After (or the
 *   legacy 403 "Developer Over Qps"), a server-side QPS limit, latency, page size, 5xx bursts,
 *   a request log, a settable clock.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fromAthenaDateTime, toAthenaDateTime } from './wall-time';

export type Json = Record<string, any>;

export interface AthenaSimulatorOptions {
  /** client id -> secret. Default `{ 'ferry-client': 'ferry-secret' }`. */
  clients?: Record<string, string>;
  /** Token lifetime in seconds (default 3600). */
  tokenTtlSec?: number;
  /**
   * `expires_in` announced to the client, when it should differ from the real lifetime
   * (athena's "intermittent 401s near expiry", reference 1.2: the token dies before the client expects).
   */
  advertisedTtlSec?: number;
  /** Send `expires_in` as a string (as some athena responses do). Default true. */
  expiresInAsString?: boolean;
  /** Default page size when `limit` is absent (default 1500 [U]). */
  defaultLimit?: number;
  /** Largest `limit` honoured (default 5000 [U]). */
  maxLimit?: number;
  /** Default FHIR `_count` (default 50). */
  fhirDefaultCount?: number;
  /** Server-side throttle per (client, practice): requests per second; unset = none. */
  qps?: number;
  /** Status of a throttled answer: 429 (default) or the legacy 403 "Developer Over Qps". */
  throttleStatus?: 429 | 403;
  /** Retry-After seconds on throttled answers; undefined = no header. */
  throttleRetryAfterSec?: number;
  /** Added to every answer. */
  latencyMs?: number;
  /** Subscription POSTs take effect after this long (prod 5 min, preview 10–15 min; default 0). */
  subscriptionDelayMs?: number;
  /** Time zone of `showprocessed*datetime` params and `lastmodified` stamps (default America/New_York [U]). */
  serverTimeZone?: string;
  /**
   * Enforce token scopes (default true): REST calls need `athena/service/Athenanet.MDP.*`, FHIR
   * reads `system/<Type>.read` (or `.rs`), FHIR creates `system/<Type>.write` (or `.c`) [1.2, 2.1];
   * otherwise 403 "lacks <scope>".
   */
  enforceScopes?: boolean;
  /**
   * Enforce the search parameters the captured CapabilityStatement lists per type (default true):
   * an unlisted parameter (e.g. `_lastUpdated` on Patient) is a 400 [2.3].
   */
  enforceSearchParams?: boolean;
  /** Document subclasses `POST /documents/clinicaldocument` accepts (not in the reference [U]). */
  clinicalDocumentSubclasses?: string[];
  /** How `POST /appointments/{id}/checkin` refuses [U]: 200 `{success:false, errormessage}` (default) or HTTP 400 `{error}`. */
  checkinRefusal?: 'success-false' | 'http-400';
  now?: () => number;
}

/** Search parameters per type from the captured CapabilityStatement (reference 2.3); `_id` is always allowed. */
export const FHIR_SEARCH_PARAMS: Record<string, string[]> = {
  Appointment: ['base-appointment-id', 'group-appointment-id'],
  Condition: ['patient', 'category', 'code', 'encounter', '_lastUpdated'],
  DiagnosticReport: ['patient', 'category', 'code', 'date', 'result'],
  DocumentReference: ['patient', 'category', 'type', 'date', 'encounter'],
  Encounter: ['patient', 'date', 'location', 'practitioner'],
  MedicationRequest: ['patient', 'intent', 'status', 'authoredon'],
  Observation: ['patient', 'category', 'code', 'date', 'encounter'],
  Patient: ['identifier', 'name', 'family', 'given', 'birthdate', 'gender'],
  Provenance: ['target'],
};
/** Parameters every search may carry: athena's custom ones and paging (reference 2.2, 2.3). */
const FHIR_COMMON_PARAMS = ['_id', 'ah-practice', 'ah-department', 'ah-brand', 'ah-provider-group', 'ah-chart-sharing-group', '_security', '_count', 'cursor'];

export interface Fault {
  /** Status to answer. */
  status: number;
  /** How many matching calls get it (default 1). */
  times?: number;
  /** Retry-After header value, if any. */
  retryAfter?: string;
  /** Only calls whose path matches. */
  match?: RegExp;
  /** Only calls whose query string matches (e.g. /cursor=/ for an expired FHIR paging cursor). */
  query?: RegExp;
  body?: unknown;
  /** Apply to the token endpoint instead of API calls. */
  token?: boolean;
}

export interface SimRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: string;
  status: number;
  at: number;
  clientId?: string;
  practiceId?: string;
}

interface FeedEvent {
  seq: number;
  createdAt: number;
  processedAt?: number;
  departmentid?: string;
  record: Json;
}

interface Subscription {
  requestedAt: number;
  eventnames: string[];
}

interface PracticeData {
  departments: Json[];
  providers: Json[];
  patients: Map<string, Json>;
  appointments: Map<string, Json>;
  /** patientid -> lab results */
  labresults: Map<string, Json[]>;
  /** `${patientid}|${section}` -> chart records (problems, medications, allergies, vitals) */
  chart: Map<string, Json[]>;
  /** patientid -> documents (admin and clinical; `documentclass` tells them apart) */
  documents: Map<string, Json[]>;
  /** `${clientId}|${feed}` -> subscription / queue */
  subscriptions: Map<string, Subscription>;
  queues: Map<string, FeedEvent[]>;
  nextId: number;
}

const FEEDS = ['patients', 'appointments', 'labresults', 'providers', 'prescriptions', 'problems', 'documents/patientcase'] as const;
const APPOINTMENT_EVENTS = ['ScheduleAppointment', 'CheckIn', 'CheckOut', 'UpdateAppointment', 'CancelAppointment', 'FreezeAppointment', 'UnfreezeAppointment', 'DeleteAppointment'];
const NOT_SUBSCRIBED = 'Changed messages require setup (subscription) that has not been done.';

interface IssuedToken {
  clientId: string;
  expiresAt: number;
  scope: string;
}

export class AthenaSimulator {
  readonly opts: Required<Omit<AthenaSimulatorOptions, 'qps' | 'throttleRetryAfterSec' | 'now' | 'advertisedTtlSec'>> & Pick<AthenaSimulatorOptions, 'qps' | 'throttleRetryAfterSec' | 'advertisedTtlSec'>;
  url = '';
  readonly requests: SimRequest[] = [];
  readonly faults: Fault[] = [];
  tokensIssued = 0;
  /** API calls seen (token endpoint excluded), for `failNthCall`. */
  apiCalls = 0;
  private readonly failOnCall = new Map<number, number>();
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly practices = new Map<string, PracticeData>();
  private readonly fhir = new Map<string, Map<string, Json>>();
  private readonly throttleWindows = new Map<string, number[]>();
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private seq = 0;
  now: () => number;

  constructor(opts: AthenaSimulatorOptions = {}) {
    this.opts = {
      clients: opts.clients ?? { 'ferry-client': 'ferry-secret' },
      tokenTtlSec: opts.tokenTtlSec ?? 3600,
      advertisedTtlSec: opts.advertisedTtlSec,
      expiresInAsString: opts.expiresInAsString ?? true,
      defaultLimit: opts.defaultLimit ?? 1500,
      maxLimit: opts.maxLimit ?? 5000,
      fhirDefaultCount: opts.fhirDefaultCount ?? 50,
      qps: opts.qps,
      throttleStatus: opts.throttleStatus ?? 429,
      throttleRetryAfterSec: opts.throttleRetryAfterSec,
      latencyMs: opts.latencyMs ?? 0,
      subscriptionDelayMs: opts.subscriptionDelayMs ?? 0,
      serverTimeZone: opts.serverTimeZone ?? 'America/New_York',
      enforceScopes: opts.enforceScopes ?? true,
      enforceSearchParams: opts.enforceSearchParams ?? true,
      clinicalDocumentSubclasses: opts.clinicalDocumentSubclasses ?? ['ADMISSIONDISCHARGE', 'CLINICALDOCUMENT', 'CONSULTNOTE', 'PROGRESSNOTE', 'OPERATIVENOTE', 'LETTER'],
      checkinRefusal: opts.checkinRefusal ?? 'success-false',
    };
    this.now = opts.now ?? Date.now;
  }

  static async start(opts: AthenaSimulatorOptions = {}): Promise<AthenaSimulator> {
    const sim = new AthenaSimulator(opts);
    await sim.listen();
    return sim;
  }

  get tokenUrl(): string {
    return `${this.url}/oauth2/v1/token`;
  }
  get fhirBase(): string {
    return `${this.url}/fhir/r4`;
  }
  restBase(practiceId: string): string {
    return `${this.url}/v1/${practiceId}`;
  }

  async listen(port = 0): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server!.close(r));
    this.server = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Fault injection & inspection

  inject(fault: Fault): void {
    this.faults.push({ times: 1, ...fault });
  }
  /** Answer the n-th API call from now (1 = next) with `status` (default 401). */
  failNthCall(n: number, status = 401): void {
    this.failOnCall.set(this.apiCalls + n, status);
  }
  /** Every token issued so far stops working (as after a key rotation). */
  revokeAllTokens(): void {
    this.tokens.clear();
  }
  /** Delay every answer, or only those matching `only` (the call is still carried out). */
  setLatency(ms: number, only?: { method?: string; match?: RegExp }): void {
    if (only) this.latencyRule = { ms, ...only };
    else {
      this.opts.latencyMs = ms;
      this.latencyRule = undefined;
    }
  }
  private latencyRule?: { ms: number; method?: string; match?: RegExp };
  setQps(qps: number | undefined, retryAfterSec?: number, status: 429 | 403 = 429): void {
    this.opts.qps = qps;
    this.opts.throttleRetryAfterSec = retryAfterSec;
    this.opts.throttleStatus = status;
  }
  apiRequests(pathPart?: string): SimRequest[] {
    return this.requests.filter((r) => !r.path.startsWith('/oauth2') && (!pathPart || r.path.includes(pathPart)));
  }
  /** Events still unprocessed in a feed queue (for assertions). */
  pendingEvents(practiceId: string, feed: string, clientId = Object.keys(this.opts.clients)[0]): number {
    return (this.practice(practiceId).queues.get(`${clientId}|${feed}`) ?? []).filter((e) => e.processedAt === undefined).length;
  }

  // -------------------------------------------------------------------------------------------
  // Data

  practice(p: string): PracticeData {
    let d = this.practices.get(p);
    if (!d) {
      d = { departments: [], providers: [], patients: new Map(), appointments: new Map(), labresults: new Map(), chart: new Map(), documents: new Map(), subscriptions: new Map(), queues: new Map(), nextId: 1000 };
      this.practices.set(p, d);
    }
    return d;
  }

  /** Subscribe a client directly (test setup), active immediately. */
  subscribe(p: string, feed: string, clientId = Object.keys(this.opts.clients)[0]): void {
    this.practice(p).subscriptions.set(`${clientId}|${feed}`, { requestedAt: this.now() - this.opts.subscriptionDelayMs, eventnames: [] });
  }

  addDepartment(p: string, dept: Json): Json {
    const d = this.practice(p);
    const rec: Json = { departmentid: String(dept.departmentid ?? d.nextId++), ...dept };
    d.departments.push(rec);
    this.putFhir(p, 'Location', `a-${p}.Department-${rec.departmentid}`, {
      resourceType: 'Location',
      name: rec.name,
      status: 'active',
      identifier: [{ system: 'https://fhir.athena.io/sid/ah-department', value: `a-${p}.Department-${rec.departmentid}` }],
    });
    return rec;
  }

  addProvider(p: string, prov: Json): Json {
    const d = this.practice(p);
    const rec = { providerid: prov.providerid ?? d.nextId++, ...prov }; // providerid is a number in athena's list
    d.providers.push(rec);
    this.emit(p, 'providers', rec, undefined, 'UpdateProvider');
    return rec;
  }

  /** Create or update a patient (as a user of athenaOne would), feeding the changed-data queues. */
  upsertPatient(p: string, patient: Json): Json {
    const d = this.practice(p);
    const id = String(patient.patientid ?? d.nextId++);
    const existed = d.patients.has(id);
    const rec: Json = { ...(d.patients.get(id) ?? {}), ...patient, patientid: id, lastmodified: toAthenaDateTime(this.now(), this.opts.serverTimeZone) };
    d.patients.set(id, rec);
    this.emit(p, 'patients', rec, rec.departmentid, existed ? 'UpdatePatient' : 'AddPatient');
    this.putFhir(p, 'Patient', `a-${p}.E-${id}`, this.athenaFhirPatient(p, rec));
    return rec;
  }

  upsertAppointment(p: string, appt: Json, eventname = 'ScheduleAppointment'): Json {
    const d = this.practice(p);
    const id = String(appt.appointmentid ?? d.nextId++);
    const rec: Json = { ...(d.appointments.get(id) ?? {}), ...appt, appointmentid: id, lastmodified: toAthenaDateTime(this.now(), this.opts.serverTimeZone) };
    d.appointments.set(id, rec);
    this.emit(p, 'appointments', rec, rec.departmentid, eventname);
    return rec;
  }

  /**
   * A document in a patient's chart (reference 1.4 documents; fields [U]): `documentclass` ADMIN
   * (listed by `/documents/admin`) or CLINICALDOCUMENT. Answers the stored record with its id.
   */
  addDocument(p: string, patientid: string, doc: Json): Json {
    const d = this.practice(p);
    const id = String(doc.documentid ?? d.nextId++);
    const cls = String(doc.documentclass ?? 'ADMIN').toUpperCase();
    const rec: Json = {
      documentclass: cls,
      status: 'REVIEW',
      createddatetime: toAthenaDateTime(this.now(), this.opts.serverTimeZone),
      ...doc,
      ...(cls === 'ADMIN' ? { adminid: id } : { clinicaldocumentid: id }),
      documentid: id,
      patientid: String(patientid),
    };
    const list = d.documents.get(String(patientid)) ?? [];
    list.push(rec);
    d.documents.set(String(patientid), list);
    return rec;
  }

  /** A stored document as the API answers it (no attachment bytes). */
  private documentView(r: Json): Json {
    const { attachmentcontents: _a, documentid: _d, ...rest } = r;
    return { ...rest, ...(_a ? { pagecount: 1 } : {}) };
  }

  /**
   * Replace a chart section of a patient (reference 1.4 `GET /chart/{patientid}/problems|
   * medications|allergies|vitals|vaccines`; item fields are athena's [U], see the plugin's chart transform).
   * A change to problems emits a `problems` changed-feed event and to medications a `prescriptions`
   * one (reference 1.4 feed types); the reference lists no feed for allergies or vitals.
   */
  setChart(p: string, patientid: string, section: 'problems' | 'medications' | 'allergies' | 'vitals' | 'vaccines', items: Json[], departmentid = '1'): void {
    const d = this.practice(p);
    d.chart.set(`${patientid}|${section}`, structuredClone(items));
    const feed = section === 'problems' ? 'problems' : section === 'medications' ? 'prescriptions' : undefined;
    if (feed) this.emit(p, feed, { patientid: Number(patientid), departmentid, eventname: 'Update' }, departmentid, 'Update');
  }

  /**
   * A lab result in the patient's chart. `result` may hold the chart fields (`labresultloinc`,
   * `description`, `analytes`, `observationdatetime`, `status`, `departmentid`); the chart read
   * answers only the documented shape (see `chartLabResult`), and the changed feed carries the
   * event fields only — no analytes, no LOINC (reference 1.4).
   */
  addLabResult(p: string, patientid: string, result: Json): Json {
    const d = this.practice(p);
    const labresultid = result.labresultid ?? d.nextId++;
    const rec: Json = { ...result, labresultid, observationdatetime: result.observationdatetime ?? new Date(this.now()).toISOString() };
    const list = d.labresults.get(String(patientid)) ?? [];
    const at = list.findIndex((x) => String(x.labresultid) === String(labresultid));
    if (at >= 0) list[at] = { ...list[at], ...rec };
    else list.push(rec);
    d.labresults.set(String(patientid), list);
    // The changed feed carries ints for ids and ISO-8601 with offset (reference 1.3, 1.7), and no analytes (1.4).
    this.emit(p, 'labresults', { labresultid: Number(labresultid), patientid: Number(patientid), departmentid: result.departmentid, status: rec.status ?? 'FINAL', observationdatetime: rec.observationdatetime }, result.departmentid, at >= 0 ? 'UpdateLabResult' : 'AddLabResult');
    return rec;
  }

  /**
   * A stored lab result as `GET /chart/{patientid}/labresults` answers it (reference 1.4, 1.10):
   * `labresultid` (a number), `labresultloinc`, `labresultdatetime` (MM/DD/YYYY HH:mm:ss, the
   * server zone), `description`, `analytes[{analyteid, analytename, value, analytedatetime}]`.
   * Analyte `units`/`referencerange`/`abnormalflag`/`loinc` are passed through when the test data
   * has them [U]. Nothing else (no accession id: the reference does not document one).
   */
  private chartLabResult(r: Json): Json {
    const ms = /^\d{2}\/\d{2}\/\d{4}/.test(String(r.observationdatetime)) ? fromAthenaDateTime(String(r.observationdatetime).length === 10 ? `${r.observationdatetime} 00:00:00` : r.observationdatetime, this.opts.serverTimeZone) : Date.parse(r.observationdatetime);
    const when = toAthenaDateTime(ms ?? this.now(), this.opts.serverTimeZone);
    const out: Json = { labresultid: Number(r.labresultid), labresultdatetime: when, description: r.description, labresultloinc: r.labresultloinc, status: r.status };
    out.analytes = (Array.isArray(r.analytes) ? r.analytes : []).map((a: Json, i: number) => {
      const an: Json = { analyteid: Number(a.analyteid ?? Number(r.labresultid) * 100 + i + 1), analytename: a.analytename, value: a.value === undefined || a.value === null ? undefined : String(a.value), analytedatetime: when };
      for (const k of ['units', 'referencerange', 'abnormalflag', 'loinc']) if (a[k] !== undefined) an[k] = a[k];
      return an;
    });
    return JSON.parse(JSON.stringify(out));
  }

  /**
   * A clinical change as athena records it: the FHIR resource gets a new version (without
   * `meta.versionId`/`lastUpdated` when `unversioned`) and the REST changed feed that concerns it
   * gets an event naming the patient (reference 1.4, 1.5: e.g. a lab result -> `labresults`).
   */
  changeClinical(p: string, type: string, id: string, resource: Json, feed: string, patientid: string, opts: { unversioned?: boolean } = {}): Json {
    const r = this.putFhir(p, type, id, resource);
    if (opts.unversioned) r._unversioned = true;
    this.emit(p, feed, { patientid: Number(patientid), [`${type.toLowerCase()}id`]: id }, undefined, 'Update');
    return r;
  }

  /** Put a FHIR resource (athena id scheme) into the FHIR side. */
  /** The FHIR resources of a type held (for assertions). */
  fhirResources(type: string): Json[] {
    return [...(this.fhir.get(type)?.values() ?? [])];
  }

  putFhir(p: string, type: string, id: string, resource: Json): Json {
    let m = this.fhir.get(type);
    if (!m) this.fhir.set(type, (m = new Map()));
    const prev = m.get(id);
    const version = prev ? Number(prev.meta?.versionId ?? 1) + 1 : 1;
    const r = { ...resource, resourceType: type, id, meta: { versionId: String(version), lastUpdated: new Date(this.now()).toISOString() }, _practice: p };
    m.set(id, r);
    return r;
  }

  private athenaFhirPatient(p: string, rec: Json): Json {
    const [mm, dd, yyyy] = String(rec.dob ?? '').split('/');
    return {
      resourceType: 'Patient',
      extension: [
        { url: 'https://fhir.athena.io/StructureDefinition/ah-brand', valueReference: { reference: `Organization/a-${p}.Brand-1` } },
        { url: 'https://fhir.athena.io/StructureDefinition/ah-chart-sharing-group', valueReference: { reference: `Organization/a-${p}.CSG-1` } },
        { url: 'https://fhir.athena.io/StructureDefinition/ah-provider-group', valueReference: { reference: `Organization/a-${p}.PG-1` } },
        { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: rec.sex === 'F' ? 'F' : rec.sex === 'M' ? 'M' : 'UNK' },
      ],
      identifier: [{ system: 'https://fhir.athena.io/sid/ah-patient', value: `a-${p}.E-${rec.patientid}` }],
      active: rec.status !== 'inactive',
      name: [{ use: 'official', family: rec.lastname, given: [rec.firstname].filter(Boolean) }],
      telecom: rec.homephone ? [{ system: 'phone', value: rec.homephone, use: 'home' }] : undefined,
      gender: rec.sex === 'F' ? 'female' : rec.sex === 'M' ? 'male' : 'unknown',
      birthDate: yyyy ? `${yyyy}-${mm}-${dd}` : undefined,
      address: rec.address1 ? [{ use: 'home', line: [rec.address1], city: rec.city, state: rec.state, postalCode: rec.zip, country: 'USA' }] : undefined,
    };
  }

  /** Record a change in every subscribed client's queue for that feed. */
  private emit(p: string, feed: string, record: Json, departmentid: unknown, _eventname: string): void {
    const d = this.practice(p);
    for (const clientId of Object.keys(this.opts.clients)) {
      const key = `${clientId}|${feed}`;
      const sub = d.subscriptions.get(key);
      if (!sub || this.now() < sub.requestedAt + this.opts.subscriptionDelayMs) continue;
      const q = d.queues.get(key) ?? [];
      q.push({ seq: ++this.seq, createdAt: this.now(), departmentid: departmentid === undefined ? undefined : String(departmentid), record: structuredClone(record) });
      d.queues.set(key, q);
    }
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const u = new URL(req.url ?? '/', 'http://localhost');
    const entry: SimRequest = { method: req.method ?? 'GET', path: u.pathname, query: u.searchParams, headers: req.headers, body, status: 0, at: this.now() };
    this.requests.push(entry);
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      const text = payload === undefined ? '' : typeof payload === 'string' ? payload : JSON.stringify(payload);
      const reply = () => {
        res.writeHead(status, { 'Content-Type': entry.path.startsWith('/fhir') ? 'application/fhir+json' : 'application/json', 'X-Request-Id': String(req.headers['x-request-id'] ?? randomUUID()), ...headers });
        res.end(text);
      };
      const rule = this.latencyRule;
      const ruleMs = rule && (!rule.method || rule.method === entry.method) && (!rule.match || rule.match.test(entry.path)) ? rule.ms : 0;
      const delay = Math.max(this.opts.latencyMs, ruleMs);
      if (delay > 0) setTimeout(reply, delay);
      else reply();
    };
    try {
      if (u.pathname === '/oauth2/v1/token') return this.token(req, body, send);
      // ---- API call
      this.apiCalls++;
      const auth = /^Bearer (.+)$/i.exec(String(req.headers.authorization ?? ''));
      const tok = auth ? this.tokens.get(auth[1]) : undefined;
      if (!tok || this.now() >= tok.expiresAt) return send(401, { error: 'Developer Inactive', detailedmessage: tok ? 'The access token has expired.' : 'Missing or invalid bearer token.' });
      entry.clientId = tok.clientId;
      const forced = this.failOnCall.get(this.apiCalls);
      if (forced) {
        this.failOnCall.delete(this.apiCalls);
        return send(forced, forced === 401 ? { error: 'Developer Inactive' } : { error: 'Injected failure' });
      }
      const fault = this.takeFault(u.pathname, false, u.search);
      if (fault) return send(fault.status, fault.body ?? { error: fault.status === 429 ? 'Too Many Requests' : 'Injected failure' }, fault.retryAfter !== undefined ? { 'Retry-After': fault.retryAfter } : {});
      const rest = /^\/v1\/([^/]+)(\/.*)?$/.exec(u.pathname);
      const practiceId = rest?.[1] ?? u.searchParams.get('ah-practice')?.replace(/^.*Practice-/, '') ?? '-';
      entry.practiceId = practiceId;
      if (this.throttled(`${tok.clientId}|${practiceId}`)) {
        const h: Record<string, string> = this.opts.throttleRetryAfterSec !== undefined ? { 'Retry-After': String(this.opts.throttleRetryAfterSec) } : {};
        return this.opts.throttleStatus === 403 ? send(403, { error: 'Developer Over Qps' }, h) : send(429, { error: 'Too Many Requests', detailedmessage: 'Rate limit exceeded' }, h);
      }
      const lacking = this.opts.enforceScopes ? this.missingScope(tok.scope, u.pathname, req.method ?? 'GET') : undefined;
      if (lacking) {
        return u.pathname.startsWith('/fhir/')
          ? send(403, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden', details: { text: `The access token lacks ${lacking}` } }] })
          : send(403, { error: 'Forbidden', detailedmessage: `The access token lacks ${lacking}` });
      }
      if (rest) return this.rest(rest[1], rest[2] ?? '/', req.method ?? 'GET', u, body, tok, send);
      if (u.pathname.startsWith('/fhir/r4')) return this.fhirApi(u.pathname.slice('/fhir/r4'.length), req, u, body, send);
      return send(404, { error: 'Service not registered with API gateway.' });
    } catch (e) {
      send(500, { error: 'Internal error', detailedmessage: (e as Error).message });
    }
  }

  /** The scope a call needs that the token was not granted, if any (reference 1.2, 2.1). */
  private missingScope(granted: string, path: string, method: string): string | undefined {
    const scopes = new Set(granted.split(/\s+/).filter(Boolean));
    if (path.startsWith('/v1/')) return scopes.has('athena/service/Athenanet.MDP.*') ? undefined : 'athena/service/Athenanet.MDP.*';
    const m = /^\/fhir\/r4\/([A-Z][A-Za-z]+)(\/|$)/.exec(path);
    if (!m) return undefined;
    const write = method !== 'GET' && !path.endsWith('/_search');
    const need = write ? [`system/${m[1]}.write`, `system/${m[1]}.c`] : [`system/${m[1]}.read`, `system/${m[1]}.rs`];
    return need.some((x) => scopes.has(x)) ? undefined : need[0];
  }

  private takeFault(path: string, token: boolean, query = ''): Fault | undefined {
    const i = this.faults.findIndex((f) => !!f.token === token && (!f.match || f.match.test(path)) && (!f.query || f.query.test(query)));
    if (i < 0) return undefined;
    const f = this.faults[i];
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.faults.splice(i, 1);
    return f;
  }

  /** Sliding one-second window per (client, practice). */
  private throttled(key: string): boolean {
    if (!this.opts.qps) return false;
    const now = this.now();
    const w = (this.throttleWindows.get(key) ?? []).filter((t) => t > now - 1000);
    if (w.length >= this.opts.qps) {
      this.throttleWindows.set(key, w);
      return true;
    }
    w.push(now);
    this.throttleWindows.set(key, w);
    return false;
  }

  private token(req: IncomingMessage, body: string, send: (s: number, b: unknown, h?: Record<string, string>) => void): void {
    const fault = this.takeFault('/oauth2/v1/token', true);
    if (fault) return send(fault.status, fault.body ?? { error: 'temporarily_unavailable' }, fault.retryAfter !== undefined ? { 'Retry-After': fault.retryAfter } : {});
    if (req.method !== 'POST') return send(405, { error: 'invalid_request' });
    if (!String(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) return send(400, { error: 'invalid_request', error_description: 'form body required' });
    const form = new URLSearchParams(body);
    const basic = /^Basic (.+)$/i.exec(String(req.headers.authorization ?? ''));
    let id = '';
    let secret = '';
    if (basic) {
      const dec = Buffer.from(basic[1], 'base64').toString('utf8');
      const i = dec.indexOf(':');
      id = decodeURIComponent(dec.slice(0, i));
      secret = decodeURIComponent(dec.slice(i + 1));
    }
    if (!id || this.opts.clients[id] === undefined || this.opts.clients[id] !== secret) return send(401, { error: 'invalid_client', error_description: 'Client authentication failed.' });
    if (form.get('grant_type') !== 'client_credentials') return send(400, { error: 'unsupported_grant_type' });
    const access = randomUUID().replace(/-/g, '');
    const scope = form.get('scope') ?? 'athena/service/Athenanet.MDP.*';
    this.tokens.set(access, { clientId: id, expiresAt: this.now() + this.opts.tokenTtlSec * 1000, scope });
    this.tokensIssued++;
    const ttl = this.opts.advertisedTtlSec ?? this.opts.tokenTtlSec;
    send(200, { token_type: 'Bearer', expires_in: this.opts.expiresInAsString ? String(ttl) : ttl, access_token: access, scope });
  }

  // ---- REST -----------------------------------------------------------------------------------

  private rest(p: string, path: string, method: string, u: URL, body: string, tok: IssuedToken, send: (s: number, b: unknown, h?: Record<string, string>) => void): void {
    const d = this.practice(p);
    const q = u.searchParams;
    const form = new URLSearchParams(body);
    const isWrite = method !== 'GET';
    if (isWrite && body && !form.toString()) return send(400, { error: 'Invalid body' });
    let m: RegExpExecArray | null;

    if (method === 'GET' && path === '/departments') return send(200, this.page(p, '/departments', 'departments', d.departments, q));
    if (method === 'GET' && path === '/providers') return send(200, this.page(p, '/providers', 'providers', d.providers, q));

    // Changed-data feeds & subscriptions
    if ((m = /^\/(.+)\/changed\/subscription(\/events)?$/.exec(path))) return this.subscription(d, m[1], !!m[2], method, form, tok, send);
    if ((m = /^\/(.+)\/changed$/.exec(path)) && method === 'GET') return this.changed(p, d, m[1], q, tok, send);

    // Patients
    if (path === '/patients' && method === 'GET') {
      const fn = q.get('firstname')?.toLowerCase();
      const ln = q.get('lastname')?.toLowerCase();
      const dob = q.get('dob');
      if (!fn && !ln && !dob && !q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'A search needs at least one of firstname, lastname, dob, departmentid.' });
      const list = [...d.patients.values()].filter(
        (x) => (!fn || String(x.firstname).toLowerCase() === fn) && (!ln || String(x.lastname).toLowerCase() === ln) && (!dob || x.dob === dob) && (!q.get('departmentid') || String(x.departmentid) === q.get('departmentid')),
      );
      return send(200, this.page(p, '/patients', 'patients', list, q));
    }
    if (path === '/patients' && method === 'POST') {
      for (const k of ['departmentid', 'firstname', 'lastname', 'dob']) if (!form.get(k)) return send(400, { error: `Missing required field: ${k}`, detailedmessage: `${k} is required` });
      if (!/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('dob')!)) return send(400, { error: 'Invalid DOB', detailedmessage: 'dob must be MM/DD/YYYY' });
      const rec = this.upsertPatient(p, { ...Object.fromEntries(form), status: 'active' });
      return send(200, [{ patientid: rec.patientid }]);
    }
    if ((m = /^\/patients\/(\d+)$/.exec(path))) {
      const pat = d.patients.get(m[1]);
      if (!pat) return send(404, { error: 'The patient is not found.', detailedmessage: 'Invalid patientid' });
      if (method === 'GET') return send(200, [pat]);
      if (method === 'PUT') {
        if (form.get('dob') && !/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('dob')!)) return send(400, { error: 'Invalid DOB' });
        const rec = this.upsertPatient(p, { ...Object.fromEntries(form), patientid: m[1] });
        return send(200, [{ patientid: rec.patientid }]);
      }
    }

    // Appointments
    if (path === '/appointments/booked' && method === 'GET') {
      const from = fromAthenaDateTime(q.get('startdate') ?? '', 'UTC');
      const to = fromAthenaDateTime(q.get('enddate') ?? '', 'UTC');
      if (from === undefined || to === undefined || !q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid, startdate and enddate (MM/DD/YYYY) are required' });
      const list = [...d.appointments.values()].filter((a) => {
        const t = fromAthenaDateTime(a.date, 'UTC') ?? -1;
        return String(a.departmentid) === q.get('departmentid') && t >= from && t <= to && a.appointmentstatus !== 'o';
      });
      return send(200, this.page(p, '/appointments/booked', 'appointments', list, q));
    }
    if (path === '/appointments/open' && method === 'GET') {
      // Open slots are appointments with status `o` (reference 1.4 appointmentstatus, AddAppointmentSlot
      // events). The endpoint is not in the reference's table [U]: modelled like /appointments/booked
      // (departmentid required, optional startdate/enddate/providerid/appointmenttypeid, limit/offset paging).
      if (!q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
      const from = q.get('startdate') ? fromAthenaDateTime(q.get('startdate')!, 'UTC') : undefined;
      const to = q.get('enddate') ? fromAthenaDateTime(q.get('enddate')!, 'UTC') : undefined;
      if ((q.get('startdate') && from === undefined) || (q.get('enddate') && to === undefined)) return send(400, { error: 'Invalid date', detailedmessage: 'startdate and enddate are MM/DD/YYYY' });
      const list = [...d.appointments.values()].filter((a) => {
        const t = fromAthenaDateTime(a.date, 'UTC') ?? -1;
        return (
          a.appointmentstatus === 'o' &&
          String(a.departmentid) === q.get('departmentid') &&
          (from === undefined || t >= from) &&
          (to === undefined || t <= to) &&
          (!q.get('providerid') || String(a.providerid) === q.get('providerid')) &&
          (!q.get('appointmenttypeid') || String(a.appointmenttypeid) === q.get('appointmenttypeid'))
        );
      });
      return send(200, this.page(p, '/appointments/open', 'appointments', list, q));
    }
    if ((m = /^\/appointments\/(\d+)$/.exec(path)) && method === 'GET') {
      const a = d.appointments.get(m[1]);
      return a ? send(200, [a]) : send(404, { error: 'The appointment is not found.' });
    }
    if ((m = /^\/appointments\/(\d+)$/.exec(path)) && method === 'PUT') {
      // Book an open slot.
      const a = d.appointments.get(m[1]);
      if (!a) return send(404, { error: 'The appointment is not found.' });
      if (!form.get('patientid')) return send(400, { error: 'Missing required field: patientid' });
      if (a.appointmentstatus !== 'o') return send(200, { success: false, errormessage: 'The appointment slot is not open.' });
      if (!d.patients.has(String(form.get('patientid')))) return send(400, { error: 'Invalid patientid' });
      const rec = this.upsertAppointment(p, { ...a, appointmentstatus: 'f', patientid: form.get('patientid'), appointmenttypeid: form.get('appointmenttypeid') ?? a.appointmenttypeid }, 'ScheduleAppointment');
      return send(200, [rec]);
    }
    if ((m = /^\/appointments\/(\d+)\/cancel$/.exec(path)) && method === 'PUT') {
      const a = d.appointments.get(m[1]);
      if (!a) return send(404, { error: 'The appointment is not found.' });
      if (!form.get('patientid')) return send(400, { error: 'Missing required field: patientid' });
      if (a.appointmentstatus === 'x') return send(200, { success: false, errormessage: 'The appointment is already cancelled.' });
      if (String(a.patientid) !== form.get('patientid')) return send(200, { success: false, errormessage: 'The patient does not match the appointment.' });
      this.upsertAppointment(p, { ...a, appointmentstatus: 'x', cancelreasonname: form.get('cancellationreason') ?? 'PATIENT CANCELLED', cancelleddatetime: toAthenaDateTime(this.now(), this.opts.serverTimeZone) }, 'CancelAppointment');
      return send(200, { status: 'x' });
    }

    if ((m = /^\/appointments\/(\d+)\/checkin$/.exec(path)) && method === 'POST') {
      // Not in the reference [U]: athena's public API checks in a booked appointment of today.
      const a = d.appointments.get(m[1]);
      if (!a) return send(404, { error: 'The appointment is not found.' });
      const why = a.appointmentstatus === 'o' ? 'The appointment is an open slot and cannot be checked in.' : a.appointmentstatus === 'x' ? 'The appointment is cancelled and cannot be checked in.' : a.appointmentstatus !== 'f' ? 'The appointment is already checked in.' : undefined;
      if (why) return this.opts.checkinRefusal === 'http-400' ? send(400, { error: why, detailedmessage: why }) : send(200, { success: false, errormessage: why });
      this.upsertAppointment(p, { ...a, appointmentstatus: '2', checkindatetime: toAthenaDateTime(this.now(), this.opts.serverTimeZone) }, 'CheckIn');
      return send(200, { success: 'true' });
    }

    // Documents (reference 1.4; list key, fields and the read-back are [U])
    if ((m = /^\/patients\/(\d+)\/documents\/admin$/.exec(path)) && method === 'GET') {
      if (!q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
      if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
      const list = (d.documents.get(m[1]) ?? []).filter((x) => x.documentclass === 'ADMIN' && !x.deleteddatetime).map((x) => this.documentView(x));
      return send(200, this.page(p, path, 'admins', list, q));
    }
    if ((m = /^\/patients\/(\d+)\/documents\/clinicaldocument\/(\d+)$/.exec(path)) && method === 'GET') {
      const doc = (d.documents.get(m[1]) ?? []).find((x) => x.documentclass === 'CLINICALDOCUMENT' && String(x.clinicaldocumentid) === m![2]);
      return doc ? send(200, [this.documentView(doc)]) : send(404, { error: 'The document is not found.' });
    }
    if (path === '/documents/clinicaldocument' && method === 'POST') {
      for (const k of ['patientid', 'departmentid', 'documentsubclass']) if (!form.get(k)) return send(200, { success: false, errormessage: `${k} is required` });
      if (!d.patients.has(form.get('patientid')!)) return send(200, { success: false, errormessage: 'Invalid patientid' });
      if (!d.departments.some((x) => String(x.departmentid) === form.get('departmentid'))) return send(200, { success: false, errormessage: 'Invalid departmentid' });
      if (!this.opts.clinicalDocumentSubclasses.includes(form.get('documentsubclass')!.toUpperCase())) return send(200, { success: false, errormessage: `Invalid documentsubclass: ${form.get('documentsubclass')}` });
      if (form.get('attachmentcontents') && !/^[A-Za-z0-9+/=\s]+$/.test(form.get('attachmentcontents')!)) return send(200, { success: false, errormessage: 'attachmentcontents must be base64' });
      const rec = this.addDocument(p, form.get('patientid')!, {
        documentclass: 'CLINICALDOCUMENT',
        documentsubclass: form.get('documentsubclass')!.toUpperCase(),
        departmentid: form.get('departmentid'),
        description: form.get('internalnote') ?? undefined,
        documentdate: form.get('documentdate') ?? undefined,
        contenttype: form.get('attachmenttype') ?? undefined,
        attachmentcontents: form.get('attachmentcontents') ?? undefined,
      });
      return send(200, { success: 'true', clinicaldocumentid: String(rec.clinicaldocumentid) });
    }

    // Chart sections (reference 1.4): departmentid required, limit/offset paging
    if ((m = /^\/chart\/(\d+)\/(problems|medications|allergies|vitals|vaccines)$/.exec(path)) && method === 'GET') {
      if (!q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
      if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
      return send(200, this.page(p, path, m[2], d.chart.get(`${m[1]}|${m[2]}`) ?? [], q));
    }

    // Lab results
    if ((m = /^\/chart\/(\d+)\/labresults$/.exec(path)) && method === 'GET') {
      if (!q.get('departmentid')) return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
      return send(200, { ...this.page(p, path, 'results', (d.labresults.get(m[1]) ?? []).filter((r) => !q.get('labresultid') || String(r.labresultid) === q.get('labresultid')).map((r) => this.chartLabResult(r)), q) });
    }
    if ((m = /^\/patients\/(\d+)\/documents\/labresult$/.exec(path)) && method === 'POST') {
      if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
      if (!form.get('departmentid')) return send(200, { success: false, errormessage: 'departmentid is required' });
      if (form.get('observationdate') && !/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('observationdate')!)) return send(200, { success: false, errormessage: 'Invalid observationdate' });
      const rec = this.addLabResult(p, m[1], {
        departmentid: form.get('departmentid'),
        labresultloinc: form.get('labresultloinc') ?? undefined,
        description: form.get('internalnote') ?? form.get('description') ?? undefined,
        observationdatetime: form.get('observationdate') ? `${form.get('observationdate')} ${form.get('observationtime') ? `${form.get('observationtime')}:00` : '00:00:00'}` : undefined,
        analytes: form.get('analytes') ? JSON.parse(form.get('analytes')!) : undefined,
        facilityid: form.get('facilityid') ?? undefined,
      });
      return send(200, { success: 'true', labresultid: String(rec.labresultid) });
    }

    return send(404, { error: 'Service not registered with API gateway.' });
  }

  /** A `limit`/`offset` page with relative `next`/`previous` URLs including `/v1/{practiceid}`. */
  private page(p: string, path: string, key: string, all: Json[], q: URLSearchParams, extra: Json = {}): Json {
    const limit = Math.min(this.opts.maxLimit, Math.max(1, Number(q.get('limit') ?? this.opts.defaultLimit) || this.opts.defaultLimit));
    const offset = Math.max(0, Number(q.get('offset') ?? 0) || 0);
    const items = all.slice(offset, offset + limit);
    const out: Json = { [key]: items, totalcount: all.length, ...extra };
    const link = (o: number) => {
      const nq = new URLSearchParams(q);
      nq.set('limit', String(limit));
      nq.set('offset', String(o));
      return `/v1/${p}${path}?${nq.toString()}`;
    };
    if (offset + limit < all.length) out.next = link(offset + limit);
    if (offset > 0) out.previous = link(Math.max(0, offset - limit));
    return out;
  }

  private subscription(d: PracticeData, feed: string, events: boolean, method: string, form: URLSearchParams, tok: IssuedToken, send: (s: number, b: unknown) => void): void {
    if (!(FEEDS as readonly string[]).includes(feed)) return send(404, { error: 'Service not registered with API gateway.' });
    const key = `${tok.clientId}|${feed}`;
    if (events) return send(200, { subscriptions: (feed === 'appointments' ? APPOINTMENT_EVENTS : [`${feed}Changed`]).map((eventname) => ({ eventname })) });
    if (method === 'POST') {
      if (!d.subscriptions.has(key)) d.subscriptions.set(key, { requestedAt: this.now(), eventnames: form.getAll('eventname') });
      return send(200, { success: true });
    }
    if (method === 'DELETE') {
      d.subscriptions.delete(key);
      return send(200, { success: true });
    }
    const sub = d.subscriptions.get(key);
    if (!sub) return send(200, { status: 'INACTIVE', subscriptions: [] });
    const active = this.now() >= sub.requestedAt + this.opts.subscriptionDelayMs;
    return send(200, { status: active ? 'ACTIVE' : 'PARTIAL', subscriptions: (sub.eventnames.length ? sub.eventnames : feed === 'appointments' ? APPOINTMENT_EVENTS : [`${feed}Changed`]).map((eventname) => ({ eventname })) });
  }

  private changed(p: string, d: PracticeData, feed: string, q: URLSearchParams, tok: IssuedToken, send: (s: number, b: unknown) => void): void {
    if (!(FEEDS as readonly string[]).includes(feed)) return send(404, { error: 'Service not registered with API gateway.' });
    const key = `${tok.clientId}|${feed}`;
    const sub = d.subscriptions.get(key);
    if (!sub || this.now() < sub.requestedAt + this.opts.subscriptionDelayMs) return send(403, { error: NOT_SUBSCRIBED, detailedmessage: NOT_SUBSCRIBED });
    const queue = d.queues.get(key) ?? [];
    const dept = q.get('departmentid');
    const startS = q.get('showprocessedstartdatetime');
    const endS = q.get('showprocessedenddatetime');
    let selected: FeedEvent[];
    let dequeue = false;
    if (startS || endS) {
      const start = startS ? fromAthenaDateTime(startS, this.opts.serverTimeZone) : 0;
      const end = endS ? fromAthenaDateTime(endS, this.opts.serverTimeZone) : this.now();
      if (start === undefined || end === undefined) return send(400, { error: 'Invalid datetime', detailedmessage: 'showprocessed*datetime must be MM/DD/YYYY HH:mm:ss' });
      // Processed in [start, end] (second resolution: the end second is included).
      selected = queue.filter((e) => e.processedAt !== undefined && e.processedAt >= start && e.processedAt < end + 1000);
    } else {
      selected = queue.filter((e) => e.processedAt === undefined);
      dequeue = q.get('leaveunprocessed') !== 'true';
    }
    if (dept) selected = selected.filter((e) => e.departmentid === dept);
    const key2 = feed === 'documents/patientcase' ? 'patientcases' : feed;
    const limit = Math.min(this.opts.maxLimit, Math.max(1, Number(q.get('limit') ?? this.opts.defaultLimit) || this.opts.defaultLimit));
    const offset = Math.max(0, Number(q.get('offset') ?? 0) || 0);
    const pageEvents = selected.slice(offset, offset + limit);
    const out: Json = { [key2]: pageEvents.map((e) => e.record), totalcount: selected.length };
    if (offset + limit < selected.length) {
      const nq = new URLSearchParams(q);
      nq.set('limit', String(limit));
      // Dequeued events leave the unprocessed list, so the next page of a dequeuing read starts again at 0.
      nq.set('offset', String(dequeue ? 0 : offset + limit));
      out.next = `/v1/${p}/${feed}/changed?${nq.toString()}`;
    }
    if (dequeue) for (const e of pageEvents) e.processedAt = this.now();
    send(200, out);
  }

  // ---- FHIR ----------------------------------------------------------------------------------

  private fhirApi(path: string, req: IncomingMessage, u: URL, body: string, send: (s: number, b: unknown, h?: Record<string, string>) => void): void {
    const oo = (status: number, code: string, text: string, severity = 'error') => send(status, { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] });
    const method = req.method ?? 'GET';
    if (path === '/metadata') {
      return send(200, { resourceType: 'CapabilityStatement', url: 'https://fhir.athena.io/CapabilityStatement/ah-r4-base', status: 'active', kind: 'instance', fhirVersion: '4.0.1', format: ['json'], date: '2026-01-01' });
    }
    let m: RegExpExecArray | null;
    let params = u.searchParams;
    let type: string | undefined;
    if ((m = /^\/([A-Za-z]+)\/_search$/.exec(path)) && method === 'POST') {
      type = m[1];
      params = new URLSearchParams(body);
    } else if ((m = /^\/([A-Za-z]+)$/.exec(path)) && method === 'GET') type = m[1];
    if (type) {
      const practice = params.get('ah-practice');
      if (!practice) return oo(400, 'required', 'The ah-practice search parameter is required.');
      const pid = practice.replace(/^Organization\//, '').replace(/^a-1\.Practice-/, '');
      let list = [...(this.fhir.get(type)?.values() ?? [])].filter((r) => r._practice === pid);
      if (this.opts.enforceSearchParams) {
        const allowed = [...FHIR_COMMON_PARAMS, ...(FHIR_SEARCH_PARAMS[type] ?? [])];
        for (const k of params.keys()) if (!allowed.includes(k)) return oo(400, 'not-supported', `Search parameter ${k} is not supported for ${type}`);
      }
      for (const [k, v] of params) {
        if (k === '_lastUpdated') {
          const pm = /^(gt|ge|lt|le|eq)?(.+)$/.exec(v)!;
          const t = Date.parse(pm[2]);
          if (Number.isNaN(t)) return oo(400, 'invalid', `Invalid _lastUpdated: ${v}`);
          const op = pm[1] ?? 'eq';
          list = list.filter((r) => {
            const lu = Date.parse(r.meta.lastUpdated);
            return op === 'gt' ? lu > t : op === 'ge' ? lu >= t : op === 'lt' ? lu < t : op === 'le' ? lu <= t : lu === t;
          });
        } else if (k === '_id') list = list.filter((r) => v.split(',').includes(r.id));
        else if (k === 'patient' || k === 'subject') list = list.filter((r) => r.subject?.reference === `Patient/${v.replace(/^Patient\//, '')}` || r.patient?.reference === `Patient/${v.replace(/^Patient\//, '')}`);
        else if (k === 'family') list = list.filter((r) => r.name?.some((n: Json) => String(n.family ?? '').toLowerCase().startsWith(v.toLowerCase())));
        else if (k === 'identifier') list = list.filter((r) => r.identifier?.some((i: Json) => `${i.system}|${i.value}` === v || i.value === v));
        else if (!['ah-practice', '_count', 'cursor', '_sort'].includes(k)) return oo(400, 'not-supported', `Unsupported search parameter: ${k}`);
      }
      list.sort((a, b) => Date.parse(a.meta.lastUpdated) - Date.parse(b.meta.lastUpdated) || (a.id < b.id ? -1 : 1));
      const count = Math.min(1000, Math.max(1, Number(params.get('_count') ?? this.opts.fhirDefaultCount) || this.opts.fhirDefaultCount));
      const cursor = params.get('cursor');
      let start = 0;
      if (cursor) {
        start = list.findIndex((r) => r.id === cursor);
        if (start < 0) return oo(400, 'invalid', 'Invalid cursor');
      }
      const page = list.slice(start, start + count);
      const self = `${this.fhirBase}/${type}?${params.toString()}`;
      const link = [{ relation: 'self', url: self }];
      if (start + count < list.length) {
        const nq = new URLSearchParams(params);
        nq.set('cursor', list[start + count].id);
        nq.set('_count', String(count));
        link.push({ relation: 'next', url: `${this.fhirBase}/${type}?${nq.toString()}` });
      }
      return send(200, {
        resourceType: 'Bundle',
        type: 'searchset',
        total: list.length,
        link,
        entry: page.map((r) => ({ fullUrl: `${this.fhirBase}/${type}/${r.id}`, resource: strip(r), search: { mode: 'match' } })),
      });
    }
    if ((m = /^\/([A-Za-z]+)\/([A-Za-z0-9.-]+)$/.exec(path)) && method === 'GET') {
      const r = this.fhir.get(m[1])?.get(m[2]);
      return r ? send(200, strip(r)) : oo(404, 'not-found', `${m[1]}/${m[2]} not found`);
    }
    if ((m = /^\/([A-Za-z]+)$/.exec(path)) && method === 'POST') {
      // Writes the captured CapabilityStatement lists: QuestionnaireResponse create (reference 2.3).
      if (m[1] !== 'QuestionnaireResponse') return oo(405, 'not-supported', `create is not supported for ${m[1]}`);
      let res: Json;
      try {
        res = JSON.parse(body);
      } catch {
        return oo(400, 'structure', 'Body is not JSON');
      }
      if (res.resourceType !== m[1]) return oo(400, 'invalid', 'resourceType does not match the URL');
      const subj = /^Patient\/a-(\d+)\.E-(\d+)$/.exec(res.subject?.reference ?? '');
      if (!subj) return oo(422, 'business-rule', 'subject must reference an athena Patient (a-{practiceid}.E-{patientid})');
      if (!res.status) return oo(500, 'required', 'QuestionnaireResponse.status is required', 'fatal');
      const id = `a-${subj[1]}.qr-${++this.seq}`;
      const stored = this.putFhir(subj[1], m[1], id, res);
      return send(201, strip(stored), { Location: `${this.fhirBase}/${m[1]}/${id}/_history/1` });
    }
    return oo(404, 'not-found', `Unknown FHIR path ${path}`);
  }
}

function strip(r: Json): Json {
  const { _practice, _unversioned, ...rest } = r;
  void _practice;
  if (_unversioned) delete rest.meta;
  return JSON.parse(JSON.stringify(rest));
}
