/** Helpers the FHIR facade's end-to-end suites share: the pipeline's delivered resources, and a scoped client. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Bundle, Resource } from '@medplum/fhirtypes';

/** Every canonical resource the pipeline delivered to an NDJSON file sink writing into `outDir` (none yet: []). */
export function deliveredResources(outDir: string): Resource[] {
  const out: Resource[] = [];
  let files: string[] = [];
  try {
    files = readdirSync(outDir);
  } catch {
    return out;
  }
  for (const f of files)
    for (const line of readFileSync(path.join(outDir, f), 'utf8').split('\n'))
      if (line.trim()) for (const e of (JSON.parse(line) as Bundle).entry ?? []) if (e.resource) out.push(e.resource);
  return out;
}

export interface FacadeAnswer<T> {
  status: number;
  headers: Headers;
  body: T;
}

/**
 * `call(who, method, url, body?, headers?)` against the facade at `base()` (a path is relative to it),
 * as the principal `who` (its bearer from `tokenOf`; undefined: no Authorization header), JSON in and out.
 */
export function facadeCaller<W extends string>(base: () => string, tokenOf: (who: W) => string | undefined) {
  return async <T = any>(
    who: W | undefined,
    method: string,
    url: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<FacadeAnswer<T>> => {
    const token = who === undefined ? undefined : tokenOf(who);
    const res = await fetch(url.startsWith('http') ? url : `${base()}${url}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as T };
  };
}
