import type { MessageStore } from '@ferry/core';
import { createLogger } from '@ferry/core';
import { Writable } from 'node:stream';
import { validateBundle } from '@ferry/core';
import { athenaEnvelopeToBundle } from '@ferry/plugin-athena-rest';
import type { Patient } from '@medplum/fhirtypes';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../../../test/simulators/athena';
import { configFor, openStore, sinkContext, sourceContext, tempDir } from '../../athena-rest/src/__fixtures__/harness';
import { AthenaFhirSink, athenaFhirSinkSchema, type AthenaFhirSinkConfig } from './athena-fhir.sink';
import { AthenaFhirSource, athenaFhirSourceSchema, type AthenaFhirSourceConfig } from './athena-fhir.source';
import { athenaFhirToBundle, fhirPatientToRestId, parseAthenaFhirId, parseFhirEnvelope, restPatientToFhirId } from './athena-fhir.to-fhir';

let sim: AthenaSimulator;
let store: MessageStore;
beforeAll(async () => {
  sim = await AthenaSimulator.start({ fhirDefaultCount: 50 });
  seedPractice(sim);
  store = await openStore(tempDir());
});
afterAll(async () => {
  await store.close();
  await sim.stop();
});

/** The real preview shape from the reference (2.6). */
const referencePatient = {
  resourceType: 'Patient',
  id: 'a-14523.E-857',
  meta: { lastUpdated: '2022-05-02T14:38:21.000-04:00' },
  extension: [
    { url: 'https://fhir.athena.io/StructureDefinition/ah-brand', valueReference: { reference: 'Organization/a-14523.Brand-1' } },
    { url: 'https://fhir.athena.io/StructureDefinition/ah-chart-sharing-group', valueReference: { reference: 'Organization/a-14523.CSG-1' } },
    { url: 'https://fhir.athena.io/StructureDefinition/ah-provider-group', valueReference: { reference: 'Organization/a-14523.PG-1' } },
    { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'UNK' },
  ],
  identifier: [{ system: 'https://fhir.athena.io/sid/ah-patient', value: 'a-14523.E-857' }],
  name: [{ use: 'official', family: 'Testuser', given: ['Phr'], period: { start: '2021-03-28' } }],
  telecom: [{ system: 'phone', value: '(617) 402-8874', use: 'home' }],
  gender: 'male',
  birthDate: '2000-01-01',
  address: [{ use: 'home', line: ['311 ARSENAL ST'], city: 'WATERTOWN', state: 'MA', postalCode: '02472', country: 'USA' }],
};

describe('athena-fhir id scheme and canonical form', () => {
  it('maps athena ids both ways', () => {
    expect(parseAthenaFhirId('a-195900.E-12')).toEqual({ practiceId: '195900', kind: 'E', localId: '12' });
    expect(parseAthenaFhirId('a-1.Practice-195900')).toEqual({ practiceId: '195900', kind: 'Practice', localId: '195900' });
    expect(parseAthenaFhirId('a-25828.historicalmedrequest-91245')).toEqual({ practiceId: '25828', kind: 'historicalmedrequest', localId: '91245' });
    expect(parseAthenaFhirId('12345')).toBeUndefined();
    expect(restPatientToFhirId('195900', 12)).toBe('a-195900.E-12');
    expect(fhirPatientToRestId('Patient/a-195900.E-12')).toEqual({ practiceId: '195900', patientId: '12' });
  });

  it('normalises an athena Patient to the same canonical identity the REST path gives', () => {
    const b = athenaFhirToBundle({ practiceid: '14523', resource: referencePatient as any });
    expect(validateBundle(b)).toBeUndefined();
    const p = b.entry![0].resource as Patient;
    expect(p.id).toBe('athena-14523-patient-857');
    expect(p.identifier![0]).toMatchObject({ system: 'urn:athenahealth:athenanet:patient:14523', value: '857' });
    expect(p.identifier![1]).toEqual({ system: 'https://fhir.athena.io/sid/ah-patient', value: 'a-14523.E-857' });
    expect(p.extension).toEqual([{ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'UNK' }]);
    expect((p as any).meta).toBeUndefined();
    // the REST transform of the same patient conditionally updates the same target
    const rest = athenaEnvelopeToBundle({ practiceid: '14523', kind: 'patient', record: { patientid: '857', firstname: 'Phr', lastname: 'Testuser', dob: '01/01/2000' } });
    expect(rest.entry![0].request!.url).toBe(b.entry![0].request!.url);
    expect(rest.entry![0].fullUrl).toBe(b.entry![0].fullUrl);
    // extensions kept on request
    const kept = athenaFhirToBundle({ practiceid: '14523', resource: referencePatient as any, athenaExtensions: 'keep' });
    expect((kept.entry![0].resource as Patient).extension).toHaveLength(4);
  });

  it('turns athena references into canonical identifier references', () => {
    const obs = {
      resourceType: 'Observation', id: 'a-195900.resultamb-1004417', status: 'final', code: { text: 'Glucose' },
      subject: { reference: 'Patient/a-195900.E-12' }, valueQuantity: { value: 99, unit: 'mg/dL' },
      extension: [{ url: 'https://fhir.athena.io/StructureDefinition/ah-department', valueReference: { reference: 'Organization/a-195900.Department-21' } }],
    };
    const b = athenaFhirToBundle({ practiceid: PRACTICE, resource: obs as any });
    expect(validateBundle(b)).toBeUndefined();
    const r = b.entry![0].resource as any;
    expect(r.subject).toEqual({ type: 'Patient', identifier: { system: 'urn:athenahealth:athenanet:patient:195900', value: '12' } });
    expect(r.identifier[0]).toEqual({ system: 'https://fhir.athena.io/sid/ah-observation', value: 'a-195900.resultamb-1004417' });
    expect(r.extension).toBeUndefined();
  });
});

describe('athena-fhir source', () => {
  it('polls incrementally by _lastUpdated with ah-practice on every search, following next links verbatim across 5 pages', async () => {
    sim.opts.clients['fhir-client'] = 'fhir-secret';
    for (let i = 0; i < 10; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(500 + i) }));
    sim.upsertPatient('999', samplePatient(99, { patientid: '1' })); // another practice: never returned
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, { clientId: 'fhir-client', clientSecret: 'fhir-secret', resources: ['Patient'], pageSize: 2, pollIntervalMs: 60_000 });
    const ctx = sourceContext('athena-fhir-1', store, cfg);
    const src = new AthenaFhirSource(ctx);
    await src.pollOnce();
    const got = ctx.submitted.map((m) => parseFhirEnvelope(m.body).resource.id);
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `a-${PRACTICE}.E-${500 + i}`));
    const searches = sim.apiRequests('/fhir/r4/Patient').filter((r) => r.clientId === 'fhir-client');
    expect(searches).toHaveLength(5);
    expect(searches.every((r) => r.query.get('ah-practice') === `a-1.Practice-${PRACTICE}`)).toBe(true);
    expect(searches[0].query.get('_lastUpdated')).toMatch(/^ge\d{4}-/);
    expect(searches.slice(1).every((r) => r.query.get('cursor'))).toBe(true);
    const cp = await store.getCheckpoint('athena-fhir-1', 'lastUpdated:Patient');
    expect(Date.parse(cp!)).toBeGreaterThan(0);

    // incremental: only the changed patient comes back (plus the overlap window, recognised as duplicates by control id)
    await new Promise((r) => setTimeout(r, 20));
    sim.upsertPatient(PRACTICE, { patientid: '503', city: 'SALEM' });
    ctx.submitted.length = 0;
    await src.pollOnce();
    const second = ctx.submitted.map((m) => parseFhirEnvelope(m.body).resource as any);
    expect(second.find((r) => r.id === `a-${PRACTICE}.E-503`)?.address?.[0]?.city).toBe('SALEM');
    // the 5 s overlap re-reads the others; their unchanged versions are dropped as duplicates
    expect(await store.listMessages({ sourceId: 'athena-fhir-1', limit: 100 })).toHaveLength(11);
    expect(Date.parse((await store.getCheckpoint('athena-fhir-1', 'lastUpdated:Patient'))!)).toBeGreaterThanOrEqual(Date.parse(cp!));
  });

  it('an expired paging cursor fails the poll; the next poll re-reads from the stored mark and loses nothing', async () => {
    sim.opts.clients['cursor-client'] = 'cursor-secret';
    // only the patients written from now on
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, { clientId: 'cursor-client', clientSecret: 'cursor-secret', resources: ['Patient'], pageSize: 2, initialSince: new Date(Date.now() - 1).toISOString(), overlapMs: 0 });
    for (let i = 0; i < 6; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(800 + i) }));
    const ctx = sourceContext('athena-fhir-cursor', store, cfg);
    const src = new AthenaFhirSource(ctx);
    sim.inject({ status: 400, match: /\/fhir\/r4\/Patient$/, query: /cursor=/, body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', details: { text: 'Invalid cursor' } }] } });
    await expect(src.pollOnce()).rejects.toMatchObject({ code: 'FERRY_E_VENDOR_REJECTED', retryable: false });
    expect(await store.getCheckpoint('athena-fhir-cursor', 'lastUpdated:Patient')).toBeUndefined(); // the mark did not move
    await src.pollOnce();
    const stored = await store.listMessages({ sourceId: 'athena-fhir-cursor', limit: 100 });
    // page 1 was stored by the failed poll; the re-read's copies of it are dropped as duplicates
    expect(stored).toHaveLength(6);
    expect(await store.getCheckpoint('athena-fhir-cursor', 'lastUpdated:Patient')).toBeDefined();
  });

  it('logs a run of failed polls once and its end once, not once per poll', async () => {
    sim.opts.clients['outage-client'] = 'outage-secret';
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'outage-client',
      clientSecret: 'outage-secret',
      resources: ['Patient'],
      pollIntervalMs: 20,
      callRetry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10, maxRetryAfterMs: 100 },
    });
    const lines: { level: string; message: string; failures?: number }[] = [];
    const ctx = { ...sourceContext('athena-fhir-outage', store, cfg), logger: createLogger({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l))), cb()) })) };
    const src = new AthenaFhirSource(ctx);
    sim.inject({ status: 503, match: /\/fhir\/r4\/Patient$/, times: 1_000_000 });
    try {
      await src.start();
      for (let i = 0; i < 200 && src.polls < 8; i++) await new Promise((r) => setTimeout(r, 20));
      sim.faults.length = 0;
      for (let i = 0; i < 200 && !lines.some((l) => l.message.endsWith('recovered')); i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await src.stop();
    }
    const told = lines.filter((l) => l.message.startsWith('athena FHIR poll failed'));
    expect(told.map((l) => `${l.level} ${l.message}`)).toEqual(['error athena FHIR poll failed', 'info athena FHIR poll failed: recovered']);
    expect(told[1].failures).toBeGreaterThanOrEqual(7);
  });

  it('shares the token with athena-rest for the same environment and client', async () => {
    sim.opts.clients['shared-client'] = 'shared-secret';
    const before = sim.tokensIssued;
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, { clientId: 'shared-client', clientSecret: 'shared-secret', resources: ['Location'] });
    const src = new AthenaFhirSource(sourceContext('athena-fhir-2', store, cfg));
    await src.pollOnce();
    await src.conn.get('/departments');
    expect(sim.tokensIssued - before).toBe(1);
  });

  it('a search without ah-practice is refused by athena (the simulator keeps that rule)', async () => {
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, { resources: ['Patient'] });
    const src = new AthenaFhirSource(sourceContext('athena-fhir-3', store, cfg));
    const res = await src.conn.fhir.request({ url: 'Patient', query: { family: 'x' }, accept: [400] });
    expect(res.status).toBe(400);
    expect(res.json().issue[0].details.text).toMatch(/ah-practice/);
  });
});

describe('athena-fhir sink', () => {
  const sink = (extra: Record<string, unknown> = {}) => new AthenaFhirSink(sinkContext('athena-fhir-out', configFor<AthenaFhirSinkConfig>(athenaFhirSinkSchema, sim, extra)));
  const qr = (subject: any) => ({ resourceType: 'Bundle' as const, type: 'transaction' as const, entry: [{ resource: { resourceType: 'QuestionnaireResponse', status: 'completed', subject, item: [{ linkId: '1', answer: [{ valueString: 'yes' }] }] } }, { resource: { resourceType: 'Patient', identifier: [{ system: 'x', value: '1' }] } }] });
  const delivery = (bundle: any) => ({ deliveryId: 'd', attempt: 1, routeId: 'r', bundle, message: { id: 'm', seq: 1, sourceId: 's', contentType: 'x', headers: {}, receivedAt: new Date(), status: 'routed' as const } });

  it('creates a QuestionnaireResponse with the subject mapped to the athena id and skips read-only types', async () => {
    const s = sink();
    await s.deliver(delivery(qr({ type: 'Patient', identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: '500' } })));
    expect(s.lastCreated).toHaveLength(1);
    const post = sim.apiRequests('/fhir/r4/QuestionnaireResponse').find((r) => r.method === 'POST')!;
    expect(JSON.parse(post.body).subject).toEqual({ reference: `Patient/a-${PRACTICE}.E-500` });
    await expect(sink({ strict: true }).deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-500` })))).rejects.toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA_FHIR_NOT_WRITABLE', retryable: false });
  });

  it('never repeats a create whose outcome is unknown; a 429 is retried', async () => {
    sim.inject({ status: 502, match: /QuestionnaireResponse$/ });
    const before = sim.apiRequests('/fhir/r4/QuestionnaireResponse').length;
    await expect(sink().deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-501` })))).rejects.toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA_FHIR_OUTCOME_UNKNOWN', retryable: false });
    expect(sim.apiRequests('/fhir/r4/QuestionnaireResponse').length - before).toBe(1);
    sim.inject({ status: 429, match: /QuestionnaireResponse$/, retryAfter: '0' });
    const s = sink();
    await s.deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-501` })));
    expect(s.lastCreated).toHaveLength(1);
    // a 422 business-rule answer is permanent
    await expect(sink().deliver(delivery(qr({ type: 'Patient', identifier: { system: 'urn:oid:1.2', value: '1' } })))).rejects.toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA_FHIR_NO_PATIENT', retryable: false });
  });

  it("stops a create when the engine aborts the delivery's signal (deliveryTimeoutMs), without retrying it", async () => {
    sim.setLatency(3000, { method: 'POST', match: /QuestionnaireResponse$/ });
    try {
      const before = sim.apiRequests('/fhir/r4/QuestionnaireResponse').length;
      const abort = new AbortController();
      setTimeout(() => abort.abort(new Error('deliveryTimeoutMs')), 100);
      // The simulator would answer (201) after 3 s: a rejection is the abort's.
      await expect(sink().deliver({ ...delivery(qr({ reference: `Patient/a-${PRACTICE}.E-502` })), signal: abort.signal })).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 200));
      expect(sim.apiRequests('/fhir/r4/QuestionnaireResponse').length - before).toBe(1);
    } finally {
      sim.setLatency(0);
    }
  });
});
