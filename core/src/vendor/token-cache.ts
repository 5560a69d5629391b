import { FerryError } from '../errors';

/** A bearer token as the cache holds it. */
export interface CachedToken {
  accessToken: string;
  tokenType: string;
  /** Epoch ms at which the server says the token expires. */
  expiresAt: number;
  /** Epoch ms from which the cache refreshes it (expiresAt minus the skew). */
  refreshAt: number;
  scope?: string;
}

/** The raw OAuth 2.0 token response. `expires_in` may be a number or a numeric string. */
export interface TokenResponse {
  access_token: string;
  token_type?: string;
  expires_in?: number | string;
  scope?: string;
  [k: string]: unknown;
}

/** Fetches a new token for one key (client credentials, JWT assertion, ...). */
export type TokenFetcher = (signal?: AbortSignal) => Promise<TokenResponse>;

export interface TokenCacheOptions {
  /** Refresh this long before expiry (default 60 s). Capped at half the token's lifetime. */
  skewMs?: number;
  /** Lifetime assumed when the server sends no `expires_in` (default 300 s). */
  defaultTtlMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

/** Parse `expires_in` (number or numeric string) into seconds; undefined when absent/invalid. */
export function parseExpiresIn(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
  if (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v)) return Number(v);
  return undefined;
}

/** A scope set in one canonical spelling: split on whitespace, de-duplicated, sorted ('' for none). */
export function normalizeScope(scope: string | readonly string[] | undefined): string {
  const list = (Array.isArray(scope) ? scope : String(scope ?? '').split(/\s+/))
    .flatMap((s) => String(s).split(/\s+/))
    .filter(Boolean);
  return [...new Set(list)].sort().join(' ');
}

/**
 * The cache key of one token: (vendor, tenant or token URL, client, scope set[, auth method]).
 * The scope is part of the key because a token is only good for the scopes it was granted: two
 * sources of the same client asking for different scopes (athena REST `athena/service/…` and a
 * FHIR source adding `system/Observation.read`) must not be handed each other's token. The same
 * scopes in another order or with repeats are the same key (one token shared).
 */
export function tokenCacheKey(k: {
  vendor: string;
  tenant: string;
  clientId: string;
  scope?: string | readonly string[];
  method?: string;
}): string {
  return [k.vendor, k.tenant, k.clientId, ...(k.method ? [k.method] : []), `scope=${normalizeScope(k.scope)}`].join(
    '|',
  );
}

/**
 * An in-memory OAuth token cache keyed by (vendor, tenant, client, scope set) — see {@link tokenCacheKey}. A token is refreshed once
 * `now >= expiresAt - skew`; concurrent callers share ONE refresh in flight per key (single-flight).
 * `invalidate(key, token)` after a 401 drops the token (only if it is still the cached one, so a
 * late 401 cannot throw away a token that was already refreshed).
 */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<CachedToken>>();
  private readonly skewMs: number;
  private readonly defaultTtlMs: number;
  private readonly now: () => number;
  /** Token requests made (for metrics and tests). */
  fetchCount = 0;

  constructor(opts: TokenCacheOptions = {}) {
    this.skewMs = opts.skewMs ?? 60_000;
    this.defaultTtlMs = opts.defaultTtlMs ?? 300_000;
    this.now = opts.now ?? Date.now;
  }

  /** The cached token if still fresh, without fetching. */
  peek(key: string): CachedToken | undefined {
    const t = this.tokens.get(key);
    return t && this.now() < t.refreshAt ? t : undefined;
  }

  /** A fresh token for `key`, fetching (single-flight) when absent or due for refresh. */
  async get(key: string, fetcher: TokenFetcher, signal?: AbortSignal): Promise<CachedToken> {
    const fresh = this.peek(key);
    if (fresh) return fresh;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.refresh(key, fetcher, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /** Drop the cached token for `key` (when `accessToken` is given, only if it is still that one). */
  invalidate(key: string, accessToken?: string): void {
    const t = this.tokens.get(key);
    if (t && (accessToken === undefined || t.accessToken === accessToken)) this.tokens.delete(key);
  }

  clear(): void {
    this.tokens.clear();
  }

  private async refresh(key: string, fetcher: TokenFetcher, signal?: AbortSignal): Promise<CachedToken> {
    this.fetchCount++;
    const started = this.now();
    const res = await fetcher(signal);
    if (!res || typeof res.access_token !== 'string' || !res.access_token) {
      throw new FerryError('VENDOR_TOKEN_INVALID', 'token endpoint answered without an access_token', {
        kind: 'transient',
        retryable: true,
      });
    }
    const secs = parseExpiresIn(res.expires_in);
    const ttl = secs === undefined ? this.defaultTtlMs : secs * 1000;
    const skew = Math.min(this.skewMs, ttl / 2);
    const tok: CachedToken = {
      accessToken: res.access_token,
      tokenType: typeof res.token_type === 'string' && res.token_type ? res.token_type : 'Bearer',
      expiresAt: started + ttl,
      refreshAt: started + ttl - skew,
      scope: typeof res.scope === 'string' ? res.scope : undefined,
    };
    this.tokens.set(key, tok);
    return tok;
  }
}
