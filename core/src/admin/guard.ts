import os from 'node:os';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'winston';
import { errorFields } from '../logging/logger';
import type { AuditEntry, MessageStore } from '../store/message-store';
import { AuthError, Authenticator, FailureLimiter, type AuthConfig } from './auth';
import { hasRole, topRole, type Principal, type Role } from './roles';

/**
 * Who may call what on the admin server, and the browser-borne attacks it closes. Every route
 * declares the role it needs in its config (`{ config: { role: 'operator' } }`); `public` routes
 * (/health, /ready) need none, a route that declares nothing needs `admin`. New endpoints (the
 * console) use the same: `authenticate(req)` for the principal, `requireRole(req, role)` inside a
 * handler, `audit(req, entry)` for what they did.
 */

/** What a route needs: a role, `public` (no credentials), or `metrics` (viewer unless admin.metricsPublic). */
export type RouteAccess = Role | 'public' | 'metrics';

declare module 'fastify' {
  interface FastifyContextConfig {
    role?: RouteAccess;
  }
  interface FastifyRequest {
    principal?: Principal;
  }
}

export interface GuardOptions {
  store: MessageStore;
  auth: AuthConfig;
  logger: Logger;
  /** The admin bind address (its name is allowed in Host). */
  bindHost: string;
  allowedHosts: string[];
  allowedOrigins: string[];
  metricsPublic: boolean;
  tls: boolean;
  now?: () => number;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Host header names served by default: the bind address, loopback names, and for a wildcard bind this machine's names. */
export function defaultAllowedHosts(bindHost: string): string[] {
  const out = new Set(['localhost', '127.0.0.1', '::1']);
  const wildcard = bindHost === '0.0.0.0' || bindHost === '::' || bindHost === '';
  if (!wildcard) out.add(bindHost.toLowerCase());
  else {
    out.add(os.hostname().toLowerCase());
    for (const list of Object.values(os.networkInterfaces()))
      for (const a of list ?? []) out.add(a.address.toLowerCase());
  }
  return [...out];
}

/** The host name of a Host header (`[::1]:8080` -> `::1`), lower-case; undefined when malformed. */
export function hostName(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$/.exec(h);
  if (v6) return v6[1];
  const m = /^([a-z0-9._-]+)(?::(\d{1,5}))?$/.exec(h);
  return m?.[1];
}

export class AdminGuard {
  readonly authenticator: Authenticator;
  readonly limiter: FailureLimiter;
  private readonly hosts: Set<string> | '*';
  private readonly origins: Set<string>;

  constructor(private readonly opts: GuardOptions) {
    this.authenticator = new Authenticator(opts.store, opts.auth, opts.logger, opts.now);
    this.limiter = new FailureLimiter(opts.auth.failedAuth.maxFailures, opts.auth.failedAuth.windowMs, opts.now);
    this.hosts = opts.allowedHosts.includes('*')
      ? '*'
      : new Set([
          ...defaultAllowedHosts(opts.bindHost),
          ...opts.allowedHosts.map((h) => hostName(h) ?? h.toLowerCase()),
        ]);
    this.origins = new Set(opts.allowedOrigins.map((o) => o.toLowerCase().replace(/\/$/, '')));
  }

  /** Installs the checks on every request of `app` (before its body is read). */
  install(app: FastifyInstance): void {
    app.decorateRequest('principal', undefined);
    app.addHook('onRequest', async (req, reply) => {
      this.securityHeaders(reply);
      // No route: any principal learns it is not found; without credentials, nothing.
      const access = req.is404 ? undefined : (req.routeOptions.config?.role ?? 'admin');
      const open = access === 'public' || (access === 'metrics' && this.opts.metricsPublic);
      if (!open) this.checkBlocked(req);
      this.checkHost(req);
      this.checkOrigin(req);
      if (open) return;
      await this.authenticate(req);
      if (access) requireRole(req, access === 'metrics' ? 'viewer' : access);
      this.checkContentType(req);
    });
  }

  private securityHeaders(reply: FastifyReply): void {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    reply.header('cross-origin-resource-policy', 'same-origin');
    reply.header('cache-control', 'no-store');
    if (this.opts.tls) reply.header('strict-transport-security', 'max-age=31536000');
  }

  /** DNS rebinding: a page on attacker.example resolving to 127.0.0.1 sends `Host: attacker.example`. */
  private checkHost(req: FastifyRequest): void {
    if (this.hosts === '*') return;
    const name = hostName(req.headers.host);
    if (!name || !this.hosts.has(name))
      throw new GuardError(
        421,
        `host not allowed: ${JSON.stringify(String(req.headers.host ?? '').slice(0, 100))} (admin.allowedHosts)`,
        'host',
      );
  }

  /** A browser's cross-site request carries a foreign Origin: refused unless listed. */
  private checkOrigin(req: FastifyRequest): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    const o = String(origin).toLowerCase().replace(/\/$/, '');
    if (this.origins.has(o)) return;
    // The server's own origin (req.protocol: X-Forwarded-Proto from a trusted proxy terminating TLS).
    const self = `${req.protocol}://${String(req.headers.host ?? '').toLowerCase()}`;
    if (o === self) return;
    throw new GuardError(
      403,
      `origin not allowed: ${JSON.stringify(String(origin).slice(0, 100))} (admin.allowedOrigins)`,
      'origin',
    );
  }

  /** A state-changing request must be JSON (a cross-site form or `text/plain` "simple" request is not). */
  private checkContentType(req: FastifyRequest): void {
    if (!STATE_CHANGING.has(req.method)) return;
    const type = String(req.headers['content-type'] ?? '')
      .split(';')[0]
      .trim()
      .toLowerCase();
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (type === 'application/json') return;
    if (!type && !hasBody && req.method === 'DELETE') return;
    throw new GuardError(415, 'state-changing requests need Content-Type: application/json', 'content-type');
  }

  /** An address refused for its failures gets 429 for anything but the open routes. */
  private checkBlocked(req: FastifyRequest): void {
    const wait = this.limiter.blocked(req.ip);
    if (wait !== undefined)
      throw new AuthError(
        429,
        `too many failed or refused requests from this address; retry in ${wait} s`,
        'rate-limited',
        wait,
      );
  }

  /** The principal of a request (checked once; failures counted per address and audited). */
  async authenticate(req: FastifyRequest): Promise<Principal> {
    if (req.principal) return req.principal;
    const address = req.ip;
    this.checkBlocked(req);
    try {
      req.principal = await this.authenticator.authenticate(req.headers.authorization);
      return req.principal;
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      const blocked = this.limiter.fail(address);
      await this.audit(req, { action: 'auth.failed', result: 'denied', detail: e.reason });
      if (blocked) {
        this.opts.logger.warn('admin: failed authentications, address refused for a while', {
          remote: address,
          windowMs: this.opts.auth.failedAuth.windowMs,
        });
        await this.audit(req, {
          action: 'auth.rate-limited',
          result: 'denied',
          detail: `${this.opts.auth.failedAuth.maxFailures} failures`,
        });
      }
      throw e;
    }
  }

  /** Appends an audit entry for this request: principal, role, address and route filled in. */
  async audit(req: FastifyRequest, e: Omit<AuditEntry, 'principal'> & { principal?: string }): Promise<void> {
    const p = req.principal;
    await this.opts.store.appendAudit([
      {
        ...e,
        principal: e.principal ?? (p ? principalLabel(p) : 'anonymous'),
        role: e.role ?? (p ? topRole(p) : undefined),
        remote: e.remote ?? req.ip,
        // The route pattern, never the URL: a query may hold a patient identifier.
        target: e.target ?? `${req.method} ${req.routeOptions.url ?? '(no route)'}`,
      },
    ]);
  }

  /** Audits a refusal; an audit that cannot be written is logged, the refusal stands. */
  async auditRefusal(req: FastifyRequest, e: AuthError | GuardError): Promise<void> {
    // 401 and 429 were audited where they were decided (429s are not, each: a flood would fill the table).
    if (e instanceof AuthError && e.status !== 403) return;
    if (e instanceof GuardError && !req.principal) {
      // Refused before authentication (Host, Origin): counted like failed authentications, so a
      // flood of them writes at most maxFailures entries per window and address.
      if (this.limiter.blocked(req.ip) !== undefined) return;
      if (this.limiter.fail(req.ip))
        this.opts.logger.warn('admin: refused requests, address refused for a while', {
          remote: req.ip,
          reason: e.reason,
          windowMs: this.opts.auth.failedAuth.windowMs,
        });
    }
    await this.audit(req, {
      action: e instanceof AuthError ? 'access.denied' : `request.refused`,
      result: 'denied',
      detail: e.reason,
    }).catch((err) => this.opts.logger.error('admin: audit entry not written', errorFields(err)));
  }
}

/** A request refused before authentication: wrong Host (421), foreign Origin (403), not JSON (415). */
export class GuardError extends Error {
  constructor(
    readonly statusCode: 403 | 415 | 421,
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}

/** How a principal is named in the audit trail. */
export function principalLabel(p: Principal): string {
  return p.kind === 'token' ? `${p.id} (${p.name})` : p.kind === 'oidc' ? `${p.id} (${p.name})` : p.id;
}

/** Throws 403 unless the request's principal holds `role` (or one above it). */
export function requireRole(req: FastifyRequest, role: Role): Principal {
  const p = req.principal;
  if (!p) throw new AuthError(401, 'authentication required', 'missing');
  if (!hasRole(p, role))
    throw new AuthError(
      403,
      `forbidden: needs role ${role}${topRole(p) ? ` (this principal is ${topRole(p)})` : ' (this principal has no Ferry role)'}`,
      `needs ${role}`,
    );
  return p;
}
