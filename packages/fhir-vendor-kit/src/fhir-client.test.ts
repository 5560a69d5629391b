import { FerryError } from '@ferry/core';
import { EpicSimulator, epicVital, seedEpicSandbox } from '../../../test/simulators/epic/epic-simulator';
import { connConfig, testKey } from './testing';
import { VendorConnection } from './connection';
import { FhirClient } from './fhir-client';

describe('FHIR client (fhir-kit-client paging under the vendor call policy) against the Epic simulator', () => {
  const sim = new EpicSimulator({ pageSize: 10 });
  let client: FhirClient;
  let patientId: string;
  beforeAll(async () => {
    const key = await testKey('k1');
    sim.registerClient('fhir-client', key.jwks);
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
    for (let i = 0; i < 35; i++) sim.store.put(epicVital(patientId, i));
    client = new FhirClient(
      new VendorConnection(
        'epic',
        connConfig({ baseUrl: sim.baseUrl, clientId: 'fhir-client' }, { privateKey: key.pem, kid: 'k1' }),
      ),
    );
  });
  afterAll(() => sim.stop());

  const collect = async (type: string, params: Record<string, string>) => {
    const pages = [];
    for await (const p of client.search(type, params)) pages.push(p);
    return pages;
  };

  it('follows link[next] verbatim across pages, Accept fhir+json on every call', async () => {
    const before = sim.requests.length;
    const pages = await collect('Observation', { patient: patientId, category: 'vital-signs' });
    expect(pages.map((p) => p.resources.length)).toEqual([10, 10, 10, 5]);
    expect(new Set(pages.flatMap((p) => p.resources.map((r) => r.id))).size).toBe(35);
    const calls = sim.requests.slice(before).filter((r) => r.path.endsWith('/Observation'));
    expect(calls).toHaveLength(4);
    expect(calls.every((c) => c.headers.accept === 'application/fhir+json')).toBe(true);
    expect(calls.every((c) => typeof c.headers['x-request-id'] === 'string')).toBe(true);
    expect(calls[1].url).toMatch(/sessionID=.+&pageNumber=2$/);
  });

  it('reads a searchset holding only a 4101 OperationOutcome as an empty result', async () => {
    const pages = await collect('Observation', { patient: patientId, category: 'laboratory' });
    expect(pages).toHaveLength(1);
    expect(pages[0].resources).toEqual([]);
  });

  it('keeps unknown-parameter warnings (4122) out of the data', async () => {
    const pages = await collect('Patient', { _id: patientId, 'made-up': 'x' });
    expect(pages[0].resources.map((r) => r.resourceType)).toEqual(['Patient']);
    expect(pages[0].warnings.some((w) => w.vendorCodes?.includes('4122'))).toBe(true);
  });

  it('restarts the search when the paging session expired (4113), without repeating resources', async () => {
    const seen: string[] = [];
    let restarts = 0;
    let n = 0;
    for await (const p of client.search('Observation', { patient: patientId, category: 'vital-signs' })) {
      seen.push(...p.resources.map((r) => r.id!));
      restarts = p.restarts;
      if (++n === 2) sim.sessions.expireAll();
    }
    expect(restarts).toBe(1);
    expect(seen).toHaveLength(35);
    expect(new Set(seen).size).toBe(35);
    const expired = sim.requests.filter((r) => r.status === 400 && r.url.includes('sessionID'));
    expect(expired.length).toBeGreaterThanOrEqual(1);
  });

  it('maps a missing required parameter (4111) to a non-retryable input error', async () => {
    const err = await collect('Observation', { patient: patientId }).catch((e) => e);
    expect(FerryError.is(err)).toBe(true);
    expect(err.retryable).toBe(false);
    expect(err.details.vendorCodes).toEqual(['4111']);
    expect(err.message).toMatch(/4111/);
  });

  it('retries a 429 honouring Retry-After, then succeeds', async () => {
    sim.server.inject({ match: '/Condition', status: 429, retryAfter: '1', times: 1 });
    const t0 = Date.now();
    const pages = await collect('Condition', { patient: patientId });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(pages[0].resources).toEqual([]);
  });

  it('does not retry a break-the-glass denial (4130)', async () => {
    sim.server.inject({
      match: '/Encounter',
      status: 403,
      times: 3,
      body: {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'fatal',
            code: 'security',
            details: { coding: [{ system: 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369', code: '4130' }] },
          },
        ],
      },
    });
    const before = sim.requests.filter((r) => r.path.endsWith('/Encounter')).length;
    const err = await collect('Encounter', { patient: patientId }).catch((e) => e);
    expect(err.code).toBe('FERRY_E_VENDOR_POLICY_DENIED');
    expect(err.retryable).toBe(false);
    expect(sim.requests.filter((r) => r.path.endsWith('/Encounter')).length).toBe(before + 1);
    sim.server.clearFaults();
  });

  it('treats an HTML 404 (misrouted path) as a non-retryable non-FHIR answer', async () => {
    const conn = new VendorConnection(
      'epic',
      connConfig(
        {
          baseUrl: sim.baseUrl.replace('/api/FHIR/R4', '/api/FHIR/R5'),
          clientId: 'fhir-client',
          tokenUrl: sim.tokenUrl,
        },
        { privateKey: client.conn.cfg.auth.privateKey, kid: 'k1' },
      ),
    );
    const c2 = new FhirClient(conn);
    const err = await (async () => {
      for await (const _ of c2.search('Patient', { _id: 'x' })) void _;
    })().catch((e) => e);
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/non-FHIR|HTML|non-JSON/);
  });

  it('self-throttles to the configured rate per host (Epic publishes no limits)', async () => {
    const key = await testKey('rl');
    sim.registerClient('rl-client', key.jwks);
    const conn = new VendorConnection(
      'epic',
      connConfig(
        { baseUrl: sim.baseUrl, clientId: 'rl-client', rateLimit: { qps: 5, burst: 1 } },
        { privateKey: key.pem, kid: 'rl' },
      ),
    );
    await conn.accessToken();
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 6 }, () => conn.http.request({ url: `Patient/${patientId}` })));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950); // 6 calls at 5/s with a burst of 1
  });
});
