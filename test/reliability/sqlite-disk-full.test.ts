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
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type Database from 'better-sqlite3';
import 'reflect-metadata';
import { createLogger, Engine } from '@ferry/core';
import { builtCli } from './support';

const hl7 = (n: number) =>
  Buffer.from(
    `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|D${n}|P|2.5.1\rEVN|A08|20250101120000\rPID|1||MRN${n % 40}^^^HOSP^MR||DOE^JANE||19800101|F\r` +
      `OBX|1|TX|NOTE^Note||${'x'.repeat(2000)}||||||F\r`,
  );

describe('an engine on SQLite whose disk fills up under load', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-diskfull-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses while full, is not ready meanwhile, delivers every acknowledged message and is idle within seconds after', async () => {
    if (!builtCli) {
      console.warn('skipped: build the packages first (npm run build)');
      return;
    }
    const out = path.join(dir, 'out');
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
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { out: { type: 'file', dir: out, format: 'ndjson', envelope: true } },
        routes: [{ id: 'all', to: ['out'] }],
        // The lease is a minute: being idle within seconds shows nothing waited for one.
        processing: { pollIntervalMs: 100, leaseMs: 60_000, transformWorkers: 0 },
        admin: { enabled: false },
      },
    });
    await engine.start();
    const db = (engine.store as unknown as { db: Database.Database }).db;
    const acked = new Set<string>();
    const refused: Record<string, number> = {};
    let next = 0;
    let stop = false;
    const submitter = async () => {
      while (!stop) {
        const n = next++;
        try {
          const [r] = await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: hl7(n) }]);
          if (r.stored) acked.add(`D${n}`);
        } catch (e) {
          // Not acknowledged (a real sender would send it again): not counted.
          const code = (e as { code?: string }).code ?? 'unknown';
          refused[code] = (refused[code] ?? 0) + 1;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const until = async (n: number, capMs: number) => {
      const end = Date.now() + capMs;
      while (acked.size < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    };
    const submitters = Array.from({ length: 8 }, submitter);
    let before = 0;
    let during = 0;
    let after = 0;
    let readyDuring: ReturnType<Engine['readiness']> | undefined;
    try {
      await until(200, 20_000);
      before = acked.size;
      // The disk is full: not one more page.
      db.pragma(`max_page_count = ${Number(db.pragma('page_count', { simple: true }))}`);
      await new Promise((r) => setTimeout(r, 1000));
      readyDuring = engine.readiness();
      await new Promise((r) => setTimeout(r, 1000));
      during = acked.size - before;
      db.pragma('max_page_count = 1073741823');
      const atEnd = acked.size;
      await until(atEnd + 200, 20_000);
      after = acked.size - atEnd;
    } finally {
      stop = true;
      await Promise.all(submitters);
    }
    const t0 = Date.now();
    try {
      await engine.waitForIdle(40_000);
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
    console.log(
      `disk full 2 s: ${acked.size} acknowledged (${before} before, ${during} while full, ${after} after), refused ${JSON.stringify(refused)}; ` +
        `idle ${idleMs} ms after the load; ${lines.length} lines for ${delivered.size} control ids; ${problems} warn/error log lines: ${JSON.stringify(logs)}`,
    );
    expect(before).toBeGreaterThanOrEqual(200);
    expect(after).toBeGreaterThanOrEqual(200);
    expect(refused['FERRY_E_TRANSIENT_STORE_FULL']).toBeGreaterThan(0);
    expect(Object.keys(refused)).toEqual(['FERRY_E_TRANSIENT_STORE_FULL']);
    expect(readyDuring).toMatchObject({ ready: false, store: false });
    expect(logs['warn sqlite store cannot write']).toBe(1);
    expect(logs['info sqlite store writable again']).toBe(1);
    expect(missing).toEqual([]);
    expect(idleMs).toBeLessThan(15_000);
    expect(problems).toBeLessThan(20);
  }, 90_000);
});
