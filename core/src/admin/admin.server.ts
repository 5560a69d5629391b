import Fastify, { type FastifyInstance } from 'fastify';
import type { Engine } from '../engine/engine';
import { FerryError } from '../errors';
import { HttpConnections } from '../util/graceful-http';
import { holdRequest, replayFilter, replayMessages, type HoldRequest, type ReplayRequest } from '../store/admin-ops';

export interface AdminServer {
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

/**
 * Admin HTTP: /health, /ready, /metrics and the operations API (messages, replay, prune).
 * Message bodies are PHI: they are returned only by GET /api/messages/:id?body=true.
 */
export async function startAdmin(engine: Engine, cfg: { host: string; port: number }): Promise<AdminServer> {
  const app = Fastify({ logger: false });
  // A stop closes idle connections (also those that never sent a request) instead of waiting on them.
  const conns = new HttpConnections(app.server);

  app.get('/health', async () => ({ status: 'ok' }));

  app.get('/ready', async (_req, reply) => {
    const r = engine.readiness();
    return reply.code(r.ready ? 200 : 503).send(r);
  });

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', engine.metrics.registry.contentType);
    return engine.metrics.registry.metrics();
  });

  app.get('/api/stats', async () => engine.store.stats());

  /** Each sink on this instance: slots, deliveries under way, and its circuit breaker (paused since, next probe). */
  app.get('/api/sinks', async () => engine.sinkViews());

  /**
   * Body (all optional): `until` (ISO 8601 or epoch ms) or `minutes`, and `reason`. Every instance
   * sharing the store stops claiming the sink's deliveries until it is released or `until` passes.
   */
  app.post<{ Params: { id: string }; Body: HoldRequest | null }>('/api/sinks/:id/hold', async (req, reply) => {
    if (!engine.hasSink(req.params.id)) return reply.code(404).send({ error: `no sink "${req.params.id}" in the config` });
    return engine.holdSink(req.params.id, holdRequest(req.body ?? {}));
  });

  app.delete<{ Params: { id: string } }>('/api/sinks/:id/hold', async (req, reply) => {
    if (!engine.hasSink(req.params.id)) return reply.code(404).send({ error: `no sink "${req.params.id}" in the config` });
    return { released: await engine.releaseSink(req.params.id) };
  });

  // Bad filters and replay requests are the caller's fault: 400 with the reason.
  app.setErrorHandler((e, _req, reply) => {
    if (e instanceof FerryError && e.kind === 'input') return reply.code(400).send({ error: e.message, code: e.code });
    const status = (e as { statusCode?: number }).statusCode;
    if (status && status < 500) return reply.code(status).send({ error: (e as Error).message });
    return reply.code(500).send({ error: 'internal error', code: e instanceof FerryError ? e.code : undefined });
  });

  /** Same filter keys as `ferry replay`: ids, status, deliveryStatus, source, route, sink, since, until, limit. */
  app.get('/api/messages', async (req) => {
    const filter = replayFilter(req.query as ReplayRequest);
    const list = await engine.store.listMessages({ limit: 100, newestFirst: true, ...filter });
    return list.map(({ body: _b, bundle: _bu, ...meta }) => meta);
  });

  app.get<{ Params: { id: string }; Querystring: { body?: string } }>('/api/messages/:id', async (req, reply) => {
    const withBody = req.query.body === 'true';
    const m = await engine.store.getMessage(req.params.id, { body: withBody, bundle: withBody });
    if (!m) return reply.code(404).send({ error: `no message ${req.params.id}` });
    const [events, deliveries] = await Promise.all([engine.store.events(m.id), engine.store.deliveries(m.id)]);
    return { ...m, body: m.body?.toString('utf8'), events, deliveries };
  });

  /** Body: a `ferry replay` request ({ ids | status, source, route, sink, since, until, mode, dryRun }). */
  app.post<{ Body: ReplayRequest }>('/api/replay', async (req) => {
    const r = await replayMessages(engine.store, req.body ?? {});
    if (!r.dryRun) engine.kick();
    return { ...r, replayed: r.count };
  });

  app.post('/api/prune', async () => engine.prune());

  const address = await app.listen({ host: cfg.host, port: cfg.port });
  return { url: address, app, close: () => conns.close(() => app.close()) };
}
