import { SqliteMessageStore, silentLogger, type Delivery } from '@ferry/core';
import { FhirClient, VendorConnection, VendorConnections, resourceMessage } from '@ferry/fhir-vendor-kit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  CernerSimulator,
  CERNER_TENANT,
  cernerVital,
  seedCernerSandbox,
} from '../../../test/simulators/cerner/cerner-simulator';
import { connConfig, testKey } from '@ferry/fhir-vendor-kit';
import { sourceHarness } from '@ferry/testkit';
import { CernerBulkSource, CernerFhirTransform, CernerPollSource, CernerWriteBackSink, cernerProfile } from './index';

const SCOPES = ['system/Patient.read', 'system/Observation.read', 'system/Observation.write', 'system/Condition.read'];

describe('cerner plugin against the Oracle Health simulator', () => {
  const sim = new CernerSimulator({
    pageSize: 10,
    bulkPollsUntilDone: 1,
    bulkRetryAfterSec: 0,
    clients: [{ clientId: 'sys-acct', secret: 'top-secret', scopes: SCOPES }],
  });
  let patientId: string;
  let mergedId: string;
  let dir: string;
  const basic = (over: Partial<ReturnType<typeof connConfig>['auth']> = {}, baseUrl = sim.baseUrl) =>
    connConfig(
      { baseUrl, clientId: 'sys-acct' },
      { method: 'client_secret_basic', clientSecret: 'top-secret', scopes: SCOPES, ...over },
    );
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-cerner-'));
    await sim.start();
    ({ patientId, mergedId } = seedCernerSandbox(sim));
    for (let i = 0; i < 25; i++) sim.store.put(cernerVital(CERNER_TENANT, patientId, i));
    sim.groups.set('11ec-d16a-b40370f8-9d31-577f11a339c5', [patientId]);
  });
  afterAll(async () => {
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('system account auth', () => {
    it('discovers the host-scoped token URL and gets a Basic client_credentials token with every scope listed', async () => {
      const conn = new VendorConnection('cerner', basic());
      const token = await conn.accessToken();
      const req = sim.requests.find((r) => r.path.includes('/protocols/oauth2/profiles/smart-v1/token'))!;
      expect(req.path).toBe(
        `/tenants/${CERNER_TENANT}/hosts/127.0.0.1:${sim.server.port}/protocols/oauth2/profiles/smart-v1/token`,
      );
      expect(String(req.headers.authorization)).toMatch(/^Basic /);
      expect(sim.tokens.get(token)!.scopes).toEqual(SCOPES);
    });

    it('refuses a wildcard scope in the config before calling the server', () => {
      expect(() => new VendorConnection('cerner', basic({ scopes: ['system/*.read'] }))).toThrow(
        /list every scope explicitly/,
      );
    });

    it('reports an ungranted scope (invalid_scope) and a bad secret (invalid_client) clearly', async () => {
      const e1 = await new VendorConnection(
        'cerner',
        basic({ scopes: ['system/Patient.read', 'system/Encounter.read'] }),
        undefined,
      )
        .accessToken()
        .catch((e) => e);
      expect(e1.message).toMatch(/invalid_scope; request only scopes granted/);
      const e2 = await new VendorConnection(
        'cerner',
        connConfig(
          { baseUrl: sim.baseUrl, clientId: 'nobody' },
          { method: 'client_secret_basic', clientSecret: 'x', scopes: SCOPES },
        ),
      )
        .accessToken()
        .catch((e) => e);
      expect(e2.message).toMatch(/invalid_client; check the client id and secret/);
      expect(e2.kind).toBe('config');
    });

    it('refreshes a short-lived token ahead of its expiry', async () => {
      const short = new CernerSimulator({
        tokenTtlSec: 2,
        clients: [{ clientId: 'sys-acct', secret: 'top-secret', scopes: SCOPES }],
      });
      await short.start();
      try {
        const conn = new VendorConnection('cerner', basic({}, short.baseUrl));
        const t1 = await conn.accessToken();
        await new Promise((r) => setTimeout(r, 1100));
        const t2 = await conn.accessToken();
        expect(t2).not.toBe(t1);
        expect(short.tokens.get(t1)!.expiresAt).toBeGreaterThan(Date.now()); // the old one had not expired yet
      } finally {
        await short.stop();
      }
    });

    it('supports private_key_jwt as an option', async () => {
      const key = await testKey('cerner-k');
      sim.clients.set('jwt-acct', { clientId: 'jwt-acct', scopes: SCOPES, jwks: key.jwks });
      const conn = new VendorConnection(
        'cerner',
        connConfig(
          { baseUrl: sim.baseUrl, clientId: 'jwt-acct' },
          { privateKey: key.pem, kid: 'cerner-k', scopes: SCOPES },
        ),
      );
      await expect(conn.accessToken()).resolves.toEqual(expect.any(String));
    });
  });

  describe('FHIR calls', () => {
    it('pages with the opaque -pageContext link verbatim and restarts when the context expired', async () => {
      const fhir = new FhirClient(new VendorConnection('cerner', basic()));
      const ids: string[] = [];
      let restarts = 0;
      let n = 0;
      for await (const p of fhir.search('Observation', { patient: patientId, _count: '10' })) {
        ids.push(...p.resources.map((r) => r.id!));
        restarts = p.restarts;
        if (++n === 1) sim.sessions.expireAll();
      }
      expect(restarts).toBe(1);
      expect(new Set(ids).size).toBe(25);
      const next = sim.requests.filter((r) => r.url.includes('-pageContext='));
      expect(next.every((r) => r.url.includes('-pageDirection=NEXT'))).toBe(true);
      expect(
        sim.requests
          .filter((r) => r.path.endsWith('/Observation'))
          .every((r) => r.headers.accept === 'application/fhir+json'),
      ).toBe(true);
    });

    it('maps a 400 for a missing required parameter to a non-retryable error with the OperationOutcome text', async () => {
      const fhir = new FhirClient(new VendorConnection('cerner', basic()));
      const err = await (async () => {
        for await (const _ of fhir.search('Observation', {
          _lastUpdated: 'ge2020-01-01',
          date: 'ge2020-01-01',
          patient: patientId,
        }))
          void _;
      })().catch((e) => e);
      expect(err.retryable).toBe(false);
      expect(err.message).toMatch(/date and _lastUpdated cannot be used together/);
    });
  });

  describe('normalisation', () => {
    const t = new CernerFhirTransform({});
    const stored = (r: object) => {
      const m = resourceMessage(r as any, cernerProfile, sim.baseUrl);
      return {
        id: 'm',
        seq: 1,
        sourceId: 's',
        contentType: m.contentType,
        body: m.body,
        headers: m.headers!,
        receivedAt: new Date(),
        status: 'received' as const,
      };
    };
    it('re-labels the Cerner MRN, keeps the codeSet coding beside v2-0203, fixes string ranks, validates', () => {
      const p = t.toFhir(stored(sim.store.get('Patient', patientId)!), { logger: silentLogger() }).entry![0]
        .resource as any;
      expect(p.id).toBe(`cerner-${patientId}`);
      expect(p.identifier[0].system).toBe('urn:ferry:id:mrn');
      expect(p.identifier[0].value).toBe('6931');
      expect(p.identifier[0].type.coding.map((c: any) => c.system)).toEqual([
        `https://fhir.cerner.com/${CERNER_TENANT}/codeSet/4`,
        'http://terminology.hl7.org/CodeSystem/v2-0203',
      ]);
      expect(p.telecom[0].rank).toBe(1);
    });
    it('surfaces a merged (replaced-by) patient', () => {
      expect(t.extractHeaders(stored(sim.store.get('Patient', mergedId)!).body)).toMatchObject({
        trigger: 'replaced-by',
        replacedBy: `Patient/cerner-${patientId}`,
      });
    });
  });

  describe('sources on a real store', () => {
    it('polls Observations incrementally', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'poll.db'), logger: silentLogger() });
      await store.open();
      try {
        const { ctx } = sourceHarness(store, 'cerner-poll', {
          ...basic(),
          intervalMs: 60_000,
          patients: [patientId],
          resources: [{ type: 'Observation' }],
          pageSize: 500,
          initialSince: '',
        });
        const src = new CernerPollSource(ctx);
        expect(await src.cycle()).toBe(25);
        expect(sim.requests.filter((r) => r.path.endsWith('/Observation')).at(-1)!.url).toMatch(
          /-pageContext|_count=200/,
        );
        expect(await src.cycle()).toBe(0);
      } finally {
        await store.close();
      }
    });

    it('keeps polling the other resource types when one fails (missing scope -> 403)', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'poll2.db'), logger: silentLogger() });
      await store.open();
      try {
        const { ctx } = sourceHarness(store, 'cerner-poll2', {
          ...basic(),
          intervalMs: 60_000,
          patients: [patientId],
          resources: [{ type: 'Encounter' }, { type: 'Observation' }],
          pageSize: 50,
          initialSince: '',
        });
        const err = await new CernerPollSource(ctx).cycle().catch((e) => e);
        expect(err.message).toMatch(/1 of 2 resource types failed/);
        expect(err.retryable).toBe(false);
        expect(await store.listMessages({ sourceId: 'cerner-poll2', limit: 100 })).toHaveLength(25);
      } finally {
        await store.close();
      }
    });

    it('runs a Group export through the 307 storage redirect without forwarding Authorization', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'bulk.db'), logger: silentLogger() });
      await store.open();
      try {
        const { ctx } = sourceHarness(store, 'cerner-bulk', {
          ...basic(),
          bulk: {
            level: 'group',
            groupId: '11ec-d16a-b40370f8-9d31-577f11a339c5',
            types: ['Patient', 'Observation'],
            typeFilter: [],
            intervalMs: 0,
            pollMinMs: 20,
            pollMaxMs: 1000,
            batchSize: 100,
            deleteWhenDone: true,
          },
        } as any);
        const src = new CernerBulkSource(ctx);
        expect(await src.cycle()).toBe(26);
        const s3 = sim.requests.filter((r) => r.path.startsWith('/s3/'));
        expect(s3.length).toBeGreaterThan(0);
        expect(s3.every((r) => r.status === 200 && !r.headers.authorization)).toBe(true);
        expect(await store.getCheckpoint('cerner-bulk', 'bulk:since')).toMatch(/^\d{4}-/);
      } finally {
        await store.close();
      }
    });
  });

  it('refuses at startup a bulk export whose types lack a system read scope', () => {
    const { ctx } = sourceHarness({} as any, 'cb', {
      ...basic(),
      bulk: {
        level: 'group',
        groupId: 'g',
        types: ['Encounter'],
        typeFilter: [],
        intervalMs: 0,
        pollMinMs: 20,
        pollMaxMs: 1000,
        batchSize: 100,
        deleteWhenDone: true,
      },
    } as any);
    expect(() => new CernerBulkSource(ctx)).toThrow(/needs system\/Encounter.read in auth.scopes/);
  });

  it('runs one export at a time per client and tenant in this engine', async () => {
    const bulkCfg = {
      ...basic(),
      bulk: {
        level: 'group',
        groupId: '11ec-d16a-b40370f8-9d31-577f11a339c5',
        types: ['Patient'],
        typeFilter: [],
        intervalMs: 0,
        pollMinMs: 20,
        pollMaxMs: 1000,
        batchSize: 100,
        deleteWhenDone: true,
      },
    } as any;
    const store = new SqliteMessageStore({ path: path.join(dir, 'busy.db'), logger: silentLogger() });
    await store.open();
    try {
      // the engine's VendorConnections (the plugin provides it; the engine injects it into both)
      const shared = new VendorConnections();
      const a = new CernerBulkSource(sourceHarness(store, 'busy-a', bulkCfg).ctx, shared);
      const b = new CernerBulkSource(sourceHarness(store, 'busy-b', bulkCfg).ctx, shared);
      const [ra, rb] = await Promise.allSettled([a.cycle(), b.cycle()]);
      expect(ra.status).toBe('fulfilled');
      expect(rb.status === 'rejected' && (rb.reason as { code: string }).code).toBe('FERRY_E_VENDOR_EXPORT_BUSY');
    } finally {
      await store.close();
    }
  });

  it('starts the export over when its files expired mid-download (404)', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'expired.db'), logger: silentLogger() });
    await store.open();
    try {
      const { ctx } = sourceHarness(store, 'cerner-exp', {
        ...basic(),
        bulk: {
          level: 'group',
          groupId: '11ec-d16a-b40370f8-9d31-577f11a339c5',
          types: ['Patient', 'Observation'],
          typeFilter: [],
          intervalMs: 0,
          pollMinMs: 20,
          pollMaxMs: 1000,
          batchSize: 100,
          deleteWhenDone: true,
        },
      } as any);
      const src = new CernerBulkSource(ctx);
      const kicks = () => sim.requests.filter((r) => r.path.endsWith('/$export')).length;
      const k0 = kicks();
      sim.server.inject({
        match: '/bulk-export/files/',
        status: 404,
        times: 1,
        body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] },
      });
      await expect(src.cycle()).rejects.toMatchObject({ retryable: false });
      expect(await store.getCheckpoint('cerner-exp', 'bulk:job')).toBe('');
      expect(await src.cycle()).toBe(26);
      expect(kicks()).toBe(k0 + 2);
    } finally {
      await store.close();
    }
  });

  describe('write-back', () => {
    const delivery = (resource: object): Delivery => ({
      deliveryId: 'd',
      attempt: 1,
      routeId: 'r',
      bundle: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: resource as any }] },
      message: {
        id: 'm',
        seq: 1,
        sourceId: 's',
        contentType: 'x',
        headers: {},
        receivedAt: new Date(),
        status: 'routed',
      },
    });
    const sink = () =>
      new CernerWriteBackSink({
        id: 'cerner-out',
        config: { ...basic(), resourceTypes: ['Observation'], mrnSystem: '', canonicalMrnSystem: 'urn:ferry:id:mrn' },
        logger: silentLogger(),
      });

    it('updates a Cerner resource with If-Match, re-reading and retrying once on a 409', async () => {
      const vital = sim.store.get('Observation', 'VS-197292857')!;
      const canonical = {
        ...vital,
        id: 'cerner-VS-197292857',
        subject: { reference: `Patient/cerner-${patientId}` },
        encounter: undefined,
        status: 'amended',
        meta: undefined,
      };
      sim.server.inject({
        match: '/Observation/VS-197292857',
        method: 'PUT',
        status: 409,
        times: 1,
        body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'conflict' }] },
      });
      await sink().deliver(delivery(canonical));
      const puts = sim.requests.filter((r) => r.method === 'PUT' && r.path.endsWith('/Observation/VS-197292857'));
      expect(puts).toHaveLength(2);
      expect(puts.every((p) => /^W\/"\d+"$/.test(String(p.headers['if-match'])))).toBe(true);
      expect(sim.store.get('Observation', 'VS-197292857')!.status).toBe('amended');
    });

    it('creates a new resource and fails permanently on a Cerner 500 fatal/required body', async () => {
      const obs = {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'Pulse' },
        subject: { reference: `Patient/cerner-${patientId}` },
        valueQuantity: { value: 70 },
      };
      const before = sim.store.all('Observation').length;
      await sink().deliver(delivery(obs));
      expect(sim.store.all('Observation')).toHaveLength(before + 1);
      const err = await sink()
        .deliver(delivery({ ...obs, status: undefined }))
        .catch((e) => e);
      expect(err.retryable).toBe(false);
      expect(err.code).toBe('FERRY_E_DELIVERY_WRITEBACK_REJECTED');
    });
  });
});
