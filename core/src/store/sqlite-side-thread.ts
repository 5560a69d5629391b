/**
 * The SQLite store's side thread (a worker, started by SqliteMessageStore from core/dist): its own
 * connection to the file, a checkpoint every interval (`checkpointTurn`), and the reads of people and tools
 * (`readAside`: the admin API, `ferry` commands, metrics), so a slow query over a large store runs
 * beside the engine's thread instead of stopping it. Only reads run here.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';

export interface SideThreadData {
  file: string;
  intervalMs: number;
  busyTimeoutMs: number;
  /** WAL frames left after a PASSIVE checkpoint from which a RESTART one runs (see `checkpointTurn`). */
  restartFrames?: number;
}

/** 4,096 frames: 16 MB of 4 KB pages. */
export const RESTART_FRAMES = 4096;

/**
 * One checkpoint turn: PASSIVE (never waits for anybody); then, when the WAL still holds
 * `restartFrames` frames or more, RESTART. Under a steady stream of commits a PASSIVE checkpoint
 * never catches up with the writer -- each one copies what was there when it began while more is
 * appended -- so the WAL is never started over and grows without bound (1.4 GB in three minutes of
 * a 400 msgs/s soak), and once it grows every commit's fdatasync also extends the file, a journal
 * commit of the file system's: ACKs went from ≈ 12 to ≈ 40 ms at one stroke. RESTART copies the
 * rest with new writers held back meanwhile (the engine retries its BEGIN from a timer: its thread
 * is not blocked), so the next commit starts the WAL over, within the file's existing blocks.
 */
export function checkpointTurn(db: Database.Database, restartFrames = RESTART_FRAMES): 'passive' | 'restart' {
  const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
  if (!r || r.log < restartFrames) return 'passive';
  db.pragma('wal_checkpoint(RESTART)');
  return 'restart';
}

/** A read (`sql` with its parameters) or, with `truncate`, a TRUNCATE checkpoint; answered by the same id. */
export type SideRequest = { read: number; sql: string; params: unknown[] } | { truncate: number };

/** A request's answer (`read`: its id), or the checkpoints failing (`error`) and succeeding again (`ok`). */
export type SideReply =
  | { read: number; rows?: Record<string, unknown>[]; error?: string; code?: string }
  | { read?: undefined; error: string }
  | { read?: undefined; ok: true };

/** Statements kept prepared (cleared when full: the admin queries are few). */
const MAX_STATEMENTS = 200;

function errorOf(e: unknown): { error: string; code?: string } {
  const err = e as { message?: unknown; code?: unknown } | undefined;
  return { error: String(err?.message), code: typeof err?.code === 'string' ? err.code : undefined };
}

export function runSideThread(port: MessagePort, data: SideThreadData): void {
  const db = new Database(data.file);
  db.pragma(`busy_timeout = ${data.busyTimeoutMs}`);
  const stmts = new Map<string, Database.Statement>();
  const reply = (m: SideReply) => port.postMessage(m);
  port.on('message', (m: SideRequest) => {
    if ('truncate' in m) {
      // The WAL truncated after a prune: here, the engine's thread is not held while it copies.
      try {
        db.pragma('wal_checkpoint(TRUNCATE)');
        reply({ read: m.truncate, rows: [] });
      } catch (e) {
        reply({ read: m.truncate, ...errorOf(e) });
      }
      return;
    }
    if (m.read === undefined) return;
    try {
      let s = stmts.get(m.sql);
      if (!s) {
        s = db.prepare(m.sql);
        if (!s.reader) throw new Error('only reads run on the side connection');
        if (stmts.size >= MAX_STATEMENTS) stmts.clear();
        stmts.set(m.sql, s);
      }
      reply({ read: m.read, rows: s.all(...m.params) as Record<string, unknown>[] });
    } catch (e) {
      reply({ read: m.read, ...errorOf(e) });
    }
  });
  // Told once each way: the thread tries every interval, and a full disk would otherwise be
  // several lines a second.
  let failing = false;
  setInterval(() => {
    try {
      checkpointTurn(db, data.restartFrames);
      if (failing) reply({ ok: true });
      failing = false;
    } catch (e) {
      if (!failing) reply({ error: errorOf(e).error });
      failing = true;
    }
  }, data.intervalMs);
}

if (parentPort) runSideThread(parentPort, workerData as SideThreadData);
