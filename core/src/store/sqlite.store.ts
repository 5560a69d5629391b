import Database from 'better-sqlite3';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileModes, mkdirPrivateSync, tightenSync, type FileModes } from '../util/file-modes';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FerryError } from '../errors';
import type { Dialect } from './schema';
import type { InstanceOptions, InstanceStart } from './message-store';
import type { SideReply, SideRequest, SideThreadData } from './sqlite-side-thread';
import { SqlMessageStore, type Row, type SqlExec, type SqlStoreOptions } from './sql/sql.store';
import { bind, classifySqliteError, rowMaker } from './sqlite-statements';
import { WalSync } from './wal-sync';

// Split out of this file; importers of './sqlite.store' keep them.
export { classifySqliteError, rowMaker };

export interface SqliteStoreOptions extends SqlStoreOptions {
  /** The database file (`:memory:` for a throwaway store). Its folder is created. */
  path: string;
  /**
   * ms a writer waits for another process's write lock (a `ferry prune` beside the engine, a
   * backup tool) before failing. Waited for asynchronously: the event loop is never held longer
   * than `BLOCKING_BUSY_MS` at a time.
   */
  busyTimeoutMs?: number;
  /**
   * An engine's store: refuse to open while another engine (process, or store in this process)
   * has the file open as its store. Tools that open the store beside a running engine (`ferry
   * replay`, `ferry prune`) do not set it.
   */
  engineLock?: boolean;
  /**
   * Modes of the database file (its -wal and -shm get the same: SQLite copies the database
   * file's), the lock and pid files, and of its folder when created. Default 0600 / 0700.
   */
  fileModes?: FileModes;
}

type Params = unknown[];

/**
 * SQLite's own busy handler sleeps on the calling thread: with the engine's event loop on that
 * thread, waiting for another process's write lock would freeze sources, sinks and timers. It may
 * block this long per statement (covering the brief locks of WAL bookkeeping); a write waits for
 * longer by trying BEGIN again from a timer (`beginImmediate`).
 */
const BLOCKING_BUSY_MS = 20;

/**
 * The compiled side thread (sqlite-side-thread.ts: checkpoints and the reads of people and tools),
 * loaded by path; under ts-jest the sources run from src/, the thread from dist/. Undefined when
 * not built: checkpoints then run in commits, reads on the engine's connection.
 */
export function sideThreadScript(): string | undefined {
  const here = path.join(__dirname, 'sqlite-side-thread.js');
  if (existsSync(here)) return here;
  const built = path.resolve(__dirname, '../../dist/store/sqlite-side-thread.js');
  return existsSync(built) ? built : undefined;
}

/**
 * One lock per database file for the whole process: better-sqlite3 is synchronous, so a second
 * connection in this process waiting on the file's write lock would block the event loop that the
 * first needs to finish its transaction. Same-process stores on one file take turns instead.
 */
const fileLocks = new Map<string, { chain: Promise<unknown>; users: number }>();

/**
 * The embedded store: one better-sqlite3 connection, WAL journal. Transactions that acknowledge
 * data (message inserts, checkpoints) resolve only once the WAL holding them is fsynced: they
 * commit with `synchronous=NORMAL` and then wait for an `fdatasync` of the WAL on libuv's thread
 * pool, shared by the commits made meanwhile (`WalSync`; the engine's thread is not held for the
 * fsync), or, where the WAL file cannot be opened, commit with `synchronous=FULL`. State
 * transitions commit with `synchronous=NORMAL`, which in WAL mode is safe against a process crash
 * and, on power loss, can only lose the latest transitions -- work that is then simply redone
 * (deliveries are at-least-once). Every statement runs under one promise lock, so an async
 * transaction never interleaves with another caller's statements.
 */
export class SqliteMessageStore extends SqlMessageStore {
  readonly kind = 'sqlite';
  protected readonly dialect: Dialect = 'sqlite';
  /** One writer (the engine's connection; tools wait for its lock): heads are kept exactly. */
  protected override readonly keyHeads = true;
  readonly file: string;
  private db?: Database.Database;
  private stmts = new Map<string, Database.Statement>();
  private shared?: { chain: Promise<unknown>; users: number };
  private sync: 'FULL' | 'NORMAL' | undefined;
  /** The durable commits' fsync of the WAL (undefined: `:memory:`, or FULL commits). */
  private walSync?: WalSync;
  /** fdatasyncs of the WAL made for durable commits (tests and the benchmark). */
  get walSyncs(): number {
    return this.walSync?.syncs ?? 0;
  }
  private readonly busyTimeoutMs: number;

  private readonly wantsEngineLock: boolean;
  private engineLock?: Database.Database;

  constructor(opts: SqliteStoreOptions) {
    super(opts);
    this.file = opts.path === ':memory:' ? opts.path : path.resolve(opts.path);
    this.busyTimeoutMs = opts.busyTimeoutMs ?? 5000;
    this.wantsEngineLock = !!opts.engineLock && this.file !== ':memory:';
    this.modes = opts.fileModes ?? fileModes();
  }

  private readonly modes: FileModes;

  /** Creates `file` empty with the file mode when missing; takes the forbidden bits from it when present. */
  private ensurePrivate(file: string): void {
    try {
      closeSync(openSync(file, 'a', this.modes.file));
      tightenSync(file, this.modes);
    } catch {
      // not writable here (read-only file or folder): opening it reports that, clearly
    }
  }

  /**
   * One engine per SQLite file: two would wait on each other's write lock (busy_timeout blocks
   * the event loop) and each take the other's work as it came. The lock is an EXCLUSIVE
   * transaction held on a side database (`<file>-engine.lock`): an OS lock, so it is released
   * when the process ends in any way, kill -9 included, and a restart never finds it stale.
   */
  private lockForEngine(): void {
    const lockFile = `${this.file}-engine.lock`;
    const pidFile = `${this.file}-engine.pid`;
    this.ensurePrivate(lockFile);
    const lock = new Database(lockFile);
    try {
      lock.pragma('busy_timeout = 0');
      lock.exec('BEGIN EXCLUSIVE');
    } catch (e) {
      lock.close();
      if ((e as { code?: string }).code !== 'SQLITE_BUSY') throw e;
      let holder = '';
      try {
        holder = ` (pid ${readFileSync(pidFile, 'utf8').trim()})`;
      } catch {
        // no pid file: the holder is in this process, or wrote none
      }
      throw new FerryError(
        'CONFIG_STORE_IN_USE',
        `the SQLite store ${this.file} is in use by another Ferry engine${holder}; one engine per SQLite file (use PostgreSQL for several instances)`,
        { kind: 'config', details: { file: this.file } },
      );
    }
    try {
      writeFileSync(pidFile, `${process.pid}\n`, { mode: this.modes.file });
      tightenSync(pidFile, this.modes);
    } catch {
      // informational only
    }
    this.engineLock = lock;
  }

  private unlockForEngine(): void {
    const lock = this.engineLock;
    this.engineLock = undefined;
    if (!lock) return;
    rmSync(`${this.file}-engine.pid`, { force: true });
    lock.close();
  }

  /**
   * At an engine's start: every open lease in the file is a dead process's -- this store holds
   * the file's engine lock, which goes with its holder's process -- so each is released and its
   * work claimed at once (before, it waited out `processing.leaseMs`, a minute by default, after
   * a crash). A store without the engine lock (tools, tests sharing one store) releases nothing.
   */
  async startInstance(owner: string, _opts?: InstanceOptions): Promise<InstanceStart> {
    if (!this.engineLock) return { releasedMessages: 0, releasedDeliveries: 0 };
    const r = await this.write((x) => this.releaseLeasesOf(x, { allBut: owner }));
    if (r.releasedMessages || r.releasedDeliveries)
      this.logger.info('leases of the previous engine released: it held this file and is gone', {
        store: this.kind,
        messages: r.releasedMessages,
        deliveries: r.releasedDeliveries,
      });
    return r;
  }

  protected async connect(): Promise<void> {
    if (this.file !== ':memory:') {
      mkdirPrivateSync(path.dirname(this.file), this.modes);
      // SQLite creates -wal and -shm with the database file's mode: make that one private first.
      this.ensurePrivate(this.file);
      for (const extra of ['-wal', '-shm', '-journal']) {
        try {
          tightenSync(this.file + extra, this.modes);
        } catch {
          // not ours to change (another owner): SQLite opens it or says why
        }
      }
    }
    if (this.wantsEngineLock) this.lockForEngine();
    try {
      await this.connectDb();
    } catch (e) {
      this.unlockForEngine();
      throw e;
    }
  }

  private async connectDb(): Promise<void> {
    let db: Database.Database;
    try {
      db = new Database(this.file);
    } catch (e) {
      throw new FerryError('CONFIG_STORE_OPEN', `cannot open SQLite store ${this.file}: ${(e as Error).message}`, {
        kind: 'config',
        cause: e,
      });
    }
    try {
      db.pragma(`busy_timeout = ${this.busyTimeoutMs}`);
      // auto_vacuum can only be chosen before the first table exists.
      const tables = db.prepare(`SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table'`).get() as { n: number };
      if (tables.n === 0) db.pragma('auto_vacuum = INCREMENTAL');
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (this.file !== ':memory:' && String(mode).toLowerCase() !== 'wal') {
        throw new Error(`journal_mode WAL refused (got ${String(mode)})`);
      }
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = OFF');
      db.pragma('temp_store = MEMORY');
      db.pragma('cache_size = -16000');
      // The WAL is checkpointed by a background thread (startCheckpointer); if that cannot run,
      // by commits once it holds 1000 pages.
      db.pragma('wal_autocheckpoint = 1000');
      // After a checkpoint the WAL file is cut back to this size instead of keeping its peak.
      db.pragma('journal_size_limit = 67108864');
      // Set up under the full timeout (another process may be migrating); from now on writers
      // wait for other processes asynchronously.
      db.pragma(`busy_timeout = ${Math.min(BLOCKING_BUSY_MS, this.busyTimeoutMs)}`);
    } catch (e) {
      db.close();
      throw new FerryError('CONFIG_STORE_OPEN', `cannot set up SQLite store ${this.file}: ${(e as Error).message}`, {
        kind: 'config',
        cause: e,
      });
    }
    this.sync = 'FULL';
    this.db = db;
    this.stmts.clear();
    const key = this.file === ':memory:' ? `:memory:${Math.random()}` : this.file;
    let shared = fileLocks.get(key);
    if (!shared) {
      shared = { chain: Promise.resolve(), users: 0 };
      fileLocks.set(key, shared);
    }
    shared.users++;
    this.shared = shared;
    this.lockKeyName = key;
    if (this.file !== ':memory:' && this.backgroundCheckpoints) this.startCheckpointer(db);
    if (this.file !== ':memory:') this.walSync = new WalSync(`${this.file}-wal`);
  }

  /**
   * Copies the WAL back into the database file from a worker thread with its own connection
   * (PASSIVE checkpoints never block this connection's writes), so commits on the engine's thread
   * no longer stop to do it. Falls back to checkpoints in commits when the thread cannot start.
   */
  private startCheckpointer(db: Database.Database): void {
    try {
      const script = sideThreadScript();
      if (!script) throw new Error('core/dist/store/sqlite-side-thread.js is not built');
      const data: SideThreadData = { file: this.file, intervalMs: 250, busyTimeoutMs: this.busyTimeoutMs };
      const worker = new Worker(script, { workerData: data });
      // Told once each way (the thread tries every 250 ms: a full disk would otherwise be 4 lines a second).
      worker.on('message', (m: SideReply) => {
        if (m.read !== undefined) {
          const r = this.asideReads.get(m.read);
          this.asideReads.delete(m.read);
          if (!this.asideReads.size) worker.unref();
          if (m.error !== undefined) r?.reject(Object.assign(new Error(m.error), { code: m.code }));
          else r?.resolve(m.rows ?? []);
        } else if ('error' in m) this.logger.warn('WAL checkpoint failed', { store: this.kind, error: m.error });
        else if (m.ok) this.logger.info('WAL checkpoints succeed again', { store: this.kind });
      });
      // Gone (an error, or an exit without one: nothing in it exits on its own): checkpoints in
      // commits again, reads on the engine's connection.
      const gone = (e: Error) => {
        if (this.checkpointer !== worker) return;
        this.checkpointer = undefined;
        this.failAsideReads(e);
        if (this.db === db && db.open) db.pragma('wal_autocheckpoint = 1000');
      };
      worker.on('error', (e) => {
        this.logger.warn('WAL checkpoint thread failed; checkpointing in commits', {
          store: this.kind,
          error: e.message,
        });
        gone(e);
      });
      worker.on('exit', () => gone(new Error('the thread exited')));
      // After the 'message' listener, which refs the thread's port again: a store left open must
      // not keep the process alive (it did: a test failing before its store's close hung jest).
      worker.unref();
      db.pragma('wal_autocheckpoint = 0');
      this.checkpointer = worker;
    } catch (e) {
      this.logger.warn('WAL checkpoint thread unavailable; checkpointing in commits', {
        store: this.kind,
        error: (e as Error).message,
      });
    }
  }

  private checkpointer?: Worker;
  private readonly asideReads = new Map<
    number,
    { resolve(rows: Record<string, unknown>[]): void; reject(e: unknown): void }
  >();
  private asideSeq = 0;
  /** Reads answered by the side thread (tests). */
  asideReadCount = 0;

  /** On the side thread's connection when it runs (the engine's thread is not held); else on the engine's. */
  protected override readAside<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    const worker = this.checkpointer;
    if (!worker) return this.read(fn);
    const exec: SqlExec = {
      all: (sql, params) => {
        this.asideReadCount++;
        return this.askSide(worker, (id) => ({ read: id, sql, params: bind(params) }));
      },
      run: () =>
        Promise.reject(
          new FerryError('INTERNAL_STORE_READ_ONLY', 'a write on the read-only side connection', { kind: 'internal' }),
        ),
    };
    return fn(exec);
  }

  /** A request to the side thread (a read, the WAL truncation), answered by its `read` id. */
  private askSide(worker: Worker, request: (id: number) => SideRequest): Promise<Record<string, unknown>[]> {
    return new Promise((resolve, reject) => {
      const id = ++this.asideSeq;
      this.asideReads.set(id, { resolve, reject });
      // Held open while a request is out (the thread is unref'd otherwise).
      worker.ref();
      worker.postMessage(request(id));
    });
  }

  private failAsideReads(e: unknown): void {
    const pending = [...this.asideReads.values()];
    this.asideReads.clear();
    for (const r of pending)
      r.reject(
        new FerryError(
          'TRANSIENT_STORE_CLOSED',
          `the SQLite store's read thread stopped: ${(e as Error)?.message ?? e}`,
          { kind: 'transient', cause: e },
        ),
      );
  }
  /** Checkpoint from a background thread (tests of the fallback turn it off). */
  protected backgroundCheckpoints = true;

  private lockKeyName?: string;

  protected async disconnect(): Promise<void> {
    await this.shared?.chain.catch(() => undefined);
    // The syncs still owed to committed inserts (their callers are answered by them).
    await this.walSync?.settled();
    const cp = this.checkpointer;
    this.checkpointer = undefined;
    if (cp) await cp.terminate().catch(() => undefined);
    this.failAsideReads(new Error('closed'));
    if (this.shared && --this.shared.users === 0 && this.lockKeyName) fileLocks.delete(this.lockKeyName);
    this.shared = undefined;
    const db = this.db;
    this.db = undefined;
    this.stmts.clear();
    // Before the connection: closing the last one deletes the WAL file.
    this.walSync?.close();
    this.walSync = undefined;
    if (db?.open) {
      try {
        db.pragma('wal_checkpoint(TRUNCATE)');
      } catch {
        // another process may hold the database; the WAL is checkpointed later
      }
      db.close();
    }
    this.unlockForEngine();
  }

  private prepare(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      if (!this.db) throw new FerryError('TRANSIENT_STORE_CLOSED', 'the SQLite store is closed', { kind: 'transient' });
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  private readonly exec: SqlExec = {
    all: async (sql: string, params?: Params): Promise<Row[]> => {
      try {
        const s = this.prepare(sql);
        if (s.reader) {
          const make = rowMaker(s);
          const rows = s.all(bind(params)) as unknown[];
          if (!make) return rows as Row[];
          for (let i = 0; i < rows.length; i++) rows[i] = make(rows[i] as unknown[]);
          return rows as Row[];
        }
        s.run(bind(params));
        return [];
      } catch (e) {
        throw this.storeError(e);
      }
    },
    run: async (sql: string, params?: Params): Promise<number> => {
      try {
        return this.prepare(sql).run(bind(params)).changes;
      } catch (e) {
        throw this.storeError(e);
      }
    },
  };

  /** False while the database cannot be written (disk full, an I/O error) -- readiness uses it. */
  reachable(): boolean {
    return this.writable();
  }

  /** A statement's or commit's error, classified; a file that cannot be written is logged once. */
  private storeError(e: unknown): unknown {
    const c = classifySqliteError(e, this.file);
    this.noteWriteFailure(c);
    return c;
  }

  private withLock<T>(fn: () => Promise<T>): Promise<T> {
    const shared = this.shared;
    if (!shared)
      return Promise.reject(
        new FerryError('TRANSIENT_STORE_CLOSED', 'the SQLite store is closed', { kind: 'transient' }),
      );
    const run = shared.chain.then(fn, fn);
    shared.chain = run.catch(() => undefined);
    return run;
  }

  private setSync(mode: 'FULL' | 'NORMAL'): void {
    if (this.sync === mode) return;
    // A cached statement: db.pragma() would prepare it again on every switch (twice per commit round).
    this.prepare(`PRAGMA synchronous = ${mode}`).run();
    this.sync = mode;
  }

  /**
   * BEGIN IMMEDIATE (the write lock, up front: nothing later in the transaction waits for it),
   * tried again from a timer while another process holds the lock, up to `busyTimeoutMs`: the
   * event loop runs meanwhile. Then a transient error (the caller's work is refused or retried,
   * not lost).
   */
  private async beginImmediate(): Promise<void> {
    const deadline = Date.now() + this.busyTimeoutMs;
    let wait = 2;
    for (;;) {
      try {
        this.prepare('BEGIN IMMEDIATE').run();
        return;
      } catch (e) {
        if ((e as { code?: string }).code !== 'SQLITE_BUSY') throw e;
        if (Date.now() + wait > deadline)
          throw new FerryError(
            'TRANSIENT_STORE_BUSY',
            `the SQLite store ${this.file} is locked by another process (waited ${this.busyTimeoutMs} ms)`,
            { kind: 'transient', cause: e },
          );
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 50);
      }
    }
  }

  protected async tx<T>(fn: (x: SqlExec) => Promise<T>, opts: { durable?: boolean } = {}): Promise<T> {
    const { result, durable } = await this.commitTx(fn, opts);
    await durable;
    return result;
  }

  /** The insert group commit's next batch commits while this one's WAL sync runs. */
  protected override txDurableLater<T>(fn: (x: SqlExec) => Promise<T>): Promise<{ result: T; durable: Promise<void> }> {
    return this.commitTx(fn, { durable: true });
  }

  /**
   * A transaction, committed; `durable` resolves once a durable one's WAL is on disk (at once for
   * the others). The WAL is fsynced after the lock is given back (see WalSync).
   */
  private async commitTx<T>(
    fn: (x: SqlExec) => Promise<T>,
    opts: { durable?: boolean },
  ): Promise<{ result: T; durable: Promise<void> }> {
    let wal: WalSync | undefined;
    const r = await this.withLock(async () => {
      const db = this.db;
      if (!db) throw new FerryError('TRANSIENT_STORE_CLOSED', 'the SQLite store is closed', { kind: 'transient' });
      // The WAL file exists once the database has been written in WAL mode: until it can be
      // opened (the first commits of a new file), durable commits are FULL.
      wal = opts.durable && this.walSync?.open() ? this.walSync : undefined;
      try {
        this.setSync(opts.durable && !wal ? 'FULL' : 'NORMAL');
        await this.beginImmediate();
      } catch (e) {
        throw this.storeError(e);
      }
      try {
        const r = await fn(this.exec);
        this.prepare('COMMIT').run();
        if (!wal) this.noteWriteSuccess();
        return r;
      } catch (e) {
        wal = undefined;
        // SQLite may have rolled the transaction back itself (disk full, I/O error).
        if (db.inTransaction)
          try {
            this.prepare('ROLLBACK').run();
          } catch {
            // nothing more to undo
          }
        throw this.storeError(e);
      }
    });
    const durable = wal?.durable().then(
      () => this.noteWriteSuccess(),
      (e: unknown) => {
        // Committed but not known to be on disk: the caller is refused (a source does not
        // acknowledge; the sender sends again, and the duplicate check sees the first copy).
        this.noteWriteFailure(e);
        throw e;
      },
    );
    return { result: r, durable: durable ?? Promise.resolve() };
  }

  protected read<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    return this.withLock(() => {
      if (!this.db) throw new FerryError('TRANSIENT_STORE_CLOSED', 'the SQLite store is closed', { kind: 'transient' });
      return fn(this.exec);
    });
  }

  protected withMigrationLock<T>(fn: (x: SqlExec) => Promise<T>): Promise<T> {
    // BEGIN IMMEDIATE takes the write lock: a second process migrating waits (busy_timeout).
    return this.tx(fn, { durable: true });
  }

  /**
   * Gives the free pages of the file back to the file system, a few thousand pages at a time with
   * the event loop free in between (the whole freelist in one `incremental_vacuum` stalled the
   * engine for about a second per 250 MB freed), then truncates the WAL.
   */
  protected override async compact(): Promise<void> {
    let free = Infinity;
    for (;;) {
      const left = await this.withLock(async () => {
        const db = this.db;
        if (!db) return 0;
        try {
          db.pragma(`incremental_vacuum(${Math.max(1, Math.floor(this.vacuumPages))})`);
          return Number(db.pragma('freelist_count', { simple: true }));
        } catch (e) {
          // Another process is writing: the space is given back by the next prune.
          if ((e as { code?: string }).code !== 'SQLITE_BUSY') throw this.storeError(e);
          this.logger.debug('SQLite compaction skipped: the file is busy', { store: this.kind });
          return 0;
        }
      });
      // Done, or nothing more to give (a file made without auto_vacuum keeps its free pages).
      if (left === 0 || left >= free) break;
      free = left;
      await SqliteMessageStore.breathe();
    }
    const worker = this.checkpointer;
    if (worker) {
      // On the side thread: a TRUNCATE checkpoint copies what the WAL still holds (85-120 ms
      // measured after a 20,000-message prune) and keeps writers out meanwhile -- the engine's
      // writes wait for it from a timer, its thread stays free.
      try {
        await this.askSide(worker, (id) => ({ truncate: id }));
      } catch (e) {
        // Busy (another process writing) or stopped: the checkpoints that follow shrink it.
        this.logger.debug('WAL truncation after prune failed', { store: this.kind, error: (e as Error).message });
      }
      return;
    }
    await this.withLock(async () => {
      const db = this.db;
      if (!db) return;
      try {
        db.pragma('wal_checkpoint(TRUNCATE)');
      } catch (e) {
        if ((e as { code?: string }).code !== 'SQLITE_BUSY') throw this.storeError(e);
      }
    });
  }

  /** Pages `compact` gives back per step (4,000 pages = 16 MB of 4 KB pages, ~20 ms here; tests make it small). */
  vacuumPages = 4000;

  /** Pages of the file and free pages in it (retention tests, metrics). */
  async fileStats(): Promise<{ pageCount: number; freePages: number; pageSize: number; autoVacuum: number }> {
    return this.withLock(async () => {
      const db = this.db!;
      return {
        pageCount: Number(db.pragma('page_count', { simple: true })),
        freePages: Number(db.pragma('freelist_count', { simple: true })),
        pageSize: Number(db.pragma('page_size', { simple: true })),
        autoVacuum: Number(db.pragma('auto_vacuum', { simple: true })),
      };
    });
  }
}
