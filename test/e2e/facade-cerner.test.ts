/**
 * The FHIR facade over an Oracle Health (Cerner) connection: a Cerner system account
 * (client_secret_basic) against the Cerner simulator on real sockets; the facade reads a Patient and
 * pages an Observation search, each resource equal to what the Cerner poller delivers through the
 * pipeline for the same vendor resource.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { CernerSimulator, CERNER_TENANT, cernerVital, seedCernerSandbox } from '../simulators/cerner/cerner-simulator';
import { deliveredResources } from '../support/facade';

describe('FHIR facade over Cerner (engine from YAML, simulator on real sockets)', () => {
  const SCOPES = ['system/Patient.read', 'system/Observation.read'];
  const sim = new CernerSimulator({
    pageSize: 4,
    clients: [{ clientId: 'ferry-sys', secret: 'e2e-secret', scopes: SCOPES }],
  });
  let engine: Engine;
  let dir: string;
  let patientId: string;
  let token: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-cerner-'));
    await sim.start();
    patientId = seedCernerSandbox(sim).patientId;
    for (let i = 0; i < 9; i++) sim.store.put(cernerVital(CERNER_TENANT, patientId, i));
    const t = await makeToken({ name: 'app', roles: ['viewer'], scopes: ['connection:millennium:read'] }, 'test');
    token = t.secret;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-cerner']
connections:
  millennium: { kind: cerner, baseUrl: '${sim.baseUrl}', clientId: ferry-sys, auth: { clientSecret: e2e-secret, scopes: [${SCOPES.join(', ')}] } }
sources:
  poll: { type: cerner-fhir-poll, connection: millennium, patients: ['${patientId}'], resources: [{ type: Patient }, { type: Observation }], intervalMs: 60000 }
sinks:
  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }
routes: [{ id: all, to: [out] }]
admin: { enabled: false, auth: { tokens: [${JSON.stringify({ id: t.record.id, name: 'app', roles: ['viewer'], hash: t.record.hash, scopes: ['connection:millennium:read'] })}] } }
api: { enabled: true, port: 0 }
processing: { pollIntervalMs: 50, transformWorkers: 0 }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = async <T>(url: string) => {
    const r = await fetch(url.startsWith('http') ? url : `${engine.apiUrl}${url}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    return { status: r.status, body: (await r.json()) as T };
  };
  /** Every canonical resource the pipeline delivered to the NDJSON sink. */
  const delivered = (): Resource[] => deliveredResources(path.join(dir, 'out'));

  it('reads and searches through the facade, equal to the pipeline output', async () => {
    const deadline = Date.now() + 20_000;
    while (
      delivered().filter((r) => r.resourceType === 'Observation').length < 9 ||
      !delivered().some((r) => r.resourceType === 'Patient')
    ) {
      if (Date.now() > deadline) throw new Error('the pipeline did not deliver the Cerner resources');
      await new Promise((r) => setTimeout(r, 50));
    }
    const pat = delivered().find((r) => r.resourceType === 'Patient')!;
    const read = await get<Resource>(`/fhir/millennium/Patient/${pat.id}`);
    expect(read.status).toBe(200);
    expect(read.body).toEqual(pat);
    const seen: Resource[] = [];
    let url: string | undefined = `/fhir/millennium/Observation?patient=Patient/${pat.id}&_count=4`;
    let pages = 0;
    while (url) {
      const r: { status: number; body: Bundle } = await get<Bundle>(url);
      expect(r.status).toBe(200);
      pages++;
      seen.push(...(r.body.entry ?? []).map((e) => e.resource!));
      url = r.body.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(pages).toBe(3);
    expect(seen).toHaveLength(9);
    for (const o of seen) expect(o).toEqual(delivered().find((r) => r.id === o.id));
  });
});
