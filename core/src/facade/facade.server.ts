/**
 * The FHIR facade's listener (`api:`): `/fhir/{connection}/...` on its own port. Every route but
 * `/health` needs a bearer credential (the admin API's tokens or OIDC, `admin.auth`) holding the
 * connection's scope -- `connection:<id>:read` for metadata, reads and searches,
 * `connection:<id>:write` for writes and scheduling operations; each client has a rate limit per
 * connection; every PHI read and every write is in the audit trail before the answer is sent;
 * errors are OperationOutcomes. Writes honour `Idempotency-Key`. A Host header not served
 * (`api.allowedHosts`, DNS rebinding) is 421; a browser's cross-origin request (an `Origin` other than
 * the facade's own) is 403 unless `api.cors.origins` lists it -- those get CORS answers and preflights.
 */
import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Identifier, OperationOutcome, Parameters as FhirParameters, Patient, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import type { ApiConfig } from '../config/engine.schema';
import type { AuthConfig } from '../admin/auth';
import { FerryError, httpStatusOf } from '../errors';
import { errorFields } from '../logging/logger';
import type { AuditEntry, MessageStore } from '../store/message-store';
import { HttpConnections } from '../util/graceful-http';
import { tlsServerOptions } from '../util/tls-options';
import { AuthError, Authenticator, FailureLimiter } from '../admin/auth';
import { defaultAllowedHosts, GuardError, hostName, principalLabel } from '../admin/guard';
import { hasScope, topRole, type Principal } from '../admin/roles';
import { CONNECTION_ID_SYSTEM, type FacadeService } from './facade.service';
import { FacadeIssue, type FacadeIssueKind } from './provider';

export type FacadeAccess = 'public' | 'read' | 'write';

/** Every facade route with the scope it needs (the scope-matrix test walks this list). */
export const FACADE_ROUTES: { method: 'GET' | 'POST' | 'PUT'; url: string; access: FacadeAccess }[] = [
  { method: 'GET', url: '/health', access: 'public' },
  { method: 'GET', url: '/fhir/:conn/metadata', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type/:id', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type/:id/:op', access: 'read' },
  { method: 'POST', url: '/fhir/:conn/:type', access: 'write' },
  { method: 'PUT', url: '/fhir/:conn/:type/:id', access: 'write' },
  { method: 'POST', url: '/fhir/:conn/:type/:id/:op', access: 'write' },
];

export interface FacadeServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

export interface FacadeServerOptions {
  api: ApiConfig;
  auth: AuthConfig;
  store: MessageStore;
  logger: Logger;
  service: FacadeService;
  now?: () => number;
}

declare module 'fastify' {
  interface FastifyRequest {
    facadePrincipal?: Principal;
  }
  interface FastifyContextConfig {
    access?: FacadeAccess;
  }
}

/** Per (client, connection) token bucket (GCRA): `take` answers the seconds to wait, 0 when allowed. */
export class ClientRateLimiter {
  private readonly tat = new Map<string, number>();
  constructor(private readonly now: () => number = Date.now) {}
  take(key: string, qps: number, burst: number): number {
    if (!(qps > 0)) return 0;
    const interval = 1000 / qps;
    const tolerance = interval * Math.max(1, burst || Math.ceil(qps));
    const now = this.now();
    const tat = Math.max(this.tat.get(key) ?? now, now);
    if (tat + interval - now > tolerance) return Math.ceil((tat + interval - now - tolerance) / 1000) || 1;
    if (this.tat.size > 10_000) this.tat.delete(this.tat.keys().next().value as string);
    this.tat.set(key, tat + interval);
    return 0;
  }
}

/**
 * Audit entries of concurrent requests written in one transaction (group commit): each caller's
 * promise resolves once its entry is durable; entries arriving during a commit go in the next.
 */
export class AuditBatcher {
  private queue: { entry: AuditEntry; resolve(): void; reject(e: unknown): void }[] = [];
  private running = false;
  constructor(private readonly store: Pick<MessageStore, 'appendAudit'>) {}
  append(entry: AuditEntry): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ entry, resolve, reject });
      if (!this.running) void this.drain();
    });
  }
  private async drain(): Promise<void> {
    this.running = true;
    // Let the requests of this event-loop turn join the first commit.
    await new Promise((r) => setImmediate(r));
    while (this.queue.length) {
      const batch = this.queue.splice(0, 512);
      try {
        await this.store.appendAudit(batch.map((b) => b.entry));
        for (const b of batch) b.resolve();
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    }
    this.running = false;
  }
}

export function outcome(
  code: string,
  diagnostics: string,
  severity: 'error' | 'fatal' | 'warning' | 'information' = 'error',
  details?: Record<string, unknown>,
): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity,
        code: code as any,
        diagnostics,
        ...(details?.vendorMessage ? { details: { text: String(details.vendorMessage).slice(0, 300) } } : {}),
      },
    ],
  };
}

/** A FerryError (or anything) as an HTTP status and OperationOutcome. */
export function errorAnswer(e: unknown): { status: number; body: OperationOutcome; retryAfter?: number } {
  if (e instanceof AuthError) {
    const code = e.status === 401 ? 'login' : e.status === 429 ? 'throttled' : 'forbidden';
    return { status: e.status, body: outcome(code, e.message), retryAfter: e.retryAfterSec };
  }
  if (e instanceof GuardError)
    return { status: e.statusCode, body: outcome(e.statusCode === 421 ? 'security' : 'forbidden', e.message) };
  if (FerryError.is(e)) {
    const issue = e.details?.facadeIssue as FacadeIssueKind | undefined;
    if (issue && FacadeIssue[issue])
      return {
        status: FacadeIssue[issue].status,
        body: outcome(FacadeIssue[issue].code, e.message, 'error', e.details),
      };
    const status = typeof e.details?.status === 'number' ? (e.details.status as number) : undefined;
    if (e.code === 'FERRY_E_INPUT_FACADE_TIMEOUT')
      return { status: httpStatusOf(e), body: outcome('timeout', e.message) };
    if (e.kind === 'input' && e.code.startsWith('FERRY_E_INPUT_'))
      return { status: 400, body: outcome('invalid', e.message) };
    if (status === 404) return { status: 404, body: outcome('not-found', 'not found at the vendor') };
    if (status === 409 || status === 412) return { status: 409, body: outcome('conflict', e.message) };
    if (e.kind === 'input' && status && status >= 400 && status < 500)
      return { status: 422, body: outcome('invalid', e.message) };
    if (e.kind === 'input') return { status: 422, body: outcome('processing', e.message) };
    if (e.kind === 'transient')
      return { status: 502, body: outcome('transient', `the vendor cannot answer now: ${e.message}`), retryAfter: 1 };
    if (e.kind === 'config')
      return { status: 502, body: outcome('security', `the connection is not usable: ${e.message}`) };
  }
  const status = (e as { statusCode?: number }).statusCode;
  if (status && status >= 400 && status < 500)
    return { status, body: outcome(status === 413 ? 'too-long' : 'invalid', (e as Error).message) };
  return { status: 500, body: outcome('exception', 'internal error') };
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export async function startFacade(o: FacadeServerOptions): Promise<FacadeServer> {
  const { api, service, store, logger } = o;
  const now = o.now ?? Date.now;
  const slow = api.requestTimeoutMs
    ? {
        headersTimeout: api.requestTimeoutMs,
        connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(api.requestTimeoutMs / 4))),
      }
    : {};
  const tlsOptions = tlsServerOptions(api.tls, 'api', 'API_TLS');
  const https = tlsOptions ? { ...tlsOptions, ...slow } : undefined;
  const app = Fastify({
    logger: false,
    bodyLimit: api.bodyLimit,
    requestTimeout: api.requestTimeoutMs,
    return503OnClosing: true,
    ...(https ? { https } : { http: slow }),
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
  const conns = new HttpConnections(app.server);
  const authenticator = new Authenticator(store, o.auth, logger, now);
  const failures = new FailureLimiter(o.auth.failedAuth.maxFailures, o.auth.failedAuth.windowMs, now);
  const limiter = new ClientRateLimiter(now);

  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(['application/json', 'application/fhir+json'], { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (!text.trim()) return done(null, null);
    return json(req, text, done);
  });

  const audits = new AuditBatcher(store);
  /** Audited before the answer is sent; concurrent requests share one durable commit. */
  const audit = async (req: FastifyRequest, e: Omit<AuditEntry, 'principal'>): Promise<void> => {
    const p = req.facadePrincipal;
    await audits.append({
      ...e,
      at: new Date(now()),
      principal: p ? principalLabel(p) : 'anonymous',
      role: p ? topRole(p) : undefined,
      remote: req.ip,
    });
  };
  /** The route pattern with the connection and type filled in (never the id or the query: they may hold PHI). */
  const target = (req: FastifyRequest) => {
    const prm = req.params as { conn?: string; type?: string; op?: string };
    return `${req.method} /fhir/${prm.conn ?? '?'}${prm.type ? `/${prm.type}` : ''}${(req.routeOptions.url ?? '').includes(':id') ? '/:id' : ''}${prm.op ? `/${prm.op}` : ''}`;
  };

  const publicOrigin = api.publicUrl ? new URL(api.publicUrl).origin.toLowerCase() : undefined;
  const hosts: Set<string> | '*' = api.allowedHosts.includes('*')
    ? '*'
    : new Set([
        ...defaultAllowedHosts(api.host),
        ...(api.publicUrl ? [new URL(api.publicUrl).hostname.replace(/^\[|\]$/g, '').toLowerCase()] : []),
        ...api.allowedHosts.map((h) => hostName(h) ?? h.toLowerCase()),
      ]);
  const origins = new Set(api.cors.origins.map((x) => x.toLowerCase().replace(/\/$/, '')));
  /**
   * Host (DNS rebinding) and Origin (cross-site browser calls) checks; CORS headers for a listed
   * origin. True: a preflight, answered.
   */
  const checkBrowser = async (req: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    if (hosts !== '*') {
      const name = hostName(req.headers.host);
      if (!name || !hosts.has(name)) {
        await audit(req, {
          action: 'access.denied',
          result: 'denied',
          target: 'facade',
          detail: 'host not allowed (api.allowedHosts)',
        });
        throw new GuardError(
          421,
          `host not allowed: ${JSON.stringify(String(req.headers.host ?? '').slice(0, 100))} (api.allowedHosts)`,
          'host',
        );
      }
    }
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    const o = String(origin).toLowerCase().replace(/\/$/, '');
    if (origins.has(o)) {
      reply.header('access-control-allow-origin', String(origin));
      reply.header('vary', 'Origin');
      reply.header(
        'access-control-expose-headers',
        'location, x-ferry-source, idempotency-replayed, retry-after, www-authenticate',
      );
      if (req.method !== 'OPTIONS') return false;
      reply.header('access-control-allow-methods', 'GET, POST, PUT');
      reply.header('access-control-allow-headers', 'authorization, content-type, idempotency-key');
      reply.header('access-control-max-age', '600');
      await reply.code(204).send();
      return true;
    }
    // The facade's own origin is no cross-site request.
    if (o === `${req.protocol}://${String(req.headers.host ?? '').toLowerCase()}` || o === publicOrigin) return false;
    await audit(req, {
      action: 'access.denied',
      result: 'denied',
      target: 'facade',
      detail: 'origin not allowed (api.cors.origins)',
    });
    throw new GuardError(
      403,
      `origin not allowed: ${JSON.stringify(String(origin).slice(0, 100))} (api.cors.origins)`,
      'origin',
    );
  };

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('cache-control', 'no-store');
    if (https) reply.header('strict-transport-security', 'max-age=31536000');
    if (await checkBrowser(req, reply)) return reply;
    // No route: a caller with a valid credential learns it is not found; without one, nothing.
    const access = req.is404
      ? 'authenticated'
      : ((req.routeOptions.config as { access?: FacadeAccess } | undefined)?.access ?? 'write');
    if (access === 'public') return;
    const wait = failures.blocked(req.ip);
    if (wait !== undefined)
      throw new AuthError(429, `too many failed requests from this address; retry in ${wait} s`, 'rate-limited', wait);
    let p: Principal;
    try {
      p = await authenticator.authenticate(req.headers.authorization);
    } catch (e) {
      if (e instanceof AuthError) {
        failures.fail(req.ip);
        await audit(req, { action: 'auth.failed', result: 'denied', target: 'facade', detail: e.reason });
      }
      throw e;
    }
    req.facadePrincipal = p;
    if (access === 'authenticated') return;
    const conn = (req.params as { conn?: string }).conn ?? '';
    if (!hasScope(p, conn, access === 'write' ? 'write' : 'read')) {
      await audit(req, {
        action: 'access.denied',
        result: 'denied',
        target: target(req),
        detail: `needs connection:${conn}:${access}`,
      });
      throw new AuthError(
        403,
        `forbidden: needs scope connection:${conn}:${access}`,
        `needs connection:${conn}:${access}`,
      );
    }
    const c = service.connections.get(conn);
    const rl = c && c.entry.facade.rateLimit.qps > 0 ? c.entry.facade.rateLimit : api.rateLimit;
    const retry = limiter.take(`${p.id}|${conn}`, rl.qps, rl.burst);
    if (retry)
      throw new AuthError(
        429,
        `rate limit of this client on connection ${conn}: ${rl.qps}/s; retry in ${retry} s`,
        'client-rate',
        retry,
      );
  });

  app.setErrorHandler(async (e, req, reply) => {
    const a = errorAnswer(e);
    if (a.status === 401) reply.header('www-authenticate', 'Bearer realm="ferry-fhir"');
    if (a.retryAfter) reply.header('retry-after', String(a.retryAfter));
    if (
      a.status >= 500 &&
      !(FerryError.is(e) && (e.kind === 'transient' || e.kind === 'config')) &&
      a.status !== 501 &&
      a.status !== 504
    )
      logger.error('facade request failed', { route: req.routeOptions.url, ...errorFields(e) });
    return reply.code(a.status).type(FHIR_JSON).send(a.body);
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).type(FHIR_JSON).send(outcome('not-found', 'no such route')));

  const base = (req: FastifyRequest) =>
    api.publicUrl
      ? api.publicUrl.replace(/\/+$/, '')
      : `${req.protocol}://${req.headers.host ?? `${api.host}:${api.port}`}`;
  const withTimeout = <T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    const ac = new AbortController();
    const t = api.vendorTimeoutMs
      ? setTimeout(
          () =>
            ac.abort(
              new FerryError('INPUT_FACADE_TIMEOUT', `the vendor did not answer within ${api.vendorTimeoutMs} ms`, {
                kind: 'input',
              }),
            ),
          api.vendorTimeoutMs,
        )
      : undefined;
    return fn(ac.signal)
      .catch((e) => Promise.reject(ac.signal.aborted ? ac.signal.reason : e))
      .finally(() => t && clearTimeout(t));
  };
  const checkType = (type: string) => {
    if (!RESOURCE_TYPE.test(type))
      throw new FerryError('INPUT_FACADE_TYPE', `not a resource type: ${type.slice(0, 64)}`, { kind: 'input' });
  };
  const checkId = (id: string) => {
    if (!ID.test(id)) throw new FerryError('INPUT_FACADE_ID', 'not a FHIR id', { kind: 'input' });
  };
  const queryOf = (req: FastifyRequest): Record<string, string[]> => {
    const out: Record<string, string[]> = {};
    for (const [k, v] of new URL(req.url, 'http://x').searchParams) (out[k] ??= []).push(v);
    return out;
  };

  /** A patient's identities at the connections this client may read (another connection's patient is its PHI). */
  const visibleIdentities = async (req: FastifyRequest, conn: string, id: string) => {
    const p = req.facadePrincipal!;
    return (await service.identities(conn, id)).filter(
      (i) => i.connection === conn || hasScope(p, i.connection, 'read'),
    );
  };

  const cfg = (url: string, method: string) => ({
    config: { access: FACADE_ROUTES.find((r) => r.url === url && r.method === method)!.access },
  });

  app.get('/health', cfg('/health', 'GET'), async () => ({ status: 'ok' }));

  app.get<{ Params: { conn: string } }>(
    '/fhir/:conn/metadata',
    cfg('/fhir/:conn/metadata', 'GET'),
    async (req, reply) => {
      reply.type(FHIR_JSON);
      return service.capabilityStatement(req.params.conn, base(req));
    },
  );

  app.get<{ Params: { conn: string; type: string; id: string } }>(
    '/fhir/:conn/:type/:id',
    cfg('/fhir/:conn/:type/:id', 'GET'),
    async (req, reply) => {
      const { conn, type, id } = req.params;
      checkType(type);
      checkId(id);
      try {
        const r = await withTimeout((signal) => service.read(conn, type, id, signal));
        let resource = r.resource;
        let links = '';
        if (type === 'Patient' && service.connections.get(conn)?.entry.facade.identity?.linkedIdentifiers) {
          // The same patient at the other connections this client may read, as identifiers.
          const others = (await visibleIdentities(req, conn, resource.id!)).filter((i) => i.connection !== conn);
          const extra: Identifier[] = others.map((i) => ({
            use: 'secondary',
            system: `${CONNECTION_ID_SYSTEM}${i.connection}`,
            value: i.id,
          }));
          if (extra.length)
            resource = { ...resource, identifier: [...((resource as Patient).identifier ?? []), ...extra] } as Resource;
          links = ` links=${extra.length}`;
        }
        await audit(req, {
          action: 'facade.read',
          result: 'ok',
          target: target(req),
          detail: `${type}/${r.resource.id} from=${r.from} path=${r.path}${links}`,
        });
        reply.header('x-ferry-source', r.from);
        return reply.type(FHIR_JSON).send(resource);
      } catch (e) {
        await audit(req, {
          action: 'facade.read',
          result: 'error',
          target: target(req),
          detail: `${type}/${id} ${(e as FerryError).code ?? 'error'}`,
        });
        throw e;
      }
    },
  );

  app.get<{ Params: { conn: string; type: string } }>(
    '/fhir/:conn/:type',
    cfg('/fhir/:conn/:type', 'GET'),
    async (req, reply) => {
      const { conn, type } = req.params;
      checkType(type);
      try {
        const r = await withTimeout((signal) => service.search(conn, type, queryOf(req), signal));
        const b = base(req);
        const self = `${b}${req.url}`;
        const bundle = {
          resourceType: 'Bundle',
          type: 'searchset',
          ...(r.total !== undefined ? { total: r.total } : {}),
          link: [
            { relation: 'self', url: self },
            ...(r.next
              ? [
                  {
                    relation: 'next',
                    url: `${b}/fhir/${encodeURIComponent(conn)}/${type}?_count=${r.count}&_cursor=${encodeURIComponent(r.next)}`,
                  },
                ]
              : []),
          ],
          entry: r.resources.map((res) => ({
            fullUrl: `${b}/fhir/${encodeURIComponent(conn)}/${res.resourceType}/${res.id}`,
            resource: res,
            search: { mode: 'match' },
          })),
        };
        await audit(req, {
          action: 'facade.search',
          result: 'ok',
          target: target(req),
          detail: `${type} count=${r.resources.length} path=${r.path}${
            r.resources.length
              ? ` ids=${r.resources
                  .map((x) => x.id)
                  .join(',')
                  .slice(0, 1500)}`
              : ''
          }`,
        });
        return reply.type(FHIR_JSON).send(bundle);
      } catch (e) {
        await audit(req, {
          action: 'facade.search',
          result: 'error',
          target: target(req),
          detail: `${type} ${(e as FerryError).code ?? 'error'}`,
        });
        throw e;
      }
    },
  );

  app.get<{ Params: { conn: string; type: string; id: string; op: string } }>(
    '/fhir/:conn/:type/:id/:op',
    cfg('/fhir/:conn/:type/:id/:op', 'GET'),
    async (req, reply) => {
      const { conn, type, id, op } = req.params;
      if (type !== 'Patient' || op !== '$identities')
        throw new FerryError(
          'INPUT_FACADE_OPERATION',
          `unknown operation ${type}/:id/${op.slice(0, 40)} (GET Patient/{id}/$identities)`,
          { kind: 'input' },
        );
      checkId(id);
      const ids = await visibleIdentities(req, conn, id);
      const b = base(req);
      const params: FhirParameters = {
        resourceType: 'Parameters',
        parameter: ids.map((i) => ({
          name: 'identity',
          part: [
            { name: 'connection', valueString: i.connection },
            { name: 'patient', valueReference: { reference: `${b}/fhir/${i.connection}/Patient/${i.id}` } },
          ],
        })),
      };
      await audit(req, {
        action: 'facade.identities',
        result: 'ok',
        target: target(req),
        detail: `Patient/${id} links=${ids.length}`,
      });
      return reply.type(FHIR_JSON).send(params);
    },
  );

  /** Runs a write under its Idempotency-Key (if any): a retry gets the first answer, never a second write. */
  type WriteAnswer = { status: number; body: Resource; location?: string; ok: boolean; error?: unknown };
  const idempotent = async (
    req: FastifyRequest,
    reply: FastifyReply,
    action: string,
    fn: () => Promise<{ status: number; body: Resource; location?: string }>,
  ): Promise<FastifyReply> => {
    const key = req.headers['idempotency-key'];
    const p = req.facadePrincipal!;
    const conn = (req.params as { conn: string }).conn;
    const send = (status: number, body: unknown, location?: string) => {
      if (location) reply.header('location', location);
      return reply.code(status).type(FHIR_JSON).send(body);
    };
    const run = async (): Promise<WriteAnswer> => {
      try {
        const r = await fn();
        return { ...r, ok: true };
      } catch (e) {
        const a = errorAnswer(e);
        if (a.status >= 500) throw e;
        return { status: a.status, body: a.body as Resource, ok: false, location: undefined, error: e };
      }
    };
    if (key === undefined) {
      const r = await run();
      await audit(req, { action, result: r.ok ? 'ok' : 'error', target: target(req), detail: detailOf(r) });
      return send(r.status, r.body, r.location);
    }
    if (typeof key !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(key))
      throw new FerryError('INPUT_FACADE_IDEMPOTENCY_KEY', 'Idempotency-Key: 1 to 200 visible ASCII characters', {
        kind: 'input',
      });
    const f = store.facade;
    if (!f) throw new FerryError('INTERNAL_FACADE_STORE', 'the store has no facade tables', { kind: 'internal' });
    const scope = `${conn}|${p.id}`;
    const hash = createHash('sha256')
      .update(`${req.method} ${req.url}\n${JSON.stringify(req.body ?? null)}`)
      .digest('hex');
    const st = await f.facadeIdempotencyBegin(scope, key, hash, api.idempotencyHours * 3_600_000);
    if (st.state !== 'new') {
      if (st.requestHash !== hash) {
        await audit(req, {
          action,
          result: 'denied',
          target: target(req),
          detail: 'idempotency key reused with another request',
        });
        return send(422, outcome('business-rule', 'Idempotency-Key already used for another request'));
      }
      if (st.state === 'pending')
        return send(409, outcome('conflict', 'a request with this Idempotency-Key is still in progress; retry later'));
      const saved = JSON.parse(st.response) as { body: unknown; location?: string };
      reply.header('idempotency-replayed', 'true');
      await audit(req, { action, result: 'ok', target: target(req), detail: `replayed status=${st.status}` });
      return send(st.status, saved.body, saved.location);
    }
    let r: WriteAnswer;
    try {
      r = await run();
    } catch (e) {
      // Vendor unreachable, timeout, internal: nothing known to be written; a retry may run it again.
      await f.facadeIdempotencyRelease(scope, key).catch(() => undefined);
      await audit(req, { action, result: 'error', target: target(req), detail: (e as FerryError).code ?? 'error' });
      throw e;
    }
    await f.facadeIdempotencyFinish(scope, key, r.status, JSON.stringify({ body: r.body, location: r.location }));
    await audit(req, { action, result: r.ok ? 'ok' : 'error', target: target(req), detail: detailOf(r) });
    return send(r.status, r.body, r.location);
  };
  const detailOf = (r: { ok: boolean; status: number; body: Resource; error?: unknown }) =>
    r.ok
      ? `${r.body.resourceType}/${r.body.id} status=${r.status}`
      : `status=${r.status} ${(r.error as FerryError)?.code ?? ''}`.trim();

  const bodyResource = (req: FastifyRequest, type: string): Resource => {
    const b = req.body as Resource | null;
    if (!b || typeof b !== 'object' || b.resourceType !== type)
      throw new FerryError('INPUT_FACADE_BODY', `the body must be a ${type} resource (application/fhir+json)`, {
        kind: 'input',
      });
    return b;
  };

  app.post<{ Params: { conn: string; type: string } }>(
    '/fhir/:conn/:type',
    cfg('/fhir/:conn/:type', 'POST'),
    async (req, reply) => {
      const { conn, type } = req.params;
      checkType(type);
      return idempotent(req, reply, 'facade.create', async () => {
        const r = await withTimeout((signal) =>
          service.write(conn, type, 'create', { resource: bodyResource(req, type) }, signal),
        );
        return { status: 201, body: r.resource, location: `${base(req)}/fhir/${conn}/${type}/${r.resource.id}` };
      });
    },
  );

  app.put<{ Params: { conn: string; type: string; id: string } }>(
    '/fhir/:conn/:type/:id',
    cfg('/fhir/:conn/:type/:id', 'PUT'),
    async (req, reply) => {
      const { conn, type, id } = req.params;
      checkType(type);
      checkId(id);
      return idempotent(req, reply, 'facade.update', async () => {
        const resource = bodyResource(req, type);
        if (resource.id && resource.id !== id)
          throw new FerryError('INPUT_FACADE_BODY', 'the body id differs from the URL id', { kind: 'input' });
        const r = await withTimeout((signal) => service.write(conn, type, 'update', { resource, id }, signal));
        return { status: 200, body: r.resource };
      });
    },
  );

  app.post<{ Params: { conn: string; type: string; id: string; op: string } }>(
    '/fhir/:conn/:type/:id/:op',
    cfg('/fhir/:conn/:type/:id/:op', 'POST'),
    async (req, reply) => {
      const { conn, type, id, op } = req.params;
      checkType(type);
      checkId(id);
      if (op !== '$book' && op !== '$cancel' && op !== '$checkin')
        throw new FerryError(
          'INPUT_FACADE_OPERATION',
          `unknown operation ${op.slice(0, 40)} (Appointment/{id}/$book, Appointment/{id}/$cancel, Appointment/{id}/$checkin)`,
          { kind: 'input' },
        );
      const body = (req.body ?? {}) as FhirParameters | Resource;
      const param = (name: string) =>
        body.resourceType === 'Parameters'
          ? (body as FhirParameters).parameter?.find((x) => x.name === name)
          : undefined;
      return idempotent(req, reply, `facade.${op.slice(1)}`, async () => {
        if (op === '$book') {
          const patient =
            param('patient')?.valueReference?.reference ??
            (body.resourceType === 'Appointment'
              ? (body as any).participant?.find((x: any) => /^Patient\//.test(x.actor?.reference ?? ''))?.actor
                  ?.reference
              : undefined);
          if (!patient)
            throw new FerryError(
              'INPUT_FACADE_BODY',
              '$book needs the patient: Parameters { patient: Reference(Patient/<id>) } or an Appointment with a Patient participant',
              { kind: 'input' },
            );
          const appointmentType = param('appointmentType')?.valueString ?? param('appointmentType')?.valueCode;
          const r = await withTimeout((signal) =>
            service.write(
              conn,
              type,
              'book',
              {
                id,
                patient,
                appointmentType,
                resource: body.resourceType === 'Appointment' ? (body as Resource) : undefined,
              },
              signal,
            ),
          );
          return { status: 200, body: r.resource };
        }
        if (op === '$checkin') {
          const r = await withTimeout((signal) => service.write(conn, type, 'checkin', { id }, signal));
          return { status: 200, body: r.resource };
        }
        const reason = param('reason')?.valueString;
        const r = await withTimeout((signal) => service.write(conn, type, 'cancel', { id, reason }, signal));
        return { status: 200, body: r.resource };
      });
    },
  );

  await app.listen({ host: api.host, port: api.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : api.port;
  const host = api.host.includes(':') ? `[${api.host}]` : api.host;
  return {
    url: `${https ? 'https' : 'http'}://${host}:${port}`,
    app,
    close: () => conns.close(() => app.close()),
  };
}
