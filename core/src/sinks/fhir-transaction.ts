/**
 * The FHIR sink's transaction: a canonical bundle turned into one transaction of conditional updates
 * (or updates by id), its references rewritten to the entries' fullUrls or to conditional references,
 * and the helpers that resolve conditional references and order entries by dependency.
 */
import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { identifierParam } from '../fhir/search';

export interface TransactionOptions {
  /** Resource types not written. */
  exclude?: ReadonlySet<string>;
  /** `identifier` (default): conditional updates on the first identifier; `id`: updates by the canonical id. */
  identity?: 'identifier' | 'id';
}

/** A name-based (v5-style) UUID: the same inputs always give the same id. */
export function deterministicUuid(...parts: string[]): string {
  const h = createHash('sha1').update(parts.join('\u0000')).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** Escape a token search value (FHIR search: `\`, `|`, `,`, `$` are escaped with `\`) and URL-encode it. */
export const tokenParam = (system: string, value: string): string => identifierParam(system, value);

/** Every object with a string `reference` inside a resource. */
export function forEachReference(node: unknown, fn: (ref: { reference: string }) => void): void {
  if (Array.isArray(node)) {
    for (const x of node) forEachReference(x, fn);
    return;
  }
  if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    if (typeof o.reference === 'string') fn(o as { reference: string });
    for (const [k, v] of Object.entries(o)) if (k !== 'contained' || Array.isArray(v)) forEachReference(v, fn);
  }
}

export type Ident = { system?: string; value?: string };
/** A Reference-like object: a string `reference`, or an `identifier` (system+value) with a target `type`. */
type RefLike = { reference?: string; type?: string; identifier?: Ident; display?: string };

/** Every Reference inside a resource: objects with a string `reference`, or a logical reference (`identifier` + `type`). */
function forEachReferenceLike(node: unknown, fn: (ref: RefLike) => void, root = true): void {
  if (Array.isArray(node)) {
    for (const x of node) forEachReferenceLike(x, fn, false);
    return;
  }
  if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    const id = o.identifier as Ident | undefined;
    if (
      !root &&
      (typeof o.reference === 'string' ||
        (typeof o.type === 'string' &&
          /^[A-Z][A-Za-z]+$/.test(o.type) &&
          id &&
          !Array.isArray(id) &&
          typeof id === 'object' &&
          id.system &&
          id.value))
    )
      fn(o as RefLike);
    for (const [k, v] of Object.entries(o))
      if (k !== 'contained' || Array.isArray(v)) forEachReferenceLike(v, fn, false);
  }
}

/** A conditional reference or conditional URL: `Type?query`. */
export const CONDITIONAL = /^([A-Z][A-Za-z]+)\?(.+)$/;

/**
 * Turns a canonical bundle into the transaction this sink sends: one entry per resource.
 *
 * `identity: identifier` (default): each resource is a conditional update on its first identifier
 * that has both system and value (`PUT Patient?identifier=sys|val`, the resource's own id removed
 * so the server keeps its id), or, without such an identifier, an update by id (`PUT Type/id`; the
 * resource's id, or one derived from the message id and the entry position when it has none).
 * `identity: id`: every resource is an update by id (`PUT Type/<canonical id>`, update-as-create).
 *
 * Every entry gets a `urn:uuid:` fullUrl and every reference to another entry (by its fullUrl,
 * `Type/id`, absolute URL, or — for a reference carrying `identifier` — by an identifier of the
 * entry) is rewritten to that fullUrl, so the server resolves them to the ids it assigns. A
 * reference to a resource NOT in the bundle that carries `identifier` (system+value) becomes a
 * conditional reference `Type?identifier=sys|val` (under `identity: id` only when it has no
 * `Type/id` of its own), resolved later by the sink or the server. A resource that appears twice
 * (same conditional URL) is written once.
 */
export function toTransaction(
  bundle: Bundle,
  messageId: string,
  options: ReadonlySet<string> | TransactionOptions = {},
): Bundle {
  const opts: TransactionOptions = options instanceof Set ? { exclude: options } : (options as TransactionOptions);
  const exclude = opts.exclude ?? new Set<string>();
  const byId = opts.identity === 'id';
  const src = (bundle.entry ?? []).filter(
    (e): e is BundleEntry & { resource: Resource } => !!e.resource && !exclude.has(e.resource.resourceType),
  );
  const alias = new Map<string, string>();
  const prepared = src.map((e, i) => {
    const resource = structuredClone(e.resource) as Resource & { identifier?: Ident[] };
    const type = resource.resourceType;
    const fullUrl = e.fullUrl?.startsWith('urn:uuid:')
      ? e.fullUrl
      : `urn:uuid:${deterministicUuid(messageId, String(i), type)}`;
    if (e.fullUrl) alias.set(e.fullUrl, fullUrl);
    if (resource.id) alias.set(`${type}/${resource.id}`, fullUrl);
    const ident = Array.isArray(resource.identifier)
      ? resource.identifier.find((x) => x?.system && x?.value)
      : undefined;
    let url: string;
    if (ident && !byId) {
      url = `${type}?${tokenParam(ident.system!, ident.value!)}`;
      delete resource.id;
    } else {
      resource.id = resource.id ?? deterministicUuid(messageId, String(i), type);
      url = `${type}/${encodeURIComponent(resource.id)}`;
    }
    return { fullUrl, resource, request: { method: 'PUT' as const, url } };
  });
  // The same resource twice (same conditional URL or id): servers refuse a transaction that writes
  // one resource twice, so keep the first entry and point references to the others at it.
  const byUrl = new Map<string, string>();
  const redirect = new Map<string, string>();
  const unique = prepared.filter((p) => {
    const first = byUrl.get(p.request.url);
    if (first === undefined) {
      byUrl.set(p.request.url, p.fullUrl);
      return true;
    }
    redirect.set(p.fullUrl, first);
    return false;
  });
  if (redirect.size) for (const [k, v] of alias) if (redirect.has(v)) alias.set(k, redirect.get(v)!);
  // Identifiers of the entries, for references that carry only (or also) an identifier.
  const byIdentifier = new Map<string, string>();
  for (const p of unique)
    for (const i of Array.isArray(p.resource.identifier) ? p.resource.identifier : [])
      if (i?.system && i?.value) {
        const k = `${p.resource.resourceType}?${tokenParam(i.system, i.value)}`;
        if (!byIdentifier.has(k)) byIdentifier.set(k, p.fullUrl);
      }
  for (const p of unique) {
    if (p.resource.meta) {
      // Server-managed fields from a source system would make the update conditional on them.
      delete p.resource.meta.versionId;
      delete p.resource.meta.lastUpdated;
    }
    forEachReferenceLike(p.resource, (ref) => {
      if (typeof ref.reference === 'string') {
        const direct = alias.get(ref.reference);
        if (direct) {
          ref.reference = direct;
          return;
        }
        // An absolute URL whose tail is Type/id of an entry.
        const m = /([A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/[^/]+)?$/.exec(ref.reference);
        if (m && /^https?:\/\//.test(ref.reference) && alias.has(m[1])) {
          ref.reference = alias.get(m[1])!;
          return;
        }
        // A conditional reference the transform wrote, to an entry of this bundle.
        const local = byIdentifier.get(ref.reference);
        if (local) {
          ref.reference = local;
          return;
        }
      }
      const id = ref.identifier;
      if (!id || Array.isArray(id) || !id.system || !id.value || ref.reference?.startsWith('#')) return;
      const target = ref.type ?? /^([A-Z][A-Za-z]+)[/?]/.exec(ref.reference ?? '')?.[1];
      if (!target || !/^[A-Z][A-Za-z]+$/.test(target)) return;
      const conditional = `${target}?${tokenParam(id.system, id.value)}`;
      const local = byIdentifier.get(conditional);
      if (local) ref.reference = local;
      // A logical reference (identifier + type only) stays logical here: the sink links it when the
      // server has exactly one match, and leaves it as it came otherwise.
      else if (!ref.reference) return;
      else if (!byId || !/^[A-Z][A-Za-z]+\/[^/]+$/.test(ref.reference)) ref.reference = conditional;
    });
  }
  // Deletions (HL7 A23/A29, IAM/PRB delete actions...): entries with no resource and a DELETE
  // request pass through as they are (`Type?identifier=...` conditional delete, or `Type/id`);
  // deleting what is already gone succeeds, so a redelivery converges.
  const deletes: BundleEntry[] = (bundle.entry ?? [])
    .filter(
      (e) =>
        !e.resource && e.request?.method === 'DELETE' && e.request.url && !exclude.has(e.request.url.split(/[/?]/)[0]),
    )
    .map((e) => ({ request: { method: 'DELETE' as const, url: e.request!.url } }));
  return { resourceType: 'Bundle', type: 'transaction', entry: [...unique, ...deletes] };
}

/** The search (`Type?identifier=sys|val`) that finds the target of a logical reference (identifier + type, no `reference`). */
function logicalKey(ref: RefLike): string | undefined {
  const id = ref.identifier;
  if (ref.reference || !ref.type || !id || Array.isArray(id) || !id.system || !id.value) return undefined;
  return `${ref.type}?${tokenParam(id.system, id.value)}`;
}

/** `{system, value}` of a `Type?identifier=sys|val` query (as built by tokenParam), else undefined. */
export function identifierOfQuery(conditional: string): { system: string; value: string } | undefined {
  const m = /^[A-Z][A-Za-z]+\?identifier=([^&]+)$/.exec(conditional);
  if (!m) return undefined;
  let token: string;
  try {
    token = decodeURIComponent(m[1]);
  } catch {
    return undefined;
  }
  const parts: string[] = [''];
  for (let i = 0; i < token.length; i++) {
    const ch = token[i];
    if (ch === '\\' && i + 1 < token.length) parts[parts.length - 1] += token[++i];
    else if (ch === '|') parts.push('');
    else parts[parts.length - 1] += ch;
  }
  return parts.length === 2 && parts[0] && parts[1] ? { system: parts[0], value: parts[1] } : undefined;
}

/**
 * The references of a transaction the sink may resolve: `literal` = conditional references
 * (`Type?query`, which must resolve: a server fails the transaction otherwise), `logical` =
 * logical references (identifier + type only, linked when they resolve, kept as they are when not).
 */
export function conditionalReferencesOf(tx: Bundle): { literal: Set<string>; logical: Set<string> } {
  const literal = new Set<string>();
  const logical = new Set<string>();
  for (const e of tx.entry ?? [])
    forEachReferenceLike(e.resource, (ref) => {
      if (typeof ref.reference === 'string' && CONDITIONAL.test(ref.reference)) literal.add(ref.reference);
      const k = logicalKey(ref);
      if (k) logical.add(k);
    });
  return { literal, logical };
}

/**
 * Replaces, IN PLACE (`tx` is the sink's own copy from toTransaction), conditional and logical
 * references by `resolved` (`Type?query` -> `Type/id`); a conditional reference `resolved` maps to
 * `null` becomes a logical reference (Reference.identifier + type) when it has an identifier.
 */
export function applyResolvedReferences(tx: Bundle, resolved: ReadonlyMap<string, string | null>): Bundle {
  const out = tx;
  for (const e of out.entry ?? [])
    forEachReferenceLike(e.resource, (ref) => {
      const key = typeof ref.reference === 'string' ? ref.reference : logicalKey(ref);
      if (!key || !resolved.has(key)) return;
      const to = resolved.get(key);
      if (to) {
        ref.reference = to;
        return;
      }
      const m = CONDITIONAL.exec(key);
      if (ref.reference && ref.identifier?.value && m) {
        if (!ref.type) ref.type = m[1];
        delete ref.reference;
      }
    });
  return out;
}

/** `Type/id` from a Location (`Patient/1/_history/2`, absolute or relative). */
export function typeIdOf(location: string | undefined): string | undefined {
  const m = location ? /([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})(\/_history\/[^/]+)?\/?$/.exec(location) : null;
  return m?.[1];
}

/** Entries ordered so that an entry comes after the entries it references (original order otherwise; cycles keep it). */
export function dependencyOrder(entries: BundleEntry[]): BundleEntry[] {
  const index = new Map(entries.map((e, i) => [e.fullUrl ?? `#${i}`, i]));
  const deps = entries.map(() => new Set<number>());
  entries.forEach((e, i) =>
    forEachReference(e.resource, (ref) => {
      const j = index.get(ref.reference);
      if (j !== undefined && j !== i) deps[i].add(j);
    }),
  );
  const done = new Set<number>();
  const out: BundleEntry[] = [];
  const visiting = new Set<number>();
  const visit = (i: number) => {
    if (done.has(i) || visiting.has(i)) return;
    visiting.add(i);
    for (const j of [...deps[i]].sort((a, b) => a - b)) visit(j);
    visiting.delete(i);
    done.add(i);
    out.push(entries[i]);
  };
  entries.forEach((_, i) => visit(i));
  return out;
}
