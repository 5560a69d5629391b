/**
 * Epic end to end: the engine started from YAML with the epic plugin, an Epic bulk-export source and
 * an Epic polling source against the Epic simulator (SMART backend services JWT auth for real),
 * the epic transform to canonical FHIR R4, and the core `fhir` sink writing to a real FHIR R4
 * server (test/support). A second poll stores nothing new and the server holds each resource once.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine, createLogger } from '@ferry/core';
import { PassThrough } from 'node:stream';
import { startFhirServer, type FhirTestServer } from '../support';
import { EpicSimulator, EPIC_MRN_OID, epicVital, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { generateKeyPairSync } from 'node:crypto';
import { exportJWK } from 'jose';
import { createPublicKey } from 'node:crypto';

describe('Epic -> canonical FHIR R4 -> FHIR server (engine from YAML)', () => {
  let fhir: FhirTestServer;
  let engine: Engine | undefined;
  const sim = new EpicSimulator({ pageSize: 5, bulkPollsUntilDone: 1, bulkRetryAfterSec: 0 });
  let dir: string;
  let patientId: string;
  const logLines: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-epic-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const pub = await exportJWK(createPublicKey(privateKey));
    sim.registerClient('ferry-e2e', { keys: [{ ...pub, kid: 'e2e-1', alg: 'RS384', use: 'sig' }] });
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
    for (let i = 0; i < 12; i++) sim.store.put(epicVital(patientId, i));
    sim.groups.set('ferry-cohort', [patientId]);
    fhir = await startFhirServer();
    const yaml = `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'], canonicalMrnSystem: 'urn:example:mrn' }
sources:
  epic-bulk:
    type: epic-bulk-export
    baseUrl: ${sim.baseUrl}
    clientId: ferry-e2e
    auth: { privateKeyFile: ${keyFile}, kid: e2e-1 }
    bulk: { groupId: ferry-cohort, types: [Patient, Observation], intervalMs: 0, pollMinMs: 50 }
  epic-poll:
    type: epic-fhir-poll
    baseUrl: ${sim.baseUrl}
    clientId: ferry-e2e
    auth: { privateKeyFile: ${keyFile}, kid: e2e-1 }
    patients: ['${patientId}']
    resources: [{ type: Observation, category: vital-signs }]
    intervalMs: 300
sinks:
  ehr:
    type: fhir
    baseUrl: ${fhir.baseUrl}
    # Epic Observations reference their Patient by Epic id only (no MRN): write every resource at its
    # canonical id (epic-<fhir id>) so Observation.subject resolves on the server.
    identity: id
    timeoutMs: 5000
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
routes:
  - id: epic-to-fhir
    from: [epic-bulk, epic-poll]
    when: { messageType: ['Patient', 'Observation'] }
    steps: [validate]
    to: [ehr]
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`;
    writeFileSync(path.join(dir, 'ferry.yaml'), yaml);
    const logStream = new PassThrough();
    logStream.on('data', (c: Buffer) => logLines.push(c.toString('utf8')));
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      logger: createLogger({ level: 'info' }, logStream),
    });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await fhir?.stop();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const until = async (what: () => Promise<boolean>, ms = 15_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await what()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('timed out');
  };

  it('exports and polls from Epic, normalises, and writes each resource once to the FHIR server', async () => {
    await until(async () => !!(await engine!.store.getCheckpoint('epic-bulk', 'bulk:since')));
    await until(async () => !!(await engine!.store.getCheckpoint('epic-poll', 'poll:Observation:vital-signs')));
    await engine!.waitForIdle(15_000);
    const bulk = await engine!.store.listMessages({ sourceId: 'epic-bulk', limit: 100 });
    expect(bulk).toHaveLength(13);
    const poll = await engine!.store.listMessages({ sourceId: 'epic-poll', limit: 100 });
    expect(poll).toHaveLength(12);
    for (const m of [...bulk, ...poll]) {
      const ds = await engine!.store.deliveries(m.id);
      expect(ds.map((d) => `${d.sinkId}:${d.status}${d.lastError ? ` ${d.lastError.message}` : ''}`)).toEqual([
        'ehr:delivered',
      ]);
    }
    expect(await fhir.count('Patient')).toBe(1);
    const [p] = await fhir.search('Patient', { identifier: 'urn:example:mrn|203713' });
    expect(p).toBeDefined();
    const obs = await fhir.search('Observation');
    expect(obs).toHaveLength(12);
    // Patient and Observations came in separate messages: every Observation's subject resolves to the stored Patient.
    expect(p.id).toBe(`epic-${patientId}`);
    for (const o of obs as any[]) {
      const [type, id] = o.subject.reference.split('/');
      expect((await fhir.repo.readResource(type, id)).id).toBe(p.id);
    }
    expect(
      obs.every(
        (o: any) =>
          o.code.coding.some((c: any) => c.system === 'http://loinc.org') &&
          o.code.coding.some((c: any) => c.system.startsWith('urn:oid:1.2.840.114350')),
      ),
    ).toBe(true);

    // Another poll finds nothing new; a changed vital arrives once more as an update.
    const before = (await engine!.store.listMessages({ sourceId: 'epic-poll', limit: 100 })).length;
    await new Promise((r) => setTimeout(r, 700));
    expect((await engine!.store.listMessages({ sourceId: 'epic-poll', limit: 100 })).length).toBe(before);
    sim.store.put({ ...epicVital(patientId, 2), status: 'amended' });
    await until(
      async () => (await engine!.store.listMessages({ sourceId: 'epic-poll', limit: 100 })).length === before + 1,
    );
    await engine!.waitForIdle(10_000);
    expect(await fhir.count('Observation')).toBe(12);
    const amended = await fhir.search('Observation', { status: 'amended' });
    expect(amended).toHaveLength(1);
    // Only JWT-authenticated calls reached the FHIR API.
    expect(sim.requests.filter((r) => r.status === 401)).toHaveLength(0);
  });

  it('logs no PHI at info level (no names, MRNs or bodies)', () => {
    const text = logLines.join('');
    expect(text).toMatch(/epic bulk export finished/);
    for (const phi of ['Lopez', 'Camila', '203713', '469-555-5555', 'West Johnson', '1987-09-12'])
      expect(text).not.toContain(phi);
  });
});
