import { createLogger, PostgresMessageStore, SqliteMessageStore, silentLogger, type MessageStore } from '@ferry/core';
import { Writable } from 'node:stream';
import { Client } from 'pg';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EpicSimulator, epicVital, seedEpicSandbox } from '../../../../test/simulators/epic/epic-simulator';
import { connConfig, testKey } from '@ferry/fhir-vendor-kit';
import { sourceHarness } from '@ferry/testkit';
import { EpicBulkSource } from './epic-bulk-export.source';
import { EpicPollSource } from './epic-fhir-poll.source';
import type { BulkSourceConfig, PollSourceConfig } from '@ferry/fhir-vendor-kit';

describe('epic sources on a real SQLite store', () => {
  const sim = new EpicSimulator({
    pageSize: 20,
    bulkPollsUntilDone: 1,
    bulkRetryAfterSec: 0,
    bulkMaxLinesPerFile: 1000,
  });
  let dir: string;
  let key: Awaited<ReturnType<typeof testKey>>;
  let patientId: string;
  const stores: MessageStore[] = [];
  const PG_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const pgSchema = `ferry_epic_${randomBytes(4).toString('hex')}`;
  let pgUsed = false;
  const openStore = async (kind: 'sqlite' | 'postgres' = 'sqlite') => {
    const s =
      kind === 'sqlite'
        ? new SqliteMessageStore({ path: path.join(dir, 'ferry.db'), logger: silentLogger() })
        : new PostgresMessageStore({ url: PG_URL, schema: pgSchema, logger: silentLogger(), poolSize: 2 });
    if (kind === 'postgres') pgUsed = true;
    await s.open();
    stores.push(s);
    return s;
  };
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-epic-src-'));
    key = await testKey('src');
    sim.registerClient('src-client', key.jwks);
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
  });
  afterAll(async () => {
    for (const s of stores) if (s.isOpen()) await s.close();
    if (pgUsed) {
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`);
      await c.end();
    }
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const base = () => connConfig({ baseUrl: sim.baseUrl, clientId: 'src-client' }, { privateKey: key.pem, kid: 'src' });

  describe('polling', () => {
    const cfg = (): PollSourceConfig => ({
      ...base(),
      intervalMs: 60_000,
      patients: [patientId],
      resources: [{ type: 'Patient' }, { type: 'Observation', category: 'vital-signs' }],
      pageSize: 20,
      initialSince: '',
    });

    it('stores each resource once, commits the checkpoint with the messages, then only picks up changes', async () => {
      for (let i = 0; i < 45; i++) sim.store.put(epicVital(patientId, i));
      const store = await openStore();
      const { ctx } = sourceHarness(store, 'epic-poll', cfg());
      const src = new EpicPollSource(ctx);
      expect(await src.cycle()).toBe(46);
      const msgs = await store.listMessages({ sourceId: 'epic-poll', limit: 1000 });
      expect(msgs).toHaveLength(46);
      expect(msgs[0].contentType).toBe('application/vnd.epic.fhir+json');
      expect(msgs.find((m) => m.headers.messageType === 'Observation')?.headers.orderingKey).toBe(
        `Patient/epic-${patientId}`,
      );
      const cp = JSON.parse((await store.getCheckpoint('epic-poll', 'poll:Observation:vital-signs'))!);
      expect(cp.since).toMatch(/^\d{4}-/);
      // Nothing changed: nothing new (the ids at the boundary instant are skipped).
      expect(await src.cycle()).toBe(0);
      // One vital updated: exactly that one.
      await new Promise((r) => setTimeout(r, 5));
      sim.store.put({ ...epicVital(patientId, 3), status: 'amended' });
      expect(await src.cycle()).toBe(1);
      const calls = sim.requests.filter((r) => r.path.endsWith('/Observation') && !r.url.includes('sessionID'));
      expect(calls.at(-1)!.url).toContain('_lastUpdated=ge');
    });

    it('filters by lastUpdated itself when the server ignores _lastUpdated (Epic 4122)', async () => {
      const store = await openStore();
      const { ctx } = sourceHarness(store, 'epic-poll3', {
        ...cfg(),
        resources: [{ type: 'Observation', category: 'vital-signs', params: { issued: 'ge2000-01-01' } }],
      });
      const src = new EpicPollSource(ctx);
      const first = await src.cycle();
      expect(first).toBeGreaterThan(0);
      // Make the simulator ignore _lastUpdated on Observation, as Epic does for unsupported params.
      const orig = (sim as any).search.bind(sim);
      (sim as any).search = (res: any, url: URL, type: string) => {
        url.searchParams.delete('_lastUpdated');
        return orig(res, url, type);
      };
      try {
        expect(await src.cycle()).toBe(0);
      } finally {
        (sim as any).search = orig;
      }
    });

    it('refuses at startup a resource spec Epic would reject (Observation without category)', async () => {
      const store = await openStore();
      const { ctx } = sourceHarness(store, 'epic-bad', { ...cfg(), resources: [{ type: 'Observation' }] });
      expect(() => new EpicPollSource(ctx)).toThrow(/resources\[0\]: Epic Observation searches need a category/);
    });

    it('logs a run of failed cycles once (naming the failing resource types) and its end once', async () => {
      const store = await openStore();
      const lines: { level: string; message: string; failures?: number; error?: string }[] = [];
      const conn = connConfig(
        { baseUrl: sim.baseUrl, clientId: 'src-client', http: { timeoutMs: 5000, maxAttempts: 1, maxRetryAfterMs: 0 } },
        { privateKey: key.pem, kid: 'src' },
      );
      const ctx = {
        ...sourceHarness(store, 'epic-outage', { ...cfg(), ...conn, intervalMs: 20 }).ctx,
        logger: createLogger(
          { level: 'info' },
          new Writable({
            write: (c: Buffer, _e, cb) => (
              lines.push(
                ...c
                  .toString()
                  .split('\n')
                  .filter(Boolean)
                  .map((l) => JSON.parse(l)),
              ),
              cb()
            ),
          }),
        ),
      };
      // Observations fail (a scope revoked, the server struggling), Patients still come.
      sim.server.inject({ match: '/Observation', status: 503, times: 1_000_000 });
      const src = new EpicPollSource(ctx);
      try {
        await src.start();
        await new Promise((r) => setTimeout(r, 600));
        // each resource type's state, as /metrics and the admin API show it (after at least 3 failed cycles)
        const failures = () => (src.describe().resourceTypes[1] as { consecutiveFailures: number }).consecutiveFailures;
        for (let i = 0; i < 150 && failures() < 3; i++) await new Promise((r) => setTimeout(r, 20));
        expect(src.stats()).toMatchObject({ 'Patient.up': 1, 'Observation:vital-signs.up': 0 });
        expect(src.describe().resourceTypes).toEqual([
          expect.objectContaining({ spec: 'Patient', state: 'ok', consecutiveFailures: 0 }),
          expect.objectContaining({
            spec: 'Observation:vital-signs',
            state: 'failing',
            lastErrorCode: 'FERRY_E_VENDOR_UNAVAILABLE',
          }),
        ]);
        sim.server.clearFaults();
        for (let i = 0; i < 100 && !lines.some((l) => l.message.endsWith('recovered')); i++)
          await new Promise((r) => setTimeout(r, 20));
      } finally {
        await src.stop();
      }
      const told = lines.filter((l) => l.level !== 'debug' && l.message.startsWith('epic source cycle failed'));
      expect(told.map((l) => `${l.level} ${l.message}`)).toEqual([
        'error epic source cycle failed',
        'info epic source cycle failed: recovered',
      ]);
      expect(told[0].error).toMatch(/1 of 2 resource types failed to poll \(Observation:vital-signs\)/);
      expect(told[1].failures).toBeGreaterThanOrEqual(3);
      expect(lines.filter((l) => l.message.includes('poll of a resource type failed'))).toEqual([]);
    });

    it('does not move the checkpoint when storing the page fails', async () => {
      const store = await openStore();
      const before = await store.getCheckpoint('epic-poll2', 'poll:Observation:vital-signs');
      const { ctx } = sourceHarness(store, 'epic-poll2', cfg(), { killOnSubmit: 1 });
      const src = new EpicPollSource(ctx);
      await expect(src.cycle()).rejects.toThrow('killed');
      expect(await store.getCheckpoint('epic-poll2', 'poll:Observation:vital-signs')).toBe(before);
      expect(await store.listMessages({ sourceId: 'epic-poll2', limit: 10 })).toHaveLength(0);
    });
  });

  describe('bulk export', () => {
    const cfg = (): BulkSourceConfig => ({
      ...base(),
      bulk: {
        level: 'group',
        groupId: 'g-resume',
        types: ['Patient', 'Observation'],
        typeFilter: [],
        intervalMs: 0,
        pollMinMs: 20,
        pollMaxMs: 2000,
        batchSize: 250,
        deleteWhenDone: true,
      },
    });

    it.each(['sqlite', 'postgres'] as const)(
      '%s: killed mid-export, a new source on the same store resumes the job: nothing lost, nothing twice; next export uses _since',
      async (kind) => {
        const id = `epic-bulk-${kind}`;
        const kicks0 = sim.requests.filter((r) => r.path.endsWith('/$export')).length;
        sim.groups.set('g-resume', [patientId]);
        sim.addSyntheticVitals(3000, patientId);
        const storeA = await openStore(kind);
        const a = sourceHarness(storeA, id, cfg(), { killOnSubmit: 6 });
        const srcA = new EpicBulkSource(a.ctx);
        await expect(srcA.cycle()).rejects.toThrow('killed');
        const real = sim.store.all('Observation').length; // the polling test's vitals are in the group too
        const total = 1 + real + 3000;
        const storedA = (await storeA.listMessages({ sourceId: id, limit: 10_000 })).length;
        // Files: Patient (1 line), the real vitals, then 3 synthetic files of 1000. Killed on the 6th
        // batch: Patient + real vitals + 3 batches of 250 of the first synthetic file are stored.
        expect(storedA).toBe(1 + real + 750);
        const job = JSON.parse((await storeA.getCheckpoint(id, 'bulk:job'))!);
        expect(job.file).toBe(2);
        expect(job.line).toBe(750);
        await storeA.close();

        const storeB = await openStore(kind);
        const b = sourceHarness(storeB, id, cfg());
        const srcB = new EpicBulkSource(b.ctx);
        const stored = await srcB.cycle();
        expect(stored + storedA).toBe(total);
        const all = await storeB.listMessages({ sourceId: id, limit: 10_000 });
        expect(all).toHaveLength(total);
        expect(new Set(all.map((m) => m.headers.controlId)).size).toBe(total);
        expect(sim.requests.filter((r) => r.path.endsWith('/$export'))).toHaveLength(kicks0 + 1);
        const since = await storeB.getCheckpoint(id, 'bulk:since');
        const firstJob = [...sim.jobs.values()].at(-1)!;
        expect(since).toBe(firstJob.transactionTime);
        expect(firstJob.deleted).toBe(true);
        expect(await storeB.getCheckpoint(id, 'bulk:job')).toBe('');

        // An incremental export: _since = the last transactionTime; only what changed after it.
        await new Promise((r) => setTimeout(r, 5));
        sim.store.put(epicVital(patientId, 999));
        expect(await srcB.cycle()).toBe(1);
        const kick = sim.requests.filter((r) => r.path.endsWith('/$export')).at(-1)!;
        expect(new URL(kick.url).searchParams.get('_since')).toBe(since);
      },
    );
  });

  describe("resources without meta.versionId / lastUpdated (the reference's Epic examples, 3.6, carry none)", () => {
    const pid = 'eNoMetaPatient0000000001';
    const vital = (value: number) => ({
      ...epicVital(pid, 1),
      id: 'eNoMeta.obs.1',
      valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
    });
    const values = async (store: MessageStore, id: string) =>
      Promise.all(
        (await store.listMessages({ sourceId: id, limit: 100 })).map(
          async (m) => JSON.parse((await store.getMessage(m.id, { body: true }))!.body!.toString()).valueQuantity.value,
        ),
      );

    it('polling: every amended version is a new message (control id with a content digest), an unchanged re-read a dropped duplicate', async () => {
      sim.store.put(vital(20), { unversioned: true });
      const store = await openStore();
      const { ctx } = sourceHarness(
        store,
        'epic-nometa',
        {
          ...base(),
          intervalMs: 60_000,
          patients: [pid],
          resources: [{ type: 'Observation', category: 'vital-signs' }],
          pageSize: 20,
          initialSince: '',
        } satisfies PollSourceConfig,
        { duplicates: 'ignore' },
      );
      const src = new EpicPollSource(ctx);
      await src.cycle();
      await src.cycle(); // re-read, unchanged
      expect(await values(store, 'epic-nometa')).toEqual([20]);
      sim.store.put(vital(171), { unversioned: true });
      await src.cycle();
      await src.cycle();
      expect(await values(store, 'epic-nometa')).toEqual([20, 171]);
      const ids = (await store.listMessages({ sourceId: 'epic-nometa', limit: 100 })).map((m) => m.headers.controlId);
      expect(ids).toEqual([
        expect.stringMatching(/^Observation\/eNoMeta\.obs\.1\/_history\/h:[0-9a-f]{16}$/),
        expect.stringMatching(/^Observation\/eNoMeta\.obs\.1\/_history\/h:/),
      ]);
      expect(ids[0]).not.toBe(ids[1]);
    });

    it('bulk: an incremental export re-exporting an amended, unversioned resource stores the new version once', async () => {
      sim.groups.set('g-nometa', [pid]);
      delete sim.synthetic.Observation; // the volume vitals of the resume test are added to every full export
      const store = await openStore();
      const cfg: BulkSourceConfig = {
        ...base(),
        bulk: {
          level: 'group',
          groupId: 'g-nometa',
          types: ['Observation'],
          typeFilter: [],
          intervalMs: 0,
          pollMinMs: 20,
          pollMaxMs: 2000,
          batchSize: 250,
          deleteWhenDone: true,
        },
      };
      const { ctx } = sourceHarness(store, 'epic-bulk-nometa', cfg, { duplicates: 'ignore' });
      const src = new EpicBulkSource(ctx);
      await src.cycle();
      expect(await values(store, 'epic-bulk-nometa')).toEqual([171]);
      await new Promise((r) => setTimeout(r, 5));
      sim.store.put(vital(172), { unversioned: true });
      await src.cycle();
      expect(await values(store, 'epic-bulk-nometa')).toEqual([171, 172]);
    });
  });
});
