/**
 * Proof: several engine processes share one PostgreSQL store. 5,000 queued messages are drained by
 * two processes (the built CLI) into an idempotency-checking HTTP sink: while both are healthy no
 * delivery is made twice and both take part; per-patient order holds throughout; one is killed
 * with SIGKILL mid-way and the other finishes, taking over its leased work once the leases expire.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PostgresMessageStore, silentLogger } from '@ferry/core';
import {
  adt,
  cliBuilt,
  dropSchema,
  killHard,
  PG_URL,
  startEngine,
  stopGracefully,
  waitFor,
  type EngineProcess,
} from './support';
import { pgRequirement, requires } from '../support/requires';

const N = Number(process.env.FERRY_RELIABILITY_MESSAGES ?? 5000);
const PATIENTS = 100;
const LEASE_MS = 3000;
const WORKERS = 8;

requires(pgRequirement(), cliBuilt)('two engine processes on one PostgreSQL store', () => {
  const schema = `ferry_rel_${randomBytes(4).toString('hex')}`;
  const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-two-'));
  const engines: EngineProcess[] = [];
  let server: Server | undefined;

  afterAll(async () => {
    for (const e of engines) await killHard(e);
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server?.closeAllConnections();
    await dropSchema(schema);
    rmSync(dir, { recursive: true, force: true });
  });

  it(`drain ${N} queued messages: exactly once while both run, per-patient order kept, the survivor finishes after a SIGKILL`, async () => {
    // The idempotency-checking sink: records each control id, by which instance, in arrival order.
    const received = new Map<string, number>();
    const byInstance: Record<string, number> = {};
    const lastPerPatient = new Map<number, number>();
    const orderViolations: string[] = [];
    let duplicates = 0;
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const env = JSON.parse(Buffer.concat(chunks).toString()) as { controlId: string };
          const i = Number(env.controlId.slice(1));
          const patient = i % PATIENTS;
          const prev = lastPerPatient.get(patient) ?? -1;
          if (i < prev) orderViolations.push(`patient ${patient}: ${i} after ${prev}`);
          lastPerPatient.set(patient, Math.max(prev, i));
          const n = (received.get(env.controlId) ?? 0) + 1;
          received.set(env.controlId, n);
          if (n > 1) duplicates++;
          const inst = String(req.headers['x-instance']);
          byInstance[inst] = (byInstance[inst] ?? 0) + 1;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        } catch {
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const sinkUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/in`;

    // Queue N messages (as if received while no engine ran).
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
    const store = new PostgresMessageStore({ url: PG_URL, schema, logger: silentLogger() });
    await store.open();
    for (let o = 0; o < N; o += 500) {
      await store.insert(
        Array.from({ length: Math.min(500, N - o) }, (_, k) => {
          const i = o + k;
          return {
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
          };
        }),
      );
    }
    await store.close();

    const cfg = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      [
        `store: { kind: postgres, url: '${url}' }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        'admin: { enabled: false }',
        'log: { level: warn }',
        // 3 s leases and the default batch size (64): a batch that takes longer than its lease on a loaded
        // machine keeps its leases (renewed while it is processed) and its worker (replaced only when it
        // finishes no message for a quarter of the lease)
        `processing: { leaseMs: ${LEASE_MS}, pollIntervalMs: 100, deliveryWorkers: ${WORKERS} }`,
        'sources:',
        '  feed: { type: mllp, host: 127.0.0.1, port: 0 }',
        'sinks:',
        `  out: { type: http, url: '${sinkUrl}', envelope: true, headers: { X-Instance: '\${FERRY_INSTANCE}' }, retry: { initialDelayMs: 200, maxDelayMs: 1000 } }`,
        'routes:',
        '  - { id: all, from: [feed], to: [out], ordering: strict }',
        '',
      ].join('\n'),
    );
    const t0 = Date.now();
    const [a, b] = await Promise.all(
      ['a', 'b'].map((inst) =>
        startEngine(cfg, dir, /engine started|mllp listener started/, 30_000, {
          FERRY_INSTANCE: inst,
          FERRY_LOG_LEVEL: 'info',
        }),
      ),
    );
    engines.push(a, b);

    // Both healthy: exactly once.
    await waitFor('half of the backlog delivered', () => received.size >= N / 2, 120_000, 100);
    const beforeKill = { distinct: received.size, duplicates, byInstance: { ...byInstance } };
    await killHard(a);
    const killedAt = Date.now();
    expect(beforeKill.duplicates).toBe(0);
    expect(beforeKill.byInstance.a ?? 0).toBeGreaterThan(N / 20);
    expect(beforeKill.byInstance.b ?? 0).toBeGreaterThan(N / 20);

    // The survivor finishes, including what the dead one had leased.
    await waitFor('the whole backlog delivered', () => received.size >= N, 150_000, 100);
    const secs = (Date.now() - t0) / 1000;
    await stopGracefully(b);

    expect(received.size).toBe(N);
    expect(orderViolations).toEqual([]);
    // After the kill, at most what the dead instance had in flight is delivered again.
    expect(duplicates).toBeLessThanOrEqual(WORKERS);

    const check = new PostgresMessageStore({ url: PG_URL, schema, logger: silentLogger() });
    await check.open();
    const stats = await check.stats();
    await check.close();
    expect(stats.deliveries).toEqual({ delivered: N });
    console.log(
      `two-instance proof: ${N} queued messages, ${PATIENTS} patients; before the kill ${beforeKill.distinct} delivered exactly once ` +
        `(a: ${beforeKill.byInstance.a}, b: ${beforeKill.byInstance.b}); instance a SIGKILLed, b finished ${((Date.now() - killedAt) / 1000).toFixed(1)} s later ` +
        `with ${duplicates} redelivered (a's in-flight work after its ${LEASE_MS} ms leases expired); per-patient order held; ${(N / secs).toFixed(0)} msgs/s overall`,
    );
  }, 200_000);
});
