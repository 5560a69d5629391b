/**
 * The vendor-neutral half of the FHIR facade: one provider per configured connection, the decision
 * rule (which vendor path serves a type and interaction), the canonical transform (the engine's own
 * transforms, so a facade read equals the pipeline's output for the same vendor record), caching,
 * identities and the record of every write as a message. The HTTP side (auth, scopes, rate limits,
 * idempotency, audit, OperationOutcomes) is in facade.server.ts.
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Bundle, CapabilityStatement, Identifier, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import type { ApiConfig, ConnectionEntry } from '../config/engine.schema';
import { configError, FerryError, inputError } from '../errors';
import type { InboundMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import type { InsertResult } from '../store/message-store';
import type { FacadeProviderTypeRegistration } from '../plugin/plugin-host';
import type { FacadeStore, MessageStore } from '../store/message-store';
import { linkedIdentities, type LinkedIdentity } from './facade-links';
import {
  FACADE_INTERACTIONS,
  FACADE_OPERATIONS,
  facadeError,
  type FacadeCapability,
  type FacadeCallContext,
  type FacadeInteraction,
  type FacadeProvider,
  type FacadeRecord,
} from './provider';

export const MRN_TYPE = { system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' };

export interface FacadeDeps {
  store: MessageStore;
  transforms: MessageTransform[];
  logger: Logger;
  api: ApiConfig;
  connections: Record<string, ConnectionEntry>;
  providers: FacadeProviderTypeRegistration[];
  /** Stores messages as a source would (the engine's `submit`). */
  submit(sourceId: string, messages: InboundMessage[]): Promise<InsertResult[]>;
  now?: () => number;
}

/** One connection the facade serves. */
export interface FacadeConnection {
  id: string;
  kind: string;
  entry: ConnectionEntry;
  provider: FacadeProvider;
  memo: Map<string, { json: string; at: number }>;
}

export interface ReadResult {
  resource: Resource;
  /** Where it came from: the vendor now, the memory cache, or the store's copy. */
  from: 'vendor' | 'cache' | 'store';
  path?: string;
  /** Id of the message recording a write. */
  messageId?: string;
}

export interface SearchResult {
  resources: Resource[];
  next?: string;
  total?: number;
  path: string;
}

const CONTROL_PARAMS = new Set(['_count', '_cursor', '_format', '_pretty']);

/** The first identifier typed MR, as `system|value`. */
export function mrnOf(r: Resource): string | undefined {
  const ids = (r as { identifier?: Identifier[] }).identifier ?? [];
  const mr = ids.find(
    (i) => i.type?.coding?.some((c) => c.system === MRN_TYPE.system && c.code === MRN_TYPE.code) && i.value,
  );
  return mr ? `${mr.system ?? ''}|${mr.value}` : undefined;
}

/**
 * The key linking a patient across connections: the first identifier (`system|value`) in the
 * connection's `facade.identity.linkSystems`, in their order; without them, its MRN.
 */
export function linkKeyOf(r: Resource, linkSystems: readonly string[]): string | undefined {
  if (!linkSystems.length) return mrnOf(r);
  const ids = (r as { identifier?: Identifier[] }).identifier ?? [];
  for (const system of linkSystems) {
    const hit = ids.find((i) => i.system === system && i.value);
    if (hit) return `${system}|${hit.value}`;
  }
  return undefined;
}

/** The identifier system naming a patient's id at another connection (`facade.identity.linkedIdentifiers`). */
export const CONNECTION_ID_SYSTEM = 'urn:ferry:connection:';

const REFERENCE_PARAMS = new Set(['patient', 'subject', 'location', 'practitioner', 'encounter', 'result', 'target']);
const STRING_PARAMS = new Set(['name', 'family', 'given', 'address']);
const DATE_PARAMS = new Set(['date', 'birthdate', 'authoredon', '_lastUpdated']);

/** The FHIR search parameter type of a parameter name (for the CapabilityStatement). */
export function searchParamType(name: string): 'reference' | 'string' | 'date' | 'token' {
  return REFERENCE_PARAMS.has(name)
    ? 'reference'
    : STRING_PARAMS.has(name)
      ? 'string'
      : DATE_PARAMS.has(name)
        ? 'date'
        : 'token';
}

/** Where the facade keeps its cursor key in the store when `api.cursorSecret` is empty (a checkpoint row). */
export const CURSOR_KEY_CHECKPOINT = { sourceId: 'ferry.facade', key: 'cursor-key' } as const;

export class FacadeService {
  readonly connections = new Map<string, FacadeConnection>();
  /** The key signing paging cursors: `api.cursorSecret`, else one kept in the store (loaded on first use). */
  private cursorKey?: Promise<Buffer>;
  private readonly identified = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly deps: FacadeDeps) {
    this.now = deps.now ?? Date.now;
    if (deps.api.cursorSecret) this.cursorKey = Promise.resolve(Buffer.from(deps.api.cursorSecret, 'utf8'));
  }

  /** Creates a provider per connection the facade serves; refuses decision-rule overrides naming a path the provider has not. */
  start(): void {
    const problems: string[] = [];
    for (const [id, entry] of Object.entries(this.deps.connections)) {
      if (!entry.facade.enabled) continue;
      const reg = this.deps.providers.find((p) => p.kind === entry.kind);
      if (!reg) {
        problems.push(`connections.${id}.kind: no facade provider for kind ${entry.kind}`);
        continue;
      }
      const provider = reg.registration.create({
        id,
        kind: entry.kind,
        config: entry.config,
        logger: this.deps.logger.child({ connection: id }),
      });
      const paths = new Set(provider.capabilities().map((c) => c.path));
      for (const [k, p] of Object.entries(entry.facade.paths))
        if (!paths.has(p))
          problems.push(
            `connections.${id}.facade.paths.${k}: unknown path "${p}" for kind ${entry.kind} (paths: ${[...paths].join(', ')})`,
          );
      this.connections.set(id, { id, kind: entry.kind, entry, provider, memo: new Map() });
    }
    if (problems.length) throw configError('FACADE_CONFIG', problems.join('; '), { problems });
  }

  async close(): Promise<void> {
    for (const c of this.connections.values()) await c.provider.close?.().catch(() => undefined);
  }

  connection(id: string): FacadeConnection {
    const c = this.connections.get(id);
    if (!c) throw facadeError('not-found', `no connection "${id}" is served by this facade`);
    return c;
  }

  private transformFor(contentType: string): MessageTransform | undefined {
    const ct = contentType.split(';')[0].trim().toLowerCase();
    return this.deps.transforms.find((t) => t.canHandle(ct));
  }

  /**
   * The capability serving `type.interaction` on a connection, by the decision rule: the
   * connection's override, else the provider's default order; the first path the provider has for
   * it with a transform loaded for its records wins (that is the fallback: athena FHIR without
   * the athena-fhir plugin falls back to REST).
   */
  choose(c: FacadeConnection, type: string, interaction: FacadeInteraction): FacadeCapability | undefined {
    const caps = c.provider
      .capabilities()
      .filter((x) => x.type === type && x.interaction === interaction && this.transformFor(x.contentType));
    if (!caps.length) return undefined;
    const o = c.entry.facade.paths;
    const override = o[`${type}.${interaction}`] ?? o[`${type}.*`] ?? o[`*.${interaction}`] ?? o['*.*'];
    if (override) return caps.find((x) => x.path === override);
    const d = c.provider.defaultPaths();
    const order = d[`${type}.${interaction}`] ?? d[`${type}.*`] ?? d[`*.${interaction}`] ?? d['*'] ?? [];
    for (const p of order) {
      const hit = caps.find((x) => x.path === p);
      if (hit) return hit;
    }
    return caps[0];
  }

  private need(c: FacadeConnection, type: string, interaction: FacadeInteraction): FacadeCapability {
    const cap = this.choose(c, type, interaction);
    if (!cap)
      throw facadeError(
        'not-supported',
        `${interaction} of ${type} is not supported on connection ${c.id} (see GET /fhir/${c.id}/metadata)`,
      );
    return cap;
  }

  private callContext(c: FacadeConnection, path: string, signal?: AbortSignal): FacadeCallContext {
    return { path, signal, resolve: (ref) => this.resolveReference(c, ref) };
  }

  /** `Patient/<canonical id>` -> the vendor id at this connection (identity table, then the provider's id scheme). */
  async resolveReference(c: FacadeConnection, ref: string): Promise<{ type: string; vendorId: string } | undefined> {
    const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref.replace(/^.*\/fhir\/[^/]+\//, ''));
    if (!m) return undefined;
    const vendorId = await this.vendorIdOf(c, m[1], m[2]);
    return vendorId ? { type: m[1], vendorId } : undefined;
  }

  async vendorIdOf(c: FacadeConnection, type: string, canonicalId: string): Promise<string | undefined> {
    const known = await this.deps.store.facade?.facadeIdentityOf(c.id, type, canonicalId);
    return known?.vendorId ?? c.provider.vendorId(type, canonicalId);
  }

  /** The canonical resource of a vendor record: the engine's transform for its content type, as the pipeline runs it. */
  async canonical(c: FacadeConnection, type: string, rec: FacadeRecord): Promise<Resource> {
    const t = this.transformFor(rec.contentType);
    if (!t)
      throw new FerryError('INTERNAL_FACADE_TRANSFORM', `no transform loaded for ${rec.contentType}`, {
        kind: 'internal',
      });
    const headers = rec.headers ?? t.extractHeaders?.(rec.body) ?? {};
    const bundle: Bundle = await t.toFhir(
      {
        id: `facade-${randomUUID()}`,
        seq: 0,
        sourceId: `facade.${c.id}`,
        contentType: rec.contentType,
        body: rec.body,
        headers,
        receivedAt: new Date(this.now()),
        status: 'received',
      },
      { logger: this.deps.logger },
    );
    const res = (bundle.entry ?? []).map((e) => e.resource).find((r): r is Resource => r?.resourceType === type);
    if (!res?.id)
      throw new FerryError('INTERNAL_FACADE_TRANSFORM', `the ${t.name} transform gave no ${type} with an id`, {
        kind: 'internal',
      });
    return res;
  }

  private async remember(c: FacadeConnection, type: string, vendorId: string, r: Resource): Promise<void> {
    const json = JSON.stringify(r);
    const cache = c.entry.facade.cache;
    if (cache.ttlSeconds > 0) {
      const key = `${type}/${r.id}`;
      c.memo.delete(key);
      c.memo.set(key, { json, at: this.now() });
      while (c.memo.size > Math.max(1, cache.maxEntries)) c.memo.delete(c.memo.keys().next().value as string);
    }
    const f = this.deps.store.facade;
    if (!f) return;
    const mrn = type === 'Patient' ? linkKeyOf(r, c.entry.facade.identity?.linkSystems ?? []) : undefined;
    // An identity already recorded by this process is not written again on every read.
    const known = `${c.id}|${type}|${vendorId}|${r.id}|${mrn ?? ''}`;
    if (!this.identified.has(known)) {
      await f.facadeIdentify([{ connectionId: c.id, resourceType: type, vendorId, canonicalId: r.id!, mrn }]);
      if (this.identified.size >= 50_000) this.identified.delete(this.identified.values().next().value as string);
      this.identified.add(known);
    }
    if (cache.storeMaxAgeSeconds > 0) await f.facadeResourcePut(c.id, type, r.id!, json);
  }

  /** Read by canonical id: memory cache, store copy, or the vendor (`fresh`: the vendor, whatever is cached). */
  async read(
    connId: string,
    type: string,
    id: string,
    signal?: AbortSignal,
    opts: { fresh?: boolean } = {},
  ): Promise<ReadResult> {
    const c = this.connection(connId);
    const cap = this.need(c, type, 'read');
    const cache = c.entry.facade.cache;
    const key = `${type}/${id}`;
    const hit = opts.fresh ? undefined : c.memo.get(key);
    if (hit && cache.ttlSeconds > 0 && this.now() - hit.at < cache.ttlSeconds * 1000)
      return { resource: JSON.parse(hit.json), from: 'cache', path: cap.path };
    if (cache.storeMaxAgeSeconds > 0 && !opts.fresh) {
      const s = await this.deps.store.facade?.facadeResourceGet(c.id, type, id);
      if (s && this.now() - s.fetchedAt.getTime() < cache.storeMaxAgeSeconds * 1000)
        return { resource: JSON.parse(s.resource), from: 'store', path: cap.path };
    }
    const vendorId = await this.vendorIdOf(c, type, id);
    if (!vendorId) throw facadeError('not-found', `${type}/${id} is not an id of connection ${c.id}`);
    const rec = await c.provider.read(type, vendorId, this.callContext(c, cap.path, signal));
    if (!rec) throw facadeError('not-found', `${type}/${id} not found at ${c.id}`);
    const r = await this.canonical(c, type, rec);
    await this.remember(c, type, rec.vendorId, r);
    return { resource: r, from: 'vendor', path: cap.path };
  }

  /** Search: FHIR parameters translated by the provider; the next page as a signed cursor. */
  async search(
    connId: string,
    type: string,
    query: Record<string, string[]>,
    signal?: AbortSignal,
  ): Promise<SearchResult & { count: number; params: Record<string, string[]> }> {
    const c = this.connection(connId);
    const cap = this.need(c, type, 'search');
    let params: Record<string, string[]> = {};
    let cursor: string | undefined;
    const count = Math.min(
      Math.max(1, Number(query._count?.[0] ?? this.deps.api.defaultCount) || this.deps.api.defaultCount),
      this.deps.api.maxCount,
    );
    if (query._cursor?.[0]) {
      const cur = await this.openCursor(query._cursor[0]);
      if (cur.c !== c.id || cur.t !== type)
        throw inputError('FACADE_CURSOR', '_cursor: not a cursor of this connection and type');
      params = cur.q;
      cursor = cur.v;
    } else {
      for (const [k, v] of Object.entries(query)) if (!CONTROL_PARAMS.has(k)) params[k] = v;
      const allowed = new Set(cap.searchParams ?? []);
      const bad = Object.keys(params).filter((k) => !allowed.has(k.split(':')[0]));
      if (bad.length)
        throw facadeError(
          'invalid',
          `search parameter${bad.length > 1 ? 's' : ''} ${bad.join(', ')} not supported for ${type} on ${c.id} (supported: ${[...allowed].join(', ') || 'none'})`,
        );
      // By MRN: a patient this connection already answered is read directly.
      const ident = params.identifier?.[0];
      if (type === 'Patient' && ident && Object.keys(params).length === 1 && this.deps.store.facade) {
        const known = (await this.deps.store.facade.facadeIdentitiesByMrn('Patient', ident)).filter(
          (i) => i.connectionId === c.id,
        );
        if (known.length === 1) {
          const r = await this.read(c.id, 'Patient', known[0].canonicalId, signal).catch((e) =>
            FerryError.is(e) && e.details?.facadeIssue === 'not-found' ? undefined : Promise.reject(e),
          );
          if (r) return { resources: [r.resource], total: 1, path: cap.path, count, params };
        }
      }
    }
    const out = await c.provider.search(type, params, { cursor, count }, this.callContext(c, cap.path, signal));
    const resources: Resource[] = [];
    for (const rec of out.records) {
      const r = await this.canonical(c, type, rec);
      await this.remember(c, type, rec.vendorId, r);
      resources.push(r);
    }
    return {
      resources,
      next: out.next ? await this.sealCursor({ c: c.id, t: type, q: params, v: out.next }) : undefined,
      total: out.total,
      path: cap.path,
      count,
      params,
    };
  }

  /**
   * The cursor key when `api.cursorSecret` is empty: a random key kept in the store, so every
   * instance on that store signs and opens the same cursors and they outlive a restart. The first
   * instance to need it writes it; every instance then uses the stored value (`fresh`: read it again,
   * for the one race -- two instances writing it at the same first moment).
   */
  private key(fresh = false): Promise<Buffer> {
    if (this.deps.api.cursorSecret) return this.cursorKey!;
    if (!this.cursorKey || fresh) {
      const { sourceId, key } = CURSOR_KEY_CHECKPOINT;
      const store = this.deps.store;
      const p = (async () => {
        let v = await store.getCheckpoint(sourceId, key);
        if (!v) {
          await store.setCheckpoint(sourceId, key, randomBytes(32).toString('base64'));
          v = await store.getCheckpoint(sourceId, key);
        }
        if (!v)
          throw new FerryError('INTERNAL_FACADE_STORE', 'the store did not keep the facade cursor key', {
            kind: 'internal',
          });
        return Buffer.from(v, 'base64');
      })();
      // A store error is not kept: the next page tries again (the caller awaits p and sees the error).
      void p.catch(() => {
        if (this.cursorKey === p) this.cursorKey = undefined;
      });
      this.cursorKey = p;
    }
    return this.cursorKey;
  }

  private async sealCursor(v: { c: string; t: string; q: Record<string, string[]>; v: string }): Promise<string> {
    const body = Buffer.from(JSON.stringify(v)).toString('base64url');
    return `${body}.${createHmac('sha256', await this.key())
      .update(body)
      .digest('base64url')}`;
  }

  private async openCursor(s: string): Promise<{ c: string; t: string; q: Record<string, string[]>; v: string }> {
    const [body, mac] = s.split('.');
    const got = Buffer.from(mac ?? '', 'base64url');
    const valid = (k: Buffer) => {
      const want = body ? createHmac('sha256', k).update(body).digest() : Buffer.alloc(0);
      return !!body && got.length === want.length && timingSafeEqual(got, want);
    };
    if (!valid(await this.key()) && (this.deps.api.cursorSecret || !valid(await this.key(true))))
      throw inputError(
        'FACADE_CURSOR',
        '_cursor: not a cursor this facade issued (or one signed with another api.cursorSecret)',
      );
    return JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  }

  /** A write through the provider; the answer's canonical resource, remembered and recorded as a message. */
  async write(
    connId: string,
    type: string,
    interaction: 'create' | 'update' | 'book' | 'cancel' | 'checkin',
    args: { resource?: Resource; id?: string; patient?: string; appointmentType?: string; reason?: string },
    signal?: AbortSignal,
  ): Promise<ReadResult> {
    const c = this.connection(connId);
    const cap = this.need(c, type, interaction);
    const ctx = this.callContext(c, cap.path, signal);
    const p = c.provider;
    let rec: FacadeRecord;
    const vendorIdFor = async () => {
      const v = args.id ? await this.vendorIdOf(c, type, args.id) : undefined;
      if (!v) throw facadeError('not-found', `${type}/${args.id ?? '?'} is not an id of connection ${c.id}`);
      return v;
    };
    switch (interaction) {
      case 'create':
        if (!p.create) throw facadeError('not-supported', `create of ${type} is not supported on ${c.id}`);
        rec = await p.create(type, args.resource!, ctx);
        break;
      case 'update':
        if (!p.update) throw facadeError('not-supported', `update of ${type} is not supported on ${c.id}`);
        rec = await p.update(type, await vendorIdFor(), args.resource!, ctx);
        break;
      case 'book':
        if (!p.book) throw facadeError('not-supported', `$book is not supported on ${c.id}`);
        rec = await p.book(
          await vendorIdFor(),
          { patient: args.patient!, appointmentType: args.appointmentType, appointment: args.resource as any },
          ctx,
        );
        break;
      case 'cancel':
        if (!p.cancel) throw facadeError('not-supported', `$cancel is not supported on ${c.id}`);
        rec = await p.cancel(await vendorIdFor(), { reason: args.reason }, ctx);
        break;
      case 'checkin':
        if (!p.checkin) throw facadeError('not-supported', `$checkin is not supported on ${c.id}`);
        rec = await p.checkin(await vendorIdFor(), ctx);
        break;
      default:
        throw interaction satisfies never;
    }
    const r = await this.canonical(c, type, rec);
    await this.remember(c, type, rec.vendorId, r);
    // The write is a message like any polled record: in the console, the audit trail and the routes.
    let messageId: string | undefined;
    try {
      const [res] = await this.deps.submit(`facade.${c.id}`, [
        { contentType: rec.contentType, body: rec.body, headers: rec.headers },
      ]);
      messageId = res?.id;
    } catch (e) {
      // The vendor write happened: the answer says so; the missing record is logged (ids only).
      this.deps.logger.error('facade: write done at the vendor but not recorded as a message', {
        connection: c.id,
        resourceType: type,
        id: r.id,
        errorCode: (e as FerryError).code,
      });
    }
    return { resource: r, from: 'vendor', path: cap.path, messageId };
  }

  /**
   * The identities of the same patient at every served connection, this one included: by link key
   * (MRN or `identity.linkSystems`) and by explicit link (`$link`), transitively.
   */
  async identities(connId: string, id: string): Promise<LinkedIdentity[]> {
    const c = this.connection(connId);
    const f = this.deps.store.facade;
    if (!f) return [];
    const me = await f.facadeIdentityOf(c.id, 'Patient', id);
    if (!me) throw facadeError('not-found', `Patient/${id} has not been read through connection ${c.id} yet`);
    return (await linkedIdentities(f, { connection: c.id, id }, me.mrn)).filter((i) =>
      this.connections.has(i.connection),
    );
  }

  /**
   * Links the patient `id` at `connId` to `other` explicitly (`$link`), after reading both from their
   * vendors (a patient a vendor does not have is refused: the URL's 404 `not-found`, the other 422);
   * recorded once (false: the link was there already).
   */
  async link(
    connId: string,
    id: string,
    other: LinkedIdentity,
    createdBy: string,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const c = this.connection(connId);
    const f = this.store();
    const o = this.connections.get(other.connection);
    if (!o) throw facadeError('unresolved', `no connection "${other.connection}" is served by this facade`);
    if (o.id === c.id)
      throw inputError('FACADE_BODY', `a link joins patients at two connections (both are at ${c.id})`);
    await this.read(c.id, 'Patient', id, signal, { fresh: true });
    try {
      await this.read(o.id, 'Patient', other.id, signal, { fresh: true });
    } catch (e) {
      if (FerryError.is(e) && e.details?.facadeIssue === 'not-found')
        throw facadeError('unresolved', `Patient/${other.id} not found at connection ${o.id}: nothing linked`);
      throw e;
    }
    return f.facadeLink(
      'Patient',
      { connectionId: c.id, canonicalId: id },
      { connectionId: o.id, canonicalId: other.id },
      createdBy,
    );
  }

  /** Removes an explicit link (`$unlink`; no vendor call: a patient gone at its vendor can be unlinked); false: none. */
  async unlink(connId: string, id: string, other: LinkedIdentity): Promise<boolean> {
    const c = this.connection(connId);
    return this.store().facadeUnlink(
      'Patient',
      { connectionId: c.id, canonicalId: id },
      { connectionId: other.connection, canonicalId: other.id },
    );
  }

  private store(): FacadeStore {
    const f = this.deps.store.facade;
    if (!f) throw new FerryError('INTERNAL_FACADE_STORE', 'the store has no facade tables', { kind: 'internal' });
    return f;
  }

  /** What works on a connection, as a CapabilityStatement. */
  capabilityStatement(connId: string, baseUrl: string): CapabilityStatement {
    const c = this.connection(connId);
    const types = [...new Set(c.provider.capabilities().map((x) => x.type))].sort();
    const resource = types
      .map((type) => {
        const chosen = FACADE_INTERACTIONS.map((i) => this.choose(c, type, i)).filter(
          (x): x is FacadeCapability => !!x,
        );
        if (!chosen.length) return undefined;
        const interaction = chosen
          .filter((x) => ['read', 'search', 'create', 'update'].includes(x.interaction))
          .map((x) => ({ code: x.interaction === 'search' ? 'search-type' : x.interaction }));
        const ops: { name: string; definition: string }[] = chosen
          .filter((x) => FACADE_OPERATIONS.includes(x.interaction))
          .map((x) => ({ name: x.interaction, definition: `urn:ferry:facade:${type}-${x.interaction}` }));
        // A patient's identities across connections, and the explicit links between them.
        if (type === 'Patient' && chosen.some((x) => x.interaction === 'read'))
          for (const name of ['identities', 'link', 'unlink'])
            ops.push({ name, definition: `urn:ferry:facade:Patient-${name}` });
        const search = chosen.find((x) => x.interaction === 'search');
        return {
          type,
          documentation: `paths: ${chosen.map((x) => `${x.interaction} via ${x.path}`).join(', ')}`,
          interaction,
          searchParam: search?.searchParams?.map((name) => ({ name, type: searchParamType(name) })),
          operation: ops.length ? ops : undefined,
        };
      })
      .filter((x) => !!x);
    return {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date(this.now()).toISOString(),
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['application/fhir+json'],
      software: { name: 'Ferry FHIR facade' },
      implementation: { description: `connection ${c.id} (${c.kind})`, url: `${baseUrl}/fhir/${c.id}` },
      rest: [
        {
          mode: 'server',
          security: {
            description: 'Bearer API token or OIDC access token with scope connection:' + c.id + ':read / :write',
          },
          resource: resource as any,
        },
      ],
    } as CapabilityStatement;
  }
}
