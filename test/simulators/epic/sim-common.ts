/**
 * Building blocks shared by the Epic and Cerner simulators (test/simulators/epic, test/simulators/cerner):
 * a node `http` server on 127.0.0.1 with a request log and fault injection, a resource store with a
 * settable clock, search paging sessions that expire, SMART backend-services JWT verification, and
 * Bulk Data jobs whose NDJSON files are generated and streamed on the fly.
 *
 * Built from ../shared/docs/vendor-apis.md §0 (simulator knobs), §3 (Epic) and §4 (Cerner); each
 * vendor simulator decides status codes, URL shapes and error bodies itself.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader, decodeJwt, type JSONWebKeySet } from 'jose';

export interface LoggedRequest {
  at: number;
  method: string;
  path: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  status?: number;
  /** Why the simulator refused (auth failures hide it from the client, tests can read it here). */
  reason?: string;
}

/** An injected failure: the next `times` matching requests get this answer instead of the real one. */
export interface Fault {
  /** Substring or regexp of the request path (+ query). */
  match: string | RegExp;
  method?: string;
  status: number;
  /** How many requests to fail (default 1). */
  times?: number;
  /** Let this many matching requests through before failing (e.g. a 401 on the 3rd call: skip 2). */
  skip?: number;
  /** `Retry-After` header value (seconds or an HTTP-date). */
  retryAfter?: string;
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  /** Close the socket without answering (network error). */
  drop?: boolean;
}

export interface SimOptions {
  /** Extra latency on every answer, ms. */
  latencyMs?: number;
  /** Clock (epoch ms); tests move it to expire tokens and sessions deterministically. */
  now?: () => number;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer, log: LoggedRequest) => Promise<void> | void;

export class SimServer {
  readonly requests: LoggedRequest[] = [];
  private readonly faults: (Fault & { hits: number })[] = [];
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;
  latencyMs: number;
  private clockOffsetMs = 0;
  private readonly baseNow: () => number;

  constructor(private readonly handler: Handler, opts: SimOptions = {}) {
    this.latencyMs = opts.latencyMs ?? 0;
    this.baseNow = opts.now ?? Date.now;
  }

  /** Simulator clock (epoch ms). */
  now(): number {
    return this.baseNow() + this.clockOffsetMs;
  }

  /** Move the simulator clock forward (tokens, paging sessions and jobs age by `ms`). */
  advance(ms: number): void {
    this.clockOffsetMs += ms;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  inject(fault: Fault): void {
    this.faults.push({ ...fault, hits: 0 });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.dispatch(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    const log: LoggedRequest = { at: this.now(), method: req.method ?? 'GET', path: url.pathname, url: url.toString(), headers: { ...req.headers } };
    this.requests.push(log);
    res.on('finish', () => (log.status = res.statusCode));
    try {
      const body = await readBody(req);
      if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
      const target = url.pathname + url.search;
      for (const f of this.faults) {
        const matches = (typeof f.match === 'string' ? target.includes(f.match) : f.match.test(target)) && (!f.method || f.method === req.method);
        if (!matches) continue;
        f.hits++;
        if (f.hits <= (f.skip ?? 0)) continue;
        if (f.hits > (f.skip ?? 0) + (f.times ?? 1)) continue;
        log.reason = `injected ${f.drop ? 'drop' : f.status}`;
        if (f.drop) {
          req.socket.destroy();
          return;
        }
        const headers: Record<string, string> = { ...(f.headers ?? {}) };
        if (f.retryAfter !== undefined) headers['retry-after'] = f.retryAfter;
        const payload = f.body === undefined ? '' : typeof f.body === 'string' ? f.body : JSON.stringify(f.body);
        if (payload) headers['content-type'] = f.contentType ?? 'application/fhir+json';
        res.writeHead(f.status, headers).end(payload);
        return;
      }
      await this.handler(req, res, url, body, log);
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`simulator error: ${(e as Error).message}`);
      else res.destroy();
    }
  }
}

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}, contentType = 'application/fhir+json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': `${contentType}; charset=utf-8`, 'content-length': String(Buffer.byteLength(text)), ...headers }).end(text);
}

// ---------------------------------------------------------------------------------------------
// Resources

export type Res = Record<string, any> & { resourceType: string; id: string };
/**
 * A resource to store, `id` assigned when absent. (Not `Omit<Res, 'id'>`: Omit over an index
 * signature keeps only the index signature and so loses `resourceType`.)
 */
export type NewRes = Record<string, any> & { resourceType: string; id?: string };

/** Resources by type and id, stamped with meta.versionId / meta.lastUpdated from the simulator clock. */
export class ResourceStore {
  private readonly byType = new Map<string, Map<string, Res>>();
  constructor(private readonly now: () => number) {}

  /**
   * `unversioned`: stored without `meta.versionId`/`meta.lastUpdated`, as Epic often serves
   * resources (the reference's Epic examples, vendor-apis.md 3.6, carry no `meta`); the server still
   * knows when it changed (`changedAt`, not serialised), which `_lastUpdated` and bulk `_since` use.
   */
  put(resource: NewRes, opts: { keepMeta?: boolean; unversioned?: boolean } = {}): Res {
    const id = resource.id ?? randomBytes(9).toString('base64url');
    const map = this.byType.get(resource.resourceType) ?? new Map<string, Res>();
    this.byType.set(resource.resourceType, map);
    const prev = map.get(id);
    const version = prev ? Number(prev.meta?.versionId ?? '1') + 1 : 1;
    let stored: Res;
    if (opts.unversioned) {
      const { meta, ...rest } = resource;
      const m = { ...(meta ?? {}) };
      delete m.versionId;
      delete m.lastUpdated;
      stored = { ...rest, id, ...(Object.keys(m).length ? { meta: m } : {}) };
    } else
      stored = opts.keepMeta && resource.meta?.lastUpdated
        ? { ...resource, id }
        : { ...resource, id, meta: { ...(resource.meta ?? {}), versionId: String(version), lastUpdated: new Date(this.now()).toISOString() } };
    Object.defineProperty(stored, 'changedAt', { value: new Date(this.now()).toISOString(), enumerable: false });
    map.set(id, stored);
    return stored;
  }

  get(type: string, id: string): Res | undefined {
    return this.byType.get(type)?.get(id);
  }

  all(type: string): Res[] {
    return [...(this.byType.get(type)?.values() ?? [])];
  }

  types(): string[] {
    return [...this.byType.keys()];
  }
}

/** When the server last changed a resource (its `meta.lastUpdated`, or the hidden stamp of an unversioned one). */
export function changedAt(r: Res): string | undefined {
  return r.meta?.lastUpdated ?? (r as { changedAt?: string }).changedAt;
}

/** The patient a resource belongs to (Patient itself, or subject / patient reference). */
export function patientOf(r: Res): string | undefined {
  if (r.resourceType === 'Patient') return r.id;
  const ref: string | undefined = r.subject?.reference ?? r.patient?.reference ?? r.participant?.find((p: any) => p.actor?.reference?.startsWith('Patient/'))?.actor?.reference;
  return ref?.startsWith('Patient/') ? ref.slice('Patient/'.length) : undefined;
}

/** FHIR date-prefix comparison (eq/ne/gt/ge/lt/le) of an instant against a search value. */
export function matchDate(actual: string | undefined, expr: string): boolean | 'invalid' {
  const m = /^(eq|ne|gt|ge|lt|le|sa|eb|ap)?(\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$/.exec(expr);
  if (!m) return 'invalid';
  if (!actual) return false;
  const a = Date.parse(actual);
  const v = Date.parse(m[2]);
  if (Number.isNaN(v)) return 'invalid';
  switch (m[1] ?? 'eq') {
    case 'eq':
      return m[2].length <= 10 ? actual.startsWith(m[2]) : a === v;
    case 'ne':
      return a !== v;
    case 'gt':
    case 'sa':
      return a > v;
    case 'ge':
      return a >= v;
    case 'lt':
    case 'eb':
      return a < v;
    case 'le':
      return a <= v;
    default:
      return 'invalid';
  }
}

export function hasCoding(concepts: any, wanted: string): boolean {
  const list: any[] = Array.isArray(concepts) ? concepts : concepts ? [concepts] : [];
  const alternatives = wanted.split(',');
  return list.some((cc) =>
    (cc?.coding ?? []).some((c: any) =>
      alternatives.some((w) => {
        const bar = w.indexOf('|');
        return bar >= 0 ? c.system === w.slice(0, bar) && c.code === w.slice(bar + 1) : c.code === w;
      }),
    ),
  );
}

export function hasIdentifier(r: Res, wanted: string): boolean {
  const bar = wanted.indexOf('|');
  return (r.identifier ?? []).some((i: any) => (bar >= 0 ? i.system === wanted.slice(0, bar) && String(i.value).trim() === wanted.slice(bar + 1) : String(i.value).trim() === wanted));
}

// ---------------------------------------------------------------------------------------------
// Paging sessions

interface PagingSession {
  results: Res[];
  createdAt: number;
  pageSize: number;
}

/** Search results held server-side behind an opaque cursor; a session older than `ttlMs` is gone. */
export class PagingSessions {
  private readonly sessions = new Map<string, PagingSession>();
  ttlMs: number;
  constructor(private readonly now: () => number, ttlMs = 10 * 60_000) {
    this.ttlMs = ttlMs;
  }
  create(results: Res[], pageSize: number): string {
    const token = randomBytes(18).toString('base64url');
    this.sessions.set(token, { results, createdAt: this.now(), pageSize });
    return token;
  }
  /** `undefined` when unknown or expired. */
  get(token: string): PagingSession | undefined {
    const s = this.sessions.get(token);
    if (!s) return undefined;
    if (this.now() - s.createdAt > this.ttlMs) {
      this.sessions.delete(token);
      return undefined;
    }
    return s;
  }
  /** Expire every open session now (the "expired paging session" knob). */
  expireAll(): void {
    this.sessions.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// SMART backend services: JWT client assertion verification

export interface RegisteredJwtClient {
  clientId: string;
  /** Static public keys registered with the app. */
  jwks?: JSONWebKeySet;
  /** JWK Set URL registered instead (Epic requires JKU for backend apps since Feb 2026): the assertion's `jku` header must equal it and keys are fetched from it. */
  jku?: string;
  /** Registration not yet propagated before this instant (epoch ms): refused like a bad key. */
  activeFrom?: number;
}

export type AssertionCheck = { ok: true; clientId: string } | { ok: false; reason: string };

/**
 * Verify a client assertion as an authorization server does: RS384 (or ES384) signature against
 * the client's registered key set (selected by `kid`), `iss` == `sub` == a registered client id,
 * `aud` == the token endpoint URL exactly, `exp` present and at most 5 minutes after now,
 * `jti` present and never seen before.
 */
export async function verifyClientAssertion(
  assertion: string,
  opts: { clients: Map<string, RegisteredJwtClient>; tokenUrl: string; seenJti: Map<string, number>; now: number; maxExpSec?: number },
): Promise<AssertionCheck> {
  let claims: ReturnType<typeof decodeJwt>;
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(assertion);
    claims = decodeJwt(assertion);
  } catch {
    return { ok: false, reason: 'malformed client_assertion' };
  }
  if (header.alg !== 'RS384' && header.alg !== 'ES384') return { ok: false, reason: `alg ${header.alg} not accepted (RS384/ES384)` };
  const clientId = claims.iss;
  if (!clientId || claims.sub !== clientId) return { ok: false, reason: 'iss and sub must both be the client id' };
  const client = opts.clients.get(clientId);
  if (!client) return { ok: false, reason: `unknown client ${clientId}` };
  const nowSec = Math.floor(opts.now / 1000);
  if (client.activeFrom !== undefined && opts.now < client.activeFrom) return { ok: false, reason: `client ${clientId} is not active yet (registration propagating)` };
  let jwks = client.jwks;
  if (client.jku) {
    if (header.jku !== client.jku) return { ok: false, reason: `jku header ${String(header.jku)} is not the registered JWK Set URL` };
    try {
      const res = await fetch(client.jku, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
      if (!res.ok) return { ok: false, reason: `JWK Set URL answered ${res.status}` };
      jwks = (await res.json()) as JSONWebKeySet;
    } catch (e) {
      return { ok: false, reason: `JWK Set URL unreachable: ${(e as Error).message}` };
    }
  }
  if (!jwks) return { ok: false, reason: `no keys registered for ${clientId}` };
  try {
    await jwtVerify(assertion, createLocalJWKSet(jwks), {
      algorithms: ['RS384', 'ES384'],
      audience: opts.tokenUrl,
      issuer: clientId,
      subject: clientId,
      currentDate: new Date(opts.now),
      requiredClaims: ['exp', 'jti'],
    });
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && (e as { claim?: string }).claim === 'aud') return { ok: false, reason: `aud must be the token endpoint ${opts.tokenUrl}` };
    if (code === 'ERR_JWT_EXPIRED') return { ok: false, reason: 'assertion expired' };
    if (code === 'ERR_JWKS_NO_MATCHING_KEY') return { ok: false, reason: `no registered key matches kid ${String(header.kid)}` };
    return { ok: false, reason: `${code || 'verification failed'}: ${(e as Error).message}` };
  }
  if (typeof claims.exp !== 'number' || claims.exp - nowSec > (opts.maxExpSec ?? 300)) return { ok: false, reason: 'exp is more than 5 minutes in the future' };
  const jti = String(claims.jti);
  for (const [j, exp] of opts.seenJti) if (exp < nowSec - 600) opts.seenJti.delete(j);
  if (opts.seenJti.has(jti)) return { ok: false, reason: `jti ${jti} was already used` };
  opts.seenJti.set(jti, claims.exp);
  return { ok: true, clientId };
}

export function parseForm(body: Buffer): URLSearchParams {
  return new URLSearchParams(body.toString('utf8'));
}

export function parseBasic(header: string | undefined): { user: string; pass: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const raw = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const i = raw.indexOf(':');
  return i < 0 ? undefined : { user: decodeURIComponent(raw.slice(0, i)), pass: decodeURIComponent(raw.slice(i + 1)) };
}

export interface IssuedToken {
  clientId: string;
  expiresAt: number;
  scopes: string[];
}

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

// ---------------------------------------------------------------------------------------------
// Bulk Data

export interface BulkFile {
  id: string;
  type: string;
  /** Resources snapshotted at kick-off, plus synthetic ones generated on the fly. */
  lines: string[];
  synthetic?: { from: number; count: number; make: (i: number) => Res };
}

export interface BulkJob {
  id: string;
  clientId: string;
  request: string;
  transactionTime: string;
  createdAt: number;
  pollsLeft: number;
  polls: number;
  lastPollAt?: number;
  /** Polls that came before the Retry-After we gave had elapsed. */
  earlyPolls: number;
  files: BulkFile[];
  errorFiles: BulkFile[];
  deleted: boolean;
}

export interface BulkKickoff {
  clientId: string;
  request: string;
  types: string[];
  since?: string;
  patients?: Set<string>;
  maxLinesPerFile: number;
  pollsUntilDone: number;
  synthetic?: Record<string, { count: number; make: (i: number) => Res }>;
  store: ResourceStore;
  now: number;
}

export function createBulkJob(k: BulkKickoff): BulkJob {
  const id = randomUUID();
  const files: BulkFile[] = [];
  const sinceMs = k.since ? Date.parse(k.since) : undefined;
  for (const type of k.types) {
    const lines = k.store
      .all(type)
      .filter((r) => (sinceMs === undefined || Date.parse(r.meta?.lastUpdated ?? changedAt(r) ?? '') > sinceMs) && (!k.patients || k.patients.has(patientOf(r) ?? '')))
      .map((r) => JSON.stringify(r));
    for (let i = 0; i < lines.length; i += k.maxLinesPerFile) files.push({ id: randomUUID(), type, lines: lines.slice(i, i + k.maxLinesPerFile) });
    const syn = k.synthetic?.[type];
    if (syn && sinceMs === undefined) {
      for (let i = 0; i < syn.count; i += k.maxLinesPerFile) files.push({ id: randomUUID(), type, lines: [], synthetic: { from: i, count: Math.min(k.maxLinesPerFile, syn.count - i), make: syn.make } });
    }
  }
  return {
    id,
    clientId: k.clientId,
    request: k.request,
    transactionTime: new Date(k.now).toISOString(),
    createdAt: k.now,
    pollsLeft: k.pollsUntilDone,
    polls: 0,
    earlyPolls: 0,
    files,
    errorFiles: [],
    deleted: false,
  };
}

export function fileLineCount(f: BulkFile): number {
  return f.lines.length + (f.synthetic?.count ?? 0);
}

/** Stream a bulk file as NDJSON with backpressure (never builds the whole file in memory). */
export async function streamNdjson(res: ServerResponse, f: BulkFile, opts: { abortAfterLines?: number } = {}): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
  let written = 0;
  const write = async (line: string) => {
    if (opts.abortAfterLines !== undefined && written >= opts.abortAfterLines) {
      res.destroy();
      throw new Error('aborted');
    }
    written++;
    if (!res.write(line + '\n')) await new Promise<void>((r) => res.once('drain', r));
  };
  try {
    for (const l of f.lines) await write(l);
    if (f.synthetic) {
      let buf = '';
      for (let i = 0; i < f.synthetic.count; i++) {
        if (opts.abortAfterLines !== undefined && written >= opts.abortAfterLines) {
          if (buf) res.write(buf);
          res.destroy();
          return;
        }
        buf += JSON.stringify(f.synthetic.make(f.synthetic.from + i)) + '\n';
        written++;
        if (buf.length > 64 * 1024) {
          const ok = res.write(buf);
          buf = '';
          if (!ok) await new Promise<void>((r) => res.once('drain', r));
        }
      }
      if (buf) res.write(buf);
    }
    res.end();
  } catch {
    /* client went away / aborted on purpose */
  }
}

/** A synthetic Observation (vital sign) for bulk volume tests, in the vendor's dual-coded shape. */
export function syntheticVital(i: number, patientId: string, vendorSystem: string, lastUpdated: string): Res {
  return {
    resourceType: 'Observation',
    id: `syn-${i}`,
    meta: { versionId: '1', lastUpdated },
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs', display: 'Vital Signs' }], text: 'Vital Signs' }],
    code: { coding: [{ system: vendorSystem, code: '8', display: 'Pulse' }, { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }], text: 'Pulse' },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: lastUpdated,
    valueQuantity: { value: 60 + (i % 40), unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  };
}

/**
 * The sink contract's fault hooks (runSinkContract in @ferry/testkit) on a SimServer: the next POST
 * to `path` answered 503 (retryable) or 422 (dead), or every answer held `hangMs` (a hung call);
 * `teardown` lifts the hold.
 */
export function contractFaults(server: SimServer, path: string, hangMs = 4000) {
  return {
    fault(kind: 'retryable' | 'dead' | 'hang'): void {
      if (kind === 'hang') server.latencyMs = hangMs;
      else server.inject({ match: path, method: 'POST', status: kind === 'retryable' ? 503 : 422, times: 1, body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: kind === 'retryable' ? 'transient' : 'invalid' }] } });
    },
    async teardown(): Promise<void> {
      server.latencyMs = 0;
    },
  };
}

/** How many resources of `type` carry `marker` in an identifier (the sink contract's `received`). */
export const heldWith = (store: ResourceStore, type: string, marker: string): number => store.all(type).filter((r) => JSON.stringify(r.identifier ?? []).includes(marker)).length;

/** Keep the resources every filter accepts; `undefined` when a filter found an invalid value (the caller answers 400). */
export function applyFilters(results: Res[], filters: ((r: Res) => boolean | 'invalid')[]): Res[] | undefined {
  const kept: Res[] = [];
  for (const r of results) {
    let ok = true;
    for (const f of filters) {
      const m = f(r);
      if (m === 'invalid') return undefined;
      if (!m) {
        ok = false;
        break;
      }
    }
    if (ok) kept.push(r);
  }
  return kept;
}

/**
 * What the Epic and Cerner simulators share: the HTTP server (faults, latency, clock, request
 * log), the resource store, paging sessions, registered clients, issued tokens, seen JWT ids,
 * Groups, bulk jobs and synthetic volumes. A vendor subclass answers requests in `handle`.
 */
export abstract class FhirVendorSimulator<Client extends { clientId: string }> {
  readonly server: SimServer;
  readonly store: ResourceStore;
  readonly sessions: PagingSessions;
  readonly clients = new Map<string, Client>();
  readonly tokens = new Map<string, IssuedToken>();
  readonly seenJti = new Map<string, number>();
  readonly groups = new Map<string, string[]>();
  readonly jobs = new Map<string, BulkJob>();
  /** Synthetic resources added to Group exports without `_since` (volume tests). */
  readonly synthetic: Record<string, { count: number; make: (i: number) => Res }> = {};

  constructor(opts: { latencyMs?: number; now?: () => number; pagingTtlMs?: number; clients?: Client[] }) {
    this.server = new SimServer((req, res, url, body, log) => this.handle(req, res, url, body, log), { latencyMs: opts.latencyMs, now: opts.now });
    this.store = new ResourceStore(() => this.server.now());
    this.sessions = new PagingSessions(() => this.server.now(), opts.pagingTtlMs ?? 10 * 60_000);
    for (const c of opts.clients ?? []) this.clients.set(c.clientId, c);
  }

  protected abstract handle(req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer, log: LoggedRequest): Promise<void>;

  get requests(): LoggedRequest[] {
    return this.server.requests;
  }

  /** Start an export job over `members` and answer 202 with its status URL. */
  protected kickOff(res: ServerResponse, url: URL, token: IssuedToken, k: { types: string[]; since?: string; members: string[]; maxLinesPerFile: number; pollsUntilDone: number; statusUrl: (jobId: string) => string }): void {
    const job = createBulkJob({
      clientId: token.clientId,
      request: url.toString(),
      types: k.types,
      since: k.since,
      patients: new Set(k.members),
      maxLinesPerFile: k.maxLinesPerFile,
      pollsUntilDone: k.pollsUntilDone,
      synthetic: this.synthetic,
      store: this.store,
      now: this.server.now(),
    });
    this.jobs.set(job.id, job);
    res.writeHead(202, { 'content-location': k.statusUrl(job.id), 'content-length': '0' }).end();
  }

  /** A status poll: 202 with Retry-After and progress while the job runs (polls sooner than asked are counted), then the manifest. */
  protected jobStatus(res: ServerResponse, job: BulkJob, k: { retryAfterSec: number; progress: (job: BulkJob) => string; fileUrl: (f: BulkFile) => string; headers?: Record<string, string> }): void {
    const now = this.server.now();
    if (job.lastPollAt !== undefined && now - job.lastPollAt < k.retryAfterSec * 1000 - 50) job.earlyPolls++;
    job.lastPollAt = now;
    job.polls++;
    if (job.pollsLeft > 0) {
      job.pollsLeft--;
      res.writeHead(202, { 'x-progress': k.progress(job), 'retry-after': String(k.retryAfterSec), 'content-length': '0' }).end();
      return;
    }
    sendJson(
      res,
      200,
      { transactionTime: job.transactionTime, request: job.request, requiresAccessToken: true, output: job.files.map((f) => ({ type: f.type, url: k.fileUrl(f), count: fileLineCount(f) })), error: [] },
      k.headers ?? {},
      'application/json',
    );
  }

  start(): Promise<void> {
    return this.server.start();
  }
  stop(): Promise<void> {
    return this.server.stop();
  }
}

/** The search filters every vendor shares: the patient compartment, `_id` (comma list) and `identifier` (system|value). */
export function commonFilters(q: URLSearchParams, patient: string | undefined): ((r: Res) => boolean | 'invalid')[] {
  const filters: ((r: Res) => boolean | 'invalid')[] = [];
  if (patient) filters.push((r) => patientOf(r) === patient);
  const ids = q.get('_id');
  if (ids) {
    const set = new Set(ids.split(','));
    filters.push((r) => set.has(r.id));
  }
  const ident = q.get('identifier');
  if (ident) filters.push((r) => hasIdentifier(r, ident));
  return filters;
}
