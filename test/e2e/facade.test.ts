/**
 * The FHIR facade end to end, on real sockets: the engine from YAML with `connections:` (an athena
 * practice, two Epic organisations on one simulator), a pipeline polling the same vendors, and the
 * facade's own listener. Proves: read-through equals the pipeline's canonical output for the same
 * vendor record (athena REST patient and appointment, Epic observation); search paging mapped to
 * FHIR `next` links (athena offset paging across departments, Epic session links); a booking that
 * succeeds, one refused as a conflict, one retried with the same Idempotency-Key (one vendor call);
 * a duplicate patient refused; scopes (no token 401, read-only token refused writes 403, foreign
 * connection 403); MRN search and identities across connections; every PHI read and write audited;
 * writes recorded as messages.
 */
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Appointment, Bundle, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import { exportJWK } from 'jose';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';
import { itRequires, repoRoot } from '../support/requires';
import { EpicSimulator, EPIC_MRN_OID, epicVital, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { deliveredResources, facadeCaller } from '../support/facade';

const today = new Date().toISOString().slice(0, 10);
const exampleJs = path.join(repoRoot, 'examples/dist/appointments.js');
const exampleBuilt = {
  ok: existsSync(exampleJs),
  reason: 'not built: examples/dist/appointments.js (run npm run build)',
};
const athenaDay = `${today.slice(5, 7)}/${today.slice(8, 10)}/${today.slice(0, 4)}`;

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('FHIR facade over athena and Epic (engine from YAML, simulators on real sockets)', () => {
  let athena: AthenaSimulator;
  const epic = new EpicSimulator({ pageSize: 50 });
  let engine: Engine;
  let dir: string;
  let api: string;
  let epicPatient: string;
  const tokens: Record<'reader' | 'writer' | 'none' | 'slow', string> = {} as any;
  const openSlots: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-'));
    athena = await AthenaSimulator.start();
    seedPractice(athena);
    athena.subscribe(PRACTICE, 'patients');
    athena.subscribe(PRACTICE, 'appointments');
    const p1 = athena.upsertPatient(PRACTICE, samplePatient(1));
    athena.upsertPatient(PRACTICE, samplePatient(2));
    // Five booked appointments today in department 1, two in department 21, and three open slots.
    for (let i = 0; i < 5; i++)
      athena.upsertAppointment(PRACTICE, {
        date: athenaDay,
        starttime: `${String(9 + i).padStart(2, '0')}:00`,
        duration: 30,
        departmentid: '1',
        providerid: '1',
        patientid: p1.patientid,
        appointmentstatus: 'f',
        appointmenttypeid: '11',
        appointmenttype: 'Office Visit',
      });
    for (let i = 0; i < 2; i++)
      athena.upsertAppointment(PRACTICE, {
        date: athenaDay,
        starttime: `1${i}:30`,
        duration: 20,
        departmentid: '21',
        providerid: '7',
        patientid: p1.patientid,
        appointmentstatus: 'f',
        appointmenttypeid: '11',
      });
    for (let i = 0; i < 3; i++)
      openSlots.push(
        String(
          athena.upsertAppointment(
            PRACTICE,
            {
              date: athenaDay,
              starttime: `15:${String(i * 15).padStart(2, '0')}`,
              duration: 15,
              departmentid: '1',
              providerid: '1',
              appointmentstatus: 'o',
              appointmenttypeid: '11',
            },
            'AddAppointmentSlot',
          ).appointmentid,
        ),
      );

    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    epic.registerClient('ferry-facade', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'f-1', alg: 'RS384', use: 'sig' }],
    });
    await epic.start();
    epicPatient = seedEpicSandbox(epic).patientId;
    for (let i = 0; i < 12; i++) epic.store.put(epicVital(epicPatient, i));
    epic.store.put({
      resourceType: 'Appointment',
      id: 'eAppt1',
      status: 'booked',
      start: `${today}T14:00:00Z`,
      end: `${today}T14:30:00Z`,
      participant: [{ actor: { reference: `Patient/${epicPatient}` }, status: 'accepted' }],
    });

    const mk = async (name: string, scopes: string[]) => {
      const t = await makeToken({ name, roles: ['viewer'], scopes }, 'test');
      return {
        secret: t.secret,
        entry: { id: t.record.id, name, roles: ['viewer'], hash: t.record.hash, ...(scopes.length ? { scopes } : {}) },
      };
    };
    const made = {
      reader: await mk('app-reader', ['connection:athena-a:read', 'connection:epic-a:read', 'connection:epic-b:read']),
      writer: await mk('app-writer', ['connection:*:read', 'connection:athena-a:write']),
      none: await mk('no-scopes', []),
      slow: await mk('throttled', ['connection:athena-slow:read']),
    };
    for (const [k, v] of Object.entries(made)) tokens[k as keyof typeof tokens] = v.secret;
    writeFileSync(path.join(dir, 'athena-secret'), 'ferry-secret\n');
    const yaml = `
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
    callRetry: { initialDelayMs: 20, maxDelayMs: 100 }
  athena-slow:
    kind: athena
    baseUrl: ${athena.url}
    clientId: ferry-client
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    practiceId: ${PRACTICE}
    facade: { rateLimit: { qps: 1, burst: 2 } }
  epic-a:
    kind: epic
    baseUrl: ${epic.baseUrl}
    clientId: ferry-facade
    auth: { privateKeyFile: ${keyFile}, kid: f-1 }
    facade: { cache: { ttlSeconds: 60 } }
  epic-b:
    kind: epic
    baseUrl: ${epic.baseUrl}
    idPrefix: epicb
    clientId: ferry-facade
    auth: { privateKeyFile: ${keyFile}, kid: f-1 }
sources:
  athena-feed:
    type: athena-rest
    connection: athena-a
    feeds: [patients, appointments]
    pollIntervalMs: 200
  epic-poll:
    type: epic-fhir-poll
    connection: epic-a
    patients: ['${epicPatient}']
    resources: [{ type: Observation, category: vital-signs }]
    intervalMs: 60000
sinks:
  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }
routes:
  - { id: all, to: [out] }
processing: { pollIntervalMs: 50, transformWorkers: 0 }
admin:
  enabled: false
  auth:
    tokens: ${JSON.stringify(Object.values(made).map((m) => m.entry))}
api: { enabled: true, host: 127.0.0.1, port: 0, rateLimit: { qps: 1000, burst: 1000 }, defaultCount: 50 }
`;
    writeFileSync(path.join(dir, 'ferry.yaml'), yaml);
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
    api = engine.apiUrl!;
  });

  afterAll(async () => {
    await engine?.stop();
    await athena?.stop();
    await epic.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = facadeCaller(
    () => api,
    (who: keyof typeof tokens) => tokens[who],
  );

  /** Every canonical resource the pipeline delivered to the NDJSON sink. */
  const delivered = (): Resource[] => deliveredResources(path.join(dir, 'out'));

  it('answers a CapabilityStatement per connection, naming the path the decision rule chose', async () => {
    const r = await call<any>('reader', 'GET', '/fhir/athena-a/metadata');
    expect(r.status).toBe(200);
    expect(r.body.resourceType).toBe('CapabilityStatement');
    const byType = Object.fromEntries(r.body.rest[0].resource.map((x: any) => [x.type, x]));
    // No athena-fhir plugin loaded: Patient reads fall back from FHIR to REST.
    expect(byType.Patient.documentation).toContain('read via rest');
    expect(byType.Appointment.operation.map((o: any) => o.name).sort()).toEqual(['book', 'cancel', 'checkin']);
    // Without athena FHIR, Condition has only the REST chart search (no read by id).
    expect(byType.Condition.documentation).toBe('paths: search via rest');
    const e = await call<any>('reader', 'GET', '/fhir/epic-a/metadata');
    expect(
      e.body.rest[0].resource.find((x: any) => x.type === 'Observation').searchParam.map((p: any) => p.name),
    ).toEqual(['patient', 'category', 'code', 'date']);
  });

  it('refuses without a token (401), without the scope (403), and another connection (403)', async () => {
    const none = await call<OperationOutcome>(undefined, 'GET', '/fhir/athena-a/metadata');
    expect(none.status).toBe(401);
    expect(none.body.issue?.[0].code).toBe('login');
    expect((await call('none', 'GET', '/fhir/athena-a/Patient/athena-195900-patient-1')).status).toBe(403);
    expect((await call('reader', 'GET', '/fhir/athena-slow/metadata')).status).toBe(403);
    expect(
      (
        await call(
          'reader',
          'POST',
          `/fhir/athena-a/Appointment/athena-${PRACTICE}-appointment-${openSlots[0]}/$book`,
          { resourceType: 'Parameters' },
        )
      ).status,
    ).toBe(403);
    const denied = await engine.store.auditEntries({ action: 'access.denied' });
    expect(denied.length).toBeGreaterThanOrEqual(3);
  });

  it('reads through to athena: the Patient and Appointment equal what the pipeline delivered for the same records', async () => {
    await until('the pipeline delivered the athena patient and appointments', () => {
      const d = delivered();
      return (
        d.some((r) => r.id === `athena-${PRACTICE}-patient-1000`) &&
        d.filter((r) => r.resourceType === 'Appointment').length >= 7
      );
    });
    const fromPipeline = delivered();
    const pat = await call<Patient>('reader', 'GET', `/fhir/athena-a/Patient/athena-${PRACTICE}-patient-1000`);
    expect(pat.status).toBe(200);
    expect(pat.headers.get('x-ferry-source')).toBe('vendor');
    expect(pat.body).toEqual(fromPipeline.find((r) => r.id === pat.body.id));
    const apptId = fromPipeline.find((r) => r.resourceType === 'Appointment')!.id!;
    const appt = await call<Appointment>('reader', 'GET', `/fhir/athena-a/Appointment/${apptId}`);
    expect(appt.body).toEqual(fromPipeline.find((r) => r.id === apptId));
    // Audited with the principal, the connection and the canonical id (never the query).
    const reads = await engine.store.auditEntries({ action: 'facade.read' });
    expect(
      reads.some(
        (a) =>
          a.principal.includes('app-reader') &&
          a.target === 'GET /fhir/athena-a/Patient/:id' &&
          a.detail?.includes(pat.body.id!),
      ),
    ).toBe(true);
  });

  it('reads through to Epic, equal to the pipeline, and serves the next read from the cache', async () => {
    await until('the pipeline delivered Epic vitals', () => delivered().some((r) => r.resourceType === 'Observation'));
    const obs = delivered().find((r) => r.resourceType === 'Observation')!;
    const a = await call('reader', 'GET', `/fhir/epic-a/Observation/${obs.id}`);
    expect(a.status).toBe(200);
    expect(a.body).toEqual(obs);
    const vendorCalls = epic.requests.length;
    const b = await call('reader', 'GET', `/fhir/epic-a/Observation/${obs.id}`);
    expect(b.headers.get('x-ferry-source')).toBe('cache');
    expect(b.body).toEqual(obs);
    expect(epic.requests.length).toBe(vendorCalls); // served from the cache: no call to Epic
  });

  it('pages athena appointment lists as FHIR next links (offset paging, department by department)', async () => {
    let url: string | undefined = `/fhir/athena-a/Appointment?date=${today}&_count=2`;
    const sizes: number[] = [];
    const ids: string[] = [];
    while (url) {
      const r: { status: number; body: Bundle<Appointment> } = await call<Bundle<Appointment>>('reader', 'GET', url);
      expect(r.status).toBe(200);
      expect(r.body.type).toBe('searchset');
      sizes.push(r.body.entry?.length ?? 0);
      for (const e of r.body.entry ?? []) ids.push(e.resource!.id!);
      url = r.body.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(new Set(ids).size).toBe(7);
    expect(sizes).toEqual([2, 2, 1, 2]);
    // A forged cursor is refused.
    expect(
      (await call('reader', 'GET', `/fhir/athena-a/Appointment?_cursor=eyJ2IjoiaHR0cDovL2V2aWwifQ.AAAA`)).status,
    ).toBe(400);
  });

  it('pages Epic searches through its session links, and finds a patient by MRN', async () => {
    let url: string | undefined =
      `/fhir/epic-a/Observation?patient=Patient/epic-${epicPatient}&category=vital-signs&_count=5`;
    const ids: string[] = [];
    let pages = 0;
    while (url) {
      const r: { status: number; body: Bundle } = await call<Bundle>('reader', 'GET', url);
      expect(r.status).toBe(200);
      pages++;
      for (const e of r.body.entry ?? []) ids.push(e.resource!.id!);
      url = r.body.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(pages).toBe(3);
    expect(new Set(ids).size).toBe(12);
    const byMrn = await call<Bundle<Patient>>(
      'reader',
      'GET',
      `/fhir/epic-a/Patient?identifier=${encodeURIComponent('urn:ferry:id:mrn|203713')}`,
    );
    expect(byMrn.body.entry?.map((e) => e.resource!.id)).toEqual([`epic-${epicPatient}`]);
  });

  it('links one patient across connections by MRN', async () => {
    await call('reader', 'GET', `/fhir/epic-b/Patient/epicb-${epicPatient}`);
    await call('reader', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}`);
    const r = await call<any>('reader', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}/$identities`);
    expect(r.status).toBe(200);
    const ids = r.body.parameter
      .map((p: any) => `${p.part[0].valueString}:${p.part[1].valueReference.reference.replace(/^.*\/Patient\//, '')}`)
      .sort();
    expect(ids).toEqual([`epic-a:epic-${epicPatient}`, `epic-b:epicb-${epicPatient}`]);
  });

  it('books an open slot synchronously: the canonical Appointment with athena id, a message in the store, an audit entry', async () => {
    const slots = await call<Bundle<Appointment>>(
      'writer',
      'GET',
      `/fhir/athena-a/Appointment?date=${today}&status=proposed&location=Location/athena-${PRACTICE}-department-1`,
    );
    expect(slots.body.entry?.map((e) => e.resource!.status)).toEqual(['proposed', 'proposed', 'proposed']);
    const slotId = `athena-${PRACTICE}-appointment-${openSlots[0]}`;
    const r = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${slotId}/$book`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/athena-${PRACTICE}-patient-1001` } }],
    });
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(slotId);
    expect(r.body.status).toBe('booked');
    expect(r.body.identifier?.[0]).toEqual({
      system: `urn:athenahealth:athenanet:appointment:${PRACTICE}`,
      value: openSlots[0],
    });
    expect(r.body.participant?.some((p) => p.actor?.identifier?.value === '1001')).toBe(true);
    const msgs = await engine.store.listMessages({ sourceId: 'facade.athena-a' });
    expect(msgs.length).toBeGreaterThanOrEqual(1);
    expect(
      (await engine.store.auditEntries({ action: 'facade.book' })).some(
        (a) => a.result === 'ok' && a.detail?.includes(slotId),
      ),
    ).toBe(true);

    // The same slot again: athena says it is not open -> 409 conflict.
    const again = await call<OperationOutcome>('writer', 'POST', `/fhir/athena-a/Appointment/${slotId}/$book`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/athena-${PRACTICE}-patient-1000` } }],
    });
    expect(again.status).toBe(409);
    expect(again.body.issue?.[0].code).toBe('conflict');
  });

  it('honours Idempotency-Key: a retried booking answers the first answer and books once', async () => {
    const slotId = `athena-${PRACTICE}-appointment-${openSlots[1]}`;
    const body = {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/athena-${PRACTICE}-patient-1000` } }],
    };
    const before = athena.apiRequests(`/appointments/${openSlots[1]}`).filter((x) => x.method === 'PUT').length;
    const first = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${slotId}/$book`, body, {
      'idempotency-key': 'book-42',
    });
    const second = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${slotId}/$book`, body, {
      'idempotency-key': 'book-42',
    });
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.headers.get('idempotency-replayed')).toBe('true');
    expect(second.body).toEqual(first.body);
    expect(athena.apiRequests(`/appointments/${openSlots[1]}`).filter((x) => x.method === 'PUT').length - before).toBe(
      1,
    );
    // The same key for another request is refused.
    const other = await call<OperationOutcome>(
      'writer',
      'POST',
      `/fhir/athena-a/Appointment/athena-${PRACTICE}-appointment-${openSlots[2]}/$book`,
      body,
      { 'idempotency-key': 'book-42' },
    );
    expect(other.status).toBe(422);
  });

  it('cancels, registers a new patient, and refuses a duplicate patient with an OperationOutcome', async () => {
    const slotId = `athena-${PRACTICE}-appointment-${openSlots[0]}`;
    const c = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${slotId}/$cancel`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'reason', valueString: 'PATIENT CANCELLED' }],
    });
    expect(c.status).toBe(200);
    expect(c.body.status).toBe('cancelled');
    const newPatient: Patient = {
      resourceType: 'Patient',
      name: [{ family: 'Facade', given: ['Fiona'] }],
      birthDate: '1990-04-02',
      gender: 'female',
    };
    const created = await call<Patient>('writer', 'POST', '/fhir/athena-a/Patient', newPatient);
    expect(created.status).toBe(201);
    expect(created.body.id).toMatch(new RegExp(`^athena-${PRACTICE}-patient-\\d+$`));
    expect(created.headers.get('location')).toBe(`${api}/fhir/athena-a/Patient/${created.body.id}`);
    const dup = await call<OperationOutcome>('writer', 'POST', '/fhir/athena-a/Patient', newPatient);
    expect(dup.status).toBe(409);
    expect(dup.body.issue?.[0].code).toBe('duplicate');
    const bad = await call<OperationOutcome>('writer', 'POST', '/fhir/athena-a/Patient', {
      resourceType: 'Patient',
      name: [{ family: 'NoBirthDate' }],
    });
    expect(bad.status).toBe(422);
    expect(bad.body.issue?.[0].code).toBe('invalid');
  });

  itRequires(exampleBuilt)(
    'runs the example application (compiled JS): today across athena and Epic, then a booking',
    async () => {
      const { stdout } = await promisify(execFile)(process.execPath, [exampleJs, '--date', today, '--json'], {
        env: {
          ...process.env,
          FERRY_FHIR_URL: api,
          FERRY_TOKEN: tokens.writer,
          ATHENA_CONNECTION: 'athena-a',
          ATHENA_PATIENT: `athena-${PRACTICE}-patient-1000`,
          EPIC_CONNECTION: 'epic-a',
          EPIC_PATIENT: `epic-${epicPatient}`,
        },
        timeout: 30_000,
      });
      const out = JSON.parse(stdout) as {
        appointments: { connection: string; id: string; status: string }[];
        booked?: { id: string; status: string };
      };
      // Patient 1000: seven booked in the seed, one booked by the idempotency test; Epic: one.
      expect(out.appointments.filter((a) => a.connection === 'athena-a')).toHaveLength(8);
      expect(out.appointments.filter((a) => a.connection === 'epic-a').map((a) => a.id)).toEqual(['epic-eAppt1']);
      expect(out.booked).toEqual({
        id: `athena-${PRACTICE}-appointment-${openSlots[2]}`,
        status: 'booked',
        start: expect.any(String),
      });
      expect(athena.apiRequests(`/appointments/${openSlots[2]}`).filter((x) => x.method === 'PUT')).toHaveLength(1);
    },
  );

  it('limits each client per connection (429 with Retry-After)', async () => {
    // qps 1, burst 2: of six at once (sent concurrently, so machine load cannot space them out) two or three pass.
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => call('slow', 'GET', '/fhir/athena-slow/metadata')),
    );
    const ok = answers.filter((a) => a.status === 200).length;
    expect(ok).toBeGreaterThanOrEqual(2);
    expect(ok).toBeLessThanOrEqual(3);
    const limited = answers.filter((a) => a.status === 429);
    expect(limited.length).toBe(6 - ok);
    expect(Number(limited[0].headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((limited[0].body as OperationOutcome).issue?.[0].code).toBe('throttled');
  });
});
