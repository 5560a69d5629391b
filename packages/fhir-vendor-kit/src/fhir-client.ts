/**
 * FHIR R4 calls shared by the Epic and Cerner plugins, over a {@link VendorConnection}:
 * `Accept: application/fhir+json` always; searches page by following `Bundle.link[next]` verbatim
 * (the cursors are opaque server sessions); an expired paging session restarts the search from the
 * first page, skipping what was already yielded; Epic's OperationOutcome entries
 * (`search.mode=outcome`, 4101 "no results") are read as empty results / warnings, not data;
 * vendor OperationOutcomes are mapped to FerryErrors with the right `retryable`.
 *
 * Search pages go through fhir-kit-client (1.9.x: 2.x is ESM-only and cannot load in this CommonJS
 * build nor in jest): `search()` for the first page, `nextPage()` (the `next` link verbatim) after,
 * each run under the shared vendor call policy with `VendorHttpClient.execute()` (token, rate limit,
 * X-Request-Id, 401 replay, retries honouring Retry-After).
 */
import { FerryError, type ErrorCode } from '@ferry/core';
import Client from 'fhir-kit-client';
import type { Bundle, OperationOutcome, Resource } from '@medplum/fhirtypes';
import type { VendorConnection } from './connection';

export const EPIC_ERROR_SYSTEM = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369';

/** Epic codes that are a policy denial (break-the-glass, not authorized): never retried. */
const EPIC_POLICY_DENIALS = new Set(['4118', '4130', '4131', '4134', '4135']);

export function epicCodes(oo: OperationOutcome | undefined): string[] {
  const out: string[] = [];
  for (const i of oo?.issue ?? [])
    for (const c of i.details?.coding ?? []) if (c.system === EPIC_ERROR_SYSTEM && c.code) out.push(c.code);
  return out;
}

function parseOutcome(text: unknown): OperationOutcome | undefined {
  if (typeof text !== 'string' || !text.trimStart().startsWith('{')) return undefined;
  try {
    const j = JSON.parse(text);
    return j?.resourceType === 'OperationOutcome' ? j : undefined;
  } catch {
    return undefined;
  }
}

/** Issue summary safe to log (codes, severities; diagnostics can name parameters, never PHI). */
export function outcomeSummary(
  oo: OperationOutcome | undefined,
): { severity?: string; code?: string; vendorCodes?: string[]; text?: string }[] {
  return (oo?.issue ?? []).map((i) => ({
    severity: i.severity,
    code: i.code,
    vendorCodes: (i.details?.coding ?? []).map((c) => c.code ?? '').filter(Boolean),
    text: i.details?.text,
  }));
}

/**
 * Refine a kit error with the vendor's OperationOutcome: Epic 4xxx codes, Cerner 4xx bodies,
 * HTML (misrouted path) bodies. Keeps the kit's `retryable` except where the body says otherwise.
 */
export function refineVendorError(e: unknown): unknown {
  if (!FerryError.is(e) || !e.details || typeof e.details.status !== 'number') return e;
  const status = e.details.status as number;
  const body = e.details.body as string | undefined;
  const oo = parseOutcome(body);
  const codes = epicCodes(oo);
  const details = {
    ...e.details,
    body: undefined,
    outcome: oo ? outcomeSummary(oo) : undefined,
    vendorCodes: codes.length ? codes : undefined,
  };
  const mk = (code: ErrorCode, msg: string, kind: 'input' | 'config' | 'transient', retryable: boolean) =>
    new FerryError(code, `${e.message}: ${msg}`, { kind, retryable, cause: e, details });
  if (codes.includes('4113')) return mk('VENDOR_PAGING_EXPIRED', 'paging session expired', 'transient', true);
  const denial = codes.find((c) => EPIC_POLICY_DENIALS.has(c));
  if (denial) return mk('VENDOR_POLICY_DENIED', `policy denial (Epic ${denial}); not retried`, 'input', false);
  if (codes.some((c) => /^(41\d\d|591\d\d)$/.test(c)))
    return mk(
      'VENDOR_REJECTED',
      `Epic ${codes.join(',')} ${oo?.issue?.[0]?.details?.text ?? ''}`.trim(),
      'input',
      false,
    );
  if (body && /^\s*</.test(body) && !oo)
    return mk(
      status === 404 ? 'VENDOR_NOT_FOUND' : 'VENDOR_BAD_RESPONSE',
      `non-FHIR (HTML/XML) answer; is the path routed to the FHIR server?`,
      'input',
      false,
    );
  // Cerner answers 500 fatal/required when a required field is missing: an input error, not an outage.
  if (status === 500 && oo?.issue?.some((i) => i.code === 'required' || i.code === 'invalid' || i.code === 'structure'))
    return mk('VENDOR_REJECTED', `server refused the content (${oo.issue![0].code})`, 'input', false);
  if (status === 406) return mk('VENDOR_NOT_ACCEPTABLE', 'the server refused the Accept header (406)', 'input', false);
  if (oo && !e.retryable) {
    const text = oo.issue
      ?.map((i) => i.details?.text ?? i.diagnostics ?? i.code)
      .filter(Boolean)
      .join('; ');
    return new FerryError(e.code, text ? `${e.message}: ${text}` : e.message, {
      kind: e.kind,
      retryable: false,
      cause: e,
      details,
    });
  }
  return e;
}

export interface SearchPage {
  resources: Resource[];
  /** Non-fatal OperationOutcome issues the server attached (Epic 4122 unknown param, ...). */
  warnings: ReturnType<typeof outcomeSummary>;
  pageNumber: number;
  /** How many times the search was restarted after an expired paging session. */
  restarts: number;
}

export interface SearchOptions {
  /** Restarts allowed after an expired paging session (default 3). */
  maxRestarts?: number;
  signal?: AbortSignal;
}

export class FhirClient {
  constructor(readonly conn: VendorConnection) {}

  get baseUrl(): string {
    return this.conn.baseUrl;
  }

  private fkc?: Client;

  private kit(): Client {
    this.fkc ??= new Client({ baseUrl: this.conn.baseUrl, customHeaders: { accept: 'application/fhir+json' } });
    return this.fkc;
  }

  /** One search page through fhir-kit-client, under the vendor call policy. */
  private async page(
    first: { type: string; params: Record<string, string | string[]> } | { bundle: Bundle },
    signal?: AbortSignal,
  ): Promise<Bundle> {
    const path =
      'type' in first
        ? `/${first.type}`
        : new URL((first.bundle.link ?? []).find((l) => l.relation === 'next')!.url!, this.conn.baseUrl + '/').pathname;
    try {
      const out = await this.conn.http.execute<Bundle>(
        { method: 'GET', path, signal },
        async (headers, attemptSignal) => {
          const h = { ...headers, accept: 'application/fhir+json' };
          const call: Promise<any> =
            'type' in first
              ? this.kit().search({
                  resourceType: first.type,
                  searchParams: first.params as any,
                  options: { headers: h, signal: attemptSignal } as any,
                })
              : (this.kit().nextPage({ bundle: first.bundle as any, options: { headers: h } } as any) as Promise<any>);
          const aborted = new Promise<never>((_, reject) => {
            if (attemptSignal.aborted) reject(attemptSignal.reason);
            attemptSignal.addEventListener('abort', () => reject(attemptSignal.reason), { once: true });
          });
          try {
            const data = await Promise.race([call, aborted]);
            // fhir-kit-client 1.9 keeps the fetch Response on a non-enumerable `__response`.
            const raw = (
              data && typeof data === 'object' ? (data as { __response?: Response }).__response : undefined
            ) as Response | undefined;
            return { status: raw?.status ?? 200, headers: raw?.headers ?? new Headers(), value: data as Bundle };
          } catch (e) {
            const r = (e as { response?: { status?: number; data?: unknown }; config?: { headers?: Headers } })
              .response;
            if (r && typeof r.status === 'number') {
              const headersOut = (e as { config?: { headers?: Headers } }).config?.headers;
              return {
                status: r.status,
                headers: headersOut instanceof Headers ? headersOut : new Headers(),
                text: typeof r.data === 'string' ? r.data : JSON.stringify(r.data ?? ''),
              };
            }
            throw e;
          }
        },
      );
      const b = out.value as unknown;
      if (typeof b === 'string' || !b || typeof b !== 'object')
        throw new FerryError(
          'VENDOR_BAD_RESPONSE',
          `${this.conn.vendor} GET ${path} answered a non-JSON body instead of FHIR JSON`,
          { kind: 'input', retryable: false, details: { vendor: this.conn.vendor, status: out.status } },
        );
      return b as Bundle;
    } catch (e) {
      throw refineVendorError(e);
    }
  }

  async read<T extends Resource = Resource>(
    type: string,
    id: string,
    signal?: AbortSignal,
  ): Promise<{ resource: T; etag?: string }> {
    try {
      const res = await this.conn.http.request({
        method: 'GET',
        url: `${type}/${encodeURIComponent(id)}`,
        signal,
        headers: { Accept: 'application/fhir+json' },
      });
      return { resource: res.json<T>(), etag: res.headers.get('etag') ?? undefined };
    } catch (e) {
      throw refineVendorError(e);
    }
  }

  /**
   * Page through a search: the first request is `{base}/{type}?{params}`, every later one is the
   * `next` link exactly as the server gave it. An expired paging session restarts the search
   * (at most `maxRestarts` times); resources already yielded are skipped on the rerun.
   */
  async *search(
    type: string,
    params: Record<string, string | string[]>,
    opts: SearchOptions = {},
  ): AsyncGenerator<SearchPage> {
    const maxRestarts = opts.maxRestarts ?? 3;
    const seen = new Set<string>();
    let restarts = 0;
    restart: for (;;) {
      let prev: Bundle | undefined;
      let pageNumber = 0;
      for (;;) {
        let bundle: Bundle;
        try {
          bundle =
            pageNumber === 0
              ? await this.page({ type, params }, opts.signal)
              : await this.page({ bundle: prev! }, opts.signal);
        } catch (e) {
          const expired =
            FerryError.is(e) &&
            (e.code === 'FERRY_E_VENDOR_PAGING_EXPIRED' ||
              (pageNumber > 0 && [400, 404, 410].includes(e.details?.status as number)));
          if (expired && restarts < maxRestarts) {
            restarts++;
            this.conn.logger?.warn('paging session expired, restarting the search', {
              vendor: this.conn.vendor,
              resourceType: type,
              pageNumber,
              restarts,
            });
            continue restart;
          }
          throw e;
        }
        pageNumber++;
        if (bundle?.resourceType !== 'Bundle')
          throw new FerryError('VENDOR_BAD_RESPONSE', `${this.conn.vendor} search ${type} did not answer a Bundle`, {
            kind: 'input',
            retryable: false,
          });
        const resources: Resource[] = [];
        const warnings: SearchPage['warnings'] = [];
        for (const entry of bundle.entry ?? []) {
          const r = entry.resource;
          if (!r) continue;
          if (r.resourceType === 'OperationOutcome' && (entry.search?.mode === 'outcome' || r.resourceType !== type)) {
            // Epic: 4101 = no results (an empty search), 4122 = unknown parameter ignored, ...
            const issues = outcomeSummary(r as OperationOutcome).filter((i) => !(i.vendorCodes ?? []).includes('4101'));
            const fatal = (r as OperationOutcome).issue?.find((i) => i.severity === 'fatal' || i.severity === 'error');
            if (fatal && !epicCodes(r as OperationOutcome).includes('4101'))
              throw refineVendorError(
                new FerryError('VENDOR_REJECTED', `${this.conn.vendor} search ${type} returned an error outcome`, {
                  kind: 'input',
                  retryable: false,
                  details: { status: 200, body: JSON.stringify(r) },
                }),
              );
            warnings.push(...issues);
            continue;
          }
          const key = `${r.resourceType}/${r.id}`;
          if (r.id && seen.has(key)) continue;
          if (r.id) seen.add(key);
          resources.push(r);
        }
        if (warnings.length)
          this.conn.logger?.debug('search warnings', {
            vendor: this.conn.vendor,
            resourceType: type,
            warnings: warnings.map((w) => w.vendorCodes?.join(',') || w.code),
          });
        yield { resources, warnings, pageNumber, restarts };
        if (!bundle.link?.some((l) => l.relation === 'next' && l.url)) return;
        prev = bundle;
      }
    }
  }

  /** Create; returns the new id and version from Location / ETag. */
  async create(resource: Resource, signal?: AbortSignal): Promise<{ id?: string; versionId?: string; status: number }> {
    try {
      const res = await this.conn.http.request({
        method: 'POST',
        url: resource.resourceType,
        body: JSON.stringify(resource),
        headers: { Accept: 'application/fhir+json', 'Content-Type': 'application/fhir+json' },
        signal,
      });
      const loc = res.headers.get('location') ?? '';
      const m = new RegExp(`${resource.resourceType}/([^/?]+)(?:/_history/([^/?]+))?`).exec(loc);
      return { id: m?.[1], versionId: m?.[2] ?? etagVersion(res.headers.get('etag')), status: res.status };
    } catch (e) {
      throw refineVendorError(e);
    }
  }

  /** Update with If-Match (optimistic locking). */
  async update(
    resource: Resource,
    ifMatch: string | undefined,
    signal?: AbortSignal,
  ): Promise<{ versionId?: string; status: number }> {
    try {
      const res = await this.conn.http.request({
        method: 'PUT',
        url: `${resource.resourceType}/${encodeURIComponent(resource.id!)}`,
        body: JSON.stringify(resource),
        headers: {
          Accept: 'application/fhir+json',
          'Content-Type': 'application/fhir+json',
          ...(ifMatch ? { 'If-Match': ifMatch } : {}),
        },
        signal,
      });
      return { versionId: etagVersion(res.headers.get('etag')), status: res.status };
    } catch (e) {
      throw refineVendorError(e);
    }
  }
}

export function etagVersion(etag: string | null | undefined): string | undefined {
  return etag ? /^(?:W\/)?"?([^"]*)"?$/.exec(etag)?.[1] : undefined;
}
