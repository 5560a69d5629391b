/**
 * A local simulator of an Oracle Health (Cerner) Millennium FHIR R4 tenant, built from
 * ../shared/docs/vendor-apis.md §0 and §4:
 *
 * - service root `/r4/{tenant}`; anonymous `{root}/.well-known/smart-configuration` advertising the
 *   host-scoped token URL `/tenants/{tenant}/hosts/{host}/protocols/oauth2/profiles/smart-v1/token`;
 * - system-account token endpoint: `client_credentials` with HTTP Basic (or `private_key_jwt`, verified
 *   like Epic's), every scope listed explicitly (a wildcard or an ungranted scope is `invalid_scope`),
 *   `expires_in: 570`; errors `{error, error_uri}` in Cerner's shape;
 * - FHIR: JSON `Accept` only (anything else: 406 with an empty body), `X-Request-Id` on every answer,
 *   required parameter combinations (400 OperationOutcome), `date` + `_lastUpdated` refused together,
 *   `_count` capped at 200, opaque `-pageContext` / `-pageDirection=NEXT` paging whose context
 *   expires, scope checks (403), 409 on a stale `If-Match`, create/update on the supported types;
 * - Bulk Data (Group only): 202 + `Content-Location: {root}/bulk-export/jobs/{id}`, status 202 +
 *   `X-Progress: in-progress` + `Retry-After` (600 by default), 200 manifest with `Expires`, file GET
 *   answered 307 to a pre-signed storage URL that refuses any request carrying `Authorization`,
 *   one in-progress export per client + tenant (429 `throttled`), DELETE 202.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHmac, randomUUID } from 'node:crypto';
import type { JSONWebKeySet } from 'jose';
import {
  applyFilters,
  commonFilters,
  FhirVendorSimulator,
  hasCoding,
  matchDate,
  newToken,
  parseBasic,
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
} from '../epic/sim-common';

export const CERNER_TENANT = 'ec2458f2-1e24-41c8-b71b-0e701af7583d';
export const CERNER_MRN_OID = 'urn:oid:2.16.840.1.113883.6.1000';

export interface CernerClient {
  clientId: string;
  secret?: string;
  /** Scopes the system account was granted. */
  scopes: string[];
  /** For private_key_jwt. */
  jwks?: JSONWebKeySet;
}

export interface CernerSimulatorOptions {
  tenant?: string;
  clients?: CernerClient[];
  tokenTtlSec?: number;
  pageSize?: number;
  pagingTtlMs?: number;
  bulkPollsUntilDone?: number;
  bulkRetryAfterSec?: number;
  bulkMaxLinesPerFile?: number;
  latencyMs?: number;
  now?: () => number;
}

const WRITE_TYPES = new Set([
  'Observation',
  'Condition',
  'DocumentReference',
  'AllergyIntolerance',
  'Encounter',
  'Appointment',
  'MedicationRequest',
  'Patient',
]);
const READ_TYPES = new Set([
  'Patient',
  'Observation',
  'Encounter',
  'Condition',
  'MedicationRequest',
  'AllergyIntolerance',
  'Appointment',
  'DiagnosticReport',
  'DocumentReference',
  'Immunization',
  'Procedure',
  'Group',
]);

export function cernerOutcome(severity: string, code: string, text?: string, location?: string[]) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, ...(text ? { details: { text } } : {}), ...(location ? { location } : {}) }],
  };
}

export class CernerSimulator extends FhirVendorSimulator<CernerClient> {
  readonly tenant: string;
  private readonly s3Secret = randomUUID();
  opts: Required<Omit<CernerSimulatorOptions, 'clients' | 'latencyMs' | 'now' | 'tenant'>>;

  constructor(opts: CernerSimulatorOptions = {}) {
    super(opts);
    this.tenant = opts.tenant ?? CERNER_TENANT;
    this.opts = {
      tokenTtlSec: opts.tokenTtlSec ?? 570,
      pageSize: opts.pageSize ?? 50,
      pagingTtlMs: opts.pagingTtlMs ?? 10 * 60_000,
      bulkPollsUntilDone: opts.bulkPollsUntilDone ?? 2,
      bulkRetryAfterSec: opts.bulkRetryAfterSec ?? 600,
      bulkMaxLinesPerFile: opts.bulkMaxLinesPerFile ?? 10_000,
    };
  }

  get baseUrl(): string {
    return `${this.server.origin}/r4/${this.tenant}`;
  }
  get tokenPath(): string {
    return `/tenants/${this.tenant}/hosts/127.0.0.1:${this.server.port}/protocols/oauth2/profiles/smart-v1/token`;
  }
  get tokenUrl(): string {
    return `${this.server.origin}${this.tokenPath}`;
  }

  addSyntheticVitals(count: number, patientId: string, lastUpdated = '2026-01-01T00:00:00.000Z'): void {
    this.synthetic.Observation = {
      count,
      make: (i) => syntheticVital(i, patientId, `https://fhir.cerner.com/${this.tenant}/codeSet/72`, lastUpdated),
    };
  }

  protected async handle(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    body: Buffer,
    log: LoggedRequest,
  ): Promise<void> {
    const path = url.pathname;
    if (path === this.tokenPath && req.method === 'POST') return this.token(req, res, body, log);
    if (path.startsWith('/s3/')) return this.s3(req, res, url, log);
    const rootPath = `/r4/${this.tenant}`;
    if (!path.startsWith('/r4/')) {
      res.writeHead(502, { 'content-length': '0' }).end();
      return;
    }
    res.setHeader('x-request-id', randomUUID());
    if (!path.startsWith(rootPath + '/') && path !== rootPath)
      return sendJson(res, 403, cernerOutcome('error', 'forbidden', 'Tenant not valid or accessible'));
    const rel = path.slice(rootPath.length + 1);
    if (rel === '.well-known/smart-configuration') {
      return sendJson(
        res,
        200,
        {
          token_endpoint: this.tokenUrl,
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
          token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
          grant_types_supported: ['authorization_code', 'client_credentials'],
          scopes_supported: ['system/Patient.read', 'system/Observation.read', 'system/Observation.write'],
          capabilities: [
            'client-confidential-symmetric',
            'client-confidential-asymmetric',
            'permission-v1',
            'permission-v2',
          ],
        },
        {},
        'application/json',
      );
    }
    const accept = String(req.headers.accept ?? '');
    const acceptable = rel.startsWith('bulk-export/files/')
      ? /application\/(fhir\+ndjson|ndjson|fhir\+json|json)/
      : /application\/(fhir\+json|json\+fhir|json)/;
    if (!acceptable.test(accept)) {
      log.reason = `Accept ${accept || '(none)'} is not JSON`;
      res.writeHead(406, { 'content-length': '0' }).end();
      return;
    }
    if (rel === 'metadata')
      return sendJson(res, 200, {
        resourceType: 'CapabilityStatement',
        status: 'active',
        kind: 'instance',
        fhirVersion: '4.0.1',
        format: ['json'],
        date: '2026-01-01',
      });

    const token = this.authorize(req, res, log);
    if (!token) return;
    const segs = rel.split('/');
    if (segs[0] === 'bulk-export') return this.bulkStatusOrFile(req, res, segs, token);
    if (segs[0] === 'Group' && segs[2] === '$export' && req.method === 'GET')
      return this.kickoff(req, res, url, token, segs[1]);
    if (segs[0] === '$export')
      return sendJson(res, 400, cernerOutcome('error', 'not-supported', 'Only Group export is supported'));
    const type = segs[0];
    if (!READ_TYPES.has(type))
      return sendJson(res, 404, cernerOutcome('error', 'not-found', `Unknown resource type ${type}`));
    const need = (mode: 'read' | 'write') => {
      const ok = token.scopes.some(
        (s) =>
          s === `system/${type}.${mode}` || (mode === 'read' ? s === `system/${type}.rs` : s === `system/${type}.crus`),
      );
      if (!ok) {
        log.reason = `scope system/${type}.${mode} not granted`;
        sendJson(res, 403, cernerOutcome('error', 'forbidden', 'Insufficient scope'));
      }
      return ok;
    };
    if (segs.length === 1 && req.method === 'GET') return need('read') ? this.search(res, url, type) : undefined;
    if (segs.length === 1 && req.method === 'POST') return need('write') ? this.create(res, type, body) : undefined;
    if (segs.length === 2 && req.method === 'GET') {
      if (!need('read')) return;
      const r = this.store.get(type, segs[1]);
      if (!r) return sendJson(res, 404, cernerOutcome('error', 'not-found', 'Resource not found'));
      return sendJson(res, 200, r, { etag: `W/"${r.meta.versionId}"` });
    }
    if (segs.length === 2 && req.method === 'PUT')
      return need('write') ? this.update(req, res, type, segs[1], body) : undefined;
    return sendJson(res, 405, cernerOutcome('error', 'not-supported', 'Method not allowed'));
  }

  private tokenError(
    res: ServerResponse,
    log: LoggedRequest,
    status: number,
    error: string,
    reason: string,
    clientId = 'unknown',
  ): void {
    log.reason = reason;
    const urn = encodeURIComponent(
      `urn:cerner:error:authorization-server:oauth2:token:${error === 'invalid_scope' ? 'invalid-scope' : 'invalid-authorization-header'}`,
    );
    sendJson(
      res,
      status,
      {
        error,
        error_uri: `https://authorization.cerner.com/errors/${urn}/instances/${randomUUID()}?client=${clientId}&tenant=${this.tenant}`,
      },
      {},
      'application/json',
    );
  }

  private async token(req: IncomingMessage, res: ServerResponse, body: Buffer, log: LoggedRequest): Promise<void> {
    const form = parseForm(body);
    if (form.get('grant_type') !== 'client_credentials')
      return this.tokenError(res, log, 400, 'unsupported_grant_type', 'grant_type must be client_credentials');
    let client: CernerClient | undefined;
    const basic = parseBasic(req.headers.authorization);
    if (basic) {
      client = this.clients.get(basic.user);
      if (!client || !client.secret || client.secret !== basic.pass)
        return this.tokenError(res, log, 401, 'invalid_client', 'bad Basic credentials');
    } else if (form.get('client_assertion')) {
      if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')
        return this.tokenError(res, log, 401, 'invalid_client', 'client_assertion_type wrong');
      const jwtClients = new Map<string, RegisteredJwtClient>();
      for (const c of this.clients.values())
        if (c.jwks) jwtClients.set(c.clientId, { clientId: c.clientId, jwks: c.jwks });
      const check = await verifyClientAssertion(form.get('client_assertion')!, {
        clients: jwtClients,
        tokenUrl: this.tokenUrl,
        seenJti: this.seenJti,
        now: this.server.now(),
      });
      if (!check.ok) return this.tokenError(res, log, 401, 'invalid_client', check.reason);
      client = this.clients.get(check.clientId);
    } else return this.tokenError(res, log, 401, 'invalid_client', 'no client authentication');
    const requested = (form.get('scope') ?? '').split(/\s+/).filter(Boolean);
    if (!requested.length)
      return this.tokenError(res, log, 400, 'invalid_scope', 'no scope requested', client!.clientId);
    const wild = requested.find((s) => s.includes('*'));
    if (wild)
      return this.tokenError(
        res,
        log,
        400,
        'invalid_scope',
        `wildcard scope ${wild} is not supported`,
        client!.clientId,
      );
    const missing = requested.find((s) => !client!.scopes.includes(s));
    if (missing)
      return this.tokenError(res, log, 400, 'invalid_scope', `scope ${missing} not granted`, client!.clientId);
    const access = newToken();
    this.tokens.set(access, {
      clientId: client!.clientId,
      expiresAt: this.server.now() + this.opts.tokenTtlSec * 1000,
      scopes: requested,
    });
    sendJson(
      res,
      200,
      { access_token: access, scope: requested.join(' '), token_type: 'Bearer', expires_in: this.opts.tokenTtlSec },
      { 'cache-control': 'no-store' },
      'application/json',
    );
  }

  private authorize(req: IncomingMessage, res: ServerResponse, log: LoggedRequest): IssuedToken | undefined {
    const tok = /^Bearer (.+)$/i.exec(String(req.headers.authorization ?? ''))?.[1];
    const issued = tok ? this.tokens.get(tok) : undefined;
    if (!issued || issued.expiresAt <= this.server.now()) {
      log.reason = !tok ? 'no bearer token' : !issued ? 'unknown token' : 'token expired';
      res
        .writeHead(401, { 'www-authenticate': 'Bearer realm="fhir-ehr", error="invalid_token"', 'content-length': '0' })
        .end();
      return undefined;
    }
    return issued;
  }

  private search(res: ServerResponse, url: URL, type: string): void {
    const q = url.searchParams;
    const ctx = q.get('-pageContext');
    if (ctx) {
      const s = this.sessions.get(ctx);
      if (!s)
        return sendJson(res, 400, cernerOutcome('error', 'invalid', 'The -pageContext is invalid or has expired'));
      const page = Number(q.get('-pageNumber') ?? '1');
      return sendJson(res, 200, this.page(type, s.results, page, s.pageSize, ctx, url.toString(), q));
    }
    const has = (n: string) => q.has(n);
    const patient = q.get('patient') ?? q.get('subject')?.replace(/^Patient\//, '') ?? undefined;
    const bad = (text: string) => sendJson(res, 400, cernerOutcome('error', 'invalid', text));
    switch (type) {
      case 'Patient':
        if (
          !['_id', 'identifier', 'birthdate', 'name', 'given', 'family', 'address-postalcode', 'phone', 'email'].some(
            has,
          )
        )
          return bad('no supported search parameters provided');
        break;
      case 'Observation':
        if (!patient && !has('_id')) return bad('patient, subject or _id is required');
        break;
      case 'Encounter':
        if (!patient && !has('_id') && !has('identifier') && !has('account'))
          return bad('patient, subject, _id, identifier or account is required');
        if (has('status') && !patient) return bad('status requires patient');
        break;
      case 'Appointment':
        if (
          !has('_id') &&
          !((patient || has('practitioner') || has('location')) && (has('date') || has('-date-or-req-period')))
        )
          return bad('_id, or patient/practitioner/location with date, is required');
        break;
      default:
        if (!patient && !has('_id')) return bad('patient is required');
    }
    if (has('date') && has('_lastUpdated')) return bad('date and _lastUpdated cannot be used together');
    if (q.getAll('date').length > 2 || q.getAll('_lastUpdated').length > 2)
      return bad('date/_lastUpdated may occur at most twice');
    let out = this.store.all(type);
    const filters = commonFilters(q, patient);
    if (has('category')) filters.push((r) => hasCoding(r.category, q.get('category')!));
    if (has('code')) filters.push((r) => hasCoding(r.code, q.get('code')!));
    for (const v of q.getAll('_lastUpdated')) filters.push((r) => matchDate(r.meta?.lastUpdated, v));
    for (const v of q.getAll('date'))
      filters.push((r) => matchDate(r.effectiveDateTime ?? r.period?.start ?? r.start ?? r.date, v));
    const kept = applyFilters(out, filters);
    if (!kept) return bad('invalid date value');
    out = kept.sort((a, b) => String(b.meta?.lastUpdated).localeCompare(String(a.meta?.lastUpdated)));
    const pageSize = Math.min(200, Math.max(1, Number(q.get('_count') ?? this.opts.pageSize) || this.opts.pageSize));
    const ctxNew = out.length > pageSize ? this.sessions.create(out, pageSize) : undefined;
    sendJson(res, 200, this.page(type, out, 1, pageSize, ctxNew, url.toString(), q));
  }

  private page(
    type: string,
    results: Res[],
    page: number,
    pageSize: number,
    ctx: string | undefined,
    self: string,
    q: URLSearchParams,
  ) {
    const slice = results.slice((page - 1) * pageSize, page * pageSize);
    const link: any[] = [{ relation: 'self', url: self }];
    if (ctx && page * pageSize < results.length) {
      const next = new URL(`${this.baseUrl}/${type}`);
      for (const [k, v] of q) if (!k.startsWith('-page')) next.searchParams.append(k, v);
      next.searchParams.set('-pageContext', ctx);
      next.searchParams.set('-pageDirection', 'NEXT');
      next.searchParams.set('-pageNumber', String(page + 1));
      link.push({ relation: 'next', url: next.toString() });
    }
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      type: 'searchset',
      link,
      entry: slice.map((r) => ({ fullUrl: `${this.baseUrl}/${type}/${r.id}`, resource: r })),
    };
  }

  private parse(res: ServerResponse, type: string, body: Buffer): Res | undefined {
    try {
      const r = JSON.parse(body.toString('utf8'));
      if (r.resourceType !== type) {
        sendJson(res, 422, cernerOutcome('error', 'invalid', 'resourceType does not match the URL'));
        return undefined;
      }
      return r;
    } catch {
      sendJson(res, 400, cernerOutcome('error', 'structure', 'body is not JSON'));
      return undefined;
    }
  }

  private create(res: ServerResponse, type: string, body: Buffer): void {
    if (!WRITE_TYPES.has(type))
      return sendJson(res, 405, cernerOutcome('error', 'not-supported', `${type} create is not supported`));
    const r = this.parse(res, type, body);
    if (!r) return;
    if (type === 'Observation' && !r.status)
      return sendJson(res, 500, {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'fatal', code: 'required', location: ['/f:Observation/f:status'] }],
      });
    if (type !== 'Patient') {
      const pid = patientOf(r);
      if (!pid || !this.store.get('Patient', pid))
        return sendJson(
          res,
          422,
          cernerOutcome('error', 'business-rule', 'The patient reference is not valid in this tenant'),
        );
    }
    const { id: _i, meta: _m, ...rest } = r;
    const stored = this.store.put({ ...rest, id: String(Math.floor(10_000_000 + Math.random() * 80_000_000)) } as Res);
    res
      .writeHead(201, {
        location: `${this.baseUrl}/${type}/${stored.id}`,
        etag: `W/"${stored.meta.versionId}"`,
        'last-modified': new Date(this.server.now()).toUTCString(),
        'content-length': '0',
      })
      .end();
  }

  private update(req: IncomingMessage, res: ServerResponse, type: string, id: string, body: Buffer): void {
    if (!WRITE_TYPES.has(type))
      return sendJson(res, 405, cernerOutcome('error', 'not-supported', `${type} update is not supported`));
    const current = this.store.get(type, id);
    if (!current) return sendJson(res, 404, cernerOutcome('error', 'not-found', 'Resource not found'));
    const ifMatch = req.headers['if-match'];
    if (!ifMatch)
      return sendJson(res, 412, cernerOutcome('error', 'conflict', 'If-Match header is required for update'));
    const wanted = /^(W\/)?"?([^"]+)"?$/.exec(String(ifMatch))?.[2];
    if (wanted !== current.meta.versionId)
      return sendJson(res, 409, cernerOutcome('error', 'conflict', 'Version mismatch: the resource has been updated'));
    const r = this.parse(res, type, body);
    if (!r) return;
    if (r.id !== id) return sendJson(res, 400, cernerOutcome('error', 'invalid', 'id does not match the URL'));
    if (type !== 'Patient') {
      const pid = patientOf(r);
      if (!pid || !this.store.get('Patient', pid))
        return sendJson(
          res,
          422,
          cernerOutcome('error', 'business-rule', 'The patient reference is not valid in this tenant'),
        );
    }
    const stored = this.store.put({ ...r, meta: undefined } as Res);
    res.writeHead(200, { etag: `W/"${stored.meta.versionId}"`, 'content-length': '0' }).end();
  }

  private kickoff(req: IncomingMessage, res: ServerResponse, url: URL, token: IssuedToken, groupId: string): void {
    if (!/respond-async/.test(String(req.headers.prefer ?? '')))
      return sendJson(res, 400, cernerOutcome('error', 'invalid', 'Prefer: respond-async header is required'));
    const members = this.groups.get(groupId);
    if (!members) return sendJson(res, 404, cernerOutcome('error', 'not-found', 'Group not found'));
    for (const j of this.jobs.values()) {
      if (j.clientId === token.clientId && !j.deleted && j.pollsLeft > 0)
        return sendJson(
          res,
          429,
          cernerOutcome('error', 'throttled', 'An export is already in progress for this client and tenant'),
        );
    }
    const types = (url.searchParams.get('_type') ?? 'Patient,Observation,Condition,Encounter').split(',');
    const missingScope = types.find(
      (t) => !token.scopes.includes(`system/${t}.read`) && !token.scopes.includes(`system/${t}.rs`),
    );
    if (missingScope)
      return sendJson(
        res,
        403,
        cernerOutcome('error', 'forbidden', `system/${missingScope}.read scope is required to export ${missingScope}`),
      );
    const since = url.searchParams.get('_since') ?? undefined;
    if (since && Number.isNaN(Date.parse(since)))
      return sendJson(res, 400, cernerOutcome('error', 'invalid', '_since must be an instant'));
    this.kickOff(res, url, token, {
      types,
      since,
      members,
      maxLinesPerFile: this.opts.bulkMaxLinesPerFile,
      pollsUntilDone: this.opts.bulkPollsUntilDone,
      statusUrl: (id) => `${this.baseUrl}/bulk-export/jobs/${id}`,
    });
  }

  private signS3(fileId: string, expires: number): string {
    return createHmac('sha256', this.s3Secret).update(`${fileId}:${expires}`).digest('hex');
  }

  private async bulkStatusOrFile(
    req: IncomingMessage,
    res: ServerResponse,
    segs: string[],
    token: IssuedToken,
  ): Promise<void> {
    if (segs[1] === 'jobs') {
      const job = this.jobs.get(segs[2] ?? '');
      if (!job || job.deleted || job.clientId !== token.clientId)
        return sendJson(res, 404, cernerOutcome('error', 'not-found', 'Job not found'));
      if (req.method === 'DELETE') {
        job.deleted = true;
        res.writeHead(202, { 'content-length': '0' }).end();
        return;
      }
      return this.jobStatus(res, job, {
        retryAfterSec: this.opts.bulkRetryAfterSec,
        progress: () => 'in-progress',
        fileUrl: (f) => `${this.baseUrl}/bulk-export/files/${job.id}.${f.id}`,
        headers: { expires: new Date(this.server.now() + 30 * 24 * 3600_000).toUTCString() },
      });
    }
    if (segs[1] === 'files' && req.method === 'GET') {
      const [jobId, fileId] = String(segs[2] ?? '').split('.');
      const job = this.jobs.get(jobId);
      const f = job?.files.find((x) => x.id === fileId);
      if (!job || !f || job.clientId !== token.clientId)
        return sendJson(res, 404, cernerOutcome('error', 'not-found', 'File not found'));
      const expires = Math.floor(this.server.now() / 1000) + 300;
      const loc = `${this.server.origin}/s3/ferry-bulk-${this.tenant}/${jobId}.${fileId}.ndjson?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&X-Amz-Date=${expires}&X-Amz-Signature=${this.signS3(fileId, expires)}`;
      res.writeHead(307, { location: loc, 'content-length': '0' }).end();
      return;
    }
    return sendJson(res, 404, cernerOutcome('error', 'not-found', 'Not found'));
  }

  /** The pre-signed storage: refuses a forwarded Authorization header, like S3 does. */
  private async s3(req: IncomingMessage, res: ServerResponse, url: URL, log: LoggedRequest): Promise<void> {
    const xml = (status: number, code: string, message: string): void => {
      res
        .writeHead(status, { 'content-type': 'application/xml' })
        .end(
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${randomUUID()}</RequestId></Error>`,
        );
    };
    if (req.headers.authorization) {
      log.reason = 'Authorization header forwarded to storage';
      return xml(
        400,
        'InvalidArgument',
        'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified',
      );
    }
    const m = /^\/s3\/[^/]+\/([^.]+)\.([^.]+)\.ndjson$/.exec(url.pathname);
    const expires = Number(url.searchParams.get('X-Amz-Date'));
    if (!m || url.searchParams.get('X-Amz-Signature') !== this.signS3(m[2], expires))
      return xml(
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided.',
      );
    if (expires * 1000 < this.server.now()) return xml(403, 'AccessDenied', 'Request has expired');
    const f = this.jobs.get(m[1])?.files.find((x) => x.id === m[2]);
    if (!f) return xml(404, 'NoSuchKey', 'The specified key does not exist.');
    return streamNdjson(res, f);
  }
}

/** Fixture data in Cerner's sandbox shapes (vendor-apis.md §4.6). */
export function seedCernerSandbox(sim: CernerSimulator): { patientId: string; mergedId: string } {
  const patientId = '12724067';
  sim.store.put({
    resourceType: 'Patient',
    id: patientId,
    identifier: [
      {
        id: 'CI-490016886-0',
        use: 'usual',
        type: {
          coding: [
            {
              system: `https://fhir.cerner.com/${sim.tenant}/codeSet/4`,
              code: '10',
              display: 'MRN',
              userSelected: true,
            },
            {
              system: 'http://terminology.hl7.org/CodeSystem/v2-0203',
              code: 'MR',
              display: 'Medical record number',
              userSelected: false,
            },
          ],
          text: 'MRN',
        },
        system: CERNER_MRN_OID,
        value: '6931',
        period: { start: '2019-12-26T15:14:12.000Z' },
      },
    ],
    active: true,
    name: [{ id: 'CI-12724067-0', use: 'official', text: 'SMART, JOE', family: 'SMART', given: ['JOE'] }],
    telecom: [{ system: 'phone', value: '8168888886', use: 'home', rank: '1' }],
    gender: 'male',
    birthDate: '1976-04-29',
    deceasedBoolean: false,
    address: [
      {
        use: 'home',
        line: ['12345 Main St'],
        city: 'Kansas city',
        district: 'Jackson',
        state: 'MO',
        postalCode: '64116',
        country: 'US',
      },
    ],
  });
  const mergedId = '12724099';
  sim.store.put({
    resourceType: 'Patient',
    id: mergedId,
    active: false,
    identifier: [{ use: 'usual', system: CERNER_MRN_OID, value: '6999' }],
    name: [{ use: 'official', text: '*****' }],
    link: [{ other: { reference: `Patient/${patientId}` }, type: 'replaced-by' }],
  });
  return { patientId, mergedId };
}

export function cernerVital(tenant: string, patientId: string, n: number): Res {
  return {
    resourceType: 'Observation',
    id: `VS-${197292857 + n}`,
    identifier: [
      {
        system: 'https://fhir.cerner.com/ceuuid',
        value: `CE87caf4b7-9397-4667-9897-702218017c9e-${197292857 + n}-2020070621132500`,
      },
    ],
    status: 'final',
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/observation-category',
            code: 'vital-signs',
            display: 'Vital Signs',
          },
        ],
        text: 'Vital Signs',
      },
    ],
    code: {
      coding: [
        {
          system: `https://fhir.cerner.com/${tenant}/codeSet/72`,
          code: '703535',
          display: 'Temperature Axillary',
          userSelected: true,
        },
        { system: 'http://loinc.org', code: '8328-7', display: 'Axillary temperature' },
      ],
      text: 'Temperature Axillary',
    },
    subject: { reference: `Patient/${patientId}` },
    encounter: { reference: 'Encounter/97953477' },
    effectiveDateTime: '2020-07-06T21:11:00.000Z',
    issued: '2020-07-06T21:13:23.000Z',
    valueQuantity: { value: 27 + n / 10, unit: 'degC', system: 'http://unitsofmeasure.org', code: 'Cel' },
    interpretation: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'L', display: 'Low' },
        ],
        text: 'LOW',
      },
    ],
    referenceRange: [{ low: { value: 35.2, unit: 'degC' }, high: { value: 36.7, unit: 'degC' } }],
  };
}
