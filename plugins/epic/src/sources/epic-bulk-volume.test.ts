import { SqliteMessageStore, silentLogger } from '@ferry/core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EpicSimulator, seedEpicSandbox } from '../../../../test/simulators/epic/epic-simulator';
import { connConfig, testKey } from '@ferry/fhir-vendor-kit';
import { sourceHarness } from '@ferry/testkit';
import { EpicBulkSource } from './epic-bulk-export.source';
import type { BulkSourceConfig } from '@ferry/fhir-vendor-kit';

/**
 * The bulk source end to end into SQLite (10,000 by default; VOL=50000 for the full volume, which the
 * bulk client test streams in memory-bounded form on every run).
 */
describe('epic bulk export volume into the real SQLite store', () => {
  const sim = new EpicSimulator({ bulkPollsUntilDone: 1, bulkRetryAfterSec: 0, bulkMaxLinesPerFile: 10_000 });
  let dir: string;
  let store: SqliteMessageStore;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-epic-vol-'));
    await sim.start();
    const { patientId } = seedEpicSandbox(sim);
    sim.groups.set('big', [patientId]);
    sim.addSyntheticVitals(Number(process.env.VOL ?? 10_000), patientId);
    store = new SqliteMessageStore({ path: path.join(dir, 'ferry.db'), logger: silentLogger() });
    await store.open();
  });
  afterAll(async () => {
    await store.close();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('streams every resource into the store with bounded memory', async () => {
    const key = await testKey('vol');
    sim.registerClient('vol', key.jwks);
    const { ctx } = sourceHarness<BulkSourceConfig>(
      store,
      'epic-big',
      {
        ...connConfig({ baseUrl: sim.baseUrl, clientId: 'vol' }, { privateKey: key.pem, kid: 'vol' }),
        bulk: {
          level: 'group',
          groupId: 'big',
          types: ['Patient', 'Observation'],
          typeFilter: [],
          intervalMs: 0,
          pollMinMs: 20,
          pollMaxMs: 1000,
          batchSize: 1000,
          deleteWhenDone: true,
        },
      },
      { duplicates: 'off' },
    );
    const src = new EpicBulkSource(ctx);
    const base = process.memoryUsage();
    let peakHeap = 0;
    const timer = setInterval(
      () => (peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed - base.heapUsed)),
      25,
    );
    const t0 = Date.now();
    const stored = await src.cycle().finally(() => clearInterval(timer));
    const ms = Date.now() - t0;
    expect(stored).toBe(Number(process.env.VOL ?? 10_000) + 1);
    expect((await store.stats()).messages.received).toBe(stored);
    console.log(
      `bulk source -> SQLite: ${stored} resources in ${ms} ms (${Math.round((stored * 1000) / ms)}/s), peak heap delta ${(peakHeap / 1e6).toFixed(1)} MB`,
    );
    expect(peakHeap).toBeLessThan(150e6);
    // (the rate is a figure in the log line above, not asserted: speed belongs in bench/)
  });
});
