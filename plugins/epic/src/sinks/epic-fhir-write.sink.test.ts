import { silentLogger, type Delivery } from '@ferry/core';
import { EpicSimulator, seedEpicSandbox } from '../../../../test/simulators/epic/epic-simulator';
import { connConfig, testKey } from '@ferry/fhir-vendor-kit';
import { EpicWriteBackSink } from './epic-fhir-write.sink';

describe('epic write-back sink', () => {
  const sim = new EpicSimulator();
  let sink: EpicWriteBackSink;
  let patientId: string;
  beforeAll(async () => {
    const key = await testKey('wb');
    sim.registerClient('wb', key.jwks);
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
    const config = {
      ...connConfig({ baseUrl: sim.baseUrl, clientId: 'wb' }, { privateKey: key.pem, kid: 'wb' }),
      resourceTypes: ['Observation', 'Condition'],
      mrnSystem: '',
      canonicalMrnSystem: 'urn:ferry:id:mrn',
    };
    sink = new EpicWriteBackSink({ id: 'epic-out', config, logger: silentLogger() });
  });
  afterAll(() => sim.stop());

  const delivery = (resources: object[]): Delivery => ({
    deliveryId: 'd1',
    attempt: 1,
    routeId: 'r',
    bundle: {
      resourceType: 'Bundle',
      type: 'collection',
      entry: resources.map((resource) => ({ resource: resource as any })),
    },
    message: {
      id: 'm1',
      seq: 1,
      sourceId: 's',
      contentType: 'x',
      headers: {},
      receivedAt: new Date(),
      status: 'routed',
    },
  });
  const obs = (pid: string) => ({
    resourceType: 'Observation',
    id: 'canon-1',
    meta: { tag: [{ system: 'urn:ferry:source-vendor', code: 'hl7v2' }] },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${pid}` },
    valueQuantity: { value: 72, unit: '/min' },
  });

  it('creates an Observation at Epic with the vendor patient id', async () => {
    const before = sim.store.all('Observation').length;
    await sink.deliver(delivery([obs(`epic-${patientId}`), { resourceType: 'Patient', id: `epic-${patientId}` }]));
    const all = sim.store.all('Observation');
    expect(all).toHaveLength(before + 1);
    expect(all.at(-1)!.subject.reference).toBe(`Patient/${patientId}`);
    expect(all.at(-1)!.meta.tag).toBeUndefined();
    const post = sim.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/Observation')).at(-1)!;
    expect(post.headers['content-type']).toBe('application/fhir+json');
  });

  it('refuses (permanently) a resource whose patient is not an Epic patient', async () => {
    const err = await sink.deliver(delivery([obs('hl7-123')])).catch((e) => e);
    expect(err.code).toBe('FERRY_E_DELIVERY_WRITEBACK_UNMAPPED_REFERENCE');
    expect(err.retryable).toBe(false);
  });

  it('maps an Epic 4100 rejection to a permanent delivery error and a 503 to a retryable one', async () => {
    const err = await sink.deliver(delivery([obs('epic-unknownPatient')])).catch((e) => e);
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/4100/);
    sim.server.inject({ match: '/Observation', method: 'POST', status: 503, times: 1 });
    const err2 = await sink.deliver(delivery([obs(`epic-${patientId}`)])).catch((e) => e);
    expect(err2.retryable).toBe(true);
    expect(err2.details.outcomeUnknown).toBe(true); // a POST is not blindly retried
  });

  it('refuses resource types Epic does not accept writes for', () => {
    expect(
      () =>
        new EpicWriteBackSink({
          id: 'x',
          config: { ...(sink as any).ctx.config, resourceTypes: ['Patient'] },
          logger: silentLogger(),
        }),
    ).toThrow(/does not accept writes of Patient/);
  });

  it('on a retry, reconciles by reading: an Observation already created (same identifier) is not created twice', async () => {
    const withId = {
      ...obs(`epic-${patientId}`),
      identifier: [{ system: 'urn:example:lab-result', value: 'R-42' }],
      category: [
        { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] },
      ],
    };
    const count = () => sim.store.all('Observation').filter((o) => o.identifier?.[0]?.value === 'R-42').length;
    await sink.deliver(delivery([withId]));
    expect(count()).toBe(1);
    await sink.deliver({ ...delivery([withId]), attempt: 2 });
    expect(count()).toBe(1);
    // A 409 on create: looked up, found, treated as delivered.
    sim.server.inject({ match: '/Observation', method: 'POST', status: 409, times: 1 });
    await sink.deliver(delivery([withId]));
    expect(count()).toBe(1);
    // Epic ignores the identifier parameter (4122): another result of the patient is not a match.
    const other = { ...withId, identifier: [{ system: 'urn:example:lab-result', value: 'R-43' }] };
    await sink.deliver({ ...delivery([other]), attempt: 3 });
    expect(sim.store.all('Observation').filter((o) => o.identifier?.[0]?.value === 'R-43')).toHaveLength(1);
  });
});
