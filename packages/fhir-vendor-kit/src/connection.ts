/**
 * One authenticated FHIR connection to a vendor tenant (Epic base URL, Cerner service root), on the
 * shared vendor HTTP kit of @ferry/core (VendorHttpClient: token cache with single-flight refresh,
 * 401 replay, retries with Retry-After, rate limiter, X-Request-Id).
 *
 * Auth methods:
 * - `private_key_jwt` (Epic always, Cerner optionally): SMART Backend Services, a signed RS384/ES384
 *   client assertion posted as `client_credentials`;
 * - `client_secret_basic` (Cerner system accounts): HTTP Basic with every `system/...` scope listed.
 * The token URL is discovered from `{base}/.well-known/smart-configuration` (then `metadata`),
 * never derived, unless `tokenUrl` is configured.
 */
import {
  defineSchema,
  FerryError,
  RateLimiter,
  type TokenCache,
  tokenCacheKey,
  VendorHttpClient,
  postTokenRequest,
  clientCredentialsFetcher,
  type SchemaType,
  type TokenFetcher,
} from '@ferry/core';
import { randomUUID } from 'node:crypto';
import type { Logger } from '@ferry/core';
import { loadSigningKey, signClientAssertion, type SigningKey } from './keys';
import { VendorConnections } from './vendor-connections';

function requiredUrl(v: unknown): void {
  if (typeof v !== 'string' || !/^https?:\/\/[^\s/]+/.test(v)) throw new Error('required: an http(s) URL');
}
function optionalUrl(v: unknown): void {
  if (v !== '' && (typeof v !== 'string' || !/^https?:\/\/[^\s/]+/.test(v)))
    throw new Error("an http(s) URL, or '' to discover it");
}
function requiredString(v: unknown): void {
  if (typeof v !== 'string' || !v.trim()) throw new Error('required');
}

function idPrefixFormat(v: unknown): void {
  if (typeof v !== 'string' || (v !== '' && !/^[A-Za-z0-9][A-Za-z0-9.]{0,20}$/.test(v)))
    throw new Error('must be letters, digits or dots (max 21), e.g. epic-north -> use epicnorth');
}

/** Convict schema of a connection (mounted at the top of each epic / cerner source and sink entry). */
export function connectionSchema(defaults: {
  method: 'private_key_jwt' | 'client_secret_basic';
  refreshSkewSec: number;
}) {
  return defineSchema({
    baseUrl: {
      doc: 'FHIR R4 base URL (Epic: per health system; Cerner: service root with tenant)',
      format: requiredUrl,
      default: '',
    },
    idPrefix: {
      doc: "Prefix of canonical ids from this tenant ('' = epic / cerner); give each tenant its own when several are connected",
      format: idPrefixFormat,
      default: '',
    },
    clientId: {
      doc: 'Client id registered with the vendor (differs per environment)',
      format: requiredString,
      default: '',
    },
    tokenUrl: {
      doc: "Token endpoint; '' = discover from {baseUrl}/.well-known/smart-configuration",
      format: optionalUrl,
      default: '',
    },
    auth: {
      method: {
        doc: 'private_key_jwt (SMART Backend Services) or client_secret_basic (Cerner system account)',
        format: ['private_key_jwt', 'client_secret_basic'],
        default: defaults.method,
      },
      privateKey: { doc: 'Signing key: PEM (PKCS#8) or JWK JSON text', format: String, default: '', sensitive: true },
      privateKeyFile: { doc: 'Signing key file (PEM or JWK JSON)', format: String, default: '' },
      privateKeyEnv: { doc: 'Environment variable holding the signing key', format: String, default: '' },
      kid: { doc: "Key id in the JWT header ('' = the JWK's kid or thumbprint)", format: String, default: '' },
      alg: { doc: 'Assertion algorithm', format: ['RS384', 'ES384'], default: 'RS384' },
      jku: { doc: "JWK Set URL put in the JWT header ('' = none)", format: String, default: '' },
      clientSecret: { doc: 'Client secret (client_secret_basic)', format: String, default: '', sensitive: true },
      scopes: {
        doc: 'Scopes requested, each explicitly (system/Patient.read ...)',
        format: Array,
        default: [] as string[],
      },
      refreshSkewSec: {
        doc: 'Refresh a token this many seconds before it expires',
        format: 'nat',
        default: defaults.refreshSkewSec,
      },
    },
    rateLimit: {
      qps: {
        doc: 'Client-side requests per second to this tenant (none published by the vendor)',
        format: Number,
        default: 10,
      },
      burst: { doc: 'Burst size', format: 'nat', default: 10 },
    },
    http: {
      timeoutMs: { doc: 'Per attempt', format: 'nat', default: 30_000 },
      maxAttempts: { doc: 'Attempts per call (retries on 429/5xx/network)', format: 'nat', default: 4 },
      maxRetryAfterMs: { doc: 'Longest Retry-After waited inside one call', format: 'nat', default: 60_000 },
    },
  });
}

/** A connection's config (derived from connectionSchema). */
export type ConnectionConfig = SchemaType<ReturnType<typeof connectionSchema>>;

/** Find the token endpoint from the SMART configuration (then the CapabilityStatement's oauth-uris). */
export async function discoverTokenUrl(vendor: string, baseUrl: string, timeoutMs = 10_000): Promise<string> {
  const http = new VendorHttpClient({ vendor, baseUrl, timeoutMs, retry: { maxAttempts: 3, initialDelayMs: 200 } });
  try {
    const conf = await http.get<{ token_endpoint?: string }>('.well-known/smart-configuration', undefined, {
      headers: { Accept: 'application/json' },
    });
    if (conf?.token_endpoint) return conf.token_endpoint;
  } catch (e) {
    // An outage is reported as such; a missing or non-JSON document falls back to the CapabilityStatement.
    if (FerryError.is(e) && e.retryable && e.code !== 'FERRY_E_VENDOR_BAD_RESPONSE') throw e;
  }
  try {
    const cap = await http.get<any>('metadata', undefined, { headers: { Accept: 'application/fhir+json' } });
    for (const rest of cap?.rest ?? [])
      for (const ext of rest?.security?.extension ?? [])
        if (String(ext.url).endsWith('oauth-uris'))
          for (const e of ext.extension ?? []) if (e.url === 'token' && e.valueUri) return e.valueUri;
  } catch (e) {
    if (FerryError.is(e) && e.retryable) throw e;
  }
  throw new FerryError(
    'CONFIG_TOKEN_URL_NOT_FOUND',
    `${vendor}: no token endpoint in ${baseUrl}/.well-known/smart-configuration nor in its CapabilityStatement`,
    { kind: 'config', retryable: false },
  );
}

/** What each vendor says when an assertion is refused, to make `invalid_client` actionable. */
const ASSERTION_HINT =
  'the server does not say why; check that aud is exactly the token URL, exp is at most 5 minutes ahead (clock skew), the jti is not reused, ' +
  'the kid/public key (or JKU) is registered and active for this client id and environment (registrations can take hours to propagate)';

export class VendorConnection {
  readonly http: VendorHttpClient;
  readonly baseUrl: string;
  readonly tokenCache: TokenCache;
  readonly key: string;
  /** (vendor, tenant, client): the scope of one-export-at-a-time. */
  readonly clientKey: string;
  private tokenUrl?: string;
  private signingKey?: Promise<SigningKey>;

  /** The engine's shared tokens, buckets and running exports (a connection made without them has its own). */
  readonly shared: VendorConnections;

  constructor(
    readonly vendor: string,
    readonly cfg: ConnectionConfig,
    readonly logger?: Logger,
    opts: { fetchImpl?: typeof fetch; shared?: VendorConnections } = {},
  ) {
    if (!cfg.baseUrl)
      throw new FerryError('CONFIG_BASE_URL', `${vendor}: baseUrl is required`, { kind: 'config', retryable: false });
    if (!cfg.clientId)
      throw new FerryError('CONFIG_CLIENT_ID', `${vendor}: clientId is required`, { kind: 'config', retryable: false });
    this.baseUrl = cfg.baseUrl.replace(/\/+$/, '');
    this.tokenUrl = cfg.tokenUrl || undefined;
    this.shared = opts.shared ?? new VendorConnections();
    this.tokenCache = this.shared.tokenCache(cfg.auth.refreshSkewSec * 1000);
    this.clientKey = `${vendor}|${this.baseUrl}|${cfg.clientId}`;
    // One token per (vendor, tenant, client, auth method, scope set): a token for other scopes is not interchangeable.
    this.key = tokenCacheKey({
      vendor,
      tenant: this.baseUrl,
      clientId: cfg.clientId,
      method: cfg.auth.method,
      scope: cfg.auth.scopes,
    });
    this.http = new VendorHttpClient({
      vendor,
      baseUrl: this.baseUrl,
      auth: { key: this.key, cache: this.tokenCache, fetcher: this.fetcher() },
      limiter: this.shared.limiter(
        `rate|${cfg.rateLimit.qps}/${cfg.rateLimit.burst}`,
        () => new RateLimiter({ ratePerSec: cfg.rateLimit.qps, burst: cfg.rateLimit.burst }),
      ).limiter,
      limiterKey: `${vendor}|${new URL(this.baseUrl).host}`,
      retry: { maxAttempts: cfg.http.maxAttempts, maxRetryAfterMs: cfg.http.maxRetryAfterMs, initialDelayMs: 200 },
      timeoutMs: cfg.http.timeoutMs,
      logger,
      headers: { Accept: 'application/fhir+json' },
      fetchImpl: opts.fetchImpl,
    });
  }

  async resolveTokenUrl(): Promise<string> {
    if (!this.tokenUrl) this.tokenUrl = await discoverTokenUrl(this.vendor, this.baseUrl, this.cfg.http.timeoutMs);
    return this.tokenUrl;
  }

  /** The bearer token (cached; refreshed ahead of expiry). */
  async accessToken(signal?: AbortSignal): Promise<string> {
    return (await this.tokenCache.get(this.key, this.fetcher(), signal)).accessToken;
  }

  invalidateToken(token?: string): void {
    this.tokenCache.invalidate(this.key, token);
  }

  private fetcher(): TokenFetcher {
    const a = this.cfg.auth;
    if (a.scopes.some((s) => s.includes('*')))
      throw new FerryError(
        'CONFIG_SCOPE_WILDCARD',
        `${this.vendor}: list every scope explicitly (no wildcards): ${a.scopes.filter((s) => s.includes('*')).join(' ')}`,
        { kind: 'config', retryable: false },
      );
    if (a.method === 'private_key_jwt' && !a.privateKey && !a.privateKeyFile && !a.privateKeyEnv)
      throw new FerryError(
        'CONFIG_SIGNING_KEY',
        `${this.vendor}: private_key_jwt needs auth.privateKeyFile, auth.privateKey or auth.privateKeyEnv`,
        { kind: 'config', retryable: false },
      );
    if (a.method === 'client_secret_basic') {
      if (!a.clientSecret)
        throw new FerryError(
          'CONFIG_CLIENT_SECRET',
          `${this.vendor}: auth.clientSecret is required for client_secret_basic`,
          { kind: 'config', retryable: false },
        );
      return async (signal) => {
        const f = clientCredentialsFetcher({
          tokenUrl: await this.resolveTokenUrl(),
          clientId: this.cfg.clientId,
          clientSecret: a.clientSecret,
          scope: a.scopes.join(' ') || undefined,
          vendor: this.vendor,
          timeoutMs: this.cfg.http.timeoutMs,
        });
        return this.explain(f(signal), 'client credentials');
      };
    }
    return async (signal) => {
      const tokenUrl = await this.resolveTokenUrl();
      this.signingKey ??= loadSigningKey({
        privateKey: a.privateKey,
        privateKeyFile: a.privateKeyFile,
        privateKeyEnv: a.privateKeyEnv,
        kid: a.kid,
        alg: a.alg,
      });
      const key = await this.signingKey.catch((e) => {
        this.signingKey = undefined;
        throw e;
      });
      const assertion = await signClientAssertion(key, {
        clientId: this.cfg.clientId,
        tokenUrl,
        jku: a.jku || undefined,
      });
      return exchangeAssertion({
        vendor: this.vendor,
        tokenUrl,
        assertion,
        scopes: a.scopes,
        timeoutMs: this.cfg.http.timeoutMs,
        clientId: this.cfg.clientId,
        logger: this.logger,
        signal,
      });
    };
  }

  private explain<T>(p: Promise<T>, what: string): Promise<T> {
    return explainTokenError(p, what, this.vendor, this.cfg.clientId, this.logger);
  }
}

/** Post a signed client assertion (`client_credentials` + jwt-bearer assertion type) to the token endpoint. */
export function exchangeAssertion(o: {
  vendor: string;
  tokenUrl: string;
  assertion: string;
  scopes?: string[];
  timeoutMs?: number;
  clientId: string;
  logger?: Logger;
  signal?: AbortSignal;
}) {
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: o.assertion,
    ...(o.scopes?.length ? { scope: o.scopes.join(' ') } : {}),
  });
  const headers = {
    'Content-Type': 'application/x-www-form-urlencoded',
    Accept: 'application/json',
    'X-Request-Id': randomUUID(),
  };
  return explainTokenError(
    postTokenRequest(o.vendor, o.tokenUrl, headers, form, o.timeoutMs ?? 30_000, fetch, o.signal),
    'client assertion',
    o.vendor,
    o.clientId,
    o.logger,
  );
}

/** Turn a refused token request into a config error that says what to check. */
export async function explainTokenError<T>(
  p: Promise<T>,
  what: string,
  vendor: string,
  clientId: string,
  logger?: Logger,
): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (FerryError.is(e) && e.code === 'FERRY_E_VENDOR_TOKEN_REJECTED') {
      const oauthError = (e.details?.oauthError as string | undefined) ?? 'rejected';
      const hint =
        oauthError === 'invalid_client' && what === 'client assertion'
          ? `; ${ASSERTION_HINT}`
          : oauthError === 'invalid_client'
            ? '; check the client id and secret of the system account'
            : oauthError === 'invalid_scope'
              ? '; request only scopes granted to the system account, each listed explicitly'
              : '';
      const err = new FerryError(
        'VENDOR_TOKEN_REJECTED',
        `${vendor} token endpoint refused the ${what} for client ${clientId}: ${oauthError}${hint}`,
        {
          kind: 'config',
          retryable: false,
          cause: e,
          details: { ...e.details, clientId },
        },
      );
      logger?.error('vendor token request refused', { vendor, clientId, oauthError, errorCode: err.code });
      throw err;
    }
    throw e;
  }
}
