import type { Bundle } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import { FerryError, transientError } from '../errors';
import { errorFields } from '../logging/logger';
import { DATA_QUALITY_EVENT, type DeliveryStatus, type MessageEvent, type MessageHeaders, type MessageStatus, type StoredDelivery, type StoredError, type StoredMessage } from '../model/message';
import { lazyJson } from '../util/lazy-json';
import { contentHash } from './content-hash';
import { newId } from './ids';
import type {
  ApiTokenRecord,
  AuditEntry,
  AuditFilter,
  StoredAuditEntry,
  StoredConfigVersion,
  BacklogInfo,
  ClaimedDelivery,
  DeliveryClaimFilter,
  CompleteOptions,
  CompleteResult,
  DeliveryOutcome,
  InsertOptions,
  InsertResult,
  InstanceStart,
  MessageFilter,
  MessageStore,
  NewMessage,
  ProcessedMessage,
  PruneOptions,
  PruneResult,
  RoutingOutcome,
  SinkHold,
  StoreStats,
  FacadeIdentity,
  FacadeStore,
  ThroughputSeries,
} from './message-store';
import { ddl, migrations, type Dialect } from './schema';

export type Row = Record<string, any>;

type EventRow = { id: string; at: number; status: string; sinkId?: string; routeId?: string; detail?: string | null };

/** A shared transaction's connection that collects event rows, written together before the commit. */
interface BufferedExec extends SqlExec {
  events: EventRow[];
}

/** One connection (or transaction) the store's SQL runs on. Placeholders are `?`. */
export interface SqlExec {
  all(sql: string, params?: unknown[]): Promise<Row[]>;
  run(sql: string, params?: unknown[]): Promise<number>;
}

export interface GroupCommitOptions {
  /**
   * Most messages committed in one transaction. There is no wait timer: a batch is every caller of
   * one event-loop turn plus those arriving while a commit is in flight.
   */
  maxBatch: number;
}

export interface SqlStoreOptions {
  logger: Logger;
  groupCommit?: Partial<GroupCommitOptions>;
  /** Clock, for tests. */
  now?: () => number;
}

interface PendingTransform {
  text: string;
  key: string | null;
  at: number;
}

type ProcessingOutcome = ProcessedMessage['outcome'];

/** One message's processing result, ready to write (see SqlMessageStore.plan). */
interface ProcessingPlan {
  id: string;
  outcome: ProcessingOutcome;
  now: number;
  /** The cached transform result (object and text), when the transform ran in this process. */
  cached?: { bundle?: Bundle; json: string };
  /** The held transform result, written with the new status. */
  t?: PendingTransform;
  /** The message's next status. */
  status: string;
  /** Data-quality issues: one event each, before the outcome's. */
  issues?: ProcessedMessage['issues'];
}

interface PendingInsert {
  messages: NewMessage[];
  opts?: InsertOptions;
  resolve(r: InsertResult[]): void;
  reject(e: unknown): void;
}

const OPEN_DELIVERY = `('pending', 'failed')`;
const UNROUTED_MESSAGE = `('received', 'transformed')`;

function dedupKey(h: MessageHeaders | undefined): string | undefined {
  if (!h?.controlId) return undefined;
  return `${h.sendingApplication ?? ''}|${h.sendingFacility ?? ''}|${h.controlId}`;
}

const num = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v));
const date = (v: unknown): Date | undefined => (v === null || v === undefined ? undefined : new Date(Number(v)));
const json = <T>(v: unknown): T | undefined => (v === null || v === undefined ? undefined : (JSON.parse(String(v)) as T));
const errJson = (e: StoredError): string =>
  JSON.stringify({ code: e.code, message: e.message, retryable: e.retryable, outcome: e.outcome });

/**
 * The store logic, written once in portable SQL for SQLite and PostgreSQL. A subclass supplies
 * the connection: `tx` (a transaction; `durable` ones must survive power loss before they
 * resolve), `read`, and the dialect bits (row locking for claims).
 */
/**
 * Undoes an operation's savepoint after it failed with `error`. When the savepoint is gone --
 * SQLite rolled the whole transaction back itself (disk full, an I/O error) -- the transaction
 * as a whole has failed: `error` is thrown again, not "no such savepoint".
 */
async function rollbackTo(x: SqlExec, savepoint: string, error: unknown): Promise<void> {
  try {
    await x.run(`ROLLBACK TO SAVEPOINT ${savepoint}`);
    await x.run(`RELEASE SAVEPOINT ${savepoint}`);
  } catch {
    throw error;
  }
}

/** Codes of a store whose writes fail for want of space, memory or a writable file (both stores). */
const CANNOT_WRITE = new Set(['FERRY_E_TRANSIENT_STORE_FULL', 'FERRY_E_TRANSIENT_STORE_IO', 'FERRY_E_TRANSIENT_STORE_READONLY', 'FERRY_E_TRANSIENT_STORE_NOMEM']);

/**
 * After writes failed for want of space (or an I/O error), the store counts as writable again once
 * writes have succeeded this long after the last such failure: on a nearly full disk small writes
 * succeed between failing bigger ones, and readiness and the log would flap with each.
 */
const WRITABLE_AFTER_MS = 1000;

export abstract class SqlMessageStore implements MessageStore {
  abstract readonly kind: string;
  protected abstract readonly dialect: Dialect;
  protected readonly logger: Logger;
  /** This process's clock (`opts.now` in tests). */
  protected readonly localClock: () => number;
  /**
   * The database's clock minus this process's (PostgreSQL measures it): every time the store
   * writes or compares -- leases above all -- is on the database's clock, so instances whose
   * clocks disagree still agree on when a lease runs out.
   */
  protected clockOffsetMs = 0;
  readonly groupCommit: GroupCommitOptions;
  private opened = false;
  private closing = false;
  private queue: PendingInsert[] = [];
  private queuedCount = 0;
  private timer?: NodeJS.Immediate;
  private flushing?: Promise<void>;
  /**
   * Bundles recorded by recordTransformed whose routing is not recorded yet (object and JSON), so
   * a delivery of the unchanged bundle references the message's bundle instead of a second copy,
   * without serialising it again.
   */
  private transformed = new Map<string, { bundle?: Bundle; json: string }>();
  /** Commits made by `insert` (for tests and the benchmark). */
  insertCommits = 0;
  /** State transitions waiting for the next shared transaction. */
  private writes: { fn: (x: SqlExec) => Promise<unknown>; resolve(v: unknown): void; reject(e: unknown): void }[] = [];
  /** Set while writes fail for want of space (disk full, an I/O error): see `noteWriteFailure`. */
  private unwritable?: { error: FerryError; since: number; last: number; failures: number };
  private writeTimer?: { cancel(): void };
  private writing?: Promise<void>;
  /** Transform results waiting for the routing of their message (no batched writes). */
  private pendingTransforms = new Map<string, PendingTransform>();
  /** Transactions made by state transitions, and how many transitions they carried. */
  writeCommits = 0;
  writeOps = 0;

  constructor(opts: SqlStoreOptions) {
    this.logger = opts.logger;
    this.localClock = opts.now ?? Date.now;
    this.groupCommit = { maxBatch: opts.groupCommit?.maxBatch || 256 };
  }

  protected abstract connect(): Promise<void>;
  protected abstract disconnect(): Promise<void>;
  /**
   * A transaction. `durable`: must survive power loss before it resolves. `long`: a bulk admin
   * operation (replay, prune) that may legitimately take long; exempt from the store's per-query
   * timeout where it has one.
   */
  protected abstract tx<T>(fn: (x: SqlExec) => Promise<T>, opts?: { durable?: boolean; long?: boolean }): Promise<T>;
  protected abstract read<T>(fn: (x: SqlExec) => Promise<T>): Promise<T>;
  /** Runs the migrations not yet applied, serialised against other processes. */
  protected abstract withMigrationLock<T>(fn: (x: SqlExec) => Promise<T>): Promise<T>;
  /** `FOR UPDATE ... SKIP LOCKED` where the database has it. */
  protected lockClause(_table: string): string {
    return '';
  }
  /**
   * Group state transitions into shared transactions (SQLite: one connection, commits are the
   * cost). PostgreSQL runs them as concurrent transactions over its pool instead.
   */
  protected readonly batchWrites: boolean = true;
  /** `FOR UPDATE` (wait for the row) where the database has row locks. */
  protected rowLockClause(): string {
    return '';
  }
  /** Serialises concurrent writers of the same duplicate keys across processes (PostgreSQL). */
  protected async lockKeys(_x: SqlExec, _keys: string[]): Promise<void> {}
  /** Called after prune to give space back to the file system. */
  protected async compact(): Promise<void> {}

  // ------------------------------------------------------------------------------------------
  // Lifecycle

  async open(): Promise<void> {
    if (this.opened) return;
    await this.connect();
    try {
      await this.migrate();
    } catch (e) {
      await this.disconnect().catch(() => undefined);
      throw e;
    }
    this.opened = true;
    this.closing = false;
  }

  async close(): Promise<void> {
    if (!this.opened) return;
    this.closing = true;
    if (this.timer) this.clearTimer();
    while (this.queue.length || this.flushing || this.writes.length || this.writing) {
      if (this.flushing) await this.flushing;
      else if (this.queue.length) await this.flush();
      else if (this.writing) await this.writing;
      else {
        this.cancelWriteTimer();
        await this.flushWrites();
      }
    }
    // Held transform results: written so the next start sees them (it would redo them otherwise).
    await this.flushPendingTransforms().catch(() => undefined);
    this.opened = false;
    await this.disconnect();
  }

  isOpen(): boolean {
    return this.opened && !this.closing;
  }

  /** The schema version in the database. */
  async schemaVersion(): Promise<number> {
    return this.read(async (x) => {
      const r = await x.all('SELECT MAX(version) AS v FROM schema_migrations');
      return num(r[0]?.v) ?? 0;
    });
  }

  private async migrate(): Promise<void> {
    await this.withMigrationLock(async (x) => {
      await x.run(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at ${this.dialect === 'sqlite' ? 'INTEGER' : 'BIGINT'} NOT NULL)`);
      const rows = await x.all('SELECT version FROM schema_migrations');
      const done = new Set(rows.map((r) => Number(r.version)));
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        for (const s of [...m.statements, ...(m.only?.[this.dialect] ?? [])]) await x.run(ddl(s, this.dialect));
        await x.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [m.version, m.name, this.now()]);
        this.logger.info('store migration applied', { store: this.kind, version: m.version, migration: m.name });
      }
      const max = Math.max(0, ...done);
      const known = migrations[migrations.length - 1].version;
      if (max > known) {
        throw new FerryError('CONFIG_STORE_SCHEMA_NEWER', `the store's schema version ${max} is newer than this Ferry knows (${known}); upgrade Ferry`, { kind: 'config' });
      }
    });
  }

  protected assertOpen(): void {
    if (!this.opened || this.closing) throw new FerryError('TRANSIENT_STORE_CLOSED', 'the message store is not open', { kind: 'transient' });
  }

  // ------------------------------------------------------------------------------------------
  // Insert with group commit

  insert(messages: NewMessage[], opts?: InsertOptions): Promise<InsertResult[]> {
    try {
      this.assertOpen();
    } catch (e) {
      return Promise.reject(e);
    }
    if (!messages.length && !opts?.checkpoint) return Promise.resolve([]);
    return new Promise<InsertResult[]>((resolve, reject) => {
      this.queue.push({ messages, opts, resolve, reject });
      this.queuedCount += Math.max(1, messages.length);
      this.schedule();
    });
  }

  private clearTimer(): void {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearImmediate(t);
  }

  private schedule(): void {
    if (this.flushing) return; // the running flush picks the queue up when it ends
    if (this.queuedCount >= this.groupCommit.maxBatch) {
      if (this.timer) this.clearTimer();
      void this.flush();
      return;
    }
    if (this.timer) return;
    // The next turn of the event loop: every caller whose I/O arrived in this turn joins the
    // batch, and callers arriving while a commit is in flight join the next one -- so under load
    // batches fill by themselves and nobody waits on a timer.
    this.timer = setImmediate(() => {
      this.timer = undefined;
      void this.flush();
    });
  }

  private flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (!this.queue.length) return Promise.resolve();
    // Take up to maxBatch messages (whole calls; a single call larger than maxBatch goes alone).
    const batch: PendingInsert[] = [];
    let n = 0;
    while (this.queue.length) {
      const next = this.queue[0];
      const size = Math.max(1, next.messages.length);
      if (batch.length && n + size > this.groupCommit.maxBatch) break;
      batch.push(this.queue.shift()!);
      n += size;
    }
    this.queuedCount -= n;
    this.flushing = this.commitBatch(batch).finally(() => {
      this.flushing = undefined;
      if (this.queue.length) {
        if (this.queuedCount >= this.groupCommit.maxBatch || this.closing) void this.flush();
        else this.schedule();
      }
    });
    return this.flushing;
  }

  private async commitBatch(batch: PendingInsert[]): Promise<void> {
    // Refuse malformed calls alone, before the transaction, so they cannot fail the others.
    const valid: PendingInsert[] = [];
    for (const p of batch) {
      const bad = this.validate(p.messages);
      if (bad) p.reject(bad);
      else valid.push(p);
    }
    if (!valid.length) return;
    try {
      const results = await this.tx((x) => this.insertCalls(x, valid), { durable: true });
      this.insertCommits++;
      valid.forEach((p, i) => p.resolve(results[i]));
    } catch (e) {
      // One call alone, or the store itself unavailable (a lost connection: every call would fail
      // the same way): everybody is told, nobody is committed one by one.
      if (valid.length === 1 || (e instanceof FerryError && e.retryable)) {
        const err = this.writeError(e);
        for (const p of valid) p.reject(err);
        return;
      }
      // Commit each call alone so one caller's failure is not everybody's.
      this.logger.warn('store group commit failed; committing calls one by one', { store: this.kind, calls: valid.length, ...errorFields(e) });
      for (const p of valid) {
        try {
          const [r] = await this.tx((x) => this.insertCalls(x, [p]), { durable: true });
          this.insertCommits++;
          p.resolve(r);
        } catch (e2) {
          p.reject(this.writeError(e2));
        }
      }
    }
  }

  private validate(messages: NewMessage[]): FerryError | undefined {
    for (const m of messages) {
      if (!m || typeof m.sourceId !== 'string' || !m.sourceId) return new FerryError('INPUT_MESSAGE_NO_SOURCE', 'a stored message needs a sourceId', { kind: 'input' });
      if (!Buffer.isBuffer(m.body)) return new FerryError('INPUT_MESSAGE_BODY', 'a stored message body must be a Buffer', { kind: 'input' });
      if (typeof m.contentType !== 'string' || !m.contentType) return new FerryError('INPUT_MESSAGE_CONTENT_TYPE', 'a stored message needs a content type', { kind: 'input' });
    }
    return undefined;
  }

  clockAheadMs(): number {
    return this.clockOffsetMs;
  }

  /** Now on the database's clock (see `clockOffsetMs`). */
  protected now(): number {
    return this.localClock() + this.clockOffsetMs;
  }

  /** The dialect's view of a driver error (a transient FerryError for the store's own trouble). */
  protected classify(e: unknown): unknown {
    return e;
  }

  /** False while writes fail for want of space or a writable file (readiness, quiet loops). */
  protected writable(): boolean {
    return !this.unwritable;
  }

  /** A classified error: a disk-full (or I/O) failure makes the store unwritable, logged once. */
  protected noteWriteFailure(e: unknown): void {
    if (!(e instanceof FerryError) || !CANNOT_WRITE.has(e.code)) return;
    const now = Date.now();
    if (this.unwritable) {
      this.unwritable.last = now;
      this.unwritable.failures++;
      return;
    }
    this.unwritable = { error: e, since: now, last: now, failures: 1 };
    this.logger.warn(`${this.kind} store cannot write`, { store: this.kind, errorCode: e.code, error: e.message });
  }

  /** A committed write: writable again once that has lasted `WRITABLE_AFTER_MS` past the last failure. */
  protected noteWriteSuccess(): void {
    const u = this.unwritable;
    if (!u) return;
    const now = Date.now();
    if (now - u.last < WRITABLE_AFTER_MS) return;
    this.logger.info(`${this.kind} store writable again`, { store: this.kind, was: u.error.code, failures: u.failures, forMs: now - u.since });
    this.unwritable = undefined;
  }

  private writeError(e: unknown): FerryError {
    if (e instanceof FerryError) return e;
    return transientError('STORE_WRITE', `could not store messages: ${(e as Error)?.message ?? String(e)}`, { store: this.kind }, e);
  }

  /** Rows per multi-row INSERT (bound parameters stay far below both databases' limits). */
  private static readonly CHUNK = 200;

  /**
   * Inserts every message of several insert calls in one transaction: one duplicate lookup for
   * the whole batch, multi-row INSERTs for messages and their `received` events.
   */
  private async insertCalls(x: SqlExec, calls: { messages: NewMessage[]; opts?: InsertOptions }[]): Promise<InsertResult[][]> {
    const now = this.now();
    type Item = {
      m: NewMessage;
      headers: MessageHeaders;
      receivedAt: number;
      key?: string;
      hash?: string;
      ignore?: readonly string[];
      windowMs?: number;
      policy?: string;
      result?: InsertResult;
    };
    const items: Item[][] = calls.map((c) =>
      c.messages.map((m) => {
        const headers = m.headers ?? {};
        const dup = c.opts?.duplicates;
        const key = dup ? dedupKey(headers) : undefined;
        // Only messages that are compared need their hash (a source's own, or the body's).
        const hash = key ? (m.contentHash ?? contentHash(m.contentType, m.body, dup?.ignoreFields)) : m.contentHash;
        return { m, headers, receivedAt: m.receivedAt?.getTime() ?? now, key, hash, ignore: dup?.ignoreFields, windowMs: dup?.windowMs, policy: dup?.policy };
      }),
    );
    const flat = items.flat();

    // Duplicates: earlier messages (stored, or earlier in this batch) with the same source + key in
    // the window, compared by content. A row stored before content hashes (NULL) brings its body.
    type Seen = { id: string; receivedAt: number; hash?: string; legacy?: { contentType: string; body?: Buffer } };
    const checked = flat.filter((i) => i.key);
    const seen = new Map<string, Seen[]>();
    if (checked.length) {
      const groupKeys = [...new Set(checked.map((i) => `${i.m.sourceId}|${i.key}`))].sort();
      await this.lockKeys(x, groupKeys);
      const since = Math.min(...checked.map((i) => i.receivedAt - (i.windowMs ?? 0)));
      // Per source, so the lookup walks the (source_id, dedup_key, received_at) index.
      const bySource = new Map<string, Set<string>>();
      for (const i of checked) {
        const set = bySource.get(i.m.sourceId) ?? new Set<string>();
        set.add(i.key!);
        bySource.set(i.m.sourceId, set);
      }
      const lookups = [...bySource].flatMap(([sourceId, set]) => {
        const keys = [...set];
        const parts: { sourceId: string; keys: string[] }[] = [];
        for (let o = 0; o < keys.length; o += SqlMessageStore.CHUNK) parts.push({ sourceId, keys: keys.slice(o, o + SqlMessageStore.CHUNK) });
        return parts;
      });
      const legacy: Seen[] = [];
      for (const { sourceId, keys: part } of lookups) {
        const rows = await x.all(
          `SELECT id, source_id, dedup_key, received_at, content_hash, content_type FROM messages
           WHERE source_id = ? AND dedup_key IN (${part.map(() => '?').join(', ')}) AND received_at >= ? AND duplicate_of IS NULL ORDER BY seq`,
          [sourceId, ...part, since],
        );
        for (const r of rows) {
          const k = `${r.source_id}|${r.dedup_key}`;
          const list = seen.get(k) ?? [];
          const e: Seen = { id: r.id, receivedAt: Number(r.received_at) };
          if (r.content_hash != null) e.hash = r.content_hash as string;
          else {
            e.legacy = { contentType: r.content_type as string };
            legacy.push(e);
          }
          list.push(e);
          seen.set(k, list);
        }
      }
      for (let o = 0; o < legacy.length; o += SqlMessageStore.CHUNK) {
        const part = legacy.slice(o, o + SqlMessageStore.CHUNK);
        const byId = new Map(part.map((e) => [e.id, e]));
        const rows = await x.all(`SELECT message_id, body FROM message_content WHERE message_id IN (${part.map(() => '?').join(', ')})`, part.map((e) => e.id));
        for (const r of rows) if (r.body != null) byId.get(r.message_id)!.legacy!.body = Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body as Uint8Array);
      }
    }
    /** An earlier message's content hash as `item` computes it (a legacy row's from its body; pruned: unknown). */
    const hashOf = (e: Seen, item: Item): string | undefined =>
      e.hash ?? (e.legacy?.body ? contentHash(e.legacy.contentType, e.legacy.body, item.ignore) : undefined);

    const toInsert: { item: Item; id: string; duplicateOf?: string }[] = [];
    const dupEvents: { id: string; detail: string }[] = [];
    const reusedEvents: { id: string; detail: string }[] = [];
    for (const item of flat) {
      let duplicateOf: string | undefined;
      let reuses: string | undefined;
      if (item.key) {
        const list = seen.get(`${item.m.sourceId}|${item.key}`);
        const from = item.receivedAt - (item.windowMs ?? 0);
        for (let j = (list?.length ?? 0) - 1; j >= 0; j--) {
          const e = list![j];
          if (e.receivedAt < from) continue;
          if (hashOf(e, item) === item.hash) {
            duplicateOf = e.id;
            break;
          }
          // The newest message with this identity but other content.
          reuses ??= e.id;
        }
        if (duplicateOf) reuses = undefined;
        if (duplicateOf && item.policy !== 'accept') {
          dupEvents.push({ id: duplicateOf, detail: item.policy === 'reject' ? 'rejected' : 'ignored' });
          item.result = { id: duplicateOf, duplicate: true, duplicateOf, stored: false };
          continue;
        }
      }
      const id = newId(now);
      toInsert.push({ item, id, duplicateOf });
      item.result = { id, duplicate: !!duplicateOf, duplicateOf, stored: true };
      if (reuses) {
        item.result.reusesControlIdOf = reuses;
        reusedEvents.push({ id, detail: `control id of ${reuses}, other content` });
      }
      if (item.key && !duplicateOf) {
        const k = `${item.m.sourceId}|${item.key}`;
        const list = seen.get(k) ?? [];
        list.push({ id, receivedAt: item.receivedAt, hash: item.hash });
        seen.set(k, list);
      }
    }

    for (let o = 0; o < toInsert.length; o += SqlMessageStore.CHUNK) {
      const part = toInsert.slice(o, o + SqlMessageStore.CHUNK);
      const params: unknown[] = [];
      for (const { item, id, duplicateOf } of part) {
        const dk = dedupKey(item.headers);
        params.push(id, item.m.sourceId, item.m.contentType, JSON.stringify(item.headers), item.receivedAt, duplicateOf ?? null, dk ?? null, item.headers.orderingKey ?? null, now, item.hash ?? null, item.headers.messageType ?? null, item.headers.controlId ?? null);
      }
      const n = await x.run(
        `INSERT INTO messages (id, source_id, content_type, headers, received_at, status, duplicate_of, dedup_key, ordering_key, updated_at, content_hash, message_type, control_id)
         VALUES ${part.map(() => `(?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?, ?, ?)`).join(', ')}`,
        params,
      );
      if (n !== part.length) throw new FerryError('INTERNAL_STORE_INSERT', `inserted ${n} of ${part.length} messages`, { kind: 'internal' });
      await x.run(
        `INSERT INTO message_content (message_id, body) VALUES ${part.map(() => '(?, ?)').join(', ')}`,
        part.flatMap((t) => [t.id, t.item.m.body]),
      );
    }
    const events = [
      ...toInsert.map((t) => ({ id: t.id, status: 'received', detail: t.duplicateOf ? `duplicate of ${t.duplicateOf}` : null })),
      ...dupEvents.map((d) => ({ id: d.id, status: 'duplicate', detail: d.detail })),
      ...reusedEvents.map((d) => ({ id: d.id, status: 'control-id-reused', detail: d.detail })),
    ];
    for (let o = 0; o < events.length; o += SqlMessageStore.CHUNK) {
      const part = events.slice(o, o + SqlMessageStore.CHUNK);
      await x.run(
        `INSERT INTO message_events (message_id, at, status, detail) VALUES ${part.map(() => '(?, ?, ?, ?)').join(', ')}`,
        part.flatMap((e) => [e.id, now, e.status, e.detail]),
      );
    }
    for (const c of calls) {
      if (c.opts?.checkpoint) await this.upsertCheckpoint(x, c.opts.checkpoint.sourceId, c.opts.checkpoint.key, c.opts.checkpoint.value, now);
    }
    return items.map((list) => list.map((i) => i.result!));
  }

  private event(x: SqlExec, messageId: string, at: number, status: string, sinkId?: string, routeId?: string, detail?: string): Promise<void> {
    return this.events_(x, [{ id: messageId, at, status, sinkId, routeId, detail }]);
  }

  // ------------------------------------------------------------------------------------------
  // Group commit of state transitions

  /**
   * Runs `fn` in a transaction shared with the other state transitions requested in the same
   * turn of the event loop (or while the previous one commits). Each runs inside its own
   * savepoint, so one failing does not undo the others; each caller resolves after the commit.
   */
  protected write<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    if (!this.batchWrites) return this.tx(fn);
    return new Promise<T>((resolve, reject) => {
      this.writes.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.scheduleWrites();
    });
  }

  private cancelWriteTimer(): void {
    this.writeTimer?.cancel();
    this.writeTimer = undefined;
  }

  private scheduleWrites(): void {
    if (this.writing || this.writeTimer) return;
    // The next turn of the event loop: transitions requested in this turn share the transaction.
    // (Holding them longer for bigger transactions measured slower: the stages wait on each other.)
    const t = setImmediate(() => {
      this.writeTimer = undefined;
      void this.flushWrites();
    });
    this.writeTimer = { cancel: () => clearImmediate(t) };
  }

  private flushWrites(): Promise<void> {
    if (this.writing) return this.writing;
    const batch = this.writes.splice(0, 512);
    if (!batch.length) return Promise.resolve();
    this.writing = (async () => {
      if (batch.length === 1) {
        try {
          batch[0].resolve(await this.tx(batch[0].fn));
        } catch (e) {
          batch[0].reject(e);
        }
        this.writeCommits++;
        this.writeOps++;
        return;
      }
      const results: { ok: boolean; v: unknown }[] = [];
      try {
        await this.tx(async (tx) => {
          // Every transition's event rows go into one multi-row INSERT before the commit; an
          // operation rolled back to its savepoint drops its own rows.
          const x: BufferedExec = { all: (q, p) => tx.all(q, p), run: (q, p) => tx.run(q, p), events: [] };
          for (const op of batch) {
            const mark = x.events.length;
            await x.run('SAVEPOINT ferry_op');
            try {
              const v = await op.fn(x);
              await x.run('RELEASE SAVEPOINT ferry_op');
              results.push({ ok: true, v });
            } catch (e) {
              x.events.length = mark;
              await rollbackTo(x, 'ferry_op', e);
              results.push({ ok: false, v: e });
            }
          }
          await this.insertEvents(tx, x.events);
        });
        this.writeCommits++;
        this.writeOps += batch.length;
        results.forEach((r, i) => (r.ok ? batch[i].resolve(r.v) : batch[i].reject(r.v)));
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    })().finally(() => {
      this.writing = undefined;
      if (this.writes.length) this.scheduleWrites();
    });
    return this.writing;
  }

  /** Commits the transitions queued so far, so what follows reads its own writes. */
  private async settle(transforms = true): Promise<void> {
    if (transforms) await this.flushPendingTransforms();
    if (this.writing) await this.writing;
    if (this.writes.length) {
      this.cancelWriteTimer();
      await this.flushWrites();
    }
  }

  /** Reads for the engine's own loops: held transform results need not be written first. */
  private readLoop<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    return this.readSettled(fn, false);
  }

  private async readSettled<T>(fn: (x: SqlExec) => Promise<T>, transforms = true): Promise<T> {
    await this.settle(transforms);
    return this.read(fn);
  }

  /**
   * Reads for people and tools (the admin API, `ferry` commands, metrics, the candidates of a
   * replay): after the transitions queued so far commit, like `readSettled`, but where the store
   * can, on a connection of their own off the engine's thread (`readAside`), so a slow query over
   * a large store does not stop the engine. Only reads: `run` is refused there.
   */
  private async readForAdmin<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    await this.settle(true);
    return this.readAside(fn);
  }

  /** A read on a connection other than the engine's, where the store has one (SQLite); else `read`. */
  protected readAside<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    return this.read(fn);
  }

  /** Claims do not wait for held transform results: an unrouted message only holds back more. */
  private claimTx<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    // SQLite (one writer): a claim joins the shared transaction of the state transitions queued
    // before it, so it sees them and costs no commit of its own.
    if (this.batchWrites) return this.write(fn);
    return this.txSettled(fn, { transforms: false });
  }

  private async txSettled<T>(fn: (x: SqlExec) => Promise<T>, opts: { transforms?: boolean; long?: boolean } = {}): Promise<T> {
    await this.settle(opts.transforms ?? true);
    return this.tx(fn, { long: opts.long });
  }

  // ------------------------------------------------------------------------------------------
  // Reads

  protected toMessage(r: Row, withBody: boolean, withBundle: boolean): StoredMessage {
    const m: StoredMessage = {
      id: r.id,
      seq: Number(r.seq),
      sourceId: r.source_id,
      contentType: r.content_type,
      headers: json<MessageHeaders>(r.headers) ?? {},
      receivedAt: new Date(Number(r.received_at)),
      status: r.status as MessageStatus,
    };
    if (withBody && r.body !== null && r.body !== undefined) m.body = Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body);
    if (withBundle && r.bundle) lazyJson(m, 'bundle', String(r.bundle));
    if (r.error) m.error = json<StoredError>(r.error);
    if (r.duplicate_of) m.duplicateOf = r.duplicate_of;
    if (r.config_version !== null && r.config_version !== undefined) m.configVersion = Number(r.config_version);
    if (r.ordering_key) (m as StoredMessage & { orderingKey?: string }).orderingKey = r.ordering_key;
    return m;
  }

  protected toDelivery(r: Row): StoredDelivery & { firstAttemptAt?: Date; superseded?: boolean } {
    const d: StoredDelivery & { firstAttemptAt?: Date; superseded?: boolean } = {
      id: r.id,
      messageId: r.message_id,
      routeId: r.route_id,
      sinkId: r.sink_id,
      status: r.status as DeliveryStatus,
      attempts: Number(r.attempts),
      orderingKey: r.ordering_key,
      strictOrder: Number(r.strict_order) === 1,
      createdAt: new Date(Number(r.created_at)),
    };
    if (r.next_attempt_at !== null && r.next_attempt_at !== undefined) d.nextAttemptAt = date(r.next_attempt_at);
    if (r.last_error) d.lastError = json<StoredError>(r.last_error);
    if (r.delivered_at !== null && r.delivered_at !== undefined) d.deliveredAt = date(r.delivered_at);
    if (r.first_attempt_at !== null && r.first_attempt_at !== undefined) d.firstAttemptAt = date(r.first_attempt_at);
    if (Number(r.probe_attempts) > 0) d.probeAttempts = Number(r.probe_attempts);
    if (Number(r.superseded) === 1) d.superseded = true;
    return d;
  }

  /** Message columns; body and bundle come from `message_content` joined as `c`. */
  private columns(body: boolean, bundle: boolean, alias = ''): string {
    const a = alias ? `${alias}.` : '';
    const cols = ['seq', 'id', 'source_id', 'content_type', 'headers', 'received_at', 'status', 'error', 'duplicate_of', 'ordering_key', 'config_version'].map((c) => a + c);
    if (body) cols.push('c.body');
    if (bundle) cols.push('c.bundle');
    return cols.join(', ');
  }

  private static readonly JOIN_CONTENT = 'LEFT JOIN message_content c ON c.message_id = m.id';

  /** Bodies (and bundles) of some messages, by id. */
  private async content(x: SqlExec, ids: string[], bundle: boolean): Promise<Map<string, Row>> {
    const out = new Map<string, Row>();
    for (let o = 0; o < ids.length; o += SqlMessageStore.CHUNK) {
      const part = ids.slice(o, o + SqlMessageStore.CHUNK);
      const rows = await x.all(`SELECT message_id, body${bundle ? ', bundle' : ''} FROM message_content WHERE message_id IN (${part.map(() => '?').join(', ')})`, part);
      for (const r of rows) out.set(r.message_id, r);
    }
    return out;
  }

  async getMessage(id: string, opts: { body?: boolean; bundle?: boolean } = {}): Promise<StoredMessage | undefined> {
    this.assertOpen();
    const join = opts.body || opts.bundle ? SqlMessageStore.JOIN_CONTENT : '';
    const rows = await this.readForAdmin((x) => x.all(`SELECT ${this.columns(!!opts.body, !!opts.bundle, 'm')} FROM messages m ${join} WHERE m.id = ?`, [id]));
    return rows[0] ? this.toMessage(rows[0], !!opts.body, !!opts.bundle) : undefined;
  }

  /**
   * The stored message types a pattern with `*` matches (`ADT^A0*`): the distinct values in the
   * pattern's literal prefix range, read by skipping through the type index (one probe per
   * distinct type, not a scan of the messages), then matched against the whole pattern.
   */
  private async typesMatching(x: SqlExec, pattern: string): Promise<string[]> {
    const prefix = pattern.slice(0, pattern.indexOf('*'));
    const c: string[] = ['message_type >= ?'];
    const p: unknown[] = [prefix];
    if (prefix) {
      const last = prefix.codePointAt(prefix.length - 1)!;
      c.push('message_type < ?');
      p.push(prefix.slice(0, -1) + String.fromCodePoint(last + 1));
    }
    const range = c.join(' AND ');
    const rows = await x.all(
      `WITH RECURSIVE t(v, n) AS (
         SELECT (SELECT MIN(message_type) FROM messages WHERE ${range}), 1
         UNION ALL
         SELECT (SELECT MIN(message_type) FROM messages WHERE message_type > t.v AND ${range}), t.n + 1 FROM t WHERE t.v IS NOT NULL AND t.n < ${SqlMessageStore.MAX_TYPES}
       ) SELECT v FROM t WHERE v IS NOT NULL`,
      [...p, ...p],
    );
    const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
    return rows.map((r) => String(r.v)).filter((v) => re.test(v));
  }

  /** Most distinct message types a `*` pattern is resolved to. */
  private static readonly MAX_TYPES = 2000;

  /** `filterSql`'s statement with its `*` type pattern resolved (see typesMatching). */
  private async filterSqlOn(x: SqlExec, f: MessageFilter): Promise<{ where: string; params: unknown[]; types?: string[] }> {
    const types = f.messageType?.includes('*') ? await this.typesMatching(x, f.messageType) : undefined;
    return { ...this.filterSql(f, types), types };
  }

  private filterSql(f: MessageFilter, types_?: string[]): { where: string; params: unknown[] } {
    const c: string[] = [];
    const p: unknown[] = [];
    if (f.ids) {
      if (!f.ids.length) c.push('1 = 0');
      else {
        c.push(`m.id IN (${f.ids.map(() => '?').join(', ')})`);
        p.push(...f.ids);
      }
    }
    if (f.status?.length) {
      c.push(`m.status IN (${f.status.map(() => '?').join(', ')})`);
      p.push(...f.status);
    }
    if (f.sourceId) {
      c.push('m.source_id = ?');
      p.push(f.sourceId);
    }
    if (f.since) {
      c.push('m.received_at >= ?');
      p.push(f.since.getTime());
    }
    if (f.until) {
      c.push('m.received_at < ?');
      p.push(f.until.getTime());
    }
    // Message type and control id: their own indexed columns (migration 12). A type with `*` is
    // resolved to the stored types it matches first (typesMatching), then matched as a list.
    if (f.messageType) {
      const types = types_ ?? (f.messageType.includes('*') ? undefined : [f.messageType]);
      if (!types) throw new FerryError('INTERNAL_STORE_TYPES', 'a message type pattern not resolved to types', { kind: 'internal' });
      if (!types.length) c.push('1 = 0');
      else {
        c.push(types.length === 1 ? 'm.message_type = ?' : `m.message_type IN (${types.map(() => '?').join(', ')})`);
        p.push(...types);
      }
    }
    if (f.controlId) {
      c.push('m.control_id = ?');
      p.push(f.controlId);
    }
    if (f.beforeSeq !== undefined) {
      c.push('m.seq < ?');
      p.push(f.beforeSeq);
    }
    if (f.patient) {
      c.push("(m.ordering_key = ? OR m.ordering_key LIKE ? ESCAPE '\\')");
      p.push(f.patient, `%|${f.patient.replace(/[\\%_]/g, (ch) => `\\${ch}`)}`);
    }
    if (f.routeId || f.sinkId || f.deliveryStatus?.length) {
      const d: string[] = ['d.message_id = m.id', 'd.superseded = 0'];
      if (f.routeId) {
        d.push('d.route_id = ?');
        p.push(f.routeId);
      }
      if (f.sinkId) {
        d.push('d.sink_id = ?');
        p.push(f.sinkId);
      }
      if (f.deliveryStatus?.length) {
        d.push(`d.status IN (${f.deliveryStatus.map(() => '?').join(', ')})`);
        p.push(...f.deliveryStatus);
      }
      c.push(`EXISTS (SELECT 1 FROM deliveries d WHERE ${d.join(' AND ')})`);
    }
    return { where: c.length ? `WHERE ${c.join(' AND ')}` : '', params: p };
  }

  async listMessages(filter: MessageFilter): Promise<StoredMessage[]> {
    this.assertOpen();
    const order = filter.newestFirst ? 'DESC' : 'ASC';
    const limit = filter.limit && filter.limit > 0 ? ` LIMIT ${Math.floor(filter.limit)}` : '';
    const rows = await this.readForAdmin(async (x) => {
      const { where, params, types } = await this.filterSqlOn(x, filter);
      if (!types || types.length < 2 || !limit) return x.all(`SELECT ${this.columns(false, false, 'm')} FROM messages m ${where} ORDER BY m.seq ${order}${limit}`, params);
      // Several types (ADT^A0*): one page per type, each read in seq order off the (type, seq)
      // index, merged -- instead of every message of those types sorted to find the page.
      const parts = types.map((t) => this.filterSql({ ...filter, messageType: t }, [t]));
      return x.all(
        `SELECT * FROM (${parts.map((q, i) => `SELECT * FROM (SELECT ${this.columns(false, false, 'm')} FROM messages m ${q.where} ORDER BY m.seq ${order}${limit}) t${i}`).join(' UNION ALL ')}) u ORDER BY seq ${order}${limit}`,
        parts.flatMap((q) => q.params),
      );
    });
    return rows.map((r) => this.toMessage(r, false, false));
  }

  async events(messageId: string): Promise<MessageEvent[]> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) => x.all('SELECT * FROM message_events WHERE message_id = ? ORDER BY seq', [messageId]));
    return rows.map((r) => {
      const e: MessageEvent = { messageId: r.message_id, at: new Date(Number(r.at)), status: r.status };
      if (r.sink_id) e.sinkId = r.sink_id;
      if (r.route_id) e.routeId = r.route_id;
      if (r.detail) e.detail = r.detail;
      return e;
    });
  }

  async deliveries(messageId: string, opts: { includeSuperseded?: boolean } = {}): Promise<StoredDelivery[]> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) =>
      x.all(`SELECT * FROM deliveries WHERE message_id = ?${opts.includeSuperseded ? '' : ' AND superseded = 0'} ORDER BY seq`, [messageId]),
    );
    return rows.map((r) => this.toDelivery(r));
  }

  // ------------------------------------------------------------------------------------------
  // Processing

  async claimReceived(owner: string, limit: number, leaseMs: number, opts: { maxAttempts?: number } = {}): Promise<StoredMessage[]> {
    this.assertOpen();
    if (limit <= 0) return [];
    const now = this.now();
    const max = opts.maxAttempts ?? 0;
    const rows = await this.claimTx(async (x) => {
      const ids = await x.all(
        `SELECT seq FROM messages WHERE status IN ${UNROUTED_MESSAGE} AND (lease_expires IS NULL OR lease_expires <= ?) ORDER BY seq LIMIT ?${this.lockClause('messages')}`,
        [now, limit],
      );
      if (!ids.length) return [];
      const claimed = await x.all(
        `UPDATE messages SET lease_owner = ?, lease_expires = ?, process_attempts = process_attempts + 1
         WHERE seq IN (${ids.map(() => '?').join(', ')}) RETURNING ${this.columns(false, false)}, process_attempts`,
        [owner, now + leaseMs, ...ids.map((r) => r.seq)],
      );
      // Claimed more often than allowed without ever being recorded: its processing keeps dying
      // (the process, or a worker, each time). Failed here, kept for inspection and replay,
      // instead of taking the engine down again.
      const spent = max > 0 ? claimed.filter((r) => Number(r.process_attempts) > max) : [];
      if (spent.length) {
        const error: StoredError = {
          code: 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS',
          message: `processing was started ${max} times and never finished (the engine or its worker stopped each time); not retried`,
          retryable: false,
        };
        await x.run(
          `UPDATE messages SET status = 'failed', error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ? WHERE seq IN (${spent.map(() => '?').join(', ')})`,
          [errJson(error), now, ...spent.map((r) => r.seq)],
        );
        await this.events_(x, spent.map((r) => ({ id: r.id as string, at: now, status: 'failed', detail: error.code })));
        for (const r of spent) this.logger.error('message failed: processing never finished', { messageId: r.id, attempts: Number(r.process_attempts), errorCode: error.code });
      }
      const live = spent.length ? claimed.filter((r) => !spent.includes(r)) : claimed;
      const content = await this.content(x, live.map((r) => r.id as string), false);
      return live.map((r) => ({ ...r, body: content.get(r.id)?.body ?? null }));
    });
    return rows.map((r) => this.toMessage(r, true, false)).sort((a, b) => a.seq - b.seq);
  }

  private async requireMessage(x: SqlExec, id: string, cols = 'seq, status, source_id, ordering_key, headers', forUpdate = false): Promise<Row> {
    const rows = await x.all(`SELECT ${cols} FROM messages WHERE id = ?${forUpdate ? this.rowLockClause() : ''}`, [id]);
    if (!rows[0]) throw new FerryError('INTERNAL_STORE_NO_MESSAGE', `no stored message ${id}`, { kind: 'internal', details: { messageId: id } });
    return rows[0];
  }

  /**
   * Recorded with the transition that follows it, in the same transaction: the processor calls
   * recordRouting / recordFailed next. The result is held in memory and written by
   * recordRouting's / recordFailed's operation (one UPDATE of the message for both transitions,
   * one transaction per message on PostgreSQL, one savepoint in the shared one on SQLite). Reads through this store see it (it is written before they run). A crash before the
   * routing commits leaves the message `received`, to be transformed again; an error (unknown
   * id) shows in the routing call.
   */
  async recordTransformed(id: string, bundle: Bundle, orderingKey: string | undefined): Promise<void> {
    this.assertOpen();
    this.holdTransform(id, JSON.stringify(bundle), orderingKey, bundle);
  }

  private holdTransform(id: string, text: string, orderingKey: string | undefined, bundle?: Bundle): void {
    const t: PendingTransform = { text, key: orderingKey || null, at: this.now() };
    this.transformed.delete(id);
    this.transformed.set(id, { bundle, json: t.text });
    // Bounded: a processor that never records the routing must not grow this for ever.
    if (this.transformed.size > 4096) this.transformed.delete(this.transformed.keys().next().value!);
    this.pendingTransforms.set(id, t);
  }

  async recordProcessed(results: ProcessedMessage[]): Promise<{ failed: { id: string; error: unknown }[] }> {
    this.assertOpen();
    const plans = results.map((r) => {
      if (r.transformed) this.holdTransform(r.id, r.transformed.bundleJson, r.transformed.orderingKey);
      const p = this.plan(r.id, r.outcome);
      if (r.issues?.length) p.issues = r.issues;
      return p;
    });
    if (!plans.length) return { failed: [] };
    const ops = plans.map((p) => this.planOp(p));
    const together = this.plansOp(plans);
    // One operation for the batch (SQLite: inside the shared transaction; PostgreSQL: one
    // transaction instead of one per message). Every message is all-or-nothing on its own: when
    // one fails, the batch is undone and replayed message by message, each in its own
    // savepoint, so only that one fails.
    const errors = await this.write(async (tx) => {
      // Event rows are collected and inserted together at the end (SQLite: by the shared
      // transaction; PostgreSQL: here), not one INSERT round trip per message.
      const shared = (tx as Partial<BufferedExec>).events !== undefined;
      const x: BufferedExec = shared ? (tx as BufferedExec) : { all: (q, p) => tx.all(q, p), run: (q, p) => tx.run(q, p), events: [] };
      const buf = x.events;
      const mark = buf.length;
      await x.run('SAVEPOINT ferry_batch');
      try {
        buf.push(...(await together(x)));
        await this.stampConfigVersions(x, results);
        await x.run('RELEASE SAVEPOINT ferry_batch');
        if (!shared) await this.insertEvents(tx, buf);
        return [];
      } catch (e) {
        buf.length = mark;
        await rollbackTo(x, 'ferry_batch', e);
      }
      const failed: { id: string; error: unknown }[] = [];
      for (const [i, op] of ops.entries()) {
        const at = buf.length;
        await x.run('SAVEPOINT ferry_one');
        try {
          await op(x);
          await this.stampConfigVersions(x, [results[i]]);
          await x.run('RELEASE SAVEPOINT ferry_one');
        } catch (error) {
          buf.length = at;
          await rollbackTo(x, 'ferry_one', error);
          // The store's own trouble (disk full, a lost connection), not this message's: the batch
          // fails as a whole and is tried again, instead of this message waiting out its lease.
          const c = this.classify(error);
          if (c instanceof FerryError && c.kind === 'transient') throw c;
          failed.push({ id: plans[i].id, error });
        }
      }
      if (!shared) await this.insertEvents(tx, buf);
      return failed;
    });
    return { failed: errors };
  }

  /** Writes a transform result; false when the message was already processed. */
  private async applyTransform(x: SqlExec, id: string, t: PendingTransform): Promise<boolean> {
    // Only while unprocessed: a second processor whose lease ran out must not undo a routing.
    const n = await x.run(
      `UPDATE messages SET status = 'transformed', ordering_key = COALESCE(?, ordering_key, 'source:' || source_id), error = NULL, updated_at = ?
       WHERE id = ? AND status IN ${UNROUTED_MESSAGE}`,
      [t.key, t.at, id],
    );
    if (n) {
      await x.run('UPDATE message_content SET bundle = ? WHERE message_id = ?', [t.text, id]);
      await this.event(x, id, t.at, 'transformed');
    } else await this.requireMessage(x, id, 'seq');
    return n > 0;
  }

  /** Writes the held transform results (before reads, so they see them). */
  private async flushPendingTransforms(): Promise<void> {
    if (!this.pendingTransforms.size) return;
    const all = [...this.pendingTransforms];
    this.pendingTransforms.clear();
    for (const [id, t] of all) {
      await this.tx((x) => this.applyTransform(x, id, t)).catch((e) => this.logger.debug('recordTransformed failed', { messageId: id, ...errorFields(e) }));
    }
  }

  private staleProcessing(id: string, status: string): void {
    this.logger.warn('processing result dropped: the message was already processed (its lease had expired)', { messageId: id, status });
  }

  /**
   * Moves a message out of processing (the held transform result first): returns its row, or
   * undefined when another processor already did (the result is then dropped).
   */
  private async finishProcessing(x: SqlExec, id: string, status: string, error: string | null, now: number, t: PendingTransform | undefined): Promise<Row | undefined> {
    // With a held transform result: one UPDATE takes the message through `transformed` to its
    // next status (both transitions are event rows, in order, in this transaction).
    const rows = t
      ? await x.all(
          `UPDATE messages SET status = ?, ordering_key = COALESCE(?, ordering_key, 'source:' || source_id), error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ?
           WHERE id = ? AND status IN ${UNROUTED_MESSAGE} RETURNING seq, source_id, ordering_key`,
          [status, t.key, error, now, id],
        )
      : await x.all(
          `UPDATE messages SET status = ?, error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ?
           WHERE id = ? AND status IN ${UNROUTED_MESSAGE} RETURNING seq, source_id, ordering_key`,
          [status, error, now, id],
        );
    if (rows[0]) {
      if (t) {
        await x.run('UPDATE message_content SET bundle = ? WHERE message_id = ?', [t.text, id]);
        await this.event(x, id, t.at, 'transformed');
      }
      return rows[0];
    }
    const m = await this.requireMessage(x, id, 'status');
    this.staleProcessing(id, m.status);
    return undefined;
  }

  /** Event rows: collected by a shared transaction (one multi-row INSERT at its end), else inserted now. */
  private async events_(x: SqlExec, rows: EventRow[]): Promise<void> {
    const buf = (x as Partial<BufferedExec>).events;
    if (buf) {
      for (const r of rows) buf.push(r);
      return;
    }
    await this.insertEvents(x, rows);
  }

  private async insertEvents(x: SqlExec, rows: EventRow[]): Promise<void> {
    for (let o = 0; o < rows.length; o += SqlMessageStore.CHUNK) {
      const part = rows.slice(o, o + SqlMessageStore.CHUNK);
      await x.run(
        `INSERT INTO message_events (message_id, at, status, sink_id, route_id, detail) VALUES ${part.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
        part.flatMap((e) => [e.id, e.at, e.status, e.sinkId ?? null, e.routeId ?? null, e.detail ?? null]),
      );
    }
  }

  async recordFailed(id: string, error: StoredError): Promise<void> {
    this.assertOpen();
    await this.write(this.failedOp(id, error));
  }

  async recordRouting(id: string, outcome: RoutingOutcome): Promise<void> {
    this.assertOpen();
    await this.write(this.routingOp(id, outcome));
  }

  /** The held transform result of a message, handed to the operation that records its next state. */
  private takeTransform(id: string): PendingTransform | undefined {
    const t = this.pendingTransforms.get(id);
    if (t) this.pendingTransforms.delete(id);
    return t;
  }

  /**
   * What recording one message's processing needs, taken from the held state (transform result,
   * cached bundle) when the operation is created: the operation owns it and can be run again.
   */
  private plan(id: string, outcome: ProcessingOutcome): ProcessingPlan {
    const now = this.now();
    const cached = this.transformed.get(id);
    this.transformed.delete(id);
    const t = this.takeTransform(id);
    const status = outcome.status === 'failed' ? 'failed' : outcome.status === 'routed' && !outcome.deliveries.length ? 'delivered' : outcome.status;
    return { id, outcome, now, cached, t, status };
  }

  /** The write of a processing failure (re-runnable: it owns what it writes). */
  private failedOp(id: string, error: StoredError): (x: SqlExec) => Promise<void> {
    return this.planOp(this.plan(id, { status: 'failed', error }));
  }

  /** The write of a routing decision (re-runnable: it owns what it writes). */
  private routingOp(id: string, outcome: RoutingOutcome): (x: SqlExec) => Promise<void> {
    return this.planOp(this.plan(id, outcome));
  }

  /** One message's processing, written on its own. */
  private planOp(p: ProcessingPlan): (x: SqlExec) => Promise<void> {
    return async (x) => {
      // Routed once only: when a lease ran out and two processors handled the message, the
      // second routing is dropped (no second set of deliveries).
      const error = p.outcome.status === 'failed' ? errJson(p.outcome.error) : null;
      const m = await this.finishProcessing(x, p.id, p.status, error, p.now, p.t);
      if (!m) return;
      const deliveries: unknown[][] = [];
      const evs = await this.afterProcessing(x, p, m, deliveries, async () => (await this.content(x, [p.id], true)).get(p.id)?.bundle ?? '');
      if (deliveries.length) await this.insertDeliveries(x, deliveries);
      await this.events_(x, evs);
    };
  }

  /**
   * The rows a processed message adds once its status is written (`m`: its seq, source and
   * ordering key): event rows (returned) and delivery rows (pushed to `deliveries`). A delivery
   * whose bundle is the message's own references it (bundle NULL).
   */
  private async afterProcessing(x: SqlExec, p: ProcessingPlan, m: Row, deliveries: unknown[][], storedBundle: () => Promise<string>): Promise<EventRow[]> {
    const evs = await this.outcomeEvents(x, p, m, deliveries, storedBundle);
    // Each data-quality issue an event row of its own (where and why, never the value), before the outcome.
    if (p.issues?.length) evs.unshift(...p.issues.map((i) => ({ id: p.id, at: p.now, status: DATA_QUALITY_EVENT, detail: JSON.stringify(i) })));
    return evs;
  }

  private async outcomeEvents(x: SqlExec, p: ProcessingPlan, m: Row, deliveries: unknown[][], storedBundle: () => Promise<string>): Promise<EventRow[]> {
    const { id, now, outcome, cached } = p;
    switch (outcome.status) {
      case 'failed':
        return [{ id, at: now, status: 'failed', detail: outcome.error.code }];
      case 'unrouted':
        return [{ id, at: now, status: 'unrouted' }];
      case 'filtered':
        return [{ id, at: now, status: 'filtered', detail: outcome.detail }];
      case 'routed': {
        const key: string = m.ordering_key || `source:${m.source_id}`;
        let messageBundle: string | undefined = cached?.json ?? p.t?.text;
        const evs: EventRow[] = [{ id, at: now, status: 'routed', detail: `${outcome.deliveries.length} deliveries` }];
        for (const d of outcome.deliveries) {
          let text: string | null;
          // The message's bundle, as recorded: referenced, not stored again.
          if (d.unchanged && ((d.bundle === undefined && d.bundleJson === undefined) || (cached?.bundle !== undefined && d.bundle === cached.bundle))) text = null;
          else {
            text = d.bundleJson ?? JSON.stringify(d.bundle);
            if (messageBundle === undefined) messageBundle = await storedBundle();
            if (text === messageBundle) text = null;
          }
          deliveries.push([newId(now), id, m.seq, d.routeId, d.sinkId, key, d.strictOrder ? 1 : 0, now, text]);
          evs.push({ id, at: now, status: 'delivery:pending', sinkId: d.sinkId, routeId: d.routeId });
        }
        if (!outcome.deliveries.length) evs.push({ id, at: now, status: 'delivered', detail: 'no deliveries' });
        return evs;
      }
      default:
        outcome satisfies never;
        return [];
    }
  }

  /** Rows: [id, message_id, message_seq, route_id, sink_id, ordering_key, strict_order, created_at, bundle]. */
  private async insertDeliveries(x: SqlExec, rows: unknown[][]): Promise<void> {
    const per = 100;
    if (!this.keyHeads) {
      for (let o = 0; o < rows.length; o += per) {
        const part = rows.slice(o, o + per);
        await x.run(
          `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, bundle)
           VALUES ${part.map(() => `(?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)`).join(', ')}`,
          part.flat(),
        );
      }
      return;
    }
    // Each strict delivery's head flag, set as it is written: held (0) by an older strict delivery
    // of its (sink, key) in this batch -- known here -- or open in the store; otherwise 1.
    const group = (r: unknown[]) => `${r[4]}\u0000${r[5]}`;
    const oldest = new Map<string, number>();
    for (const r of rows) if (r[6]) oldest.set(group(r), Math.min(oldest.get(group(r)) ?? Infinity, Number(r[2])));
    const held = rows.map((r) => (r[6] && Number(r[2]) > oldest.get(group(r))! ? 1 : 0));
    for (let o = 0; o < rows.length; o += per) {
      const part = rows.slice(o, o + per);
      await x.run(
        `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, bundle, head)
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, 'pending', 0, v.column6, v.column7, v.column8, v.column9,
           CASE WHEN v.column7 = 1 AND (v.column10 = 1 OR ${SqlMessageStore.olderOpenStrict('v.column5', 'v.column6', 'v.column3')}) THEN 0 ELSE 1 END
         FROM (VALUES ${part.map(() => `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).join(', ')}) AS v`,
        part.flatMap((r, i) => [...r, held[o + i]]),
      );
    }
  }

  /**
   * Heads of each sink's ordering keys (`deliveries.head`), kept by stores with one writer
   * (SQLite): an open delivery with head = 0 is held by an older open strict delivery of the same
   * (sink, key); the claim visits heads only, so a sink down with a large backlog costs its claim
   * the few deliveries it may take, not the backlog. A head may be stale (1 while an older one is
   * open again: a replay or retry reopened it, or it was routed late); the claim checks each
   * candidate, so stale heads cost a visit, never the order. A delivery that should be a head and
   * is not would never be claimed: every change that takes an open strict delivery out of its
   * group's front promotes the next (`promoteHeads`), and every one that opens one sets its flag.
   * PostgreSQL's instances write concurrently and could miss each other's changes; it leaves
   * every head at 1 and claims with the full check.
   */
  protected readonly keyHeads: boolean = false;

  /** SQL: an older open strict delivery of (sink, key) than `seq` exists. */
  private static olderOpenStrict(sink: string, key: string, seq: string): string {
    return `EXISTS (SELECT 1 FROM deliveries e WHERE e.sink_id = ${sink} AND e.ordering_key = ${key} AND e.superseded = 0
                   AND e.status IN ${OPEN_DELIVERY} AND e.strict_order = 1 AND e.message_seq < ${seq})`;
  }

  /**
   * The groups (sink, key) of `rows` (with sink_id, ordering_key, strict_order) lost open strict
   * deliveries: the oldest open strict deliveries left in each become heads.
   */
  private async promoteHeads(x: SqlExec, rows: Row[]): Promise<void> {
    if (!this.keyHeads) return;
    const groups = new Map<string, [string, string]>();
    for (const r of rows) if (Number(r.strict_order) === 1) groups.set(`${r.sink_id}\u0000${r.ordering_key}`, [r.sink_id as string, r.ordering_key as string]);
    const list = [...groups.values()];
    for (let o = 0; o < list.length; o += SqlMessageStore.CHUNK) {
      const part = list.slice(o, o + SqlMessageStore.CHUNK);
      await x.run(
        `UPDATE deliveries SET head = 1 WHERE seq IN (
           SELECT d.seq FROM (VALUES ${part.map(() => '(?, ?)').join(', ')}) AS g
           JOIN deliveries d ON d.sink_id = g.column1 AND d.ordering_key = g.column2
             AND d.message_seq = (SELECT MIN(e.message_seq) FROM deliveries e
                                  WHERE e.sink_id = g.column1 AND e.ordering_key = g.column2 AND e.superseded = 0
                                    AND e.status IN ${OPEN_DELIVERY} AND e.strict_order = 1)
           WHERE d.superseded = 0 AND d.status IN ${OPEN_DELIVERY} AND d.strict_order = 1 AND d.head = 0)`,
        part.flat(),
      );
    }
  }

  /** Deliveries `ids` were opened again (a retry): each one's head flag set from its group. */
  private async settleHeads(x: SqlExec, ids: string[]): Promise<void> {
    if (!this.keyHeads) return;
    for (let o = 0; o < ids.length; o += SqlMessageStore.CHUNK) {
      const part = ids.slice(o, o + SqlMessageStore.CHUNK);
      await x.run(
        `UPDATE deliveries SET head = CASE WHEN strict_order = 1 AND ${SqlMessageStore.olderOpenStrict('deliveries.sink_id', 'deliveries.ordering_key', 'deliveries.message_seq')} THEN 0 ELSE 1 END
         WHERE id IN (${part.map(() => '?').join(', ')})`,
        part,
      );
    }
  }

  /**
   * Several messages' processing written set-wise: one UPDATE of the messages (UPDATE ... FROM
   * VALUES), one of their contents, one multi-row INSERT of the deliveries -- the same rows and
   * events as `planOp` per message. Throws when a message is unknown (the caller then writes
   * message by message, so only that one fails).
   */
  private plansOp(plans: ProcessingPlan[]): (x: SqlExec) => Promise<EventRow[]> {
    return async (x) => {
      const evs: EventRow[] = [];
      const deliveries: unknown[][] = [];
      const per = 200;
      const updated = new Map<string, Row>();
      for (let o = 0; o < plans.length; o += per) {
        const part = plans.slice(o, o + per);
        const rows = await x.all(
          `UPDATE messages SET status = v.column2,
             ordering_key = CASE WHEN v.column5 = 'y' THEN COALESCE(v.column3, ordering_key, 'source:' || source_id) ELSE ordering_key END,
             error = v.column4, lease_owner = NULL, lease_expires = NULL, updated_at = CAST(v.column6 AS BIGINT)
           FROM (VALUES ${part.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}) AS v
           WHERE messages.id = v.column1 AND messages.status IN ${UNROUTED_MESSAGE}
           RETURNING id, seq, source_id, ordering_key`,
          part.flatMap((p) => [p.id, p.status, p.t?.key ?? null, p.outcome.status === 'failed' ? errJson(p.outcome.error) : null, p.t ? 'y' : 'n', String(p.now)]),
        );
        for (const r of rows) updated.set(r.id as string, r);
      }
      const missed = plans.filter((p) => !updated.has(p.id)).map((p) => p.id);
      if (missed.length) {
        const found = new Map((await x.all(`SELECT id, status FROM messages WHERE id IN (${missed.map(() => '?').join(', ')})`, missed)).map((r) => [r.id as string, r.status as string]));
        const unknown = missed.find((id) => !found.has(id));
        if (unknown) throw new FerryError('INTERNAL_STORE_NO_MESSAGE', `no stored message ${unknown}`, { kind: 'internal', details: { messageId: unknown } });
        for (const id of missed) this.staleProcessing(id, found.get(id)!);
      }
      const bundles = plans.filter((p) => p.t && updated.has(p.id));
      for (let o = 0; o < bundles.length; o += per) {
        const part = bundles.slice(o, o + per);
        await x.run(
          `UPDATE message_content SET bundle = v.column2 FROM (VALUES ${part.map(() => '(?, ?)').join(', ')}) AS v WHERE message_content.message_id = v.column1`,
          part.flatMap((p) => [p.id, p.t!.text]),
        );
      }
      for (const p of plans) {
        const m = updated.get(p.id);
        if (!m) continue;
        if (p.t) evs.push({ id: p.id, at: p.t.at, status: 'transformed' });
        evs.push(...(await this.afterProcessing(x, p, m, deliveries, async () => (await this.content(x, [p.id], true)).get(p.id)?.bundle ?? '')));
      }
      await this.insertDeliveries(x, deliveries);
      return evs;
    };
  }

  // ------------------------------------------------------------------------------------------
  // Deliveries

  async claimDeliveries(owner: string, limit: number, leaseMs: number, nowDate?: Date, filter: DeliveryClaimFilter = {}): Promise<ClaimedDelivery[]> {
    this.assertOpen();
    if (limit <= 0) return [];
    const now = nowDate?.getTime() ?? this.now();
    if (filter.excludeSinkIds?.length && !filter.sinkIds) {
      // Sinks no longer configured: which sinks have open deliveries (one index step per sink),
      // less the known ones -- rather than walking every open delivery of the known sinks.
      const known = new Set(filter.excludeSinkIds);
      const gone = (await this.read((x) => this.openSinkIds(x))).filter((id) => !known.has(id));
      if (!gone.length) return [];
      filter = { sinkIds: gone };
    }
    let sinkSql = '';
    const sinkParams: string[] = [];
    if (filter.sinkIds) {
      if (!filter.sinkIds.length) return [];
      sinkSql += ` AND d.sink_id IN (${filter.sinkIds.map(() => '?').join(', ')})`;
      sinkParams.push(...filter.sinkIds);
    }
    if (filter.excludeSinkIds?.length) {
      sinkSql += ` AND d.sink_id NOT IN (${filter.excludeSinkIds.map(() => '?').join(', ')})`;
      sinkParams.push(...filter.excludeSinkIds);
    }
    // Claimable: due, not leased, and (strict) not held by an older open delivery of its key or
    // an older message of its key (or of a key not known yet) still being processed.
    const claimable = `
           AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)
           AND (d.lease_expires IS NULL OR d.lease_expires <= ?)
           AND (d.strict_order = 0 OR (
             NOT ${SqlMessageStore.olderOpenStrict('d.sink_id', 'd.ordering_key', 'd.message_seq')}
             -- Evaluated once: usually no unrouted message is older than any candidate, and the
             -- per-candidate search below is skipped.
             AND (d.message_seq < (SELECT COALESCE(MIN(u.seq), 9223372036854775807) FROM messages u WHERE u.status IN ${UNROUTED_MESSAGE})
                  OR NOT EXISTS (SELECT 1 FROM messages m
                         WHERE m.status IN ${UNROUTED_MESSAGE} AND m.seq < d.message_seq
                           AND (m.ordering_key IS NULL OR m.ordering_key = d.ordering_key)))))`;
    const rows = await this.claimTx(async (x) => {
      const cand = this.keyHeads
        ? // Heads only (two indexes): retries that are due, earliest due first (a failed delivery
          // always has its next attempt time), then new deliveries, oldest first. A key held
          // behind a failed delivery, and a failed one scheduled for later, are not visited; when
          // a down sink comes back, its keys' retries are taken in the order they fell due
          // without sorting them all first. (Per key there is only ever one to take.)
          await x.all(
            `SELECT d.seq FROM deliveries d WHERE d.seq IN (
               SELECT seq FROM (SELECT d.seq FROM deliveries d WHERE d.superseded = 0 AND d.status = 'pending' AND d.head = 1${sinkSql}${claimable}
                                ORDER BY d.message_seq, d.seq LIMIT ?)
               UNION ALL
               SELECT seq FROM (SELECT d.seq FROM deliveries d WHERE d.superseded = 0 AND d.status = 'failed' AND d.head = 1${sinkSql} AND d.next_attempt_at <= ?${claimable}
                                ORDER BY d.next_attempt_at, d.seq LIMIT ?))
             ORDER BY CASE WHEN d.status = 'failed' THEN 0 ELSE 1 END, CASE WHEN d.status = 'failed' THEN d.next_attempt_at ELSE d.message_seq END, d.seq LIMIT ?`,
            [...sinkParams, now, now, limit, ...sinkParams, now, now, now, limit, limit],
          )
        : await x.all(
            `SELECT d.seq FROM deliveries d
             WHERE d.superseded = 0 AND d.status IN ${OPEN_DELIVERY}${sinkSql}${claimable}
             ORDER BY d.message_seq, d.seq LIMIT ?${this.lockClause('d')}`,
            [...sinkParams, now, now, limit],
          );
      if (!cand.length) return [];
      const claimed = await x.all(
        `UPDATE deliveries SET lease_owner = ?, lease_expires = ?, first_attempt_at = COALESCE(first_attempt_at, ?)
         WHERE seq IN (${cand.map(() => '?').join(', ')}) RETURNING *`,
        [owner, now + leaseMs, now, ...cand.map((r) => r.seq)],
      );
      const ids = [...new Set(claimed.map((r) => r.message_id as string))];
      const rows = await x.all(`SELECT ${this.columns(true, true, 'm')} FROM messages m ${SqlMessageStore.JOIN_CONTENT} WHERE m.id IN (${ids.map(() => '?').join(', ')})`, ids);
      const msgs = new Map(rows.map((r) => [r.id as string, r]));
      return claimed.map((d) => ({ d, m: msgs.get(d.message_id as string)! }));
    });
    return rows
      .map(({ d, m }) => {
        const message = this.toMessage(m, true, true);
        const delivery = this.toDelivery(d);
        // The bundle stays JSON text until something reads it (the file and HTTP sinks never do).
        const bundleJson = String(d.bundle ?? m.bundle ?? 'null');
        const c = { ...delivery, firstAttemptAt: delivery.firstAttemptAt ?? new Date(now), bundleJson, message } as ClaimedDelivery;
        return lazyJson(c, 'bundle', bundleJson);
      })
      .sort((a, b) => a.message.seq - b.message.seq || (a.id < b.id ? -1 : 1));
  }

  /** The sinks with open deliveries: a skip scan of the open deliveries' (sink, key) index. */
  private async openSinkIds(x: SqlExec): Promise<string[]> {
    const open = `superseded = 0 AND status IN ${OPEN_DELIVERY}`;
    const rows = await x.all(
      `WITH RECURSIVE s(id) AS (
         SELECT MIN(sink_id) FROM deliveries WHERE ${open}
         UNION ALL
         SELECT (SELECT MIN(sink_id) FROM deliveries WHERE ${open} AND sink_id > s.id) FROM s WHERE s.id IS NOT NULL)
       SELECT id FROM s WHERE id IS NOT NULL`,
    );
    return rows.map((r) => r.id as string);
  }

  async renewDeliveryLeases(owner: string, deliveryIds: string[], leaseMs: number): Promise<string[]> {
    this.assertOpen();
    if (!deliveryIds.length) return [];
    const until = this.now() + leaseMs;
    return this.write(async (x) => {
      const held: string[] = [];
      for (let o = 0; o < deliveryIds.length; o += SqlMessageStore.CHUNK) {
        const part = deliveryIds.slice(o, o + SqlMessageStore.CHUNK);
        // The same fence as completeDeliveries: still ours, or superseded by a replay in flight.
        const rows = await x.all(
          `UPDATE deliveries SET lease_expires = ? WHERE id IN (${part.map(() => '?').join(', ')}) AND status IN ('pending', 'failed') AND (lease_owner = ? OR superseded = 1) RETURNING id`,
          [until, ...part, owner],
        );
        for (const r of rows) held.push(r.id as string);
      }
      return held;
    });
  }

  /**
   * Gives back every open lease (messages being processed, deliveries being made) held by `owners`
   * -- instances known to be dead -- or, with `{ allBut }`, by anyone but that owner. Their work
   * is claimed again at once instead of after its lease.
   */
  protected releaseLeasesOf(x: SqlExec, who: { owners: string[] } | { allBut: string }): Promise<InstanceStart> {
    const run = async (table: 'messages' | 'deliveries', open: string): Promise<number> => {
      if ('allBut' in who)
        return x.run(`UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE status IN ${open} AND lease_owner IS NOT NULL AND lease_owner <> ?`, [who.allBut]);
      let n = 0;
      for (let o = 0; o < who.owners.length; o += SqlMessageStore.CHUNK) {
        const part = who.owners.slice(o, o + SqlMessageStore.CHUNK);
        n += await x.run(`UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE status IN ${open} AND lease_owner IN (${part.map(() => '?').join(', ')})`, part);
      }
      return n;
    };
    return (async () => ({ releasedMessages: await run('messages', UNROUTED_MESSAGE), releasedDeliveries: await run('deliveries', OPEN_DELIVERY) }))();
  }

  async releaseDeliveryLeases(owner: string, keep: string[]): Promise<number> {
    return this.releaseLeases('deliveries', `status IN ('pending', 'failed')`, owner, keep);
  }

  async renewMessageLeases(owner: string, messageIds: string[], leaseMs: number): Promise<string[]> {
    this.assertOpen();
    if (!messageIds.length) return [];
    const until = this.now() + leaseMs;
    return this.write(async (x) => {
      const held: string[] = [];
      for (let o = 0; o < messageIds.length; o += SqlMessageStore.CHUNK) {
        const part = messageIds.slice(o, o + SqlMessageStore.CHUNK);
        const rows = await x.all(
          `UPDATE messages SET lease_expires = ? WHERE id IN (${part.map(() => '?').join(', ')}) AND status IN ${UNROUTED_MESSAGE} AND lease_owner = ? RETURNING id`,
          [until, ...part, owner],
        );
        for (const r of rows) held.push(r.id as string);
      }
      return held;
    });
  }

  async releaseMessageLeases(owner: string, keep: string[]): Promise<number> {
    return this.releaseLeases('messages', `status IN ${UNROUTED_MESSAGE}`, owner, keep);
  }

  /** Open rows of `table` leased to `owner`, other than `keep`, given back (leases held unknowingly). */
  private releaseLeases(table: 'deliveries' | 'messages', open: string, owner: string, keep: string[]): Promise<number> {
    this.assertOpen();
    return this.write(async (x) => {
      const rows = await x.all(`SELECT id FROM ${table} WHERE lease_owner = ? AND ${open}`, [owner]);
      const kept = new Set(keep);
      const orphans = rows.map((r) => r.id as string).filter((id) => !kept.has(id));
      for (let o = 0; o < orphans.length; o += SqlMessageStore.CHUNK) {
        const part = orphans.slice(o, o + SqlMessageStore.CHUNK);
        await x.run(`UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ? AND id IN (${part.map(() => '?').join(', ')})`, [owner, ...part]);
      }
      return orphans.length;
    });
  }

  async completeDelivery(deliveryId: string, outcome: DeliveryOutcome, opts?: CompleteOptions): Promise<void> {
    await this.completeDeliveries([{ deliveryId, outcome }], opts);
  }

  /**
   * Records the outcomes of several deliveries in one operation: the delivered ones with one
   * UPDATE, then their messages' statuses from one count per batch. Ids that match no delivery
   * are reported (INTERNAL_STORE_NO_DELIVERY) after the others are recorded.
   */
  async completeDeliveries(items: { deliveryId: string; outcome: DeliveryOutcome }[], opts: CompleteOptions = {}): Promise<CompleteResult> {
    this.assertOpen();
    if (!items.length) return { stale: [] };
    const now = this.now();
    const { missing, stale } = await this.write(async (x) => {
      const clear = 'lease_owner = NULL, lease_expires = NULL';
      // A paused sink's probe: an attempt, but not one of the retry policy's maxAttempts.
      const probed = (o: DeliveryOutcome) => (o.status !== 'delivered' && o.probe ? 'probe_attempts = probe_attempts + 1, ' : '');
      const ret = 'RETURNING id, message_id, route_id, sink_id, superseded, ordering_key, strict_order, status';
      // Fenced by the lease: only the owner's own claim (or one a replay superseded in flight).
      const fence = opts.owner === undefined ? '' : ` AND status IN ('pending', 'failed') AND (lease_owner = ? OR superseded = 1)`;
      const fenceArgs = opts.owner === undefined ? [] : [opts.owner];
      const rows: Row[] = [];
      const delivered = items.filter((i) => i.outcome.status === 'delivered').map((i) => i.deliveryId);
      for (let o = 0; o < delivered.length; o += SqlMessageStore.CHUNK) {
        const part = delivered.slice(o, o + SqlMessageStore.CHUNK);
        rows.push(
          ...(await x.all(
            `UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, next_attempt_at = NULL, ${clear} WHERE id IN (${part.map(() => '?').join(', ')})${fence} ${ret}`,
            [now, ...part, ...fenceArgs],
          )),
        );
      }
      for (const { deliveryId, outcome } of items) {
        if (outcome.status === 'failed')
          rows.push(
            ...(await x.all(`UPDATE deliveries SET status = 'failed', attempts = attempts + 1, ${probed(outcome)}next_attempt_at = ?, last_error = ?, ${clear} WHERE id = ?${fence} ${ret}`, [
              // The caller's clock -> the database's.
              outcome.nextAttemptAt.getTime() + this.clockOffsetMs,
              errJson(outcome.error),
              deliveryId,
              ...fenceArgs,
            ])),
          );
        else if (outcome.status === 'dead')
          rows.push(
            ...(await x.all(`UPDATE deliveries SET status = 'dead', attempts = attempts + 1, ${probed(outcome)}next_attempt_at = NULL, last_error = ?, ${clear} WHERE id = ?${fence} ${ret}`, [
              errJson(outcome.error),
              deliveryId,
              ...fenceArgs,
            ])),
          );
      }
      // Delivered and dead ones left their keys' fronts: the next ones become heads.
      await this.promoteHeads(x, rows.filter((r) => r.status !== 'failed' && !Number(r.superseded)));
      const byId = new Map(rows.map((r) => [r.id as string, r]));
      // Not updated: unknown, or (fenced) no longer this owner's -- unless already recorded as is.
      const notUpdated = items.filter((i) => !byId.has(i.deliveryId));
      const missing: string[] = [];
      const stale: CompleteResult['stale'] = [];
      if (notUpdated.length) {
        const found = new Map<string, Row>();
        for (let o = 0; o < notUpdated.length; o += SqlMessageStore.CHUNK) {
          const part = notUpdated.slice(o, o + SqlMessageStore.CHUNK).map((i) => i.deliveryId);
          for (const r of await x.all(`SELECT id, status, lease_owner FROM deliveries WHERE id IN (${part.map(() => '?').join(', ')})`, part)) found.set(r.id as string, r);
        }
        for (const { deliveryId, outcome } of notUpdated) {
          const r = found.get(deliveryId);
          if (!r) missing.push(deliveryId);
          else if (r.status !== outcome.status || r.lease_owner != null)
            stale.push({ deliveryId, status: r.status as DeliveryStatus, ...(r.lease_owner != null ? { leaseOwner: r.lease_owner as string } : {}) });
        }
      }
      const evs: EventRow[] = [];
      const open = new Set<string>();
      for (const { deliveryId, outcome } of items) {
        const d = byId.get(deliveryId);
        if (!d) continue;
        const detail = outcome.status === 'delivered' ? undefined : outcome.probe ? `${outcome.error.code} (probe)` : outcome.error.code;
        const ev = { id: d.message_id as string, at: now, status: `delivery:${outcome.status}`, sinkId: d.sink_id as string, routeId: d.route_id as string };
        if (Number(d.superseded)) evs.push({ ...ev, detail: `${detail ?? ''} (superseded)`.trim() });
        else {
          evs.push({ ...ev, detail });
          open.add(d.message_id as string);
        }
      }
      // The messages' new statuses. Their rows are locked first (PostgreSQL, in id order): two
      // deliveries of one message completing at once on two instances must not both see the
      // other still open and leave the message `routed` for ever; the counts that follow see
      // every completion committed before the lock was granted.
      const ids = [...open].sort();
      for (let o = 0; o < ids.length; o += SqlMessageStore.CHUNK) {
        const part = ids.slice(o, o + SqlMessageStore.CHUNK);
        const marks = part.map(() => '?').join(', ');
        const cur = await x.all(`SELECT id, status FROM messages WHERE id IN (${marks}) ORDER BY id${this.rowLockClause()}`, part);
        const counts = await x.all(
          `SELECT message_id, COUNT(*) AS total, COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead,
                  COALESCE(SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END), 0) AS delivered
           FROM deliveries WHERE message_id IN (${marks}) AND superseded = 0 GROUP BY message_id`,
          part,
        );
        const count = new Map(counts.map((c) => [c.message_id as string, c]));
        const change = new Map<MessageStatus, string[]>();
        for (const m of cur) {
          const c = count.get(m.id);
          if (!c || !['routed', 'dead', 'delivered'].includes(m.status)) continue;
          const next: MessageStatus = Number(c.dead) > 0 ? 'dead' : Number(c.delivered) === Number(c.total) ? 'delivered' : 'routed';
          if (next === m.status) continue;
          change.set(next, [...(change.get(next) ?? []), m.id]);
        }
        for (const [next, list] of change) {
          await x.run(`UPDATE messages SET status = ?, updated_at = ? WHERE id IN (${list.map(() => '?').join(', ')})`, [next, now, ...list]);
          for (const id of list) evs.push({ id, at: now, status: next });
        }
      }
      await this.events_(x, evs);
      return { missing, stale };
    });
    if (missing.length)
      throw new FerryError('INTERNAL_STORE_NO_DELIVERY', `no delivery ${missing.join(', ')}`, { kind: 'internal', details: { deliveryIds: missing, stale } });
    return { stale };
  }

  async nextDueAt(filter: DeliveryClaimFilter = {}): Promise<Date | undefined> {
    this.assertOpen();
    if (filter.sinkIds && !filter.sinkIds.length) return undefined;
    let sinkSql = '';
    const params: string[] = [];
    if (filter.sinkIds) {
      sinkSql += ` AND sink_id IN (${filter.sinkIds.map(() => '?').join(', ')})`;
      params.push(...filter.sinkIds);
    }
    if (filter.excludeSinkIds?.length) {
      sinkSql += ` AND sink_id NOT IN (${filter.excludeSinkIds.map(() => '?').join(', ')})`;
      params.push(...filter.excludeSinkIds);
    }
    // Not the ones leased (a retry under way: its next attempt is past, and would wake the
    // dispatcher every few milliseconds for as long as the call runs). A lease that runs out
    // because its instance died is found by the dispatcher's regular poll.
    const rows = await this.readSettled(
      (x) =>
        x.all(
          `SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE superseded = 0 AND status = 'failed' AND next_attempt_at IS NOT NULL${sinkSql}
             AND (lease_expires IS NULL OR lease_expires <= ?)`,
          [...params, this.now()],
        ),
      false,
    );
    // The database's clock -> the caller's (it sleeps until then).
    const t = rows[0]?.t;
    return t == null ? undefined : new Date(Number(t) - this.clockOffsetMs);
  }

  /** Work left: messages not yet routed, deliveries due now, deliveries waiting for a later retry, leased work. */
  async backlog(nowDate?: Date): Promise<BacklogInfo> {
    this.assertOpen();
    const now = nowDate?.getTime() ?? this.now();
    // Off the engine's thread where the store can (metrics, waitForIdle): with a large backlog
    // (a sink down for hours) the count is not free.
    return this.readForAdmin(async (x) => {
      const m = await x.all(`SELECT COUNT(*) AS n FROM messages WHERE status IN ${UNROUTED_MESSAGE}`);
      const d = await x.all(
        `SELECT
           SUM(CASE WHEN next_attempt_at IS NULL OR next_attempt_at <= ? THEN 1 ELSE 0 END) AS due,
           SUM(CASE WHEN next_attempt_at > ? THEN 1 ELSE 0 END) AS later,
           SUM(CASE WHEN lease_expires > ? THEN 1 ELSE 0 END) AS leased
         FROM deliveries WHERE superseded = 0 AND status IN ${OPEN_DELIVERY}`,
        [now, now, now],
      );
      return {
        unprocessedMessages: Number(m[0]?.n ?? 0),
        deliveriesDue: Number(d[0]?.due ?? 0),
        deliveriesScheduled: Number(d[0]?.later ?? 0),
        deliveriesLeased: Number(d[0]?.leased ?? 0),
      };
    });
  }

  async sinkBacklog(): Promise<Record<string, { open: number; oldestAt?: Date }>> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) =>
      x.all(`SELECT sink_id, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE superseded = 0 AND status IN ${OPEN_DELIVERY} GROUP BY sink_id`),
    );
    const out: Record<string, { open: number; oldestAt?: Date }> = {};
    for (const r of rows) out[r.sink_id] = { open: Number(r.n), ...(r.oldest !== null && r.oldest !== undefined ? { oldestAt: new Date(Number(r.oldest)) } : {}) };
    return out;
  }

  async throughput(since: Date, bucketMs: number, now = new Date(this.now())): Promise<ThroughputSeries> {
    this.assertOpen();
    const t0 = since.getTime();
    const buckets = Math.max(1, Math.ceil((now.getTime() - t0) / bucketMs));
    // SQLite would walk the (source_id, seq) index for its GROUP BY -- every message -- rather than the window's range.
    const byReceived = this.dialect === 'sqlite' ? ' INDEXED BY messages_received_at' : '';
    const [msgs, dels] = await this.readForAdmin(async (x) => [
      await x.all(
        `SELECT source_id, b, COUNT(*) AS n, SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS f
         FROM (SELECT source_id, status, (received_at - CAST(? AS BIGINT)) / CAST(? AS BIGINT) AS b FROM messages${byReceived} WHERE received_at >= ?) w GROUP BY source_id, b`,
        [t0, bucketMs, t0],
      ),
      await x.all(
        `SELECT sink_id, b, COUNT(*) AS n
         FROM (SELECT sink_id, (delivered_at - CAST(? AS BIGINT)) / CAST(? AS BIGINT) AS b FROM deliveries WHERE delivered_at >= ?) w GROUP BY sink_id, b`,
        [t0, bucketMs, t0],
      ),
    ]);
    const out: ThroughputSeries = { since, bucketMs, buckets, received: {}, failed: {}, delivered: {} };
    const add = (m: Record<string, number[]>, k: string, b: number, n: number) => {
      if (b < 0 || b >= buckets) return; // a clock step: outside the window
      (m[k] ??= new Array<number>(buckets).fill(0))[b] += n;
    };
    for (const r of msgs) {
      add(out.received, r.source_id, Number(r.b), Number(r.n));
      add(out.failed, r.source_id, Number(r.b), Number(r.f));
    }
    for (const r of dels) add(out.delivered, r.sink_id, Number(r.b), Number(r.n));
    return out;
  }

  async recordEvents(events: { messageId: string; status: string; detail?: string }[]): Promise<void> {
    this.assertOpen();
    if (!events.length) return;
    const at = this.now();
    await this.write((x) => this.events_(x, events.map((e) => ({ id: e.messageId, at, status: e.status, detail: e.detail ?? null }))));
  }

  async sourceActivity(sourceIds: string[]): Promise<Record<string, { lastMessageAt?: Date; failed: number }>> {
    this.assertOpen();
    const out: Record<string, { lastMessageAt?: Date; failed: number }> = {};
    await this.readForAdmin(async (x) => {
      for (const id of sourceIds) {
        // The (source_id, seq) index: one probe per source.
        const r = await x.all('SELECT received_at FROM messages WHERE source_id = ? ORDER BY seq DESC LIMIT 1', [id]);
        out[id] = { failed: 0, ...(r[0] ? { lastMessageAt: new Date(Number(r[0].received_at)) } : {}) };
      }
      const failed = await x.all(`SELECT source_id, COUNT(*) AS n FROM messages WHERE status = 'failed' GROUP BY source_id`);
      for (const r of failed) if (out[r.source_id]) out[r.source_id].failed = Number(r.n);
    });
    return out;
  }

  async countMessages(statuses: MessageStatus[]): Promise<Partial<Record<MessageStatus, number>>> {
    this.assertOpen();
    const out: Partial<Record<MessageStatus, number>> = Object.fromEntries(statuses.map((st) => [st, 0]));
    if (!statuses.length) return out;
    const rows = await this.readForAdmin((x) =>
      x.all(`SELECT status, COUNT(*) AS n FROM messages WHERE status IN (${statuses.map(() => '?').join(', ')}) GROUP BY status`, statuses),
    );
    for (const r of rows) out[r.status as MessageStatus] = Number(r.n);
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Replay, checkpoints, retention, stats

  /**
   * Bulk operations (replay, retry, prune) run in steps of this many messages or deliveries, each
   * its own transaction, with the event loop free between them: SQLite's calls are synchronous
   * on the engine's thread, and one transaction for a replay of 20,000 messages stood the engine
   * still for a third of a second (a million: a quarter of a minute).
   */
  bulkStep = 500;

  /** Lets sockets, timers and the engine's other stages run between the steps of a bulk operation. */
  protected static breathe(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }

  /** `step` over `items`, `bulkStep` at a time, each in its own transaction; what the steps return, in order. */
  private async inSteps<T>(items: string[], step: (x: SqlExec, part: string[]) => Promise<T[]>): Promise<T[]> {
    const out: T[] = [];
    for (let o = 0; o < items.length; o += this.bulkStep) {
      const part = items.slice(o, o + this.bulkStep);
      out.push(...(await this.txSettled((x) => step(x, part), { long: true })));
      await SqlMessageStore.breathe();
    }
    return out;
  }

  async replay(filter: MessageFilter): Promise<string[]> {
    this.assertOpen();
    const now = this.now();
    const limit = filter.limit && filter.limit > 0 ? ` LIMIT ${Math.floor(filter.limit)}` : '';
    const candidates = (
      await this.readForAdmin(async (x) => {
        const { where, params } = await this.filterSqlOn(x, filter);
        return x.all(`SELECT m.id FROM messages m ${where ? `${where} AND` : 'WHERE'} m.pruned_at IS NULL AND m.status NOT IN ${UNROUTED_MESSAGE} ORDER BY m.seq${limit}`, params);
      })
    ).map((r) => r.id as string);
    return this.inSteps(candidates, async (x, part) => {
      // Still replayable: not pruned, not being processed (the engine or another instance may
      // have moved it since the candidates were read).
      const rows = await x.all(
        `UPDATE messages SET status = 'received', error = NULL, lease_owner = NULL, lease_expires = NULL, process_attempts = 0, updated_at = ?
         WHERE id IN (${part.map(() => '?').join(', ')}) AND pruned_at IS NULL AND status NOT IN ${UNROUTED_MESSAGE} RETURNING id, seq`,
        [now, ...part],
      );
      if (!rows.length) return [];
      const ids = rows.sort((a, b) => Number(a.seq) - Number(b.seq)).map((r) => r.id as string);
      const inIds = `(${ids.map(() => '?').join(', ')})`;
      await x.run(`UPDATE message_content SET bundle = NULL WHERE message_id IN ${inIds}`, ids);
      const superseded = await x.all(
        `UPDATE deliveries SET superseded = 1, lease_owner = NULL, lease_expires = NULL WHERE message_id IN ${inIds} AND superseded = 0 RETURNING message_id, sink_id, ordering_key, strict_order, status`,
        ids,
      );
      await this.promoteHeads(x, superseded.filter((r) => r.status === 'pending' || r.status === 'failed'));
      const n = new Map<string, number>();
      for (const r of superseded) n.set(r.message_id as string, (n.get(r.message_id as string) ?? 0) + 1);
      await this.events_(
        x,
        ids.map((id) => ({ id, at: now, status: 'received', detail: n.get(id) ? `replay (${n.get(id)} deliveries superseded)` : 'replay' })),
      );
      return ids;
    });
  }

  /**
   * Retry deliveries without transforming again (same bundle): dead or failed deliveries matching
   * the filter become pending, due now, attempts reset. Returns the delivery ids re-queued.
   */
  async retryDeliveries(filter: MessageFilter & { deliveryIds?: string[] }): Promise<string[]> {
    this.assertOpen();
    const now = this.now();
    const statuses = filter.deliveryStatus?.length ? filter.deliveryStatus : ['dead', 'failed'];
    const c: string[] = ['d.superseded = 0', `d.status IN (${statuses.map(() => '?').join(', ')})`];
    const p: unknown[] = [...statuses];
    if (filter.sinkId) {
      c.push('d.sink_id = ?');
      p.push(filter.sinkId);
    }
    if (filter.routeId) {
      c.push('d.route_id = ?');
      p.push(filter.routeId);
    }
    if (filter.deliveryIds) {
      c.push(filter.deliveryIds.length ? `d.id IN (${filter.deliveryIds.map(() => '?').join(', ')})` : '1 = 0');
      p.push(...filter.deliveryIds);
    }
    const candidates = (
      await this.readForAdmin(async (x) => {
        const { where, params } = await this.filterSqlOn(x, { ...filter, deliveryStatus: undefined, sinkId: undefined, routeId: undefined });
        return x.all(`SELECT d.id FROM deliveries d WHERE ${c.join(' AND ')} AND d.message_id IN (SELECT m.id FROM messages m ${where}) ORDER BY d.message_seq, d.seq`, [...p, ...params]);
      })
    ).map((r) => r.id as string);
    return this.inSteps(candidates, async (x, part) => {
      // Still open to a retry (superseded or delivered meanwhile: left alone).
      const rows = await x.all(
        `UPDATE deliveries SET status = 'pending', attempts = 0, probe_attempts = 0, first_attempt_at = NULL, next_attempt_at = NULL, lease_owner = NULL, lease_expires = NULL
         WHERE id IN (${part.map(() => '?').join(', ')}) AND superseded = 0 AND status IN (${statuses.map(() => '?').join(', ')})
         RETURNING id, message_id, message_seq, seq, sink_id, route_id`,
        [...part, ...statuses],
      );
      if (!rows.length) return [];
      await this.settleHeads(x, rows.map((r) => r.id as string));
      rows.sort((a, b) => Number(a.message_seq) - Number(b.message_seq) || Number(a.seq) - Number(b.seq));
      const evs: EventRow[] = rows.map((r) => ({ id: r.message_id as string, at: now, status: 'delivery:pending', sinkId: r.sink_id as string, routeId: r.route_id as string, detail: 'retry requested' }));
      const touched = [...new Set(rows.map((r) => r.message_id as string))];
      const moved = await x.all(
        `UPDATE messages SET status = 'routed', updated_at = ? WHERE id IN (${touched.map(() => '?').join(', ')}) AND status <> 'routed' RETURNING id, seq`,
        [now, ...touched],
      );
      for (const m of moved.sort((a, b) => Number(a.seq) - Number(b.seq))) evs.push({ id: m.id as string, at: now, status: 'routed', detail: 'retry requested' });
      await this.events_(x, evs);
      return rows.map((r) => r.id as string);
    });
  }

  private upsertCheckpoint(x: SqlExec, sourceId: string, key: string, value: string, now: number): Promise<number> {
    return x.run(
      `INSERT INTO checkpoints (source_id, key, value, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (source_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
      [sourceId, key, value, now],
    );
  }

  async holdSink(sinkId: string, opts: { until?: Date; reason?: string } = {}): Promise<SinkHold> {
    this.assertOpen();
    if (typeof sinkId !== 'string' || !sinkId) throw new FerryError('INPUT_SINK_ID', 'a sink id is required', { kind: 'input' });
    const now = this.now();
    // The caller's clock -> the database's.
    const until = opts.until === undefined ? null : opts.until.getTime() + this.clockOffsetMs;
    if (until !== null && !Number.isFinite(until)) throw new FerryError('INPUT_HOLD_UNTIL', 'the end of a hold must be a valid time', { kind: 'input' });
    await this.tx(
      (x) =>
        x.run(
          `INSERT INTO sink_holds (sink_id, held_at, until_at, reason) VALUES (?, ?, ?, ?)
           ON CONFLICT (sink_id) DO UPDATE SET held_at = excluded.held_at, until_at = excluded.until_at, reason = excluded.reason`,
          [sinkId, now, until, opts.reason ?? null],
        ),
      { durable: true },
    );
    return this.toHold({ sink_id: sinkId, held_at: now, until_at: until, reason: opts.reason ?? null });
  }

  async releaseSink(sinkId: string): Promise<boolean> {
    this.assertOpen();
    return (await this.tx((x) => x.run('DELETE FROM sink_holds WHERE sink_id = ?', [sinkId]), { durable: true })) > 0;
  }

  async sinkHolds(): Promise<SinkHold[]> {
    this.assertOpen();
    const rows = await this.readLoop((x) => x.all('SELECT sink_id, held_at, until_at, reason FROM sink_holds WHERE until_at IS NULL OR until_at > ? ORDER BY sink_id', [this.now()]));
    return rows.map((r) => this.toHold(r));
  }

  private toHold(r: Row): SinkHold {
    const h: SinkHold = { sinkId: r.sink_id as string, since: new Date(Number(r.held_at) - this.clockOffsetMs) };
    if (r.until_at !== null && r.until_at !== undefined) h.until = new Date(Number(r.until_at) - this.clockOffsetMs);
    if (r.reason !== null && r.reason !== undefined) h.reason = r.reason as string;
    return h;
  }

  // ------------------------------------------------------------------------------------------
  // Audit trail and API tokens

  async recordConfigVersion(v: { hash: string; appliedBy: string; config: string }): Promise<{ version: number; created: boolean }> {
    this.assertOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.tx(async (x) => {
          const [latest] = await x.all('SELECT version, hash FROM config_versions ORDER BY version DESC LIMIT 1', []);
          if (latest && latest.hash === v.hash) return { version: Number(latest.version), created: false };
          const version = latest ? Number(latest.version) + 1 : 1;
          await x.run('INSERT INTO config_versions (version, hash, at, applied_by, config) VALUES (?, ?, ?, ?, ?)', [version, v.hash, this.now(), v.appliedBy, v.config]);
          return { version, created: true };
        }, { durable: true });
      } catch (e) {
        // Another instance took the same number (PostgreSQL): read again.
        if (attempt < 3 && /unique|duplicate key|constraint/i.test((e as Error).message)) continue;
        throw e;
      }
    }
  }

  async configVersions(limit = 100): Promise<StoredConfigVersion[]> {
    this.assertOpen();
    const rows = await this.readAside((x) => x.all(`SELECT version, hash, at, applied_by FROM config_versions ORDER BY version DESC LIMIT ${Math.max(1, Math.floor(limit))}`, []));
    return rows.map((r) => ({ version: Number(r.version), hash: r.hash, at: new Date(Number(r.at) - this.clockOffsetMs), appliedBy: r.applied_by }));
  }

  async configVersion(version: number): Promise<StoredConfigVersion | undefined> {
    this.assertOpen();
    const [r] = await this.readAside((x) => x.all('SELECT version, hash, at, applied_by, config FROM config_versions WHERE version = ?', [version]));
    return r ? { version: Number(r.version), hash: r.hash, at: new Date(Number(r.at) - this.clockOffsetMs), appliedBy: r.applied_by, config: r.config } : undefined;
  }

  /** Stamps each message with the config version that routed it (in the transaction recording it). */
  private async stampConfigVersions(x: SqlExec, results: ProcessedMessage[], skip?: Set<string>): Promise<void> {
    const byVersion = new Map<number, string[]>();
    for (const r of results) if (r.configVersion !== undefined && !skip?.has(r.id)) byVersion.set(r.configVersion, [...(byVersion.get(r.configVersion) ?? []), r.id]);
    for (const [version, ids] of byVersion) await x.run(`UPDATE messages SET config_version = ? WHERE id IN (${ids.map(() => '?').join(', ')})`, [version, ...ids]);
  }

  async appendAudit(entries: AuditEntry[]): Promise<void> {
    this.assertOpen();
    if (!entries.length) return;
    const now = this.now();
    await this.tx(async (x) => {
      for (const e of entries) {
        if (!e.principal || !e.action || !e.result) throw new FerryError('INPUT_AUDIT_ENTRY', 'an audit entry needs principal, action and result', { kind: 'input' });
        await x.run(
          'INSERT INTO audit_log (at, principal, role, remote, action, target, message_ids, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
          [
            e.at ? e.at.getTime() + this.clockOffsetMs : now,
            e.principal,
            e.role ?? null,
            e.remote ?? null,
            e.action,
            e.target ?? null,
            e.messageIds?.length ? JSON.stringify(e.messageIds) : null,
            e.result,
            e.detail ?? null,
          ],
        );
      }
    }, { durable: true });
  }

  async auditEntries(f: AuditFilter = {}): Promise<StoredAuditEntry[]> {
    this.assertOpen();
    const c: string[] = [];
    const p: unknown[] = [];
    const add = (sql: string, v: unknown) => {
      c.push(sql);
      p.push(v);
    };
    if (f.since) add('at >= ?', f.since.getTime() + this.clockOffsetMs);
    if (f.until) add('at < ?', f.until.getTime() + this.clockOffsetMs);
    if (f.principal) add('principal = ?', f.principal);
    if (f.action) add('action = ?', f.action);
    if (f.result) add('result = ?', f.result);
    if (f.messageId) add('message_ids LIKE ?', `%${JSON.stringify(f.messageId)}%`);
    if (f.afterSeq !== undefined) add(f.newestFirst ? 'seq < ?' : 'seq > ?', f.afterSeq);
    const limit = f.limit && f.limit > 0 ? ` LIMIT ${Math.floor(f.limit)}` : '';
    const rows = await this.readAside((x) => x.all(`SELECT * FROM audit_log ${c.length ? `WHERE ${c.join(' AND ')}` : ''} ORDER BY seq ${f.newestFirst ? 'DESC' : 'ASC'}${limit}`, p));
    return rows.map((r) => {
      const e: StoredAuditEntry = { seq: Number(r.seq), at: new Date(Number(r.at) - this.clockOffsetMs), principal: r.principal, action: r.action, result: r.result };
      if (r.role) e.role = r.role;
      if (r.remote) e.remote = r.remote;
      if (r.target) e.target = r.target;
      if (r.message_ids) e.messageIds = JSON.parse(r.message_ids);
      if (r.detail) e.detail = r.detail;
      return e;
    });
  }

  async createApiToken(t: ApiTokenRecord): Promise<void> {
    this.assertOpen();
    if (!t.id || !t.name || !t.hash || !t.roles?.length) throw new FerryError('INPUT_TOKEN', 'a token needs id, name, roles and hash', { kind: 'input' });
    await this.tx(async (x) => {
      if ((await x.all('SELECT id FROM api_tokens WHERE id = ?', [t.id])).length) throw new FerryError('INPUT_TOKEN_EXISTS', `a token with id ${t.id} exists`, { kind: 'input' });
      await x.run('INSERT INTO api_tokens (id, name, roles, hash, created_at, created_by, expires_at, revoked_at, revoked_by, scopes) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)', [
        t.id,
        t.name,
        JSON.stringify(t.roles),
        t.hash,
        t.createdAt.getTime(),
        t.createdBy ?? null,
        t.expiresAt ? t.expiresAt.getTime() : null,
        t.scopes?.length ? JSON.stringify(t.scopes) : null,
      ]);
    }, { durable: true });
  }

  private toToken(r: Row): ApiTokenRecord {
    const t: ApiTokenRecord = { id: r.id, name: r.name, roles: JSON.parse(r.roles), hash: r.hash, createdAt: new Date(Number(r.created_at)) };
    if (r.created_by) t.createdBy = r.created_by;
    if (r.expires_at !== null && r.expires_at !== undefined) t.expiresAt = new Date(Number(r.expires_at));
    if (r.revoked_at !== null && r.revoked_at !== undefined) t.revokedAt = new Date(Number(r.revoked_at));
    if (r.revoked_by) t.revokedBy = r.revoked_by;
    if (r.scopes) t.scopes = JSON.parse(r.scopes);
    return t;
  }

  async apiTokens(): Promise<ApiTokenRecord[]> {
    this.assertOpen();
    return (await this.read((x) => x.all('SELECT * FROM api_tokens ORDER BY created_at, id'))).map((r) => this.toToken(r));
  }

  async apiToken(id: string): Promise<ApiTokenRecord | undefined> {
    this.assertOpen();
    const rows = await this.read((x) => x.all('SELECT * FROM api_tokens WHERE id = ?', [id]));
    return rows[0] ? this.toToken(rows[0]) : undefined;
  }

  async revokeApiToken(id: string, by?: string): Promise<boolean> {
    this.assertOpen();
    const now = this.now();
    return (await this.tx((x) => x.run('UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL', [now, by ?? null, id]), { durable: true })) > 0;
  }

  /** The FHIR facade's tables (migration 11). */
  get facade(): FacadeStore {
    const self = this;
    return (this.facadeOps ??= {
      async facadeIdentify(ids) {
        self.assertOpen();
        if (!ids.length) return;
        const now = self.now();
        await self.tx(async (x) => {
          for (const i of ids)
            await x.run(
              `INSERT INTO facade_identities (connection_id, resource_type, vendor_id, canonical_id, mrn, updated_at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (connection_id, resource_type, vendor_id) DO UPDATE SET canonical_id = excluded.canonical_id, mrn = COALESCE(excluded.mrn, facade_identities.mrn), updated_at = excluded.updated_at`,
              [i.connectionId, i.resourceType, i.vendorId, i.canonicalId, i.mrn ?? null, now],
            );
        });
      },
      async facadeIdentityOf(connectionId, resourceType, canonicalId) {
        self.assertOpen();
        const rows = await self.read((x) => x.all('SELECT * FROM facade_identities WHERE connection_id = ? AND resource_type = ? AND canonical_id = ? ORDER BY updated_at DESC LIMIT 1', [connectionId, resourceType, canonicalId]));
        return rows[0] ? toIdentity(rows[0]) : undefined;
      },
      async facadeIdentitiesByMrn(resourceType, mrn) {
        self.assertOpen();
        return (await self.read((x) => x.all('SELECT * FROM facade_identities WHERE resource_type = ? AND mrn = ? ORDER BY connection_id, vendor_id', [resourceType, mrn]))).map(toIdentity);
      },
      async facadeResourcePut(connectionId, resourceType, canonicalId, resource) {
        self.assertOpen();
        const now = self.now();
        await self.tx((x) =>
          x.run(
            `INSERT INTO facade_resources (connection_id, resource_type, canonical_id, resource, fetched_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (connection_id, resource_type, canonical_id) DO UPDATE SET resource = excluded.resource, fetched_at = excluded.fetched_at`,
            [connectionId, resourceType, canonicalId, resource, now],
          ),
        );
      },
      async facadeResourceGet(connectionId, resourceType, canonicalId) {
        self.assertOpen();
        const rows = await self.read((x) => x.all('SELECT resource, fetched_at FROM facade_resources WHERE connection_id = ? AND resource_type = ? AND canonical_id = ?', [connectionId, resourceType, canonicalId]));
        return rows[0] ? { resource: String(rows[0].resource), fetchedAt: new Date(Number(rows[0].fetched_at) - self.clockOffsetMs) } : undefined;
      },
      async facadeIdempotencyBegin(scope, key, requestHash, ttlMs) {
        self.assertOpen();
        const now = self.now();
        return self.tx(async (x) => {
          await x.run('DELETE FROM facade_idempotency WHERE scope = ? AND idem_key = ? AND expires_at <= ?', [scope, key, now]);
          const rows = await x.all(`SELECT * FROM facade_idempotency WHERE scope = ? AND idem_key = ?${self.lockClause('facade_idempotency')}`, [scope, key]);
          const r = rows[0];
          if (r) return r.state === 'done' ? { state: 'done' as const, requestHash: r.request_hash, status: Number(r.status), response: String(r.response) } : { state: 'pending' as const, requestHash: r.request_hash };
          // Another instance may insert the same key between the SELECT and here (PostgreSQL): the
          // primary key refuses the second insert, and that caller answers "in progress".
          const n = await x.run('INSERT INTO facade_idempotency (scope, idem_key, request_hash, state, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, idem_key) DO NOTHING', [scope, key, requestHash, 'pending', now, now + ttlMs]);
          return n ? { state: 'new' as const } : { state: 'pending' as const, requestHash };
        }, { durable: true });
      },
      async facadeIdempotencyFinish(scope, key, status, response) {
        self.assertOpen();
        await self.tx((x) => x.run("UPDATE facade_idempotency SET state = 'done', status = ?, response = ? WHERE scope = ? AND idem_key = ?", [status, response, scope, key]), { durable: true });
      },
      async facadeIdempotencyRelease(scope, key) {
        self.assertOpen();
        await self.tx((x) => x.run("DELETE FROM facade_idempotency WHERE scope = ? AND idem_key = ? AND state = 'pending'", [scope, key]), { durable: true });
      },
    });
  }
  private facadeOps?: FacadeStore;

  async getCheckpoint(sourceId: string, key: string): Promise<string | undefined> {
    this.assertOpen();
    const rows = await this.readSettled((x) => x.all('SELECT value FROM checkpoints WHERE source_id = ? AND key = ?', [sourceId, key]));
    return rows[0]?.value ?? undefined;
  }

  async setCheckpoint(sourceId: string, key: string, value: string): Promise<void> {
    this.assertOpen();
    const now = this.now();
    await this.tx((x) => this.upsertCheckpoint(x, sourceId, key, value, now), { durable: true });
  }

  /** Messages a step of `prune` looks at (by seq), and the most it prunes or deletes (tests make them small). */
  pruneStep = { scan: 20_000, batch: 500 };

  /**
   * In steps, each its own short transaction over a bounded range of messages, with the event
   * loop free between them: the engine keeps acknowledging and delivering while a large prune
   * runs (one transaction for everything held SQLite's lock -- and, its calls being synchronous,
   * the engine's thread -- for about a minute per million messages).
   */
  async prune(opts: PruneOptions): Promise<PruneResult> {
    this.assertOpen();
    const now = this.now();
    const passes: { statuses: string[]; before: number; del: boolean }[] = [{ statuses: ['delivered', 'filtered', 'unrouted'], before: opts.bodiesBefore.getTime(), del: false }];
    if (opts.deadBefore) passes.push({ statuses: ['dead', 'failed'], before: opts.deadBefore.getTime(), del: false });
    if (opts.deleteBefore) passes.push({ statuses: ['delivered', 'filtered', 'unrouted', 'dead', 'failed'], before: opts.deleteBefore.getTime(), del: true });
    const top = Number((await this.readSettled((x) => x.all('SELECT MAX(seq) AS s FROM messages')))[0]?.s ?? 0);
    let messages = 0;
    let deleted = 0;
    const { scan, batch } = this.pruneStep;
    for (const pass of passes) {
      for (let after = 0; after < top; ) {
        const upTo = Math.min(after + scan, top);
        const step = await this.txSettled(
          async (x) => {
            const rows = await x.all(
              `SELECT seq, id FROM messages
               WHERE seq > ? AND seq <= ? AND status IN (${pass.statuses.map(() => '?').join(', ')}) AND updated_at < ?${pass.del ? '' : ' AND pruned_at IS NULL'}
               ORDER BY seq LIMIT ?${this.lockClause('messages')}`,
              [after, upTo, ...pass.statuses, pass.before, batch],
            );
            const next = rows.length === batch ? Number(rows[rows.length - 1].seq) : upTo;
            if (!rows.length) return { next, n: 0 };
            const seqs = rows.map((r) => Number(r.seq));
            const ids = rows.map((r) => r.id as string);
            const inSeqs = `(${seqs.map(() => '?').join(', ')})`;
            const inIds = `(${ids.map(() => '?').join(', ')})`;
            if (pass.del) {
              await x.run(`DELETE FROM message_events WHERE message_id IN ${inIds}`, ids);
              // A dead message's other deliveries may still be open.
              const gone = await x.all(`DELETE FROM deliveries WHERE message_id IN ${inIds} RETURNING sink_id, ordering_key, strict_order, status, superseded`, ids);
              await this.promoteHeads(x, gone.filter((r) => (r.status === 'pending' || r.status === 'failed') && !Number(r.superseded)));
              await x.run(`DELETE FROM message_content WHERE message_id IN ${inIds}`, ids);
              return { next, n: await x.run(`DELETE FROM messages WHERE seq IN ${inSeqs}`, seqs) };
            }
            // (PostgreSQL: the rows are locked by the SELECT; one another instance's prune holds is
            // skipped, and left to its prune.)
            const n = await x.run(`UPDATE messages SET pruned_at = ? WHERE seq IN ${inSeqs} AND pruned_at IS NULL`, [now, ...seqs]);
            await x.run(`DELETE FROM message_content WHERE message_id IN ${inIds}`, ids);
            await x.run(`UPDATE deliveries SET bundle = NULL WHERE bundle IS NOT NULL AND message_id IN ${inIds}`, ids);
            return { next, n };
          },
          { long: true },
        );
        if (pass.del) deleted += step.n;
        else messages += step.n;
        after = step.next;
        // Sockets, timers and the other stages run between steps (a resolved promise alone
        // would go straight on to the next one).
        await SqlMessageStore.breathe();
      }
    }
    let auditDeleted: number | undefined;
    if (opts.auditBefore) {
      const before = opts.auditBefore.getTime() + this.clockOffsetMs;
      auditDeleted = await this.txSettled((x) => x.run('DELETE FROM audit_log WHERE at < ?', [before]), { long: true });
    }
    if (messages || deleted || auditDeleted) await this.compact();
    return auditDeleted === undefined ? { messages, deleted } : { messages, deleted, auditDeleted };
  }

  async stats(): Promise<StoreStats> {
    this.assertOpen();
    return this.readForAdmin(async (x) => {
      const m = await x.all('SELECT status, COUNT(*) AS n FROM messages GROUP BY status');
      const d = await x.all('SELECT status, COUNT(*) AS n FROM deliveries WHERE superseded = 0 GROUP BY status');
      return {
        messages: Object.fromEntries(m.map((r) => [r.status, Number(r.n)])),
        deliveries: Object.fromEntries(d.map((r) => [r.status, Number(r.n)])),
      };
    });
  }
}

function toIdentity(r: Row): FacadeIdentity {
  const i: FacadeIdentity = { connectionId: r.connection_id, resourceType: r.resource_type, vendorId: r.vendor_id, canonicalId: r.canonical_id };
  if (r.mrn) i.mrn = r.mrn;
  return i;
}
