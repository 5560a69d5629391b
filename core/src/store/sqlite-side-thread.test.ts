import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { checkpointTurn, type SideReply, type SideRequest, type SideThreadData } from './sqlite-side-thread';
import { sideThreadScript } from './sqlite.store';

// The side thread as the SQLite store starts it: the compiled file from core/dist (npm run build).
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-side-thread-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function start(file: string): { worker: Worker; ask(r: SideRequest): Promise<SideReply>; next(): Promise<SideReply> } {
  const script = sideThreadScript();
  if (!script) throw new Error('core/dist/store/sqlite-side-thread.js missing: run npm run build first');
  const data: SideThreadData = { file, intervalMs: 20, busyTimeoutMs: 100 };
  const worker = new Worker(script, { workerData: data });
  const waiting: ((m: SideReply) => void)[] = [];
  worker.on('message', (m: SideReply) => waiting.shift()?.(m));
  const next = () => new Promise<SideReply>((resolve) => waiting.push(resolve));
  return {
    worker,
    next,
    ask: (r) => {
      const p = next();
      worker.postMessage(r);
      return p;
    },
  };
}

describe('the SQLite side thread (compiled worker)', () => {
  const file = path.join(dir, 'side.db');
  let side: ReturnType<typeof start>;

  beforeAll(() => {
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 50; i++) ins.run(`v${i}`);
    db.close();
    side = start(file);
  });
  afterAll(() => side.worker.terminate());

  it('is found by path and answers reads with rows, by request id', async () => {
    expect(sideThreadScript()).toMatch(/sqlite-side-thread\.js$/);
    const r = await side.ask({ read: 7, sql: 'SELECT id, v FROM t WHERE id <= ? ORDER BY id', params: [2] });
    expect(r).toEqual({
      read: 7,
      rows: [
        { id: 1, v: 'v0' },
        { id: 2, v: 'v1' },
      ],
    });
  });

  it('refuses a write, and reports a bad statement with its error', async () => {
    const w = await side.ask({ read: 8, sql: "INSERT INTO t (v) VALUES ('x')", params: [] });
    expect(w).toMatchObject({ read: 8, error: 'only reads run on the side connection' });
    const bad = await side.ask({ read: 9, sql: 'SELECT nope FROM t', params: [] });
    expect(bad).toMatchObject({ read: 9, code: 'SQLITE_ERROR' });
    expect((bad as { error: string }).error).toMatch(/no such column/);
    const db = new Database(file, { readonly: true });
    expect(db.prepare('SELECT COUNT(*) AS n FROM t').get()).toEqual({ n: 50 });
    db.close();
  });

  it('truncates the WAL on request', async () => {
    // The writes above left pages in the WAL (no auto-checkpoint); the thread's PASSIVE ones copy
    // them back, the TRUNCATE cuts the file.
    const r = await side.ask({ truncate: 10 });
    expect(r).toEqual({ read: 10, rows: [] });
    expect(fs.statSync(`${file}-wal`).size).toBe(0);
  });
});

describe('a checkpoint turn', () => {
  /** A WAL file of `frames`-odd frames left by a writer that never checkpoints, and the writer. */
  function walOf(name: string, rows: number): Database.Database {
    const db = new Database(path.join(dir, name));
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < rows; i++) ins.run(Buffer.alloc(3000, i)); // a page and more each, one commit each
    return db;
  }
  /** Frames in the WAL now (a PASSIVE checkpoint's `log`). */
  const frames = (db: Database.Database) => (db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[])[0].log;

  it('is PASSIVE while the WAL is short of restartFrames, then RESTART, so the next commit starts the WAL over', () => {
    const writer = walOf('turn.db', 300);
    const side = new Database(path.join(dir, 'turn.db'));
    try {
      const before = frames(writer);
      expect(before).toBeGreaterThan(300);
      expect(checkpointTurn(side, before + 1)).toBe('passive');
      expect(checkpointTurn(side, before)).toBe('restart');
      writer.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.alloc(10));
      expect(frames(writer)).toBeLessThan(10); // written from the WAL's start again, not appended
      expect(writer.prepare('SELECT COUNT(*) AS n FROM t').get()).toEqual({ n: 301 });
    } finally {
      side.close();
      writer.close();
    }
  });

  it('does not start the WAL over while a reader still reads from it (RESTART gives up after its busy timeout)', () => {
    const writer = walOf('held.db', 50);
    const reader = new Database(path.join(dir, 'held.db'));
    const side = new Database(path.join(dir, 'held.db'));
    side.pragma('busy_timeout = 50');
    try {
      reader.exec('BEGIN');
      reader.prepare('SELECT COUNT(*) AS n FROM t').get(); // a snapshot held in the WAL
      writer.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.alloc(3000));
      const before = frames(writer);
      expect(checkpointTurn(side, 1)).toBe('restart');
      writer.prepare('INSERT INTO t (v) VALUES (?)').run(Buffer.alloc(10));
      expect(frames(writer)).toBeGreaterThan(before); // appended: the reader's snapshot is still in the WAL
      reader.exec('COMMIT');
    } finally {
      side.close();
      reader.close();
      writer.close();
    }
  });
});
