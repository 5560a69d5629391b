/**
 * athena end to end, data changing under the engine (issue 25): after the first poll the simulator
 * changes a patient, amends a Condition (versioned), amends an Observation that athena serves
 * without meta.versionId/lastUpdated, and cancels an appointment. The FHIR server must end with the
 * latest version of every resource, and each version must have reached it exactly once.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Appointment, Condition, Observation, Patient } from '@medplum/fhirtypes';
import { Engine, silentLogger } from '@ferry/core';
import { roleTokens, startFhirServer, type FhirTestServer, type RoleTokens } from '../support';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('athena: changes after the first poll reach the FHIR server, latest version, once per version', () => {
  let sim: AthenaSimulator;
  let fhir: FhirTestServer;
  let engine: Engine | undefined;
  let tokens: RoleTokens;

  const P = (id: string) => `a-${PRACTICE}.E-${id}`;
  const condition = (text: string) => ({
    clinicalStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
    },
    code: { text },
    subject: { reference: `Patient/${P('301')}` },
  });
  const observation = (value: number) => ({
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '2345-7', display: 'Glucose' }], text: 'Glucose' },
    subject: { reference: `Patient/${P('301')}` },
    valueQuantity: { value, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
  });
  const appointment = (status: string) => ({
    appointmentid: '7301',
    date: '12/01/2026',
    starttime: '09:00',
    duration: 30,
    departmentid: '1',
    appointmentstatus: status,
    patientid: '301',
    providerid: '1',
    appointmenttypeid: '11',
  });

  beforeAll(async () => {
    tokens = await roleTokens();
    sim = await AthenaSimulator.start({ clients: { 'rest-client': 's', 'fhir-client': 's' } });
    seedPractice(sim);
    sim.subscribe(PRACTICE, 'appointments', 'rest-client');
    for (const f of ['patients', 'labresults']) sim.subscribe(PRACTICE, f, 'fhir-client');
    fhir = await startFhirServer();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-athena-changes-'));
    const common = `baseUrl: ${sim.url}
    clientSecret: s
    practiceId: ${PRACTICE}
    callRetry: { initialDelayMs: 50, maxDelayMs: 200 }`;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest', '@ferry/plugin-athena-fhir']
sources:
  athena:
    type: athena-rest
    clientId: rest-client
    ${common}
    feeds: [appointments]
    pollIntervalMs: 150
  athena-fhir:
    type: athena-fhir
    clientId: fhir-client
    ${common}
    scope: athena/service/Athenanet.MDP.* system/Patient.read system/Condition.read system/Observation.read
    resources: [Patient, Condition, Observation]
    initialLookbackHours: 1
    pollIntervalMs: 150
sinks:
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
processing: { pollIntervalMs: 50 }
admin: { enabled: true, host: 127.0.0.1, port: 0, auth: { tokens: ${JSON.stringify(tokens.tokens)} } }
`,
    );
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      env: process.env,
      logger: silentLogger(),
    });
    await engine.start();
  });

  afterAll(async () => {
    await engine?.stop();
    await fhir?.stop();
    await sim?.stop();
  });

  it('ends with the latest version of every resource, each version delivered exactly once', async () => {
    for (const id of ['301', '302', '303']) sim.upsertPatient(PRACTICE, samplePatient(Number(id), { patientid: id }));
    sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-31`, condition('Hypertension'));
    sim.changeClinical(PRACTICE, 'Observation', `a-${PRACTICE}.resultamb-41`, observation(20), 'labresults', '301', {
      unversioned: true,
    });
    sim.upsertAppointment(PRACTICE, appointment('f'));
    await until(
      'the first versions',
      async () =>
        (await fhir.count('Patient')) === 3 &&
        (await fhir.count('Condition')) === 1 &&
        (await fhir.count('Observation')) === 1 &&
        (await fhir.count('Appointment')) === 1,
    );
    await engine!.waitForIdle(15_000);

    // Changes after the first poll.
    sim.upsertPatient(PRACTICE, { patientid: '302', city: 'WORCESTER' });
    sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-31`, condition('Hypertension, controlled'));
    sim.changeClinical(PRACTICE, 'Observation', `a-${PRACTICE}.resultamb-41`, observation(171), 'labresults', '301', {
      unversioned: true,
    });
    sim.upsertAppointment(PRACTICE, appointment('x'), 'CancelAppointment');
    await until('the latest versions', async () => {
      const [p] = await fhir.search<Patient>('Patient', {
        identifier: `urn:athenahealth:athenanet:patient:${PRACTICE}|302`,
      });
      const [c] = await fhir.search<Condition>('Condition');
      const [o] = await fhir.search<Observation>('Observation');
      const [a] = await fhir.search<Appointment>('Appointment');
      return (
        p?.address?.[0]?.city === 'WORCESTER' &&
        c?.code?.text === 'Hypertension, controlled' &&
        o?.valueQuantity?.value === 171 &&
        a?.status === 'cancelled'
      );
    });
    // More polls re-read the same data (Condition's overlap window, the unchanged patients): nothing new.
    const polls = (engine!.source('athena-fhir') as unknown as { polls: number }).polls;
    await until(
      'three more polls',
      async () => (engine!.source('athena-fhir') as unknown as { polls: number }).polls >= polls + 3,
    );
    await engine!.waitForIdle(15_000);

    expect(await fhir.count('Patient')).toBe(3);
    expect(await fhir.count('Condition')).toBe(1);
    expect(await fhir.count('Observation')).toBe(1);
    expect(await fhir.count('Appointment')).toBe(1);

    // Exactly one message per version, each delivered once.
    const msgs = (await engine!.store.listMessages({ limit: 1000 })).filter(
      (m) => m.sourceId === 'athena' || m.sourceId === 'athena-fhir',
    );
    const perResource = new Map<string, number>();
    for (const m of msgs) {
      const ds = await engine!.store.deliveries(m.id);
      expect(ds.map((d) => `${d.sinkId}:${d.status}`)).toEqual(['ehr:delivered']);
      const key = m.sourceId === 'athena' ? `appointment` : m.headers.controlId!.split('/').slice(0, 2).join('/');
      perResource.set(key, (perResource.get(key) ?? 0) + 1);
    }
    expect(Object.fromEntries(perResource)).toEqual({
      [`Patient/${P('301')}`]: 1,
      [`Patient/${P('302')}`]: 2,
      [`Patient/${P('303')}`]: 1,
      [`Condition/a-${PRACTICE}.problem-31`]: 2,
      [`Observation/a-${PRACTICE}.resultamb-41`]: 2,
      appointment: 2,
    });
    expect(new Set(msgs.map((m) => m.headers.controlId)).size).toBe(msgs.length);

    // Each resource type's state is on /metrics and in the admin API's source view.
    const metrics = await (await fetch(`${engine!.adminUrl}/metrics`, { headers: tokens.auth('viewer') })).text();
    for (const t of ['Patient', 'Condition', 'Observation'])
      expect(metrics).toContain(`ferry_source_stat{source="athena-fhir",stat="${t}.up"} 1`);
    const views = (await (
      await fetch(`${engine!.adminUrl}/api/sources`, { headers: tokens.auth('viewer') })
    ).json()) as { id: string; state?: { resourceTypes: { type: string; strategy: string; state: string }[] } }[];
    expect(
      views.find((v) => v.id === 'athena-fhir')?.state?.resourceTypes.map((t) => `${t.type}:${t.strategy}:${t.state}`),
    ).toEqual(['Patient:changedPatients:ok', 'Condition:lastUpdated:ok', 'Observation:byPatient:ok']);
  });
});
