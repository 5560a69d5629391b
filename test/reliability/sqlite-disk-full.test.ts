/**
 * Proof: an engine on SQLite rides out its disk filling up under load. While nothing more fits,
 * new messages are refused (not acknowledged: the sender keeps them and sends again), the engine
 * reports itself not ready, and says so once; results already in hand (transformed batches,
 * outcomes of deliveries made) are recorded once space is back, so every acknowledged message is
 * delivered and the engine is idle within seconds -- not after a lease, with the messages it was
 * processing left leased. The disk is "full" through SQLite's own size limit (max_page_count),
 * which fails writes with the same SQLITE_FULL a full filesystem gives. (Checked by hand on a
 * 20 MB tmpfs filled with a file: the same outcome.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import 'reflect-metadata';
import type { Engine } from '@ferry/core';
import { cliBuilt, countingLogger, startOutageEngine, deliveredControlIds, sleep, startLoad } from './support';
import { requires } from '../support/requires';

const hl7 = (n: number) =>
  Buffer.from(
    `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|D${n}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||MRN${n % 40}^^^HOSP^MR||DOE^JANE||19800101|F\r` +
      `OBX|1|TX|NOTE^Note||${'x'.repeat(2000)}||||||F\r`,
  );

// The engine loads @ferry/plugin-hl7v2-mllp from its dist.
requires(cliBuilt)('an engine on SQLite whose disk fills up under load', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-diskfull-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses while full, is not ready meanwhile, delivers every acknowledged message and is idle within seconds after', async () => {
    const out = path.join(dir, 'out');
    const { logger, logs, problems } = countingLogger();
    const engine = await startOutageEngine({ kind: 'sqlite', path: path.join(dir, 'ferry.db') }, out, logger);
    const db = (engine.store as unknown as { db: Database.Database }).db;
    const load = startLoad(engine, hl7, (n) => `D${n}`);
    let before = 0;
    let during = 0;
    let after = 0;
    let readyDuring: ReturnType<Engine['readiness']> | undefined;
    try {
      await load.until(200, 20_000);
      before = load.acked.size;
      // The disk is full: not one more page.
      db.pragma(`max_page_count = ${Number(db.pragma('page_count', { simple: true }))}`);
      await sleep(1000);
      readyDuring = engine.readiness();
      await sleep(1000);
      during = load.acked.size - before;
      db.pragma('max_page_count = 1073741823');
      const atEnd = load.acked.size;
      await load.until(atEnd + 200, 20_000);
      after = load.acked.size - atEnd;
    } finally {
      await load.stop();
    }
    const t0 = Date.now();
    try {
      await engine.waitForIdle(40_000);
    } finally {
      await engine.stop();
    }
    const idleMs = Date.now() - t0;
    const delivered = deliveredControlIds(out);
    const missing = [...load.acked].filter((c) => !delivered.ids.has(c));
    console.log(
      `disk full 2 s: ${load.acked.size} acknowledged (${before} before, ${during} while full, ${after} after), refused ${JSON.stringify(load.refused)}; ` +
        `idle ${idleMs} ms after the load; ${delivered.lines} lines for ${delivered.ids.size} control ids; ${problems()} warn/error log lines: ${JSON.stringify(logs)}`,
    );
    expect(before).toBeGreaterThanOrEqual(200);
    expect(after).toBeGreaterThanOrEqual(200);
    expect(load.refused['FERRY_E_TRANSIENT_STORE_FULL']).toBeGreaterThan(0);
    expect(Object.keys(load.refused)).toEqual(['FERRY_E_TRANSIENT_STORE_FULL']);
    expect(readyDuring).toMatchObject({ ready: false, store: false });
    expect(logs['warn sqlite store cannot write']).toBe(1);
    expect(logs['info sqlite store writable again']).toBe(1);
    expect(missing).toEqual([]);
    expect(idleMs).toBeLessThan(15_000);
    expect(problems()).toBeLessThan(20);
  }, 90_000);
});
