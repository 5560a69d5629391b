/**
 * The facade's onRequest guard: Host (DNS rebinding) and Origin/CORS checks, then the bearer
 * credential, the connection's scope and the per-client rate limit.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'winston';
import type { AuthConfig } from '../admin/auth';
import { AuthError, Authenticator, FailureLimiter } from '../admin/auth';
import { defaultAllowedHosts, GuardError, hostName } from '../admin/guard';
import { hasScope, type Principal } from '../admin/roles';
import type { FacadeAccess, FacadeContext } from './facade-context';

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

export interface FacadeGuardOptions {
  auth: AuthConfig;
  logger: Logger;
  now: () => number;
  /** Served over TLS (adds Strict-Transport-Security). */
  https: boolean;
}

export function installFacadeGuard(app: FastifyInstance, ctx: FacadeContext, o: FacadeGuardOptions): void {
  const { api, service, store, audit, target } = ctx;
  const { logger, now, https } = o;
  const authenticator = new Authenticator(store, o.auth, logger, now);
  const failures = new FailureLimiter(o.auth.failedAuth.maxFailures, o.auth.failedAuth.windowMs, now);
  const limiter = new ClientRateLimiter(now);

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
}
