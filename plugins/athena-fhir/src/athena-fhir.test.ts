import type { MessageStore } from '@ferry/core';
import { createLogger } from '@ferry/core';
import { Writable } from 'node:stream';
import { validateBundle } from '@ferry/core';
import type { Patient } from '@medplum/fhirtypes';
import {
  AthenaSimulator,
  PRACTICE,
  referencePatient,
  samplePatient,
  seedPractice,
} from '../../../test/simulators/athena';
import { configFor, openStore, sinkContext, sourceContext, tempDir } from '../../../test/simulators/athena';
import { AthenaFhirSink, athenaFhirSinkSchema, type AthenaFhirSinkConfig } from './sinks/athena-fhir.sink';
import {
  AthenaFhirSource,
  athenaFhirSourceSchema,
  athenaFhirStrategy,
  type AthenaFhirSourceConfig,
} from './sources/athena-fhir.source';
import {
  athenaFhirToBundle,
  fhirPatientToRestId,
  parseAthenaFhirId,
  parseFhirEnvelope,
  restPatientToFhirId,
} from './to-fhir/athena-fhir-canonical';

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

describe('athena-fhir id scheme and canonical form', () => {
  it('maps athena ids both ways', () => {
    expect(parseAthenaFhirId('a-195900.E-12')).toEqual({ practiceId: '195900', kind: 'E', localId: '12' });
    expect(parseAthenaFhirId('a-1.Practice-195900')).toEqual({
      practiceId: '195900',
      kind: 'Practice',
      localId: '195900',
    });
    expect(parseAthenaFhirId('a-25828.historicalmedrequest-91245')).toEqual({
      practiceId: '25828',
      kind: 'historicalmedrequest',
      localId: '91245',
    });
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
    expect(p.extension).toEqual([
      { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'UNK' },
    ]);
    expect((p as any).meta).toBeUndefined();
    // (that the REST transform of the same patient updates the same target: test/plugins/athena-rest-fhir.test.ts)
    // extensions kept on request
    const kept = athenaFhirToBundle({
      practiceid: '14523',
      resource: referencePatient as any,
      athenaExtensions: 'keep',
    });
    expect((kept.entry![0].resource as Patient).extension).toHaveLength(4);
  });

  it('turns athena references into canonical identifier references', () => {
    const obs = {
      resourceType: 'Observation',
      id: 'a-195900.resultamb-1004417',
      status: 'final',
      code: { text: 'Glucose' },
      subject: { reference: 'Patient/a-195900.E-12' },
      valueQuantity: { value: 99, unit: 'mg/dL' },
      extension: [
        {
          url: 'https://fhir.athena.io/StructureDefinition/ah-department',
          valueReference: { reference: 'Organization/a-195900.Department-21' },
        },
      ],
    };
    const b = athenaFhirToBundle({ practiceid: PRACTICE, resource: obs as any });
    expect(validateBundle(b)).toBeUndefined();
    const r = b.entry![0].resource as any;
    expect(r.subject).toEqual({
      type: 'Patient',
      identifier: { system: 'urn:athenahealth:athenanet:patient:195900', value: '12' },
    });
    expect(r.identifier[0]).toEqual({
      system: 'https://fhir.athena.io/sid/ah-observation',
      value: 'a-195900.resultamb-1004417',
    });
    expect(r.extension).toBeUndefined();
  });
});

/** A Condition in athena's FHIR shape (the one type whose search lists `_lastUpdated`, reference 2.3). */
const condition = (i: number, patient: string, text = 'Hypertension') => ({
  resourceType: 'Condition',
  clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
  code: { text },
  subject: { reference: `Patient/a-${PRACTICE}.E-${patient}` },
  recordedDate: `2026-01-${String(1 + (i % 28)).padStart(2, '0')}`,
});
const ids = (ctx: { submitted: { body: Buffer }[] }) => ctx.submitted.map((m) => parseFhirEnvelope(m.body).resource.id);

describe('athena-fhir source', () => {
  it('config: the README searchParams example validates (a map of maps) and pins the patient (strategy full)', () => {
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      resources: ['Observation'],
      searchParams: { Observation: { category: 'laboratory', patient: 'a-195900.E-1' } },
    });
    expect(cfg.searchParams).toEqual({ Observation: { category: 'laboratory', patient: 'a-195900.E-1' } });
    expect(() => configFor(athenaFhirSourceSchema, sim, { searchParams: { Observation: 'laboratory' } })).toThrow(
      /searchParams/,
    );
    expect(new AthenaFhirSource(sourceContext('athena-fhir-cfg', store, cfg)).strategy('Observation')).toBe('full');
  });

  it("chooses each type's strategy from what the reference says its search supports (2.3)", () => {
    expect(
      ['Condition', 'Patient', 'Observation', 'Encounter', 'DiagnosticReport', 'Location', 'Practitioner'].map((t) => [
        t,
        athenaFhirStrategy(t),
      ]),
    ).toEqual([
      ['Condition', 'lastUpdated'],
      ['Patient', 'changedPatients'],
      ['Observation', 'byPatient'],
      ['Encounter', 'byPatient'],
      ['DiagnosticReport', 'byPatient'],
      ['Location', 'full'],
      ['Practitioner', 'full'],
    ]);
  });

  it('polls Condition incrementally by _lastUpdated with ah-practice on every search, following next links verbatim across 5 pages', async () => {
    sim.opts.clients['fhir-client'] = 'fhir-secret';
    for (let i = 0; i < 10; i++)
      sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-${500 + i}`, condition(i, '1'));
    sim.putFhir('999', 'Condition', 'a-999.problem-1', condition(1, '1')); // another practice: never returned
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'fhir-client',
      clientSecret: 'fhir-secret',
      resources: ['Condition'],
      pageSize: 2,
      pollIntervalMs: 60_000,
    });
    const ctx = sourceContext('athena-fhir-1', store, cfg);
    const src = new AthenaFhirSource(ctx);
    await src.pollOnce();
    expect(ids(ctx)).toEqual(Array.from({ length: 10 }, (_, i) => `a-${PRACTICE}.problem-${500 + i}`));
    const searches = sim.apiRequests('/fhir/r4/Condition').filter((r) => r.clientId === 'fhir-client');
    expect(searches).toHaveLength(5);
    expect(searches.every((r) => r.query.get('ah-practice') === `a-1.Practice-${PRACTICE}`)).toBe(true);
    expect(searches[0].query.get('_lastUpdated')).toMatch(/^ge\d{4}-/);
    expect(searches.slice(1).every((r) => r.query.get('cursor'))).toBe(true);
    const cp = await store.getCheckpoint('athena-fhir-1', 'lastUpdated:Condition');
    expect(Date.parse(cp!)).toBeGreaterThan(0);

    // incremental: the changed condition comes back (plus the overlap window, recognised as duplicates by control id)
    await new Promise((r) => setTimeout(r, 20));
    sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-503`, condition(3, '1', 'Hypertension, resolved'));
    ctx.submitted.length = 0;
    await src.pollOnce();
    const second = ctx.submitted.map((m) => parseFhirEnvelope(m.body).resource as any);
    expect(second.find((r) => r.id === `a-${PRACTICE}.problem-503`)?.code?.text).toBe('Hypertension, resolved');
    expect(await store.listMessages({ sourceId: 'athena-fhir-1', limit: 100 })).toHaveLength(11);
    expect(Date.parse((await store.getCheckpoint('athena-fhir-1', 'lastUpdated:Condition'))!)).toBeGreaterThanOrEqual(
      Date.parse(cp!),
    );
    expect(src.typeStates()).toEqual([
      expect.objectContaining({ type: 'Condition', strategy: 'lastUpdated', state: 'ok', consecutiveFailures: 0 }),
    ]);
  });

  it('delivers Patients although Patient search has no _lastUpdated: ids from the patients changed feed, read with _id (subscribing on 403)', async () => {
    sim.opts.clients['pat-client'] = 'pat-secret';
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'pat-client',
      clientSecret: 'pat-secret',
      resources: ['Patient'],
      pageSize: 2,
    });
    const ctx = sourceContext('athena-fhir-pat', store, cfg);
    const src = new AthenaFhirSource(ctx);
    await src.pollOnce(); // 403 not subscribed -> subscribes
    expect(
      sim
        .apiRequests('/patients/changed/subscription')
        .filter((r) => r.clientId === 'pat-client' && r.method === 'POST'),
    ).toHaveLength(1);
    for (let i = 0; i < 5; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(900 + i) }));
    await src.pollOnce();
    expect(ids(ctx).sort()).toEqual(Array.from({ length: 5 }, (_, i) => `a-${PRACTICE}.E-${900 + i}`));
    const searches = sim.apiRequests('/fhir/r4/Patient').filter((r) => r.clientId === 'pat-client');
    expect(searches.every((r) => r.status === 200 && !r.query.has('_lastUpdated') && r.query.get('_id'))).toBe(true);
    // A server that follows the reference refuses _lastUpdated on Patient (the old strategy):
    expect(
      (
        await src.conn.fhir.request({
          url: 'Patient',
          query: { 'ah-practice': `a-1.Practice-${PRACTICE}`, _lastUpdated: 'ge2026-01-01' },
          accept: [400],
        })
      ).status,
    ).toBe(400);

    // An update flows through the feed; the new version is a new message, nothing else is re-read.
    ctx.submitted.length = 0;
    sim.upsertPatient(PRACTICE, { patientid: '902', city: 'SALEM' });
    await src.pollOnce();
    expect(ctx.submitted.map((m) => (parseFhirEnvelope(m.body).resource as any).address[0].city)).toEqual(['SALEM']);
    expect(await store.getCheckpoint('athena-fhir-pat', 'pending:Patient')).toBe('[]');
  });

  it('a crash after the feed was dequeued loses nothing: the pending list (or the processed window) brings the patients back', async () => {
    sim.opts.clients['crash-client'] = 'crash-secret';
    sim.subscribe(PRACTICE, 'patients', 'crash-client');
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'crash-client',
      clientSecret: 'crash-secret',
      resources: ['Patient'],
    });
    sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '950' }));
    const ctx = sourceContext('athena-fhir-crash', store, cfg);
    ctx.beforeSubmit = async () => {
      throw new Error('killed before the store commit');
    };
    await expect(new AthenaFhirSource(ctx).pollOnce()).rejects.toThrow();
    expect(sim.pendingEvents(PRACTICE, 'patients', 'crash-client')).toBe(0); // dequeued at athena
    const again = sourceContext('athena-fhir-crash', store, cfg);
    await new AthenaFhirSource(again).pollOnce();
    expect(ids(again)).toEqual([`a-${PRACTICE}.E-950`]);
    // a mark left by a crash between the dequeuing GET and the pending list: the processed window is re-read
    sim.upsertPatient(PRACTICE, samplePatient(2, { patientid: '951' }));
    await store.setCheckpoint(
      'athena-fhir-crash',
      'feed:patients',
      JSON.stringify({ inflightSince: new Date().toISOString() }),
    );
    sim.apiRequests('/patients/changed'); // (the processed window is asked for below)
    const third = sourceContext('athena-fhir-crash', store, cfg);
    await new AthenaFhirSource(third).pollOnce();
    expect(ids(third)).toContain(`a-${PRACTICE}.E-951`);
    expect(
      sim
        .apiRequests('/patients/changed')
        .some((r) => r.clientId === 'crash-client' && r.query.get('showprocessedstartdatetime')),
    ).toBe(true);
  });

  it("one failing resource type does not stop the others; each type's state is in stats() and typeStates()", async () => {
    sim.opts.clients['iso-client'] = 'iso-secret';
    for (const f of ['patients', 'appointments']) sim.subscribe(PRACTICE, f, 'iso-client');
    // The token lacks system/Patient.read: every Patient search is a 403.
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'iso-client',
      clientSecret: 'iso-secret',
      resources: ['Patient', 'Encounter'],
      scope: 'athena/service/Athenanet.MDP.* system/Encounter.read',
    });
    const ctx = sourceContext('athena-fhir-iso', store, cfg);
    const src = new AthenaFhirSource(ctx);
    sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '960' }));
    sim.changeClinical(
      PRACTICE,
      'Encounter',
      `a-${PRACTICE}.encounter-1`,
      { status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/a-${PRACTICE}.E-960` } },
      'appointments',
      '960',
    );
    const err = await src.pollOnce().catch((e) => e);
    expect(err).toMatchObject({ code: 'FERRY_E_VENDOR_FORBIDDEN', details: { failedTypes: ['Patient'] } });
    expect(err.message).toMatch(/1 of 2 resource types failed to poll \(Patient\)/);
    expect(ids(ctx)).toEqual([`a-${PRACTICE}.encounter-1`]);
    expect(src.stats()).toMatchObject({
      'Patient.up': 0,
      'Patient.consecutiveFailures': 1,
      'Patient.pendingPatients': 1,
      'Encounter.up': 1,
      'Encounter.lastStored': 1,
    });
    expect(src.typeStates().map((s) => [s.type, s.strategy, s.state, s.lastErrorCode])).toEqual([
      ['Patient', 'changedPatients', 'failing', 'FERRY_E_VENDOR_FORBIDDEN'],
      ['Encounter', 'byPatient', 'ok', undefined],
    ]);
    // the patient stays pending for Patient until it can be read
    expect(JSON.parse((await store.getCheckpoint('athena-fhir-iso', 'pending:Patient'))!)).toEqual(['960']);
  });

  it('an expired paging cursor fails the poll; the next poll re-reads from the stored mark and loses nothing', async () => {
    sim.opts.clients['cursor-client'] = 'cursor-secret';
    // only the conditions written from now on
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'cursor-client',
      clientSecret: 'cursor-secret',
      resources: ['Condition'],
      pageSize: 2,
      initialSince: new Date(Date.now() - 1).toISOString(),
      overlapMs: 0,
    });
    for (let i = 0; i < 6; i++)
      sim.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-${800 + i}`, condition(i, '2'));
    const ctx = sourceContext('athena-fhir-cursor', store, cfg);
    const src = new AthenaFhirSource(ctx);
    sim.inject({
      status: 400,
      match: /\/fhir\/r4\/Condition$/,
      query: /cursor=/,
      body: {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'invalid', details: { text: 'Invalid cursor' } }],
      },
    });
    await expect(src.pollOnce()).rejects.toMatchObject({ code: 'FERRY_E_VENDOR_REJECTED', retryable: false });
    expect(await store.getCheckpoint('athena-fhir-cursor', 'lastUpdated:Condition')).toBeUndefined(); // the mark did not move
    await src.pollOnce();
    const stored = await store.listMessages({ sourceId: 'athena-fhir-cursor', limit: 100 });
    // page 1 was stored by the failed poll; the re-read's copies of it are dropped as duplicates
    expect(stored).toHaveLength(6);
    expect(await store.getCheckpoint('athena-fhir-cursor', 'lastUpdated:Condition')).toBeDefined();
  });

  it('logs a run of failed polls once and its end once, not once per poll', async () => {
    sim.opts.clients['outage-client'] = 'outage-secret';
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'outage-client',
      clientSecret: 'outage-secret',
      resources: ['Condition'],
      pollIntervalMs: 20,
      callRetry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10, maxRetryAfterMs: 100 },
    });
    const lines: { level: string; message: string; failures?: number }[] = [];
    const ctx = {
      ...sourceContext('athena-fhir-outage', store, cfg),
      logger: createLogger(
        { level: 'info' },
        new Writable({
          write: (c: Buffer, _e, cb) => (
            lines.push(
              ...c
                .toString()
                .split('\n')
                .filter(Boolean)
                .map((l) => JSON.parse(l)),
            ),
            cb()
          ),
        }),
      ),
    };
    const src = new AthenaFhirSource(ctx);
    sim.inject({ status: 503, match: /\/fhir\/r4\/Condition$/, times: 1_000_000 });
    try {
      await src.start();
      for (let i = 0; i < 200 && src.polls < 8; i++) await new Promise((r) => setTimeout(r, 20));
      sim.faults.length = 0;
      for (let i = 0; i < 200 && !lines.some((l) => l.message.endsWith('recovered')); i++)
        await new Promise((r) => setTimeout(r, 20));
    } finally {
      await src.stop();
    }
    const told = lines.filter((l) => l.message.startsWith('athena FHIR poll failed'));
    expect(told.map((l) => `${l.level} ${l.message}`)).toEqual([
      'error athena FHIR poll failed',
      'info athena FHIR poll failed: recovered',
    ]);
    expect(told[1].failures).toBeGreaterThanOrEqual(7);
  });

  it('shares the token with athena-rest for the same environment, client and scope', async () => {
    sim.opts.clients['shared-client'] = 'shared-secret';
    const before = sim.tokensIssued;
    const cfg = configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
      clientId: 'shared-client',
      clientSecret: 'shared-secret',
      resources: ['Location'],
    });
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
  const sink = (extra: Record<string, unknown> = {}) =>
    new AthenaFhirSink(
      sinkContext('athena-fhir-out', configFor<AthenaFhirSinkConfig>(athenaFhirSinkSchema, sim, extra)),
    );
  const qr = (subject: any) => ({
    resourceType: 'Bundle' as const,
    type: 'transaction' as const,
    entry: [
      {
        resource: {
          resourceType: 'QuestionnaireResponse',
          status: 'completed',
          subject,
          item: [{ linkId: '1', answer: [{ valueString: 'yes' }] }],
        },
      },
      { resource: { resourceType: 'Patient', identifier: [{ system: 'x', value: '1' }] } },
    ],
  });
  const delivery = (bundle: any) => ({
    deliveryId: 'd',
    attempt: 1,
    routeId: 'r',
    bundle,
    message: {
      id: 'm',
      seq: 1,
      sourceId: 's',
      contentType: 'x',
      headers: {},
      receivedAt: new Date(),
      status: 'routed' as const,
    },
  });

  it('creates a QuestionnaireResponse with the subject mapped to the athena id and skips read-only types', async () => {
    const s = sink();
    await s.deliver(
      delivery(
        qr({ type: 'Patient', identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: '500' } }),
      ),
    );
    expect(s.lastCreated).toHaveLength(1);
    const post = sim.apiRequests('/fhir/r4/QuestionnaireResponse').find((r) => r.method === 'POST')!;
    expect(JSON.parse(post.body).subject).toEqual({ reference: `Patient/a-${PRACTICE}.E-500` });
    await expect(
      sink({ strict: true }).deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-500` }))),
    ).rejects.toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA_FHIR_NOT_WRITABLE', retryable: false });
  });

  it('never repeats a create whose outcome is unknown; a 429 is retried', async () => {
    sim.inject({ status: 502, match: /QuestionnaireResponse$/ });
    const before = sim.apiRequests('/fhir/r4/QuestionnaireResponse').length;
    await expect(sink().deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-501` })))).rejects.toMatchObject({
      code: 'FERRY_E_DELIVERY_ATHENA_FHIR_OUTCOME_UNKNOWN',
      retryable: false,
    });
    expect(sim.apiRequests('/fhir/r4/QuestionnaireResponse').length - before).toBe(1);
    sim.inject({ status: 429, match: /QuestionnaireResponse$/, retryAfter: '0' });
    const s = sink();
    await s.deliver(delivery(qr({ reference: `Patient/a-${PRACTICE}.E-501` })));
    expect(s.lastCreated).toHaveLength(1);
    // a 422 business-rule answer is permanent
    await expect(
      sink().deliver(delivery(qr({ type: 'Patient', identifier: { system: 'urn:oid:1.2', value: '1' } }))),
    ).rejects.toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA_FHIR_NO_PATIENT', retryable: false });
  });

  it("stops a create when the engine aborts the delivery's signal (deliveryTimeoutMs), without retrying it", async () => {
    sim.setLatency(3000, { method: 'POST', match: /QuestionnaireResponse$/ });
    try {
      const before = sim.apiRequests('/fhir/r4/QuestionnaireResponse').length;
      const abort = new AbortController();
      setTimeout(() => abort.abort(new Error('deliveryTimeoutMs')), 100);
      // The simulator would answer (201) after 3 s: a rejection is the abort's.
      await expect(
        sink().deliver({ ...delivery(qr({ reference: `Patient/a-${PRACTICE}.E-502` })), signal: abort.signal }),
      ).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 200));
      expect(sim.apiRequests('/fhir/r4/QuestionnaireResponse').length - before).toBe(1);
    } finally {
      sim.setLatency(0);
    }
  });
});
