/**
 * FHIR facade writes on the FHIR vendors, end to end on real sockets (engine from YAML, the Epic and
 * Cerner simulators): `PUT` of Cerner Appointment and Patient with the vendor's optimistic locking
 * (the version the client read goes out as `If-Match`; a stale one is Cerner's 409, answered
 * `conflict`), a Cerner business-rule refusal answered 422 `invalid`; Epic updates only where its API
 * lists them (Observation), its 4100 refusal answered 422 with Epic's text, an Epic create from a
 * canonical body (vendor references at Epic, canonical ones in the answer), Patient / Appointment
 * updates and `$book` answered 501 `not-supported` without a vendor call; canonical references and
 * the canonical MRN system written back as the vendor's; `Idempotency-Key` retries answered from
 * the first result (one vendor write); a read-only token refused (403); every write audited.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Appointment, Observation, OperationOutcome, Patient } from '@medplum/fhirtypes';
import { exportJWK } from 'jose';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { CernerSimulator, CERNER_MRN_OID, seedCernerSandbox } from '../simulators/cerner/cerner-simulator';
import { EpicSimulator, EPIC_MRN_OID, epicVital, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { facadeCaller } from '../support/facade';

describe('FHIR facade writes on Epic and Cerner (engine from YAML, simulators on real sockets)', () => {
  const CERNER_SCOPES = [
    'system/Patient.read',
    'system/Patient.write',
    'system/Appointment.read',
    'system/Appointment.write',
    'system/Observation.read',
  ];
  const cerner = new CernerSimulator({
    clients: [{ clientId: 'ferry-sys', secret: 'e2e-secret', scopes: CERNER_SCOPES }],
  });
  const epic = new EpicSimulator();
  let engine: Engine;
  let dir: string;
  let cernerPatient: string;
  let epicPatient: string;
  const cernerAppt = '4817572';
  const tokens: Record<'reader' | 'writer', string> = {} as any;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-writes-'));
    await cerner.start();
    cernerPatient = seedCernerSandbox(cerner).patientId;
    cerner.store.put({
      resourceType: 'Appointment',
      id: cernerAppt,
      status: 'booked',
      start: '2026-12-08T15:00:00.000Z',
      end: '2026-12-08T15:30:00.000Z',
      participant: [{ actor: { reference: `Patient/${cernerPatient}`, display: 'SMART, JOE' }, status: 'accepted' }],
    });
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    epic.registerClient('ferry-facade', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'w-1', alg: 'RS384', use: 'sig' }],
    });
    await epic.start();
    epicPatient = seedEpicSandbox(epic).patientId;
    epic.store.put(epicVital(epicPatient, 0));
    epic.store.put({
      resourceType: 'Appointment',
      id: 'eApptW1',
      status: 'booked',
      start: '2026-12-08T14:00:00Z',
      end: '2026-12-08T14:30:00Z',
      participant: [{ actor: { reference: `Patient/${epicPatient}` }, status: 'accepted' }],
    });

    const mk = async (name: string, scopes: string[]) => {
      const t = await makeToken({ name, roles: ['viewer'], scopes }, 'test');
      return { secret: t.secret, entry: { id: t.record.id, name, roles: ['viewer'], hash: t.record.hash, scopes } };
    };
    const made = {
      reader: await mk('app-reader', ['connection:*:read']),
      writer: await mk('app-writer', ['connection:*:read', 'connection:millennium:write', 'connection:epic-a:write']),
    };
    for (const [k, v] of Object.entries(made)) tokens[k as keyof typeof tokens] = v.secret;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - '@ferry/plugin-cerner'
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'] }
connections:
  millennium: { kind: cerner, baseUrl: '${cerner.baseUrl}', clientId: ferry-sys, auth: { clientSecret: e2e-secret, scopes: [${CERNER_SCOPES.join(', ')}] } }
  epic-a: { kind: epic, baseUrl: '${epic.baseUrl}', clientId: ferry-facade, auth: { privateKeyFile: ${keyFile}, kid: w-1 } }
sinks:
  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }
routes: [{ id: all, to: [out] }]
admin: { enabled: false, auth: { tokens: ${JSON.stringify(Object.values(made).map((m) => m.entry))} } }
api: { enabled: true, host: 127.0.0.1, port: 0, rateLimit: { qps: 1000, burst: 1000 } }
processing: { pollIntervalMs: 50, transformWorkers: 0 }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  }, 120_000);
  afterAll(async () => {
    await engine?.stop();
    await cerner.stop();
    await epic.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = facadeCaller(
    () => engine.apiUrl!,
    (who: keyof typeof tokens) => tokens[who],
  );
  const puts = (sim: { requests: { method: string; path: string }[] }, suffix: string) =>
    sim.requests.filter((r) => r.method === 'PUT' && r.path.endsWith(suffix)).length;
  const versionOf = (r: { meta?: { tag?: { system?: string; code?: string }[] } }, vendor: string) =>
    r.meta?.tag?.find((t) => t.system === `urn:ferry:${vendor}:version`)?.code;

  it('lists the updates each vendor allows in its CapabilityStatement', async () => {
    const interactions = async (conn: string) => {
      const r = await call<any>('reader', 'GET', `/fhir/${conn}/metadata`);
      return Object.fromEntries(
        r.body.rest[0].resource.map((x: any) => [x.type, x.interaction.map((i: any) => i.code)]),
      );
    };
    const c = await interactions('millennium');
    expect(c.Appointment).toContain('update');
    expect(c.Patient).toContain('update');
    const e = await interactions('epic-a');
    expect(e.Observation).toContain('update');
    expect(e.Patient).not.toContain('update');
    expect(e.Appointment).not.toContain('update');
  });

  it('updates a Cerner Appointment with the version it read; a stale version is a 409 conflict', async () => {
    const read = await call<Appointment>('writer', 'GET', `/fhir/millennium/Appointment/cerner-${cernerAppt}`);
    expect(read.status).toBe(200);
    expect(read.body.participant[0].actor?.reference).toBe(`Patient/cerner-${cernerPatient}`);
    const v1 = versionOf(read.body, 'cerner');
    expect(v1).toBeDefined();
    const changed = { ...read.body, comment: 'Bring the insurance card', end: '2026-12-08T15:45:00.000Z' };
    const r = await call<Appointment>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, changed);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(`cerner-${cernerAppt}`);
    expect(r.body.comment).toBe('Bring the insurance card');
    expect(Number(versionOf(r.body, 'cerner'))).toBe(Number(v1) + 1);
    // At the vendor: its own ids, the version read as If-Match, no Ferry tags.
    const atVendor = cerner.store.get('Appointment', cernerAppt)!;
    expect(atVendor.participant[0].actor.reference).toBe(`Patient/${cernerPatient}`);
    expect(atVendor.end).toBe('2026-12-08T15:45:00.000Z');
    expect(JSON.stringify(atVendor)).not.toContain('urn:ferry:');
    const put = cerner.requests
      .filter((q) => q.method === 'PUT' && q.path.endsWith(`/Appointment/${cernerAppt}`))
      .at(-1)!;
    expect(put.headers['if-match']).toBe(`W/"${v1}"`);

    // The same body again carries the version it was read at: someone (this client) changed it since.
    const stale = await call<OperationOutcome>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, {
      ...changed,
      comment: 'stale',
    });
    expect(stale.status).toBe(409);
    expect(stale.body.issue[0].code).toBe('conflict');
    expect(cerner.store.get('Appointment', cernerAppt)!.comment).toBe('Bring the insurance card');
    const audits = await engine.store.auditEntries({ action: 'facade.update' });
    expect(audits.some((a) => a.result === 'ok' && a.detail?.includes(`Appointment/cerner-${cernerAppt}`))).toBe(true);
    expect(audits.some((a) => a.result === 'error' && a.detail?.includes('status=409'))).toBe(true);
    expect(audits.every((a) => !a.detail?.includes('insurance card'))).toBe(true);
  });

  it('updates a Cerner Patient: the canonical MRN goes back under the tenant MRN system', async () => {
    const read = await call<Patient>('writer', 'GET', `/fhir/millennium/Patient/cerner-${cernerPatient}`);
    expect(read.status).toBe(200);
    const { meta: _meta, ...unversioned } = read.body;
    // Without the version tag: the current vendor version (last write wins).
    const r = await call<Patient>('writer', 'PUT', `/fhir/millennium/Patient/cerner-${cernerPatient}`, {
      ...unversioned,
      telecom: [{ system: 'phone', value: '8165550000', use: 'mobile' }],
    });
    expect(r.status).toBe(200);
    expect(r.body.telecom).toEqual([{ system: 'phone', value: '8165550000', use: 'mobile' }]);
    const atVendor = cerner.store.get('Patient', cernerPatient)!;
    expect(atVendor.identifier.map((i: { system: string; value: string }) => `${i.system}|${i.value}`)).toEqual([
      `${CERNER_MRN_OID}|6931`,
    ]);
  });

  it('answers a Cerner business-rule refusal as 422 invalid', async () => {
    const read = await call<Appointment>('writer', 'GET', `/fhir/millennium/Appointment/cerner-${cernerAppt}`);
    // A patient id in this connection's scheme that the tenant does not know.
    const body = {
      ...read.body,
      participant: [{ actor: { reference: 'Patient/cerner-99999999' }, status: 'accepted' as const }],
    };
    const r = await call<OperationOutcome>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, body);
    expect(r.status).toBe(422);
    expect(r.body.issue[0].code).toBe('invalid');
    // Not a patient of this connection at all: refused before any vendor call.
    const before = puts(cerner, `/Appointment/${cernerAppt}`);
    const foreign = await call<OperationOutcome>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, {
      ...body,
      participant: [{ actor: { reference: 'Patient/epic-xyz' }, status: 'accepted' }],
    });
    expect(foreign.status).toBe(422);
    expect(puts(cerner, `/Appointment/${cernerAppt}`)).toBe(before);
  });

  it('replays an update retried with the same Idempotency-Key (one vendor write)', async () => {
    const read = await call<Appointment>('writer', 'GET', `/fhir/millennium/Appointment/cerner-${cernerAppt}`);
    const body = { ...read.body, comment: 'Arrive 10 minutes early' };
    const before = puts(cerner, `/Appointment/${cernerAppt}`);
    const first = await call<Appointment>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, body, {
      'idempotency-key': 'upd-1',
    });
    const second = await call<Appointment>('writer', 'PUT', `/fhir/millennium/Appointment/cerner-${cernerAppt}`, body, {
      'idempotency-key': 'upd-1',
    });
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(second.headers.get('idempotency-replayed')).toBe('true');
    expect(second.body).toEqual(first.body);
    expect(puts(cerner, `/Appointment/${cernerAppt}`) - before).toBe(1);
  });

  it('refuses a write with a read-only token (403), without a vendor call', async () => {
    const before = puts(cerner, '');
    const read = await call<Appointment>('reader', 'GET', `/fhir/millennium/Appointment/cerner-${cernerAppt}`);
    const r = await call<OperationOutcome>(
      'reader',
      'PUT',
      `/fhir/millennium/Appointment/cerner-${cernerAppt}`,
      read.body,
    );
    expect(r.status).toBe(403);
    expect(r.body.issue[0].code).toBe('forbidden');
    expect(puts(cerner, '')).toBe(before);
    expect(
      (await engine.store.auditEntries({ action: 'access.denied' })).some(
        (a) => a.detail === 'needs connection:millennium:write',
      ),
    ).toBe(true);
  });

  it('updates an Epic Observation; an Epic 4100 refusal is 422 with its text', async () => {
    const id = `epic-eVitals.${epicPatient.slice(0, 6)}.0`;
    const read = await call<Observation>('writer', 'GET', `/fhir/epic-a/Observation/${id}`);
    expect(read.status).toBe(200);
    const r = await call<Observation>('writer', 'PUT', `/fhir/epic-a/Observation/${id}`, {
      ...read.body,
      valueQuantity: { value: 77, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
    expect(r.status).toBe(200);
    expect(r.body.valueQuantity?.value).toBe(77);
    expect(epic.store.get('Observation', `eVitals.${epicPatient.slice(0, 6)}.0`)!.subject.reference).toBe(
      `Patient/${epicPatient}`,
    );
    const { status: _s, ...noStatus } = read.body;
    const bad = await call<OperationOutcome>('writer', 'PUT', `/fhir/epic-a/Observation/${id}`, noStatus);
    expect(bad.status).toBe(422);
    expect(bad.body.issue[0].code).toBe('invalid');
    expect(bad.body.issue[0].details?.text).toContain('4100');
  });

  it("creates an Epic Observation from a canonical body: its references go out as Epic's", async () => {
    const read = await call<Observation>(
      'writer',
      'GET',
      `/fhir/epic-a/Observation/epic-eVitals.${epicPatient.slice(0, 6)}.0`,
    );
    const { id: _id, meta: _meta, ...body } = read.body;
    const r = await call<Observation>('writer', 'POST', '/fhir/epic-a/Observation', {
      ...body,
      effectiveDateTime: '2026-12-07T08:00:00Z',
    });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`${engine.apiUrl}/fhir/epic-a/Observation/${r.body.id}`);
    expect(r.body.subject?.reference).toBe(`Patient/epic-${epicPatient}`);
    // Found by content: a simulator id with `_` in it is hashed in the canonical id.
    const created = epic.store.all('Observation').find((o) => o.effectiveDateTime === '2026-12-07T08:00:00Z')!;
    expect(created.subject.reference).toBe(`Patient/${epicPatient}`);
    expect(created.effectiveDateTime).toBe('2026-12-07T08:00:00Z');
  });

  it('answers Epic Patient / Appointment updates and $book as not-supported (501), without a vendor call', async () => {
    const writes = () =>
      epic.requests.filter((q) => q.method === 'PUT' || (q.method === 'POST' && !q.path.endsWith('/token'))).length;
    const before = writes();
    const p = await call<Patient>('writer', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}`);
    const up = await call<OperationOutcome>('writer', 'PUT', `/fhir/epic-a/Patient/epic-${epicPatient}`, {
      ...p.body,
      gender: 'other',
    });
    expect(up.status).toBe(501);
    expect(up.body.issue[0].code).toBe('not-supported');
    const appt = await call<OperationOutcome>('writer', 'PUT', '/fhir/epic-a/Appointment/epic-eApptW1', {
      resourceType: 'Appointment',
      status: 'cancelled',
      participant: [],
    });
    expect(appt.status).toBe(501);
    const book = await call<OperationOutcome>('writer', 'POST', '/fhir/epic-a/Appointment/epic-eApptW1/$book', {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/epic-${epicPatient}` } }],
    });
    expect(book.status).toBe(501);
    expect(writes()).toBe(before);
  });
});
