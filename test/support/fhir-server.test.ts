import { startFhirServer, type FhirTestServer } from './fhir-server';

const json = 'application/fhir+json';
const patient = (mrn: string, family = 'Testpatient') => ({
  resourceType: 'Patient',
  identifier: [{ system: 'urn:oid:1.2.3.4', value: mrn }],
  name: [{ family, given: ['Ada'] }],
  gender: 'female',
});

describe('test FHIR server (medplum fhir-router over http)', () => {
  let srv: FhirTestServer;
  beforeAll(async () => {
    srv = await startFhirServer();
  });
  afterAll(async () => {
    await srv.stop();
  });

  const req = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${srv.baseUrl}/${path}`, {
      method,
      headers: { accept: json, ...(body !== undefined ? { 'content-type': json } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });

  it('conditional update by identifier creates one Patient and updates it on repeat', async () => {
    const r1 = await req('PUT', 'Patient?identifier=urn:oid:1.2.3.4|MRN-1', patient('MRN-1'));
    expect(r1.status).toBe(201);
    const p1 = (await r1.json()) as any;
    const r2 = await req('PUT', 'Patient?identifier=urn:oid:1.2.3.4|MRN-1', { ...patient('MRN-1'), gender: 'other' });
    expect(r2.status).toBe(200);
    const p2 = (await r2.json()) as any;
    expect(p2.id).toBe(p1.id);
    expect(await srv.count('Patient', 'identifier=urn:oid:1.2.3.4|MRN-1')).toBe(1);
    const read = (await (await req('GET', `Patient/${p1.id}`)).json()) as any;
    expect(read.gender).toBe('other');
  });

  it('create, read, search, delete with real status codes and OperationOutcomes', async () => {
    const c = await req('POST', 'Patient', patient('MRN-2'));
    expect(c.status).toBe(201);
    expect(c.headers.get('location')).toMatch(/\/Patient\/[\w-]+\/_history\//);
    const created = (await c.json()) as any;
    const s = (await (await req('GET', 'Patient?identifier=urn:oid:1.2.3.4|MRN-2')).json()) as any;
    expect(s.resourceType).toBe('Bundle');
    expect(s.entry).toHaveLength(1);
    const d = await req('DELETE', `Patient/${created.id}`);
    expect(d.status).toBe(200);
    const gone = await req('GET', `Patient/${created.id}`);
    expect([404, 410]).toContain(gone.status);
    const missing = await req('GET', 'Patient/does-not-exist');
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as any).resourceType).toBe('OperationOutcome');
  });

  it('rejects invalid resources and bad JSON with 400 OperationOutcome', async () => {
    const bad = await req('POST', 'Patient', { resourceType: 'Patient', gender: 'female', notAField: 1 });
    expect(bad.status).toBe(400);
    const oo = (await bad.json()) as any;
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(oo)).toContain('notAField');
    const garbage = await req('POST', 'Patient', '{not json');
    expect(garbage.status).toBe(400);
  });

  it('transaction resolves urn:uuid references, is idempotent with conditional updates, and rolls back on failure', async () => {
    const pid = 'urn:uuid:6a1c1f9e-4a7d-4b8a-9d4e-0b6f3f7d2a11';
    const tx = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: pid,
          resource: patient('MRN-3'),
          request: { method: 'PUT', url: 'Patient?identifier=urn:oid:1.2.3.4|MRN-3' },
        },
        {
          fullUrl: 'urn:uuid:0d3c7a52-83b1-4f39-a1a0-5c2f0f7b9e42',
          resource: {
            resourceType: 'Encounter',
            status: 'in-progress',
            class: { code: 'IMP' },
            identifier: [{ system: 'urn:visit', value: 'V3' }],
            subject: { reference: pid },
          },
          request: { method: 'PUT', url: 'Encounter?identifier=urn:visit|V3' },
        },
      ],
    };
    const r1 = await req('POST', '', tx);
    expect(r1.status).toBe(200);
    const b1 = (await r1.json()) as any;
    expect(b1.type).toBe('transaction-response');
    expect(b1.entry.map((e: any) => e.response.status)).toEqual(['201', '201']);
    const r2 = await req('POST', '', tx);
    expect(((await r2.json()) as any).entry.map((e: any) => e.response.status)).toEqual(['200', '200']);
    expect(await srv.count('Patient', 'identifier=urn:oid:1.2.3.4|MRN-3')).toBe(1);
    const [enc] = await srv.search<any>('Encounter', 'identifier=urn:visit|V3');
    const [pat] = await srv.search<any>('Patient', 'identifier=urn:oid:1.2.3.4|MRN-3');
    expect(enc.subject.reference).toBe(`Patient/${pat.id}`);

    // second entry invalid: the whole transaction fails, the first entry is not kept
    const bad = structuredClone(tx);
    bad.entry[0].resource = patient('MRN-4');
    bad.entry[0].request.url = 'Patient?identifier=urn:oid:1.2.3.4|MRN-4';
    (bad.entry[1].resource as any).notAField = 1;
    delete (bad.entry[1].request as any).url;
    bad.entry[1].request.url = 'Encounter?identifier=urn:visit|V4';
    (bad.entry[1].resource as any).identifier = [{ system: 'urn:visit', value: 'V4' }];
    const r3 = await req('POST', '', bad);
    const b3 = (await r3.json()) as any;
    expect(r3.status).toBe(400);
    expect(b3.resourceType).toBe('OperationOutcome');
    expect(await srv.count('Patient', 'identifier=urn:oid:1.2.3.4|MRN-4')).toBe(0);
  });

  it('a transaction of more than 8 conditional updates works and stays idempotent', async () => {
    const entry = Array.from({ length: 12 }, (_, i) => ({
      fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      resource: patient(`BIG-${i}`),
      request: { method: 'PUT', url: `Patient?identifier=urn:oid:1.2.3.4|BIG-${i}` },
    }));
    for (let round = 0; round < 2; round++) {
      const r = await req('POST', '', { resourceType: 'Bundle', type: 'transaction', entry });
      expect(r.status).toBe(200);
    }
    for (let i = 0; i < 12; i++) expect(await srv.count('Patient', `identifier=urn:oid:1.2.3.4|BIG-${i}`)).toBe(1);
  });

  it('failNext answers with the injected status; pause/resume refuses then serves on the same port', async () => {
    srv.failNext(1, 503, { headers: { 'retry-after': '2' } });
    const f = await req('GET', 'Patient');
    expect(f.status).toBe(503);
    expect(f.headers.get('retry-after')).toBe('2');
    expect((await req('GET', 'Patient')).status).toBe(200);

    await srv.pause();
    await expect(req('GET', 'Patient')).rejects.toThrow();
    await srv.resume();
    expect((await req('GET', 'Patient')).status).toBe(200);
    expect(srv.requests.at(-1)).toMatchObject({ method: 'GET', url: 'Patient', status: 200 });
  });
});

describe('test FHIR server with Medplum transaction limits', () => {
  it('refuses a transaction of more than 8 conditional updates, as a Medplum server does', async () => {
    const srv = await startFhirServer({ medplumTransactionLimits: true });
    try {
      const entry = Array.from({ length: 9 }, (_, i) => ({
        resource: patient(`L-${i}`),
        request: { method: 'PUT', url: `Patient?identifier=urn:oid:1.2.3.4|L-${i}` },
      }));
      const r = await fetch(`${srv.baseUrl}`, {
        method: 'POST',
        headers: { 'content-type': json },
        body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }),
      });
      expect(r.status).toBe(400);
    } finally {
      await srv.stop();
    }
  });
});

describe('test FHIR server with a bearer token', () => {
  it('answers 401 without the token', async () => {
    const srv = await startFhirServer({ bearerToken: 'sekrit' });
    try {
      expect((await fetch(`${srv.baseUrl}/Patient`)).status).toBe(401);
      expect((await fetch(`${srv.baseUrl}/Patient`, { headers: { authorization: 'Bearer sekrit' } })).status).toBe(200);
    } finally {
      await srv.stop();
    }
  });
});

describe('test FHIR server: update-as-create and referential integrity', () => {
  const send = (srv: FhirTestServer, method: string, path: string, body: unknown) =>
    fetch(`${srv.baseUrl}/${path}`, { method, headers: { 'content-type': json }, body: JSON.stringify(body) });

  it('PUT Type/id creates with the client id by default; with updateCreate: false it is refused (400 not-supported) unless the resource exists', async () => {
    const open = await startFhirServer();
    const closed = await startFhirServer({ updateCreate: false });
    try {
      const r = await send(open, 'PUT', 'Patient/client-1', { ...patient('U-1'), id: 'client-1' });
      expect([200, 201]).toContain(r.status);
      expect(((await r.json()) as any).id).toBe('client-1');
      const refused = await send(closed, 'PUT', 'Patient/client-1', { ...patient('U-1'), id: 'client-1' });
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as any).issue[0].code).toBe('not-supported');
      // Conditional updates still create (the server assigns the id), also in large transactions.
      const entry = Array.from({ length: 9 }, (_, i) => ({
        resource: patient(`U-${i}`),
        request: { method: 'PUT', url: `Patient?identifier=urn:oid:1.2.3.4|U-${i}` },
      }));
      const tx = await fetch(closed.baseUrl, {
        method: 'POST',
        headers: { 'content-type': json },
        body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }),
      });
      expect(tx.status).toBe(200);
      const [p] = await closed.search('Patient', { identifier: 'urn:oid:1.2.3.4|U-0' });
      expect((await send(closed, 'PUT', `Patient/${p.id}`, { ...patient('U-0', 'Changed'), id: p.id })).status).toBe(
        200,
      );
    } finally {
      await open.stop();
      await closed.stop();
    }
  });

  it('referentialIntegrity: a reference to a resource that does not exist is refused (400), one that exists is accepted', async () => {
    const srv = await startFhirServer({ referentialIntegrity: true });
    try {
      const obs = (subject: string) => ({
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'x' },
        subject: { reference: subject },
      });
      const dangling = await send(srv, 'POST', 'Observation', obs('Patient/nobody'));
      expect(dangling.status).toBe(400);
      const p = (await (await send(srv, 'POST', 'Patient', patient('R-1'))).json()) as any;
      expect((await send(srv, 'POST', 'Observation', obs(`Patient/${p.id}`))).status).toBe(201);
    } finally {
      await srv.stop();
    }
  });
});
