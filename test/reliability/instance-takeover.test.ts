/**
 * Proof: on PostgreSQL a dead instance's work moves within seconds, not after the lease. Two
 * engine processes (the built CLI, the default one-minute lease) deliver a queued backlog to a
 * slow HTTP sink (each request answered after HOLD_MS, so there is always work in flight):
 * (1) one is SIGKILLed: everything it held (messages leased for processing, deliveries in flight)
 *     is delivered by the other within 10 s -- its heartbeat stops, the other sees it silent for
 *     `instanceTimeoutMs` (6 s) at its next check (every 2 s) and releases its leases;
 * (2) one is paused with SIGSTOP (its heartbeat thread stops too: a stopped process is not told
 *     from a dead one) until the other has taken over and delivered its work, then resumed with
 *     SIGCONT: its late outcomes go through the lease fence (the same outcome already recorded is
 *     left as is, another one is dropped with a warning), nothing is recorded twice or undone, it
 *     beats again and carries on. The sink gets at most what it had in flight twice
 *     (at-least-once).
 * (0) A live instance whose event loop is merely busy keeps its leases: its heartbeat comes from a
 *     thread of its own. A child process with a registered store claims a message and spins its
 *     event loop for three instance timeouts: the other store's checks leave its lease alone;
 *     SIGSTOPped, its lease is released within the timeout and a heartbeat or two.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PostgresMessageStore, silentLogger } from '@ferry/core';
import { pgRequirement, requires } from '../support/requires';
import {
  adt,
  cliBuilt,
  dropSchema,
  killHard,
  PG_URL,
  root,
  sleep,
  startEngine,
  stopGracefully,
  waitFor,
  type EngineProcess,
} from './support';

const N = Math.min(Number(process.env.FERRY_RELIABILITY_MESSAGES ?? 600), 600);
const PATIENTS = 60;
const WORKERS = 4;
const HOLD_MS = 100;

// A visible skip locally, a failure in CI, when PostgreSQL or the build is missing.
requires(pgRequirement(), cliBuilt)('instances on PostgreSQL: takeover by heartbeat', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-takeover-'));
  const engines: EngineProcess[] = [];
  const schemas: string[] = [];
  let server: Server | undefined;
  /** Control id -> times received, and by which instance. */
  let received = new Map<string, number>();
  let byInstance: Record<string, number> = {};

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        setTimeout(() => {
          try {
            const env = JSON.parse(Buffer.concat(chunks).toString()) as { controlId: string };
            received.set(env.controlId, (received.get(env.controlId) ?? 0) + 1);
            const inst = String(req.headers['x-instance']);
            byInstance[inst] = (byInstance[inst] ?? 0) + 1;
            res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
          } catch {
            res.writeHead(400).end();
          }
        }, HOLD_MS);
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  });

  afterAll(async () => {
    for (const e of engines) {
      if (e.child.exitCode === null && e.child.signalCode === null) e.child.kill('SIGCONT');
      await killHard(e);
    }
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server?.closeAllConnections();
    for (const s of schemas) await dropSchema(s);
    rmSync(dir, { recursive: true, force: true });
  });

  /** A fresh schema with `N` queued messages and a config for two instances; returns the config path and a SQL client. */
  async function setUp(name: string): Promise<{ cfg: string; sql: pg.Client }> {
    received = new Map();
    byInstance = {};
    const schema = `ferry_take_${randomBytes(4).toString('hex')}`;
    schemas.push(schema);
    const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    const store = new PostgresMessageStore({ url: PG_URL, schema, logger: silentLogger() });
    await store.open();
    await store.insert(
      Array.from({ length: N }, (_, i) => ({
        sourceId: 'feed',
        contentType: 'application/hl7-v2',
        body: Buffer.from(adt(`T${i}`, `P${i % PATIENTS}`, i), 'latin1'),
        headers: {
          messageType: 'ADT^A08',
          trigger: 'A08',
          controlId: `T${i}`,
          sendingApplication: 'RELY',
          sendingFacility: 'FAC',
          version: '2.5.1',
        },
      })),
    );
    await store.close();
    const sinkUrl = `http://127.0.0.1:${(server!.address() as AddressInfo).port}/in`;
    const cfg = path.join(dir, `${name}.yaml`);
    writeFileSync(
      cfg,
      [
        `store: { kind: postgres, url: '${url}' }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        'admin: { enabled: false }',
        'log: { level: warn }',
        // The default lease (60 s), heartbeat (2 s) and instance timeout (6 s).
        `processing: { pollIntervalMs: 100, deliveryWorkers: ${WORKERS}, transformWorkers: 0 }`,
        'sources:',
        '  feed: { type: mllp, host: 127.0.0.1, port: 0 }',
        'sinks:',
        `  out: { type: http, url: '${sinkUrl}', envelope: true, headers: { X-Instance: '\${FERRY_INSTANCE}' }, retry: { initialDelayMs: 200, maxDelayMs: 1000 } }`,
        'routes:',
        '  - { id: all, from: [feed], to: [out], ordering: strict }',
        '',
      ].join('\n'),
    );
    const sql = new pg.Client({ connectionString: url });
    await sql.connect();
    return { cfg, sql };
  }

  const start = async (cfg: string) => {
    const [a, b] = await Promise.all(
      ['a', 'b'].map((inst) =>
        startEngine(cfg, dir, /engine started|mllp listener started/, 30_000, {
          FERRY_INSTANCE: inst,
          FERRY_LOG_LEVEL: 'info',
        }),
      ),
    );
    engines.push(a, b);
    return [a, b];
  };

  /** What the instance of `pid` holds: open deliveries and unrouted messages leased to it. */
  async function heldBy(sql: pg.Client, pid: number): Promise<{ deliveries: string[]; messages: string[] }> {
    const like = `%:${pid}:%`;
    const d = await sql.query(
      `SELECT id FROM deliveries WHERE status IN ('pending', 'failed') AND lease_owner LIKE $1`,
      [like],
    );
    const m = await sql.query(
      `SELECT id FROM messages WHERE status IN ('received', 'transformed') AND lease_owner LIKE $1`,
      [like],
    );
    return { deliveries: d.rows.map((r) => r.id), messages: m.rows.map((r) => r.id) };
  }

  /** Waits until every delivery in `ids` (and every delivery of the messages `messages`) is delivered; ms taken. */
  async function deliveredWithin(
    sql: pg.Client,
    held: { deliveries: string[]; messages: string[] },
    capMs: number,
  ): Promise<number> {
    const t0 = Date.now();
    await waitFor(
      "the dead instance's work delivered",
      async () => {
        const d = await sql.query(
          `SELECT COUNT(*)::int AS n FROM deliveries WHERE id = ANY($1) AND status <> 'delivered'`,
          [held.deliveries],
        );
        const m = await sql.query(
          `SELECT COUNT(*)::int AS n FROM messages m WHERE m.id = ANY($1) AND (m.status <> 'delivered')`,
          [held.messages],
        );
        return d.rows[0].n === 0 && m.rows[0].n === 0;
      },
      capMs,
      100,
    );
    return Date.now() - t0;
  }

  it('a child process whose event loop is busy for three instance timeouts keeps its lease; SIGSTOPped as long, it loses it', async () => {
    const schema = `ferry_take_${randomBytes(4).toString('hex')}`;
    schemas.push(schema);
    const opts = { heartbeatMs: 500, instanceTimeoutMs: 2000 };
    const other = new PostgresMessageStore({ url: PG_URL, schema, logger: silentLogger() });
    await other.open();
    await other.insert([
      {
        sourceId: 'feed',
        contentType: 'application/hl7-v2',
        body: Buffer.from(adt('B1', 'P1', 1), 'latin1'),
        headers: { controlId: 'B1' },
      },
    ]);
    await other.startInstance('other', opts);
    // The child: a store of its own, registered, claims the message, then spins its event loop.
    const built = path.join(root, 'core/dist/index.js');
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const { PostgresMessageStore, silentLogger } = require(${JSON.stringify(built)});
         const s = new PostgresMessageStore({ url: ${JSON.stringify(PG_URL)}, schema: ${JSON.stringify(schema)}, logger: silentLogger() });
         (async () => {
           await s.open();
           await s.startInstance('busy', ${JSON.stringify(opts)});
           const got = await s.claimReceived('busy', 10, 60000);
           console.log('claimed ' + got.length);
           const end = Date.now() + 6000;
           while (Date.now() < end) {} // busy: no timer, no I/O callback runs on this thread
           console.log('spun');
           setInterval(() => {}, 1000);
         })().catch((e) => { console.error(e); process.exit(1); });`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor('the child claimed the message', () => out.includes('claimed 1'), 30_000);
      await waitFor('the child spun for 6 s', () => out.includes('spun'), 30_000);
      await sleep(1000); // the other's check runs again
      expect(await other.claimReceived('other', 10, 60_000)).toHaveLength(0);
      // Paused as long: its heartbeat stops too, and the lease is released.
      child.kill('SIGSTOP');
      const t0 = Date.now();
      let taken = 0;
      while (!taken && Date.now() - t0 < 10_000) {
        await sleep(100);
        taken = (await other.claimReceived('other', 10, 60_000)).length;
      }
      const tookMs = Date.now() - t0;
      child.kill('SIGCONT');
      console.log(
        `busy child kept its lease through a 6 s spin (instance timeout 2 s); SIGSTOPped, its lease was taken ${(tookMs / 1000).toFixed(2)} s later`,
      );
      expect(taken).toBe(1);
      expect(tookMs).toBeLessThan(opts.instanceTimeoutMs + 3 * opts.heartbeatMs + 1000);
    } finally {
      child.kill('SIGKILL');
      await other.close();
    }
  }, 60_000);

  it('SIGKILL: the other instance delivers everything the dead one held within 10 s (default 60 s lease)', async () => {
    const { cfg, sql } = await setUp('kill');
    const [a, b] = await start(cfg);
    try {
      await waitFor(
        'both instances delivering',
        () => (byInstance.a ?? 0) >= 20 && (byInstance.b ?? 0) >= 20,
        60_000,
        50,
      );
      // Killed while it holds work: on a loaded machine an instance can be between claims at any one
      // moment (its claims spaced after slow ones), and a kill then takes nothing over.
      let held = await heldBy(sql, a.child.pid!);
      await waitFor(
        'instance a holding work',
        async () => (held = await heldBy(sql, a.child.pid!)).deliveries.length + held.messages.length > 0,
        30_000,
        20,
      );
      await killHard(a);
      const tookMs = await deliveredWithin(sql, held, 30_000);
      console.log(
        `instance takeover (SIGKILL): the dead instance held ${held.deliveries.length} deliveries and ${held.messages.length} messages; the other delivered them ${(tookMs / 1000).toFixed(2)} s after the kill (lease 60 s, heartbeat 2 s, instance timeout 6 s)`,
      );
      expect(held.deliveries.length + held.messages.length).toBeGreaterThan(0);
      expect(tookMs).toBeLessThanOrEqual(10_000);
      expect(b.log()).toMatch(/instance found dead \(no heartbeat\): its leases released/);
      await waitFor('the whole backlog delivered', () => received.size >= N, 120_000, 100);
      const redelivered = [...received.values()].filter((n) => n > 1).length;
      expect(redelivered).toBeLessThanOrEqual(WORKERS);
      await stopGracefully(b);
    } finally {
      // a failure leaves no instance delivering the same control ids into the next test's counts
      await Promise.all([killHard(a), killHard(b)]);
      await sql.end();
    }
  }, 200_000);

  it('SIGSTOP until taken over, then SIGCONT: its late outcomes are dropped, nothing recorded twice, it beats again', async () => {
    const { cfg, sql } = await setUp('stop');
    const [a, b] = await start(cfg);
    try {
      await waitFor(
        'both instances delivering',
        () => (byInstance.a ?? 0) >= 20 && (byInstance.b ?? 0) >= 20,
        60_000,
        50,
      );
      a.child.kill('SIGSTOP');
      const stoppedAt = Date.now();
      const held = await heldBy(sql, a.child.pid!);
      const tookMs = await deliveredWithin(sql, held, 30_000);
      a.child.kill('SIGCONT');
      // Resumed: its calls in flight finish, their outcomes are refused by the lease fence.
      await waitFor('the whole backlog delivered', () => received.size >= N, 120_000, 100);
      await sleep(3000);
      console.log(
        `instance takeover (SIGSTOP): the paused instance held ${held.deliveries.length} deliveries and ${held.messages.length} messages; the other delivered them ${(tookMs / 1000).toFixed(2)} s after the pause; ` +
          `resumed after ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s in all, ${[...received.values()].filter((n) => n > 1).length} delivered twice`,
      );
      expect(tookMs).toBeLessThanOrEqual(10_000);
      // Still running, beating again.
      expect(a.child.exitCode).toBeNull();
      const beat = await sql.query(
        `SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint - heartbeat_at AS age FROM instances WHERE id LIKE $1`,
        [`%:${a.child.pid}:%`],
      );
      expect(Number(beat.rows[0].age)).toBeLessThan(5000);
      // Its late outcomes were not recorded over the other's (the same outcome already recorded is
      // left as is; another one would be dropped with a warning): one delivered event per delivery.
      expect(a.log()).not.toMatch(/"level":"error"/);
      const states = await sql.query(
        `SELECT status, COUNT(*)::int AS n FROM deliveries WHERE superseded = 0 GROUP BY status`,
      );
      expect(states.rows).toEqual([{ status: 'delivered', n: N }]);
      const events = await sql.query(
        `SELECT COUNT(*)::int AS n FROM message_events WHERE status = 'delivery:delivered'`,
      );
      expect(events.rows[0].n).toBe(N);
      // At most what it had in flight reached the sink twice.
      expect([...received.values()].filter((n) => n > 1).length).toBeLessThanOrEqual(WORKERS);
      expect(received.size).toBe(N);
      await Promise.all([stopGracefully(a), stopGracefully(b)]);
    } finally {
      await Promise.all([killHard(a), killHard(b)]);
      await sql.end();
    }
  }, 200_000);
});
