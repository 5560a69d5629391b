import { createHash } from 'node:crypto';

/** JSON with object keys sorted at every level (vendors do not keep key order stable, reference 1.3). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** A short digest of a vendor resource's content (key order does not matter; `meta` is left out). */
export function resourceContentHash(resource: unknown): string {
  const r =
    resource && typeof resource === 'object' && !Array.isArray(resource)
      ? { ...(resource as Record<string, unknown>), meta: undefined }
      : resource;
  return createHash('sha256').update(canonicalJson(r)).digest('hex').slice(0, 16);
}

/**
 * The version part of a vendor resource's identity (its control id): `meta.versionId`, else
 * `meta.lastUpdated`, else `h:` + a digest of its content. Vendors often send neither (Epic),
 * and then every version of a resource would get the same control id and an amended resource
 * would be dropped as a duplicate of its first version; with the digest each distinct content is
 * its own version and a re-read of unchanged content is still the same one.
 */
export function resourceVersionKey(resource: unknown): string {
  const meta = (resource as { meta?: { versionId?: unknown; lastUpdated?: unknown } } | undefined)?.meta;
  const v = meta?.versionId ?? meta?.lastUpdated;
  if ((typeof v === 'string' && v) || typeof v === 'number') return String(v);
  return `h:${resourceContentHash(resource)}`;
}
