/**
 * Epic end to end, data changing under the engine (issue 25 item 7): Epic often serves resources
 * without meta.versionId/lastUpdated (the reference's examples, vendor-apis.md 3.6). After the first
 * poll / export the simulator amends an unversioned vital (20 -> 171), a versioned one and the
 * Patient. The polling source feeds one FHIR server, the incremental bulk export another: each must
 * end with the latest version of every resource, each version delivered exactly once.
 */
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exportJWK } from 'jose';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { Engine, silentLogger } from '@ferry/core';
import { startFhirServer, type FhirTestServer } from '../support';
import { EpicSimulator, EPIC_MRN_OID, epicVital, seedEpicSandbox } from '../simulators/epic/epic-simulator';

describe('Epic: changes after the first poll and export reach the FHIR servers, latest version, once per version', () => {
  const sim = new EpicSimulator({ pageSize: 5, bulkPollsUntilDone: 1, bulkRetryAfterSec: 0 });
  let pollServer: FhirTestServer;
  let bulkServer: FhirTestServer;
  let engine: Engine | undefined;
  let dir: string;
  let patientId: string;

  const vital = (n: number, value: number) => ({
    ...epicVital(patientId, n),
    valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-epic-changes-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const pub = await exportJWK(createPublicKey(privateKey));
    sim.registerClient('ferry-changes', { keys: [{ ...pub, kid: 'c-1', alg: 'RS384', use: 'sig' }] });
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
    sim.store.put(vital(1, 60)); // versioned
    for (const n of [2, 3]) sim.store.put(vital(n, 20), { unversioned: true });
    sim.groups.set('changes', [patientId]);
    pollServer = await startFhirServer();
    bulkServer = await startFhirServer();
    const conn = `baseUrl: ${sim.baseUrl}
    clientId: ferry-changes
    auth: { privateKeyFile: ${keyFile}, kid: c-1 }`;
    const sink = (url: string) => `type: fhir
    baseUrl: ${url}
    identity: id
    timeoutMs: 5000
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }`;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'], canonicalMrnSystem: 'urn:example:mrn' }
sources:
  epic-poll:
    type: epic-fhir-poll
    ${conn}
    patients: ['${patientId}']
    resources: [{ type: Patient }, { type: Observation, category: vital-signs }]
    intervalMs: 200
  epic-bulk:
    type: epic-bulk-export
    ${conn}
    bulk: { groupId: changes, types: [Patient, Observation], intervalMs: 300, pollMinMs: 50 }
sinks:
  poll-ehr:
    ${sink(pollServer.baseUrl)}
  bulk-ehr:
    ${sink(bulkServer.baseUrl)}
routes:
  - { id: poll, from: [epic-poll], to: [poll-ehr] }
  - { id: bulk, from: [epic-bulk], to: [bulk-ehr] }
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  });

  afterAll(async () => {
    await engine?.stop();
    await pollServer?.stop();
    await bulkServer?.stop();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const until = async (what: string, check: () => Promise<boolean>, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const latest = async (server: FhirTestServer) => {
    const obs = await server.search<Observation>('Observation');
    const [p] = await server.search<Patient>('Patient');
    return {
      values: Object.fromEntries(obs.map((o) => [o.id, o.valueQuantity?.value])),
      phone: p?.telecom?.[0]?.value,
    };
  };
  const exports = () => sim.requests.filter((r) => r.path.endsWith('/$export')).length;

  it('ends with the latest version of every resource on both servers, each version delivered exactly once', async () => {
    const first = {
      values: {
        [`epic-eVitals.${patientId.slice(0, 6)}.1`]: 60,
        [`epic-eVitals.${patientId.slice(0, 6)}.2`]: 20,
        [`epic-eVitals.${patientId.slice(0, 6)}.3`]: 20,
      },
      phone: '469-555-5555',
    };
    await until(
      'the first versions on both servers',
      async () =>
        JSON.stringify(await latest(pollServer)) === JSON.stringify(first) &&
        JSON.stringify(await latest(bulkServer)) === JSON.stringify(first),
    );
    await engine!.waitForIdle(15_000);

    // Changes after the first poll and export: the unversioned vital 2 is amended 20 -> 171, the
    // versioned vital 1 60 -> 61, the Patient's phone. Vital 3 is unversioned and unchanged.
    await new Promise((r) => setTimeout(r, 5));
    sim.store.put(vital(2, 171), { unversioned: true });
    sim.store.put(vital(1, 61));
    const pat = sim.store.get('Patient', patientId)!;
    sim.store.put({ ...pat, telecom: [{ system: 'phone', value: '469-555-0000', use: 'home', rank: 1 }] });
    const want = {
      values: {
        ...first.values,
        [`epic-eVitals.${patientId.slice(0, 6)}.1`]: 61,
        [`epic-eVitals.${patientId.slice(0, 6)}.2`]: 171,
      },
      phone: '469-555-0000',
    };
    await until(
      'the latest versions on both servers',
      async () =>
        JSON.stringify(await latest(pollServer)) === JSON.stringify(want) &&
        JSON.stringify(await latest(bulkServer)) === JSON.stringify(want),
    );
    // More polls and incremental exports re-read the unversioned vitals: nothing new.
    const kicks = exports();
    await until('two more exports', async () => exports() >= kicks + 2);
    await new Promise((r) => setTimeout(r, 600));
    await engine!.waitForIdle(15_000);

    for (const [source, server] of [
      ['epic-poll', pollServer],
      ['epic-bulk', bulkServer],
    ] as const) {
      expect(await latest(server)).toEqual(want);
      const msgs = await engine!.store.listMessages({ sourceId: source, limit: 1000 });
      const perResource: Record<string, number> = {};
      for (const m of msgs) {
        const ds = await engine!.store.deliveries(m.id);
        expect(ds.map((d) => d.status)).toEqual(['delivered']);
        const key = m.headers.controlId!.split('/_history/')[0];
        perResource[key] = (perResource[key] ?? 0) + 1;
      }
      // one message per version: 2 of the Patient, 2 of each changed vital, 1 of the unchanged one
      expect(perResource).toEqual({
        [`Patient/${patientId}`]: 2,
        [`Observation/eVitals.${patientId.slice(0, 6)}.1`]: 2,
        [`Observation/eVitals.${patientId.slice(0, 6)}.2`]: 2,
        [`Observation/eVitals.${patientId.slice(0, 6)}.3`]: 1,
      });
    }
  });
});
