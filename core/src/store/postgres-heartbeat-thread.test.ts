import { randomBytes } from 'node:crypto';
import { MessageChannel, Worker } from 'node:worker_threads';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { runHeartbeat, type HeartbeatData, type HeartbeatReply } from './postgres-heartbeat-thread';
import { heartbeatScript, withSearchPath } from './postgres.store';

// The heartbeat thread as the PostgreSQL store starts it: the compiled file from core/dist
// (npm run build); and the same code on this thread over a MessageChannel (the store's fallback).
const pgDescribe = requires(pgRequirement(TEST_PG_URL));
const schema = `ferry_hb_${randomBytes(4).toString('hex')}`;

type Port = { on(e: 'message', f: (m: HeartbeatReply) => void): unknown; postMessage(m: unknown): void };
function replies(port: Port): () => Promise<HeartbeatReply> {
  const waiting: ((m: HeartbeatReply) => void)[] = [];
  const queued: HeartbeatReply[] = [];
  port.on('message', (m) => {
    const w = waiting.shift();
    if (w) w(m);
    else queued.push(m);
  });
  return () => (queued.length ? Promise.resolve(queued.shift()!) : new Promise((r) => waiting.push(r)));
}

pgDescribe('the PostgreSQL heartbeat thread (compiled worker)', () => {
  let sql: pg.Client;
  const data = (id: string, url = withSearchPath(TEST_PG_URL, schema)): HeartbeatData => ({
    url,
    id,
    host: 'h',
    pid: 42,
    startedAt: 1000,
    intervalMs: 50,
    timeoutMs: 1000,
  });
  const beatOf = async (id: string) =>
    (await sql.query('SELECT heartbeat_at FROM instances WHERE id = $1', [id])).rows.map((r) => Number(r.heartbeat_at));

  beforeAll(async () => {
    sql = new pg.Client({ connectionString: TEST_PG_URL });
    await sql.connect();
    await sql.query(`CREATE SCHEMA ${schema}`);
    await sql.query(`SET search_path = ${schema}`);
    await sql.query(
      'CREATE TABLE instances (id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL, released_at BIGINT)',
    );
  });
  afterAll(async () => {
    await sql.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await sql.end();
  });

  it('is found by path, writes the row on the server clock every interval, and exits when told to stop', async () => {
    const script = heartbeatScript();
    if (!script) throw new Error('core/dist/store/postgres-heartbeat-thread.js missing: run npm run build first');
    expect(script).toMatch(/postgres-heartbeat-thread\.js$/);
    const worker = new Worker(script, { workerData: data('w1') });
    try {
      const next = replies(worker);
      expect(await next()).toEqual({ ok: true });
      const [first] = await beatOf('w1');
      expect((await sql.query(`SELECT id, host, pid, started_at FROM instances WHERE id = 'w1'`)).rows).toEqual([
        { id: 'w1', host: 'h', pid: 42, started_at: '1000' },
      ]);
      expect(await next()).toEqual({ ok: true });
      expect(await next()).toEqual({ ok: true });
      const [later] = await beatOf('w1');
      expect(later).toBeGreaterThan(first);
      const exited = new Promise<number>((r) => worker.once('exit', r));
      worker.postMessage('stop');
      expect(await exited).toBe(0);
    } finally {
      await worker.terminate();
    }
  });

  it('reports a beat it cannot write, with the error', async () => {
    const script = heartbeatScript()!;
    // Nothing listens on port 1: the connection is refused, every beat says so.
    const worker = new Worker(script, { workerData: data('w2', 'postgres://postgres@127.0.0.1:1/test') });
    try {
      const m = await replies(worker)();
      expect(m).toMatchObject({ error: expect.stringMatching(/ECONNREFUSED/) });
      expect(await beatOf('w2')).toEqual([]);
    } finally {
      await worker.terminate();
    }
  });

  it("runs the same on the engine's thread over a MessageChannel (not built), closing its port on stop", async () => {
    const { port1, port2 } = new MessageChannel();
    runHeartbeat(port1, data('inline'));
    const next = replies(port2);
    expect(await next()).toEqual({ ok: true });
    expect(await beatOf('inline')).toHaveLength(1);
    const closed = new Promise<void>((r) => port2.once('close', () => r()));
    port2.postMessage('stop');
    await closed;
  });
});
