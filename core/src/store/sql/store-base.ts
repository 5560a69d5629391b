import type { Logger } from 'winston';
import { FerryError } from '../../errors';
import type {
  DeliveryStatus,
  MessageHeaders,
  MessageStatus,
  StoredDelivery,
  StoredError,
  StoredMessage,
} from '../../model/message';
import { lazyJson } from '../../util/lazy-json';
import { ddl, migrations, type Dialect } from '../schema';
import {
  CHUNK,
  date,
  json,
  num,
  rollbackTo,
  type BufferedExec,
  type EventRow,
  type GroupCommitOptions,
  type Row,
  type SqlExec,
  type SqlStoreOptions,
} from './sql-exec';

/** Codes of a store whose writes fail for want of space, memory or a writable file (both stores). */
const CANNOT_WRITE = new Set([
  'FERRY_E_TRANSIENT_STORE_FULL',
  'FERRY_E_TRANSIENT_STORE_IO',
  'FERRY_E_TRANSIENT_STORE_READONLY',
  'FERRY_E_TRANSIENT_STORE_NOMEM',
]);

/**
 * After writes failed for want of space (or an I/O error), the store counts as writable again once
 * writes have succeeded this long after the last such failure: on a nearly full disk small writes
 * succeed between failing bigger ones, and readiness and the log would flap with each.
 */
const WRITABLE_AFTER_MS = 1000;

/**
 * The foundation of the SQL store (see sql.store.ts for how the parts stack): the connection a
 * subclass supplies (`tx`, `read`, the dialect bits), the lifecycle and migrations, the clock,
 * whether the store can write, the group commit of state transitions (`write`) and the read
 * wrappers that wait for it, and the row mapping every part uses.
 */
export abstract class SqlStoreBase {
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
  protected closing = false;
  /** State transitions waiting for the next shared transaction. */
  private writes: { fn: (x: SqlExec) => Promise<unknown>; resolve(v: unknown): void; reject(e: unknown): void }[] = [];
  /** Set while writes fail for want of space (disk full, an I/O error): see `noteWriteFailure`. */
  private unwritable?: { error: FerryError; since: number; last: number; failures: number };
  private writeTimer?: { cancel(): void };
  private writing?: Promise<void>;
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
  /**
   * A durable transaction whose durability is waited for apart from its commit: `durable` resolves
   * once it is on disk. The insert group commit answers its callers then, and meanwhile commits
   * its next batch (SQLite: see WalSync). Here: a commit that is durable when it returns.
   */
  protected async txDurableLater<T>(fn: (x: SqlExec) => Promise<T>): Promise<{ result: T; durable: Promise<void> }> {
    return { result: await this.tx(fn, { durable: true }), durable: Promise.resolve() };
  }
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

  /** The insert group commit's batch in flight, or the next one started; undefined when none is queued. */
  protected abstract nextInsertFlush(): Promise<void> | undefined;
  /** The insert group commit's pending turn cancelled (closing: `nextInsertFlush` drains the queue). */
  protected abstract stopInsertTimer(): void;
  /** Writes the held transform results (before reads, so they see them). */
  protected abstract flushPendingTransforms(): Promise<void>;
  /** Waits for writes a part queues outside the shared transaction's queue (closing). */
  protected async drainQueuedWrites(): Promise<void> {}

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
    this.stopInsertTimer();
    await this.drainQueuedWrites();
    for (;;) {
      const inserts = this.nextInsertFlush();
      if (inserts) await inserts;
      else if (this.writing) await this.writing;
      else if (this.writes.length) {
        this.cancelWriteTimer();
        await this.flushWrites();
      } else break;
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
      await x.run(
        `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at ${this.dialect === 'sqlite' ? 'INTEGER' : 'BIGINT'} NOT NULL)`,
      );
      const rows = await x.all('SELECT version FROM schema_migrations');
      const done = new Set(rows.map((r) => Number(r.version)));
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        for (const s of [...m.statements, ...(m.only?.[this.dialect] ?? [])]) await x.run(ddl(s, this.dialect));
        await x.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [
          m.version,
          m.name,
          this.now(),
        ]);
        this.logger.info('store migration applied', { store: this.kind, version: m.version, migration: m.name });
      }
      const max = Math.max(0, ...done);
      const known = migrations[migrations.length - 1].version;
      if (max > known) {
        throw new FerryError(
          'CONFIG_STORE_SCHEMA_NEWER',
          `the store's schema version ${max} is newer than this Ferry knows (${known}); upgrade Ferry`,
          { kind: 'config' },
        );
      }
    });
  }

  protected assertOpen(): void {
    if (!this.opened || this.closing)
      throw new FerryError('TRANSIENT_STORE_CLOSED', 'the message store is not open', { kind: 'transient' });
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
    this.logger.info(`${this.kind} store writable again`, {
      store: this.kind,
      was: u.error.code,
      failures: u.failures,
      forMs: now - u.since,
    });
    this.unwritable = undefined;
  }

  protected event(
    x: SqlExec,
    messageId: string,
    at: number,
    status: string,
    sinkId?: string,
    routeId?: string,
    detail?: string,
  ): Promise<void> {
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
  protected async settle(transforms = true): Promise<void> {
    if (transforms) {
      await this.flushPendingTransforms();
      // Reads for people see the event rows recorded before them (an ACK just sent).
      await this.drainQueuedWrites();
    }
    if (this.writing) await this.writing;
    if (this.writes.length) {
      this.cancelWriteTimer();
      await this.flushWrites();
    }
  }

  /** Reads for the engine's own loops: held transform results need not be written first. */
  protected readLoop<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    return this.readSettled(fn, false);
  }

  protected async readSettled<T>(fn: (x: SqlExec) => Promise<T>, transforms = true): Promise<T> {
    await this.settle(transforms);
    return this.read(fn);
  }

  /**
   * Reads for people and tools (the admin API, `ferry` commands, metrics, the candidates of a
   * replay): after the transitions queued so far commit, like `readSettled`, but where the store
   * can, on a connection of their own off the engine's thread (`readAside`), so a slow query over
   * a large store does not stop the engine. Only reads: `run` is refused there.
   */
  protected async readForAdmin<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    await this.settle(true);
    return this.readAside(fn);
  }

  /** A read on a connection other than the engine's, where the store has one (SQLite); else `read`. */
  protected readAside<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    return this.read(fn);
  }

  /** Claims do not wait for held transform results: an unrouted message only holds back more. */
  protected claimTx<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    // SQLite (one writer): a claim joins the shared transaction of the state transitions queued
    // before it, so it sees them and costs no commit of its own.
    if (this.batchWrites) return this.write(fn);
    return this.txSettled(fn, { transforms: false });
  }

  protected async txSettled<T>(
    fn: (x: SqlExec) => Promise<T>,
    opts: { transforms?: boolean; long?: boolean } = {},
  ): Promise<T> {
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
    if (withBody && r.body !== null && r.body !== undefined)
      m.body = Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body);
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
  protected columns(body: boolean, bundle: boolean, alias = ''): string {
    const a = alias ? `${alias}.` : '';
    const cols = [
      'seq',
      'id',
      'source_id',
      'content_type',
      'headers',
      'received_at',
      'status',
      'error',
      'duplicate_of',
      'ordering_key',
      'config_version',
    ].map((c) => a + c);
    if (body) cols.push('c.body');
    if (bundle) cols.push('c.bundle');
    return cols.join(', ');
  }

  /** Bodies (and bundles) of some messages, by id. */
  protected async content(x: SqlExec, ids: string[], bundle: boolean): Promise<Map<string, Row>> {
    const out = new Map<string, Row>();
    for (let o = 0; o < ids.length; o += CHUNK) {
      const part = ids.slice(o, o + CHUNK);
      const rows = await x.all(
        `SELECT message_id, body${bundle ? ', bundle' : ''} FROM message_content WHERE message_id IN (${part.map(() => '?').join(', ')})`,
        part,
      );
      for (const r of rows) out.set(r.message_id, r);
    }
    return out;
  }

  protected async requireMessage(
    x: SqlExec,
    id: string,
    cols = 'seq, status, source_id, ordering_key, headers',
    forUpdate = false,
  ): Promise<Row> {
    const rows = await x.all(`SELECT ${cols} FROM messages WHERE id = ?${forUpdate ? this.rowLockClause() : ''}`, [id]);
    if (!rows[0])
      throw new FerryError('INTERNAL_STORE_NO_MESSAGE', `no stored message ${id}`, {
        kind: 'internal',
        details: { messageId: id },
      });
    return rows[0];
  }

  /** Event rows: collected by a shared transaction (one multi-row INSERT at its end), else inserted now. */
  protected async events_(x: SqlExec, rows: EventRow[]): Promise<void> {
    const buf = (x as Partial<BufferedExec>).events;
    if (buf) {
      for (const r of rows) buf.push(r);
      return;
    }
    await this.insertEvents(x, rows);
  }

  protected async insertEvents(x: SqlExec, rows: EventRow[]): Promise<void> {
    for (let o = 0; o < rows.length; o += CHUNK) {
      const part = rows.slice(o, o + CHUNK);
      await x.run(
        `INSERT INTO message_events (message_id, at, status, sink_id, route_id, detail) VALUES ${part.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}`,
        part.flatMap((e) => [e.id, e.at, e.status, e.sinkId ?? null, e.routeId ?? null, e.detail ?? null]),
      );
    }
  }

  /** Lets sockets, timers and the engine's other stages run between the steps of a bulk operation. */
  protected static breathe(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }
}
