/**
 * Proof: an engine on PostgreSQL survives losing its database under load -- its connections
 * terminated (what a server restart, a failover or an administrator does), and the server
 * unreachable for five seconds: the process does not crash, every message it acknowledged is
 * delivered, and it is idle again within seconds of the database's return, not after a lease
 * period (results in hand are recorded again once the connection is back, not left leased).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import 'reflect-metadata';
import { Writable } from 'node:stream';
import { createLogger, Engine } from '@ferry/core';
import { startTcpProxy } from '../support/tcp-proxy';
import { dropSchema, PG_URL, pgReachable } from './support';



const hl7 = (n: number) =>
  Buffer.from(`MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|L${n}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||MRN${n % 40}^^^HOSP^MR||DOE^JANE||19800101|F\r`);

describe('an engine on PostgreSQL whose connections are cut under load', () => {
  // Its own schema, and its own application_name: the test cuts this engine's connections only.
  const tag = `ferry_cut_${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-pgcut-'));
  let reachable = false;

  beforeAll(async () => {
    reachable = await pgReachable();
    if (!reachable) console.warn(`skipped: PostgreSQL not reachable at ${PG_URL}`);
  });

  afterAll(async () => {
    if (reachable) await dropSchema(tag);
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * An engine on the store at `url` under load from 8 submitters; `disrupt` runs meanwhile. Returns
   * what was acknowledged, what reached the file sink, and how long after the load it was idle.
   */
  async function underLoad(name: string, url: string, disrupt: (engine: Engine) => Promise<void>) {
    const out = path.join(dir, name);
    // Log lines counted by level and message (the outage must be told, not flooded).
    const logs: Record<string, number> = {};
    const logger = createLogger(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const line of chunk.toString().split('\n').filter(Boolean)) {
            const { level, message } = JSON.parse(line);
            logs[`${level} ${message}`] = (logs[`${level} ${message}`] ?? 0) + 1;
          }
          cb();
        },
      }),
    );
    const engine = await Engine.create({
      logger,
      config: {
        store: { kind: 'postgres', url, schema: tag },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { out: { type: 'file', dir: out, format: 'ndjson', envelope: true } },
        routes: [{ id: 'all', to: ['out'] }],
        // The lease is a minute: being idle within seconds shows nothing waited for one.
        processing: { pollIntervalMs: 100, leaseMs: 60_000, transformWorkers: 0 },
        admin: { enabled: false },
      },
    });
    await engine.start();
    const acked = new Set<string>();
    let refused = 0;
    let stop = false;
    const submitter = async () => {
      while (!stop) {
        const n = next++;
        try {
          const [r] = await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: hl7(n) }]);
          if (r.stored) acked.add(`L${n}`);
        } catch {
          // Not acknowledged (a real client would send it again): not counted.
          refused++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const submitters = Array.from({ length: 8 }, submitter);
    // Load measured in acknowledged messages, not time (a slow or busy machine acknowledges
    // fewer per second): at least 200 before the disruption and 200 more after it.
    const until = async (n: number, capMs: number) => {
      const end = Date.now() + capMs;
      while (acked.size < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    };
    let before = 0;
    let after = 0;
    try {
      await until(200, 20_000);
      await new Promise((r) => setTimeout(r, 300));
      before = acked.size;
      await disrupt(engine);
      const atEnd = acked.size;
      await until(atEnd + 200, 20_000);
      after = acked.size - atEnd;
    } finally {
      stop = true;
      await Promise.all(submitters);
    }
    const t0 = Date.now();
    let ready: boolean;
    try {
      await engine.waitForIdle(40_000);
      ready = engine.readiness().ready;
    } finally {
      await engine.stop();
    }
    const idleMs = Date.now() - t0;
    const lines = readdirSync(out).flatMap((f) => readFileSync(path.join(out, f), 'utf8').split('\n').filter(Boolean));
    const delivered = new Set(lines.map((l) => JSON.parse(l).controlId as string));
    const missing = [...acked].filter((c) => !delivered.has(c));
    const problems = Object.entries(logs)
      .filter(([k]) => k.startsWith('warn ') || k.startsWith('error '))
      .reduce((n, [, v]) => n + v, 0);
    return { acked, before, after, refused, idleMs, lines: lines.length, delivered, missing, ready, logs, problems };
  }
  let next = 0;

  it('keeps running when its connections are terminated, delivers every acknowledged message and is idle again within seconds', async () => {
    if (!reachable) return;
    let cut = 0;
    const r = await underLoad('cut', `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}application_name=${tag}`, async () => {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      try {
        for (let i = 0; i < 3; i++) {
          const q = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()', [tag]);
          cut += q.rowCount ?? 0;
          await new Promise((res) => setTimeout(res, 300));
        }
      } finally {
        await admin.end();
      }
    });
    console.log(
      `connections terminated: ${cut} in 3 rounds; ${r.acked.size} acknowledged (${r.before} before, ${r.after} after the cuts), ${r.refused} refused meanwhile; ` +
        `idle ${r.idleMs} ms after the load; ${r.lines} lines for ${r.delivered.size} control ids`,
    );
    expect(cut).toBeGreaterThan(0);
    expect(r.before).toBeGreaterThanOrEqual(200);
    expect(r.after).toBeGreaterThanOrEqual(200);
    expect(r.missing).toEqual([]);
    expect(r.idleMs).toBeLessThan(15_000);
    expect(r.ready).toBe(true);
  }, 60_000);

  it('rides out the database being unreachable for 5 s: not ready meanwhile, everything acknowledged delivered soon after', async () => {
    if (!reachable) return;
    const upstream = new globalThis.URL(PG_URL);
    const proxy = await startTcpProxy(upstream.hostname, Number(upstream.port || 5432));
    let duringOutage: ReturnType<Engine['readiness']> | undefined;
    try {
      const url = `postgres://${upstream.username || 'postgres'}@127.0.0.1:${proxy.port}${upstream.pathname}`;
      const r = await underLoad('outage', url, async (engine) => {
        await proxy.cut();
        await new Promise((res) => setTimeout(res, 2000));
        duringOutage = engine.readiness();
        await new Promise((res) => setTimeout(res, 3000));
        await proxy.restore();
      });
      console.log(
        `database unreachable 5 s: ${r.acked.size} acknowledged (${r.before} before, ${r.after} after the outage), ${r.refused} refused meanwhile; ` +
          `idle ${r.idleMs} ms after the load; ${r.lines} lines for ${r.delivered.size} control ids; ` +
          `${r.problems} warn/error log lines: ${JSON.stringify(r.logs)}`,
      );
      // Told once each way, not once per poll for as long as it lasts.
      expect(r.logs['warn postgres unreachable']).toBe(1);
      expect(r.logs['info postgres reachable again']).toBeGreaterThanOrEqual(1);
      expect(r.problems).toBeLessThan(30);
      expect(duringOutage).toMatchObject({ ready: false, store: false });
      expect(r.before).toBeGreaterThanOrEqual(200);
      expect(r.after).toBeGreaterThanOrEqual(200);
      expect(r.refused).toBeGreaterThan(0);
      expect(r.missing).toEqual([]);
      expect(r.idleMs).toBeLessThan(15_000);
      expect(r.ready).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
