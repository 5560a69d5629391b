import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import pg from 'pg';
import { FerryError } from '../errors';
import { runHeartbeat, type HeartbeatData, type HeartbeatReply } from './postgres-heartbeat-thread';
import type { InstanceOptions, InstanceStart, LiveInstance } from './message-store';
import type { Dialect } from './schema';
import { SqlMessageStore, type Row, type SqlExec, type SqlStoreOptions } from './sql/sql.store';

export interface PostgresStoreOptions extends SqlStoreOptions {
  /** `postgres://user@host:port/db` */
  url: string;
  /** Schema the tables live in (created when missing); default: the connection's search_path. */
  schema?: string;
  /** Connections in the pool. */
  poolSize?: number;
  /**
   * A statement with no answer within this many ms fails (as a lost connection; the connection is
   * discarded): a database behind a network that drops packets, rather than refusing them, would
   * otherwise hold the engine for the operating system's TCP timeout (~15 min). Bulk admin
   * operations (replay, prune) and migrations are exempt. 0 = no timeout. Default 30 s.
   */
  queryTimeoutMs?: number;
  /**
   * The server ends a session of this store that sits inside an open transaction, waiting for its
   * next statement, for longer than this (PostgreSQL's idle_in_transaction_session_timeout). The
   * store's own transactions send their statements back to back; a session idle inside one belongs
   * to a process that is paused (SIGSTOP, a frozen VM) or stuck, and its row locks would otherwise
   * block the instance taking over its leased work for as long as it stays paused. The transaction
   * rolls back (nothing it did was acknowledged: ACKs follow commits). 0 = never. Default 5 s.
   */
  idleInTransactionTimeoutMs?: number;
}

const INT8 = 20;
const NUMERIC = 1700;
const types = {
  getTypeParser(oid: number, format?: any) {
    if (oid === INT8 || oid === NUMERIC) return (v: string) => (v === null ? null : Number(v));
    return (pg.types.getTypeParser as (o: number, f?: any) => any)(oid, format);
  },
};

/** `?` placeholders -> `$1..$n` (the store's SQL never has `?` inside literals). */
function numbered(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}

function bind(params: unknown[] | undefined): unknown[] {
  return (params ?? []).map((p) => (p === undefined ? null : p));
}

const MIGRATION_LOCK = 0x7e44_0001;

/** SQLSTATEs and socket errors that mean the connection or the server, not the statement. */
const CONNECTION_CODES = new Set([
  '57P01',
  '57P02',
  '57P03',
  '53300',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
]);

/**
 * A lost connection (the server restarting, an administrator terminating it, the network) as a
 * transient FerryError, so callers know that trying again is right; anything else unchanged.
 */
function classifyPgError(e: unknown): unknown {
  if (e instanceof FerryError) return e;
  const message = (e as Error)?.message ?? String(e);
  if (isConnectionLoss(e))
    return new FerryError('TRANSIENT_STORE_CONNECTION', `PostgreSQL connection lost: ${message}`, {
      kind: 'transient',
      cause: e,
    });
  // The server's own state, not the statement's fault: the same write succeeds later.
  const code = (e as { code?: unknown })?.code;
  const kind =
    code === '53100' // disk_full
      ? ('TRANSIENT_STORE_FULL' as const)
      : code === '53200' // out_of_memory
        ? ('TRANSIENT_STORE_NOMEM' as const)
        : code === '40001' || code === '40P01' // serialization_failure, deadlock_detected
          ? ('TRANSIENT_STORE_CONFLICT' as const)
          : undefined;
  if (!kind) return e;
  return new FerryError(kind, `PostgreSQL: ${message}`, {
    kind: 'transient',
    retryable: true,
    cause: e,
    details: { sqlstate: code },
  });
}

/** The connection failed or stopped answering (the statement itself may have been fine). */
function isConnectionLoss(e: unknown): boolean {
  if (e instanceof FerryError) return e.code === 'FERRY_E_TRANSIENT_STORE_CONNECTION';
  const code = (e as { code?: unknown })?.code;
  const message = (e as Error)?.message ?? String(e);
  return (
    (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) ||
    /connection terminated|terminating connection|client has encountered a connection error|connection (?:is )?(?:closed|ended)|not queryable|query read timeout|timeout exceeded when trying to connect/i.test(
      message,
    )
  );
}

/**
 * The connection URL with `-c search_path=<schema>` added to its `options`. (Given to pg.Pool
 * as its own `options`, it was dropped whenever the URL had `options` of its own -- the URL's
 * win -- and the tables went to the default schema.)
 */
export function withSearchPath(url: string, schema: string | undefined): string {
  if (!schema) return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FerryError('CONFIG_STORE_URL', 'store.url is not a postgres:// URL (needed with store.schema)', {
      kind: 'config',
    });
  }
  const options = [u.searchParams.get('options'), `-c search_path=${schema}`].filter(Boolean).join(' ');
  u.searchParams.set('options', options);
  return u.toString();
}

/**
 * The compiled heartbeat thread (postgres-heartbeat-thread.ts), loaded by path; under ts-jest the
 * sources run from src/, the thread from dist/. Undefined when not built: the heartbeat is then
 * written from the engine's thread (same code, over a MessageChannel), with a warning.
 */
export function heartbeatScript(): string | undefined {
  const here = path.join(__dirname, 'postgres-heartbeat-thread.js');
  if (existsSync(here)) return here;
  const built = path.resolve(__dirname, '../../dist/store/postgres-heartbeat-thread.js');
  return existsSync(built) ? built : undefined;
}

/** How long a row of an instance that stopped beating is kept (for operators) before it is deleted. */
const DEAD_INSTANCE_KEPT_MS = 24 * 3600_000;

/**
 * PostgreSQL store: several engine processes share one database. Claims take row locks with
 * `FOR UPDATE SKIP LOCKED` and write a lease (owner + expiry), so instances split the backlog
 * without doing a delivery twice; a crashed instance's leases expire and others take over.
 * Inserts commit with `synchronous_commit = on` (the default); state transitions with
 * `synchronous_commit = off` (at worst the last transitions are redone after a server crash).
 */
export class PostgresMessageStore extends SqlMessageStore {
  readonly kind = 'postgres';
  protected readonly dialect: Dialect = 'postgres';
  protected override readonly batchWrites = false;
  private pool?: pg.Pool;
  private readonly url: string;
  private readonly schema?: string;
  private readonly poolSize: number;

  constructor(opts: PostgresStoreOptions) {
    super(opts);
    if (!opts.url)
      throw new FerryError('CONFIG_STORE_URL', 'store.url is required for kind postgres', { kind: 'config' });
    if (opts.schema !== undefined && !/^[a-z_][a-z0-9_]*$/i.test(opts.schema)) {
      throw new FerryError('CONFIG_STORE_SCHEMA', `invalid schema name ${opts.schema}`, { kind: 'config' });
    }
    this.url = opts.url;
    this.schema = opts.schema;
    this.poolSize = opts.poolSize ?? 12;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 30_000;
    this.idleInTransactionTimeoutMs = opts.idleInTransactionTimeoutMs ?? 5_000;
  }

  private readonly queryTimeoutMs: number;
  private readonly idleInTransactionTimeoutMs: number;

  protected async connect(): Promise<void> {
    const pool = new pg.Pool({
      connectionString: withSearchPath(this.url, this.schema),
      max: this.poolSize,
      types,
      application_name: 'ferry',
      connectionTimeoutMillis: 10_000,
      ...(this.idleInTransactionTimeoutMs > 0
        ? { idle_in_transaction_session_timeout: this.idleInTransactionTimeoutMs }
        : {}),
      // Dead peers are noticed by the operating system eventually, not only by the query timeout.
      keepAlive: true,
    });
    pool.on('error', (e) => this.logger.warn('postgres pool error', { error: e.message }));
    // Every client keeps a listener of its own for its whole life. The pool takes its idle-client
    // listener off as it hands a client out, before `checkout` can add one: a backend terminated
    // just as its connection was made (its ReadyForQuery and its FATAL read in one chunk) emitted
    // 'error' on a client with no listener -- an exception that ended the process. The query in
    // flight still fails on its own, and the pool discards the broken client when it comes back.
    pool.on('connect', (client) =>
      client.on('error', (e) => this.logger.debug('postgres client error', { error: e.message })),
    );
    try {
      await this.syncClock(pool);
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw new FerryError(
        'TRANSIENT_STORE_CONNECT',
        `cannot connect to the PostgreSQL store: ${(e as Error).message}`,
        { kind: 'transient', cause: e },
      );
    }
    this.pool = pool;
  }

  protected async disconnect(): Promise<void> {
    for (const owner of [...this.instances.keys()]) await this.stopInstance(owner).catch(() => undefined);
    clearInterval(this.clockTimer);
    this.clockTimer = undefined;
    const pool = this.pool;
    this.pool = undefined;
    await pool?.end();
  }

  private clockTimer?: NodeJS.Timeout;
  private clockWarnedAt?: number;

  /**
   * Measures the server's clock against this process's (half the round trip allowed for), at
   * connect and every minute. An offset of a second or more is corrected -- times are written and
   * compared on the server's clock, so an instance whose clock runs minutes ahead does not take
   * over another's leased work early -- and logged (once, and again if it moves by another second).
   */
  private async syncClock(pool: pg.Pool): Promise<void> {
    const t0 = this.localClock();
    const r = await pool.query('SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::float8 AS t');
    const t1 = this.localClock();
    const offset = Math.round(Number(r.rows[0].t) - (t0 + t1) / 2);
    // Under a second: clocks in step (NTP), the measure's own noise; this process's clock is used as is.
    this.clockOffsetMs = Math.abs(offset) >= 1000 ? offset : 0;
    if (
      Math.abs(offset) >= 1000 &&
      (this.clockWarnedAt === undefined || Math.abs(offset - this.clockWarnedAt) >= 1000)
    ) {
      this.clockWarnedAt = offset;
      this.logger.warn(
        "this machine's clock differs from the database server's; the store keeps time by the server's",
        { store: this.kind, offsetMs: offset },
      );
    }
    if (!this.clockTimer) {
      this.clockTimer = setInterval(() => {
        if (this.pool) this.syncClock(this.pool).catch(() => undefined);
      }, 60_000);
      this.clockTimer.unref();
    }
  }

  private execOn(c: pg.ClientBase | pg.Pool, timeoutMs = this.queryTimeoutMs): SqlExec {
    const q = (sql: string, params?: unknown[]) =>
      c.query({ text: numbered(sql), values: bind(params), ...(timeoutMs > 0 ? { query_timeout: timeoutMs } : {}) });
    return {
      all: async (sql, params) => (await q(sql, params)).rows as Row[],
      run: async (sql, params) => (await q(sql, params)).rowCount ?? 0,
    };
  }

  private requirePool(): pg.Pool {
    if (!this.pool)
      throw new FerryError('TRANSIENT_STORE_CLOSED', 'the PostgreSQL store is closed', { kind: 'transient' });
    return this.pool;
  }

  /**
   * A client out of the pool, with a listener for its connection dying while held (the server
   * restarting, an administrator terminating it, the network): the pool only watches idle
   * clients, and a client's unhandled 'error' event would end the process. The query in flight
   * fails on its own (a transient error for the caller); the client is then discarded.
   */
  private async checkout(): Promise<{ client: pg.PoolClient; done: (broken?: boolean) => void }> {
    const client = await this.requirePool().connect();
    let lost = false;
    const onError = (e: Error) => {
      lost = true;
      this.logger.warn('postgres connection lost', { store: this.kind, error: e.message });
    };
    client.on('error', onError);
    return {
      client,
      done: (broken = false) => {
        client.off('error', onError);
        client.release(broken || lost);
      },
    };
  }

  protected async tx<T>(fn: (x: SqlExec) => Promise<T>, opts: { durable?: boolean; long?: boolean } = {}): Promise<T> {
    const epoch = this.recoveries;
    try {
      const r = await this.txOnce(fn, opts);
      this.reached();
      this.noteWriteSuccess();
      return r;
    } catch (e) {
      throw this.failed(e, epoch);
    }
  }

  private unreachable = false;
  /**
   * How many outages have ended. An operation remembers the count it began under: one that began
   * before the latest recovery (a connect or query left hanging through the outage, failing only
   * after the database came back) is not news of a new outage, and does not start one.
   */
  private recoveries = 0;

  /**
   * False while the database cannot be reached (the last operation lost its connection and none
   * has succeeded since) or cannot be written (its disk is full).
   */
  reachable(): boolean {
    return !this.unreachable && this.writable();
  }

  private reached(): void {
    if (!this.unreachable) return;
    this.unreachable = false;
    this.recoveries++;
    this.logger.info('postgres reachable again', { store: this.kind });
  }

  protected override classify(e: unknown): unknown {
    return classifyPgError(e);
  }

  private failed(e: unknown, epoch: number): unknown {
    const c = classifyPgError(e);
    this.noteWriteFailure(c);
    const stale = epoch < this.recoveries;
    if (c instanceof FerryError && c.code === 'FERRY_E_TRANSIENT_STORE_CONNECTION' && !this.unreachable && !stale) {
      this.unreachable = true;
      this.logger.warn('postgres unreachable', { store: this.kind, error: c.message });
    }
    return c;
  }

  private async txOnce<T>(fn: (x: SqlExec) => Promise<T>, opts: { durable?: boolean; long?: boolean }): Promise<T> {
    const { client, done } = await this.checkout();
    const x = this.execOn(client, opts.long ? 0 : this.queryTimeoutMs);
    let broken = false;
    let begun = false;
    try {
      await x.run(opts.durable ? 'BEGIN' : 'BEGIN; SET LOCAL synchronous_commit TO OFF');
      begun = true;
      const r = await fn(x);
      await x.run('COMMIT');
      return r;
    } catch (e) {
      // A connection lost (or not answering) cannot roll back: it is discarded, which does.
      if (isConnectionLoss(e)) broken = true;
      else if (begun)
        await x.run('ROLLBACK').catch(() => {
          broken = true;
        });
      throw e;
    } finally {
      done(broken);
    }
  }

  protected async read<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    const epoch = this.recoveries;
    try {
      const r = await fn(this.execOn(this.requirePool()));
      this.reached();
      return r;
    } catch (e) {
      throw this.failed(e, epoch);
    }
  }

  protected async withMigrationLock<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    const { client, done } = await this.checkout();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      try {
        // Under the lock: two processes creating the schema at once would collide.
        if (this.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
        await client.query('BEGIN');
        // Migrations may build indexes over big tables: no statement timeout.
        const r = await fn(this.execOn(client, 0));
        await client.query('COMMIT');
        return r;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      }
    } finally {
      done();
    }
  }

  private instances = new Map<
    string,
    { worker: Worker | MessagePort; reaper: NodeJS.Timeout; failing: boolean; opts: InstanceOptions }
  >();

  /**
   * Registers the instance (its row in `instances`), starts its heartbeat thread, and from now on
   * every `heartbeatMs` releases the leases of instances whose heartbeat is older than
   * `instanceTimeoutMs` -- once per time they stop beating -- so their work is claimed within
   * seconds, not after the lease. An instance that was only paused (SIGSTOP, a VM frozen) and
   * comes back finds its leases gone: its renewals and late outcomes are refused by the lease
   * fence, as after any lease expiry; it beats again and carries on with new work.
   */
  async startInstance(owner: string, opts: InstanceOptions): Promise<InstanceStart> {
    if (this.instances.has(owner)) return { releasedMessages: 0, releasedDeliveries: 0 };
    const startedAt = this.now();
    const row = [owner, os.hostname(), process.pid, startedAt];
    await this.tx((x) =>
      x.run(
        `INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at`,
        [...row, startedAt],
      ),
    );
    const state = {
      worker: undefined as unknown as Worker | MessagePort,
      reaper: undefined as unknown as NodeJS.Timeout,
      failing: false,
      opts,
    };
    const data: HeartbeatData = {
      url: withSearchPath(this.url, this.schema),
      id: owner,
      host: os.hostname(),
      pid: process.pid,
      startedAt,
      intervalMs: Math.max(100, opts.heartbeatMs),
      timeoutMs: Math.max(1000, opts.instanceTimeoutMs),
    };
    // Told once each way, not every heartbeat.
    const onBeat = (m: HeartbeatReply) => {
      if ('error' in m && !state.failing) {
        state.failing = true;
        this.logger.warn('instance heartbeat failed; other instances take this one for dead if it lasts', {
          store: this.kind,
          instance: owner,
          error: m.error,
          instanceTimeoutMs: opts.instanceTimeoutMs,
        });
      } else if ('ok' in m && state.failing) {
        state.failing = false;
        this.logger.info('instance heartbeat written again', { store: this.kind, instance: owner });
      }
    };
    const spawnHeartbeat = (): Worker | MessagePort => {
      const script = heartbeatScript();
      if (!script) {
        this.logger.warn('heartbeat thread not built (core/dist); beating from the engine thread', {
          store: this.kind,
          instance: owner,
        });
        const { port1, port2 } = new MessageChannel();
        runHeartbeat(port1, data);
        port2.on('message', onBeat);
        port2.unref();
        return port2;
      }
      const worker = new Worker(script, { workerData: data });
      worker.on('message', onBeat);
      // After the 'message' listener (which refs the thread's port again): not what keeps a process alive.
      worker.unref();
      worker.on('error', (e) =>
        this.logger.error('instance heartbeat thread failed', { store: this.kind, instance: owner, error: e.message }),
      );
      // A thread that ended while the instance runs is started again: without it the others would
      // take this live instance for dead.
      // (After a heartbeat's pause: a thread that cannot start must not be restarted in a loop.)
      worker.on('exit', () => {
        if (this.instances.get(owner) !== state || state.worker !== worker) return;
        this.logger.warn('instance heartbeat thread ended; starting it again', { store: this.kind, instance: owner });
        setTimeout(() => {
          if (this.instances.get(owner) === state && state.worker === worker) state.worker = spawnHeartbeat();
        }, opts.heartbeatMs).unref();
      });
      return worker;
    };
    state.worker = spawnHeartbeat();
    state.reaper = setInterval(
      () => {
        this.releaseDeadInstances(owner, opts.instanceTimeoutMs).catch((e) =>
          this.logger.debug('looking for dead instances failed', { store: this.kind, error: (e as Error).message }),
        );
      },
      Math.max(100, opts.heartbeatMs),
    );
    state.reaper.unref();
    this.instances.set(owner, state);
    return this.releaseDeadInstances(owner, opts.instanceTimeoutMs);
  }

  async stopInstance(owner: string): Promise<void> {
    const st = this.instances.get(owner);
    if (!st) return;
    this.instances.delete(owner);
    clearInterval(st.reaper);
    // Ended when its connection is: the thread exits, the engine-thread fallback closes its port.
    const beater = st.worker;
    beater.postMessage('stop');
    await new Promise<void>((resolve) => {
      const end = () => (beater instanceof Worker ? beater.terminate().then(() => undefined) : beater.close());
      const t = setTimeout(() => void Promise.resolve(end()).then(resolve), 2000);
      beater.once(beater instanceof Worker ? 'exit' : 'close', () => {
        clearTimeout(t);
        resolve();
      });
    });
    // Gone for good: nobody needs to find it dead (its leases were given back as it stopped).
    await this.tx((x) => x.run('DELETE FROM instances WHERE id = ?', [owner]));
  }

  async liveInstances(withinMs: number): Promise<LiveInstance[]> {
    const now = this.now();
    const rows = await this.tx((x) =>
      x.all(
        'SELECT id, host, pid, started_at, heartbeat_at FROM instances WHERE heartbeat_at >= ? ORDER BY started_at, id',
        [now - withinMs],
      ),
    );
    return rows.map((r) => ({
      id: String(r.id),
      host: String(r.host ?? ''),
      pid: Number(r.pid),
      startedAt: new Date(Number(r.started_at)),
      heartbeatAgoMs: Math.max(0, now - Number(r.heartbeat_at)),
    }));
  }

  /** Releases the leases of instances whose heartbeat stopped (each once per stop), in one transaction. */
  private async releaseDeadInstances(self: string, timeoutMs: number): Promise<InstanceStart> {
    const r = await this.tx(async (x) => {
      const now = this.now();
      const dead = await x.all(
        `SELECT id, heartbeat_at FROM instances WHERE heartbeat_at < ? AND id <> ? AND (released_at IS NULL OR released_at < heartbeat_at) FOR UPDATE SKIP LOCKED`,
        [now - timeoutMs, self],
      );
      await x.run('DELETE FROM instances WHERE heartbeat_at < ?', [now - DEAD_INSTANCE_KEPT_MS]);
      if (!dead.length)
        return { owners: [] as { id: string; silentMs: number }[], releasedMessages: 0, releasedDeliveries: 0 };
      const owners = dead.map((d) => d.id as string);
      const released = await this.releaseLeasesOf(x, { owners });
      await x.run(`UPDATE instances SET released_at = ? WHERE id IN (${owners.map(() => '?').join(', ')})`, [
        now,
        ...owners,
      ]);
      return { owners: dead.map((d) => ({ id: d.id as string, silentMs: now - Number(d.heartbeat_at) })), ...released };
    });
    for (const o of r.owners)
      this.logger.warn('instance found dead (no heartbeat): its leases released', {
        store: this.kind,
        instance: o.id,
        silentMs: o.silentMs,
        messages: r.releasedMessages,
        deliveries: r.releasedDeliveries,
      });
    return { releasedMessages: r.releasedMessages, releasedDeliveries: r.releasedDeliveries };
  }

  protected override rowLockClause(): string {
    return ' FOR UPDATE';
  }

  protected override lockClause(table: string): string {
    return ` FOR UPDATE OF ${table} SKIP LOCKED`;
  }

  protected override async lockKeys(x: SqlExec, keys: string[]): Promise<void> {
    // In hash order, so two instances locking overlapping sets cannot deadlock.
    await x.all(
      'SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(?::text[]) AS k ORDER BY 1) AS s',
      [keys],
    );
  }
}
