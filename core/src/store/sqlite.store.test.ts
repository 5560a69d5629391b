import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import { loopTurnsDuring, storeConformance } from './__fixtures__/conformance';
import { createStore } from './create-store';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { ddl, migrations, SCHEMA_VERSION } from './schema';
import { rowMaker, SqliteMessageStore } from './sqlite.store';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-store-'));
let n = 0;

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

storeConformance('sqlite', {
  make: (opts) =>
    new SqliteMessageStore({
      path: path.join(dir, `t${++n}.db`),
      logger: silentLogger(),
      groupCommit: opts?.groupCommit,
      now: opts?.now,
    }),
  sibling: (s) => new SqliteMessageStore({ path: (s as SqliteMessageStore).file, logger: silentLogger() }),
  commits: (s) => (s as SqliteMessageStore).insertCommits,
  rawSql: async (s, sql) => {
    const db = new Database((s as SqliteMessageStore).file);
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  },
  checkInvariants: async (s, when) => {
    // Every open delivery no older strict one of its (sink, key) holds is a head: one that is not
    // would never be claimed.
    const db = new Database((s as SqliteMessageStore).file, { readonly: true });
    try {
      const lost = db
        .prepare(
          `SELECT d.id FROM deliveries d WHERE d.superseded = 0 AND d.status IN ('pending', 'failed') AND d.head = 0
             AND NOT (d.strict_order = 1 AND EXISTS (SELECT 1 FROM deliveries e WHERE e.sink_id = d.sink_id AND e.ordering_key = d.ordering_key
                        AND e.superseded = 0 AND e.status IN ('pending', 'failed') AND e.strict_order = 1 AND e.message_seq < d.message_seq))`,
        )
        .all();
      if (lost.length) throw new Error(`${when}: deliveries that are no head but should be: ${JSON.stringify(lost)}`);
    } finally {
      db.close();
    }
  },
});

describe('SqliteMessageStore specifics', () => {
  it('the audit trail is append-only in the file too: UPDATE is refused, retention may DELETE', async () => {
    const file = path.join(dir, 'audit.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    await s.appendAudit([{ principal: 'cli:test', action: 'prune', result: 'ok' }]);
    await s.close();
    const db = new Database(file);
    try {
      expect(() => db.prepare("UPDATE audit_log SET principal = 'someone else'").run()).toThrow(/append-only/);
      expect(db.prepare('DELETE FROM audit_log').run().changes).toBe(1);
    } finally {
      db.close();
    }
  });

  it('uses WAL, FULL sync for inserts, incremental auto-vacuum, and records the schema version', async () => {
    const file = path.join(dir, 'pragmas.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    expect(await s.schemaVersion()).toBe(SCHEMA_VERSION);
    const st = await s.fileStats();
    expect(st.autoVacuum).toBe(2); // INCREMENTAL
    await s.close();
    expect(fs.existsSync(file)).toBe(true);
  });

  it("answers the admin reads on its side thread's connection, not the engine's (the same data; on the engine's when that thread is off)", async () => {
    class NoSideThread extends SqliteMessageStore {
      protected override backgroundCheckpoints = false;
    }
    for (const [name, s] of [
      ['side', new SqliteMessageStore({ path: path.join(dir, 'aside.db'), logger: silentLogger() })],
      ['engine', new NoSideThread({ path: path.join(dir, 'aside-off.db'), logger: silentLogger() })],
    ] as const) {
      await s.open();
      try {
        const [m] = await s.insert([
          {
            sourceId: 'src',
            contentType: 'text/plain',
            body: Buffer.from([0, 1, 2, 255]),
            headers: { controlId: 'A1' },
          },
        ]);
        await s.claimReceived('p', 1, 60_000);
        await s.recordProcessed([
          {
            id: m.id,
            transformed: { bundleJson: '{"resourceType":"Bundle","type":"collection"}' },
            outcome: {
              status: 'routed',
              deliveries: [{ routeId: 'r', sinkId: 'k', strictOrder: true, unchanged: true }],
            },
          },
        ]);
        const before = s.asideReadCount;
        const { result: got, turns } = await loopTurnsDuring(() => s.getMessage(m.id, { body: true, bundle: true }));
        expect(got!.body).toEqual(Buffer.from([0, 1, 2, 255]));
        expect(Buffer.isBuffer(got!.body)).toBe(true);
        expect(got!.bundle).toEqual({ resourceType: 'Bundle', type: 'collection' });
        expect((await s.listMessages({ status: ['routed'] })).map((x) => x.id)).toEqual([m.id]);
        expect((await s.events(m.id)).map((e) => e.status)).toEqual([
          'received',
          'transformed',
          'routed',
          'delivery:pending',
        ]);
        expect((await s.deliveries(m.id)).map((d) => d.sinkId)).toEqual(['k']);
        expect(await s.stats()).toEqual({ messages: { routed: 1 }, deliveries: { pending: 1 } });
        expect(await s.countMessages(['routed', 'dead'])).toEqual({ routed: 1, dead: 0 });
        // With the side thread: answered through the event loop (a read on the engine's connection is
        // synchronous), seven reads or more on its connection. Without it: none on that connection, ever.
        const sideReads = s.asideReadCount - before;
        expect(name === 'side' ? turns > 0 && sideReads >= 7 : s.asideReadCount === 0).toBe(true);
      } finally {
        await s.close();
      }
    }
  });

  it('upgrades a version-1 database in place: bodies and bundles move to message_content', async () => {
    const file = path.join(dir, 'v1.db');
    const raw = new Database(file);
    raw.exec(
      'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    for (const st of migrations[0].statements) raw.exec(ddl(st, 'sqlite'));
    raw.prepare(`INSERT INTO schema_migrations VALUES (1, 'v1', 0)`).run();
    raw
      .prepare(
        `INSERT INTO messages (id, source_id, content_type, body, headers, received_at, status, bundle, updated_at) VALUES ('01OLD', 's', 'text/plain', ?, '{}', 1, 'delivered', '{"resourceType":"Bundle"}', 1)`,
      )
      .run(Buffer.from('old body'));
    raw.close();
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    expect(await s.schemaVersion()).toBe(SCHEMA_VERSION);
    const m = await s.getMessage('01OLD', { body: true, bundle: true });
    expect(m!.body!.toString()).toBe('old body');
    expect(m!.bundle).toEqual({ resourceType: 'Bundle' });
    await s.close();
  });

  it("keeps one head per (sink, key) for a down sink's backlog, so its claims visit the heads, not the backlog", async () => {
    const file = path.join(dir, 'heads.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    const heads = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db
          .prepare(
            `SELECT sink_id AS sink, COUNT(*) AS n FROM deliveries WHERE superseded = 0 AND status IN ('pending', 'failed') AND head = 1 GROUP BY sink_id ORDER BY sink_id`,
          )
          .all();
      } finally {
        db.close();
      }
    };
    const keys = ['k1', 'k2', 'k3'];
    const route = async (n: number, batch: boolean) => {
      const ids = (
        await s.insert(
          Array.from({ length: n }, (_, i) => ({
            sourceId: 's',
            contentType: 'text/plain',
            body: Buffer.from('x'),
            headers: { controlId: `h${Math.random()}${i}` },
          })),
        )
      ).map((r) => r.id);
      await s.claimReceived('p', 1000, 60_000);
      const deliveries = [
        { routeId: 'r', sinkId: 'down', strictOrder: true, unchanged: true },
        { routeId: 'r2', sinkId: 'loose', strictOrder: false, unchanged: true },
      ];
      if (batch)
        await s.recordProcessed(
          ids.map((id, i) => ({
            id,
            transformed: { bundleJson: '{}', orderingKey: keys[i % 3] },
            outcome: { status: 'routed' as const, deliveries },
          })),
        );
      else
        for (const [i, id] of ids.entries()) {
          await s.recordTransformed(id, { resourceType: 'Bundle', type: 'collection' }, keys[i % 3]);
          await s.recordRouting(id, { status: 'routed', deliveries });
        }
    };
    await route(30, true);
    // Each key's oldest is the head for the strict sink; every delivery to the unordered one is.
    expect(heads()).toEqual([
      { sink: 'down', n: 3 },
      { sink: 'loose', n: 30 },
    ]);
    const claimed = await s.claimDeliveries('w', 100, 60_000, undefined, { sinkIds: ['down'] });
    expect(claimed).toHaveLength(3);
    const error = { code: 'E', message: 'down', retryable: true };
    await s.completeDeliveries(
      claimed.map((d) => ({
        deliveryId: d.id,
        outcome: { status: 'failed' as const, error, nextAttemptAt: new Date(Date.now() + 3_600_000) },
      })),
    );
    await route(30, false);
    await route(30, true);
    expect(heads()).toEqual([
      { sink: 'down', n: 3 },
      { sink: 'loose', n: 90 },
    ]);
    expect(await s.claimDeliveries('w', 100, 60_000, undefined, { sinkIds: ['down'] })).toEqual([]);
    // The sink is back: the heads are delivered, and the next of each key takes its place.
    const due = await s.claimDeliveries('w', 100, 60_000, new Date(Date.now() + 3_600_001), { sinkIds: ['down'] });
    expect(due.map((d) => d.id).sort()).toEqual(claimed.map((d) => d.id).sort());
    await s.completeDeliveries(due.map((d) => ({ deliveryId: d.id, outcome: { status: 'delivered' as const } })));
    expect(heads()).toEqual([
      { sink: 'down', n: 3 },
      { sink: 'loose', n: 90 },
    ]);
    expect(await s.claimDeliveries('w', 100, 60_000, undefined, { sinkIds: ['down'] })).toHaveLength(3);
    await s.close();
  });

  it('upgrades a version-4 database with a held backlog: its heads are set once', async () => {
    const file = path.join(dir, 'v4.db');
    const raw = new Database(file);
    raw.exec(
      'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    for (const m of migrations.filter((x) => x.version <= 4)) {
      for (const st of m.statements) raw.exec(ddl(st, 'sqlite'));
      raw.prepare(`INSERT INTO schema_migrations VALUES (?, ?, 0)`).run(m.version, m.name);
    }
    const msg = raw.prepare(
      `INSERT INTO messages (id, source_id, content_type, headers, received_at, status, ordering_key, updated_at) VALUES (?, 's', 'text/plain', '{}', 1, 'routed', ?, 1)`,
    );
    const del = raw.prepare(
      `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, next_attempt_at) VALUES (?, ?, ?, 'r', 'down', ?, ?, ?, 1, 1, ?)`,
    );
    for (let i = 0; i < 6; i++) {
      const seq = msg.run(`M${i}`, `k${i % 2}`).lastInsertRowid;
      raw.prepare(`INSERT INTO message_content (message_id, body) VALUES (?, x'00')`).run(`M${i}`);
      // The first of each key failed and waits an hour; the others are held behind it.
      del.run(
        `D${i}`,
        `M${i}`,
        seq,
        i < 2 ? 'failed' : 'pending',
        i < 2 ? 1 : 0,
        `k${i % 2}`,
        i < 2 ? Date.now() + 3_600_000 : null,
      );
    }
    raw.close();
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    expect(await s.schemaVersion()).toBe(SCHEMA_VERSION);
    const db = new Database(file, { readonly: true });
    expect(db.prepare(`SELECT id FROM deliveries WHERE head = 1 ORDER BY id`).all()).toEqual([
      { id: 'D0' },
      { id: 'D1' },
    ]);
    db.close();
    expect(await s.claimDeliveries('w', 10, 60_000)).toEqual([]);
    const due = await s.claimDeliveries('w', 10, 60_000, new Date(Date.now() + 3_600_001));
    expect(due.map((d) => d.id)).toEqual(['D0', 'D1']);
    await s.completeDeliveries(due.map((d) => ({ deliveryId: d.id, outcome: { status: 'delivered' as const } })));
    expect((await s.claimDeliveries('w', 10, 60_000)).map((d) => d.id)).toEqual(['D2', 'D3']);
    await s.close();
  });

  it('createStore resolves a relative path against the base dir and creates the folder', async () => {
    const s = createStore(
      { kind: 'sqlite', path: 'nested/deeper/ferry.db' },
      silentLogger(),
      dir,
    ) as SqliteMessageStore;
    expect(s.file).toBe(path.join(dir, 'nested/deeper/ferry.db'));
    await s.open();
    expect(fs.existsSync(path.join(dir, 'nested/deeper/ferry.db'))).toBe(true);
    await s.close();
  });

  it('refuses a file that is not a database with a config error', async () => {
    const file = path.join(dir, 'garbage.db');
    fs.writeFileSync(file, 'this is not sqlite'.repeat(100));
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await expect(s.open()).rejects.toMatchObject({ kind: 'config' });
  });

  it('gives the space of pruned bodies back to the file (incremental vacuum)', async () => {
    const file = path.join(dir, 'vacuum.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    const body = Buffer.alloc(20_000, 'x');
    const ids = (
      await s.insert(
        Array.from({ length: 200 }, (_, i) => ({
          sourceId: 's',
          contentType: 'text/plain',
          body,
          headers: { controlId: `v${i}` },
        })),
      )
    ).map((r) => r.id);
    await s.claimReceived('p', 1000, 60_000);
    for (const id of ids) {
      await s.recordTransformed(id, { resourceType: 'Bundle', type: 'collection' }, 'k');
      await s.recordRouting(id, { status: 'unrouted' });
    }
    const before = await s.fileStats();
    // In steps of 100 pages, with the event loop turning between them.
    s.vacuumPages = 100;
    const { result: r, turns } = await loopTurnsDuring(() => s.prune({ bodiesBefore: new Date(Date.now() + 1000) }));
    expect(r.messages).toBe(200);
    const after = await s.fileStats();
    expect(after.pageCount).toBeLessThan(before.pageCount / 4);
    expect(after.freePages).toBe(0);
    expect(turns).toBeGreaterThan((before.pageCount * 3) / 4 / 100);
    await s.close();
    expect(fs.statSync(file).size).toBeLessThan((before.pageCount * before.pageSize) / 4);
  });
});

describe("another process's write lock", () => {
  it('is waited for without holding the event loop, and the write goes through once it is released', async () => {
    const file = path.join(dir, 'busy.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await s.open();
    try {
      let last = Date.now();
      let maxGap = 0;
      const tick = setInterval(() => {
        const now = Date.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
      }, 5);
      // A second connection (as a `ferry prune` in another process would) holds the write lock 600 ms.
      const other = new Database(file);
      other.exec('BEGIN IMMEDIATE');
      other.prepare(`INSERT INTO checkpoints VALUES ('other', 'k', 'v', 1)`).run();
      setTimeout(() => {
        other.exec('COMMIT');
        other.close();
      }, 600);
      const t0 = Date.now();
      const [r] = await s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]);
      const waited = Date.now() - t0;
      clearInterval(tick);
      expect(r.stored).toBe(true);
      expect(waited).toBeGreaterThanOrEqual(550);
      // SQLite's busy handler would have slept through the whole 600 ms on this thread.
      expect(maxGap).toBeLessThan(200);
      expect(await s.getCheckpoint('other', 'k')).toBe('v');
    } finally {
      await s.close();
    }
  });

  it('held longer than busyTimeoutMs: the write fails as transient (refused, not lost)', async () => {
    const file = path.join(dir, 'busy-timeout.db');
    const s = new SqliteMessageStore({ path: file, logger: silentLogger(), busyTimeoutMs: 200 });
    await s.open();
    const other = new Database(file);
    try {
      other.exec('BEGIN IMMEDIATE');
      await expect(
        s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('x') }]),
      ).rejects.toMatchObject({ kind: 'transient', code: 'FERRY_E_TRANSIENT_STORE_BUSY' });
      other.exec('COMMIT');
      const [r] = await s.insert([{ sourceId: 'src', contentType: 'text/plain', body: Buffer.from('y') }]);
      expect(r.stored).toBe(true);
    } finally {
      other.close();
      await s.close();
    }
  });
});

describe('rows built from raw rows', () => {
  it('gives the same objects as better-sqlite3 (odd and repeated column names included); a __proto__ column keeps its own rows', () => {
    const db = new Database(':memory:');
    try {
      const sql = `SELECT 1 AS a, 'x' AS "we""ird name", NULL AS n, 2 AS a, X'00ff' AS b`;
      const plain = db.prepare(sql).all();
      const s = db.prepare(sql);
      const make = rowMaker(s)!;
      expect(make).not.toBeNull();
      expect(rowMaker(s)).toBe(make); // made once per statement
      expect((s.all() as unknown[][]).map((r) => make(r))).toEqual(plain);
      expect(plain).toEqual([{ a: 2, 'we"ird name': 'x', n: null, b: Buffer.from([0, 255]) }]);
      const proto = db.prepare(`SELECT 1 AS "__proto__"`);
      expect(rowMaker(proto)).toBeNull();
      expect(proto.all()).toEqual([{}]);
    } finally {
      db.close();
    }
  });
});

describe('a full disk', () => {
  // SQLite's own size limit gives the same SQLITE_FULL a full disk does (the engine-level proof,
  // test/reliability/sqlite-disk-full.test.ts, does the same under load).
  const limit = (s: SqliteMessageStore, pages?: number) => {
    const db = (s as unknown as { db: Database.Database }).db;
    db.pragma(`max_page_count = ${pages ?? Number(db.pragma('page_count', { simple: true }))}`);
  };
  const msg = (i: number) => ({
    sourceId: 's',
    contentType: 'text/plain',
    body: Buffer.alloc(20_000, i),
    headers: { controlId: `F${i}` },
  });

  it('refuses inserts as transient STORE_FULL, reports itself unwritable once, and recovers', async () => {
    const lines: { level: string; message: string }[] = [];
    const logger = silentLogger();
    for (const level of ['warn', 'info'] as const)
      logger[level] = ((message: string) => (lines.push({ level, message }), logger)) as never;
    const s = new SqliteMessageStore({ path: path.join(dir, 'full.db'), logger });
    await s.open();
    await s.insert([msg(0)]);
    limit(s);
    for (let i = 1; i <= 3; i++)
      await expect(s.insert([msg(i)])).rejects.toMatchObject({
        code: 'FERRY_E_TRANSIENT_STORE_FULL',
        kind: 'transient',
        retryable: true,
      });
    expect(s.reachable()).toBe(false);
    expect(lines.filter((l) => l.message === 'sqlite store cannot write')).toHaveLength(1);
    limit(s, 1_000_000);
    await s.insert([msg(4)]);
    // Writable again once writes have succeeded for a second after the last failure.
    expect(s.reachable()).toBe(false);
    await new Promise((r) => setTimeout(r, 1050));
    await s.insert([msg(5)]);
    expect(s.reachable()).toBe(true);
    expect(lines.filter((l) => l.message.startsWith('sqlite store')).map((l) => `${l.level} ${l.message}`)).toEqual([
      'warn sqlite store cannot write',
      'info sqlite store writable again',
    ]);
    expect((await s.listMessages({ limit: 10 })).map((m) => m.headers.controlId).sort()).toEqual(['F0', 'F4', 'F5']);
    await s.close();
  });

  it('a shared transaction SQLite rolls back itself fails every operation in it with the cause, and the store carries on', async () => {
    const s = new SqliteMessageStore({ path: path.join(dir, 'full-shared.db'), logger: silentLogger() });
    await s.open();
    const stored = await s.insert([msg(0), msg(1)]);
    await s.claimReceived('p', 2, 60_000);
    limit(s);
    // Two processing results recorded at once (one shared transaction), their bundles too big for
    // the file: the failure rolls the whole transaction back (was: "no such savepoint: ferry_op").
    const bundleJson = JSON.stringify({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [],
      id: 'x'.repeat(60_000),
    });
    const results = await Promise.allSettled(
      stored.map((r) =>
        s.recordProcessed([
          { id: r.id, transformed: { bundleJson, orderingKey: 'k' }, outcome: { status: 'unrouted' } },
        ]),
      ),
    );
    for (const r of results)
      expect(r).toMatchObject({ status: 'rejected', reason: { code: 'FERRY_E_TRANSIENT_STORE_FULL' } });
    limit(s, 1_000_000);
    expect(
      await s.recordProcessed(
        stored.map((r) => ({
          id: r.id,
          transformed: { bundleJson, orderingKey: 'k' },
          outcome: { status: 'unrouted' as const },
        })),
      ),
    ).toEqual({ failed: [] });
    for (const r of stored) expect((await s.getMessage(r.id))?.status).toBe('unrouted');
    await s.close();
  });
});

describe('one engine per SQLite file', () => {
  it('refuses a second engine store on the same file in this process until the first closes; tools open beside it', async () => {
    const file = path.join(dir, 'engine-lock.db');
    const a = createStore({ kind: 'sqlite', path: file }, silentLogger(), dir, { engine: true });
    const b = createStore({ kind: 'sqlite', path: file }, silentLogger(), dir, { engine: true });
    await a.open();
    await expect(b.open()).rejects.toMatchObject({
      code: 'FERRY_E_CONFIG_STORE_IN_USE',
      kind: 'config',
      message: expect.stringContaining(`(pid ${process.pid})`),
    });
    expect(b.isOpen()).toBe(false);
    // `ferry replay` / `ferry prune` beside a running engine: no engine lock.
    const tool = createStore({ kind: 'sqlite', path: file }, silentLogger(), dir);
    await tool.open();
    await tool.close();
    await a.close();
    expect(fs.existsSync(`${file}-engine.pid`)).toBe(false);
    await b.open();
    await b.close();
  });

  it('is held by another process until it ends, and freed by kill -9 (never stale)', async () => {
    const file = path.join(dir, 'engine-lock-proc.db');
    const built = path.resolve(__dirname, '../../dist/store/sqlite.store.js');
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const { SqliteMessageStore } = require(${JSON.stringify(built)});
         const s = new SqliteMessageStore({ path: ${JSON.stringify(file)}, logger: { info() {}, warn() {}, error() {}, debug() {} }, engineLock: true });
         s.open().then(() => console.log('open'), (e) => { console.error(e.message); process.exit(1); });
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => d.toString().includes('open') && resolve());
        child.on('exit', (code) => reject(new Error(`child exited ${code}`)));
      });
      const s = new SqliteMessageStore({ path: file, logger: silentLogger(), engineLock: true });
      await expect(s.open()).rejects.toMatchObject({
        code: 'FERRY_E_CONFIG_STORE_IN_USE',
        message: expect.stringContaining(`(pid ${child.pid})`),
      });
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      await s.open();
      expect(fs.readFileSync(`${file}-engine.pid`, 'utf8').trim()).toBe(String(process.pid));
      await s.close();
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('leases of a previous engine', () => {
  it("are released when the next engine starts on the file (it holds the lock: the old owner is dead); a tool's store releases nothing", async () => {
    const file = path.join(dir, 'engine-leases.db');
    const hl7 = (ctl: string) => ({
      sourceId: 'feed',
      contentType: 'application/hl7-v2',
      body: Buffer.from(`MSH|^~\\&|A|F|||1||ADT^A01|${ctl}|P|2.5\r`),
      headers: { controlId: ctl },
    });
    const old = new SqliteMessageStore({ path: file, logger: silentLogger(), engineLock: true });
    await old.open();
    expect(await old.startInstance('old', { heartbeatMs: 2000, instanceTimeoutMs: 6000 })).toEqual({
      releasedMessages: 0,
      releasedDeliveries: 0,
    });
    const [a, b] = await old.insert([hl7('L1'), hl7('L2')]);
    // One message routed with its delivery leased (a sink call in flight), one leased for processing.
    expect((await old.claimReceived('old', 1, 60_000)).map((m) => m.id)).toEqual([a.id]);
    await old.recordTransformed(a.id, { resourceType: 'Bundle', type: 'collection', entry: [] }, 'k');
    await old.recordRouting(a.id, {
      status: 'routed',
      deliveries: [
        {
          routeId: 'r',
          sinkId: 's',
          bundle: { resourceType: 'Bundle', type: 'collection', entry: [] },
          strictOrder: true,
        },
      ],
    });
    expect(await old.claimDeliveries('old', 10, 60_000)).toHaveLength(1);
    expect((await old.claimReceived('old', 1, 60_000)).map((m) => m.id)).toEqual([b.id]);
    await old.close(); // as a crash leaves them: leased for another minute

    const tool = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await tool.open();
    expect(await tool.startInstance('tool')).toEqual({ releasedMessages: 0, releasedDeliveries: 0 });
    await tool.close();

    const next = new SqliteMessageStore({ path: file, logger: silentLogger(), engineLock: true });
    await next.open();
    try {
      expect(await next.claimReceived('new', 10, 60_000)).toHaveLength(0);
      expect(await next.startInstance('new', { heartbeatMs: 2000, instanceTimeoutMs: 6000 })).toEqual({
        releasedMessages: 1,
        releasedDeliveries: 1,
      });
      expect((await next.claimReceived('new', 10, 60_000)).map((m) => m.id)).toEqual([b.id]);
      expect((await next.claimDeliveries('new', 10, 60_000)).map((d) => d.messageId)).toEqual([a.id]);
    } finally {
      await next.close();
    }
  });
});

describe('per-key order under random interleavings (property)', () => {
  it('delivers each (key, sink) in arrival order whatever claims, failures and completion order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 5, maxLength: 30 }), // key of each message
        fc.array(fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 0, max: 9 }), fc.boolean()), {
          minLength: 200,
          maxLength: 200,
        }), // (claim size, outcome roll, complete in reverse)
        async (keys, steps) => {
          const s = new SqliteMessageStore({ path: ':memory:', logger: silentLogger() });
          await s.open();
          try {
            const bundle = { resourceType: 'Bundle' as const, type: 'collection' as const };
            const ids = (
              await s.insert(
                keys.map((k, i) => ({
                  sourceId: 'p',
                  contentType: 'text/plain',
                  body: Buffer.from(`m${i}`),
                  headers: { controlId: `c${i}` },
                })),
              )
            ).map((r) => r.id);
            const claimed = await s.claimReceived('p', 1000, 60_000);
            // route in a scrambled order (as if several processors finished out of order)
            const order = claimed.map((m, i) => ({ m, i })).sort((a, b) => ((a.i * 7919) % 13) - ((b.i * 7919) % 13));
            for (const { m, i } of order) {
              await s.recordTransformed(m.id, bundle, `K${keys[i]}`);
              await s.recordRouting(m.id, {
                status: 'routed',
                deliveries: ['s1', 's2'].map((sinkId) => ({ routeId: 'r', sinkId, bundle, strictOrder: true })),
              });
            }
            const delivered = new Map<string, number[]>();
            const index = new Map(ids.map((id, i) => [id, i]));
            let t = Date.now();
            for (const [size, roll, reverse] of steps) {
              t += 10;
              const batch = await s.claimDeliveries('w', size, 60_000, new Date(t));
              const done = reverse ? [...batch].reverse() : batch;
              for (const d of done) {
                if (roll < 3) {
                  await s.completeDelivery(d.id, {
                    status: 'failed',
                    error: { code: 'X', message: 'x' },
                    nextAttemptAt: new Date(t + 5),
                  });
                } else {
                  await s.completeDelivery(d.id, { status: 'delivered' });
                  const k = `${d.orderingKey}|${d.sinkId}`;
                  delivered.set(k, [...(delivered.get(k) ?? []), index.get(d.messageId)!]);
                }
              }
            }
            const total = [...delivered.values()].reduce((a, l) => a + l.length, 0);
            expect(total).toBeGreaterThan(Math.min(keys.length, 10)); // the run really delivered
            for (const list of delivered.values()) expect(list).toEqual([...list].sort((a, b) => a - b));
            // and nothing is skipped: what was delivered per (key, sink) is a prefix of that key's messages
            for (const [k, list] of delivered) {
              const key = Number(k.slice(1, k.indexOf('|')));
              const all = keys.map((x, i) => (x === key ? i : -1)).filter((i) => i >= 0);
              expect(list).toEqual(all.slice(0, list.length));
            }
          } finally {
            await s.close();
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});
