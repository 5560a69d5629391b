/**
 * athena end to end: the engine started from a YAML config with the athena-rest and athena-fhir
 * plugins, polling the athenaOne simulator (changed feeds, FHIR search), converting to canonical
 * FHIR R4 and delivering to a real FHIR server (test/support) through the core fhir sink.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Appointment, Bundle, Patient, Resource } from '@medplum/fhirtypes';
import { configure, Engine, silentLogger } from '@ferry/core';
import { startFhirServer, type FhirTestServer } from '../support';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** GET a FHIR search URL; the answer is a searchset Bundle of `T`. */
async function searchBundle<T extends Resource>(url: string): Promise<Bundle<T>> {
  return (await (await fetch(url)).json()) as Bundle<T>;
}

describe('athena-rest changes -> canonical FHIR -> FHIR server (engine from YAML)', () => {
  let sim: AthenaSimulator;
  let fhir: FhirTestServer;
  let engine: Engine | undefined;
  let dir: string;

  beforeAll(async () => {
    // Short-lived tokens so the run also crosses a token refresh.
    sim = await AthenaSimulator.start({
      tokenTtlSec: 2,
      clients: { 'ferry-client': 'ferry-secret', 'fhir-client': 'ferry-secret' },
    });
    seedPractice(sim);
    sim.subscribe(PRACTICE, 'patients', 'fhir-client');
    sim.subscribe(PRACTICE, 'patients');
    sim.subscribe(PRACTICE, 'appointments');
    sim.subscribe(PRACTICE, 'labresults');
    fhir = await startFhirServer();
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-athena-'));
    writeFileSync(path.join(dir, 'athena-secret'), 'ferry-secret\n');
    const yaml = `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest', '@ferry/plugin-athena-fhir']
sources:
  athena:
    type: athena-rest
    baseUrl: ${sim.url}
    clientId: \${ATHENA_CLIENT_ID}
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    practiceId: ${PRACTICE}
    feeds: [patients, appointments, labresults]
    pollIntervalMs: 200
    pageLimit: 5
    callRetry: { initialDelayMs: 50, maxDelayMs: 200 }
  athena-fhir:
    type: athena-fhir
    baseUrl: ${sim.url}
    # its own client: a changed feed is a queue per client, and Patient is polled through the patients feed
    clientId: fhir-client
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    scope: athena/service/Athenanet.MDP.* system/Patient.read
    practiceId: ${PRACTICE}
    resources: [Patient]
    pollIntervalMs: 200
    pageSize: 5
  fhir-in: { type: http, host: 127.0.0.1, port: 0, path: /fhir-in }
sinks:
  athena-writeback:
    type: athena-rest
    baseUrl: ${sim.url}
    clientId: \${ATHENA_CLIENT_ID}
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    practiceId: ${PRACTICE}
    departmentId: 1
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
  ehr:
    type: fhir
    baseUrl: ${fhir.baseUrl}
    timeoutMs: 3000
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
routes:
  - id: athena-to-ehr
    from: [athena, athena-fhir]
    when: { messageType: ['athena.*'] }
    steps: [validate]
    to: [ehr]
  - id: patients-to-athena
    from: [fhir-in]
    when: { fhirpath: "Bundle.entry.resource.ofType(Patient).exists()" }
    to: [athena-writeback]
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`;
    writeFileSync(path.join(dir, 'ferry.yaml'), yaml);
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      env: { ...process.env, ATHENA_CLIENT_ID: 'ferry-client' },
      logger: silentLogger(),
    });
    await engine.start();
  });

  afterAll(async () => {
    await engine?.stop();
    await fhir?.stop();
    await sim?.stop();
  });

  it('delivers patients, a US/Pacific appointment and a lab result; REST and FHIR views of a patient land on one resource', async () => {
    for (let i = 0; i < 7; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(600 + i) }));
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '9001',
      date: '11/01/2026',
      starttime: '01:30',
      duration: 30,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '600',
      providerid: '1',
      appointmenttypeid: '11',
      appointmenttype: 'FOLLOW UP',
    });
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '9002',
      date: '11/02/2026',
      starttime: '01:30',
      duration: 30,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '601',
      providerid: '1',
    });
    sim.addLabResult(PRACTICE, '600', {
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-11-02T08:15:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      analytes: [
        { analyteid: 77, analytename: 'Glucose', value: '105', units: 'mg/dL', abnormalflag: 'high', loinc: '2345-7' },
      ],
    });

    await until(
      '7 patients, 2 appointments, 1 report',
      async () =>
        (await fhir.count('Patient')) >= 7 &&
        (await fhir.count('Appointment')) >= 2 &&
        (await fhir.count('DiagnosticReport')) >= 1,
    );
    await engine!.waitForIdle(15_000);
    // Both sources delivered every patient (REST feed + FHIR search) yet each exists once.
    expect(await fhir.count('Patient')).toBe(7);
    const msgs = await engine!.store.listMessages({ limit: 1000 });
    expect(msgs.filter((m) => m.sourceId === 'athena-fhir').length).toBeGreaterThanOrEqual(7);
    expect(msgs.filter((m) => m.status === 'failed' || m.status === 'dead')).toEqual([]);

    const appts = await searchBundle<Appointment>(
      `${fhir.baseUrl}/Appointment?identifier=${encodeURIComponent(`urn:athenahealth:athenanet:appointment:${PRACTICE}|9001`)}`,
    );
    // 01:30 on the 2026-11-01 fall-back day in US/Pacific: first (PDT) occurrence = 08:30Z
    expect(appts.entry?.[0]?.resource?.start).toBe('2026-11-01T08:30:00.000Z');
    const appts2 = await searchBundle<Appointment>(
      `${fhir.baseUrl}/Appointment?identifier=${encodeURIComponent(`urn:athenahealth:athenanet:appointment:${PRACTICE}|9002`)}`,
    );
    expect(appts2.entry?.[0]?.resource?.start).toBe('2026-11-02T09:30:00.000Z'); // PST again
    expect(await fhir.count('Observation')).toBe(1);

    // An update in athena: the same Patient resource is updated, no new one.
    sim.upsertPatient(PRACTICE, { patientid: '603', city: 'WORCESTER' });
    await until('the update', async () => {
      const b = await searchBundle<Patient>(
        `${fhir.baseUrl}/Patient?identifier=${encodeURIComponent(`urn:athenahealth:athenanet:patient:${PRACTICE}|603`)}`,
      );
      return b.entry?.[0]?.resource?.address?.[0]?.city === 'WORCESTER';
    });
    await engine!.waitForIdle(15_000);
    expect(await fhir.count('Patient')).toBe(7);
    expect(sim.tokensIssued).toBeGreaterThanOrEqual(1);
  });

  it('a FHIR Patient posted to the http source is created in athena, comes back through the changed feed and reaches the FHIR server once', async () => {
    const web = engine!.source('fhir-in') as unknown as { url: string };
    const patient = {
      resourceType: 'Patient',
      identifier: [{ system: 'urn:oid:2.16.840.1.113883.19.5', value: 'EXT-1' }],
      name: [{ family: 'Roundtrip', given: ['Rita'] }],
      gender: 'female',
      birthDate: '1979-04-05',
      address: [{ line: ['9 Elm St'], city: 'Boston', state: 'MA', postalCode: '02110' }],
    };
    const r = await fetch(web.url, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(patient),
    });
    expect(r.status).toBe(202);
    await until('the athena patient', async () =>
      [...sim.practice(PRACTICE).patients.values()].some((p) => p.lastname === 'Roundtrip'),
    );
    const created = [...sim.practice(PRACTICE).patients.values()].find((p) => p.lastname === 'Roundtrip')!;
    expect(created).toMatchObject({ firstname: 'Rita', dob: '04/05/1979', sex: 'F', departmentid: '1' });
    await until('the round trip into the FHIR server', async () => (await fhir.count('Patient')) === 8);
    await engine!.waitForIdle(15_000);
    const back = await searchBundle<Patient>(
      `${fhir.baseUrl}/Patient?identifier=${encodeURIComponent(`urn:athenahealth:athenanet:patient:${PRACTICE}|${created.patientid}`)}`,
    );
    expect(back.entry?.[0]?.resource?.name?.[0]?.family).toBe('Roundtrip');
  });
});

describe('athena example configs', () => {
  it.each(['athena-rest.yaml', 'athena-fhir.yaml'])('config/examples/%s validates', async (file) => {
    const env = { ATHENA_CLIENT_ID: 'id', ATHENA_CLIENT_SECRET: 'secret', FHIR_TOKEN: 't', INGEST_TOKEN: 'i' };
    const { config } = await configure({
      configFile: path.join(__dirname, '../../config/examples', file),
      env,
      logger: silentLogger(),
    });
    expect(Object.keys(config.sources).length).toBeGreaterThan(0);
  });

  it("the athena-fhir README's searchParams example validates (a map of maps, issue 25 item 1)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-athena-cfg-'));
    const file = path.join(dir, 'ferry.yaml');
    writeFileSync(
      file,
      `store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest', '@ferry/plugin-athena-fhir']
sources:
  f:
    type: athena-fhir
    clientId: id
    clientSecret: secret
    practiceId: 195900
    resources: [Observation]
    searchParams: { Observation: { category: laboratory, patient: a-195900.E-1 } }
sinks: { out: { type: file, dir: ${dir} } }
routes: [{ id: r, from: [f], to: [out] }]
`,
    );
    const { config } = await configure({ configFile: file, env: {}, logger: silentLogger() });
    expect(config.sources.f.searchParams).toEqual({ Observation: { category: 'laboratory', patient: 'a-195900.E-1' } });
  });
});
