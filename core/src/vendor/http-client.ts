import { randomUUID } from 'node:crypto';
import type { Logger } from '../plugin/api';
import { FerryError } from '../errors';
import { abortableSleep, type RateLimiter } from './rate-limiter';
import type { CachedToken, TokenCache, TokenFetcher } from './token-cache';

/** Where a client gets its bearer token: one cache entry per (vendor, tenant, client). */
export interface VendorAuth {
  key: string;
  cache: TokenCache;
  fetcher: TokenFetcher;
}

export interface RetryOptions {
  /** Attempts in total, first included (default 4). */
  maxAttempts: number;
  /** First backoff delay (default 500 ms). */
  initialDelayMs: number;
  /** Cap of one backoff delay (default 30 s). */
  maxDelayMs: number;
  /** Default 2. */
  multiplier: number;
  /** Fraction (0..1) of each delay randomised (default 0.3). */
  jitter: number;
  /** A `Retry-After` longer than this is not waited for: the call fails retryable (default 60 s). */
  maxRetryAfterMs: number;
}

export const defaultRetryOptions: RetryOptions = {
  maxAttempts: 4,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 0.3,
  maxRetryAfterMs: 60_000,
};

export interface VendorHttpClientOptions {
  /** Vendor label for errors and logs ('athena', 'epic'). */
  vendor: string;
  /** Base for relative request URLs. */
  baseUrl?: string;
  auth?: VendorAuth;
  /** Client-side rate limit; every attempt (retries included) takes a token of `limiterKey`. */
  limiter?: RateLimiter;
  limiterKey?: string;
  retry?: Partial<RetryOptions>;
  /** Per attempt (default 30 s). */
  timeoutMs?: number;
  logger?: Logger;
  headers?: Record<string, string>;
  /** Statuses retried (default 408, 429, 500, 502, 503, 504). */
  retryStatuses?: number[];
  fetchImpl?: typeof fetch;
  /**
   * Recognise a throttled answer that is not a 429 (athena's legacy `403 Developer Over Qps`):
   * it is then handled exactly like a 429.
   */
  isThrottled?: (status: number, text: string) => boolean;
}

export type QueryValue = string | number | boolean | undefined | null | (string | number | boolean)[];

export interface VendorRequest {
  /** Default GET. */
  method?: string;
  /** Absolute, or relative to the client's baseUrl ('/patients/1' or 'Patient?x=1'). */
  url: string;
  query?: Record<string, QueryValue>;
  headers?: Record<string, string>;
  /** A raw body. */
  body?: string | Buffer;
  /** A JSON body (Content-Type application/json unless set). */
  json?: unknown;
  /** An application/x-www-form-urlencoded body. */
  form?: Record<string, QueryValue>;
  /**
   * May the call be sent again after an ambiguous failure (5xx, timeout, reset)? Default: true for
   * GET/HEAD/OPTIONS, false for everything else. 429 and refused connections are retried either
   * way (the server did not act on them); a 401 is replayed once either way.
   */
  idempotent?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Statuses handed back to the caller instead of thrown (e.g. [403, 404]). 2xx always are. */
  accept?: number[];
  /** Don't send the bearer token (e.g. pre-signed download URLs). */
  noAuth?: boolean;
}

export interface ExecuteInfo {
  method: string;
  /** For logs and errors (no query string: it may hold PHI). */
  path: string;
  idempotent?: boolean;
  signal?: AbortSignal;
  accept?: number[];
  timeoutMs?: number;
  noAuth?: boolean;
}

/** What one attempt got: `value` is handed back on success; `text` (error body) is kept in error details. */
export interface AttemptOutcome<T> {
  status: number;
  headers: Headers;
  value?: T;
  text?: string;
}

export interface ExecuteResult<T> {
  value: T;
  status: number;
  headers: Headers;
  requestId: string;
  attempts: number;
}

export interface VendorResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The X-Request-Id we sent on the last attempt. */
  requestId: string;
  attempts: number;
  url: string;
  json<T = any>(): T;
}

/** Parse a Retry-After header (delta-seconds or HTTP-date) into ms from `now`; undefined if absent/bad. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (!v) return undefined;
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

/** Exponential backoff with jitter for attempt n (1-based: the delay after the n-th failure). */
export function backoffDelay(
  n: number,
  o: Pick<RetryOptions, 'initialDelayMs' | 'maxDelayMs' | 'multiplier' | 'jitter'>,
  rnd = Math.random,
): number {
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.multiplier, Math.max(0, n - 1)));
  const j = Math.min(1, Math.max(0, o.jitter));
  return Math.max(0, Math.round(base * (1 - j + rnd() * 2 * j)));
}

const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Network error codes for which the request certainly did not reach the server. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

function appendQuery(params: URLSearchParams, query: Record<string, QueryValue>): void {
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const x of v) params.append(k, String(x));
    else params.append(k, String(v));
  }
}

/** Map a non-2xx HTTP status to a FerryError (never carrying the body in the message: it may hold PHI). */
export function httpStatusError(
  vendor: string,
  status: number,
  info: { method: string; path: string; requestId: string; body?: string; retryAfterMs?: number; attempts?: number },
): FerryError {
  const details: Record<string, unknown> = {
    vendor,
    status,
    method: info.method,
    path: info.path,
    requestId: info.requestId,
    attempts: info.attempts,
    retryAfterMs: info.retryAfterMs,
    body: info.body ? info.body.slice(0, 2000) : undefined,
  };
  const what = `${vendor} ${info.method} ${info.path} answered HTTP ${status}`;
  if (status === 401) return new FerryError('VENDOR_UNAUTHORIZED', what, { kind: 'config', retryable: false, details });
  if (status === 403) return new FerryError('VENDOR_FORBIDDEN', what, { kind: 'input', retryable: false, details });
  if (status === 404) return new FerryError('VENDOR_NOT_FOUND', what, { kind: 'input', retryable: false, details });
  if (status === 409) return new FerryError('VENDOR_CONFLICT', what, { kind: 'input', retryable: false, details });
  if (status === 408 || status === 425 || status === 429 || status >= 500) {
    return new FerryError(status === 429 ? 'VENDOR_THROTTLED' : 'VENDOR_UNAVAILABLE', what, {
      kind: 'transient',
      retryable: true,
      details,
    });
  }
  return new FerryError('VENDOR_REJECTED', what, { kind: 'input', retryable: false, details });
}

/**
 * The HTTP call policy every vendor plugin shares, around Node's fetch:
 * - bearer token from a {@link TokenCache} (single-flight refresh); a 401 invalidates it,
 *   re-authenticates and replays the call once; a second 401 is a hard error;
 * - client-side rate limit (token bucket per key) taken for every attempt;
 * - retries with exponential backoff + jitter on 408/429/5xx and network errors, honouring
 *   `Retry-After` (seconds or HTTP-date) and pausing the whole limiter key on a 429;
 * - no blind retry of non-idempotent calls: after an ambiguous failure the error is thrown with
 *   `details.outcomeUnknown = true` so the caller can reconcile by reading;
 * - `X-Request-Id: <uuid>` on every attempt, a timeout per attempt;
 * - errors mapped to FerryError (`retryable` set).
 */
export class VendorHttpClient {
  readonly vendor: string;
  readonly baseUrl?: string;
  private readonly retry: RetryOptions;
  private readonly timeoutMs: number;
  private readonly retryStatuses: Set<number>;
  private readonly fetchImpl: typeof fetch;
  /** Attempts sent (for metrics and tests). */
  requestCount = 0;

  constructor(private readonly opts: VendorHttpClientOptions) {
    this.vendor = opts.vendor;
    this.baseUrl = opts.baseUrl;
    this.retry = { ...defaultRetryOptions, ...(opts.retry ?? {}) };
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.retryStatuses = new Set(opts.retryStatuses ?? [408, 429, 500, 502, 503, 504]);
    this.fetchImpl = opts.fetchImpl ?? fetch;
  }

  /** Resolve a (possibly relative) URL against the base. */
  resolveUrl(url: string, query?: Record<string, QueryValue>): URL {
    let u: URL;
    if (/^https?:\/\//i.test(url)) u = new URL(url);
    else {
      if (!this.baseUrl)
        throw new FerryError('VENDOR_NO_BASE_URL', `${this.vendor}: relative URL without a base URL`, {
          kind: 'internal',
        });
      const base = this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`;
      u = new URL(url.replace(/^\//, ''), base);
    }
    if (query) appendQuery(u.searchParams, query);
    return u;
  }

  async get<T = any>(url: string, query?: Record<string, QueryValue>, extra: Partial<VendorRequest> = {}): Promise<T> {
    const res = await this.request({ ...extra, method: 'GET', url, query });
    return res.json<T>();
  }

  async request(req: VendorRequest): Promise<VendorResponse> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = this.resolveUrl(req.url, req.query);
    const path = url.pathname;

    let body: string | Buffer | undefined = req.body;
    const headers: Record<string, string> = {
      Accept: 'application/json',
      ...(this.opts.headers ?? {}),
      ...(req.headers ?? {}),
    };
    const hasHeader = (n: string) => Object.keys(headers).some((k) => k.toLowerCase() === n.toLowerCase());
    if (req.form) {
      const p = new URLSearchParams();
      appendQuery(p, req.form);
      body = p.toString();
      if (!hasHeader('content-type')) headers['Content-Type'] = 'application/x-www-form-urlencoded';
    } else if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      if (!hasHeader('content-type')) headers['Content-Type'] = 'application/json';
    }

    const out = await this.execute<string>(
      {
        method,
        path,
        idempotent: req.idempotent,
        signal: req.signal,
        accept: req.accept,
        timeoutMs: req.timeoutMs,
        noAuth: req.noAuth,
      },
      async (h, signal) => {
        const res = await this.fetchImpl(url, {
          method,
          headers: { ...headers, ...h },
          body,
          signal,
          redirect: 'follow',
        });
        const text = await res.text().catch(() => '');
        return { status: res.status, headers: res.headers, value: text, text };
      },
    );
    const text = out.value;
    return {
      status: out.status,
      headers: out.headers,
      text,
      requestId: out.requestId,
      attempts: out.attempts,
      url: url.toString(),
      json: <T>() => {
        try {
          return (text ? JSON.parse(text) : undefined) as T;
        } catch (e) {
          throw new FerryError(
            'VENDOR_BAD_RESPONSE',
            `${this.vendor} ${method} ${path} answered HTTP ${out.status} with a body that is not JSON`,
            {
              kind: 'transient',
              retryable: true,
              cause: e,
              details: { vendor: this.vendor, status: out.status, requestId: out.requestId },
            },
          );
        }
      },
    };
  }

  /**
   * Run any HTTP library's call under this client's policy (token, rate limit, X-Request-Id,
   * timeout, 401 replay, retries, error mapping). `send` performs ONE attempt with the headers and
   * signal it is given and reports the status it got; it throws only for network failures.
   */
  async execute<T>(
    info: ExecuteInfo,
    send: (headers: Record<string, string>, signal: AbortSignal) => Promise<AttemptOutcome<T>>,
  ): Promise<ExecuteResult<T>> {
    const method = info.method.toUpperCase();
    const path = info.path;
    const idempotent = info.idempotent ?? IDEMPOTENT_METHODS.has(method);
    const log = this.opts.logger;
    let attempt = 0;
    let replayed401 = false;
    for (;;) {
      attempt++;
      if (info.signal?.aborted) throw this.abortError(info.signal, method, path);
      const requestId = randomUUID();
      const h: Record<string, string> = { 'X-Request-Id': requestId };

      let token: CachedToken | undefined;
      if (this.opts.auth && !info.noAuth) {
        try {
          token = await this.opts.auth.cache.get(this.opts.auth.key, this.opts.auth.fetcher, info.signal);
        } catch (e) {
          const fe = FerryError.from(e, 'VENDOR_TOKEN_FAILED', 'transient');
          if (fe.retryable && attempt < this.retry.maxAttempts) {
            const delay = this.delayFor(attempt, (fe.details?.retryAfterMs as number | undefined) ?? undefined);
            if (delay !== undefined) {
              log?.warn('vendor token request failed, retrying', {
                vendor: this.vendor,
                errorCode: fe.code,
                attempt,
                delayMs: delay,
              });
              await abortableSleep(delay, info.signal);
              continue;
            }
          }
          throw fe;
        }
        h.Authorization = `${/^bearer$/i.test(token.tokenType) ? 'Bearer' : token.tokenType} ${token.accessToken}`;
      }

      if (this.opts.limiter) await this.opts.limiter.acquire(this.opts.limiterKey ?? this.vendor, info.signal);

      const timeout = AbortSignal.timeout(info.timeoutMs ?? this.timeoutMs);
      const signal = info.signal ? AbortSignal.any([info.signal, timeout]) : timeout;
      const started = Date.now();
      let res: AttemptOutcome<T>;
      this.requestCount++;
      try {
        res = await send(h, signal);
      } catch (e) {
        if (info.signal?.aborted) throw this.abortError(info.signal, method, path);
        const timedOut = timeout.aborted;
        const code = ((e as { cause?: { code?: string } }).cause?.code ?? (e as { code?: string }).code) as
          string | undefined;
        const notSent = code !== undefined && NOT_SENT_CODES.has(code);
        const mayRetry = idempotent || notSent;
        const details = {
          vendor: this.vendor,
          method,
          path,
          requestId,
          attempts: attempt,
          networkCode: code,
          timedOut,
          outcomeUnknown: !notSent && !idempotent ? true : undefined,
        };
        const err = new FerryError(
          timedOut ? 'VENDOR_TIMEOUT' : 'VENDOR_NETWORK',
          `${this.vendor} ${method} ${path} ${timedOut ? 'timed out' : `failed: ${code ?? (e as Error).message}`}`,
          { kind: 'transient', retryable: true, cause: e, details },
        );
        if (mayRetry && attempt < this.retry.maxAttempts) {
          const delay = this.delayFor(attempt, undefined)!;
          log?.warn('vendor call failed, retrying', {
            vendor: this.vendor,
            method,
            path,
            requestId,
            networkCode: code,
            timedOut,
            attempt,
            delayMs: delay,
          });
          await abortableSleep(delay, info.signal);
          continue;
        }
        throw err;
      }
      log?.debug('vendor call', {
        vendor: this.vendor,
        method,
        path,
        status: res.status,
        requestId,
        attempt,
        ms: Date.now() - started,
      });

      if (res.status === 401 && token && !replayed401) {
        // Token revoked or expired early: drop it, re-authenticate and replay once (any method:
        // the server did not act on an unauthenticated call).
        replayed401 = true;
        this.opts.auth!.cache.invalidate(this.opts.auth!.key, token.accessToken);
        log?.info('vendor answered 401, re-authenticating once', { vendor: this.vendor, method, path, requestId });
        attempt--;
        continue;
      }

      if (res.status !== 429 && this.opts.isThrottled?.(res.status, res.text ?? '')) res = { ...res, status: 429 };
      const ok = (res.status >= 200 && res.status < 300) || (info.accept ?? []).includes(res.status);
      if (ok) return { value: res.value as T, status: res.status, headers: res.headers, requestId, attempts: attempt };

      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      const err = httpStatusError(this.vendor, res.status, {
        method,
        path,
        requestId,
        body: res.text,
        retryAfterMs,
        attempts: attempt,
      });
      if (res.status === 429 && this.opts.limiter) {
        // Everyone on this key slows down, not only this call.
        this.opts.limiter.pause(this.opts.limiterKey ?? this.vendor, retryAfterMs ?? backoffDelay(attempt, this.retry));
      }
      const retryableStatus = this.retryStatuses.has(res.status);
      const mayRetry = retryableStatus && (idempotent || res.status === 429);
      if (retryableStatus && !mayRetry && err.details) err.details.outcomeUnknown = true;
      if (mayRetry && attempt < this.retry.maxAttempts) {
        const delay = this.delayFor(attempt, retryAfterMs);
        if (delay !== undefined) {
          log?.warn('vendor call failed, retrying', {
            vendor: this.vendor,
            method,
            path,
            status: res.status,
            requestId,
            attempt,
            delayMs: delay,
            retryAfterMs,
          });
          await abortableSleep(delay, info.signal);
          continue;
        }
      }
      throw err;
    }
  }

  /** The wait before the next attempt; undefined when the server asks for longer than we wait. */
  private delayFor(attempt: number, retryAfterMs: number | undefined): number | undefined {
    if (retryAfterMs !== undefined) return retryAfterMs > this.retry.maxRetryAfterMs ? undefined : retryAfterMs;
    return backoffDelay(attempt, this.retry);
  }

  private abortError(signal: AbortSignal, method: string, path: string): FerryError {
    return new FerryError('VENDOR_ABORTED', `${this.vendor} ${method} ${path} aborted`, {
      kind: 'transient',
      retryable: true,
      cause: signal.reason,
    });
  }
}

export interface ClientCredentialsOptions {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  scope?: string;
  /** `basic` (HTTP Basic, default) or `post` (client_id/secret in the form). */
  authMethod?: 'basic' | 'post';
  extraParams?: Record<string, string>;
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
  vendor?: string;
}

/** A {@link TokenFetcher} for the OAuth 2.0 client-credentials grant. */
export function clientCredentialsFetcher(o: ClientCredentialsOptions): TokenFetcher {
  const vendor = o.vendor ?? 'oauth';
  return async (signal?: AbortSignal) => {
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      ...(o.scope ? { scope: o.scope } : {}),
      ...(o.extraParams ?? {}),
    });
    const headers: Record<string, string> = {
      'Content-Type': 'application/x-www-form-urlencoded',
      Accept: 'application/json',
      'X-Request-Id': randomUUID(),
    };
    if ((o.authMethod ?? 'basic') === 'basic') {
      headers.Authorization = `Basic ${Buffer.from(`${encodeURIComponent(o.clientId)}:${encodeURIComponent(o.clientSecret)}`).toString('base64')}`;
    } else {
      form.set('client_id', o.clientId);
      form.set('client_secret', o.clientSecret);
    }
    return postTokenRequest(vendor, o.tokenUrl, headers, form, o.timeoutMs ?? 30_000, o.fetchImpl ?? fetch, signal);
  };
}

/** POST a token request and map failures: 400/401 (invalid_client, invalid_grant...) are config errors, 429/5xx/network transient. */
export async function postTokenRequest(
  vendor: string,
  tokenUrl: string,
  headers: Record<string, string>,
  form: URLSearchParams,
  timeoutMs: number,
  fetchImpl: typeof fetch,
  signal?: AbortSignal,
): Promise<import('./token-cache').TokenResponse> {
  const timeout = AbortSignal.timeout(timeoutMs);
  let res: Response;
  try {
    res = await fetchImpl(tokenUrl, {
      method: 'POST',
      headers,
      body: form.toString(),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
  } catch (e) {
    throw new FerryError(
      'VENDOR_TOKEN_NETWORK',
      `${vendor} token request failed: ${(e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message}`,
      {
        kind: 'transient',
        retryable: true,
        cause: e,
      },
    );
  }
  const text = await res.text().catch(() => '');
  if (res.status >= 200 && res.status < 300) {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new FerryError('VENDOR_TOKEN_INVALID', `${vendor} token endpoint answered a body that is not JSON`, {
        kind: 'transient',
        retryable: true,
        cause: e,
      });
    }
  }
  let oauthError: string | undefined;
  try {
    oauthError = JSON.parse(text)?.error;
  } catch {
    /* not JSON */
  }
  const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
  const details = { vendor, status: res.status, oauthError, retryAfterMs, requestId: headers['X-Request-Id'] };
  if (res.status === 429 || res.status >= 500) {
    return Promise.reject(
      new FerryError('VENDOR_TOKEN_UNAVAILABLE', `${vendor} token endpoint answered HTTP ${res.status}`, {
        kind: 'transient',
        retryable: true,
        details,
      }),
    );
  }
  throw new FerryError(
    'VENDOR_TOKEN_REJECTED',
    `${vendor} token endpoint refused the credentials: HTTP ${res.status}${oauthError ? ` ${oauthError}` : ''}`,
    {
      kind: 'config',
      retryable: false,
      details,
    },
  );
}
