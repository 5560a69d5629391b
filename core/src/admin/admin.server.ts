import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { AdminConfig } from '../config/engine.schema';
import type { Engine } from '../engine/engine';
import { FerryError, httpStatusOf, inputError } from '../errors';
import { errorFields } from '../logging/logger';
import { issuesOf } from '../model/message';
import { tlsServerOptions } from '../util/tls-options';
import { HttpConnections } from '../util/graceful-http';
import { holdRequest, replayFilter, replayMessages, type HoldRequest, type ReplayRequest } from '../store/admin-ops';
import type { AuditFilter, MessageFilter } from '../store/message-store';
import { AuthError } from './auth';
import { messageListFilter, registerConsole, type MessageListQuery } from './console';
import { registerConsoleOidc } from './console-oidc';
import { AdminGuard, GuardError, principalLabel } from './guard';
import { deliveryWithoutIdentifiers, eventWithoutIdentifiers, redactConfig, withoutIdentifiers } from './redact';
import { hasRole, type Role } from './roles';
import { issueToken, tokenRequest, tokenView, type TokenRequest } from './token-ops';

export interface AdminServer {
  url: string;
  app: FastifyInstance;
  guard: AdminGuard;
  /** Every route served, with the access it needs (`GET /api/stats` -> viewer). */
  routes: { method: string; url: string; access: string }[];
  close(): Promise<void>;
}

/** The `limit` of a list query: a positive integer up to `max` (400 otherwise). */
function listLimit(v: unknown, dflt: number, max: number): number {
  if (v === undefined || v === '') return Math.min(dflt, max);
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0)
    throw inputError('QUERY_LIMIT', `limit: must be a positive integer: ${String(v).slice(0, 40)}`, { field: 'limit' });
  if (n > max) throw inputError('QUERY_LIMIT', `limit: at most ${max} (admin.maxListLimit)`, { field: 'limit' });
  return n;
}

function httpsOptions(cfg: AdminConfig): Record<string, unknown> | undefined {
  return tlsServerOptions(cfg.tls, 'admin', 'ADMIN_TLS');
}

/**
 * Admin HTTP(S): /health and /ready (no credentials), /metrics (viewer, or open with
 * admin.metricsPublic) and the operations API, every route behind the role it declares (see
 * guard.ts; README "Security"). PHI -- bodies, bundles, identifiers, ordering keys -- goes only
 * to phi-reader and admin, and every read of it and every operation is in the audit trail before
 * the answer is sent.
 */
export async function startAdmin(engine: Engine, cfg: AdminConfig): Promise<AdminServer> {
  // Slow clients: headers and body must arrive within requestTimeoutMs, checked often enough for it to matter (Node: every 30 s).
  const slow = cfg.requestTimeoutMs
    ? {
        headersTimeout: cfg.requestTimeoutMs,
        connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(cfg.requestTimeoutMs / 4))),
      }
    : {};
  const tls = httpsOptions(cfg);
  const https = tls ? { ...tls, ...slow } : undefined;
  const serverOptions = {
    logger: false,
    bodyLimit: cfg.bodyLimit,
    requestTimeout: cfg.requestTimeoutMs,
    return503OnClosing: true,
    // req.ip: the socket's address, or X-Forwarded-For's when the socket is a listed proxy.
    trustProxy: cfg.trustProxy?.length ? cfg.trustProxy : false,
    ...(https ? { https } : { http: slow }),
  };
  const app = Fastify(serverOptions as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
  const guard = new AdminGuard({
    store: engine.store,
    auth: cfg.auth,
    logger: engine.logger,
    bindHost: cfg.host,
    allowedHosts: cfg.allowedHosts,
    allowedOrigins: cfg.allowedOrigins,
    metricsPublic: cfg.metricsPublic,
    tls: !!https,
  });
  guard.install(app);
  const routes: AdminServer['routes'] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat())
      if (method !== 'HEAD')
        routes.push({ method, url: r.url, access: (r.config as { role?: string } | undefined)?.role ?? 'admin' });
  });
  // A stop closes idle connections (also those that never sent a request) instead of waiting on them.
  const conns = new HttpConnections(app.server);

  // An empty JSON body is no body (POST /api/prune); anything else must parse (prototype poisoning refused).
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (!text.trim()) return done(null, null);
    return json(req, text, done);
  });

  app.setErrorHandler(async (e, req, reply) => {
    if (e instanceof AuthError) {
      await guard.auditRefusal(req, e);
      if (e.status === 401) reply.header('www-authenticate', 'Bearer realm="ferry"');
      if (e.retryAfterSec) reply.header('retry-after', String(e.retryAfterSec));
      return reply.code(e.status).send({ error: e.message, code: e.code });
    }
    if (e instanceof GuardError) {
      await guard.auditRefusal(req, e as GuardError);
      return reply.code(e.statusCode).send({ error: e.message });
    }
    if (e instanceof FerryError && e.kind === 'input')
      return reply.code(httpStatusOf(e)).send({ error: e.message, code: e.code });
    // The store cannot answer now (busy, unreachable): try again; nothing was sent that was not audited.
    if (e instanceof FerryError && e.kind === 'transient')
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ error: 'the store cannot answer now; try again', code: e.code });
    const status = (e as { statusCode?: number }).statusCode;
    if (status && status < 500)
      return reply
        .code(status)
        .send({ error: status === 413 ? `body larger than ${cfg.bodyLimit} bytes` : (e as Error).message });
    engine.logger.error('admin request failed', { route: req.routeOptions.url, ...errorFields(e) });
    return reply.code(500).send({ error: 'internal error', code: e instanceof FerryError ? e.code : undefined });
  });
  app.setNotFoundHandler({ preHandler: async () => undefined }, (_req, reply) =>
    reply.code(404).send({ error: 'not found' }),
  );

  const audit = guard.audit.bind(guard);
  const isPhi = (req: FastifyRequest) => !!req.principal && hasRole(req.principal, 'phi-reader');
  const need = (req: FastifyRequest, role: Role, what: string) => {
    if (!req.principal || !hasRole(req.principal, role))
      throw new AuthError(403, `forbidden: ${what} needs role ${role}`, `needs ${role}`);
  };
  /** Runs an operation and audits it (ok / invalid / failed) before answering. */
  async function operation<T>(
    req: FastifyRequest,
    action: string,
    target: string | undefined,
    run: () => Promise<T>,
    ids?: (r: T) => string[] | undefined,
    detail?: (r: T) => string | undefined,
  ): Promise<T> {
    let r: T;
    try {
      r = await run();
    } catch (e) {
      const invalid = e instanceof FerryError && e.kind === 'input';
      await audit(req, {
        action,
        target,
        result: invalid ? 'invalid' : 'failed',
        detail: e instanceof FerryError ? e.code : 'error',
      });
      throw e;
    }
    await audit(req, { action, target, result: 'ok', messageIds: ids?.(r), detail: detail?.(r) });
    return r;
  }

  app.get('/health', { config: { role: 'public' } }, async () => ({ status: 'ok' }));

  app.get('/ready', { config: { role: 'public' } }, async (_req, reply) => {
    const r = engine.readiness();
    return reply.code(r.ready ? 200 : 503).send(r);
  });

  app.get('/metrics', { config: { role: 'metrics' } }, async (_req, reply) => {
    reply.header('content-type', engine.metrics.registry.contentType);
    return engine.metrics.registry.metrics();
  });

  /** Who the caller is (the console shows it). */
  app.get('/api/whoami', { config: { role: 'viewer' } }, async (req) => ({ ...req.principal }));

  app.get('/api/stats', { config: { role: 'viewer' } }, async () => engine.store.stats());

  /** Each source on this instance: readiness, stats and its own state (e.g. athena-fhir resource types). */
  app.get('/api/sources', { config: { role: 'viewer' } }, async () => {
    const views = engine.sourceViews();
    // From the store: its newest message's time and its failed messages (every instance's).
    const activity = await engine.store.sourceActivity(views.map((v) => v.id));
    return views.map((v) => ({
      ...v,
      lastMessageAt: activity[v.id]?.lastMessageAt,
      failed: activity[v.id]?.failed ?? 0,
    }));
  });

  /** Field and component names and data types of HL7 v2 (from the transform that has them; 404 when none does): the console's HL7 tree. No message data. */
  app.get('/api/hl7/definitions', { config: { role: 'viewer' } }, async (_req, reply) => {
    const t = engine.transforms.find((x) => x.definitions && x.canHandle('application/hl7-v2'));
    if (!t) return reply.code(404).send({ error: 'no HL7 v2 transform with definitions is loaded' });
    reply.header('cache-control', 'private, max-age=3600');
    return t.definitions!();
  });

  /**
   * The loaded routes (secret-looking values masked) with this instance's counts since it started:
   * `matched` (from and when matched), `filtered` (a step filtered the message out).
   */
  app.get('/api/routes', { config: { role: 'viewer' } }, async () => {
    const count = async (c: {
      get(): Promise<{ values: { labels: Record<string, string | number>; value: number }[] }>;
    }) => {
      const m = new Map<string, number>();
      for (const v of (await c.get()).values)
        m.set(String(v.labels.route), (m.get(String(v.labels.route)) ?? 0) + v.value);
      return m;
    };
    const [matched, filtered] = await Promise.all([count(engine.metrics.routed), count(engine.metrics.routeFiltered)]);
    return engine.config.routes.map((r) => ({
      ...(redactConfig(r) as object),
      matched: matched.get(r.id) ?? 0,
      filtered: filtered.get(r.id) ?? 0,
    }));
  });

  /**
   * The route tester: `{ message, contentType?, source? }` through the running config's routes --
   * which match (and for the others the clause that failed), each step's result, the Bundle each
   * sink would get -- storing and delivering nothing (the code of `ferry test-route`). The message
   * is the caller's own; the answer derives from it alone. Audited (no message id: nothing stored).
   */
  app.post<{ Body: { message?: unknown; contentType?: unknown; source?: unknown } | null }>(
    '/api/routes/test',
    { config: { role: 'operator' } },
    async (req) => {
      const b = req.body ?? {};
      if (typeof b.message !== 'string' || !b.message.trim())
        throw inputError('ROUTE_TEST', 'message: the message text (HL7 v2 or JSON)', { field: 'message' });
      if (
        b.contentType !== undefined &&
        (typeof b.contentType !== 'string' || !/^[\w.+-]+\/[\w.+-]+$/.test(b.contentType))
      )
        throw inputError('ROUTE_TEST', 'contentType: a media type (application/hl7-v2, application/fhir+json)', {
          field: 'contentType',
        });
      if (b.source !== undefined && (typeof b.source !== 'string' || b.source.length > 100))
        throw inputError('ROUTE_TEST', 'source: a source id', { field: 'source' });
      // HL7 v2 segments end in CR; a pasted message has LF or CRLF.
      const text = b.message.replace(/^\uFEFF/, '');
      const head = text.trimStart().slice(0, 3);
      const contentType =
        (b.contentType as string | undefined) ??
        (/^(MSH|FHS|BHS)$/.test(head)
          ? 'application/hl7-v2'
          : head.startsWith('{')
            ? 'application/fhir+json'
            : undefined);
      if (!contentType)
        throw inputError(
          'ROUTE_TEST',
          'contentType: cannot tell from the message (it starts with neither MSH nor {); give it',
          { field: 'contentType' },
        );
      const body = Buffer.from(
        contentType === 'application/hl7-v2' ? text.trim().replace(/\r?\n/g, '\r') + '\r' : text,
        contentType === 'application/hl7-v2' ? 'latin1' : 'utf8',
      );
      /* eslint-disable @typescript-eslint/no-require-imports -- lazy: the route tester loads on its first request, not with the admin server */
      const { traceMessage } =
        require('../cli/commands/test-route.command') as typeof import('../cli/commands/test-route.command');
      /* eslint-enable @typescript-eslint/no-require-imports */
      return operation(
        req,
        'route.test',
        undefined,
        async () => {
          try {
            const r = await traceMessage(engine.config, engine.transforms, body, {
              source: b.source as string | undefined,
              contentType,
            });
            return { contentType: r.contentType, sourceId: r.sourceId, messageType: r.headers.messageType, ...r.trace };
          } catch (e) {
            // What the transform refuses is the caller's input: answered as such, with the reason.
            const err = FerryError.from(e, 'INPUT_ROUTE_TEST', 'input');
            if (err.kind === 'transient') throw err;
            throw inputError('ROUTE_TEST', `the message cannot be converted: ${err.message}`, { field: 'message' });
          }
        },
        undefined,
        (r) =>
          `${r.contentType} ${r.messageType ?? ''}: matched ${
            r.routes
              .filter((x) => x.matched)
              .map((x) => x.route)
              .join(',') || 'none'
          }`,
      );
    },
  );

  /**
   * Per-minute counts over the last `minutes` (default 60, at most 1440), from the store (every
   * instance's): messages received and failed per source, deliveries made per sink. Counts and
   * config names only. The console's sparklines.
   */
  app.get<{ Querystring: { minutes?: string } }>('/api/throughput', { config: { role: 'viewer' } }, async (req) => {
    const m = req.query.minutes === undefined || req.query.minutes === '' ? 60 : Number(req.query.minutes);
    if (!Number.isInteger(m) || m < 1 || m > 1440)
      throw inputError('QUERY_MINUTES', 'minutes: a whole number from 1 to 1440', { field: 'minutes' });
    const now = Date.now();
    const bucketMs = 60_000;
    // Whole minutes: the last bucket is the current minute so far.
    const end = (Math.floor(now / bucketMs) + 1) * bucketMs;
    return engine.store.throughput(new Date(end - m * bucketMs), bucketMs, new Date(end));
  });

  /** Each sink on this instance: slots, deliveries under way, its circuit breaker (paused since, next probe), and its backlog in the store (open deliveries, the oldest's time). */
  app.get('/api/sinks', { config: { role: 'viewer' } }, async () => {
    const backlog = await engine.store.sinkBacklog();
    return engine
      .sinkViews()
      .map((v) => ({ ...v, backlog: backlog[v.id]?.open ?? 0, oldestWaitingSince: backlog[v.id]?.oldestAt }));
  });

  /**
   * Body (all optional): `until` (ISO 8601 or epoch ms) or `minutes`, and `reason`. Every instance
   * sharing the store stops claiming the sink's deliveries until it is released or `until` passes.
   */
  app.post<{ Params: { id: string }; Body: HoldRequest | null }>(
    '/api/sinks/:id/hold',
    { config: { role: 'operator' } },
    async (req, reply) => {
      if (!engine.hasSink(req.params.id))
        return reply.code(404).send({ error: `no sink "${req.params.id}" in the config` });
      return operation(
        req,
        'sink.hold',
        req.params.id,
        () => engine.holdSink(req.params.id, holdRequest(req.body ?? {})),
        undefined,
        (h) => (h.until ? `until ${h.until.toISOString()}` : 'until released'),
      );
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/api/sinks/:id/hold',
    { config: { role: 'operator' } },
    async (req, reply) => {
      if (!engine.hasSink(req.params.id))
        return reply.code(404).send({ error: `no sink "${req.params.id}" in the config` });
      return operation(
        req,
        'sink.release',
        req.params.id,
        async () => ({ released: await engine.releaseSink(req.params.id) }),
        undefined,
        (r) => `released=${r.released}`,
      );
    },
  );

  /**
   * Same filter keys as `ferry replay`: ids, status, deliveryStatus, source, route, sink, since,
   * until, limit (at most admin.maxListLimit); `type` (`ADT^A0*`), `controlId`, `before` (a seq:
   * the next page, newest first); `patient` (phi-reader: an ordering key or the MRN
   * it ends in). Below phi-reader the metadata comes without identifiers.
   */
  app.get<{ Querystring: ReplayRequest & MessageListQuery }>(
    '/api/messages',
    { config: { role: 'viewer' } },
    async (req) => {
      const { patient, limit, type, controlId, before, ...q } = req.query;
      const filter: MessageFilter = {
        ...replayFilter(q),
        ...messageListFilter({ type, controlId, before }),
        limit: listLimit(limit, 100, cfg.maxListLimit),
        newestFirst: true,
      };
      if (patient !== undefined) {
        need(req, 'phi-reader', 'searching by patient');
        if (typeof patient !== 'string' || !patient.trim() || patient.length > 200)
          throw inputError('QUERY_PATIENT', 'patient: an ordering key or MRN, at most 200 characters', {
            field: 'patient',
          });
        filter.patient = patient.trim();
      }
      const list = await engine.store.listMessages(filter);
      if (!isPhi(req)) return list.map(withoutIdentifiers);
      // Identifiers and ordering keys are PHI: the read is audited before they are sent.
      await audit(req, {
        action: patient !== undefined ? 'message.search' : 'message.list',
        result: 'ok',
        messageIds: list.map((m) => m.id),
        detail: `${list.length} messages`,
      });
      return list.map(({ body: _b, bundle: _bu, ...meta }) => meta);
    },
  );

  app.get<{ Params: { id: string }; Querystring: { body?: string; bundle?: string } }>(
    '/api/messages/:id',
    { config: { role: 'viewer' } },
    async (req, reply) => {
      const withBody = req.query.body === 'true';
      const withBundle = withBody || req.query.bundle === 'true';
      if (withBody || withBundle) need(req, 'phi-reader', 'a message body or bundle');
      const m = await engine.store.getMessage(req.params.id, { body: withBody, bundle: withBundle });
      if (!m) return reply.code(404).send({ error: 'no such message' });
      const [events, deliveries] = await Promise.all([engine.store.events(m.id), engine.store.deliveries(m.id)]);
      // The current processing's data-quality issues: locations and reasons, never values.
      const issues = issuesOf(events);
      if (!isPhi(req))
        return {
          ...withoutIdentifiers(m),
          issues,
          events: events.map(eventWithoutIdentifiers),
          deliveries: deliveries.map(deliveryWithoutIdentifiers),
        };
      await audit(req, {
        action: withBody ? 'message.body.read' : withBundle ? 'message.bundle.read' : 'message.read',
        result: 'ok',
        messageIds: [m.id],
      });
      return { ...m, body: m.body?.toString('utf8'), issues, events, deliveries };
    },
  );

  /** Body: a `ferry replay` request ({ ids | status, source, route, sink, since, until, mode, dryRun }); mode redeliver = retry. */
  app.post<{ Body: ReplayRequest | null }>('/api/replay', { config: { role: 'operator' } }, async (req) => {
    const body = req.body ?? {};
    const r = await operation(
      req,
      body.dryRun === true || body.dryRun === 'true' ? 'replay.dry-run' : 'replay',
      undefined,
      () => replayMessages(engine.store, body),
      (x) => (x.mode === 'reprocess' ? x.ids : undefined),
      (x) => `${x.mode} ${x.count}${x.mode === 'redeliver' ? ` deliveries: ${x.ids.slice(0, 50).join(',')}` : ''}`,
    );
    if (!r.dryRun) engine.kick();
    return { ...r, replayed: r.count };
  });

  app.post('/api/prune', { config: { role: 'operator' } }, async (req) =>
    operation(
      req,
      'prune',
      undefined,
      () => engine.prune(),
      undefined,
      (r) => `bodies ${r.messages}, deleted ${r.deleted ?? 0}, audit ${r.auditDeleted ?? 0}`,
    ),
  );

  /** The audit trail, newest first: since, until, principal, action, messageId, result, limit, after (a seq, for the next page). */
  app.get<{ Querystring: Record<string, string | undefined> }>(
    '/api/audit',
    { config: { role: 'admin' } },
    async (req) => {
      const q = req.query;
      const time = (v: string | undefined, name: string) => {
        if (v === undefined || v === '') return undefined;
        const d = /^\d+$/.test(v) ? new Date(Number(v)) : new Date(v);
        if (Number.isNaN(d.getTime()))
          throw inputError('AUDIT_FILTER', `${name}: not a time (ISO 8601 or epoch ms)`, { field: name });
        return d;
      };
      const f: AuditFilter = { newestFirst: q.order !== 'asc', limit: listLimit(q.limit, 100, cfg.maxListLimit) };
      f.since = time(q.since, 'since');
      f.until = time(q.until, 'until');
      for (const k of ['principal', 'action', 'messageId', 'result'] as const) if (q[k]) f[k] = String(q[k]);
      if (q.after !== undefined && q.after !== '') {
        if (!/^\d+$/.test(q.after)) throw inputError('AUDIT_FILTER', 'after: a seq number', { field: 'after' });
        f.afterSeq = Number(q.after);
      }
      return engine.store.auditEntries(f);
    },
  );

  app.get('/api/tokens', { config: { role: 'admin' } }, async () => {
    const fromConfig = cfg.auth.tokens.map((t) => ({
      id: t.id,
      name: t.name,
      roles: t.roles,
      expiresAt: t.expires,
      source: 'config',
    }));
    return [...fromConfig, ...(await engine.store.apiTokens()).map((t) => ({ ...tokenView(t), source: 'store' }))];
  });

  /** Body: { name, roles, expires? }. The answer holds the token's secret: shown this once, only its hash is kept. */
  app.post<{ Body: TokenRequest | null }>('/api/tokens', { config: { role: 'admin' } }, async (req, reply) => {
    const { principal } = req;
    const by = principal ? `${principal.id} (${principal.name})` : 'unknown';
    const t = await operation(
      req,
      'token.create',
      undefined,
      () => issueToken(engine.store, tokenRequest(req.body ?? {}), by),
      undefined,
      (x) => `${x.record.id} roles=${x.record.roles.join(',')}`,
    );
    return reply.code(201).send({ ...tokenView(t.record), token: t.secret });
  });

  app.delete<{ Params: { id: string } }>('/api/tokens/:id', { config: { role: 'admin' } }, async (req, reply) => {
    if (cfg.auth.tokens.some((t) => t.id === req.params.id))
      return reply.code(409).send({ error: 'this token is in the config: remove it there' });
    const by = req.principal ? `${req.principal.id} (${req.principal.name})` : 'unknown';
    const revoked = await operation(
      req,
      'token.revoke',
      req.params.id,
      () => engine.store.revokeApiToken(req.params.id, by),
      undefined,
      (r) => `revoked=${r}`,
    );
    if (!revoked) return reply.code(404).send({ error: 'no active token with this id' });
    return { revoked };
  });

  /** The running config, secrets redacted. */
  app.get('/api/config', { config: { role: 'admin' } }, async (req) => {
    await audit(req, { action: 'config.read', result: 'ok' });
    const { pluginConfig, ...rest } = engine.config;
    return redactConfig({ ...rest, pluginConfig });
  });

  /**
   * Re-reads the config file, validates all of it and applies it only if valid (see Engine.reload):
   * 200 applied; 422 invalid (every problem); 409 a restart is required. Nothing applied in both.
   */
  app.post('/api/config/reload', { config: { role: 'admin' } }, async (req, reply) => {
    const by = req.principal ? principalLabel(req.principal) : 'unknown';
    const r = await operation(
      req,
      'config.reload',
      undefined,
      () => engine.reload(by),
      undefined,
      (x) =>
        x.applied
          ? `applied: version ${x.version}${x.unchanged ? ' (no change)' : ''}`
          : x.problems
            ? `refused, invalid: ${x.problems.length} problems`
            : `refused, restart required: ${x.restartRequired?.join(',')}`,
    );
    return reply.code(r.applied ? 200 : r.problems ? 422 : 409).send(r);
  });

  /** Every applied config, newest first: version, time, who, hash (`?limit=`). */
  app.get<{ Querystring: { limit?: string } }>('/api/config/history', { config: { role: 'admin' } }, async (req) => {
    await audit(req, { action: 'config.history', result: 'ok' });
    return (await engine.store.configVersions?.(req.query.limit ? Number(req.query.limit) || 100 : 100)) ?? [];
  });

  /** What changed from config version a to b (secrets masked): `{ a, b, changes: [{ path, change, before, after }] }`. */
  app.get<{ Querystring: { a?: string; b?: string } }>(
    '/api/config/diff',
    { config: { role: 'admin' } },
    async (req, reply) => {
      /* eslint-disable @typescript-eslint/no-require-imports -- lazy: the config diff loads on its first request, not with the admin server */
      const { configVersionDiff } =
        require('../cli/commands/config.command') as typeof import('../cli/commands/config.command');
      /* eslint-enable @typescript-eslint/no-require-imports */
      try {
        const d = await configVersionDiff(engine.store, req.query.a, req.query.b);
        await audit(req, { action: 'config.diff', target: `${req.query.a}..${req.query.b}`, result: 'ok' });
        return d;
      } catch (e) {
        if (e instanceof FerryError && e.kind === 'input')
          return reply.code((e.details?.status as number) ?? 400).send({ error: e.message });
        throw e;
      }
    },
  );

  registerConsole(app);
  registerConsoleOidc(app, cfg.auth.oidc, guard, engine.logger);

  const address = await app.listen({ host: cfg.host, port: cfg.port });
  return { url: address, app, guard, routes, close: () => conns.close(() => app.close()) };
}
