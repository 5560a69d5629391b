/**
 * Proof: an engine on PostgreSQL survives its connections being cut under load (what a server
 * restart, a failover or an administrator does): the process does not crash, every message it
 * acknowledged is delivered, and it is idle again within seconds, not after a lease period
 * (results in hand are recorded again once the connection is back, not left leased).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import 'reflect-metadata';
import { Engine, silentLogger } from '@ferry/core';

const PG_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

async function pgReachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.end();
    return true;
  } catch {
    return false;
  }
}

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
    if (reachable) {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${tag} CASCADE`);
      await c.end();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps running, delivers every acknowledged message and is idle again within seconds', async () => {
    if (!reachable) return;
    const out = path.join(dir, 'out');
    const engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'postgres', url: `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}application_name=${tag}`, schema: tag },
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
    let next = 0;
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
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    let cut = 0;
    try {
      await new Promise((r) => setTimeout(r, 800));
      for (let i = 0; i < 3; i++) {
        const r = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()', [tag]);
        cut += r.rowCount ?? 0;
        await new Promise((res) => setTimeout(res, 300));
      }
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      stop = true;
      await Promise.all(submitters);
      await admin.end();
    }
    const t0 = Date.now();
    try {
      await engine.waitForIdle(20_000);
    } finally {
      await engine.stop();
    }
    const idleMs = Date.now() - t0;
    const lines = readdirSync(out).flatMap((f) => readFileSync(path.join(out, f), 'utf8').split('\n').filter(Boolean));
    const delivered = new Set(lines.map((l) => JSON.parse(l).controlId as string));
    const missing = [...acked].filter((c) => !delivered.has(c));
    console.log(
      `connection cut: ${cut} connections terminated in 3 rounds; ${acked.size} acknowledged, ${refused} refused while cut; ` +
        `idle ${idleMs} ms after the load; ${lines.length} lines for ${delivered.size} control ids`,
    );
    expect(cut).toBeGreaterThan(0);
    expect(acked.size).toBeGreaterThan(500);
    expect(missing).toEqual([]);
    expect(idleMs).toBeLessThan(15_000);
  }, 60_000);
});
