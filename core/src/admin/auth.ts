import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { Logger } from 'winston';
import { engineSchema, type AuthConfig } from '../config/engine.schema';
import { schemaDefaults } from '../config/schema-type';
import { FerryError } from '../errors';
import type { ApiTokenRecord, MessageStore } from '../store/message-store';
import { isFacadeScope, isRole, type Principal, type Role } from './roles';
import { hashToken, newTokenSecret, secretDigest, tokenIdOf, verifyToken } from './tokens';

export { ROLES, hasRole, isRole, topRole, type Principal, type Role } from './roles';

/** Why a request was refused: 401 (no or bad credentials), 403 (too weak a role), 429 (too many failures). */
export class AuthError extends FerryError {
  constructor(
    readonly status: 401 | 403 | 429,
    message: string,
    readonly reason: string,
    readonly retryAfterSec?: number,
  ) {
    super(
      status === 403 ? 'INPUT_FORBIDDEN' : status === 429 ? 'INPUT_AUTH_RATE_LIMITED' : 'INPUT_UNAUTHENTICATED',
      message,
      { kind: 'input' },
    );
  }
}

/** An API token entry of `admin.auth.tokens` (the config holds hashes only). */
export interface ConfigToken {
  id: string;
  name: string;
  roles: Role[];
  hash: string;
  /** ISO 8601; absent = no expiry. */
  expires?: string;
  /** FHIR facade scopes (`connection:<id>:read|write`). */
  scopes?: string[];
}

/** `admin.auth` and its parts, derived from the engine schema. */
export type { AuthConfig, OidcConfig, OidcConsoleConfig } from '../config/engine.schema';

/** `admin.auth` with the schema's defaults (no tokens, OIDC off). */
export const defaultAuthConfig = (): AuthConfig => schemaDefaults(engineSchema.admin.auth);

export { FailureLimiter } from './failure-limiter';

/** A claim by dot path (`realm_access.roles`). */
function claim(payload: JWTPayload, path: string): unknown {
  let v: unknown = payload;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

const isLoopbackUrl = (u: URL) => ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname);

/**
 * Checks `Authorization` headers: Ferry API tokens (`ferry_<id>_<secret>`, from the config or the
 * store) and, when configured, OIDC / JWT bearer tokens of the hospital's identity provider
 * (signature by the JWKS, issuer, audience, expiry). The scheme is matched case-insensitively
 * (`bearer` is as good as `Bearer`, RFC 7235).
 */
export class Authenticator {
  private readonly configTokens = new Map<string, ConfigToken>();
  private readonly checked = new Map<string, { tokenId: string; hash: string; at: number }>();
  private readonly jwks?: ReturnType<typeof createRemoteJWKSet>;

  constructor(
    private readonly store: MessageStore,
    private readonly cfg: AuthConfig,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    for (const t of cfg.tokens) this.configTokens.set(t.id, t);
    if (cfg.oidc.issuer) {
      const url = new URL(cfg.oidc.jwksUrl);
      if (url.protocol !== 'https:' && !isLoopbackUrl(url))
        throw new FerryError('CONFIG_ADMIN_OIDC', 'admin.auth.oidc.jwksUrl: must be https (http only on localhost)', {
          kind: 'config',
        });
      this.jwks = createRemoteJWKSet(url, { timeoutDuration: 5_000, cooldownDuration: 30_000 });
    }
  }

  /** True when some principal is configured (config tokens or OIDC); store tokens are checked apart. */
  get configured(): boolean {
    return this.configTokens.size > 0 || !!this.jwks;
  }

  /** The principal the header names; throws AuthError(401) for a missing, malformed, unknown, expired or revoked credential. */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    if (!authorization)
      throw new AuthError(401, 'authentication required: send Authorization: Bearer <token>', 'missing');
    const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (!m) throw new AuthError(401, 'unsupported Authorization header: use Bearer <token>', 'scheme');
    const token = m[1];
    if (token.startsWith('ferry_')) return this.apiToken(token);
    if (this.jwks && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) return this.jwt(token);
    throw new AuthError(401, 'invalid token', 'malformed');
  }

  private async apiToken(secret: string): Promise<Principal> {
    const id = tokenIdOf(secret);
    if (!id) throw new AuthError(401, 'invalid token', 'malformed');
    const fromConfig = this.configTokens.get(id);
    const rec:
      Pick<ApiTokenRecord, 'id' | 'name' | 'roles' | 'hash' | 'expiresAt' | 'revokedAt' | 'scopes'> | undefined =
      fromConfig
        ? { ...fromConfig, expiresAt: fromConfig.expires ? new Date(fromConfig.expires) : undefined }
        : await this.store.apiToken(id);
    if (!rec) throw new AuthError(401, 'invalid token', 'unknown');
    const now = this.now();
    const digest = secretDigest(secret);
    const hit = this.checked.get(digest);
    let ok = !!hit && hit.tokenId === id && hit.hash === rec.hash && now - hit.at < this.cfg.tokenCacheMs;
    if (!ok) {
      ok = await verifyToken(secret, rec.hash);
      if (ok) {
        if (this.checked.size >= 1000) this.checked.delete(this.checked.keys().next().value as string);
        this.checked.set(digest, { tokenId: id, hash: rec.hash, at: now });
      }
    }
    if (!ok) throw new AuthError(401, 'invalid token', 'wrong-secret');
    if (rec.revokedAt) throw new AuthError(401, 'token revoked', 'revoked');
    if (rec.expiresAt && rec.expiresAt.getTime() <= now) throw new AuthError(401, 'token expired', 'expired');
    const p: Principal = { id: `token:${id}`, kind: 'token', name: rec.name, roles: rec.roles.filter(isRole) };
    if (rec.scopes?.length) p.scopes = rec.scopes.filter(isFacadeScope);
    return p;
  }

  /**
   * Checks an ID token from the console's code exchange: the provider's signature (JWKS), the
   * issuer, `aud` = the console's client id, expiry, and the `nonce` the sign-in was started with.
   */
  async verifyIdToken(token: string, clientId: string, nonce: string): Promise<JWTPayload> {
    if (!this.jwks) throw new AuthError(401, 'OIDC is not configured', 'oidc-off');
    const o = this.cfg.oidc;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: o.issuer,
        audience: clientId,
        algorithms: o.algorithms.length ? o.algorithms : undefined,
        clockTolerance: o.clockToleranceSec,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (e) {
      throw new AuthError(
        401,
        `invalid ID token (${(e as { code?: string }).code ?? 'error'})`,
        `id-token:${(e as { code?: string }).code ?? 'error'}`,
      );
    }
    if (payload.nonce !== nonce)
      throw new AuthError(401, 'invalid ID token (nonce does not match the sign-in)', 'id-token:nonce');
    return payload;
  }

  private async jwt(token: string): Promise<Principal> {
    const o = this.cfg.oidc;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks!, {
        issuer: o.issuer,
        audience: o.audience || undefined,
        algorithms: o.algorithms.length ? o.algorithms : undefined,
        clockTolerance: o.clockToleranceSec,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (e) {
      const code = (e as { code?: string }).code;
      // A JWKS that cannot be fetched (down, timing out, answering garbage) is the server's problem,
      // not the caller's: 503, not counted against the caller's address; logged (no token in it).
      if (
        !code?.startsWith('ERR_J') ||
        code === 'ERR_JWKS_TIMEOUT' ||
        code === 'ERR_JOSE_GENERIC' ||
        code === 'ERR_JWKS_INVALID'
      ) {
        this.logger.warn("oidc: cannot fetch the identity provider's keys (JWKS)", {
          errorCode: code,
          error: (e as Error).message,
        });
        throw new FerryError(
          'TRANSIENT_OIDC_JWKS',
          "cannot check bearer tokens now: the identity provider's keys cannot be fetched",
          { kind: 'transient', cause: e },
        );
      }
      throw new AuthError(401, `invalid bearer token (${code})`, `jwt:${code}`);
    }
    const raw = claim(payload, o.rolesClaim);
    const values = Array.isArray(raw)
      ? raw.map(String)
      : typeof raw === 'string'
        ? raw.split(/\s+/).filter(Boolean)
        : [];
    const mapped = Object.keys(o.roleMap).length
      ? values.map((v) => o.roleMap[v]).filter(isRole)
      : values.filter(isRole);
    const nameClaim = claim(payload, o.nameClaim);
    const rawScopes = claim(payload, o.scopesClaim || 'scope');
    const scopes = (
      Array.isArray(rawScopes) ? rawScopes.map(String) : typeof rawScopes === 'string' ? rawScopes.split(/\s+/) : []
    ).filter(isFacadeScope);
    return {
      id: `oidc:${payload.sub}`,
      kind: 'oidc',
      name: typeof nameClaim === 'string' ? nameClaim : String(payload.sub),
      roles: [...new Set(mapped)],
      ...(scopes.length ? { scopes: [...new Set(scopes)] } : {}),
    };
  }
}

/**
 * With no principal configured -- no token in the config, no OIDC, and never a token in the store --
 * creates the initial admin token, hands its secret to `show` once (the terminal; never the log)
 * and keeps only its hash. Returns its id, or undefined when there was no need.
 */
export async function ensureInitialToken(
  store: MessageStore,
  auth: Pick<AuthConfig, 'tokens' | 'oidc'>,
  show: (secret: string, id: string) => void,
): Promise<string | undefined> {
  if (auth.tokens.length || auth.oidc.issuer) return undefined;
  if ((await store.apiTokens()).length) return undefined;
  const { id, secret } = newTokenSecret();
  await store.createApiToken({
    id,
    name: 'initial-admin',
    roles: ['admin'],
    hash: await hashToken(secret),
    createdAt: new Date(),
    createdBy: 'system:first-start',
  });
  await store.appendAudit([
    {
      principal: 'system:first-start',
      action: 'token.create',
      target: id,
      result: 'ok',
      detail: 'initial admin token (no principal configured)',
    },
  ]);
  show(secret, id);
  return id;
}

/** Writes the initial token to the terminal (stderr), not through the logger. */
export function printInitialToken(secret: string, id: string): void {
  process.stderr.write(
    [
      '',
      'Ferry: no admin principal is configured, so an initial admin API token was created.',
      'It is shown this once; only its hash is kept. Use it as "Authorization: Bearer <token>":',
      '',
      `    ${secret}`,
      '',
      `Create your own tokens (ferry token create --name <who> --role <role>), then revoke this one: ferry token revoke ${id}`,
      '',
    ].join('\n') + '\n',
  );
}
