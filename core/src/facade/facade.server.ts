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
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'winston';
import type { ApiConfig } from '../config/engine.schema';
import type { AuthConfig } from '../admin/auth';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import type { MessageStore } from '../store/message-store';
import { HttpConnections } from '../util/graceful-http';
import { tlsServerOptions } from '../util/tls-options';
import type { FacadeService } from './facade.service';
import { facadeContext } from './facade-context';
import { installFacadeGuard } from './facade-guard';
import { errorAnswer, FHIR_JSON, outcome } from './facade-outcome';
import { registerFacadeReadRoutes } from './facade-read-routes';
import { registerFacadeWriteRoutes } from './facade-write-routes';

export { AuditBatcher, FACADE_ROUTES, type FacadeAccess } from './facade-context';
export { ClientRateLimiter } from './facade-guard';
export { errorAnswer, outcome } from './facade-outcome';

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

  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(['application/json', 'application/fhir+json'], { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (!text.trim()) return done(null, null);
    return json(req, text, done);
  });

  const ctx = facadeContext(api, service, store, now);
  installFacadeGuard(app, ctx, { auth: o.auth, logger, now, https: https !== undefined });

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

  registerFacadeReadRoutes(app, ctx);
  registerFacadeWriteRoutes(app, ctx);

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
