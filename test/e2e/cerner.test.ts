/**
 * Oracle Health (Cerner) end to end: the engine from YAML with the cerner plugin, a polling source
 * (system account, Basic + explicit scopes) and a Group bulk export (307 to pre-signed storage)
 * against the Cerner simulator, the cerner transform, and the core fhir sink on a real FHIR server.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import { startFhirServer, type FhirTestServer } from '../support';
import { CernerSimulator, CERNER_TENANT, cernerVital, seedCernerSandbox } from '../simulators/cerner/cerner-simulator';

describe('Cerner -> canonical FHIR R4 -> FHIR server (engine from YAML)', () => {
  const SCOPES = ['system/Patient.read', 'system/Observation.read'];
  const sim = new CernerSimulator({
    pageSize: 4,
    bulkPollsUntilDone: 1,
    bulkRetryAfterSec: 0,
    clients: [{ clientId: 'ferry-sys', secret: 'e2e-secret', scopes: SCOPES }],
  });
  let fhir: FhirTestServer;
  let engine: Engine | undefined;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-cerner-'));
    await sim.start();
    const { patientId } = seedCernerSandbox(sim);
    for (let i = 0; i < 9; i++) sim.store.put(cernerVital(CERNER_TENANT, patientId, i));
    sim.groups.set('cohort-1', [patientId]);
    fhir = await startFhirServer();
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-cerner']
sources:
  millennium:
    type: cerner-fhir-poll
    baseUrl: ${sim.baseUrl}
    clientId: ferry-sys
    auth: { clientSecret: '\${CERNER_SECRET}', scopes: [${SCOPES.join(', ')}] }
    patients: ['${patientId}']
    resources: [{ type: Patient }, { type: Observation }]
    intervalMs: 60000
  weekly:
    type: cerner-bulk-export
    baseUrl: ${sim.baseUrl}
    clientId: ferry-sys
    auth: { clientSecret: '\${CERNER_SECRET}', scopes: [${SCOPES.join(', ')}] }
    bulk: { groupId: cohort-1, types: [Patient, Observation], intervalMs: 0, pollMinMs: 50 }
sinks:
  ehr: { type: fhir, baseUrl: '${fhir.baseUrl}', identity: id, retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 } }
routes:
  - id: cerner-to-fhir
    from: [millennium, weekly]
    when: { messageType: ['Patient', 'Observation'] }
    steps: [validate]
    to: [ehr]
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`,
    );
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      env: { ...process.env, CERNER_SECRET: 'e2e-secret' },
      logger: silentLogger(),
    });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await fhir?.stop();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('polls and exports, normalises, and writes each resource once', async () => {
    const end = Date.now() + 15_000;
    while (
      Date.now() < end &&
      !(
        (await engine!.store.getCheckpoint('weekly', 'bulk:since')) &&
        (await engine!.store.getCheckpoint('millennium', 'poll:Observation'))
      )
    )
      await new Promise((r) => setTimeout(r, 50));
    await engine!.waitForIdle(15_000);
    const msgs = [
      ...(await engine!.store.listMessages({ sourceId: 'millennium', limit: 100 })),
      ...(await engine!.store.listMessages({ sourceId: 'weekly', limit: 100 })),
    ];
    expect(msgs).toHaveLength(20);
    for (const m of msgs) expect((await engine!.store.deliveries(m.id)).map((d) => d.status)).toEqual(['delivered']);
    expect(await fhir.count('Patient')).toBe(1);
    expect(await fhir.count('Patient', { identifier: 'urn:ferry:id:mrn|6931' })).toBe(1);
    expect(await fhir.count('Observation')).toBe(9);
    // Patient and Observations came in separate messages: each Observation's subject resolves to the stored Patient.
    const [p] = await fhir.search('Patient');
    for (const o of (await fhir.search('Observation')) as any[]) {
      const [type, id] = o.subject.reference.split('/');
      expect((await fhir.repo.readResource(type, id)).id).toBe(p.id);
    }
    expect(
      sim.requests.filter((r) => r.path.startsWith('/s3/')).every((r) => !r.headers.authorization && r.status === 200),
    ).toBe(true);
    expect(sim.requests.filter((r) => r.path.includes('/r4/')).every((r) => r.status !== 406)).toBe(true);
  });
});
