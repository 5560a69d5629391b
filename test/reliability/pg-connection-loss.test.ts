/**
 * Proof: an engine on PostgreSQL survives losing its database under load -- its connections
 * terminated (what a server restart, a failover or an administrator does), and the server
 * unreachable for five seconds: the process does not crash, every message it acknowledged is
 * delivered, and it is idle again within seconds of the database's return, not after a lease
 * period (results in hand are recorded again once the connection is back, not left leased).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import 'reflect-metadata';
import type { Engine } from '@ferry/core';
import { startTcpProxy } from '../support/tcp-proxy';
import {
  cliBuilt,
  countingLogger,
  startOutageEngine,
  deliveredControlIds,
  dropSchema,
  PG_URL,
  sleep,
  startLoad,
} from './support';
import { pgRequirement, requires } from '../support/requires';

const hl7 = (n: number) =>
  Buffer.from(
    `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|L${n}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||MRN${n % 40}^^^HOSP^MR||DOE^JANE||19800101|F\r`,
  );

// The engine loads @ferry/plugin-hl7v2-mllp from its dist: it needs the build as well as PostgreSQL.
requires(pgRequirement(), cliBuilt)('an engine on PostgreSQL whose connections are cut under load', () => {
  // Its own schema, and its own application_name: the test cuts this engine's connections only.
  const tag = `ferry_cut_${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-pgcut-'));

  afterAll(async () => {
    await dropSchema(tag);
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * An engine on the store at `url` under load from 8 submitters; `disrupt` runs meanwhile. Returns
   * what was acknowledged, what reached the file sink, and how long after the load it was idle.
   */
  async function underLoad(name: string, url: string, disrupt: (engine: Engine) => Promise<void>) {
    const out = path.join(dir, name);
    const { logger, logs, problems } = countingLogger();
    const engine = await startOutageEngine({ kind: 'postgres', url, schema: tag }, out, logger);
    // Both tests use one schema: their control ids must not repeat.
    const load = startLoad(engine, hl7, (n) => `L${n}`, { first: next });
    let before = 0;
    let after = 0;
    try {
      // At least 200 acknowledged before the disruption and 200 more after it.
      await load.until(200, 20_000);
      await sleep(300);
      before = load.acked.size;
      await disrupt(engine);
      const atEnd = load.acked.size;
      await load.until(atEnd + 200, 20_000);
      after = load.acked.size - atEnd;
    } finally {
      await load.stop();
      next = load.next();
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
    const { lines, ids: delivered } = deliveredControlIds(out);
    const missing = [...load.acked].filter((c) => !delivered.has(c));
    return {
      acked: load.acked,
      before,
      after,
      refused: load.refusedCount(),
      idleMs,
      lines,
      delivered,
      missing,
      ready,
      logs,
      problems: problems(),
    };
  }
  let next = 0;

  it('keeps running when its connections are terminated, delivers every acknowledged message and is idle again within seconds', async () => {
    let cut = 0;
    const r = await underLoad(
      'cut',
      `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}application_name=${tag}`,
      async () => {
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        try {
          for (let i = 0; i < 3; i++) {
            const q = await admin.query(
              'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
              [tag],
            );
            cut += q.rowCount ?? 0;
            await new Promise((res) => setTimeout(res, 300));
          }
        } finally {
          await admin.end();
        }
      },
    );
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
