/**
 * The athenaOne connection both athena plugins share (reference 1.1, 1.2, 0): hosts per
 * environment, OAuth 2.0 client credentials with HTTP Basic, one token per (environment, client,
 * scope set) cached per engine (`VendorConnections`) with single-flight refresh ahead of expiry, a
 * token-bucket limit per practice, and the vendor HTTP policy from `@ferry/core` (retries, Retry-After, 401 replay,
 * X-Request-Id, no blind retry of writes).
 */
import { readFileSync } from 'node:fs';
import {
  clientCredentialsFetcher,
  configError,
  defineSchema,
  FerryError,
  RateLimiter,
  type TokenCache,
  tokenCacheKey,
  VendorHttpClient,
  type Logger,
  type QueryValue,
  type SchemaType,
} from '@ferry/core';
import { VendorConnections } from '../vendor-connections';

export const AthenaHosts = {
  preview: 'https://api.preview.platform.athenahealth.com',
  production: 'https://api.platform.athenahealth.com',
} as const;

/** Client-chosen defaults (go-athenahealth, reference 0): preview 5 QPS, production 100 QPS. */
export const defaultQps = { preview: 5, production: 100 } as const;

const stringOrNumber = (name: string) => (v: unknown) => {
  if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`${name} must be a string or a number`);
};

/** Connection keys, shared by every athena source and sink entry. */
export const athenaConnectionSchema = defineSchema({
  environment: { doc: 'preview (sandbox) or production', format: ['preview', 'production'], default: 'preview' },
  baseUrl: {
    doc: 'Override the host (a proxy or the simulator), e.g. http://127.0.0.1:8089; empty = the environment host',
    format: String,
    default: '',
  },
  clientId: { doc: 'OAuth client id (default: env ATHENA_CLIENT_ID)', format: String, default: '' },
  clientSecret: {
    doc: 'OAuth client secret (use ${ENV} or clientSecret_FILE; default: env ATHENA_CLIENT_SECRET or ATHENA_CLIENT_SECRET_FILE)',
    format: String,
    default: '',
    sensitive: true,
  },
  scope: { doc: 'Scopes requested with the token', format: String, default: 'athena/service/Athenanet.MDP.*' },
  practiceId: {
    doc: 'athena practice id (195900 = shared preview practice)',
    format: stringOrNumber('practiceId'),
    default: '' as string | number,
  },
  rateLimit: {
    qps: {
      doc: 'Client-side requests per second per practice (0 = 5 preview / 100 production)',
      format: Number,
      default: 0,
    },
    burst: { doc: 'Bucket size (0 = same as qps)', format: 'nat', default: 0 },
  },
  /** Named callRetry: on sinks, `retry` is the engine's delivery retry policy. */
  callRetry: {
    maxAttempts: { doc: 'Attempts per HTTP call, first included', format: 'nat', default: 4 },
    initialDelayMs: { doc: 'First backoff delay', format: 'nat', default: 500 },
    maxDelayMs: { doc: 'Longest backoff delay', format: 'nat', default: 30_000 },
    maxRetryAfterMs: { doc: 'Longest Retry-After waited for inside one call', format: 'nat', default: 60_000 },
  },
  timeoutMs: { doc: 'Timeout per HTTP attempt', format: 'nat', default: 30_000 },
  tokenSkewMs: {
    doc: 'Refresh the token this long before it expires (capped at half its lifetime)',
    format: 'nat',
    default: 60_000,
  },
});

export type AthenaConnectionConfig = SchemaType<typeof athenaConnectionSchema>;

/** Resolve the secret from config, then env, then `*_FILE`. */
function resolveSecret(value: string, envName: string, env: NodeJS.ProcessEnv): string {
  if (value) return value;
  if (env[envName]) return env[envName] as string;
  const file = env[`${envName}_FILE`];
  if (file) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw configError(
        'ATHENA_SECRET_FILE',
        `cannot read ${envName}_FILE: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
  }
  return '';
}

export class AthenaConnection {
  readonly host: string;
  readonly practiceId: string;
  readonly tokenUrl: string;
  readonly fhirBase: string;
  readonly tokenCache: TokenCache;
  readonly limiter: RateLimiter;
  /** REST calls, relative to `/v1/{practiceid}`. */
  readonly rest: VendorHttpClient;
  /** FHIR calls (athena-fhir runs fhir-kit-client under this policy with `execute`). */
  readonly fhir: VendorHttpClient;
  readonly tokenKey: string;

  constructor(
    readonly config: AthenaConnectionConfig,
    readonly logger: Logger,
    /**
     * The engine's shared tokens and buckets (`@inject(vendorConnectionsToken)` in a component): every
     * source/sink (REST or FHIR) with the same credentials shares one token, every caller of a practice
     * one bucket. Without it (a tool, a test) this connection has its own.
     */
    shared: VendorConnections = new VendorConnections(),
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const clientId = resolveSecret(config.clientId, 'ATHENA_CLIENT_ID', env);
    const clientSecret = resolveSecret(config.clientSecret, 'ATHENA_CLIENT_SECRET', env);
    if (!clientId || !clientSecret)
      throw configError(
        'ATHENA_NO_CREDENTIALS',
        'athena clientId and clientSecret are required (config, ${ENV}, *_FILE or ATHENA_CLIENT_ID/ATHENA_CLIENT_SECRET)',
      );
    this.practiceId = String(config.practiceId ?? '').trim();
    if (!/^\d+$/.test(this.practiceId))
      throw configError('ATHENA_PRACTICE', 'athena practiceId must be a number such as 195900');
    this.host = (config.baseUrl || AthenaHosts[config.environment]).replace(/\/+$/, '');
    this.tokenUrl = `${this.host}/oauth2/v1/token`;
    this.fhirBase = `${this.host}/fhir/r4`;
    this.tokenCache = shared.tokenCache(config.tokenSkewMs);
    // One token per (environment, client, scope set): a REST source and a FHIR source asking for
    // more scopes on the same client must not get each other's token (reference 1.2, 2.1).
    this.tokenKey = tokenCacheKey({ vendor: 'athena', tenant: this.tokenUrl, clientId, scope: config.scope });
    const qps = config.rateLimit.qps > 0 ? config.rateLimit.qps : defaultQps[config.environment];
    const limiterKey = `athena|${this.host}|${this.practiceId}`;
    const { limiter, created } = shared.limiter(
      limiterKey,
      () => new RateLimiter({ ratePerSec: qps, burst: config.rateLimit.burst || Math.max(1, Math.floor(qps)) }),
    );
    if (!created && Math.abs(limiter.ratePerSec - qps) > 1e-9) {
      // One bucket per practice is the point: the first configured rate wins, loudly.
      logger.warn('athena rate limit for this practice is already set by another source/sink; keeping it', {
        practiceId: this.practiceId,
        qps: limiter.ratePerSec,
        ignoredQps: qps,
      });
    }
    this.limiter = limiter;
    const auth = {
      key: this.tokenKey,
      cache: this.tokenCache,
      fetcher: clientCredentialsFetcher({
        tokenUrl: this.tokenUrl,
        clientId,
        clientSecret,
        scope: config.scope,
        authMethod: 'basic',
        timeoutMs: config.timeoutMs,
        vendor: 'athena',
      }),
    };
    const common = {
      auth,
      limiter,
      limiterKey,
      retry: config.callRetry,
      timeoutMs: config.timeoutMs,
      logger,
      isThrottled: (status: number, text: string) => status === 403 && /over qps/i.test(text),
    };
    this.rest = new VendorHttpClient({ vendor: 'athena', baseUrl: `${this.host}/v1/${this.practiceId}`, ...common });
    this.fhir = new VendorHttpClient({
      vendor: 'athena-fhir',
      baseUrl: this.fhirBase,
      ...common,
      headers: { Accept: 'application/fhir+json' },
    });
  }

  /** `a-1.Practice-{id}`: the value every FHIR search carries as `ah-practice` (reference 2.2). */
  get fhirPracticeOrg(): string {
    return `a-1.Practice-${this.practiceId}`;
  }

  /**
   * Resolve a `next` link of a list envelope. athena's are relative and include `/v1/{practiceid}`
   * (reference 1.6): they are resolved against the host, never re-prefixed.
   */
  nextUrl(next: string): string {
    if (/^https?:\/\//i.test(next)) return next;
    return `${this.host}${next.startsWith('/') ? '' : '/'}${next}`;
  }

  async get<T = any>(
    path: string,
    query?: Record<string, QueryValue>,
    opts: { accept?: number[]; signal?: AbortSignal } = {},
  ): Promise<T> {
    const res = await this.rest.request({ url: path, query, accept: opts.accept, signal: opts.signal });
    return res.json<T>();
  }

  /**
   * Every page of a list endpoint, following `next` until it is absent. `onPage` gets each page's
   * items as they arrive (so a caller can store them page by page).
   */
  async *pages<T = Record<string, any>>(
    path: string,
    listKey: string,
    query: Record<string, QueryValue> = {},
    opts: { signal?: AbortSignal; pageDelayMs?: number; maxPages?: number } = {},
  ): AsyncGenerator<{ items: T[]; totalcount?: number; page: number; hasNext: boolean }> {
    let url: string | undefined = path;
    let q: Record<string, QueryValue> | undefined = query;
    let page = 0;
    while (url) {
      page++;
      const body: any = (await this.rest.request({ url, query: q, signal: opts.signal })).json();
      const items = (Array.isArray(body) ? body : (body?.[listKey] ?? [])) as T[];
      const next = typeof body?.next === 'string' && body.next ? body.next : undefined;
      const hasNext = !!next && (opts.maxPages === undefined || page < opts.maxPages);
      yield { items, totalcount: num(body?.totalcount), page, hasNext };
      if (!hasNext) break;
      url = this.nextUrl(next!);
      q = undefined;
      if (opts.pageDelayMs) await new Promise((r) => setTimeout(r, opts.pageDelayMs));
    }
  }

  /**
   * A form-encoded write (reference 1.3). Not idempotent on athena: never blind-retried (the
   * caller reconciles by reading). A 200 `{success:false}` body is a refused write (reference 1.8).
   */
  async write<T = any>(
    method: 'POST' | 'PUT' | 'DELETE',
    path: string,
    form: Record<string, QueryValue>,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T> {
    const res = await this.rest.request({ method, url: path, form, idempotent: false, signal: opts.signal });
    const body = res.json<any>();
    if (
      body &&
      !Array.isArray(body) &&
      typeof body === 'object' &&
      (body.success === false || body.success === 'false')
    ) {
      throw new FerryError(
        'ATHENA_WRITE_REFUSED',
        `athena ${method} ${res.url ? new URL(res.url).pathname : path} refused: success=false`,
        {
          kind: 'input',
          retryable: false,
          details: {
            errormessage: typeof body.errormessage === 'string' ? body.errormessage.slice(0, 500) : undefined,
            requestId: res.requestId,
          },
        },
      );
    }
    return body as T;
  }
}

const num = (v: unknown) =>
  v === undefined || v === null || v === '' || Number.isNaN(Number(v)) ? undefined : Number(v);

/** The reason text of an athena error body (`error` / `detailedmessage`), from a FerryError's details. */
export function athenaErrorText(e: unknown): string {
  const body = (e as FerryError)?.details?.body;
  if (typeof body !== 'string') return '';
  try {
    const j = JSON.parse(body);
    return [j.error, j.detailedmessage].filter((x) => typeof x === 'string').join(' ');
  } catch {
    return body;
  }
}

/** True when a 403 says the changed-data feed has no subscription (reference 1.5). */
export function isNotSubscribed(e: unknown): boolean {
  return FerryError.is(e) && e.details?.status === 403 && /subscription/i.test(athenaErrorText(e));
}
