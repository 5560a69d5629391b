/**
 * A real FHIR R4 server for tests: `@medplum/fhir-router` (FhirRouter + an in-memory repository)
 * behind a node `http` server on 127.0.0.1. It serves read, search, create, update, conditional
 * update (`PUT Patient?identifier=sys|val`), conditional create, delete, history and batch /
 * transaction Bundles (POST to the base), answering with the status codes and OperationOutcomes
 * the router produces. Resources are validated against the R4 definitions (`validateResource`)
 * before they are stored, so an invalid resource gets a real 400.
 *
 * Test controls: `pause()` / `resume()` take the listener down and bring it back on the same port
 * (connections refused meanwhile), `failNext()` answers the next N requests with an error status,
 * `setDelay()` slows every answer, `requests` records what was asked.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  badRequest,
  deepClone,
  getStatus,
  multipleMatches,
  normalizeOperationOutcome,
  OperationOutcomeError,
  validateResource,
} from '@medplum/core';
import { ensureFhirDefinitions } from '@ferry/core';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';
import type { Bundle, OperationOutcome, Resource } from '@medplum/fhirtypes';

/** Load the R4 structure definitions and search parameters into @medplum/core (once per module registry). */
export const indexFhirDefinitions = ensureFhirDefinitions;

/**
 * The in-memory repository, plus validation on every write and real rollback of a failed
 * transaction (the stock MemoryRepository has neither).
 */
export class TestFhirRepository extends MemoryRepository {
  validate = true;
  /** `PUT Type/id` of a resource that does not exist creates it (update-as-create with a client id). */
  updateCreate = true;
  /** Refuse a write whose relative literal references (`Type/id`) point at nothing. */
  referentialIntegrity = false;
  /** Ids the server itself assigned while resolving a conditional update (always creatable). */
  readonly serverAssigned = new Set<string>();
  private txDepth = 0;

  private exists(type: string, id: string): boolean {
    return !!(this as unknown as { resources: Map<string, Map<string, Resource>> }).resources.get(type)?.get(id);
  }

  override async createResource<T extends Resource>(resource: T): Promise<any> {
    if (this.validate) validateResource(resource); // throws OperationOutcomeError (400) on errors
    if (this.referentialIntegrity) {
      const missing: string[] = [];
      walkReferences(resource, (ref) => {
        const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/[^/]+)?$/.exec(ref);
        const self = m && m[1] === resource.resourceType && m[2] === resource.id;
        if (m && !self && !this.exists(m[1], m[2])) missing.push(`${m[1]}/${m[2]}`);
      });
      // Like HAPI: "Resource Patient/x not found, specified in path: Observation.subject".
      if (missing.length)
        throw new OperationOutcomeError(badRequest(`Resource ${missing[0]} not found (referential integrity)`));
    }
    return super.createResource(resource);
  }

  override async updateResource<T extends Resource>(
    resource: T,
    options?: Parameters<MemoryRepository['updateResource']>[1],
  ): Promise<any> {
    if (
      !this.updateCreate &&
      resource.id &&
      !this.exists(resource.resourceType, resource.id) &&
      !this.serverAssigned.delete(resource.id)
    )
      throw new OperationOutcomeError({
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'not-supported',
            details: {
              text: `update as create (client-assigned id) is not allowed: ${resource.resourceType}/${resource.id} does not exist`,
            },
          },
        ],
      });
    return super.updateResource(resource, options);
  }

  override async withTransaction<TResult>(callback: (client: undefined) => Promise<TResult>): Promise<TResult> {
    if (this.txDepth > 0) return callback(undefined);
    const self = this as unknown as {
      resources: Map<string, Map<string, Resource>>;
      history: Map<string, Map<string, Resource[]>>;
    };
    const snapshot = { resources: cloneMaps(self.resources), history: cloneMaps(self.history) };
    this.txDepth++;
    try {
      return await callback(undefined);
    } catch (e) {
      restoreMaps(self.resources, snapshot.resources);
      restoreMaps(self.history, snapshot.history);
      throw e;
    } finally {
      this.txDepth--;
    }
  }
}

/** Every string `reference` inside a resource (contained resources included). */
function walkReferences(node: unknown, fn: (ref: string) => void): void {
  if (Array.isArray(node)) for (const x of node) walkReferences(x, fn);
  else if (node && typeof node === 'object')
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string') fn(v);
      else walkReferences(v, fn);
    }
}

function cloneMaps<V>(m: Map<string, Map<string, V>>): Map<string, Map<string, V>> {
  const out = new Map<string, Map<string, V>>();
  for (const [k, inner] of m) out.set(k, new Map([...inner].map(([id, v]) => [id, deepClone(v)])));
  return out;
}

function restoreMaps<V>(target: Map<string, Map<string, V>>, from: Map<string, Map<string, V>>): void {
  target.clear();
  for (const [k, v] of from) target.set(k, v);
}

export interface RecordedRequest {
  method: string;
  /** Path relative to the base, with the query: `Patient?identifier=...`, `` for the base. */
  url: string;
  status: number;
  /** For a POST of a Bundle to the base: its type. */
  bundleType?: string;
  authorization?: string;
}

export interface FhirServerOptions {
  /** Port to bind (default 0 = ephemeral). */
  port?: number;
  /** Path the FHIR base lives at (default `/fhir/R4`). */
  basePath?: string;
  /** Validate resources before storing them (default true). */
  validate?: boolean;
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  bearerToken?: string;
  /**
   * Keep Medplum's own cap of 8 entries on transactions with conditional writes (a Medplum server
   * answers 400 above it). Off by default: other servers (HAPI, Azure, Google) have no such cap.
   */
  medplumTransactionLimits?: boolean;
  /**
   * `PUT Type/id` of a resource that does not exist creates it, with the client's id (default true,
   * like HAPI, Azure and Google; false answers 400 `not-supported`, like servers that only assign
   * ids themselves).
   */
  updateCreate?: boolean;
  /** Refuse (400) a write whose `Type/id` references point at nothing, like HAPI's referential integrity (default false). */
  referentialIntegrity?: boolean;
}

export interface FhirTestServer {
  /** e.g. `http://127.0.0.1:43121/fhir/R4` (no trailing slash). */
  readonly baseUrl: string;
  readonly port: number;
  readonly repo: TestFhirRepository;
  readonly router: FhirRouter;
  /** Every request answered, in order. */
  readonly requests: RecordedRequest[];
  /** Number of resources of a type matching a search (`'identifier=sys|val'` or a record). */
  count(resourceType: string, query?: string | Record<string, string>): Promise<number>;
  /** The resources of a type matching a search. */
  search<T extends Resource = Resource>(resourceType: string, query?: string | Record<string, string>): Promise<T[]>;
  /** Answer the next `n` requests with `status` and an OperationOutcome (optional headers, e.g. Retry-After). */
  failNext(n: number, status: number, opts?: { headers?: Record<string, string>; code?: string }): void;
  /** Delay every answer by `ms` (0 to stop). */
  setDelay(ms: number): void;
  /** Stop listening and drop open connections: clients get ECONNREFUSED until `resume()`. */
  pause(): Promise<void>;
  /** Listen again on the same port. */
  resume(): Promise<void>;
  readonly paused: boolean;
  /** Stop for good. */
  stop(): Promise<void>;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function outcomeStatus(outcome: OperationOutcome): number {
  try {
    return getStatus(outcome);
  } catch {
    return 500;
  }
}

function errorOutcome(code: string, text: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: code as 'exception', details: { text } }],
  };
}

function toQueryRecord(params: URLSearchParams): Record<string, string | string[]> {
  const q: Record<string, string | string[]> = {};
  for (const [k, v] of params) {
    const prev = q[k];
    q[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return q;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Start a FHIR R4 server on 127.0.0.1. */
export async function startFhirServer(opts: FhirServerOptions = {}): Promise<FhirTestServer> {
  indexFhirDefinitions();
  const basePath = (opts.basePath ?? '/fhir/R4').replace(/\/+$/, '');
  const repo = new TestFhirRepository();
  repo.validate = opts.validate ?? true;
  repo.updateCreate = opts.updateCreate ?? true;
  repo.referentialIntegrity = opts.referentialIntegrity ?? false;
  const router = new FhirRouter();
  const requests: RecordedRequest[] = [];
  let failures: { remaining: number; status: number; headers: Record<string, string>; code: string } | undefined;
  let delayMs = 0;
  let paused = false;
  let stopped = false;
  const sockets = new Set<Socket>();

  let writeChain: Promise<unknown> = Promise.resolve();
  const serially = <T>(fn: () => Promise<T>): Promise<T> => {
    const p = writeChain.then(fn, fn);
    writeChain = p.catch(() => undefined);
    return p;
  };
  const handleWrite = async (fhirReq: FhirRequest) => {
    const b = fhirReq.body as Bundle | undefined;
    if (
      !opts.medplumTransactionLimits &&
      fhirReq.url === '/' &&
      b?.resourceType === 'Bundle' &&
      b.type === 'transaction' &&
      (b.entry?.length ?? 0) > 8
    ) {
      // Medplum caps transactions holding conditional writes at 8 entries (a limit of its
      // PostgreSQL isolation, not of FHIR). Writes here are serialised, so resolve conditional
      // updates to plain updates by id first, then let the router process the transaction.
      const entries = await Promise.all(
        (b.entry ?? []).map(async (e) => {
          const url = e.request?.url ?? '';
          const q = url.indexOf('?');
          if (e.request?.method !== 'PUT' || q < 0 || !e.resource) return e;
          const type = url.slice(0, q);
          const found = await search(type, url.slice(q + 1));
          if (found.length > 1) throw new OperationOutcomeError(multipleMatches);
          let id = found[0]?.id;
          if (!id) repo.serverAssigned.add((id = repo.generateId()));
          return { ...e, resource: { ...e.resource, id }, request: { ...e.request, url: `${type}/${id}` } };
        }),
      );
      return router.handleRequest({ ...fhirReq, body: { ...b, entry: entries } }, repo);
    }
    return router.handleRequest(fhirReq, repo);
  };

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      url: '',
      status: 0,
      authorization: req.headers.authorization,
    };
    requests.push(rec);
    const reply = (status: number, body: unknown, headers?: Record<string, string>) => {
      rec.status = status;
      send(res, status, body, headers);
    };
    const raw = await readBody(req);
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (!url.pathname.startsWith(basePath))
      return reply(404, errorOutcome('not-found', `not under the FHIR base ${basePath}`));
    const rel = url.pathname.slice(basePath.length).replace(/^\/+/, '');
    rec.url = rel + url.search;
    if (opts.bearerToken && req.headers.authorization !== `Bearer ${opts.bearerToken}`)
      return reply(401, errorOutcome('login', 'missing or wrong bearer token'), { 'www-authenticate': 'Bearer' });
    if (failures && failures.remaining > 0) {
      failures.remaining--;
      const f = failures;
      if (f.remaining === 0) failures = undefined;
      return reply(f.status, errorOutcome(f.code, `injected failure ${f.status}`), f.headers);
    }
    let body: unknown;
    if (raw.length) {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (e) {
        return reply(400, errorOutcome('structure', `request body is not valid JSON: ${(e as Error).message}`));
      }
    }
    if (body && typeof body === 'object' && (body as Bundle).resourceType === 'Bundle' && rel === '')
      rec.bundleType = (body as Bundle).type;
    const fhirReq: FhirRequest = {
      method: (req.method ?? 'GET').toUpperCase() as HttpMethod,
      url: '/' + rel + url.search,
      pathname: '',
      body,
      params: {},
      query: toQueryRecord(url.searchParams),
      headers: req.headers,
      config: { transactions: true },
    };
    let result;
    try {
      // Writes are serialised (one at a time), which gives transactions serializable isolation.
      result =
        fhirReq.method === 'GET' || fhirReq.method === 'HEAD'
          ? await router.handleRequest(fhirReq, repo)
          : await serially(() => handleWrite(fhirReq));
    } catch (e) {
      const outcome = e instanceof OperationOutcomeError ? e.outcome : normalizeOperationOutcome(e);
      return reply(outcomeStatus(outcome), outcome);
    }
    const [outcome, resource] = result;
    const status = outcomeStatus(outcome);
    const headers: Record<string, string> = {};
    if (resource && 'id' in resource && resource.id && resource.resourceType !== 'Bundle') {
      if (resource.meta?.versionId) headers.etag = `W/"${resource.meta.versionId}"`;
      if (status === 201)
        headers.location = `${basePath}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
    }
    if (status >= 400 || !resource) return reply(status, outcome, headers);
    return reply(status, resource, headers);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) send(res, 500, errorOutcome('exception', (e as Error).message));
      else res.destroy();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
    });

  const port = await listen(opts.port ?? 0);
  const baseUrl = `http://127.0.0.1:${port}${basePath}`;

  const search = async <T extends Resource>(
    resourceType: string,
    query?: string | Record<string, string>,
  ): Promise<T[]> => {
    const qs = typeof query === 'string' ? query : new URLSearchParams(query ?? {}).toString();
    const params = new URLSearchParams(qs);
    if (!params.has('_count')) params.set('_count', '1000');
    const [outcome, bundle] = await router.handleRequest(
      {
        method: 'GET',
        url: `/${resourceType}?${params}`,
        pathname: '',
        body: undefined,
        params: {},
        query: toQueryRecord(params),
      },
      repo,
    );
    if (outcomeStatus(outcome) >= 400) throw new OperationOutcomeError(outcome);
    return ((bundle as Bundle<T>).entry ?? []).map((e) => e.resource as T);
  };

  return {
    baseUrl,
    port,
    repo,
    router,
    requests,
    search,
    count: async (resourceType, query) => (await search(resourceType, query)).length,
    failNext(n, status, o = {}) {
      failures =
        n > 0
          ? {
              remaining: n,
              status,
              headers: o.headers ?? {},
              code: o.code ?? (status >= 500 ? 'transient' : 'processing'),
            }
          : undefined;
    },
    setDelay(ms) {
      delayMs = ms;
    },
    get paused() {
      return paused;
    },
    async pause() {
      if (paused || stopped) return;
      paused = true;
      await close();
    },
    async resume() {
      if (!paused || stopped) return;
      await listen(port);
      paused = false;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!paused) await close();
    },
  };
}
