/**
 * The FHIR facade's athena depth (issue #28), end to end on real sockets: the engine from YAML with
 * only the athena-rest plugin (no athena-fhir: athena's FHIR path is unavailable), a pipeline
 * polling the same practice into an NDJSON sink, and the facade's listener. Proves the REST
 * fallback for clinical searches (`GET /chart/{patientid}/problems|allergies|vitals|medications`,
 * reference 1.4): each answer equals the pipeline's canonical output for the same chart record,
 * the decision table names path `rest`, chart offset paging becomes FHIR `next` links. Documents
 * (`GET /patients/{patientid}/documents/admin`, `POST /documents/clinicaldocument`, read back by id,
 * refusals as OperationOutcomes) and check-in (`POST /appointments/{id}/checkin` [U]: arrived, conflicts,
 * Idempotency-Key, audit, message in the store).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {
  Appointment,
  Bundle,
  CapabilityStatement,
  DocumentReference,
  OperationOutcome,
  Resource,
} from '@medplum/fhirtypes';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';
import { deliveredResources, facadeCaller } from '../support/facade';

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('FHIR facade athena depth: REST chart fallback (engine from YAML, simulator on real sockets)', () => {
  let athena: AthenaSimulator;
  let engine: Engine;
  let dir: string;
  let api: string;
  let pid = '';
  const appts = {} as Record<'booked' | 'booked2' | 'open' | 'cancelled', string>;
  const tokens = {} as Record<'reader' | 'writer', string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-facade-depth-'));
    athena = await AthenaSimulator.start();
    seedPractice(athena);
    athena.subscribe(PRACTICE, 'patients');
    pid = '501';
    athena.setChart(PRACTICE, pid, 'problems', [
      {
        problemid: '9001',
        name: 'Essential hypertension',
        code: '59621000',
        codeset: 'SNOMED',
        events: [{ eventtype: 'START', startdate: '03/04/2021', status: 'CHRONIC' }],
      },
      {
        problemid: '9002',
        name: 'Acute bronchitis',
        code: '10509002',
        codeset: 'SNOMED',
        events: [
          { eventtype: 'START', startdate: '01/05/2026', status: 'ACUTE' },
          { eventtype: 'END', startdate: '01/20/2026' },
        ],
      },
      {
        problemid: '9003',
        name: 'Type 2 diabetes',
        code: '44054006',
        codeset: 'SNOMED',
        events: [{ eventtype: 'START', startdate: '07/01/2019', status: 'CHRONIC' }],
      },
    ]);
    athena.setChart(PRACTICE, pid, 'medications', [
      [
        {
          medicationentryid: 'H77',
          medication: 'lisinopril 10 mg tablet',
          rxnorm: '314076',
          unstructuredsig: '1 tablet daily',
          events: [{ type: 'START', eventdate: '03/04/2021' }],
        },
      ],
    ]);
    athena.setChart(PRACTICE, pid, 'allergies', [
      {
        allergenid: '10143',
        allergenname: 'Penicillins',
        onsetdate: '06/01/2010',
        criticality: 'high',
        reactions: [{ reactionname: 'hives', snomedcode: '247472004', severity: 'moderate' }],
      },
    ]);
    athena.setChart(PRACTICE, pid, 'vitals', [
      {
        key: 'BLOODPRESSURE',
        readings: [
          [
            {
              readingid: '31',
              clinicalelementid: 'VITALS.BLOODPRESSURE.SYSTOLIC',
              value: '132',
              unit: 'mm[Hg]',
              code: '8480-6',
              codeset: 'LOINC',
              readingtaken: '02/10/2026 09:15:00',
            },
            {
              readingid: '32',
              clinicalelementid: 'VITALS.BLOODPRESSURE.DIASTOLIC',
              value: '84',
              unit: 'mm[Hg]',
              code: '8462-4',
              codeset: 'LOINC',
              readingtaken: '02/10/2026 09:15:00',
            },
          ],
        ],
      },
      {
        key: 'WEIGHT',
        readings: [
          [
            {
              readingid: '33',
              clinicalelementid: 'VITALS.WEIGHT',
              value: '81.2',
              unit: 'kg',
              code: '29463-7',
              codeset: 'LOINC',
              readingtaken: '02/10/2026 09:16:00',
            },
          ],
        ],
      },
    ]);
    // Vaccine fields are athena's, not in the reference [U] (see the chart transform).
    athena.setChart(PRACTICE, pid, 'vaccines', [
      {
        vaccineid: '701',
        description: 'influenza vaccine, quadrivalent',
        cvx: '150',
        administerdate: '10/02/2025',
        status: 'ADMINISTERED',
        type: 'ADMINISTERED',
        lotnumber: 'FL123',
        manufacturer: 'Sanofi Pasteur',
        amount: '0.5',
        units: 'mL',
        route: 'intramuscular',
        site: 'left deltoid',
      },
      {
        vaccineid: '702',
        description: 'zoster vaccine recombinant',
        cvx: '187',
        status: 'REFUSED',
        refusedreason: 'Patient declined',
        refuseddate: '11/12/2025',
      },
    ]);
    athena.upsertPatient(PRACTICE, samplePatient(1, { patientid: pid }));
    for (let i = 0; i < 3; i++)
      athena.addDocument(PRACTICE, pid, {
        documentclass: 'ADMIN',
        documentsubclass: i ? 'ADMIN_CONSENT' : 'ADMIN_INSURANCECARD',
        description: `admin doc ${i}`,
        departmentid: '1',
        documentdate: `0${i + 1}/15/2026`,
        createddatetime: `0${i + 1}/15/2026 10:00:00`,
      });
    athena.addDocument(PRACTICE, pid, {
      documentclass: 'CLINICALDOCUMENT',
      documentsubclass: 'CONSULTNOTE',
      description: 'not an admin document',
      departmentid: '1',
    });
    const day = new Date().toISOString().slice(0, 10);
    const athenaDay = `${day.slice(5, 7)}/${day.slice(8, 10)}/${day.slice(0, 4)}`;
    const appt = (status: string) =>
      String(
        athena.upsertAppointment(PRACTICE, {
          date: athenaDay,
          starttime: '09:00',
          duration: 15,
          departmentid: '1',
          providerid: '1',
          appointmentstatus: status,
          appointmenttypeid: '11',
          ...(status === 'o' ? {} : { patientid: pid }),
        }).appointmentid,
      );
    appts.booked = appt('f');
    appts.booked2 = appt('f');
    appts.open = appt('o');
    appts.cancelled = appt('x');

    const mk = async (name: string, scopes: string[]) => {
      const t = await makeToken({ name, roles: ['viewer'], scopes }, 'test');
      return { secret: t.secret, entry: { id: t.record.id, name, roles: ['viewer'], hash: t.record.hash, scopes } };
    };
    const made = {
      reader: await mk('app-reader', ['connection:athena-a:read']),
      writer: await mk('app-writer', ['connection:athena-a:read', 'connection:athena-a:write']),
    };
    for (const [k, v] of Object.entries(made)) tokens[k as keyof typeof tokens] = v.secret;
    writeFileSync(path.join(dir, 'athena-secret'), 'ferry-secret\n', { mode: 0o600 });
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest']
connections:
  athena-a:
    kind: athena
    baseUrl: ${athena.url}
    clientId: ferry-client
    clientSecret_FILE: ${path.join(dir, 'athena-secret')}
    practiceId: ${PRACTICE}
    callRetry: { initialDelayMs: 20, maxDelayMs: 100 }
sources:
  athena-feed:
    type: athena-rest
    connection: athena-a
    feeds: [patients]
    chartSections: [problems, allergies, vitals, medications, vaccines]
    pollIntervalMs: 200
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
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
    api = engine.apiUrl!;
  });

  afterAll(async () => {
    await engine?.stop();
    await athena?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = facadeCaller(
    () => api,
    (who: keyof typeof tokens) => tokens[who],
  );

  /** Every canonical resource the pipeline delivered to the NDJSON sink. */
  const delivered = (): Resource[] => deliveredResources(path.join(dir, 'out'));

  const patientRef = () => `Patient/athena-${PRACTICE}-patient-${pid}`;

  it('lists the chart types in the CapabilityStatement with path rest (athena-fhir not loaded)', async () => {
    const cs = await call<CapabilityStatement>('reader', 'GET', '/fhir/athena-a/metadata');
    expect(cs.status).toBe(200);
    const res = cs.body.rest![0].resource!;
    const appt = res.find((x) => x.type === 'Appointment')!;
    expect(appt.operation?.map((o) => o.name)).toEqual(['book', 'cancel', 'checkin']);
    const doc = res.find((x) => x.type === 'DocumentReference')!;
    expect(doc.interaction?.map((i) => i.code)).toEqual(['read', 'search-type', 'create']);
    expect(doc.documentation).toBe('paths: read via rest, search via rest, create via rest');
    for (const type of ['Condition', 'AllergyIntolerance', 'Observation', 'MedicationStatement', 'Immunization']) {
      const r = res.find((x) => x.type === type);
      expect(r).toBeDefined();
      expect(r!.documentation).toContain('search via rest');
      expect(r!.searchParam?.map((p) => p.name)).toContain('patient');
    }
  });

  it.each([
    ['Condition', '', 3],
    ['AllergyIntolerance', '', 1],
    ['Observation', '&category=vital-signs', 3],
    ['MedicationStatement', '', 1],
    ['Immunization', '', 2],
  ])(
    'serves %s search from the athena chart, equal to the pipeline output for the same records',
    async (type, extra, n) => {
      await until(`pipeline delivered ${type}`, () => delivered().filter((r) => r.resourceType === type).length >= n);
      const r = await call<Bundle>(
        'reader',
        'GET',
        `/fhir/athena-a/${type}?patient=${encodeURIComponent(patientRef())}${extra}`,
      );
      expect(r.status).toBe(200);
      const got = (r.body.entry ?? []).map((e) => e.resource!);
      expect(got).toHaveLength(n);
      const pipeline = delivered().filter((x) => x.resourceType === type);
      for (const g of got) expect(g).toEqual(pipeline.find((p) => p.id === g.id));
      const reads = athena.apiRequests(`/chart/${pid}/`).filter((q) =>
        q.path.endsWith(
          {
            Condition: 'problems',
            AllergyIntolerance: 'allergies',
            Observation: 'vitals',
            MedicationStatement: 'medications',
            Immunization: 'vaccines',
          }[type]!,
        ),
      );
      expect(reads.every((q) => q.query.get('departmentid') === '1')).toBe(true);
    },
  );

  it('maps athena vaccines to Immunization: administered with CVX and lot, refused as not-done', async () => {
    const r = await call<Bundle>(
      'reader',
      'GET',
      `/fhir/athena-a/Immunization?patient=${encodeURIComponent(patientRef())}`,
    );
    const byId = Object.fromEntries((r.body.entry ?? []).map((e) => [e.resource!.id, e.resource as any]));
    expect(byId[`athena-${PRACTICE}-vaccine-701`]).toMatchObject({
      status: 'completed',
      vaccineCode: { coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '150' }] },
      occurrenceDateTime: '2025-10-02',
      lotNumber: 'FL123',
      primarySource: true,
      doseQuantity: { value: 0.5, unit: 'mL' },
    });
    expect(byId[`athena-${PRACTICE}-vaccine-702`]).toMatchObject({
      status: 'not-done',
      statusReason: { text: 'Patient declined' },
      occurrenceDateTime: '2025-11-12',
    });
  });

  it('pages the chart as FHIR next links', async () => {
    const first = await call<Bundle>(
      'reader',
      'GET',
      `/fhir/athena-a/Condition?patient=${encodeURIComponent(patientRef())}&_count=2`,
    );
    expect(first.status).toBe(200);
    expect(first.body.entry).toHaveLength(2);
    expect(first.body.total).toBe(3);
    const next = first.body.link!.find((l) => l.relation === 'next')!.url;
    const second = await call<Bundle>('reader', 'GET', next);
    expect(second.status).toBe(200);
    expect(second.body.entry!.map((e) => e.resource!.id)).toEqual([`athena-${PRACTICE}-problem-9003`]);
    expect(second.body.link!.find((l) => l.relation === 'next')).toBeUndefined();
  });

  it('refuses a search without a patient or with a category the chart does not serve, as OperationOutcomes', async () => {
    const none = await call<OperationOutcome>('reader', 'GET', '/fhir/athena-a/Condition');
    expect(none.status).toBe(422);
    expect(none.body.issue[0].diagnostics).toMatch(/needs exactly one patient/);
    const cat = await call<OperationOutcome>(
      'reader',
      'GET',
      `/fhir/athena-a/Observation?patient=${encodeURIComponent(patientRef())}&category=laboratory`,
    );
    expect(cat.status).toBe(422);
    expect(cat.body.issue[0].diagnostics).toMatch(/vital-signs/);
  });

  it('audits every chart search with ids and counts only', async () => {
    const entries = await engine.store.auditEntries({ action: 'facade.search' });
    expect(entries.some((e) => /Condition count=3 path=rest/.test(e.detail ?? ''))).toBe(true);
    expect(JSON.stringify(entries)).not.toMatch(/hypertension|Penicillins/i);
  });

  it("searches a patient's admin documents (documents/admin, departmentid), paged", async () => {
    const first = await call<Bundle<DocumentReference>>(
      'reader',
      'GET',
      `/fhir/athena-a/DocumentReference?patient=${encodeURIComponent(patientRef())}&_count=2`,
    );
    expect(first.status).toBe(200);
    expect(first.body.total).toBe(3);
    expect(first.body.entry).toHaveLength(2);
    const d0 = first.body.entry![0].resource!;
    expect(d0).toMatchObject({
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: 'ADMIN_INSURANCECARD' }] },
      category: [{ coding: [{ code: 'ADMIN' }] }],
      subject: { identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: pid } },
      description: 'admin doc 0',
      date: '2026-01-15T15:00:00.000Z',
      context: { period: { start: '2026-01-15' } },
    });
    const second = await call<Bundle<DocumentReference>>(
      'reader',
      'GET',
      first.body.link!.find((l) => l.relation === 'next')!.url,
    );
    expect(second.body.entry!.map((e) => e.resource!.description)).toEqual(['admin doc 2']);
    const reads = athena.apiRequests(`/patients/${pid}/documents/admin`);
    expect(reads.length).toBe(2);
    expect(reads.every((q) => q.query.get('departmentid') === '1')).toBe(true);
  });

  it("creates a clinical document: the canonical DocumentReference with the athena id, equal to the pipeline's record of the write", async () => {
    const body: DocumentReference = {
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: 'CONSULTNOTE' }] },
      subject: { reference: patientRef() },
      description: 'cardiology consult',
      context: { period: { start: '2026-03-02' } },
      content: [
        { attachment: { contentType: 'application/pdf', data: Buffer.from('%PDF-1.4 consult').toString('base64') } },
      ],
    };
    const r = await call<DocumentReference>('writer', 'POST', '/fhir/athena-a/DocumentReference', body);
    expect(r.status).toBe(201);
    const id = r.body.identifier![0].value!;
    expect(r.body.id).toBe(`athena-${PRACTICE}-document-${id}`);
    expect(r.headers.get('location')).toMatch(
      new RegExp(`/fhir/athena-a/DocumentReference/athena-${PRACTICE}-document-${id}$`),
    );
    expect(r.body).toMatchObject({
      category: [{ coding: [{ code: 'CLINICALDOCUMENT' }] }],
      type: { coding: [{ code: 'CONSULTNOTE' }] },
      description: 'cardiology consult',
      context: { period: { start: '2026-03-02' } },
      content: [{ attachment: { contentType: 'application/pdf' } }],
    });
    const posted = athena.apiRequests('/documents/clinicaldocument').filter((q) => q.method === 'POST');
    expect(posted.length).toBeGreaterThanOrEqual(1);
    const form = new URLSearchParams(posted[0].body);
    expect(Object.fromEntries(form)).toMatchObject({
      patientid: pid,
      departmentid: '1',
      documentsubclass: 'CONSULTNOTE',
      internalnote: 'cardiology consult',
      documentdate: '03/02/2026',
      attachmenttype: 'application/pdf',
    });
    // A document naming its department (context.related) is filed there.
    const named = await call<DocumentReference>('writer', 'POST', '/fhir/athena-a/DocumentReference', {
      ...body,
      context: {
        related: [{ identifier: { system: `urn:athenahealth:athenanet:department:${PRACTICE}`, value: '21' } }],
      },
    });
    expect(named.status).toBe(201);
    expect(named.body.context?.related?.[0].identifier?.value).toBe('21');
    expect(
      new URLSearchParams(
        athena.apiRequests('/documents/clinicaldocument').filter((q) => q.method === 'POST')[1].body,
      ).get('departmentid'),
    ).toBe('21');
    // Recorded as a message; the pipeline delivers the same canonical resource.
    expect((await engine.store.listMessages({ sourceId: 'facade.athena-a' })).length).toBeGreaterThanOrEqual(1);
    await until('pipeline delivered the document', () => delivered().some((x) => x.id === r.body.id));
    expect(delivered().find((x) => x.id === r.body.id)).toEqual(r.body);
    expect(
      (await engine.store.auditEntries({ action: 'facade.create' })).some(
        (a) => a.result === 'ok' && a.detail?.includes(r.body.id!),
      ),
    ).toBe(true);
  });

  it('reads a document back by id through REST: a created clinical one and a listed admin one, equal to the earlier answers', async () => {
    const created = await call<DocumentReference>('writer', 'POST', '/fhir/athena-a/DocumentReference', {
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: 'LETTER' }] },
      subject: { reference: patientRef() },
      description: 'referral letter',
      content: [{ attachment: { contentType: 'text/plain', data: Buffer.from('Dear colleague').toString('base64') } }],
    });
    expect(created.status).toBe(201);
    const back = await call<DocumentReference>('reader', 'GET', `/fhir/athena-a/DocumentReference/${created.body.id}`);
    expect(back.status).toBe(200);
    expect(back.headers.get('x-ferry-source')).toBe('vendor');
    expect(back.body).toEqual(created.body);
    const docId = created.body.id!.slice(`athena-${PRACTICE}-document-`.length);
    expect(
      athena.apiRequests(`/patients/${pid}/documents/clinicaldocument/${docId}`).filter((q) => q.method === 'GET')
        .length,
    ).toBeGreaterThanOrEqual(2);

    const listed = await call<Bundle<DocumentReference>>(
      'reader',
      'GET',
      `/fhir/athena-a/DocumentReference?patient=${encodeURIComponent(patientRef())}&_count=10`,
    );
    const admin = listed.body.entry!.map((e) => e.resource!).find((d) => d.description === 'admin doc 2')!;
    const adminBack = await call<DocumentReference>('reader', 'GET', `/fhir/athena-a/DocumentReference/${admin.id}`);
    expect(adminBack.status).toBe(200);
    expect(adminBack.body).toEqual(admin);
    const meta = await call<CapabilityStatement>('reader', 'GET', '/fhir/athena-a/metadata');
    expect(meta.body.rest![0].resource!.find((x) => x.type === 'DocumentReference')!.documentation).toContain(
      'read via rest',
    );
    expect(
      (await engine.store.auditEntries({ action: 'facade.read' })).some(
        (a) => a.result === 'ok' && a.detail?.includes(`DocumentReference/${admin.id}`),
      ),
    ).toBe(true);

    // A document id this facade never listed nor created: athena cannot read it without its patient.
    const unknown = await call<OperationOutcome>(
      'reader',
      'GET',
      `/fhir/athena-a/DocumentReference/athena-${PRACTICE}-document-987654`,
    );
    expect(unknown.status).toBe(404);
    expect(unknown.body.issue[0].code).toBe('not-found');
  });

  it("maps athena's {success:false, errormessage} on a document create to an OperationOutcome", async () => {
    const bad = await call<OperationOutcome>('writer', 'POST', '/fhir/athena-a/DocumentReference', {
      resourceType: 'DocumentReference',
      status: 'current',
      type: { coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: 'NOSUCHCLASS' }] },
      subject: { reference: patientRef() },
      content: [{ attachment: { contentType: 'text/plain' } }],
    });
    expect(bad.status).toBe(422);
    expect(bad.body.issue[0]).toMatchObject({
      code: 'invalid',
      details: { text: 'Invalid documentsubclass: NOSUCHCLASS' },
    });
    const noType = await call<OperationOutcome>('writer', 'POST', '/fhir/athena-a/DocumentReference', {
      resourceType: 'DocumentReference',
      status: 'current',
      subject: { reference: patientRef() },
      content: [{ attachment: {} }],
    });
    expect(noType.status).toBe(422);
    expect(noType.body.issue[0].diagnostics).toMatch(/document subclass is required/);
  });

  it('refuses a document create with a read-only scope (403)', async () => {
    const r = await call<OperationOutcome>('reader', 'POST', '/fhir/athena-a/DocumentReference', {
      resourceType: 'DocumentReference',
    });
    expect(r.status).toBe(403);
  });

  it('checks a booked appointment in: arrived (athena status 2), audited, recorded as a message', async () => {
    const id = `athena-${PRACTICE}-appointment-${appts.booked}`;
    const r = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${id}/$checkin`);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(id);
    expect(r.body.status).toBe('arrived');
    expect(athena.practice(PRACTICE).appointments.get(appts.booked)!.appointmentstatus).toBe('2');
    expect(athena.apiRequests(`/appointments/${appts.booked}/checkin`).filter((q) => q.method === 'POST')).toHaveLength(
      1,
    );
    expect(
      (await engine.store.auditEntries({ action: 'facade.checkin' })).some(
        (a) => a.result === 'ok' && a.detail?.includes(id),
      ),
    ).toBe(true);
    await until('pipeline delivered the checked-in appointment', () =>
      delivered().some((x) => x.id === id && (x as Appointment).status === 'arrived'),
    );
    expect(
      delivered()
        .filter((x) => x.id === id && (x as Appointment).status === 'arrived')
        .pop(),
    ).toEqual(r.body);
    // Again: already checked in -> conflict, athena not called again.
    const again = await call<OperationOutcome>('writer', 'POST', `/fhir/athena-a/Appointment/${id}/$checkin`);
    expect(again.status).toBe(409);
    expect(again.body.issue[0].code).toBe('conflict');
    expect(athena.apiRequests(`/appointments/${appts.booked}/checkin`)).toHaveLength(1);
  });

  it.each([
    ['an open slot', 'open', /open slot/],
    ['a cancelled appointment', 'cancelled', /cancelled/],
  ] as const)('refuses to check in %s with a conflict OperationOutcome', async (_what, key, re) => {
    const r = await call<OperationOutcome>(
      'writer',
      'POST',
      `/fhir/athena-a/Appointment/athena-${PRACTICE}-appointment-${appts[key]}/$checkin`,
    );
    expect(r.status).toBe(409);
    expect(r.body.issue[0]).toMatchObject({ code: 'conflict' });
    expect(r.body.issue[0].diagnostics).toMatch(re);
    expect(athena.apiRequests(`/appointments/${appts[key]}/checkin`)).toHaveLength(0);
  });

  it("maps athena's own check-in refusal (HTTP 400 or success:false) to a conflict", async () => {
    // The state changes at athena between the facade's read and its call: athena refuses.
    const id = appts.booked2;
    const orig = athena.opts.checkinRefusal;
    for (const style of ['http-400', 'success-false'] as const) {
      athena.opts.checkinRefusal = style;
      athena.inject({
        status: 200,
        match: new RegExp(`/appointments/${id}$`),
        body: [{ ...athena.practice(PRACTICE).appointments.get(id), appointmentstatus: 'f' }],
      });
      athena.practice(PRACTICE).appointments.get(id)!.appointmentstatus = 'x';
      const r = await call<OperationOutcome>(
        'writer',
        'POST',
        `/fhir/athena-a/Appointment/athena-${PRACTICE}-appointment-${id}/$checkin`,
      );
      expect(r.status).toBe(409);
      expect(r.body.issue[0].code).toBe('conflict');
      expect(r.body.issue[0].details?.text).toMatch(/^The appointment is cancelled and cannot be checked in./);
      athena.practice(PRACTICE).appointments.get(id)!.appointmentstatus = 'f';
    }
    athena.opts.checkinRefusal = orig;
  });

  it('honours Idempotency-Key on $checkin: a retry answers the first answer and checks in once', async () => {
    const id = `athena-${PRACTICE}-appointment-${appts.booked2}`;
    const calls = () =>
      athena.apiRequests(`/appointments/${appts.booked2}/checkin`).filter((q) => q.method === 'POST').length;
    const before = calls();
    const first = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${id}/$checkin`, undefined, {
      'idempotency-key': 'checkin-7',
    });
    const second = await call<Appointment>('writer', 'POST', `/fhir/athena-a/Appointment/${id}/$checkin`, undefined, {
      'idempotency-key': 'checkin-7',
    });
    expect(first.status).toBe(200);
    expect(first.body.status).toBe('arrived');
    expect(second.status).toBe(200);
    expect(second.headers.get('idempotency-replayed')).toBe('true');
    expect(second.body).toEqual(first.body);
    expect(calls() - before).toBe(1);
  });
});
