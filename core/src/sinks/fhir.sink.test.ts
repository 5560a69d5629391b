import { createServer } from 'node:http';
import type { Bundle } from '@medplum/fhirtypes';
import { startFhirServer, type FhirTestServer } from '../../../test/support/fhir-server';
import { FerryError } from '../errors';
import { delivery, patientBundle, sinkContext } from './__fixtures__/delivery';
import {
  applyResolvedReferences,
  classifyFhirFailure,
  conditionalReferencesOf,
  dependencyOrder,
  deterministicUuid,
  FhirSink,
  toTransaction,
  type FhirSinkInput,
} from './fhir.sink';
import { defaultAuth } from './http.sink';

describe('FhirSink against a real FHIR R4 server', () => {
  let srv: FhirTestServer;
  beforeAll(async () => {
    srv = await startFhirServer();
  });
  afterAll(async () => {
    await srv.stop();
  });
  beforeEach(() => {
    srv.repo.clear();
    srv.setDelay(0);
    srv.failNext(0, 0);
  });

  const sink = (over: Partial<FhirSinkInput> = {}) =>
    new FhirSink(
      sinkContext<FhirSinkInput>({
        baseUrl: srv.baseUrl,
        timeoutMs: 2000,
        headers: {},
        excludeResourceTypes: [],
        maxTransactionEntries: 0,
        ...over,
        auth: { ...defaultAuth(), ...(over.auth ?? {}) },
      }),
    );
  const failure = (p: Promise<void>) =>
    p.then(
      () => {
        throw new Error('expected the delivery to fail');
      },
      (e) => e as FerryError,
    );

  it('passes deletions through: a conditional DELETE removes what an earlier message wrote, and a redelivery converges', async () => {
    const s = sink();
    const allergy = {
      resourceType: 'AllergyIntolerance',
      clinicalStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }],
      },
      identifier: [{ system: 'urn:test:allergy', value: 'AL-1' }],
      patient: { reference: 'urn:uuid:8c4f4b8e-0000-4000-8000-000000000001' },
    };
    const first = patientBundle('MRN-DEL');
    first.entry!.push({ fullUrl: 'urn:uuid:8c4f4b8e-0000-4000-8000-000000000002', resource: allergy as any });
    first.entry![0].fullUrl = 'urn:uuid:8c4f4b8e-0000-4000-8000-000000000001';
    await s.deliver(delivery(first));
    expect(await srv.count('AllergyIntolerance')).toBe(1);
    const second = patientBundle('MRN-DEL');
    second.entry!.push({ request: { method: 'DELETE', url: 'AllergyIntolerance?identifier=urn:test:allergy|AL-1' } });
    const d2 = delivery(second);
    expect(toTransaction(second, 'm').entry!.at(-1)).toEqual({
      request: { method: 'DELETE', url: 'AllergyIntolerance?identifier=urn:test:allergy|AL-1' },
    });
    await s.deliver(d2);
    expect(await srv.count('AllergyIntolerance')).toBe(0);
    await s.deliver({ ...d2, attempt: 2 });
    expect(await srv.count('AllergyIntolerance')).toBe(0);
    expect(await srv.count('Patient')).toBe(1);
    srv.requests.length = 0;
  });

  it('delivering the same message twice leaves exactly one Patient (and one Encounter pointing at it)', async () => {
    const s = sink();
    const d = delivery(patientBundle('MRN-100', { withEncounter: true }));
    await s.deliver(d);
    await s.deliver({ ...d, attempt: 2 });
    expect(await srv.count('Patient', 'identifier=urn:oid:2.16.840.1.113883.3.1|MRN-100')).toBe(1);
    expect(await srv.count('Patient')).toBe(1);
    expect(await srv.count('Encounter')).toBe(1);
    const [p] = await srv.search('Patient');
    const [e] = await srv.search<any>('Encounter');
    expect(e.subject.reference).toBe(`Patient/${p.id}`);
    const txs = srv.requests.filter((r) => r.method === 'POST' && r.url === '');
    expect(txs.map((r) => r.bundleType)).toEqual(['transaction', 'transaction']);
  });

  it('a later message for the same identifier updates the Patient instead of adding one', async () => {
    const s = sink();
    await s.deliver(delivery(patientBundle('MRN-200', { family: 'Before' })));
    await s.deliver(delivery(patientBundle('MRN-200', { family: 'After' })));
    const all = await srv.search<any>('Patient');
    expect(all).toHaveLength(1);
    expect(all[0].name[0].family).toBe('After');
  });

  it('resources without identifier are PUT by id; Type/id references are kept consistent', async () => {
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: { resourceType: 'Patient', id: 'p-local-1', identifier: [{ system: 'urn:mrn', value: 'MRN-300' }] },
        },
        {
          resource: {
            resourceType: 'Observation',
            id: 'obs-300',
            status: 'final',
            code: { text: 'heart rate' },
            subject: { reference: 'Patient/p-local-1' },
            valueQuantity: { value: 72, unit: '/min' },
          },
        },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'no id, no identifier' },
            subject: { reference: 'Patient/p-local-1' },
          },
        },
      ],
    };
    const s = sink();
    const d = delivery(bundle);
    await s.deliver(d);
    await s.deliver(d);
    const [p] = await srv.search('Patient');
    const obs = await srv.search<any>('Observation');
    expect(obs).toHaveLength(2);
    expect(obs.map((o) => o.id)).toContain('obs-300');
    for (const o of obs) expect(o.subject.reference).toBe(`Patient/${p.id}`);
  });

  it('excludeResourceTypes leaves those resources out', async () => {
    const b = patientBundle('MRN-350');
    b.entry!.push({
      resource: { resourceType: 'MessageHeader', eventCoding: { code: 'A01' }, source: { endpoint: 'urn:x' } },
    });
    await sink({ excludeResourceTypes: ['MessageHeader'] }).deliver(delivery(b));
    expect(await srv.count('MessageHeader')).toBe(0);
    expect(await srv.count('Patient')).toBe(1);
  });

  it('an invalid resource is rejected (4xx): not retryable, OperationOutcome kept, no PHI in the message', async () => {
    const b = patientBundle('MRN-SECRET-400', { family: 'Secretfamily', withEncounter: true });
    (b.entry![0].resource as any).notAField = 'Secretfamily';
    const e = await failure(sink().deliver(delivery(b)));
    expect(e).toBeInstanceOf(FerryError);
    expect(e.retryable).toBe(false);
    expect(e.details?.status).toBe(400);
    expect((e.details?.outcome as any).resourceType).toBe('OperationOutcome');
    expect(e.message).toMatch(/HTTP 400/);
    expect(e.message).not.toMatch(/Secret/);
    expect(await srv.count('Patient')).toBe(0);
    expect(await srv.count('Encounter')).toBe(0);
  });

  it('server down is retryable; after it comes back the delivery succeeds', async () => {
    const s = sink();
    const d = delivery(patientBundle('MRN-500'));
    await srv.pause();
    try {
      const e = await failure(s.deliver(d));
      expect(e.retryable).toBe(true);
      expect(['ECONNREFUSED', 'UND_ERR_SOCKET', 'ECONNRESET']).toContain(e.details?.networkCode);
    } finally {
      await srv.resume();
    }
    await s.deliver({ ...d, attempt: 2 });
    expect(await srv.count('Patient')).toBe(1);
  });

  it('503 with Retry-After and timeouts are retryable', async () => {
    srv.failNext(1, 503, { headers: { 'retry-after': '7' } });
    const e = await failure(sink().deliver(delivery(patientBundle('MRN-600'))));
    expect(e.retryable).toBe(true);
    expect(e.details).toMatchObject({ status: 503, retryAfterMs: 7000 });

    srv.setDelay(400);
    const t = await failure(sink({ timeoutMs: 100 }).deliver(delivery(patientBundle('MRN-601'))));
    expect(t.retryable).toBe(true);
    expect(t.code).toBe('FERRY_E_DELIVERY_TIMEOUT');

    // The engine giving the attempt up (deliveryTimeoutMs) aborts the request in flight, well
    // before the sink's own timeout.
    const abort = new AbortController();
    const reason = new Error('given up');
    setTimeout(() => abort.abort(reason), 100);
    const a = await failure(
      sink({ timeoutMs: 4000 }).deliver({ ...delivery(patientBundle('MRN-602')), signal: abort.signal }),
    );
    // Failed, and by the engine's abort (its reason is the cause): the server would have answered in 400 ms, the sink's own timeout is 4 s.
    expect(a.cause).toBe(reason);
    expect(a.retryable).toBe(true);
    srv.setDelay(0);
  });
});

describe('FhirSink auth', () => {
  let srv: FhirTestServer;
  beforeAll(async () => {
    srv = await startFhirServer({ bearerToken: 's3cret' });
  });
  afterAll(() => srv.stop());

  it('sends the bearer token; a wrong one is a permanent 401', async () => {
    const mk = (token: string) =>
      new FhirSink(
        sinkContext<FhirSinkInput>({
          baseUrl: srv.baseUrl,
          timeoutMs: 2000,
          headers: {},
          excludeResourceTypes: [],
          maxTransactionEntries: 0,
          auth: { ...defaultAuth(), type: 'bearer', token },
        }),
      );
    await mk('s3cret').deliver(delivery(patientBundle('MRN-700')));
    expect(await srv.count('Patient')).toBe(1);
    const e = (await mk('wrong')
      .deliver(delivery(patientBundle('MRN-701')))
      .catch((x) => x)) as FerryError;
    expect(e.retryable).toBe(false);
    expect(e.details?.status).toBe(401);
  });
});

describe('FhirSink client_credentials', () => {
  it('gets a token, and after a 401 fetches a new one and retries once', async () => {
    let issued = 0;
    const tokenServer = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        issued++;
        // the first token is one the FHIR server does not accept (revoked), the second is good
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ access_token: issued === 1 ? 'revoked' : 'good', expires_in: 3600 }));
      });
    });
    await new Promise<void>((r) => tokenServer.listen(0, '127.0.0.1', r));
    const srv = await startFhirServer({ bearerToken: 'good' });
    try {
      const port = (tokenServer.address() as { port: number }).port;
      const s = new FhirSink(
        sinkContext<FhirSinkInput>({
          baseUrl: srv.baseUrl,
          timeoutMs: 2000,
          headers: {},
          excludeResourceTypes: [],
          maxTransactionEntries: 0,
          auth: {
            ...defaultAuth(),
            type: 'client_credentials',
            tokenUrl: `http://127.0.0.1:${port}/token`,
            clientId: 'c',
            clientSecret: 's',
          },
        }),
      );
      await s.deliver(delivery(patientBundle('MRN-CC')));
      await s.deliver(delivery(patientBundle('MRN-CC2')));
      expect(issued).toBe(2);
      expect(await srv.count('Patient')).toBe(2);
      expect(srv.requests.map((r) => `${r.status} ${r.authorization}`)).toEqual([
        '401 Bearer revoked',
        '200 Bearer good',
        '200 Bearer good',
      ]);
    } finally {
      await srv.stop();
      tokenServer.closeAllConnections();
      await new Promise((r) => tokenServer.close(r));
    }
  });
});

describe('FhirSink against a server that caps transactions (Medplum: 8 conditional writes)', () => {
  let srv: FhirTestServer;
  beforeAll(async () => {
    srv = await startFhirServer({ medplumTransactionLimits: true });
  });
  afterAll(() => srv.stop());
  beforeEach(() => srv.repo.clear());

  /** Patient + Encounter + 10 Observations referencing both: 12 conditional writes. */
  const bigBundle = (mrn: string): Bundle => {
    const b = patientBundle(mrn, { withEncounter: true });
    const [pat, enc] = b.entry!;
    for (let i = 0; i < 10; i++)
      b.entry!.unshift({
        fullUrl: `urn:uuid:${deterministicUuid(mrn, String(i))}`,
        resource: {
          resourceType: 'Observation',
          status: 'final',
          identifier: [{ system: 'urn:obs', value: `${mrn}-${i}` }],
          code: { text: `obs ${i}` },
          subject: { reference: pat.fullUrl },
          encounter: { reference: enc.fullUrl },
        },
      });
    return b;
  };
  const mk = (max: number) =>
    new FhirSink(
      sinkContext<FhirSinkInput>({
        baseUrl: srv.baseUrl,
        timeoutMs: 2000,
        headers: {},
        excludeResourceTypes: [],
        maxTransactionEntries: max,
        auth: defaultAuth(),
      }),
    );

  it.each([
    ['configured maxTransactionEntries: 8', 8],
    ['automatic fallback after the server refuses', 0],
  ])('%s: written in dependency-ordered chunks, references resolved, idempotent', async (_n, max) => {
    const d = delivery(bigBundle('MRN-BIG'));
    await mk(max).deliver(d);
    await mk(max).deliver({ ...d, attempt: 2 });
    expect(await srv.count('Patient')).toBe(1);
    expect(await srv.count('Encounter')).toBe(1);
    const [p] = await srv.search('Patient');
    const [e] = await srv.search<any>('Encounter');
    expect(e.subject.reference).toBe(`Patient/${p.id}`);
    const obs = await srv.search<any>('Observation');
    expect(obs).toHaveLength(10);
    for (const o of obs) {
      expect(o.subject.reference).toBe(`Patient/${p.id}`);
      expect(o.encounter.reference).toBe(`Encounter/${e.id}`);
    }
  });
});

describe('FhirSink: references across messages, on a real FHIR R4 server', () => {
  let srv: FhirTestServer;
  beforeAll(async () => {
    srv = await startFhirServer();
  });
  afterAll(async () => {
    await srv.stop();
  });
  beforeEach(() => {
    srv.repo.clear();
    srv.failNext(0, 0);
  });
  const MRN = 'urn:oid:2.16.840.1.113883.3.1';
  const sink = (over: Partial<FhirSinkInput> = {}) =>
    new FhirSink(
      sinkContext<FhirSinkInput>({
        baseUrl: srv.baseUrl,
        timeoutMs: 2000,
        headers: {},
        excludeResourceTypes: [],
        maxTransactionEntries: 0,
        ...over,
        auth: defaultAuth(),
      }),
    );
  /** Message 1: a Patient with its canonical id and MRN. */
  const patientMsg = (mrn: string, id = `pat-${mrn}`) =>
    delivery({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: {
            resourceType: 'Patient',
            id,
            identifier: [{ system: MRN, value: mrn }],
            name: [{ family: 'Doe' }],
          },
        },
      ],
    });
  /** Message 2: an Observation about that Patient, referenced by `Type/id` and (optionally) its MRN. */
  const obsMsg = (mrn: string, subject: Record<string, unknown>, obsId = `obs-${mrn}`) =>
    delivery({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: {
            resourceType: 'Observation',
            id: obsId,
            identifier: [{ system: 'urn:obs', value: obsId }],
            status: 'final',
            code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
            subject: subject as never,
          },
        },
      ],
    });
  /** The stored Observation's subject reads back as the stored Patient (the reference resolves on the server). */
  const subjectResolves = async (mrn: string) => {
    const [p] = await srv.search('Patient', { identifier: `${MRN}|${mrn}` });
    const obs = await srv.search<any>('Observation');
    expect(obs).toHaveLength(1);
    const [type, id] = obs[0].subject.reference.split('/');
    const target = await srv.repo.readResource(type, id);
    expect(target.id).toBe(p.id);
    return { patient: p, obs: obs[0] };
  };

  it('identity: identifier — an Observation in message 2 referencing the message-1 Patient by identifier resolves to the stored Patient; redelivery creates nothing new', async () => {
    const m1 = patientMsg('MRN-X1');
    const m2 = obsMsg('MRN-X1', { reference: 'Patient/pat-MRN-X1', identifier: { system: MRN, value: 'MRN-X1' } });
    const mark = srv.requests.length;
    await sink().deliver(m1);
    // A fresh sink (empty cache): the reference is resolved by a search on the server.
    await sink().deliver(m2);
    const { patient } = await subjectResolves('MRN-X1');
    expect(patient.id).not.toBe('pat-MRN-X1'); // server-assigned id: `Patient/pat-MRN-X1` would have dangled
    expect(srv.requests.slice(mark).some((r) => r.method === 'GET' && r.url.startsWith('Patient?identifier='))).toBe(
      true,
    );
    const s = sink();
    await s.deliver({ ...m1, attempt: 2 });
    await s.deliver({ ...m2, attempt: 2 });
    expect(await srv.count('Patient')).toBe(1);
    expect(await srv.count('Observation')).toBe(1);
    await subjectResolves('MRN-X1');
  });

  it('identity: identifier — one sink learns the Patient id from its own write and needs no search; a logical reference (identifier + type, no reference) resolves too', async () => {
    const s = sink();
    await s.deliver(patientMsg('MRN-X2'));
    const before = srv.requests.length;
    await s.deliver(obsMsg('MRN-X2', { type: 'Patient', identifier: { system: MRN, value: 'MRN-X2' } }));
    expect(srv.requests.slice(before).map((r) => r.method)).toEqual(['POST']);
    await subjectResolves('MRN-X2');
  });

  it('a referenced resource not on the server yet: retryable failure (default), and the retry after message 1 converges; or a logical reference with unresolvedReferences: identifier', async () => {
    const m2 = obsMsg('MRN-X3', { reference: 'Patient/pat-MRN-X3', identifier: { system: MRN, value: 'MRN-X3' } });
    const e = await sink()
      .deliver(m2)
      .then(
        () => undefined,
        (x) => x as FerryError,
      );
    expect(e?.code).toBe('FERRY_E_DELIVERY_FHIR_REFERENCE_UNRESOLVED');
    expect(e?.retryable).toBe(true);
    expect(e?.message).not.toContain('MRN-X3'); // no identifier values (PHI) in errors
    expect(await srv.count('Observation')).toBe(0);
    await sink().deliver(patientMsg('MRN-X3'));
    await sink().deliver({ ...m2, attempt: 2 });
    await subjectResolves('MRN-X3');

    srv.repo.clear();
    await sink({ unresolvedReferences: 'identifier' }).deliver(
      obsMsg('MRN-X4', { reference: 'Patient/pat-MRN-X4', identifier: { system: MRN, value: 'MRN-X4' } }),
    );
    const [o] = await srv.search<any>('Observation');
    expect(o.subject).toEqual({ type: 'Patient', identifier: { system: MRN, value: 'MRN-X4' } });
  });

  it('a logical reference (identifier + type, e.g. a v2 parent order) to a resource the server does not have is written as it came, without failing', async () => {
    const mark = srv.requests.length;
    await sink().deliver(obsMsg('MRN-NONE', { type: 'Patient', identifier: { system: MRN, value: 'MRN-NONE' } }));
    const [o] = await srv.search<any>('Observation');
    expect(o.subject).toEqual({ type: 'Patient', identifier: { system: MRN, value: 'MRN-NONE' } });
    expect(srv.requests.slice(mark).map((r) => r.method)).toEqual(['GET', 'POST']);
    // One to a type without an identifier search parameter (the server ignores it and answers every
    // Binary): the answer is checked, nothing is linked, written as it came.
    await srv.repo.createResource({ resourceType: 'Binary', contentType: 'text/plain' });
    const m = obsMsg('MRN-NONE', { reference: 'Patient/x' }, 'obs-2');
    (m.bundle.entry![0].resource as any).focus = [{ type: 'Binary', identifier: { system: 'urn:bin', value: '1' } }];
    delete (m.bundle.entry![0].resource as any).subject;
    await sink().deliver(m);
    expect(srv.requests.at(-2)).toMatchObject({ method: 'GET', url: expect.stringMatching(/^Binary\?identifier=/) });
    expect((await srv.search<any>('Observation', { identifier: 'urn:obs|obs-2' }))[0].focus).toEqual([
      { type: 'Binary', identifier: { system: 'urn:bin', value: '1' } },
    ]);
  });

  it('two Patients with the same identifier: the conditional reference fails the message for good', async () => {
    await srv.repo.createResource({ resourceType: 'Patient', identifier: [{ system: MRN, value: 'MRN-DUP' }] });
    await srv.repo.createResource({ resourceType: 'Patient', identifier: [{ system: MRN, value: 'MRN-DUP' }] });
    // A logical reference (no literal reference) is left as it came.
    await sink().deliver(
      obsMsg('MRN-DUP', { type: 'Patient', identifier: { system: MRN, value: 'MRN-DUP' } }, 'obs-logical'),
    );
    expect((await srv.search<any>('Observation'))[0].subject).toEqual({
      type: 'Patient',
      identifier: { system: MRN, value: 'MRN-DUP' },
    });
    const e = await sink()
      .deliver(obsMsg('MRN-DUP', { reference: 'Patient/x', identifier: { system: MRN, value: 'MRN-DUP' } }))
      .then(
        () => undefined,
        (x) => x as FerryError,
      );
    expect(e?.code).toBe('FERRY_E_DELIVERY_FHIR_REFERENCE_AMBIGUOUS');
    expect(e?.retryable).toBe(false);
  });

  it('identity: id — resources are written at their canonical ids (update-as-create), so an Observation referencing Patient/<id> from an earlier message resolves; redelivery creates nothing new', async () => {
    const s = sink({ identity: 'id' });
    const mark = srv.requests.length;
    const m1 = patientMsg('MRN-Y1', 'epic-eABC123');
    const m2 = obsMsg('MRN-Y1', { reference: 'Patient/epic-eABC123' }, 'epic-obs1');
    await s.deliver(m1);
    await sink({ identity: 'id' }).deliver(m2);
    const { patient, obs } = await subjectResolves('MRN-Y1');
    expect(patient.id).toBe('epic-eABC123');
    expect(obs.id).toBe('epic-obs1');
    expect(obs.subject.reference).toBe('Patient/epic-eABC123');
    expect(srv.requests.slice(mark).filter((r) => r.method === 'GET')).toHaveLength(0); // nothing to resolve
    await s.deliver({ ...m1, attempt: 2 });
    await s.deliver({ ...m2, attempt: 2 });
    expect(await srv.count('Patient')).toBe(1);
    expect(await srv.count('Observation')).toBe(1);
  });

  it('on a server with referential integrity (like HAPI): a Type/id reference across messages without identifier is refused under identity: identifier, resolves with Reference.identifier or under identity: id', async () => {
    const strict = await startFhirServer({ referentialIntegrity: true });
    const mk = (over: Partial<FhirSinkInput> = {}) =>
      new FhirSink(
        sinkContext<FhirSinkInput>({
          baseUrl: strict.baseUrl,
          timeoutMs: 2000,
          headers: {},
          excludeResourceTypes: [],
          maxTransactionEntries: 0,
          ...over,
          auth: defaultAuth(),
        }),
      );
    try {
      await mk().deliver(patientMsg('MRN-S1'));
      const e = await mk()
        .deliver(obsMsg('MRN-S1', { reference: 'Patient/pat-MRN-S1' }))
        .then(
          () => undefined,
          (x) => x as FerryError,
        );
      expect(e?.code).toBe('FERRY_E_DELIVERY_FHIR_REJECTED'); // the problem: the Patient has a server-assigned id
      await mk().deliver(
        obsMsg('MRN-S1', { reference: 'Patient/pat-MRN-S1', identifier: { system: MRN, value: 'MRN-S1' } }),
      );
      const [p] = await strict.search('Patient');
      expect((await strict.search<any>('Observation'))[0].subject.reference).toBe(`Patient/${p.id}`);

      strict.repo.clear();
      await mk({ identity: 'id' }).deliver(patientMsg('MRN-S2', 'cerner-12724067'));
      await mk({ identity: 'id' }).deliver(obsMsg('MRN-S2', { reference: 'Patient/cerner-12724067' }));
      expect((await strict.search<any>('Observation'))[0].subject.reference).toBe('Patient/cerner-12724067');
    } finally {
      await strict.stop();
    }
  });

  it("identity: id on a server that refuses update-as-create fails for good with the server's reason", async () => {
    const closed = await startFhirServer({ updateCreate: false });
    try {
      const e = await new FhirSink(
        sinkContext<FhirSinkInput>({
          baseUrl: closed.baseUrl,
          timeoutMs: 2000,
          headers: {},
          excludeResourceTypes: [],
          maxTransactionEntries: 0,
          identity: 'id',
          auth: defaultAuth(),
        }),
      )
        .deliver(patientMsg('MRN-C1'))
        .then(
          () => undefined,
          (x) => x as FerryError,
        );
      expect(e?.code).toBe('FERRY_E_DELIVERY_FHIR_REJECTED');
      expect(e?.retryable).toBe(false);
      expect(e?.message).toMatch(/not-supported/);
    } finally {
      await closed.stop();
    }
  });

  it('conditionalReferences: server sends Type?identifier references untouched (for servers that resolve them)', async () => {
    const s = sink({ conditionalReferences: 'server' });
    await s.deliver(patientMsg('MRN-Z1'));
    // The test server (Medplum's router) does not resolve conditional references: the reference is stored as sent.
    await s.deliver(
      obsMsg('MRN-Z1', { reference: 'Patient/pat-MRN-Z1', identifier: { system: MRN, value: 'MRN-Z1' } }),
    );
    const [o] = await srv.search<any>('Observation');
    expect(o.subject.reference).toMatch(/^Patient\?identifier=/);
  });
});

describe('toTransaction and classifyFhirFailure', () => {
  it('is deterministic for a message and escapes identifier search values', () => {
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: { resourceType: 'Patient', identifier: [{ system: 'urn:a|b', value: 'x,y' }] } },
        { resource: { resourceType: 'Basic', code: { text: 'x' } } },
      ],
    };
    const t1 = toTransaction(b, 'm1');
    const t2 = toTransaction(b, 'm1');
    expect(t1).toEqual(t2);
    expect(t1.entry![0].request!.url).toBe(`Patient?identifier=${encodeURIComponent('urn:a\\|b|x\\,y')}`);
    expect(t1.entry![1].request!.url).toMatch(/^Basic\/[0-9a-f-]{36}$/);
    expect(toTransaction(b, 'm2').entry![1].request!.url).not.toBe(t1.entry![1].request!.url);
  });

  it('writes a resource that appears twice once, with references to both pointing at it', () => {
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          fullUrl: 'urn:uuid:aaaaaaaa-0000-4000-8000-000000000001',
          resource: { resourceType: 'Practitioner', identifier: [{ system: 'urn:npi', value: '1' }] },
        },
        {
          fullUrl: 'urn:uuid:aaaaaaaa-0000-4000-8000-000000000002',
          resource: { resourceType: 'Practitioner', identifier: [{ system: 'urn:npi', value: '1' }] },
        },
        {
          resource: {
            resourceType: 'Encounter',
            status: 'finished',
            class: { code: 'AMB' },
            participant: [
              { individual: { reference: 'urn:uuid:aaaaaaaa-0000-4000-8000-000000000001' } },
              { individual: { reference: 'urn:uuid:aaaaaaaa-0000-4000-8000-000000000002' } },
            ],
          },
        },
      ],
    };
    const t = toTransaction(b, 'm');
    expect(t.entry).toHaveLength(2);
    const refs = (t.entry![1].resource as any).participant.map((p: any) => p.individual.reference);
    expect(refs).toEqual([t.entry![0].fullUrl, t.entry![0].fullUrl]);
  });

  it('references by identifier: to an entry of the bundle -> its fullUrl; outside it -> a conditional reference (identity: id keeps Type/id)', () => {
    const b: Bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: { resourceType: 'Patient', id: 'p1', identifier: [{ system: 'urn:mrn', value: '1' }] } },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            code: { text: 'x' },
            subject: { type: 'Patient', identifier: { system: 'urn:mrn', value: '1' } },
            performer: [
              { reference: 'Practitioner/dr9', identifier: { system: 'urn:npi', value: '9' } },
              { reference: 'Organization/o1' },
            ],
          } as any,
        },
      ],
    };
    const t = toTransaction(b, 'm');
    const obs = t.entry![1].resource as any;
    expect(obs.subject.reference).toBe(t.entry![0].fullUrl);
    expect(obs.performer[0].reference).toBe(`Practitioner?identifier=${encodeURIComponent('urn:npi|9')}`);
    expect(obs.performer[1].reference).toBe('Organization/o1');
    expect(conditionalReferencesOf(t)).toEqual({ literal: new Set([obs.performer[0].reference]), logical: new Set() });
    const resolved = applyResolvedReferences(
      structuredClone(t),
      new Map([[obs.performer[0].reference, 'Practitioner/42']]),
    );
    expect((resolved.entry![1].resource as any).performer[0].reference).toBe('Practitioner/42');
    const logical = applyResolvedReferences(structuredClone(t), new Map([[obs.performer[0].reference, null]]));
    expect((logical.entry![1].resource as any).performer[0]).toEqual({
      type: 'Practitioner',
      identifier: { system: 'urn:npi', value: '9' },
    });

    const byId = toTransaction(b, 'm', { identity: 'id' });
    expect(byId.entry![0].request!.url).toBe('Patient/p1');
    expect((byId.entry![0].resource as any).id).toBe('p1');
    expect((byId.entry![1].resource as any).performer[0].reference).toBe('Practitioner/dr9');
  });

  it('dependencyOrder puts referenced entries first and survives cycles', () => {
    const e = (id: string, refs: string[]) => ({
      fullUrl: id,
      resource: {
        resourceType: 'Basic',
        code: { text: id },
        extension: refs.map((r) => ({ url: 'x', valueReference: { reference: r } })),
      } as any,
    });
    const order = dependencyOrder([e('a', ['b']), e('b', ['c']), e('c', []), e('x', ['y']), e('y', ['x'])]).map(
      (x) => x.fullUrl,
    );
    expect(order).toEqual(['c', 'b', 'a', 'y', 'x']);
  });

  it('classifies statuses with OperationOutcome issue codes', () => {
    const oo = (code: string) => [{ severity: 'error' as const, code: code as any }];
    expect(classifyFhirFailure(400, oo('structure'))).toBe(false);
    expect(classifyFhirFailure(412, oo('multiple-matches'))).toBe(false);
    expect(classifyFhirFailure(409, oo('conflict'))).toBe(true);
    expect(classifyFhirFailure(400, oo('transient'))).toBe(true);
    expect(classifyFhirFailure(500, oo('exception'))).toBe(true);
    expect(classifyFhirFailure(500, oo('structure'))).toBe(false);
    expect(classifyFhirFailure(503, [])).toBe(true);
    expect(classifyFhirFailure(429, [])).toBe(true);
    expect(classifyFhirFailure(404, oo('not-found'))).toBe(false);
  });
});
