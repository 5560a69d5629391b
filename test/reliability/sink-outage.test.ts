/**
 * Proof: a sink outage under load loses nothing and keeps per-patient order. The FHIR server is
 * down for 30 s while ADT updates keep arriving over MLLP at a real engine process; deliveries
 * wait and retry; after it returns everything is delivered and, for every patient, the last ADT
 * update is what the server holds (a later update never overtook an earlier one).
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Patient } from '@medplum/fhirtypes';
import { startFhirServer, type FhirTestServer } from '../support';
import {
  adt,
  cliBuilt,
  freePort,
  killHard,
  ResendingMllpSender,
  sleep,
  startEngine,
  stopGracefully,
  waitFor,
  type EngineProcess,
} from './support';
import { requires } from '../support/requires';

const OUTAGE_MS = Number(process.env.FERRY_RELIABILITY_OUTAGE_MS ?? 30_000);
const PATIENTS = 40;
const BEFORE = 80;
const DURING = 200;
const AFTER = 40;
const TOTAL = BEFORE + DURING + AFTER;

const d = requires(cliBuilt);

d('FHIR sink outage under load', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-outage-'));
  const dbFile = path.join(dir, 'ferry.db');
  let fhir: FhirTestServer | undefined;
  let engine: EngineProcess | undefined;
  const senders: ResendingMllpSender[] = [];

  afterAll(async () => {
    senders.forEach((s) => s.close());
    if (engine) await killHard(engine);
    await fhir?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Counts straight from the engine's SQLite store (WAL: readers do not block the engine). */
  function counts(): {
    messages: Record<string, number>;
    deliveries: Record<string, number>;
    retried: number;
    failures: number;
    probes: number;
  } {
    const db = new Database(dbFile, { readonly: true, fileMustExist: true });
    try {
      const m = db.prepare('SELECT status, COUNT(*) AS n FROM messages GROUP BY status').all() as {
        status: string;
        n: number;
      }[];
      const dl = db
        .prepare('SELECT status, COUNT(*) AS n FROM deliveries WHERE superseded = 0 GROUP BY status')
        .all() as { status: string; n: number }[];
      const r = db.prepare('SELECT COUNT(*) AS n FROM deliveries WHERE attempts > 1').get() as { n: number };
      const f = db
        .prepare(
          `SELECT COALESCE(SUM(CASE WHEN detail LIKE '%(probe)' THEN 0 ELSE 1 END), 0) AS failures, COALESCE(SUM(CASE WHEN detail LIKE '%(probe)' THEN 1 ELSE 0 END), 0) AS probes FROM message_events WHERE status = 'delivery:failed'`,
        )
        .get() as { failures: number; probes: number };
      return {
        messages: Object.fromEntries(m.map((x) => [x.status, x.n])),
        deliveries: Object.fromEntries(dl.map((x) => [x.status, x.n])),
        retried: r.n,
        ...f,
      };
    } finally {
      db.close();
    }
  }

  it(`holds and retries deliveries through a ${OUTAGE_MS / 1000} s outage; the last update per patient wins`, async () => {
    // Resource validation off: this proof is about delivery, and validation would make the in-test server the bottleneck.
    fhir = await startFhirServer({ validate: false });
    const port = await freePort();
    const cfg = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      [
        `store: { kind: sqlite, path: ${dbFile} }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        'admin: { enabled: false }',
        'processing: { pollIntervalMs: 50, deliveryWorkers: 8 }',
        'sources:',
        `  feed: { type: mllp, host: 127.0.0.1, port: ${port}, duplicates: { policy: ignore, windowMs: 3600000 } }`,
        'sinks:',
        // Three attempts 250-500 ms apart: the outage would kill every delivery, but for the
        // circuit breaker (defaults: paused after 5 failures in a row, probed after 5, 10, 20 s).
        `  fhir: { type: fhir, baseUrl: '${fhir.baseUrl}', timeoutMs: 5000, retry: { initialDelayMs: 250, maxDelayMs: 2000, maxAttempts: 3, maxAgeMs: 3600000 } }`,
        'routes:',
        '  - { id: adt, from: [feed], to: [fhir], ordering: strict }',
        '',
      ].join('\n'),
    );
    engine = await startEngine(cfg, dir, /mllp listener started/);
    const t0 = Date.now();
    const trace = (what: string) =>
      process.env.FERRY_RELIABILITY_TRACE && console.warn(`${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);

    const last = new Map<string, number>();
    let next = 0;
    const sender = new ResendingMllpSender(() => port, 5000);
    senders.push(sender);
    const sendUpTo = async (count: number, spreadMs: number) => {
      const start = Date.now();
      const first = next;
      while (next < count) {
        const i = next++;
        const mrn = `P${i % PATIENTS}`;
        await sender.send(adt(`O${i}`, mrn, i), `O${i}`);
        last.set(mrn, i);
        const due = start + ((i - first + 1) / (count - first)) * spreadMs; // pace the load over the window
        if (due > Date.now()) await sleep(due - Date.now());
      }
    };

    await sendUpTo(BEFORE, 0);
    trace(`sent ${next}: ${JSON.stringify(counts())}`);
    await fhir.pause();
    const downAt = Date.now();
    await sendUpTo(BEFORE + DURING, OUTAGE_MS * 0.9);
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
    // While down: every message kept, deliveries waiting (failed with a next attempt) -- none dead.
    const during = counts();
    trace(`outage over, sent ${next}: ${JSON.stringify(during)}`);
    expect(Object.values(during.messages).reduce((a, b) => a + b, 0)).toBe(BEFORE + DURING);
    expect(during.deliveries.dead ?? 0).toBe(0);
    expect(during.deliveries.failed ?? 0).toBeGreaterThan(0);
    // Paused: the calls in flight when it went down failed (and counted), then a probe now and then.
    expect(during.failures).toBeGreaterThan(0);
    expect(during.failures).toBeLessThanOrEqual(16);
    expect(during.probes).toBeGreaterThan(0);
    expect(during.probes).toBeLessThanOrEqual(Math.ceil(OUTAGE_MS / 5000));
    const outageSecs = (Date.now() - downAt) / 1000;
    const requestsBefore = fhir.requests.length;
    await fhir.resume();
    await sendUpTo(TOTAL, 0);
    trace(`sent ${next}: ${JSON.stringify(counts())}`);
    await waitFor('every delivery done', () => (counts().deliveries.delivered ?? 0) === TOTAL, 90_000, 250);
    const done = counts();
    trace(`done: ${JSON.stringify(done)}`);
    await stopGracefully(engine);

    expect(done.messages).toEqual({ delivered: TOTAL });
    expect(done.deliveries).toEqual({ delivered: TOTAL });
    const patients = await fhir.search<Patient>('Patient', { _count: '1000' });
    expect(patients).toHaveLength(PATIENTS);
    const wrong: string[] = [];
    for (const p of patients) {
      const mrn = p.identifier?.find((i) => i.value?.startsWith('P'))?.value ?? '?';
      const want = `V${String(last.get(mrn)).padStart(4, '0')}`;
      const got = p.name?.[0]?.given?.[0];
      if (got !== want) wrong.push(`${mrn}: ${got} != ${want}`);
    }
    expect(wrong).toEqual([]);
    console.log(
      `sink outage proof: ${TOTAL} ADT updates for ${PATIENTS} patients over MLLP; FHIR server down ${outageSecs.toFixed(0)} s while ${DURING} arrived; ` +
        `${done.retried} deliveries needed more than one attempt (maxAttempts 3): the sink was paused after ${during.failures} failed attempts and probed ${during.probes} times; ` +
        `${requestsBefore} FHIR requests before the outage ended, ${fhir.requests.length} in all; ` +
        `all delivered ${((Date.now() - downAt) / 1000 - outageSecs).toFixed(1)} s after the server returned; the last update won for every patient`,
    );
  }, 170_000);
});
