/**
 * athenaOne FHIR R4 calls through fhir-kit-client, run under the shared athena connection's call
 * policy (token shared with athena-rest, per-practice rate limit, retries, Retry-After, 401
 * replay, X-Request-Id, timeouts) with `VendorHttpClient.execute`.
 *
 * fhir-kit-client 1.9 (CommonJS) is used: 2.x ships ESM only, which this CommonJS build and
 * jest cannot load.
 */
import Client from 'fhir-kit-client';
import type { AttemptOutcome, QueryValue } from '@ferry/core';
import type { AthenaConnection } from '@ferry/fhir-vendor-kit';
import type { Bundle, Resource } from '@medplum/fhirtypes';

/** The error object fhir-kit-client throws for a non-2xx answer. */
interface FkcError {
  response?: { status?: number; data?: unknown };
  config?: { method?: string; url?: string; headers?: Headers };
}

function toOutcome<T>(e: unknown): AttemptOutcome<T> {
  const err = e as FkcError;
  if (err && typeof err === 'object' && err.response && typeof err.response.status === 'number') {
    const data = err.response.data;
    return {
      status: err.response.status,
      headers: err.config?.headers instanceof Headers ? err.config.headers : new Headers(),
      text: typeof data === 'string' ? data : JSON.stringify(data ?? ''),
    };
  }
  throw e; // a network failure: the policy classifies it
}

export class AthenaFhirClient {
  private readonly client: Client;

  constructor(readonly conn: AthenaConnection) {
    this.client = new Client({ baseUrl: conn.fhirBase });
  }

  /** `ah-practice`, required on every search (reference 2.2). */
  get practiceParam(): string {
    return this.conn.fhirPracticeOrg;
  }

  private async run<T>(
    method: string,
    path: string,
    idempotent: boolean,
    signal: AbortSignal | undefined,
    call: (headers: Record<string, string>, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const out = await this.conn.fhir.execute<T>({ method, path, idempotent, signal }, async (h, sig) => {
      try {
        const value = await call({ ...h, Accept: 'application/fhir+json' }, sig);
        return { status: 200, headers: new Headers(), value };
      } catch (e) {
        return toOutcome<T>(e);
      }
    });
    return out.value;
  }

  /** A search with `ah-practice` always added. */
  async search(resourceType: string, params: Record<string, QueryValue>, signal?: AbortSignal): Promise<Bundle> {
    const searchParams: Record<string, string | string[]> = { 'ah-practice': this.practiceParam };
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null) continue;
      searchParams[k] = Array.isArray(v) ? v.map(String) : String(v);
    }
    return this.run(
      'GET',
      `/fhir/r4/${resourceType}`,
      true,
      signal,
      (headers, sig) =>
        this.client.search({
          resourceType: resourceType as any,
          searchParams,
          options: { headers, signal: sig } as any,
        }) as Promise<Bundle>,
    );
  }

  /** The next page: the `next` link is followed verbatim (never rebuilt). */
  async nextPage(bundle: Bundle, signal?: AbortSignal): Promise<Bundle | undefined> {
    const next = bundle.link?.find((l) => l.relation === 'next')?.url;
    if (!next) return undefined;
    return this.run(
      'GET',
      new URL(next).pathname,
      true,
      signal,
      (headers, sig) => this.client.request(next, { options: { headers, signal: sig } as any }) as Promise<Bundle>,
    );
  }

  async read<T extends Resource>(resourceType: string, id: string, signal?: AbortSignal): Promise<T> {
    return this.run(
      'GET',
      `/fhir/r4/${resourceType}/${id}`,
      true,
      signal,
      (headers, sig) =>
        this.client.read({
          resourceType: resourceType as any,
          id,
          options: { headers, signal: sig } as any,
        }) as Promise<T>,
    );
  }

  /** A create is not idempotent: never retried after an ambiguous failure. */
  async create<T extends Resource>(resource: T, signal?: AbortSignal): Promise<T> {
    return this.run(
      'POST',
      `/fhir/r4/${resource.resourceType}`,
      false,
      signal,
      (headers, sig) =>
        this.client.create({
          resourceType: resource.resourceType as any,
          body: resource as any,
          options: { headers: { ...headers, 'Content-Type': 'application/fhir+json' }, signal: sig } as any,
        }) as Promise<T>,
    );
  }
}
