/**
 * The pipeline feeds the FHIR facade's store, end to end on real sockets (engine from YAML, the athena
 * and Epic simulators): a source bound to a connection (`connection: <id>`) delivers a patient; a
 * facade read of it on a connection with `facade.cache.storeMaxAgeSeconds` is answered from the store
 * (`x-ferry-source: store`) with no request reaching the vendor (the simulators' request logs), and
 * equals the resource the pipeline delivered. Its identity is recorded with its MRN as a facade read
 * would. A connection that does not serve from the store still goes to the vendor.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Patient, Resource } from '@medplum/fhirtypes';
import { exportJWK } from 'jose';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';
import { EpicSimulator, EPIC_MRN_OID, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { deliveredResources, facadeCaller } from '../support/facade';

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('FHIR facade served from what the pipeline delivered (athena and Epic poll sources bound to connections)', () => {
  let athena: AthenaSimulator;
  const epic = new EpicSimulator();
  let engine: Engine;
  let dir: string;
  let epicPatient: string;
  let athenaPatient: string;
  let token = '';

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-pipeline-'));
    athena = await AthenaSimulator.start();
    seedPractice(athena);
    athena.subscribe(PRACTICE, 'patients');
    athenaPatient = String(athena.upsertPatient(PRACTICE, samplePatient(1)).patientid);
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    epic.registerClient('ferry-facade', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'p-1', alg: 'RS384', use: 'sig' }],
    });
    await epic.start();
    epicPatient = seedEpicSandbox(epic).patientId;
    const scopes = ['connection:*:read'];
    const t = await makeToken({ name: 'app', roles: ['viewer'], scopes }, 'test');
    token = t.secret;
    const tokens = [{ id: t.record.id, name: 'app', roles: ['viewer'], hash: t.record.hash, scopes }];
    writeFileSync(path.join(dir, 'athena-secret'), 'ferry-secret\n');
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - '@ferry/plugin-athena-rest'
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'] }
connections:
  athena-a:
    kind: athena
    baseUrl: ${athena.url}
    clientId: ferry-client
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    practiceId: ${PRACTICE}
    facade: { cache: { storeMaxAgeSeconds: 300 } }
  epic-a:
    kind: epic
    baseUrl: ${epic.baseUrl}
    clientId: ferry-facade
    auth: { privateKeyFile: ${keyFile}, kid: p-1 }
    facade: { cache: { storeMaxAgeSeconds: 300 } }
  epic-live:
    kind: epic
    baseUrl: ${epic.baseUrl}
    clientId: ferry-facade
    auth: { privateKeyFile: ${keyFile}, kid: p-1 }
sources:
  athena-feed:
    type: athena-rest
    connection: athena-a
    feeds: [patients]
    pollIntervalMs: 200
  epic-poll:
    type: epic-fhir-poll
    connection: epic-a
    patients: ['${epicPatient}']
    resources: [{ type: Patient }]
    intervalMs: 600000
sinks:
  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }
routes: [{ id: all, to: [out] }]
processing: { pollIntervalMs: 50, transformWorkers: 0 }
admin: { enabled: false, auth: { tokens: ${JSON.stringify(tokens)} } }
api: { enabled: true, host: 127.0.0.1, port: 0, rateLimit: { qps: 1000, burst: 1000 } }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  }, 120_000);
  afterAll(async () => {
    await engine?.stop();
    await athena?.stop();
    await epic.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = facadeCaller(
    () => engine.apiUrl!,
    () => token,
  );
  const delivered = (): Resource[] => deliveredResources(path.join(dir, 'out'));
  /** Delivered to the sink, and recorded for the facade (the feed runs after the batch is stored). */
  const recorded = async (conn: string, id: string) => {
    await until(`the pipeline delivered ${id}`, () => delivered().some((r) => r.id === id));
    for (let i = 0; i < 200 && !(await engine.store.facade!.facadeResourceGet(conn, 'Patient', id)); i++)
      await new Promise((r) => setTimeout(r, 50));
  };

  it('answers an athena patient the feed delivered from the store, with no vendor request, equal to the delivered one', async () => {
    const id = `athena-${PRACTICE}-patient-${athenaPatient}`;
    await recorded('athena-a', id);
    const before = athena.apiRequests(`/patients/${athenaPatient}`).length;
    const r = await call<Patient>('app', 'GET', `/fhir/athena-a/Patient/${id}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-ferry-source')).toBe('store');
    expect(r.body).toEqual(delivered().find((x) => x.id === id));
    expect(athena.apiRequests(`/patients/${athenaPatient}`).length).toBe(before);
    // Recorded as the facade records what it reads: the identity, with the patient's MRN.
    const ident = await engine.store.facade!.facadeIdentityOf('athena-a', 'Patient', id);
    expect(ident).toMatchObject({ vendorId: athenaPatient, mrn: expect.stringContaining('|') });
  });

  it('answers an Epic patient the poll delivered from the store, with no request reaching Epic', async () => {
    const id = `epic-${epicPatient}`;
    await recorded('epic-a', id);
    const before = epic.requests.length;
    const r = await call<Patient>('app', 'GET', `/fhir/epic-a/Patient/${id}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-ferry-source')).toBe('store');
    expect(r.body).toEqual(delivered().find((x) => x.id === id));
    expect(epic.requests.length).toBe(before);
    // The same patient through a connection no source feeds and that does not serve from the store: Epic is asked.
    const live = await call<Patient>('app', 'GET', `/fhir/epic-live/Patient/${id}`);
    expect(live.headers.get('x-ferry-source')).toBe('vendor');
    expect(live.body).toEqual(r.body);
    expect(epic.requests.filter((q) => q.path.endsWith(`/Patient/${epicPatient}`)).length).toBeGreaterThan(0);
  });
});
