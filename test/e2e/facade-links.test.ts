/**
 * Explicit patient links through the FHIR facade, end to end on real sockets (engine from YAML, the
 * Epic and Cerner simulators): two EHRs whose patient shares no identifier are linked by
 * `POST /fhir/{conn}/Patient/{id}/$link` (a Parameters resource naming the other connection and
 * patient); `$identities` and `linkedIdentifiers` reads honour the link from both ends and
 * transitively (an Epic organisation linked to the first by MRN comes along); linking twice is fine;
 * a patient the vendor does not have is refused with an OperationOutcome; `$unlink` removes it. The
 * scope matrix: read scope cannot link, write on one of the two connections cannot link (either way
 * round), a client sees only the connections it may read; every link, unlink and refusal audited.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CapabilityStatement, OperationOutcome, Parameters, Patient } from '@medplum/fhirtypes';
import { exportJWK } from 'jose';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { CernerSimulator, seedCernerSandbox } from '../simulators/cerner/cerner-simulator';
import { EpicSimulator, EPIC_MRN_OID, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { facadeCaller } from '../support/facade';

type Who = 'linker' | 'reader' | 'epicWriter' | 'cernerWriter' | 'epicOnly';

describe('FHIR facade explicit patient links ($link / $unlink) between Epic and Cerner', () => {
  const CERNER_SCOPES = ['system/Patient.read'];
  const cerner = new CernerSimulator({
    clients: [{ clientId: 'ferry-sys', secret: 'e2e-secret', scopes: CERNER_SCOPES }],
  });
  const epic = new EpicSimulator();
  let engine: Engine;
  let dir: string;
  let cernerId: string;
  let epicId: string;
  let epicbId: string;
  const tokens = {} as Record<Who, string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-links-'));
    await cerner.start();
    cernerId = `cerner-${seedCernerSandbox(cerner).patientId}`;
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    epic.registerClient('ferry-facade', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'l-1', alg: 'RS384', use: 'sig' }],
    });
    await epic.start();
    const ep = seedEpicSandbox(epic).patientId;
    epicId = `epic-${ep}`;
    epicbId = `epicb-${ep}`;

    const scopes: Record<Who, string[]> = {
      linker: ['connection:*:read', 'connection:epic-a:write', 'connection:millennium:write'],
      reader: ['connection:*:read'],
      epicWriter: ['connection:*:read', 'connection:epic-a:write'],
      cernerWriter: ['connection:*:read', 'connection:millennium:write'],
      epicOnly: ['connection:epic-a:read'],
    };
    const entries = [];
    for (const [who, s] of Object.entries(scopes)) {
      const t = await makeToken({ name: `app-${who}`, roles: ['viewer'], scopes: s }, 'test');
      tokens[who as Who] = t.secret;
      entries.push({ id: t.record.id, name: `app-${who}`, roles: ['viewer'], hash: t.record.hash, scopes: s });
    }
    const epicConn = `kind: epic, baseUrl: '${epic.baseUrl}', clientId: ferry-facade, auth: { privateKeyFile: ${keyFile}, kid: l-1 }`;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - '@ferry/plugin-cerner'
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'] }
connections:
  millennium: { kind: cerner, baseUrl: '${cerner.baseUrl}', clientId: ferry-sys, auth: { clientSecret: e2e-secret, scopes: [${CERNER_SCOPES.join(', ')}] }, facade: { identity: { linkedIdentifiers: true } } }
  epic-a: { ${epicConn}, facade: { identity: { linkedIdentifiers: true } } }
  epic-b: { ${epicConn}, idPrefix: epicb }
admin: { enabled: false, auth: { tokens: ${JSON.stringify(entries)} } }
api: { enabled: true, host: 127.0.0.1, port: 0, rateLimit: { qps: 1000, burst: 1000 } }
processing: { transformWorkers: 0 }
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
    (who: Who) => tokens[who],
  );
  const linkBody = (connection: string, id: string): Parameters => ({
    resourceType: 'Parameters',
    parameter: [
      { name: 'connection', valueString: connection },
      { name: 'patient', valueReference: { reference: `Patient/${id}` } },
    ],
  });
  const identities = async (who: Who, conn: string, id: string) => {
    const r = await call<Parameters>(who, 'GET', `/fhir/${conn}/Patient/${id}/$identities`);
    expect(r.status).toBe(200);
    return links(r.body);
  };
  const links = (p: Parameters) =>
    (p.parameter ?? [])
      .filter((x) => x.name === 'identity')
      .map(
        (x) =>
          `${x.part?.find((y) => y.name === 'connection')?.valueString}:${x.part?.find((y) => y.name === 'patient')?.valueReference?.reference?.replace(/^.*\/fhir\/[^/]+\/Patient\//, '')}`,
      )
      .sort();
  const outcomeOf = (p: Parameters) => p.parameter?.find((x) => x.name === 'outcome')?.valueCode;

  it('lists $identities, $link and $unlink for Patient in the CapabilityStatement', async () => {
    const r = await call<CapabilityStatement>('reader', 'GET', '/fhir/millennium/metadata');
    const patient = r.body.rest?.[0].resource?.find((x) => x.type === 'Patient');
    expect(patient?.operation?.map((o) => o.name)).toEqual(expect.arrayContaining(['identities', 'link', 'unlink']));
  });

  it('does not link the two patients by itself: they share no identifier', async () => {
    for (const [conn, id] of [
      ['epic-a', epicId],
      ['epic-b', epicbId],
      ['millennium', cernerId],
    ])
      expect((await call('reader', 'GET', `/fhir/${conn}/Patient/${id}`)).status).toBe(200);
    // The two Epic organisations share the MRN; Cerner's patient is on its own.
    expect(await identities('reader', 'epic-a', epicId)).toEqual([`epic-a:${epicId}`, `epic-b:${epicbId}`]);
    expect(await identities('reader', 'millennium', cernerId)).toEqual([`millennium:${cernerId}`]);
  });

  it('refuses a link without write on both connections (403, audited), whichever connection is in the URL', async () => {
    const tries: [Who, string, string, string, string][] = [
      ['reader', 'epic-a', epicId, 'millennium', cernerId],
      ['epicWriter', 'epic-a', epicId, 'millennium', cernerId],
      ['epicWriter', 'millennium', cernerId, 'epic-a', epicId],
      ['cernerWriter', 'epic-a', epicId, 'millennium', cernerId],
      ['cernerWriter', 'millennium', cernerId, 'epic-a', epicId],
      ['epicOnly', 'epic-a', epicId, 'millennium', cernerId],
    ];
    for (const [who, conn, id, other, otherId] of tries) {
      const r = await call<OperationOutcome>(
        who,
        'POST',
        `/fhir/${conn}/Patient/${id}/$link`,
        linkBody(other, otherId),
      );
      expect(`${who} ${conn}->${other}: ${r.status} ${r.body.issue?.[0].code}`).toBe(
        `${who} ${conn}->${other}: 403 forbidden`,
      );
      const u = await call(who, 'POST', `/fhir/${conn}/Patient/${id}/$unlink`, linkBody(other, otherId));
      expect(`${who} unlink ${conn}->${other}: ${u.status}`).toBe(`${who} unlink ${conn}->${other}: 403`);
    }
    expect(await identities('reader', 'millennium', cernerId)).toEqual([`millennium:${cernerId}`]);
    const denied = await engine.store.auditEntries({ action: 'access.denied' });
    // The handler's own refusals (write on the URL's connection, not on the other) name the missing scope.
    expect(denied.filter((d) => d.detail === 'needs connection:millennium:write ($link)').length).toBe(1);
    expect(denied.filter((d) => d.detail === 'needs connection:epic-a:write ($link)').length).toBe(1);
    expect(denied.filter((d) => d.target?.endsWith('/Patient/:id/$link')).length).toBe(tries.length);
  });

  it('refuses a link to a patient the vendor does not have, and a malformed body, with an OperationOutcome', async () => {
    const gone = await call<OperationOutcome>(
      'linker',
      'POST',
      `/fhir/epic-a/Patient/${epicId}/$link`,
      linkBody('millennium', 'cerner-99999999'),
    );
    expect(gone.status).toBe(422);
    expect(gone.body.issue?.[0]).toMatchObject({
      code: 'not-found',
      diagnostics: 'Patient/cerner-99999999 not found at connection millennium: nothing linked',
    });
    const missing = await call<OperationOutcome>(
      'linker',
      'POST',
      `/fhir/epic-a/Patient/epic-nosuchpatient/$link`,
      linkBody('millennium', cernerId),
    );
    expect(missing.status).toBe(404);
    const bad = await call<OperationOutcome>('linker', 'POST', `/fhir/epic-a/Patient/${epicId}/$link`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/${cernerId}` } }],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.issue?.[0].diagnostics).toMatch(/connection: valueString/);
    expect(await identities('linker', 'millennium', cernerId)).toEqual([`millennium:${cernerId}`]);
    const errors = (await engine.store.auditEntries({ action: 'facade.link' })).filter((a) => a.result === 'error');
    expect(errors.length).toBe(3);
  });

  it('links them with write on both: $identities and reads honour it from both ends, transitively; twice is fine', async () => {
    const r = await call<Parameters>(
      'linker',
      'POST',
      `/fhir/epic-a/Patient/${epicId}/$link`,
      linkBody('millennium', cernerId),
    );
    expect(r.status).toBe(200);
    expect(outcomeOf(r.body)).toBe('linked');
    const all = [`epic-a:${epicId}`, `epic-b:${epicbId}`, `millennium:${cernerId}`];
    expect(links(r.body)).toEqual(all);
    // From the other end, naming the patient by the URL $identities answers: already there.
    const again = await call<Parameters>('linker', 'POST', `/fhir/millennium/Patient/${cernerId}/$link`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `${engine.apiUrl}/fhir/epic-a/Patient/${epicId}` } }],
    });
    expect(again.status).toBe(200);
    expect(outcomeOf(again.body)).toBe('already-linked');
    // epic-b comes along through the MRN it shares with epic-a.
    expect(await identities('reader', 'millennium', cernerId)).toEqual(all);
    expect(await identities('reader', 'epic-b', epicbId)).toEqual(all);
    // A client sees only the connections it may read.
    expect(await identities('epicOnly', 'epic-a', epicId)).toEqual([`epic-a:${epicId}`]);
    const read = await call<Patient>('reader', 'GET', `/fhir/millennium/Patient/${cernerId}`);
    expect(read.body.identifier).toContainEqual({
      use: 'secondary',
      system: 'urn:ferry:connection:epic-a',
      value: epicId,
    });
    const ok = (await engine.store.auditEntries({ action: 'facade.link' })).filter((a) => a.result === 'ok');
    expect(ok.map((a) => a.detail)).toEqual(
      expect.arrayContaining([
        `Patient/${epicId} with=millennium/Patient/${cernerId} linked links=3`,
        `Patient/${cernerId} with=epic-a/Patient/${epicId} already-linked links=3`,
      ]),
    );
    const targets = new Set(['POST /fhir/epic-a/Patient/:id/$link', 'POST /fhir/millennium/Patient/:id/$link']);
    expect(ok.every((a) => a.principal.includes('app-linker') && targets.has(a.target!))).toBe(true);
  });

  it('unlinks (write on both), and unlinking again is fine', async () => {
    const r = await call<Parameters>(
      'linker',
      'POST',
      `/fhir/millennium/Patient/${cernerId}/$unlink`,
      linkBody('epic-a', epicId),
    );
    expect(r.status).toBe(200);
    expect(outcomeOf(r.body)).toBe('unlinked');
    expect(links(r.body)).toEqual([`millennium:${cernerId}`]);
    expect(await identities('reader', 'epic-a', epicId)).toEqual([`epic-a:${epicId}`, `epic-b:${epicbId}`]);
    const again = await call<Parameters>(
      'linker',
      'POST',
      `/fhir/millennium/Patient/${cernerId}/$unlink`,
      linkBody('epic-a', epicId),
    );
    expect(outcomeOf(again.body)).toBe('not-linked');
    expect((await engine.store.auditEntries({ action: 'facade.unlink' })).filter((a) => a.result === 'ok').length).toBe(
      2,
    );
  });
});
