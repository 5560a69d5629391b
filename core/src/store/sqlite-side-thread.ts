/**
 * The SQLite store's side thread (a worker, started by SqliteMessageStore from core/dist): its own
 * connection to the file, a PASSIVE checkpoint every interval, and the reads of people and tools
 * (`readAside`: the admin API, `ferry` commands, metrics), so a slow query over a large store runs
 * beside the engine's thread instead of stopping it. Only reads run here.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';

export interface SideThreadData {
  file: string;
  intervalMs: number;
  busyTimeoutMs: number;
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
      db.pragma('wal_checkpoint(PASSIVE)');
      if (failing) reply({ ok: true });
      failing = false;
    } catch (e) {
      if (!failing) reply({ error: errorOf(e).error });
      failing = true;
    }
  }, data.intervalMs);
}

if (parentPort) runSideThread(parentPort, workerData as SideThreadData);
