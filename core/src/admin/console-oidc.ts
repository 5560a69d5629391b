import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { decodeJwt } from 'jose';
import type { Logger } from 'winston';
import { FerryError } from '../errors';
import { AuthError, type OidcConfig } from './auth';
import { principalLabel, type AdminGuard } from './guard';

/**
 * The console's "Sign in with <provider>": OpenID Connect authorization code flow with PKCE (S256),
 * `state` and `nonce` (README "Console").
 *
 * 1. The page makes a code verifier, sends its S256 challenge to POST /console/oidc/start; the
 *    server makes `state` and `nonce`, remembers them with the challenge (one use, 10 minutes) and
 *    answers the provider's authorization URL (its `authorization_endpoint` from
 *    `{issuer}/.well-known/openid-configuration`, read by the server: the page's CSP allows only
 *    its own origin).
 * 2. The provider sends the browser back to /console with `code` and `state`; the page checks the
 *    state against its own copy and POSTs code, state and verifier to /console/oidc/token.
 * 3. The server checks the state (known, unused, unexpired) and the verifier against the challenge,
 *    posts the code and verifier (and the client secret, if any) to the provider's `token_endpoint`,
 *    checks the ID token (signature, issuer, aud = client id, nonce) and the bearer token the page
 *    will use (exactly as the API checks it), and answers that token with its expiry.
 *
 * These routes are public (the user has no credential yet); failures are counted per address by
 * the guard's FailureLimiter (429 when blocked) and audited (`console.signin`); no token is logged.
 */

interface Pending {
  challenge: string;
  nonce: string;
  redirectUri: string;
  expires: number;
  /** Who started it: one address cannot push out the sign-ins of others. */
  address: string;
}

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
}

const STATE_TTL_MS = 10 * 60_000;
const MAX_PENDING = 10_000;
const MAX_PENDING_PER_ADDRESS = 20;
const b64url = (b: Buffer) => b.toString('base64url');
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;
const B64URL = /^[A-Za-z0-9_-]{20,200}$/;

const isLoopback = (u: URL) => ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname);

export class ConsoleOidc {
  private readonly pending = new Map<string, Pending>();
  private discovery?: Promise<Discovery>;

  constructor(
    private readonly oidc: OidcConfig,
    private readonly guard: AdminGuard,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return !!(this.oidc.issuer && this.oidc.console?.clientId);
  }

  /** The provider's endpoints, read once (again after a failure). */
  private endpoints(): Promise<Discovery> {
    if (!this.discovery) {
      this.discovery = this.discover().catch((e) => {
        this.discovery = undefined;
        throw e;
      });
    }
    return this.discovery;
  }

  private async discover(): Promise<Discovery> {
    const url = `${this.oidc.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    let doc: Record<string, unknown>;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5_000), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as Record<string, unknown>;
    } catch (e) {
      this.logger.warn("console sign-in: cannot read the identity provider's discovery document", {
        error: (e as Error).message,
      });
      throw new FerryError('TRANSIENT_OIDC_DISCOVERY', 'the identity provider cannot be reached now; try again', {
        kind: 'transient',
        cause: e,
      });
    }
    const endpoint = (k: string): string => {
      const v = doc[k];
      let u: URL | undefined;
      try {
        u = typeof v === 'string' ? new URL(v) : undefined;
      } catch {
        /* below */
      }
      if (!u || (u.protocol !== 'https:' && !isLoopback(u)))
        throw new FerryError(
          'TRANSIENT_OIDC_DISCOVERY',
          `the identity provider's discovery document has no usable ${k} (https; http only on localhost)`,
          { kind: 'transient' },
        );
      return u.toString();
    };
    if (doc.issuer !== this.oidc.issuer)
      throw new FerryError(
        'TRANSIENT_OIDC_DISCOVERY',
        "the identity provider's discovery document names another issuer than admin.auth.oidc.issuer",
        { kind: 'transient' },
      );
    return { authorization_endpoint: endpoint('authorization_endpoint'), token_endpoint: endpoint('token_endpoint') };
  }

  private redirectUri(req: FastifyRequest): string {
    const c = this.oidc.console!;
    return c.redirectUri || `${req.protocol}://${String(req.headers.host)}/console`;
  }

  /** Refused addresses get 429 here too (the guard does not check public routes). */
  private checkBlocked(req: FastifyRequest): void {
    const wait = this.guard.limiter.blocked(req.ip);
    if (wait !== undefined)
      throw new AuthError(
        429,
        `too many failed or refused requests from this address; retry in ${wait} s`,
        'rate-limited',
        wait,
      );
  }

  /** A refused sign-in: counted against the address, audited (the reason, never a token), 401. */
  private async refuse(req: FastifyRequest, reason: string, message: string): Promise<never> {
    if (this.guard.limiter.fail(req.ip))
      this.logger.warn('admin: failed console sign-ins, address refused for a while', { remote: req.ip });
    await this.guard.audit(req, { action: 'console.signin', result: 'denied', detail: reason });
    throw new AuthError(401, message, reason);
  }

  private sweep(address: string): void {
    const now = this.now();
    const mine: string[] = [];
    for (const [k, p] of this.pending) {
      if (p.expires <= now) this.pending.delete(k);
      else if (p.address === address) mine.push(k);
    }
    // An address's oldest unfinished sign-ins go first (a tab abandoned, or a flood).
    while (mine.length >= MAX_PENDING_PER_ADDRESS) this.pending.delete(mine.shift()!);
    while (this.pending.size >= MAX_PENDING) this.pending.delete(this.pending.keys().next().value as string);
  }

  /** POST /console/oidc/start { codeChallenge } -> { authorizationUrl, state }. */
  async start(req: FastifyRequest): Promise<{ authorizationUrl: string; state: string }> {
    this.checkBlocked(req);
    const body = req.body as { codeChallenge?: unknown; codeChallengeMethod?: unknown } | null;
    const challenge = body?.codeChallenge;
    if (typeof challenge !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(challenge))
      return this.refuse(
        req,
        'bad-challenge',
        'codeChallenge: the base64url SHA-256 of the code verifier (43 characters) is required',
      );
    if (body?.codeChallengeMethod !== undefined && body.codeChallengeMethod !== 'S256')
      return this.refuse(req, 'bad-challenge', 'codeChallengeMethod: only S256');
    const d = await this.endpoints();
    const c = this.oidc.console!;
    this.sweep(req.ip);
    const state = b64url(randomBytes(32));
    const nonce = b64url(randomBytes(32));
    const redirectUri = this.redirectUri(req);
    this.pending.set(state, { challenge, nonce, redirectUri, expires: this.now() + STATE_TTL_MS, address: req.ip });
    const u = new URL(d.authorization_endpoint);
    const scopes = [...new Set(['openid', ...c.scopes])];
    for (const [k, v] of Object.entries({
      response_type: 'code',
      client_id: c.clientId,
      redirect_uri: redirectUri,
      scope: scopes.join(' '),
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }))
      u.searchParams.set(k, v);
    return { authorizationUrl: u.toString(), state };
  }

  /** POST /console/oidc/token { code, state, codeVerifier } -> { token, expiresAt, principal }. */
  async token(
    req: FastifyRequest,
  ): Promise<{ token: string; tokenType: string; expiresAt: string; principal: unknown }> {
    this.checkBlocked(req);
    const body = (req.body ?? {}) as { code?: unknown; state?: unknown; codeVerifier?: unknown };
    const { code, state, codeVerifier } = body;
    if (typeof state !== 'string' || !B64URL.test(state))
      return this.refuse(req, 'state-missing', 'state: missing or malformed');
    const p = this.pending.get(state);
    // One use: a replayed or forged state finds nothing.
    this.pending.delete(state);
    if (!p || p.expires <= this.now())
      return this.refuse(req, 'state-unknown', 'state: unknown, used or expired: start the sign-in again');
    if (typeof codeVerifier !== 'string' || !VERIFIER.test(codeVerifier))
      return this.refuse(
        req,
        'verifier-missing',
        'codeVerifier: missing or malformed (43-128 characters of A-Z a-z 0-9 . _ ~ -)',
      );
    const computed = Buffer.from(b64url(createHash('sha256').update(codeVerifier).digest()));
    const expected = Buffer.from(p.challenge);
    if (computed.length !== expected.length || !timingSafeEqual(computed, expected))
      return this.refuse(req, 'verifier-mismatch', "codeVerifier: does not match the sign-in's challenge");
    if (typeof code !== 'string' || !code || code.length > 4096)
      return this.refuse(req, 'code-missing', 'code: missing or malformed');

    const d = await this.endpoints();
    const c = this.oidc.console!;
    const form = new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: p.redirectUri,
      code_verifier: codeVerifier,
      client_id: c.clientId,
    });
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    if (c.clientSecret)
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64')}`;
    let res: Response;
    try {
      res = await fetch(d.token_endpoint, {
        method: 'POST',
        headers,
        body: form.toString(),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (e) {
      this.logger.warn("console sign-in: the identity provider's token endpoint cannot be reached", {
        error: (e as Error).message,
      });
      throw new FerryError('TRANSIENT_OIDC_TOKEN', 'the identity provider cannot be reached now; try again', {
        kind: 'transient',
        cause: e,
      });
    }
    const answer = (await res.json().catch(() => ({}))) as {
      id_token?: unknown;
      access_token?: unknown;
      error?: unknown;
    };
    if (!res.ok) {
      // The provider's error code only (invalid_grant, ...): its description may echo input.
      const err = typeof answer.error === 'string' ? answer.error.slice(0, 40) : `http-${res.status}`;
      this.logger.warn('console sign-in: the identity provider refused the code', { status: res.status, error: err });
      return this.refuse(req, `provider:${err}`, `the identity provider refused the sign-in (${err})`);
    }
    if (typeof answer.id_token !== 'string')
      return this.refuse(req, 'no-id-token', 'the identity provider answered no ID token');
    await this.guard.authenticator
      .verifyIdToken(answer.id_token, c.clientId, p.nonce)
      .catch((e) => this.refuse(req, e instanceof AuthError ? e.reason : 'id-token', (e as Error).message));
    const bearer = c.bearer === 'access_token' ? answer.access_token : answer.id_token;
    if (typeof bearer !== 'string')
      return this.refuse(req, 'no-access-token', 'the identity provider answered no access token');
    // Exactly the check every API call makes: what the page gets is what the API will accept.
    let principal;
    try {
      principal = await this.guard.authenticator.authenticate(`Bearer ${bearer}`);
    } catch (e) {
      if (e instanceof AuthError) return this.refuse(req, e.reason, e.message);
      throw e;
    }
    req.principal = principal;
    if (!principal.roles.length) {
      await this.guard.audit(req, { action: 'console.signin', result: 'denied', detail: 'no Ferry role' });
      throw new AuthError(
        403,
        'signed in, but this user has no Ferry role (admin.auth.oidc.rolesClaim / roleMap)',
        'no-role',
      );
    }
    const exp = decodeJwt(bearer).exp!;
    await this.guard.audit(req, { action: 'console.signin', result: 'ok', principal: principalLabel(principal) });
    return { token: bearer, tokenType: c.bearer, expiresAt: new Date(exp * 1000).toISOString(), principal };
  }
}

/** The provider cannot be reached or answers nonsense: 503 saying so (the admin server's generic 503 speaks of the store). */
async function providerDown<T>(reply: FastifyReply, run: () => Promise<T>): Promise<T | FastifyReply> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof FerryError && e.kind === 'transient')
      return reply.code(503).header('retry-after', '5').send({ error: e.message, code: e.code });
    throw e;
  }
}

export function registerConsoleOidc(app: FastifyInstance, oidc: OidcConfig, guard: AdminGuard, logger: Logger): void {
  const co = new ConsoleOidc(oidc, guard, logger);
  const off = (reply: FastifyReply) =>
    reply.code(404).send({ error: 'console sign-in with OIDC is not configured (admin.auth.oidc.console.clientId)' });
  // Whether to show the button, and its label: nothing secret.
  app.get('/console/oidc', { config: { role: 'public' } }, async () =>
    co.enabled ? { enabled: true, displayName: oidc.console!.displayName } : { enabled: false },
  );
  app.post('/console/oidc/start', { config: { role: 'public' } }, async (req, reply) =>
    co.enabled ? providerDown(reply, () => co.start(req)) : off(reply),
  );
  app.post('/console/oidc/token', { config: { role: 'public' } }, async (req, reply) => {
    if (!co.enabled) return off(reply);
    reply.header('cache-control', 'no-store');
    return providerDown(reply, () => co.token(req));
  });
}
