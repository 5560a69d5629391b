/**
 * A patient's identity across connections through the FHIR facade, end to end on real sockets
 * (engine from YAML, the Epic and Cerner simulators): two EHRs that share no MRN system are linked
 * by an identifier system configured on both connections (`facade.identity.linkSystems`: here the
 * Epic enterprise id, which the Cerner tenant keeps as an external id); `$identities` goes from one
 * connection's id to the other's; with `facade.identity.linkedIdentifiers` a Patient read carries the
 * linked ids as identifiers; a client sees only the connections its scopes let it read; audited.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Parameters, Patient } from '@medplum/fhirtypes';
import { exportJWK } from 'jose';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { CernerSimulator, seedCernerSandbox } from '../simulators/cerner/cerner-simulator';
import { EpicSimulator, EPIC_EPI_OID, EPIC_MRN_OID, seedEpicSandbox } from '../simulators/epic/epic-simulator';
import { facadeCaller } from '../support/facade';

describe('FHIR facade identity across connections (Epic and Cerner linked by a configured identifier system)', () => {
  const CERNER_SCOPES = ['system/Patient.read'];
  const cerner = new CernerSimulator({
    clients: [{ clientId: 'ferry-sys', secret: 'e2e-secret', scopes: CERNER_SCOPES }],
  });
  const epic = new EpicSimulator();
  let engine: Engine;
  let dir: string;
  let cernerPatient: string;
  let epicPatient: string;
  const tokens: Record<'both' | 'cernerOnly' | 'epicOnly', string> = {} as any;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-identity-'));
    await cerner.start();
    cernerPatient = seedCernerSandbox(cerner).patientId;
    // The Cerner tenant keeps the patient's Epic enterprise id (E4007) as an external identifier.
    const cp = cerner.store.get('Patient', cernerPatient)!;
    cerner.store.put({
      ...cp,
      meta: undefined,
      identifier: [...cp.identifier, { use: 'secondary', system: EPIC_EPI_OID, value: 'E4007' }],
    });
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    epic.registerClient('ferry-facade', {
      keys: [{ ...(await exportJWK(createPublicKey(privateKey))), kid: 'i-1', alg: 'RS384', use: 'sig' }],
    });
    await epic.start();
    epicPatient = seedEpicSandbox(epic).patientId;

    const mk = async (name: string, scopes: string[]) => {
      const t = await makeToken({ name, roles: ['viewer'], scopes }, 'test');
      return { secret: t.secret, entry: { id: t.record.id, name, roles: ['viewer'], hash: t.record.hash, scopes } };
    };
    const made = {
      both: await mk('app-both', ['connection:epic-a:read', 'connection:millennium:read']),
      cernerOnly: await mk('app-cerner', ['connection:millennium:read']),
      epicOnly: await mk('app-epic', ['connection:epic-a:read']),
    };
    for (const [k, v] of Object.entries(made)) tokens[k as keyof typeof tokens] = v.secret;
    const identity = `identity: { linkSystems: ['${EPIC_EPI_OID}'], linkedIdentifiers: true }`;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - '@ferry/plugin-cerner'
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'] }
connections:
  millennium: { kind: cerner, baseUrl: '${cerner.baseUrl}', clientId: ferry-sys, auth: { clientSecret: e2e-secret, scopes: [${CERNER_SCOPES.join(', ')}] }, facade: { ${identity} } }
  epic-a: { kind: epic, baseUrl: '${epic.baseUrl}', clientId: ferry-facade, auth: { privateKeyFile: ${keyFile}, kid: i-1 }, facade: { ${identity} } }
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
  const links = (p: Parameters) =>
    (p.parameter ?? [])
      .map(
        (x) =>
          `${x.part?.find((y) => y.name === 'connection')?.valueString}:${x.part?.find((y) => y.name === 'patient')?.valueReference?.reference?.replace(/^.*\/fhir\/[^/]+\//, '')}`,
      )
      .sort();

  it('goes from the Epic id to the Cerner id and back ($identities), by the configured identifier system', async () => {
    // Each connection records the patient when it answers it.
    expect((await call<Patient>('both', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}`)).status).toBe(200);
    expect((await call<Patient>('both', 'GET', `/fhir/millennium/Patient/cerner-${cernerPatient}`)).status).toBe(200);
    const fromEpic = await call<Parameters>('both', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}/$identities`);
    expect(fromEpic.status).toBe(200);
    expect(links(fromEpic.body)).toEqual([
      `epic-a:Patient/epic-${epicPatient}`,
      `millennium:Patient/cerner-${cernerPatient}`,
    ]);
    const fromCerner = await call<Parameters>(
      'both',
      'GET',
      `/fhir/millennium/Patient/cerner-${cernerPatient}/$identities`,
    );
    expect(links(fromCerner.body)).toEqual(links(fromEpic.body));
    expect(
      (await engine.store.auditEntries({ action: 'facade.identities' })).filter((a) => a.result === 'ok').length,
    ).toBeGreaterThanOrEqual(2);
  });

  it('adds the linked ids to a Patient read (linkedIdentifiers), only for connections the client may read', async () => {
    const both = await call<Patient>('both', 'GET', `/fhir/millennium/Patient/cerner-${cernerPatient}`);
    expect(both.body.identifier).toContainEqual({
      use: 'secondary',
      system: 'urn:ferry:connection:epic-a',
      value: `epic-${epicPatient}`,
    });
    const epicSide = await call<Patient>('both', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}`);
    expect(epicSide.body.identifier).toContainEqual({
      use: 'secondary',
      system: 'urn:ferry:connection:millennium',
      value: `cerner-${cernerPatient}`,
    });
    const only = await call<Patient>('cernerOnly', 'GET', `/fhir/millennium/Patient/cerner-${cernerPatient}`);
    expect(only.status).toBe(200);
    expect(only.body.identifier?.some((i) => i.system?.startsWith('urn:ferry:connection:'))).toBe(false);
    const onlyLinks = await call<Parameters>('epicOnly', 'GET', `/fhir/epic-a/Patient/epic-${epicPatient}/$identities`);
    expect(links(onlyLinks.body)).toEqual([`epic-a:Patient/epic-${epicPatient}`]);
    const reads = await engine.store.auditEntries({ action: 'facade.read' });
    expect(
      reads.some((a) => a.detail?.includes(`Patient/cerner-${cernerPatient}`) && a.detail.includes('links=1')),
    ).toBe(true);
    expect(
      reads.some((a) => a.detail?.includes(`Patient/cerner-${cernerPatient}`) && a.detail.includes('links=0')),
    ).toBe(true);
  });
});
