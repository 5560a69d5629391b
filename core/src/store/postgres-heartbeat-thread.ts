/**
 * The PostgreSQL store's heartbeat thread (a worker, started by PostgresMessageStore from
 * core/dist): its own connection, one UPSERT of the instance's row every interval, on the server's
 * clock. On a thread of its own so an engine whose event loop is busy (a long synchronous
 * transform, a GC storm) keeps beating and keeps its leases; a process that is stopped (SIGSTOP)
 * or dead stops beating, as it should. Told `'stop'`, it ends its connection and closes its port.
 */
import pg from 'pg';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';

export interface HeartbeatData {
  /** Connection string (with the store's search_path). */
  url: string;
  /** The instance's row: its lease owner id, host, pid and start (ms). */
  id: string;
  host: string;
  pid: number;
  startedAt: number;
  intervalMs: number;
  /** Connect and statement timeout (ms). */
  timeoutMs: number;
}

/** Each beat's outcome: written (`ok`) or failed (`error`). */
export type HeartbeatReply = { ok: true } | { error: string };

const UPSERT =
  'INSERT INTO instances (id, host, pid, started_at, heartbeat_at) ' +
  'VALUES ($1, $2, $3, $4, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint) ' +
  'ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at';

export function runHeartbeat(port: MessagePort, data: HeartbeatData): void {
  let client: pg.Client | undefined;
  let busy = false;
  let stopped = false;
  const reply = (m: HeartbeatReply) => port.postMessage(m);
  const drop = () => {
    const c = client;
    client = undefined;
    return c ? c.end().catch(() => undefined) : Promise.resolve();
  };
  const beat = async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      if (!client) {
        const c = new pg.Client({
          connectionString: data.url,
          application_name: 'ferry-heartbeat',
          connectionTimeoutMillis: data.timeoutMs,
          query_timeout: data.timeoutMs,
          keepAlive: true,
        });
        c.on('error', () => {
          if (client === c) void drop();
        });
        client = c;
        await c.connect();
      }
      await client.query(UPSERT, [data.id, data.host, data.pid, data.startedAt]);
      reply({ ok: true });
    } catch (e) {
      void drop();
      if (!stopped) reply({ error: String((e as Error | undefined)?.message ?? e) });
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void beat(), data.intervalMs);
  void beat();
  port.on('message', (m: unknown) => {
    if (m !== 'stop') return;
    stopped = true;
    clearInterval(timer);
    void drop().then(() => port.close());
  });
}

// Run as a worker's entry only (not when imported, e.g. into a worker of another kind).
if (parentPort && require.main === module) runHeartbeat(parentPort, workerData as HeartbeatData);
