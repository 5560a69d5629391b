/**
 * The engine stopped mid-export (abort while NDJSON is still streaming) and a NEW engine started on
 * the same store resumes the same Epic bulk job: every resource stored exactly once, one kick-off.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { exportJWK } from 'jose';
import { Engine, silentLogger } from '@ferry/core';
import { EpicSimulator, seedEpicSandbox } from '../simulators/epic/epic-simulator';

describe('engine killed mid Epic export resumes on restart', () => {
  const sim = new EpicSimulator({ bulkPollsUntilDone: 1, bulkRetryAfterSec: 0, bulkMaxLinesPerFile: 2000 });
  let dir: string;
  let cfgFile: string;
  const TOTAL = 6_000 + 1;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-epic-resume-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'k.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    sim.registerClient('resume', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'r1', alg: 'RS384' }],
    });
    await sim.start();
    const { patientId } = seedEpicSandbox(sim);
    sim.groups.set('cohort', [patientId]);
    sim.addSyntheticVitals(6_000, patientId);
    cfgFile = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfgFile,
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-epic']
sources:
  epic-bulk:
    type: epic-bulk-export
    baseUrl: ${sim.baseUrl}
    clientId: resume
    auth: { privateKeyFile: ${keyFile}, kid: r1 }
    duplicates: { policy: accept }
    bulk: { groupId: cohort, types: [Patient, Observation], intervalMs: 0, pollMinMs: 20, batchSize: 100 }
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`,
    );
  });
  afterAll(async () => {
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const count = async (e: Engine) => (await e.store.listMessages({ sourceId: 'epic-bulk', limit: 100_000 })).length;

  it('stores every resource exactly once across the two engines', async () => {
    sim.server.latencyMs = 0;
    const first = await Engine.create({ configFile: cfgFile, logger: silentLogger() });
    await first.start();
    const end = Date.now() + 20_000;
    let n = 0;
    while (Date.now() < end && (n = await count(first)) < 500) await new Promise((r) => setTimeout(r, 10));
    await first.stop();
    expect(n).toBeGreaterThan(0);

    const second = await Engine.create({ configFile: cfgFile, logger: silentLogger() });
    await second.start();
    try {
      const stopped = await count(second);
      expect(stopped).toBeLessThan(TOTAL); // really interrupted
      const end2 = Date.now() + 30_000;
      while (Date.now() < end2 && !(await second.store.getCheckpoint('epic-bulk', 'bulk:since')))
        await new Promise((r) => setTimeout(r, 50));
      const all = await second.store.listMessages({ sourceId: 'epic-bulk', limit: 100_000 });
      expect(all).toHaveLength(TOTAL);
      expect(new Set(all.map((m) => m.headers.controlId)).size).toBe(TOTAL);
      expect(sim.requests.filter((r) => r.path.endsWith('/$export'))).toHaveLength(1);
      // The second engine downloaded only from where the first stopped (plus the file it was in).
      expect(sim.requests.filter((r) => /\/BulkRequest\/[^/]+\/[^/]+$/.test(r.path)).length).toBeLessThan(10);
    } finally {
      await second.stop();
    }
  }, 90_000);
});
