import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, OperationOutcome, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
// fhir-kit-client 1.9.x: 2.x is ESM-only (its exports map has no `require` condition) and cannot be
// loaded by the CommonJS build of @ferry/core nor by jest.
import Client from 'fhir-kit-client';
import { inject, injectable } from 'tsyringe';
import { identifierParam } from '../fhir/search';
import { configError, FerryError, permanentDeliveryError, retryableDeliveryError } from '../errors';
import type { Delivery, MessageSink, SinkContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import { SinkAuth, sinkAuthSchema, type SinkAuthConfig } from './auth';
import { parseRetryAfter } from '../vendor/http-client';
import { headerMap, httpUrl, isRetryableStatus, networkDeliveryError, requestSignal } from './common';
import { redact } from './http.sink';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';

/** `sinks.<id>` keys of a `type: fhir` sink. */
export const fhirSinkSchema = defineSchema({
  baseUrl: { doc: 'FHIR R4 base URL, e.g. https://fhir.example.org/fhir/R4', format: httpUrl, default: '' },
  auth: sinkAuthSchema,
  timeoutMs: { doc: 'Timeout of one transaction request', format: 'nat', default: 30_000 },
  headers: { doc: 'Extra request headers', format: headerMap, default: {} as Record<string, string> },
  excludeResourceTypes: { doc: 'Resource types not written (e.g. MessageHeader, Provenance)', format: Array, default: [] as string[] },
  maxTransactionEntries: {
    doc: 'Most entries in one transaction (0 = no limit). Larger messages are written as several transactions in dependency order. Medplum servers need 8; a server answering "too many entries" gets chunks of 8 automatically.',
    format: 'nat',
    default: 0,
  },
  identity: {
    doc: 'How resources are keyed on the server: `identifier` = conditional update on the first identifier (server-assigned ids; references to resources of earlier messages must carry Reference.identifier), `id` = update by the canonical id (`PUT Type/<id>`, needs a server that allows update-as-create with client ids; references by `Type/id` stay valid across messages)',
    format: ['identifier', 'id'],
    default: 'identifier',
  },
  conditionalReferences: {
    doc: '`resolve` = the sink resolves conditional references (`Patient?identifier=sys|val`) by a search before the transaction (works with every server); `server` = sent as they are, for servers that resolve them in transactions (HAPI, Firely, Smile; not Medplum)',
    format: ['resolve', 'server'],
    default: 'resolve',
  },
  unresolvedReferences: {
    doc: 'A conditional reference that matches nothing on the server: `retry` = retryable failure (the referenced resource may come in a later message), `identifier` = write it as a logical reference (Reference.identifier only)',
    format: ['retry', 'identifier'],
    default: 'retry',
  },
});

export type FhirSinkConfig = SchemaType<typeof fhirSinkSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type FhirSinkInput = SchemaInput<typeof fhirSinkSchema>;

export interface TransactionOptions {
  /** Resource types not written. */
  exclude?: ReadonlySet<string>;
  /** `identifier` (default): conditional updates on the first identifier; `id`: updates by the canonical id. */
  identity?: 'identifier' | 'id';
}

/** OperationOutcome issue codes that say "try again later". */
const TRANSIENT_ISSUES = new Set(['transient', 'lock-error', 'no-store', 'timeout', 'throttled', 'incomplete', 'conflict']);
/** Issue codes that say "this content will never be accepted". */
const INVALID_ISSUES = new Set([
  'invalid',
  'structure',
  'required',
  'value',
  'invariant',
  'business-rule',
  'code-invalid',
  'extension',
  'not-supported',
  'duplicate',
  'multiple-matches',
  'not-found',
  'deleted',
  'too-long',
  'security',
  'forbidden',
  'login',
  'unknown',
  'suppressed',
  'processing',
  'too-costly',
]);

/** A name-based (v5-style) UUID: the same inputs always give the same id. */
export function deterministicUuid(...parts: string[]): string {
  const h = createHash('sha1').update(parts.join('\u0000')).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** Escape a token search value (FHIR search: `\`, `|`, `,`, `$` are escaped with `\`) and URL-encode it. */
const tokenParam = (system: string, value: string): string => identifierParam(system, value);

/** Every object with a string `reference` inside a resource. */
function forEachReference(node: unknown, fn: (ref: { reference: string }) => void): void {
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

type Ident = { system?: string; value?: string };
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
      (typeof o.reference === 'string' || (typeof o.type === 'string' && /^[A-Z][A-Za-z]+$/.test(o.type) && id && !Array.isArray(id) && typeof id === 'object' && id.system && id.value))
    )
      fn(o as RefLike);
    for (const [k, v] of Object.entries(o)) if (k !== 'contained' || Array.isArray(v)) forEachReferenceLike(v, fn, false);
  }
}

/** A conditional reference or conditional URL: `Type?query`. */
const CONDITIONAL = /^([A-Z][A-Za-z]+)\?(.+)$/;

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
export function toTransaction(bundle: Bundle, messageId: string, options: ReadonlySet<string> | TransactionOptions = {}): Bundle {
  const opts: TransactionOptions = options instanceof Set ? { exclude: options } : (options as TransactionOptions);
  const exclude = opts.exclude ?? new Set<string>();
  const byId = opts.identity === 'id';
  const src = (bundle.entry ?? []).filter((e): e is BundleEntry & { resource: Resource } => !!e.resource && !exclude.has(e.resource.resourceType));
  const alias = new Map<string, string>();
  const prepared = src.map((e, i) => {
    const resource = structuredClone(e.resource) as Resource & { identifier?: Ident[] };
    const type = resource.resourceType;
    const fullUrl = e.fullUrl?.startsWith('urn:uuid:') ? e.fullUrl : `urn:uuid:${deterministicUuid(messageId, String(i), type)}`;
    if (e.fullUrl) alias.set(e.fullUrl, fullUrl);
    if (resource.id) alias.set(`${type}/${resource.id}`, fullUrl);
    const ident = Array.isArray(resource.identifier) ? resource.identifier.find((x) => x?.system && x?.value) : undefined;
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
    .filter((e) => !e.resource && e.request?.method === 'DELETE' && e.request.url && !exclude.has(e.request.url.split(/[/?]/)[0]))
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
function identifierOfQuery(conditional: string): { system: string; value: string } | undefined {
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
function typeIdOf(location: string | undefined): string | undefined {
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

/** Medplum's refusal of a large transaction with conditional writes. */
function isTooManyEntries(e: FerryError): boolean {
  if (e.details?.status !== 400) return false;
  return issuesOf(e.details?.outcome).some((i) => /too many entries|more update operations than allowed/i.test(`${i.details?.text ?? ''} ${i.diagnostics ?? ''}`));
}

function issuesOf(data: unknown): OperationOutcomeIssue[] {
  const d = data as OperationOutcome | undefined;
  return d && typeof d === 'object' && d.resourceType === 'OperationOutcome' && Array.isArray(d.issue) ? d.issue : [];
}

/** A short, PHI-free summary of an OperationOutcome: issue codes and FHIRPath expressions only. */
function summarize(issues: OperationOutcomeIssue[]): string {
  return issues
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .slice(0, 5)
    .map((i) => `${i.code}${i.expression?.length ? ` @ ${i.expression.join(',')}` : ''}`)
    .join('; ');
}

/**
 * Classify a failed FHIR answer: 408/425/429/5xx are retryable unless every error issue says the
 * content is invalid; 4xx are permanent unless an issue is transient (e.g. a 409 version conflict
 * between concurrent writers, `lock-error`, `throttled`).
 */
export function classifyFhirFailure(status: number, issues: OperationOutcomeIssue[]): boolean {
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (isRetryableStatus(status)) return !(errors.length && errors.every((i) => INVALID_ISSUES.has(i.code)));
  if (status === 409 || status === 423) return errors.length === 0 || errors.some((i) => TRANSIENT_ISSUES.has(i.code));
  return errors.some((i) => TRANSIENT_ISSUES.has(i.code) && i.code !== 'conflict');
}

/**
 * Writes each message's bundle to a FHIR R4 server as ONE transaction (all or nothing) of
 * conditional updates, so a redelivery creates nothing new. Uses fhir-kit-client.
 */
/**
 * Where conditional references resolved to (`Patient?identifier=sys|val` -> `Patient/123`): learnt
 * from searches and from the sink's own writes. Bounded (least recently used dropped) and entries
 * expire, so a resource merged or deleted on the server is searched again after `ttlMs`; entries
 * used by a transaction that failed are dropped at once.
 */
export class ReferenceCache {
  private readonly map = new Map<string, { to: string; at: number }>();
  constructor(
    readonly max = 5000,
    readonly ttlMs = 10 * 60_000,
  ) {}
  get(key: string): string | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    if (Date.now() - hit.at > this.ttlMs) return undefined;
    this.map.set(key, hit);
    return hit.to;
  }
  set(key: string, to: string): void {
    this.map.delete(key);
    this.map.set(key, { to, at: Date.now() });
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
}

/**
 * Writes each message's bundle to a FHIR R4 server as ONE transaction (all or nothing) of
 * conditional updates (or updates by canonical id under `identity: id`), so a redelivery creates
 * nothing new. References to resources written by earlier messages are resolved through
 * `Reference.identifier` (conditional references, resolved by a search unless the server is
 * trusted to do it). Uses fhir-kit-client.
 */
@injectable()
export class FhirSink implements MessageSink {
  private readonly cfg: FhirSinkConfig;
  private readonly client: Client;
  private readonly auth: SinkAuth;
  private readonly exclude: Set<string>;
  private warnedCap = false;
  /** Conditional reference -> `Type/id` (exposed for tests and metrics). */
  readonly references = new ReferenceCache();

  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<FhirSinkInput>) {
    this.cfg = withSchemaDefaults(fhirSinkSchema, ctx.config);
    if (!this.cfg.baseUrl) throw configError('SINK_URL', `sinks.${ctx.id}.baseUrl: required`);
    if (!['identifier', 'id'].includes(this.cfg.identity)) throw configError('SINK_CONFIG', `sinks.${ctx.id}.identity: must be identifier or id`);
    this.auth = new SinkAuth(this.cfg.auth, `sinks.${ctx.id}`, this.cfg.timeoutMs);
    this.exclude = new Set(this.cfg.excludeResourceTypes);
    this.client = new Client({
      baseUrl: this.cfg.baseUrl.replace(/\/+$/, ''),
      customHeaders: { ...Object.fromEntries(Object.entries(this.cfg.headers).map(([k, v]) => [k, String(v)])), 'content-type': 'application/fhir+json' },
    });
  }

  async deliver(d: Delivery): Promise<void> {
    let tx = toTransaction(d.bundle, d.message.id, { exclude: this.exclude, identity: this.cfg.identity });
    if (!tx.entry?.length) {
      this.ctx.logger.debug('nothing to write', { sink: this.ctx.id, messageId: d.message.id });
      return;
    }
    let cached: string[] = [];
    if (this.cfg.conditionalReferences === 'resolve') {
      const conditional = conditionalReferencesOf(tx);
      if (conditional.literal.size || conditional.logical.size) {
        const r = await this.resolveReferences(conditional.literal, conditional.logical, d);
        cached = r.cached;
        tx = applyResolvedReferences(tx, r.resolved);
      }
    }
    try {
      await this.writeMessage(tx, d);
    } catch (e) {
      // A cached target may be gone (merged, deleted): search again next time.
      for (const k of cached) this.references.delete(k);
      throw e;
    }
  }

  private async writeMessage(tx: Bundle, d: Delivery): Promise<void> {
    const entries = tx.entry ?? [];
    const max = this.cfg.maxTransactionEntries;
    if (max > 0 && entries.length > max) return this.deliverInChunks(entries, d, max);
    try {
      const response = await this.write(tx, d);
      this.checkEntries(response);
      this.learn(entries, response);
    } catch (e) {
      if (!(FerryError.is(e) && isTooManyEntries(e))) throw e;
      if (!this.warnedCap) {
        this.warnedCap = true;
        this.ctx.logger.warn('the FHIR server caps transaction size; writing in chunks of 8 (set maxTransactionEntries to skip the failed first try)', { sink: this.ctx.id });
      }
      await this.deliverInChunks(entries, d, 8);
      return;
    }
    this.ctx.logger.debug('transaction written', { sink: this.ctx.id, messageId: d.message.id, entries: entries.length });
  }

  /** Remember where the conditional updates just written landed (their URL and every identifier of the resource). */
  private learn(sent: BundleEntry[], response: Bundle): void {
    (response.entry ?? []).forEach((re, j) => {
      const req = sent[j];
      const to = typeIdOf(re.response?.location) ?? (re.resource?.id ? `${re.resource.resourceType}/${re.resource.id}` : undefined);
      if (!to || !req?.resource) return;
      const type = req.resource.resourceType;
      if (!to.startsWith(`${type}/`)) return;
      const url = req.request?.url ?? '';
      if (CONDITIONAL.test(url)) this.references.set(url, to);
      const ids = (re.resource?.resourceType === type ? (re.resource as { identifier?: Ident[] }).identifier : undefined) ?? (req.resource as { identifier?: Ident[] }).identifier;
      for (const i of Array.isArray(ids) ? ids : []) if (i?.system && i?.value) this.references.set(`${type}?${tokenParam(i.system, i.value)}`, to);
    });
  }

  /**
   * `Type?query` -> `Type/id` for every conditional reference, from the cache or a search
   * (`_count=2`: one match resolves; none is retryable or a logical reference per
   * `unresolvedReferences`; several fail the message for good, as a FHIR server would).
   */
  private async resolveReferences(literal: Set<string>, logical: Set<string>, d: Delivery): Promise<{ resolved: Map<string, string | null>; cached: string[] }> {
    const resolved = new Map<string, string | null>();
    const cached: string[] = [];
    const missing: string[] = [];
    const ambiguous: string[] = [];
    for (const c of new Set([...literal, ...logical])) {
      const hit = this.references.get(c);
      if (hit) {
        resolved.set(c, hit);
        cached.push(c);
        continue;
      }
      const type = CONDITIONAL.exec(c)![1];
      let found: Bundle;
      try {
        found = await this.search(`${c}&_count=2`, d);
      } catch (e) {
        // A logical reference the server cannot search (e.g. a type without an identifier search
        // parameter) stays as it came; a conditional one fails the message like the server would.
        if (literal.has(c) || !FerryError.is(e) || e.retryable) throw e;
        resolved.set(c, null);
        continue;
      }
      const wanted = identifierOfQuery(c);
      // Checked here too: a lenient server ignores a search parameter it does not know and answers
      // every resource of the type.
      const matches = (found.entry ?? []).filter(
        (e) =>
          e.resource?.resourceType === type &&
          (e.search?.mode ?? 'match') === 'match' &&
          e.resource.id &&
          (!wanted || ((e.resource as { identifier?: Ident[] }).identifier ?? []).some((i) => i?.system === wanted.system && i?.value === wanted.value)),
      );
      if (matches.length === 1) {
        const to = `${type}/${matches[0].resource!.id}`;
        resolved.set(c, to);
        this.references.set(c, to);
        continue;
      }
      // A logical reference that does not resolve stays as it came; a conditional one must resolve.
      resolved.set(c, null);
      if (!literal.has(c)) continue;
      if (matches.length === 0) missing.push(type);
      else ambiguous.push(type);
    }
    // Types only: the identifier values are MRNs and the like.
    if (ambiguous.length)
      throw permanentDeliveryError('FHIR_REFERENCE_AMBIGUOUS', `fhir sink ${this.ctx.id}: ${ambiguous.length} conditional reference(s) match several resources on the server (${[...new Set(ambiguous)].join(', ')})`, {
        types: ambiguous,
      });
    if (missing.length && this.cfg.unresolvedReferences === 'retry')
      throw retryableDeliveryError(
        'FHIR_REFERENCE_UNRESOLVED',
        `fhir sink ${this.ctx.id}: ${missing.length} referenced resource(s) not on the server yet (${[...new Set(missing)].join(', ')}); retrying, the message that carries them may not be written yet`,
        { types: missing },
      );
    if (missing.length) this.ctx.logger.debug('conditional references left logical', { sink: this.ctx.id, messageId: d.message.id, types: missing });
    return { resolved, cached };
  }

  /**
   * For servers that cap transaction size (Medplum: 8 conditional writes): several transactions in
   * dependency order (referenced resources first); references to entries already written are
   * rewritten to the `Type/id` the server answered. Each chunk is all-or-nothing and idempotent
   * (conditional updates), so a retry after a partial failure converges; the message as a whole
   * is no longer atomic.
   */
  private async deliverInChunks(entries: BundleEntry[], d: Delivery, max: number): Promise<void> {
    const resolved = new Map<string, string>();
    const ordered = dependencyOrder(entries);
    for (let i = 0; i < ordered.length; i += max) {
      const chunk = ordered.slice(i, i + max).map((e) => {
        const c = structuredClone(e);
        forEachReference(c.resource, (ref) => {
          const to = resolved.get(ref.reference);
          if (to) ref.reference = to;
        });
        return c;
      });
      const response = await this.write({ resourceType: 'Bundle', type: 'transaction', entry: chunk }, d);
      this.checkEntries(response);
      this.learn(chunk, response);
      (response.entry ?? []).forEach((re, j) => {
        const ref = typeIdOf(re.response?.location) ?? (re.resource?.id ? `${re.resource.resourceType}/${re.resource.id}` : undefined);
        if (ref && chunk[j]?.fullUrl) resolved.set(chunk[j].fullUrl!, ref);
      });
    }
    this.ctx.logger.debug('transactions written', { sink: this.ctx.id, messageId: d.message.id, entries: entries.length, transactions: Math.ceil(entries.length / max) });
  }

  /** One transaction, with one retry after a 401 when the token can be renewed. */
  private write(tx: Bundle, d: Delivery): Promise<Bundle> {
    return this.exchange(`transaction to ${redact(this.cfg.baseUrl)}`, d, (options) => this.client.transaction({ body: tx as never, options: options as never }));
  }

  /** A search (`Type?query`), with the same auth, retry-after-401 and error classification as a transaction. */
  private search(query: string, d: Delivery): Promise<Bundle> {
    return this.exchange(`search of ${query.slice(0, query.indexOf('?'))} on ${redact(this.cfg.baseUrl)}`, d, (options) => this.client.request(query, { options: options as never }));
  }

  private async exchange(what: string, d: Delivery, call: (options: { signal: AbortSignal; headers: Record<string, string> }) => Promise<unknown>): Promise<Bundle> {
    let result = await this.send(what, d, call);
    if (result.kind === 'unauthorized' && this.auth.invalidate(result.authorization)) result = await this.send(what, d, call);
    if (result.kind === 'ok') return result.response;
    throw result.error;
  }

  private checkEntries(response: Bundle): void {
    const statuses = (response.entry ?? []).map((e) => e.response?.status ?? '');
    const bad = statuses.filter((s) => !/^2\d\d/.test(s));
    if (bad.length)
      throw permanentDeliveryError('FHIR_ENTRY_FAILED', `fhir sink ${this.ctx.id}: ${bad.length} of ${statuses.length} entries failed (${bad.join(', ')})`, { statuses });
  }

  private async send(
    what: string,
    d: Delivery,
    call: (options: { signal: AbortSignal; headers: Record<string, string> }) => Promise<unknown>,
  ): Promise<{ kind: 'ok'; response: Bundle } | { kind: 'unauthorized'; authorization?: string; error: FerryError } | { kind: 'error'; error: FerryError }> {
    const where = `fhir sink ${this.ctx.id}`;
    const signal = requestSignal(this.cfg.timeoutMs, d);
    let authorization: string | undefined;
    try {
      authorization = await this.auth.authorization(signal);
      const response = (await call({
        signal,
        headers: {
          ...(authorization ? { authorization } : {}),
          'x-ferry-message-id': d.message.id,
          'x-ferry-delivery-id': d.deliveryId,
        },
      })) as Bundle;
      if (!response || response.resourceType !== 'Bundle')
        return { kind: 'error', error: retryableDeliveryError('FHIR_BAD_RESPONSE', `${where}: ${what} answered something that is not a Bundle`) };
      return { kind: 'ok', response };
    } catch (e) {
      if (FerryError.is(e)) return { kind: 'error', error: e };
      const resp = (e as { response?: { status?: number; data?: unknown } }).response;
      if (!resp || typeof resp.status !== 'number') return { kind: 'error', error: networkDeliveryError(where, what, e, this.cfg.timeoutMs) };
      const status = resp.status;
      const issues = issuesOf(resp.data);
      const headers = (e as { config?: { headers?: Headers } }).config?.headers;
      const retryAfterMs = parseRetryAfter(headers?.get?.('retry-after'));
      const summary = summarize(issues);
      const msg = `${where}: ${what} answered HTTP ${status}${summary ? ` (${summary})` : ''}`;
      const details: Record<string, unknown> = { status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}), ...(issues.length ? { outcome: resp.data } : {}) };
      const error = classifyFhirFailure(status, issues)
        ? retryableDeliveryError(status === 429 ? 'THROTTLED' : 'FHIR_UNAVAILABLE', msg, details)
        : permanentDeliveryError(status === 401 || status === 403 ? 'UNAUTHORIZED' : 'FHIR_REJECTED', msg, details);
      if (status === 401) return { kind: 'unauthorized', authorization, error };
      return { kind: 'error', error };
    }
  }
}
