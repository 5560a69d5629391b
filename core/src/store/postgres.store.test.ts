import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy';
import { deliveryOutcome } from '../delivery/dispatcher';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import { storeConformance } from './__fixtures__/conformance';
import { createStore } from './create-store';
import { PostgresMessageStore } from './postgres.store';
import { defaultRetryPolicy } from './retry-policy';
import { migrations, SCHEMA_VERSION } from './schema';

const URL = TEST_PG_URL;
// Without PostgreSQL: every suite here skipped visibly (locally) or failed (CI=true).
const pgDescribe = requires(pgRequirement(URL));
const prefix = `ferry_test_${randomBytes(4).toString('hex')}`;
const schemas = new Map<PostgresMessageStore, string>();
let n = 0;

afterAll(async () => {
  if (!schemas.size) return; // nothing made (PostgreSQL absent: the suites were skipped)
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    for (const s of new Set(schemas.values())) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
});

function make(schema: string, groupCommit?: { maxBatch?: number }, now?: () => number): PostgresMessageStore {
  const s = new PostgresMessageStore({ url: URL, schema, logger: silentLogger(), groupCommit, poolSize: 3, now });
  schemas.set(s, schema);
  return s;
}

pgDescribe('PostgreSQL', () => {
  storeConformance('postgres', {
    make: (opts) => make(`${prefix}_${++n}`, opts?.groupCommit, opts?.now),
    sibling: (s) => make(schemas.get(s as PostgresMessageStore)!),
    commits: (s) => (s as PostgresMessageStore).insertCommits,
    rawSql: async (s, sql) => {
      const c = new pg.Client({
        connectionString: URL,
        options: `-c search_path=${schemas.get(s as PostgresMessageStore)}`,
      });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    },
  });
});

pgDescribe('PostgresMessageStore specifics', () => {
  it('the audit trail is append-only in the database too: UPDATE is refused, retention may DELETE', async () => {
    const schema = `${prefix}_audit`;
    const s = make(schema);
    await s.open();
    await s.appendAudit([{ principal: 'cli:test', action: 'prune', result: 'ok' }]);
    await s.close();
    const c = new pg.Client({ connectionString: URL });
    await c.connect();
    try {
      await expect(c.query(`UPDATE ${schema}.audit_log SET principal = 'someone else'`)).rejects.toThrow(/append-only/);
      expect((await c.query(`DELETE FROM ${schema}.audit_log`)).rowCount).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('two processes migrating at once apply each migration once', async () => {
    const schema = `${prefix}_mig`;
    const a = make(schema);
    const b = make(schema);
    await Promise.all([a.open(), b.open()]);
    expect(await a.schemaVersion()).toBe(SCHEMA_VERSION);
    const c = new pg.Client({ connectionString: URL });
    await c.connect();
    const r = await c.query(`SELECT COUNT(*)::int AS n FROM ${schema}.schema_migrations`);
    await c.end();
    expect(r.rows[0].n).toBe(migrations.length);
    await a.close();
    await b.close();
  });

  it("instances beat from a thread of their own: a busy event loop keeps its leases; a silent instance's leases are released within a few heartbeats", async () => {
    const schema = `${prefix}_inst`;
    const a = make(schema);
    const b = make(schema);
    await a.open();
    await b.open();
    const sql = new pg.Client({ connectionString: URL, options: `-c search_path=${schema}` });
    await sql.connect();
    try {
      const opts = { heartbeatMs: 200, instanceTimeoutMs: 1000 };
      await a.startInstance('inst-a', opts);
      await b.startInstance('inst-b', opts);
      const hl7 = (ctl: string) => ({
        sourceId: 'feed',
        contentType: 'application/hl7-v2',
        body: Buffer.from(`MSH|^~\\&|A|F|||1||ADT^A01|${ctl}|P|2.5\r`),
        headers: { controlId: ctl },
      });
      await a.insert([hl7('I1'), hl7('I2')]);
      expect(await a.claimReceived('inst-a', 1, 60_000)).toHaveLength(1);
      const beatOf = async (id: string) =>
        Number((await sql.query('SELECT heartbeat_at FROM instances WHERE id = $1', [id])).rows[0].heartbeat_at);
      const before = await beatOf('inst-a');
      // This thread busy for 2 s (twice the timeout): the heartbeat thread keeps writing.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
      const during = await beatOf('inst-a');
      expect(during - before).toBeGreaterThanOrEqual(1500);
      await new Promise((r) => setTimeout(r, 600)); // b's look for dead instances runs
      expect(
        (await sql.query(`SELECT lease_owner FROM messages WHERE lease_owner IS NOT NULL`)).rows.map(
          (r) => r.lease_owner,
        ),
      ).toEqual(['inst-a']);
      expect(await b.claimReceived('inst-b', 10, 60_000)).toHaveLength(1); // only the one not leased

      // A third instance that claimed and then went silent (its row's heartbeat stops).
      await sql.query(
        `INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ('ghost', 'h', 1, 0, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint)`,
      );
      const [g] = await a.insert([hl7('I3')]);
      expect((await a.claimReceived('ghost', 1, 60_000)).map((m) => m.id)).toEqual([g.id]);
      const t0 = Date.now();
      let taken: string[] = [];
      while (!taken.length && Date.now() - t0 < 5000) {
        await new Promise((r) => setTimeout(r, 50));
        taken = (await b.claimReceived('inst-b', 10, 60_000)).map((m) => m.id);
      }
      expect(taken).toEqual([g.id]);
      // Released after the timeout (1 s) plus at most a heartbeat, not after the minute's lease.
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
      expect(Date.now() - t0).toBeLessThan(4000);
      expect(
        (await sql.query(`SELECT released_at FROM instances WHERE id = 'ghost'`)).rows[0].released_at,
      ).not.toBeNull();

      // Its heartbeat thread ended (it should not, but): started again, the beat goes on.
      await (a as unknown as { instances: Map<string, { worker: { terminate(): Promise<number> } }> }).instances
        .get('inst-a')!
        .worker.terminate();
      const afterEnd = await beatOf('inst-a');
      await new Promise((r) => setTimeout(r, 1200));
      expect(await beatOf('inst-a')).toBeGreaterThan(afterEnd);

      // A clean stop removes the row.
      await a.stopInstance('inst-a');
      expect((await sql.query(`SELECT id FROM instances ORDER BY id`)).rows.map((r) => r.id)).toEqual([
        'ghost',
        'inst-b',
      ]);
    } finally {
      await sql.end();
      await a.close();
      await b.close();
    }
  });

  it('createStore puts the tables in the configured schema (store.schema), creating it', async () => {
    const schema = `${prefix}_cfg`;
    const s = createStore({ kind: 'postgres', url: URL, schema }, silentLogger()) as PostgresMessageStore;
    schemas.set(s, schema);
    await s.open();
    try {
      const [m] = await s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]);
      const c = new pg.Client({ connectionString: URL });
      await c.connect();
      const r = await c.query(`SELECT id FROM ${schema}.messages`);
      await c.end();
      expect(r.rows.map((x) => x.id)).toEqual([m.id]);
    } finally {
      await s.close();
    }
  });

  it('two instances pruning at once prune each message once (steps lock their rows; the other skips them)', async () => {
    const schema = `${prefix}_prune2`;
    const a = make(schema);
    await a.open();
    const b = make(schema);
    await b.open();
    try {
      a.pruneStep = { scan: 40, batch: 7 };
      b.pruneStep = { scan: 40, batch: 7 };
      const ids = (
        await a.insert(
          Array.from({ length: 120 }, (_, i) => ({
            sourceId: 'src',
            contentType: 'text/plain',
            body: Buffer.from(`m${i}`),
          })),
        )
      ).map((r) => r.id);
      await a.claimReceived('p', 200, 60_000);
      await a.recordProcessed(ids.map((id) => ({ id, outcome: { status: 'unrouted' as const } })));
      const future = new Date(Date.now() + 1000);
      let total = 0;
      for (let round = 0; round < 3 && total < 120; round++) {
        const [ra, rb] = await Promise.all([a.prune({ bodiesBefore: future }), b.prune({ bodiesBefore: future })]);
        total += ra.messages + rb.messages;
      }
      expect(total).toBe(120);
      for (const id of ids.slice(0, 5)) expect((await a.getMessage(id, { body: true }))!.body).toBeUndefined();
    } finally {
      await b.close();
      await a.close();
    }
  });

  it('keeps store.schema when the URL has options of its own (they used to replace the search_path)', async () => {
    const schema = `${prefix}_opts`;
    const s = createStore(
      {
        kind: 'postgres',
        url: `${URL}${URL.includes('?') ? '&' : '?'}options=${encodeURIComponent('-c statement_timeout=60000')}`,
        schema,
      },
      silentLogger(),
    ) as PostgresMessageStore;
    schemas.set(s, schema);
    await s.open();
    try {
      await s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]);
      const c = new pg.Client({ connectionString: URL });
      await c.connect();
      const r = await c.query(
        `SELECT table_schema FROM information_schema.tables WHERE table_name = 'messages' AND table_schema IN ($1, 'public')`,
        [schema],
      );
      await c.end();
      expect(r.rows.map((x) => x.table_schema)).toEqual([schema]);
    } finally {
      await s.close();
    }
  });

  it("keeps time by the server's clock: an instance whose clock runs 10 minutes ahead does not take over a lease early", async () => {
    const schema = `${prefix}_clock`;
    const a = make(schema);
    await a.open();
    const lines: Record<string, unknown>[] = [];
    const logger = silentLogger();
    logger.warn = ((message: string, meta: Record<string, unknown>) => (
      lines.push({ message, ...meta }),
      logger
    )) as never;
    const ahead = new PostgresMessageStore({
      url: URL,
      schema,
      logger,
      poolSize: 2,
      now: () => Date.now() + 10 * 60_000,
    });
    schemas.set(ahead, schema);
    await ahead.open();
    try {
      const [r] = await a.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]);
      await a.claimReceived('a', 1, 60_000);
      // The lease has a minute left; by the fast clock it ran out nine minutes ago.
      expect(await ahead.claimReceived('ahead', 1, 60_000)).toEqual([]);
      const [m] = await ahead.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('y') }]);
      expect(Math.abs((await a.getMessage(m.id))!.receivedAt.getTime() - Date.now())).toBeLessThan(5_000);
      expect(lines).toEqual([
        expect.objectContaining({ message: expect.stringContaining('clock differs'), offsetMs: expect.any(Number) }),
      ]);
      expect(Math.abs((lines[0].offsetMs as number) + 10 * 60_000)).toBeLessThan(5_000);
      expect((await a.getMessage(r.id))!.status).toBe('received');
      // Ages of stored times are taken on the server's clock too: a delivery first attempted just
      // now (stored by the server's clock) is not past a 5-minute maxAgeMs for the instance whose
      // own clock reads 10 minutes later.
      expect(Math.abs(ahead.clockAheadMs() + 10 * 60_000)).toBeLessThan(5_000);
      const justNow = {
        attempts: 0,
        firstAttemptAt: new Date(Date.now()),
        createdAt: new Date(Date.now()),
      } as Parameters<typeof deliveryOutcome>[1];
      const err = new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });
      const policy = { ...defaultRetryPolicy, maxAgeMs: 5 * 60_000 };
      const localNow = new Date(Date.now() + 10 * 60_000);
      expect(deliveryOutcome(policy, justNow, err, localNow, ahead.clockAheadMs()).status).toBe('failed');
      expect(deliveryOutcome(policy, justNow, err, localNow).status).toBe('dead'); // what the clock difference did before
      expect(a.clockAheadMs()).toBe(0);
    } finally {
      await ahead.close();
      await a.close();
    }
  });

  it('a server whose disk is full: writes fail as transient STORE_FULL (a processed batch as a whole), unwritable until they succeed again', async () => {
    // A real server error with the real SQLSTATE (53100 disk_full), raised by a trigger while the
    // flag row exists. (Checked by hand with a tablespace on a full tmpfs: the same error and outcome.)
    const schema = `${prefix}_full`;
    const s = make(schema);
    await s.open();
    const c = new pg.Client({ connectionString: URL });
    await c.connect();
    try {
      await c.query(`CREATE TABLE ${schema}.disk_full (on_ boolean)`);
      await c.query(`CREATE FUNCTION ${schema}.no_space() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM ${schema}.disk_full) THEN
            RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = 'disk_full';
          END IF;
          RETURN NEW;
        END $$`);
      for (const t of ['messages', 'message_content'])
        await c.query(
          `CREATE TRIGGER no_space BEFORE INSERT OR UPDATE ON ${schema}.${t} FOR EACH ROW EXECUTE FUNCTION ${schema}.no_space()`,
        );
      const body = (i: number) => ({
        sourceId: 'src',
        contentType: 'text/plain',
        body: Buffer.from(`m${i}`),
        headers: { controlId: `M${i}` },
      });
      const stored = await s.insert([body(0), body(1)]);
      await s.claimReceived('p', 2, 60_000);
      await c.query(`INSERT INTO ${schema}.disk_full VALUES (true)`);
      await expect(s.insert([body(2)])).rejects.toMatchObject({
        code: 'FERRY_E_TRANSIENT_STORE_FULL',
        kind: 'transient',
        retryable: true,
      });
      expect(s.reachable()).toBe(false);
      // Not "message M0 failed, left leased for a lease": the batch fails, to be recorded again.
      const processed = stored.map((r) => ({
        id: r.id,
        transformed: { bundleJson: '{"resourceType":"Bundle"}', orderingKey: 'k' },
        outcome: { status: 'unrouted' as const },
      }));
      await expect(s.recordProcessed(processed)).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_FULL' });
      await c.query(`DELETE FROM ${schema}.disk_full`);
      expect(await s.recordProcessed(processed)).toEqual({ failed: [] });
      await new Promise((r) => setTimeout(r, 1050));
      await s.insert([body(3)]);
      expect(s.reachable()).toBe(true);
      expect((await s.getMessage(stored[0].id))?.status).toBe('unrouted');
    } finally {
      await c.end();
      await s.close();
    }
  });

  /** A store reaching the server through a real TCP proxy the test can cut, black-hole and restore. */
  async function behindProxy(name: string, opts: { poolSize?: number; queryTimeoutMs?: number } = {}) {
    const upstream = new globalThis.URL(URL);
    const proxy = await startTcpProxy(upstream.hostname, Number(upstream.port || 5432));
    const schema = `${prefix}_${name}`;
    const store = new PostgresMessageStore({
      url: `postgres://${upstream.username || 'postgres'}@127.0.0.1:${proxy.port}${upstream.pathname}`,
      schema,
      logger: silentLogger(),
      ...opts,
    });
    schemas.set(store, schema);
    await store.open();
    const close = async () => {
      await store.close();
      await proxy.close();
    };
    return { store, proxy, close };
  }
  const oneMsg = () => [{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }];
  /** The network back: the next insert works, the store is reachable again, both messages stored. */
  async function backAfterRestore(s: PostgresMessageStore, proxy: TcpProxy) {
    await proxy.restore();
    await s.insert(oneMsg());
    expect(s.reachable()).toBe(true);
    expect((await s.stats()).messages).toEqual({ received: 2 });
  }

  it('is unreachable while its server cannot be reached, reachable again after the first success, and never crashes on it', async () => {
    // Cutting the proxy drops every connection and refuses new ones.
    const { store: s, proxy, close } = await behindProxy('reach', { poolSize: 2 });
    try {
      await s.insert(oneMsg());
      expect(s.reachable()).toBe(true);
      await proxy.cut();
      await expect(s.insert(oneMsg())).rejects.toMatchObject({ kind: 'transient' });
      await expect(s.backlog()).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
      expect(s.reachable()).toBe(false);
      await backAfterRestore(s, proxy);
    } finally {
      await close();
    }
  });

  it('a client whose connection dies as the pool hands it out (before the store listens) does not end the process', async () => {
    const s = make(`${prefix}_handover`);
    await s.open();
    try {
      const pool = (s as unknown as { pool: pg.Pool }).pool;
      // What a backend terminated just after its startup looks like: the error comes in the same
      // read as the connection's readiness -- after the pool took its own listener off the client
      // (just after 'acquire') and before the store's checkout resumes to add one (a microtask
      // queued here runs before that continuation).
      let emitted = false;
      pool.once('acquire', (client) =>
        queueMicrotask(() => {
          emitted = true;
          client.emit('error', new Error('terminating connection due to administrator command'));
        }),
      );
      const one = (body: string) => [{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from(body) }];
      await s.insert(one('handover'));
      expect(emitted).toBe(true);
      await s.insert(one('after'));
    } finally {
      await s.close();
    }
  });

  it('a session left idle inside a transaction (a paused process) is ended by the server, so its locks do not block a takeover', async () => {
    // What a SIGSTOPped engine looks like to the server: BEGIN, a statement, then silence.
    class Paused extends PostgresMessageStore {
      hold(ms: number): Promise<unknown> {
        return this.tx(async (x) => {
          await x.run('SELECT 1');
          await new Promise((r) => setTimeout(r, ms));
          return x.run('SELECT 1');
        });
      }
    }
    const schema = `${prefix}_idle_tx`;
    const s = new Paused({ url: URL, schema, logger: silentLogger(), poolSize: 2, idleInTransactionTimeoutMs: 300 });
    schemas.set(s, schema);
    await s.open();
    try {
      await expect(s.hold(0)).resolves.toBeDefined();
      await expect(s.hold(1500)).rejects.toMatchObject({ kind: 'transient' });
      // The store carries on with a fresh connection.
      await expect(s.hold(0)).resolves.toBeDefined();
    } finally {
      await s.close();
    }
  });

  it('fails a statement the server does not answer within queryTimeoutMs (a network dropping packets), as a lost connection', async () => {
    const { store: s, proxy, close } = await behindProxy('hole', { poolSize: 1, queryTimeoutMs: 500 });
    try {
      await s.insert(oneMsg());
      proxy.blackhole();
      // Without queryTimeoutMs the insert would wait for ever (the proxy drops everything): failing at all is the timeout.
      await expect(s.insert(oneMsg())).rejects.toMatchObject({ kind: 'transient' });
      expect(s.reachable()).toBe(false);
      await backAfterRestore(s, proxy);
    } finally {
      await close();
    }
  });

  it('createStore needs a url for postgres', () => {
    expect(() => createStore({ kind: 'postgres', url: '' }, silentLogger())).toThrow(
      expect.objectContaining({ kind: 'config' }),
    );
  });

  it('reports an unreachable server as a transient error', async () => {
    const s = new PostgresMessageStore({ url: 'postgres://postgres@127.0.0.1:1/test', logger: silentLogger() });
    await expect(s.open()).rejects.toMatchObject({ kind: 'transient', code: 'FERRY_E_TRANSIENT_STORE_CONNECT' });
  });
});
