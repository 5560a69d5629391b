/**
 * A local simulator of an Epic FHIR R4 endpoint (Interconnect), built from
 * ../shared/docs/vendor-apis.md §0 and §3:
 *
 * - discovery: `{base}/.well-known/smart-configuration` and `{base}/metadata`;
 * - SMART Backend Services token endpoint: `client_credentials` + a JWT client assertion verified
 *   for real (RS384/ES384 signature against the registered JWKS, `iss`==`sub`==client id,
 *   `aud`==token URL, `exp` <= 5 min, `jti` replay); every failure is Epic's opaque
 *   `400 {"error":"invalid_client","error_description":null}` (the true reason is in `requests[].reason`);
 * - FHIR search with required parameter shapes (4110/4111/4112 OperationOutcomes), unknown params
 *   silently ignored (4122 warning entry), `Bundle.total` = page size, empty results as a searchset
 *   holding an OperationOutcome entry (`search.mode=outcome`, 4101), opaque `link[next]` paging
 *   sessions that expire (4113), 401 + `WWW-Authenticate` on a bad token, XML when Accept is not JSON;
 * - create of Observation / DocumentReference / Condition (201 + Location); update (`PUT`) of
 *   Observation / DocumentReference only -- the reference lists Epic's update ("CRU") for those two,
 *   Patient as read/search/create, Appointment as read/search (3.3): any other `PUT` is refused;
 * - Bulk Data `Group/{id}/$export`: 202 + Content-Location, status 202 + `X-Progress` + `Retry-After`,
 *   200 manifest (`requiresAccessToken: true`), NDJSON files streamed, DELETE, one job per client (429);
 * - misrouted paths answer an IIS-style HTML 404; fault injection via `sim.server.inject`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JSONWebKeySet } from 'jose';
import {
  applyFilters,
  changedAt,
  commonFilters,
  FhirVendorSimulator,
  hasCoding,
  matchDate,
  newToken,
  parseForm,
  patientOf,
  sendJson,
  streamNdjson,
  syntheticVital,
  verifyClientAssertion,
  type IssuedToken,
  type LoggedRequest,
  type RegisteredJwtClient,
  type Res,
} from './sim-common';

export const EPIC_ERROR_SYSTEM = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369';
export const EPIC_MRN_OID = 'urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14';
export const EPIC_EPI_OID = 'urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0';
export const EPIC_FLOWSHEET_OID = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.707679';
export const EPIC_LAB_OID = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.768282';

const MESSAGES: Record<string, string> = {
  '4100': 'The resource request contained an invalid parameter',
  '4101': 'Resource request returns no results.',
  '4102': 'The read resource request contained an invalid ID.',
  '4110': 'No parameters were provided in the search request.',
  '4111': 'Required search parameter missing from request',
  '4112': 'Invalid combination of search parameters',
  '4113': 'The paging session has expired or does not exist. Please re-run the search.',
  '4115': 'Invalid value for a search parameter',
  '4118': 'User not authorized for request.',
  '4122': 'Unknown parameter, ignored.',
  '4127': 'Too many results. Please refine your search.',
};

export function epicOutcome(
  code: string,
  severity: 'fatal' | 'error' | 'warning' | 'information',
  issueCode: string,
  diagnostics?: string,
) {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity,
        code: issueCode,
        details: {
          coding: [{ system: EPIC_ERROR_SYSTEM, code, display: MESSAGES[code] ?? code }],
          text: MESSAGES[code] ?? code,
        },
        ...(diagnostics ? { diagnostics } : {}),
      },
    ],
  };
}

/** Search parameters each resource type accepts (others are ignored with a 4122 warning). */
const KNOWN_PARAMS: Record<string, string[]> = {
  Patient: [
    '_id',
    'identifier',
    'family',
    'given',
    'birthdate',
    'gender',
    'name',
    'address',
    'telecom',
    '_lastUpdated',
  ],
  Observation: ['patient', 'subject', 'category', 'code', 'date', '_lastUpdated', 'encounter', 'issued'],
  Encounter: ['patient', 'subject', 'date', '_lastUpdated', 'class', 'identifier', 'status'],
  Condition: ['patient', 'subject', 'category', 'clinical-status', 'encounter', '_lastUpdated'],
  MedicationRequest: ['patient', 'subject', 'status', 'intent', 'authoredon', '_lastUpdated'],
  AllergyIntolerance: ['patient', 'clinical-status', '_lastUpdated'],
  Appointment: ['patient', 'service-category', 'date', 'status', '_lastUpdated', 'identifier'],
  DiagnosticReport: ['patient', 'subject', 'category', 'code', 'date', '_lastUpdated', 'encounter'],
  DocumentReference: ['patient', 'subject', 'category', 'type', 'date', '_lastUpdated', 'encounter'],
  Immunization: ['patient', 'date', 'status', '_lastUpdated'],
  Procedure: ['patient', 'subject', 'date', 'category', '_lastUpdated'],
};
const CONTROL_PARAMS = new Set(['_count', '_format', 'sessionID', 'pageNumber']);

export interface EpicSimulatorOptions {
  /** Registered backend clients and their public keys. */
  clients?: RegisteredJwtClient[];
  /** Access token lifetime, seconds (default 3600). */
  tokenTtlSec?: number;
  /** Default page size when `_count` is absent (default 50). */
  pageSize?: number;
  /** Paging session lifetime, ms (default 10 min). */
  pagingTtlMs?: number;
  /** Status polls answered 202 before the manifest (default 2). */
  bulkPollsUntilDone?: number;
  /** Retry-After on bulk status, seconds (default 1). */
  bulkRetryAfterSec?: number;
  /** Lines per NDJSON file (default 10 000). */
  bulkMaxLinesPerFile?: number;
  /** Appointment.Search needs service-category [U] (default true). */
  appointmentRequiresServiceCategory?: boolean;
  latencyMs?: number;
  now?: () => number;
}

export class EpicSimulator extends FhirVendorSimulator<RegisteredJwtClient> {
  /** Close the connection of a file download after this many lines (once), to simulate a crash mid-file. */
  abortFileAfterLines?: number;
  readonly prefix = '/interconnect-fhir-oauth';
  opts: Required<Omit<EpicSimulatorOptions, 'clients' | 'latencyMs' | 'now'>>;

  constructor(opts: EpicSimulatorOptions = {}) {
    super(opts);
    this.opts = {
      tokenTtlSec: opts.tokenTtlSec ?? 3600,
      pageSize: opts.pageSize ?? 50,
      pagingTtlMs: opts.pagingTtlMs ?? 10 * 60_000,
      bulkPollsUntilDone: opts.bulkPollsUntilDone ?? 2,
      bulkRetryAfterSec: opts.bulkRetryAfterSec ?? 1,
      bulkMaxLinesPerFile: opts.bulkMaxLinesPerFile ?? 10_000,
      appointmentRequiresServiceCategory: opts.appointmentRequiresServiceCategory ?? true,
    };
  }

  get baseUrl(): string {
    return `${this.server.origin}${this.prefix}/api/FHIR/R4`;
  }
  get tokenUrl(): string {
    return `${this.server.origin}${this.prefix}/oauth2/token`;
  }

  /** Register a backend client with static keys, or with `{ jku }` (keys fetched from that URL), optionally not active before `activeFrom`. */
  registerClient(
    clientId: string,
    jwks: JSONWebKeySet | undefined,
    opts: { jku?: string; activeFrom?: number } = {},
  ): void {
    this.clients.set(clientId, { clientId, jwks, ...opts });
  }

  /** Add a synthetic vitals volume to Group exports (generated line by line, never held). */
  addSyntheticVitals(count: number, patientId: string, lastUpdated = '2026-01-01T00:00:00Z'): void {
    this.synthetic.Observation = { count, make: (i) => syntheticVital(i, patientId, EPIC_FLOWSHEET_OID, lastUpdated) };
  }

  private html404(res: ServerResponse): void {
    res
      .writeHead(404, { 'content-type': 'text/html' })
      .end(
        '<!DOCTYPE html><html><head><title>404 - File or directory not found.</title></head><body><div id="header"><h1>Server Error</h1></div><div id="content"><h2>404 - File or directory not found.</h2></div></body></html>',
      );
  }

  protected async handle(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    body: Buffer,
    log: LoggedRequest,
  ): Promise<void> {
    const path = url.pathname;
    const base = `${this.prefix}/api/FHIR/R4`;
    if (path === `${this.prefix}/oauth2/token` && req.method === 'POST') return this.token(res, body, log);
    if (!path.startsWith(base + '/')) return this.html404(res);
    const rel = path.slice(base.length + 1);
    if (rel === '.well-known/smart-configuration') {
      return sendJson(
        res,
        200,
        {
          issuer: `${this.server.origin}${this.prefix}/oauth2`,
          token_endpoint: this.tokenUrl,
          token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic', 'private_key_jwt'],
          token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
          grant_types_supported: [
            'authorization_code',
            'client_credentials',
            'urn:ietf:params:oauth:grant-type:jwt-bearer',
          ],
          scopes_supported: ['openid', 'fhirUser', 'launch', 'offline_access'],
          capabilities: [
            'launch-ehr',
            'launch-standalone',
            'client-public',
            'client-confidential-symmetric',
            'client-confidential-asymmetric',
            'context-ehr-patient',
            'sso-openid-connect',
          ],
        },
        {},
        'application/json',
      );
    }
    if (rel === 'metadata') {
      return sendJson(res, 200, {
        resourceType: 'CapabilityStatement',
        status: 'active',
        date: '2026-05-01',
        kind: 'instance',
        software: { name: 'Epic', version: 'May 2026' },
        fhirVersion: '4.0.1',
        format: ['xml', 'json'],
        instantiates: [
          'http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server|6.1.0',
          'http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data',
        ],
        rest: [
          {
            mode: 'server',
            security: {
              extension: [
                {
                  url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                  extension: [{ url: 'token', valueUri: this.tokenUrl }],
                },
              ],
            },
          },
        ],
      });
    }

    const token = this.authorize(req, res, log);
    if (!token) return;
    if (!/json/.test(String(req.headers.accept ?? ''))) {
      // Without an explicit JSON Accept, Epic may answer XML.
      res
        .writeHead(200, { 'content-type': 'application/fhir+xml' })
        .end('<Bundle xmlns="http://hl7.org/fhir"><type value="searchset"/></Bundle>');
      return;
    }

    const segs = rel.split('/');
    if (segs[0] === 'BulkRequest') return this.bulkStatusOrFile(req, res, segs, token);
    if (segs[0] === 'Group' && segs[2] === '$export' && segs.length === 3 && req.method === 'GET')
      return this.kickoff(req, res, url, token, segs[1]);
    if (segs.length === 1 && KNOWN_PARAMS[segs[0]]) {
      if (req.method === 'GET') return this.search(res, url, segs[0]);
      if (req.method === 'POST') return this.create(res, segs[0], body);
    }
    if (segs.length === 2 && KNOWN_PARAMS[segs[0]] && req.method === 'PUT')
      return this.update(res, segs[0], segs[1], body);
    if (segs.length === 2 && KNOWN_PARAMS[segs[0]] && req.method === 'GET') {
      const r = this.store.get(segs[0], segs[1]);
      if (!r) return sendJson(res, 404, epicOutcome('4102', 'fatal', 'not-found', segs[1]));
      return sendJson(res, 200, r);
    }
    return this.html404(res);
  }

  private tokenError(res: ServerResponse, log: LoggedRequest, reason: string): void {
    log.reason = reason;
    sendJson(res, 400, { error: 'invalid_client', error_description: null }, {}, 'application/json');
  }

  private async token(res: ServerResponse, body: Buffer, log: LoggedRequest): Promise<void> {
    const form = parseForm(body);
    if (form.get('grant_type') !== 'client_credentials') {
      log.reason = 'unsupported grant_type';
      return sendJson(res, 400, { error: 'unsupported_grant_type', error_description: null }, {}, 'application/json');
    }
    if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')
      return this.tokenError(res, log, 'client_assertion_type missing or wrong');
    const assertion = form.get('client_assertion');
    if (!assertion) return this.tokenError(res, log, 'client_assertion missing');
    const check = await verifyClientAssertion(assertion, {
      clients: this.clients,
      tokenUrl: this.tokenUrl,
      seenJti: this.seenJti,
      now: this.server.now(),
    });
    if (!check.ok) return this.tokenError(res, log, check.reason);
    const access = newToken();
    this.tokens.set(access, {
      clientId: check.clientId,
      expiresAt: this.server.now() + this.opts.tokenTtlSec * 1000,
      scopes: [],
    });
    return sendJson(
      res,
      200,
      {
        access_token: access,
        token_type: 'bearer',
        expires_in: this.opts.tokenTtlSec,
        scope:
          'Patient.read Patient.search Observation.read Observation.search Observation.create Condition.create DocumentReference.create Group.read',
      },
      { 'cache-control': 'no-store', pragma: 'no-cache' },
      'application/json',
    );
  }

  private authorize(req: IncomingMessage, res: ServerResponse, log: LoggedRequest): IssuedToken | undefined {
    const h = String(req.headers.authorization ?? '');
    const tok = /^Bearer (.+)$/i.exec(h)?.[1];
    const issued = tok ? this.tokens.get(tok) : undefined;
    if (!issued || issued.expiresAt <= this.server.now()) {
      log.reason = !tok ? 'no bearer token' : !issued ? 'unknown token' : 'token expired';
      res
        .writeHead(401, {
          'www-authenticate': `Bearer error="invalid_token", error_description="The access token provided is not valid"`,
          'content-length': '0',
        })
        .end();
      return undefined;
    }
    return issued;
  }

  private search(res: ServerResponse, url: URL, type: string): void {
    const q = url.searchParams;
    const sessionId = q.get('sessionID');
    if (sessionId) {
      const s = this.sessions.get(sessionId);
      if (!s) return sendJson(res, 400, epicOutcome('4113', 'fatal', 'processing'));
      const page = Number(q.get('pageNumber') ?? '1');
      return sendJson(res, 200, this.page(type, s.results, page, s.pageSize, sessionId, []));
    }
    const names = [...new Set([...q.keys()])];
    const known = KNOWN_PARAMS[type];
    const warnings: any[] = [];
    const used = names.filter((n) => {
      if (CONTROL_PARAMS.has(n)) return false;
      if (!known.includes(n)) {
        warnings.push({ ...epicOutcome('4122', 'warning', 'not-supported', n).issue[0] });
        return false;
      }
      return true;
    });
    if (!used.length) return sendJson(res, 400, epicOutcome('4110', 'fatal', 'required'));
    const has = (n: string) => used.includes(n);
    const patient = q.get('patient') ?? q.get('subject')?.replace(/^Patient\//, '') ?? undefined;
    switch (type) {
      case 'Patient':
        if (
          !has('_id') &&
          !has('identifier') &&
          !((has('family') || has('name')) && (has('given') || has('birthdate')))
        )
          return sendJson(
            res,
            400,
            epicOutcome('4111', 'fatal', 'required', '_id or identifier or family+given/birthdate'),
          );
        break;
      case 'Observation':
        if (!patient) return sendJson(res, 400, epicOutcome('4111', 'fatal', 'required', 'patient'));
        if (!has('category') && !has('code'))
          return sendJson(res, 400, epicOutcome('4111', 'fatal', 'required', 'category or code'));
        break;
      case 'Appointment':
        if (!patient) return sendJson(res, 400, epicOutcome('4111', 'fatal', 'required', 'patient'));
        if (this.opts.appointmentRequiresServiceCategory && !has('service-category'))
          return sendJson(res, 400, epicOutcome('4111', 'fatal', 'required', 'service-category'));
        break;
      default:
        if (!patient) return sendJson(res, 400, epicOutcome('4111', 'fatal', 'required', 'patient'));
    }
    if (has('date') && has('_lastUpdated'))
      return sendJson(res, 400, epicOutcome('4112', 'fatal', 'invalid', 'date,_lastUpdated'));

    let results = this.store.all(type);
    const filters = commonFilters(q, patient);
    if (has('family'))
      filters.push((r) =>
        (r.name ?? []).some((n: any) =>
          String(n.family ?? '')
            .toLowerCase()
            .startsWith(q.get('family')!.toLowerCase()),
        ),
      );
    if (has('given'))
      filters.push((r) =>
        (r.name ?? []).some((n: any) =>
          (n.given ?? []).some((g: string) => g.toLowerCase().startsWith(q.get('given')!.toLowerCase())),
        ),
      );
    if (has('birthdate')) filters.push((r) => r.birthDate === q.get('birthdate')!.replace(/^eq/, ''));
    if (has('category')) filters.push((r) => hasCoding(r.category, q.get('category')!));
    if (has('service-category'))
      filters.push((r) => !r.serviceCategory || hasCoding(r.serviceCategory, q.get('service-category')!));
    if (has('code')) filters.push((r) => hasCoding(r.code, q.get('code')!));
    if (has('status')) filters.push((r) => q.get('status')!.split(',').includes(r.status));
    for (const v of q.getAll('_lastUpdated')) filters.push((r) => matchDate(changedAt(r), v));
    for (const v of q.getAll('date'))
      filters.push((r) => matchDate(r.effectiveDateTime ?? r.period?.start ?? r.start ?? r.date ?? r.issued, v));
    const out = applyFilters(results, filters);
    if (!out) return sendJson(res, 400, epicOutcome('4115', 'fatal', 'value'));
    results = out;
    if (type === 'Patient' && results.length > 100)
      return sendJson(res, 400, epicOutcome('4127', 'fatal', 'too-costly'));
    const pageSize = Math.max(1, Number(q.get('_count') ?? this.opts.pageSize) || this.opts.pageSize);
    const session = results.length > pageSize ? this.sessions.create(results, pageSize) : undefined;
    sendJson(res, 200, this.page(type, results, 1, pageSize, session, warnings, url.toString()));
  }

  private page(
    type: string,
    results: Res[],
    page: number,
    pageSize: number,
    session: string | undefined,
    warnings: any[],
    self?: string,
  ) {
    const slice = results.slice((page - 1) * pageSize, page * pageSize);
    const entry: any[] = slice.map((r) => ({
      link: [{ relation: 'self', url: `${this.baseUrl}/${type}/${r.id}` }],
      fullUrl: `${this.baseUrl}/${type}/${r.id}`,
      resource: r,
      search: { mode: 'match' },
    }));
    if (!results.length)
      entry.push({ resource: epicOutcome('4101', 'warning', 'processing'), search: { mode: 'outcome' } });
    if (warnings.length)
      entry.push({ resource: { resourceType: 'OperationOutcome', issue: warnings }, search: { mode: 'outcome' } });
    const link: any[] = [
      { relation: 'self', url: self ?? `${this.baseUrl}/${type}?sessionID=${session}&pageNumber=${page}` },
    ];
    if (session && page * pageSize < results.length)
      link.push({ relation: 'next', url: `${this.baseUrl}/${type}?sessionID=${session}&pageNumber=${page + 1}` });
    // Epic quirk: total is the number of entries on this page, not the whole result.
    return { resourceType: 'Bundle', type: 'searchset', total: slice.length, link, entry };
  }

  private create(res: ServerResponse, type: string, body: Buffer): void {
    if (!['Observation', 'DocumentReference', 'Condition'].includes(type)) {
      return sendJson(res, 405, epicOutcome('4118', 'fatal', 'not-supported', `${type}.Create`));
    }
    let r: Res;
    try {
      r = JSON.parse(body.toString('utf8'));
    } catch {
      return sendJson(res, 400, epicOutcome('4100', 'fatal', 'structure', 'body is not JSON'));
    }
    if (r.resourceType !== type) return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'resourceType'));
    const pid = patientOf(r);
    if (!pid || !this.store.get('Patient', pid))
      return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'subject'));
    const { id: _ignored, meta: _m, ...rest } = r;
    const stored = this.store.put(rest as Res);
    res
      .writeHead(201, {
        location: `${this.baseUrl}/${type}/${stored.id}`,
        etag: `W/"${stored.meta.versionId}"`,
        'content-length': '0',
      })
      .end();
  }

  /** `PUT {type}/{id}`: no version check (the reference names none for Epic); answers 200, no body. */
  private update(res: ServerResponse, type: string, id: string, body: Buffer): void {
    if (!['Observation', 'DocumentReference'].includes(type))
      return sendJson(res, 405, epicOutcome('4118', 'fatal', 'not-supported', `${type}.Update`));
    if (!this.store.get(type, id)) return sendJson(res, 404, epicOutcome('4102', 'fatal', 'not-found', id));
    let r: Res;
    try {
      r = JSON.parse(body.toString('utf8'));
    } catch {
      return sendJson(res, 400, epicOutcome('4100', 'fatal', 'structure', 'body is not JSON'));
    }
    if (r.resourceType !== type) return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'resourceType'));
    if (r.id !== id) return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'id'));
    if (!r.status) return sendJson(res, 400, epicOutcome('4100', 'fatal', 'required', 'status'));
    const pid = patientOf(r);
    if (!pid || !this.store.get('Patient', pid))
      return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'subject'));
    const stored = this.store.put({ ...r, meta: undefined } as Res);
    res.writeHead(200, { etag: `W/"${stored.meta?.versionId ?? '1'}"`, 'content-length': '0' }).end();
  }

  private kickoff(req: IncomingMessage, res: ServerResponse, url: URL, token: IssuedToken, groupId: string): void {
    if (!/respond-async/.test(String(req.headers.prefer ?? '')))
      return sendJson(res, 400, epicOutcome('4100', 'fatal', 'invalid', 'Prefer: respond-async is required'));
    const members = this.groups.get(groupId);
    if (!members) return sendJson(res, 404, epicOutcome('4102', 'fatal', 'not-found', `Group/${groupId}`));
    for (const j of this.jobs.values()) {
      if (j.clientId === token.clientId && !j.deleted && j.pollsLeft > 0)
        return sendJson(res, 429, {
          resourceType: 'OperationOutcome',
          issue: [
            { severity: 'error', code: 'throttled', diagnostics: 'An export is already in progress for this client' },
          ],
        });
    }
    const fmt = url.searchParams.get('_outputFormat');
    if (fmt && !['application/fhir+ndjson', 'application/ndjson', 'ndjson'].includes(fmt))
      return sendJson(res, 400, epicOutcome('4115', 'fatal', 'value', '_outputFormat'));
    const since = url.searchParams.get('_since') ?? undefined;
    if (since && Number.isNaN(Date.parse(since)))
      return sendJson(res, 400, epicOutcome('4115', 'fatal', 'value', '_since'));
    const types = (url.searchParams.get('_type') ?? 'Patient,Observation,Condition,Encounter').split(',');
    this.kickOff(res, url, token, {
      types,
      since,
      members,
      maxLinesPerFile: this.opts.bulkMaxLinesPerFile,
      pollsUntilDone: this.opts.bulkPollsUntilDone,
      statusUrl: (id) => `${this.baseUrl}/BulkRequest/${id}`,
    });
  }

  private async bulkStatusOrFile(
    req: IncomingMessage,
    res: ServerResponse,
    segs: string[],
    token: IssuedToken,
  ): Promise<void> {
    const job = this.jobs.get(segs[1] ?? '');
    if (!job || job.deleted || job.clientId !== token.clientId)
      return sendJson(res, 404, epicOutcome('4102', 'fatal', 'not-found', 'BulkRequest'));
    if (segs.length === 2 && req.method === 'DELETE') {
      job.deleted = true;
      res.writeHead(202, { 'content-length': '0' }).end();
      return;
    }
    if (segs.length === 2 && req.method === 'GET')
      return this.jobStatus(res, job, {
        retryAfterSec: this.opts.bulkRetryAfterSec,
        progress: (j) => `${Math.round((100 * j.polls) / (j.polls + j.pollsLeft + 1))}% complete`,
        fileUrl: (f) => `${this.baseUrl}/BulkRequest/${job.id}/${f.id}`,
      });
    if (segs.length === 3 && req.method === 'GET') {
      const f = job.files.find((x) => x.id === segs[2]);
      if (!f) return sendJson(res, 404, epicOutcome('4102', 'fatal', 'not-found', 'file'));
      const abortAfterLines = this.abortFileAfterLines;
      this.abortFileAfterLines = undefined;
      return streamNdjson(res, f, { abortAfterLines });
    }
    return this.html404(res);
  }
}

/** Fixture data in Epic's sandbox shapes (vendor-apis.md §3.6). */
export function seedEpicSandbox(sim: EpicSimulator): { patientId: string; mergedId: string } {
  const patientId = 'erXuFYUfucBZaryVksYEcMg3';
  sim.store.put({
    resourceType: 'Patient',
    id: patientId,
    active: true,
    identifier: [
      { use: 'usual', type: { text: 'EPIC' }, system: EPIC_EPI_OID, value: 'E4007' },
      {
        use: 'usual',
        type: { text: 'FHIR STU3' },
        system: 'http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id',
        value: patientId,
      },
      { use: 'usual', type: { text: 'EPI' }, system: EPIC_MRN_OID, value: '203713' },
      {
        use: 'usual',
        type: { text: 'INTERNAL' },
        system: 'urn:oid:1.2.840.114350.1.13.0.1.7.2.698084',
        value: '  Z6129',
      },
    ],
    name: [{ use: 'official', text: 'Camila Maria Lopez', family: 'Lopez', given: ['Camila', 'Maria'] }],
    telecom: [{ system: 'phone', value: '469-555-5555', use: 'home', rank: 1 }],
    gender: 'female',
    birthDate: '1987-09-12',
    deceasedBoolean: false,
    address: [
      {
        use: 'home',
        line: ['3268 West Johnson St.', 'Apt 117'],
        city: 'GARLAND',
        district: 'DALLAS',
        state: 'TX',
        postalCode: '75043',
        country: 'US',
        period: { start: '2019-05-24' },
      },
    ],
    generalPractitioner: [
      {
        reference: 'Practitioner/eM5CWtq15N0WJeuCet5bJlQ3',
        type: 'Practitioner',
        display: 'Physician Family Medicine, MD',
      },
    ],
    managingOrganization: { reference: 'Organization/enRyWnSP963FYDpoks4NHOA3', display: 'Epic Hospital System' },
  });
  const mergedId = 'eOLDmergedPatientRecord3';
  sim.store.put({
    resourceType: 'Patient',
    id: mergedId,
    active: false,
    identifier: [{ use: 'usual', type: { text: 'EPI' }, system: EPIC_MRN_OID, value: '203799' }],
    name: [{ use: 'official', text: 'Camila Lopez', family: 'Lopez', given: ['Camila'] }],
    gender: 'female',
    birthDate: '1987-09-12',
    link: [{ other: { reference: `Patient/${patientId}` }, type: 'replaced-by' }],
  });
  return { patientId, mergedId };
}

export function epicVital(
  patientId: string,
  n: number,
  code = { flowsheet: '8', loinc: '8867-4', text: 'Pulse' },
): Res {
  return {
    resourceType: 'Observation',
    id: `eVitals.${patientId.slice(0, 6)}.${n}`,
    status: 'final',
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/observation-category',
            code: 'vital-signs',
            display: 'Vital Signs',
          },
          { system: 'urn:oid:1.2.840.114350.1.13.0.1.7.10.798268.30', code: '1', display: 'Vital Signs' },
        ],
        text: 'Vital Signs',
      },
    ],
    code: {
      coding: [
        { system: EPIC_FLOWSHEET_OID, code: code.flowsheet, display: code.text },
        { system: 'http://loinc.org', code: code.loinc, display: code.text },
      ],
      text: code.text,
    },
    subject: { reference: `Patient/${patientId}`, display: 'Lopez, Camila' },
    encounter: { reference: 'Encounter/es09oReoYsZk20hcbnd7r4A3' },
    effectiveDateTime: '2019-07-29T12:30:00Z',
    issued: '2019-07-29T12:31:00Z',
    valueQuantity: { value: 70 + n, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  };
}
