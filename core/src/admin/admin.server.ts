import Fastify, { type FastifyInstance } from 'fastify';
import type { Engine } from '../engine/engine';
import type { MessageFilter } from '../store/message-store';
import { parseMessageFilter } from './filter';

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

  app.get('/api/messages', async (req, reply) => {
    const parsed = parseMessageFilter(req.query as Record<string, string>);
    if ('error' in parsed) return reply.code(400).send({ error: parsed.error });
    const list = await engine.store.listMessages({ limit: 100, newestFirst: true, ...parsed.filter });
    return list.map(({ body: _b, bundle: _bu, ...meta }) => meta);
  });

  app.get<{ Params: { id: string }; Querystring: { body?: string } }>('/api/messages/:id', async (req, reply) => {
    const withBody = req.query.body === 'true';
    const m = await engine.store.getMessage(req.params.id, { body: withBody, bundle: withBody });
    if (!m) return reply.code(404).send({ error: `no message ${req.params.id}` });
    const [events, deliveries] = await Promise.all([engine.store.events(m.id), engine.store.deliveries(m.id)]);
    return { ...m, body: m.body?.toString('utf8'), events, deliveries };
  });

  app.post<{ Body: { ids?: string[] } & Record<string, unknown> }>('/api/replay', async (req, reply) => {
    const body = req.body ?? {};
    const parsed = parseMessageFilter(body as Record<string, unknown>);
    if ('error' in parsed) return reply.code(400).send({ error: parsed.error });
    const filter: MessageFilter = parsed.filter;
    if (!Object.keys(filter).length) return reply.code(400).send({ error: 'give ids or a filter (status, sourceId, routeId, sinkId, since, until)' });
    const ids = await engine.store.replay(filter);
    engine.kick();
    return { replayed: ids.length, ids };
  });

  app.post('/api/prune', async () => engine.prune());

  const address = await app.listen({ host: cfg.host, port: cfg.port });
  return { url: address, app, close: () => app.close() };
}
