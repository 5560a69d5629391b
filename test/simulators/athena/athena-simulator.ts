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
 *
 * This file holds the server, the token endpoint, scopes, throttling, faults and the data; the
 * REST routes are in sim-rest-api.ts, the FHIR routes in sim-fhir-api.ts.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fromAthenaDateTime, toAthenaDateTime } from './wall-time';
import { fhirApi } from './sim-fhir-api';
import { restApi } from './sim-rest-api';

export { FHIR_SEARCH_PARAMS } from './sim-fhir-api';

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

export interface FeedEvent {
  seq: number;
  createdAt: number;
  processedAt?: number;
  departmentid?: string;
  record: Json;
}

export interface Subscription {
  requestedAt: number;
  eventnames: string[];
}

export interface PracticeData {
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

export interface IssuedToken {
  clientId: string;
  expiresAt: number;
  scope: string;
}

export class AthenaSimulator {
  readonly opts: Required<Omit<AthenaSimulatorOptions, 'qps' | 'throttleRetryAfterSec' | 'now' | 'advertisedTtlSec'>> &
    Pick<AthenaSimulatorOptions, 'qps' | 'throttleRetryAfterSec' | 'advertisedTtlSec'>;
  url = '';
  readonly requests: SimRequest[] = [];
  readonly faults: Fault[] = [];
  tokensIssued = 0;
  /** API calls seen (token endpoint excluded), for `failNthCall`. */
  apiCalls = 0;
  private readonly failOnCall = new Map<number, number>();
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly practices = new Map<string, PracticeData>();
  /** FHIR resources by type, then id (read by sim-fhir-api.ts). */
  readonly fhir = new Map<string, Map<string, Json>>();
  private readonly throttleWindows = new Map<string, number[]>();
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  /** Id counter (also used by sim-fhir-api.ts). */
  seq = 0;
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
      clinicalDocumentSubclasses: opts.clinicalDocumentSubclasses ?? [
        'ADMISSIONDISCHARGE',
        'CLINICALDOCUMENT',
        'CONSULTNOTE',
        'PROGRESSNOTE',
        'OPERATIVENOTE',
        'LETTER',
      ],
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
    return (this.practice(practiceId).queues.get(`${clientId}|${feed}`) ?? []).filter(
      (e) => e.processedAt === undefined,
    ).length;
  }

  // -------------------------------------------------------------------------------------------
  // Data

  practice(p: string): PracticeData {
    let d = this.practices.get(p);
    if (!d) {
      d = {
        departments: [],
        providers: [],
        patients: new Map(),
        appointments: new Map(),
        labresults: new Map(),
        chart: new Map(),
        documents: new Map(),
        subscriptions: new Map(),
        queues: new Map(),
        nextId: 1000,
      };
      this.practices.set(p, d);
    }
    return d;
  }

  /** Subscribe a client directly (test setup), active immediately. */
  subscribe(p: string, feed: string, clientId = Object.keys(this.opts.clients)[0]): void {
    this.practice(p).subscriptions.set(`${clientId}|${feed}`, {
      requestedAt: this.now() - this.opts.subscriptionDelayMs,
      eventnames: [],
    });
  }

  addDepartment(p: string, dept: Json): Json {
    const d = this.practice(p);
    const rec: Json = { departmentid: String(dept.departmentid ?? d.nextId++), ...dept };
    d.departments.push(rec);
    this.putFhir(p, 'Location', `a-${p}.Department-${rec.departmentid}`, {
      resourceType: 'Location',
      name: rec.name,
      status: 'active',
      identifier: [
        { system: 'https://fhir.athena.io/sid/ah-department', value: `a-${p}.Department-${rec.departmentid}` },
      ],
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
    const rec: Json = {
      ...(d.patients.get(id) ?? {}),
      ...patient,
      patientid: id,
      lastmodified: toAthenaDateTime(this.now(), this.opts.serverTimeZone),
    };
    d.patients.set(id, rec);
    this.emit(p, 'patients', rec, rec.departmentid, existed ? 'UpdatePatient' : 'AddPatient');
    this.putFhir(p, 'Patient', `a-${p}.E-${id}`, this.athenaFhirPatient(p, rec));
    return rec;
  }

  upsertAppointment(p: string, appt: Json, eventname = 'ScheduleAppointment'): Json {
    const d = this.practice(p);
    const id = String(appt.appointmentid ?? d.nextId++);
    const rec: Json = {
      ...(d.appointments.get(id) ?? {}),
      ...appt,
      appointmentid: id,
      lastmodified: toAthenaDateTime(this.now(), this.opts.serverTimeZone),
    };
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

  /** A stored document as the API answers it (no attachment bytes; also used by sim-rest-api.ts). */
  documentView(r: Json): Json {
    const { attachmentcontents: _a, documentid: _d, ...rest } = r;
    return { ...rest, ...(_a ? { pagecount: 1 } : {}) };
  }

  /**
   * Replace a chart section of a patient (reference 1.4 `GET /chart/{patientid}/problems|
   * medications|allergies|vitals|vaccines`; item fields are athena's [U], see the plugin's chart transform).
   * A change to problems emits a `problems` changed-feed event and to medications a `prescriptions`
   * one (reference 1.4 feed types); the reference lists no feed for allergies or vitals.
   */
  setChart(
    p: string,
    patientid: string,
    section: 'problems' | 'medications' | 'allergies' | 'vitals' | 'vaccines',
    items: Json[],
    departmentid = '1',
  ): void {
    const d = this.practice(p);
    d.chart.set(`${patientid}|${section}`, structuredClone(items));
    const feed = section === 'problems' ? 'problems' : section === 'medications' ? 'prescriptions' : undefined;
    if (feed)
      this.emit(p, feed, { patientid: Number(patientid), departmentid, eventname: 'Update' }, departmentid, 'Update');
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
    const rec: Json = {
      ...result,
      labresultid,
      observationdatetime: result.observationdatetime ?? new Date(this.now()).toISOString(),
    };
    const list = d.labresults.get(String(patientid)) ?? [];
    const at = list.findIndex((x) => String(x.labresultid) === String(labresultid));
    if (at >= 0) list[at] = { ...list[at], ...rec };
    else list.push(rec);
    d.labresults.set(String(patientid), list);
    // The changed feed carries ints for ids and ISO-8601 with offset (reference 1.3, 1.7), and no analytes (1.4).
    this.emit(
      p,
      'labresults',
      {
        labresultid: Number(labresultid),
        patientid: Number(patientid),
        departmentid: result.departmentid,
        status: rec.status ?? 'FINAL',
        observationdatetime: rec.observationdatetime,
      },
      result.departmentid,
      at >= 0 ? 'UpdateLabResult' : 'AddLabResult',
    );
    return rec;
  }

  /**
   * A stored lab result as `GET /chart/{patientid}/labresults` answers it (reference 1.4, 1.10):
   * `labresultid` (a number), `labresultloinc`, `labresultdatetime` (MM/DD/YYYY HH:mm:ss, the
   * server zone), `description`, `analytes[{analyteid, analytename, value, analytedatetime}]`.
   * Analyte `units`/`referencerange`/`abnormalflag`/`loinc` are passed through when the test data
   * has them [U]. Nothing else (no accession id: the reference does not document one).
   * Also used by sim-rest-api.ts.
   */
  chartLabResult(r: Json): Json {
    const ms = /^\d{2}\/\d{2}\/\d{4}/.test(String(r.observationdatetime))
      ? fromAthenaDateTime(
          String(r.observationdatetime).length === 10 ? `${r.observationdatetime} 00:00:00` : r.observationdatetime,
          this.opts.serverTimeZone,
        )
      : Date.parse(r.observationdatetime);
    const when = toAthenaDateTime(ms ?? this.now(), this.opts.serverTimeZone);
    const out: Json = {
      labresultid: Number(r.labresultid),
      labresultdatetime: when,
      description: r.description,
      labresultloinc: r.labresultloinc,
      status: r.status,
    };
    out.analytes = (Array.isArray(r.analytes) ? r.analytes : []).map((a: Json, i: number) => {
      const an: Json = {
        analyteid: Number(a.analyteid ?? Number(r.labresultid) * 100 + i + 1),
        analytename: a.analytename,
        value: a.value === undefined || a.value === null ? undefined : String(a.value),
        analytedatetime: when,
      };
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
  changeClinical(
    p: string,
    type: string,
    id: string,
    resource: Json,
    feed: string,
    patientid: string,
    opts: { unversioned?: boolean } = {},
  ): Json {
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
    const r = {
      ...resource,
      resourceType: type,
      id,
      meta: { versionId: String(version), lastUpdated: new Date(this.now()).toISOString() },
      _practice: p,
    };
    m.set(id, r);
    return r;
  }

  private athenaFhirPatient(p: string, rec: Json): Json {
    const [mm, dd, yyyy] = String(rec.dob ?? '').split('/');
    return {
      resourceType: 'Patient',
      extension: [
        {
          url: 'https://fhir.athena.io/StructureDefinition/ah-brand',
          valueReference: { reference: `Organization/a-${p}.Brand-1` },
        },
        {
          url: 'https://fhir.athena.io/StructureDefinition/ah-chart-sharing-group',
          valueReference: { reference: `Organization/a-${p}.CSG-1` },
        },
        {
          url: 'https://fhir.athena.io/StructureDefinition/ah-provider-group',
          valueReference: { reference: `Organization/a-${p}.PG-1` },
        },
        {
          url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex',
          valueCode: rec.sex === 'F' ? 'F' : rec.sex === 'M' ? 'M' : 'UNK',
        },
      ],
      identifier: [{ system: 'https://fhir.athena.io/sid/ah-patient', value: `a-${p}.E-${rec.patientid}` }],
      active: rec.status !== 'inactive',
      name: [{ use: 'official', family: rec.lastname, given: [rec.firstname].filter(Boolean) }],
      telecom: rec.homephone ? [{ system: 'phone', value: rec.homephone, use: 'home' }] : undefined,
      gender: rec.sex === 'F' ? 'female' : rec.sex === 'M' ? 'male' : 'unknown',
      birthDate: yyyy ? `${yyyy}-${mm}-${dd}` : undefined,
      address: rec.address1
        ? [{ use: 'home', line: [rec.address1], city: rec.city, state: rec.state, postalCode: rec.zip, country: 'USA' }]
        : undefined,
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
      q.push({
        seq: ++this.seq,
        createdAt: this.now(),
        departmentid: departmentid === undefined ? undefined : String(departmentid),
        record: structuredClone(record),
      });
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
    const entry: SimRequest = {
      method: req.method ?? 'GET',
      path: u.pathname,
      query: u.searchParams,
      headers: req.headers,
      body,
      status: 0,
      at: this.now(),
    };
    this.requests.push(entry);
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      const text = payload === undefined ? '' : typeof payload === 'string' ? payload : JSON.stringify(payload);
      const reply = () => {
        res.writeHead(status, {
          'Content-Type': entry.path.startsWith('/fhir') ? 'application/fhir+json' : 'application/json',
          'X-Request-Id': String(req.headers['x-request-id'] ?? randomUUID()),
          ...headers,
        });
        res.end(text);
      };
      const rule = this.latencyRule;
      const ruleMs =
        rule && (!rule.method || rule.method === entry.method) && (!rule.match || rule.match.test(entry.path))
          ? rule.ms
          : 0;
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
      if (!tok || this.now() >= tok.expiresAt)
        return send(401, {
          error: 'Developer Inactive',
          detailedmessage: tok ? 'The access token has expired.' : 'Missing or invalid bearer token.',
        });
      entry.clientId = tok.clientId;
      const forced = this.failOnCall.get(this.apiCalls);
      if (forced) {
        this.failOnCall.delete(this.apiCalls);
        return send(forced, forced === 401 ? { error: 'Developer Inactive' } : { error: 'Injected failure' });
      }
      const fault = this.takeFault(u.pathname, false, u.search);
      if (fault)
        return send(
          fault.status,
          fault.body ?? { error: fault.status === 429 ? 'Too Many Requests' : 'Injected failure' },
          fault.retryAfter !== undefined ? { 'Retry-After': fault.retryAfter } : {},
        );
      const rest = /^\/v1\/([^/]+)(\/.*)?$/.exec(u.pathname);
      const practiceId = rest?.[1] ?? u.searchParams.get('ah-practice')?.replace(/^.*Practice-/, '') ?? '-';
      entry.practiceId = practiceId;
      if (this.throttled(`${tok.clientId}|${practiceId}`)) {
        const h: Record<string, string> =
          this.opts.throttleRetryAfterSec !== undefined
            ? { 'Retry-After': String(this.opts.throttleRetryAfterSec) }
            : {};
        return this.opts.throttleStatus === 403
          ? send(403, { error: 'Developer Over Qps' }, h)
          : send(429, { error: 'Too Many Requests', detailedmessage: 'Rate limit exceeded' }, h);
      }
      const lacking = this.opts.enforceScopes
        ? this.missingScope(tok.scope, u.pathname, req.method ?? 'GET')
        : undefined;
      if (lacking) {
        return u.pathname.startsWith('/fhir/')
          ? send(403, {
              resourceType: 'OperationOutcome',
              issue: [{ severity: 'error', code: 'forbidden', details: { text: `The access token lacks ${lacking}` } }],
            })
          : send(403, { error: 'Forbidden', detailedmessage: `The access token lacks ${lacking}` });
      }
      if (rest) return restApi(this, rest[1], rest[2] ?? '/', req.method ?? 'GET', u, body, tok, send);
      if (u.pathname.startsWith('/fhir/r4'))
        return fhirApi(this, u.pathname.slice('/fhir/r4'.length), req, u, body, send);
      return send(404, { error: 'Service not registered with API gateway.' });
    } catch (e) {
      send(500, { error: 'Internal error', detailedmessage: (e as Error).message });
    }
  }

  /** The scope a call needs that the token was not granted, if any (reference 1.2, 2.1). */
  private missingScope(granted: string, path: string, method: string): string | undefined {
    const scopes = new Set(granted.split(/\s+/).filter(Boolean));
    if (path.startsWith('/v1/'))
      return scopes.has('athena/service/Athenanet.MDP.*') ? undefined : 'athena/service/Athenanet.MDP.*';
    const m = /^\/fhir\/r4\/([A-Z][A-Za-z]+)(\/|$)/.exec(path);
    if (!m) return undefined;
    const write = method !== 'GET' && !path.endsWith('/_search');
    const need = write ? [`system/${m[1]}.write`, `system/${m[1]}.c`] : [`system/${m[1]}.read`, `system/${m[1]}.rs`];
    return need.some((x) => scopes.has(x)) ? undefined : need[0];
  }

  private takeFault(path: string, token: boolean, query = ''): Fault | undefined {
    const i = this.faults.findIndex(
      (f) => !!f.token === token && (!f.match || f.match.test(path)) && (!f.query || f.query.test(query)),
    );
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

  private token(
    req: IncomingMessage,
    body: string,
    send: (s: number, b: unknown, h?: Record<string, string>) => void,
  ): void {
    const fault = this.takeFault('/oauth2/v1/token', true);
    if (fault)
      return send(
        fault.status,
        fault.body ?? { error: 'temporarily_unavailable' },
        fault.retryAfter !== undefined ? { 'Retry-After': fault.retryAfter } : {},
      );
    if (req.method !== 'POST') return send(405, { error: 'invalid_request' });
    if (!String(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded'))
      return send(400, { error: 'invalid_request', error_description: 'form body required' });
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
    if (!id || this.opts.clients[id] === undefined || this.opts.clients[id] !== secret)
      return send(401, { error: 'invalid_client', error_description: 'Client authentication failed.' });
    if (form.get('grant_type') !== 'client_credentials') return send(400, { error: 'unsupported_grant_type' });
    const access = randomUUID().replace(/-/g, '');
    const scope = form.get('scope') ?? 'athena/service/Athenanet.MDP.*';
    this.tokens.set(access, { clientId: id, expiresAt: this.now() + this.opts.tokenTtlSec * 1000, scope });
    this.tokensIssued++;
    const ttl = this.opts.advertisedTtlSec ?? this.opts.tokenTtlSec;
    send(200, {
      token_type: 'Bearer',
      expires_in: this.opts.expiresInAsString ? String(ttl) : ttl,
      access_token: access,
      scope,
    });
  }
}
