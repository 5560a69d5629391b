/**
 * The facade's decision rule for athena with both athena plugins loaded: Patient reads and clinical
 * searches go through athena FHIR R4 (equal to what the athena-fhir pipeline delivers for the same
 * resource), appointments stay on REST, and a connection's `facade.paths` override sends Patient
 * reads to REST. Real sockets, the athena simulator.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Bundle, Condition, Patient, Resource } from '@medplum/fhirtypes';
import { configure, Engine, makeToken, silentLogger } from '@ferry/core';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';
import { deliveredResources } from '../support/facade';

describe('FHIR facade: athena FHIR and REST paths by the decision rule', () => {
  let sim: AthenaSimulator;
  let engine: Engine;
  let dir: string;
  let token: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-fhir-'));
    sim = await AthenaSimulator.start();
    seedPractice(sim);
    // athena-fhir reads Patient changes through the patients changed feed (a subscription per client).
    sim.subscribe(PRACTICE, 'patients');
    sim.upsertPatient(PRACTICE, samplePatient(1));
    for (let i = 0; i < 3; i++)
      sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-${500 + i}`, {
        resourceType: 'Condition',
        clinicalStatus: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
        },
        code: { text: `Condition ${i}` },
        subject: { reference: `Patient/a-${PRACTICE}.E-1000` },
        recordedDate: `2026-01-0${i + 1}`,
      });
    sim.setChart(PRACTICE, '1000', 'problems', [
      {
        problemid: '9001',
        name: 'Essential hypertension',
        code: '59621000',
        codeset: 'SNOMED',
        events: [{ eventtype: 'START', startdate: '03/04/2021' }],
      },
    ]);
    const t = await makeToken({ name: 'app', roles: ['viewer'], scopes: ['connection:*:read'] }, 'test');
    token = t.secret;
    const conn = `kind: athena, baseUrl: ${sim.url}, clientId: ferry-client, clientSecret: ferry-secret, practiceId: ${PRACTICE}, scope: 'athena/service/Athenanet.MDP.* system/Patient.read system/Condition.read'`;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest', '@ferry/plugin-athena-fhir']
connections:
  clinic: { ${conn} }
  clinic-rest: { ${conn}, facade: { paths: { 'Patient.read': rest, 'Condition.search': rest } } }
sources:
  fhir-poll: { type: athena-fhir, connection: clinic, resources: [Patient, Condition], searchParams: { Condition: { patient: 'a-${PRACTICE}.E-1000' } }, pollIntervalMs: 60000 }
sinks:
  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }
routes: [{ id: all, to: [out] }]
admin:
  enabled: false
  auth: { tokens: [${JSON.stringify({ id: t.record.id, name: 'app', roles: ['viewer'], hash: t.record.hash, scopes: ['connection:*:read'] })}] }
api: { enabled: true, port: 0 }
processing: { pollIntervalMs: 50, transformWorkers: 0 }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await sim?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = async <T>(url: string) => {
    const r = await fetch(`${engine.apiUrl}${url}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: (await r.json()) as T };
  };
  /** Every canonical resource the pipeline delivered to the NDJSON sink. */
  const delivered = (): Resource[] => deliveredResources(path.join(dir, 'out'));

  it('config/examples/facade.yaml validates (connections, a source by connection, the api listener)', async () => {
    const { config } = await configure({
      configFile: path.resolve(__dirname, '../../config/examples/facade.yaml'),
      env: { ATHENA_CLIENT_ID: 'a', EPIC_CLIENT_ID: 'e' },
    });
    expect(Object.keys(config.connections)).toEqual(['athena-clinic', 'epic-north']);
    expect(config.sources.athena).toMatchObject({ practiceId: 195900, clientId: 'a' });
    expect(config.api.enabled).toBe(true);
    expect(config.warnings).toEqual([]);
  });

  it('reads the Patient through athena FHIR, equal to the athena-fhir pipeline output; the override reads it through REST', async () => {
    const deadline = Date.now() + 20_000;
    while (
      !delivered().some((r) => r.resourceType === 'Patient') ||
      delivered().filter((r) => r.resourceType === 'Condition').length < 3
    ) {
      if (Date.now() > deadline) throw new Error('the pipeline delivered nothing');
      await new Promise((r) => setTimeout(r, 50));
    }
    const before = sim.apiRequests('/fhir/r4/Patient/').length;
    const viaFhir = await get<Patient>(`/fhir/clinic/Patient/athena-${PRACTICE}-patient-1000`);
    expect(viaFhir.status).toBe(200);
    expect(sim.apiRequests('/fhir/r4/Patient/').length).toBe(before + 1);
    expect(viaFhir.body).toEqual(delivered().find((r) => r.resourceType === 'Patient'));
    const restBefore = sim.apiRequests(`/v1/${PRACTICE}/patients/1000`).length;
    const viaRest = await get<Patient>(`/fhir/clinic-rest/Patient/athena-${PRACTICE}-patient-1000`);
    expect(viaRest.body.id).toBe(viaFhir.body.id);
    expect(sim.apiRequests(`/v1/${PRACTICE}/patients/1000`).length).toBe(restBefore + 1);
    const meta = await get<any>('/fhir/clinic/metadata');
    expect(meta.body.rest[0].resource.find((x: any) => x.type === 'Patient').documentation).toMatch(
      /read via fhir, search via fhir, create via rest, update via rest/,
    );
    expect(meta.body.rest[0].resource.find((x: any) => x.type === 'Appointment').documentation).toMatch(
      /read via rest, search via rest/,
    );
  });

  it('searches Conditions through athena FHIR by canonical patient, paged by athena cursors, and reads one back', async () => {
    const ids: string[] = [];
    let url: string | undefined = `/fhir/clinic/Condition?patient=Patient/athena-${PRACTICE}-patient-1000&_count=2`;
    let pages = 0;
    while (url) {
      const r: { status: number; body: Bundle<Condition> } = await get<Bundle<Condition>>(
        url.replace(engine.apiUrl!, ''),
      );
      expect(r.status).toBe(200);
      pages++;
      ids.push(...(r.body.entry ?? []).map((e) => e.resource!.id!));
      url = r.body.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(pages).toBe(2);
    expect(ids.sort()).toEqual([500, 501, 502].map((n) => `athena-${PRACTICE}-condition-problem-${n}`));
    const one = await get<Condition>(`/fhir/clinic/Condition/${ids[0]}`);
    expect(one.status).toBe(200);
    expect(one.body).toEqual(delivered().find((r) => r.id === ids[0]));
  });

  it('falls back to the REST chart where athena FHIR lacks the type, and where a connection overrides the path', async () => {
    const meta = await get<any>('/fhir/clinic/metadata');
    const byType = Object.fromEntries(meta.body.rest[0].resource.map((x: any) => [x.type, x.documentation]));
    expect(byType.Condition).toMatch(/search via fhir/);
    expect(byType.MedicationStatement).toBe('paths: search via rest');
    expect(byType.Immunization).toBe('paths: search via rest');
    const before = sim.apiRequests(`/v1/${PRACTICE}/chart/1000/problems`).length;
    const r = await get<Bundle<Condition>>(
      `/fhir/clinic-rest/Condition?patient=Patient/athena-${PRACTICE}-patient-1000`,
    );
    expect(r.status).toBe(200);
    expect(r.body.entry!.map((e) => e.resource!.id)).toEqual([`athena-${PRACTICE}-problem-9001`]);
    expect(sim.apiRequests(`/v1/${PRACTICE}/chart/1000/problems`).length).toBe(before + 1);
  });
});
