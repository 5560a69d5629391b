import { createLogger, PostgresMessageStore, silentLogger, type MessageStore } from '@ferry/core';
import { Writable } from 'node:stream';
import { Client } from 'pg';
import { itRequires, pgRequirement, TEST_PG_URL } from '../../../../test/support/requires';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../../../../test/simulators/athena';
import { configFor, openStore, sourceContext, tempDir } from '../../../../test/simulators/athena';
import { parseEnvelope } from '../to-fhir/athena-records';
import { AthenaRestTransform } from '../transforms/athena-rest.transform';
import { AthenaRestSource, athenaRestSourceSchema, type AthenaRestSourceConfig } from './athena-rest.source';

let sim: AthenaSimulator;
let store: MessageStore;
const sources: AthenaRestSource[] = [];

beforeAll(async () => {
  sim = await AthenaSimulator.start();
  seedPractice(sim);
  store = await openStore(tempDir());
});
afterAll(async () => {
  for (const s of sources) await s.stop();
  await store.close();
  await sim.stop();
});

let n = 0;
function makeSource(extra: Record<string, unknown> = {}, id = `athena-${++n}`, st: MessageStore = store) {
  const cfg = configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, sim, { pollIntervalMs: 60_000, ...extra });
  const ctx = sourceContext(id, st, cfg);
  const src = new AthenaRestSource(ctx);
  sources.push(src);
  return { src, ctx };
}

const ids = (msgs: { body: Buffer }[]) => msgs.map((m) => String(parseEnvelope(m.body).record.patientid));

describe('athena-rest source', () => {
  it('subscribes itself on 403 "not subscribed", then follows next across 5 pages', async () => {
    sim.opts.clients['client-a'] = 'secret-a';
    const { src, ctx } = makeSource({
      feeds: ['patients'],
      pageLimit: 2,
      clientId: 'client-a',
      clientSecret: 'secret-a',
    });
    await src.pollOnce();
    const changed = sim.apiRequests('/patients/changed').filter((r) => r.clientId === 'client-a');
    expect(changed[0].status).toBe(403);
    const sub = sim.apiRequests('/patients/changed/subscription').filter((r) => r.clientId === 'client-a');
    expect(sub.map((r) => [r.method, r.status])).toEqual([['POST', 200]]);
    expect(sub[0].headers['content-type']).toBe('application/x-www-form-urlencoded');

    for (let i = 0; i < 10; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(100 + i) }));
    await src.pollOnce();
    expect(ids(ctx.submitted)).toEqual(Array.from({ length: 10 }, (_, i) => String(100 + i)));
    const pages = sim
      .apiRequests('/patients/changed')
      .filter((r) => r.clientId === 'client-a' && r.method === 'GET' && r.status === 200);
    expect(pages).toHaveLength(5);
    // pages 2..5 are the `next` links, used verbatim (relative, including /v1/{practiceid})
    expect(pages.every((r) => r.path === `/v1/${PRACTICE}/patients/changed`)).toBe(true);
    expect(pages.slice(1).every((r) => r.query.get('limit') === '2')).toBe(true);
    expect(sim.pendingEvents(PRACTICE, 'patients', 'client-a')).toBe(0);
    // every request carried a unique X-Request-Id
    const reqIds = sim
      .apiRequests()
      .filter((r) => r.clientId === 'client-a')
      .map((r) => r.headers['x-request-id']);
    expect(new Set(reqIds).size).toBe(reqIds.length);
    // stored in the real store, checkpoint cleared with the last page
    expect(JSON.parse((await store.getCheckpoint(ctx.id, 'changed:patients:all'))!)).toEqual({
      lastCommitAt: expect.any(String),
    });
  });

  const expectNoEventLostInCrash = async (label: string, openSt: () => Promise<MessageStore>) => {
    const client = `client-crash-${label}`;
    sim.opts.clients[client] = 'secret-b';
    sim.subscribe(PRACTICE, 'patients', client);
    const id = `athena-crash-${label}`;
    const st1 = await openSt();
    const first = makeSource(
      { feeds: ['patients'], clientId: client, clientSecret: 'secret-b', pageLimit: 3 },
      id,
      st1,
    );
    for (let i = 0; i < 5; i++) sim.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(200 + i) }));
    // "kill": the dequeuing GETs happen, the commit never does.
    let reached!: () => void;
    const atCommit = new Promise<void>((r) => (reached = r));
    first.ctx.beforeSubmit = () => {
      reached();
      return new Promise(() => undefined);
    };
    void first.src.pollOnce();
    await atCommit;
    expect(sim.pendingEvents(PRACTICE, 'patients', client)).toBe(2); // page 1 (3 events) dequeued and lost in flight
    first.ctx.abort.abort();
    await st1.close();

    // A new engine on the same store.
    const st2 = await openSt();
    const second = makeSource(
      { feeds: ['patients'], clientId: client, clientSecret: 'secret-b', pageLimit: 3 },
      id,
      st2,
    );
    await second.src.pollOnce();
    const replay = sim
      .apiRequests('/patients/changed')
      .filter((r) => r.clientId === client && r.query.get('showprocessedstartdatetime'));
    expect(replay.length).toBeGreaterThan(0);
    expect(replay[0].query.get('showprocessedstartdatetime')).toMatch(/^\d{2}\/\d{2}\/\d{4} \d{2}:\d{2}:\d{2}$/);
    const stored = await st2.listMessages({ sourceId: id, limit: 100 });
    const bodies = await Promise.all(stored.map((m) => st2.getMessage(m.id, { body: true })));
    const got = new Set(bodies.map((m) => String(parseEnvelope(m!.body!).record.patientid)));
    expect([...got].sort()).toEqual(['200', '201', '202', '203', '204']);
    // nothing stored twice (content-derived control ids + the duplicate policy)
    expect(stored).toHaveLength(5);
    expect(sim.pendingEvents(PRACTICE, 'patients', client)).toBe(0);
    expect(JSON.parse((await st2.getCheckpoint(id, 'changed:patients:all'))!).inflightSince).toBeUndefined();
    // the next poll is an ordinary dequeue again
    sim.upsertPatient(PRACTICE, samplePatient(9, { patientid: '209' }));
    await second.src.pollOnce();
    expect(await st2.listMessages({ sourceId: id, limit: 100 })).toHaveLength(6);
    await st2.close();
  };

  it('loses no event when the engine dies between a changed-feed GET and the store commit (SQLite)', async () => {
    const dir = tempDir();
    await expectNoEventLostInCrash('sqlite', () => openStore(dir));
  });

  itRequires(pgRequirement())(
    'loses no event when the engine dies between a changed-feed GET and the store commit (PostgreSQL)',
    async () => {
      const url = TEST_PG_URL;
      const schema = `athena_crash_${process.pid}_${Date.now() % 100000}`;
      const probe = new Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      await probe.connect();
      try {
        await expectNoEventLostInCrash('pg', async () => {
          const st = new PostgresMessageStore({ url, schema, logger: silentLogger() });
          await st.open();
          return st;
        });
      } finally {
        await probe.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
        await probe.end();
      }
    },
  );

  it('survives a token expiring mid-poll (short TTL, 401, re-auth, replay)', async () => {
    // The token dies after 1 s although it was announced for an hour: the client finds out by a 401.
    const short = await AthenaSimulator.start({ tokenTtlSec: 1, advertisedTtlSec: 3600, latencyMs: 150 });
    try {
      seedPractice(short);
      short.subscribe(PRACTICE, 'patients');
      for (let i = 0; i < 8; i++) short.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(300 + i) }));
      const cfg = configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, short, {
        feeds: ['patients'],
        pageLimit: 2,
        pageDelayMs: 300,
      });
      const ctx = sourceContext('athena-ttl', store, cfg);
      const src = new AthenaRestSource(ctx);
      sources.push(src);
      await src.pollOnce();
      expect(ids(ctx.submitted)).toEqual(['300', '301', '302', '303', '304', '305', '306', '307']);
      expect(short.tokensIssued).toBeGreaterThanOrEqual(2);
      // the expired token got a 401 and the call was replayed with a new one
      expect(short.apiRequests().some((r) => r.status === 401)).toBe(true);
      // a 401 on the Nth call (revoked key) is also recovered once
      short.upsertPatient(PRACTICE, samplePatient(9, { patientid: '309' }));
      short.failNthCall(1, 401);
      await src.pollOnce();
      expect(ids(ctx.submitted)).toContain('309');
    } finally {
      await short.stop();
    }
  });

  it('honours a 429 storm (with and without Retry-After) without exceeding the configured rate', async () => {
    const st = await AthenaSimulator.start();
    try {
      seedPractice(st);
      st.subscribe(PRACTICE, 'patients');
      for (let i = 0; i < 12; i++) st.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(400 + i) }));
      const qps = 8;
      const cfg = configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, st, {
        feeds: ['patients'],
        pageLimit: 1,
        rateLimit: { qps, burst: 1 },
        callRetry: { maxAttempts: 8, initialDelayMs: 100, maxDelayMs: 400, maxRetryAfterMs: 5000 },
      });
      const ctx = sourceContext('athena-429', store, cfg);
      const src = new AthenaRestSource(ctx);
      sources.push(src);
      st.inject({ status: 429, times: 2, match: /changed$/ }); // no Retry-After: backoff
      st.inject({ status: 429, times: 1, match: /changed$/, retryAfter: '1' });
      await src.pollOnce();
      expect(ids(ctx.submitted)).toEqual(Array.from({ length: 12 }, (_, i) => String(400 + i)));
      const reqs = st.apiRequests();
      const throttled = reqs.filter((r) => r.status === 429);
      expect(throttled).toHaveLength(3);
      // after the 429 with Retry-After: 1, nothing was sent for a second
      const ra = reqs.findIndex((r) => r.status === 429 && reqs.indexOf(r) === reqs.indexOf(throttled[2]));
      expect(reqs[ra + 1].at - reqs[ra].at).toBeGreaterThanOrEqual(990);
      // never more than qps (+ the 1-token burst) requests in any one-second window
      const times = reqs.map((r) => r.at);
      for (const t of times) expect(times.filter((x) => x >= t && x < t + 1000).length).toBeLessThanOrEqual(qps + 1);
    } finally {
      await st.stop();
    }
  });

  it('a server throttling below the configured rate (429 storm with Retry-After) is followed, nothing lost', async () => {
    const st = await AthenaSimulator.start({ qps: 3, throttleRetryAfterSec: 1 });
    try {
      seedPractice(st);
      st.subscribe(PRACTICE, 'patients');
      for (let i = 0; i < 10; i++) st.upsertPatient(PRACTICE, samplePatient(i, { patientid: String(450 + i) }));
      const cfg = configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, st, {
        feeds: ['patients'],
        pageLimit: 1,
        rateLimit: { qps: 10, burst: 1 },
        callRetry: { maxAttempts: 10, initialDelayMs: 100, maxDelayMs: 400, maxRetryAfterMs: 5000 },
      });
      const ctx = sourceContext('athena-storm', store, cfg);
      const src = new AthenaRestSource(ctx);
      sources.push(src);
      await src.pollOnce();
      expect(ids(ctx.submitted)).toEqual(Array.from({ length: 10 }, (_, i) => String(450 + i)));
      const reqs = st.apiRequests();
      const throttled = reqs.filter((r) => r.status === 429);
      expect(throttled.length).toBeGreaterThanOrEqual(2);
      // every 429 said Retry-After: 1 -> the next request (from any caller of the practice) came >= 1 s later
      const waits = throttled.flatMap((t) => {
        const next = reqs[reqs.indexOf(t) + 1];
        return next ? [next.at - t.at] : [];
      });
      expect(waits.length).toBeGreaterThanOrEqual(1);
      expect(waits.filter((ms) => ms < 990)).toEqual([]);
      const times = reqs.map((r) => r.at);
      for (const t of times) expect(times.filter((x) => x >= t && x < t + 1000).length).toBeLessThanOrEqual(11);
    } finally {
      await st.stop();
    }
  });

  it('carries the department time zone so a US/Pacific appointment lands on the right UTC instant; optional booked backfill', async () => {
    sim.opts.clients['client-c'] = 'secret-c';
    sim.subscribe(PRACTICE, 'appointments', 'client-c');
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '5001',
      date: '03/07/2026',
      starttime: '09:30',
      duration: 30,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '100',
      providerid: '1',
      appointmenttypeid: '11',
      appointmenttype: 'FOLLOW UP',
    });
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '5002',
      date: '03/09/2026',
      starttime: '09:30',
      duration: '30',
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '100',
      providerid: '1',
    });
    const { src, ctx } = makeSource({
      feeds: ['appointments'],
      departmentIds: ['21'],
      clientId: 'client-c',
      clientSecret: 'secret-c',
    });
    await src.pollOnce();
    expect(
      sim
        .apiRequests('/appointments/changed')
        .filter((r) => r.clientId === 'client-c')
        .every((r) => r.query.get('departmentid') === '21'),
    ).toBe(true);
    const t = new AthenaRestTransform();
    const starts = ctx.submitted.map(
      (m) =>
        (
          t.toFhir(
            {
              id: 'x',
              seq: 1,
              sourceId: 's',
              contentType: m.contentType,
              headers: {},
              receivedAt: new Date(),
              status: 'received',
              body: m.body,
            },
            { logger: undefined as never },
          ).entry![0].resource as any
        ).start,
    );
    expect(starts).toEqual(['2026-03-07T17:30:00.000Z', '2026-03-09T16:30:00.000Z']);

    // backfill: booked appointments in a window, once per department
    const today = new Date();
    const mmdd = `${String(today.getUTCMonth() + 1).padStart(2, '0')}/${String(today.getUTCDate()).padStart(2, '0')}/${today.getUTCFullYear()}`;
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '5003',
      date: mmdd,
      starttime: '10:00',
      duration: 15,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '101',
      providerid: '1',
    });
    const bf = makeSource({
      feeds: [],
      departmentIds: ['21'],
      clientId: 'client-c',
      clientSecret: 'secret-c',
      backfill: { enabled: true, daysBack: 1, daysAhead: 1 },
    });
    await bf.src.pollOnce();
    await bf.src.pollOnce();
    expect(bf.ctx.submitted.map((m) => parseEnvelope(m.body).record.appointmentid)).toEqual(['5003']);
    expect(sim.apiRequests('/appointments/booked')).toHaveLength(1);
  });

  it('logs a run of failed polls once and its end once, not once per poll', async () => {
    sim.opts.clients['client-e'] = 'secret-e';
    sim.subscribe(PRACTICE, 'providers', 'client-e');
    const lines: { level: string; message: string; source?: string; failures?: number }[] = [];
    const cfg = configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, sim, {
      feeds: ['providers'],
      clientId: 'client-e',
      clientSecret: 'secret-e',
      pollIntervalMs: 20,
      callRetry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10, maxRetryAfterMs: 100 },
    });
    const ctx = {
      ...sourceContext(`athena-${++n}`, store, cfg),
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
    const watched = new AthenaRestSource(ctx);
    sources.push(watched);
    sim.inject({ status: 503, times: 1_000_000 });
    await watched.start();
    const before = watched.polls;
    for (let i = 0; i < 200 && watched.polls < before + 8; i++) await new Promise((r) => setTimeout(r, 20));
    expect(watched.polls).toBeGreaterThanOrEqual(before + 8);
    expect(watched.isReady()).toBe(true); // a retryable outage: still ready, polling on
    sim.faults.length = 0;
    const failedPolls = watched.polls - before;
    for (let i = 0; i < 200 && !lines.some((l) => l.message === 'athena poll failed: recovered'); i++)
      await new Promise((r) => setTimeout(r, 20));
    await watched.stop();
    const told = lines.filter((l) => l.message.startsWith('athena poll failed'));
    expect(told.map((l) => `${l.level} ${l.message}`)).toEqual([
      'error athena poll failed',
      'info athena poll failed: recovered',
    ]);
    expect(told[1]).toMatchObject({ source: ctx.id });
    expect(told[1].failures).toBeGreaterThanOrEqual(Math.min(failedPolls, 8));
  });

  it("lab results: the changed feed has no analytes (1.4), so each patient's chart results are read (batched, paged, with 5xx) and mapped with LOINC", async () => {
    sim.opts.clients['lab-client'] = 'lab-secret';
    sim.subscribe(PRACTICE, 'labresults', 'lab-client');
    sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '401' }));
    sim.upsertPatient(PRACTICE, samplePatient(2, { patientid: '402' }));
    const glucose = (v: string) => [
      { analytename: 'Glucose', value: v, units: 'mg/dL', loinc: '2345-7', referencerange: '70-99' },
    ];
    sim.addLabResult(PRACTICE, '401', {
      labresultid: 5001,
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-02-10T09:00:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      analytes: glucose('105'),
    });
    sim.addLabResult(PRACTICE, '401', {
      labresultid: 5002,
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-02-10T09:05:00-05:00',
      labresultloinc: '4548-4',
      description: 'Hemoglobin A1c',
      analytes: [{ analytename: 'HbA1c', value: '6.1', units: '%', loinc: '4548-4' }],
    });
    sim.addLabResult(PRACTICE, '402', {
      labresultid: 5003,
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-02-10T10:00:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      analytes: glucose('88'),
    });
    // the feed itself carries no analytes
    expect(
      sim
        .practice(PRACTICE)
        .queues.get('lab-client|labresults')!
        .every((e) => e.record.analytes === undefined && e.record.labresultloinc === undefined),
    ).toBe(true);
    sim.inject({ status: 503, match: /\/chart\/401\/labresults$/ });
    const { src, ctx } = makeSource({
      feeds: ['labresults'],
      pageLimit: 1,
      clientId: 'lab-client',
      clientSecret: 'lab-secret',
    });
    await src.pollOnce();
    const chartReads = sim
      .apiRequests('/labresults')
      .filter((r) => r.clientId === 'lab-client' && r.path.includes('/chart/'));
    // one read per patient per feed page (pageLimit 1: 3 feed pages), paged by `limit`, the 503 retried
    expect(chartReads.every((r) => r.query.get('departmentid') === '1' && r.query.get('limit') === '1')).toBe(true);
    expect(chartReads.filter((r) => r.status === 503)).toHaveLength(1);
    // batched: patient 401's two results (two feed pages) come from one chart read (2 pages of 1), patient 402's from one
    expect(
      chartReads.filter((r) => r.status === 200).map((r) => `${r.path.split('/')[4]}@${r.query.get('offset') ?? 0}`),
    ).toEqual(['401@0', '401@1', '402@0']);
    const transform = new AthenaRestTransform();
    const reports = ctx.submitted.map((m) =>
      transform.toFhir({ ...m, id: 'x', seq: 1, sourceId: 's', receivedAt: new Date(), status: 'received' } as any, {
        logger: silentLogger(),
      }),
    );
    expect(reports).toHaveLength(3);
    const first = reports[0].entry!.map((e) => e.resource as any);
    const dr = first.find((r) => r.resourceType === 'DiagnosticReport');
    expect(dr.code.coding).toEqual(
      expect.arrayContaining([expect.objectContaining({ system: 'http://loinc.org', code: '2345-7' })]),
    );
    expect(dr.code.text).toBe('Glucose');
    const obs = first.filter((r) => r.resourceType === 'Observation');
    expect(obs).toHaveLength(1);
    expect(obs[0]).toMatchObject({
      code: { coding: [expect.objectContaining({ system: 'http://loinc.org', code: '2345-7' })] },
      valueQuantity: { value: 105, unit: 'mg/dL' },
    });
    expect(reports.map((b) => b.entry!.filter((e) => e.resource!.resourceType === 'Observation').length)).toEqual([
      1, 1, 1,
    ]);
  });

  it('problems and prescriptions feeds, allergies and vitals chart reads: each to canonical FHIR, paged, through 429/503, changes only once', async () => {
    sim.opts.clients['chart-client'] = 'chart-secret';
    for (const f of ['problems', 'prescriptions', 'patients']) sim.subscribe(PRACTICE, f, 'chart-client');
    sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '501' }));
    const problems = [
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
    ];
    sim.setChart(PRACTICE, '501', 'problems', problems);
    sim.setChart(PRACTICE, '501', 'medications', [
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
    sim.setChart(PRACTICE, '501', 'allergies', [
      {
        allergenid: '10143',
        allergenname: 'Penicillins',
        onsetdate: '06/01/2010',
        criticality: 'high',
        reactions: [{ reactionname: 'hives', snomedcode: '247472004', severity: 'moderate' }],
      },
    ]);
    sim.setChart(PRACTICE, '501', 'vitals', [
      {
        key: 'BLOODPRESSURE',
        abbreviation: 'BP',
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
        abbreviation: 'Wt',
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
    sim.inject({ status: 429, retryAfter: '0', match: /\/chart\/501\/problems$/ });
    sim.inject({ status: 503, match: /\/chart\/501\/vitals$/ });
    const { src, ctx } = makeSource({
      feeds: ['patients', 'problems', 'prescriptions'],
      chartSections: ['allergies', 'vitals'],
      pageLimit: 1,
      clientId: 'chart-client',
      clientSecret: 'chart-secret',
    });
    await src.pollOnce();
    const transform = new AthenaRestTransform();
    const resources = () =>
      ctx.submitted.flatMap((m) =>
        transform
          .toFhir({ ...m, id: 'x', seq: 1, sourceId: 's', receivedAt: new Date(), status: 'received' } as any, {
            logger: silentLogger(),
          })
          .entry!.map((e) => e.resource as any),
      );
    const all = resources();
    expect(all.map((r) => r.resourceType).sort()).toEqual([
      'AllergyIntolerance',
      'Condition',
      'Condition',
      'MedicationStatement',
      'Observation',
      'Observation',
      'Observation',
      'Patient',
    ]);
    const htn = all.find((r) => r.resourceType === 'Condition' && r.identifier[0].value === '9001');
    expect(htn).toMatchObject({
      clinicalStatus: { coding: [{ code: 'active' }] },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '59621000' }] },
      onsetDateTime: '2021-03-04',
      subject: { identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: '501' } },
    });
    expect(all.find((r) => r.identifier?.[0]?.value === '9002')).toMatchObject({
      clinicalStatus: { coding: [{ code: 'resolved' }] },
      abatementDateTime: '2026-01-20',
    });
    expect(all.find((r) => r.resourceType === 'MedicationStatement')).toMatchObject({
      status: 'active',
      medicationCodeableConcept: {
        coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '314076' }],
      },
      dosage: [{ text: '1 tablet daily' }],
    });
    expect(all.find((r) => r.resourceType === 'AllergyIntolerance')).toMatchObject({
      criticality: 'high',
      code: { text: 'Penicillins' },
      reaction: [{ severity: 'moderate', manifestation: [{ coding: [{ code: '247472004' }] }] }],
    });
    const sys = all.find((r) => r.resourceType === 'Observation' && r.code.coding[0].code === '8480-6');
    // department 1 is US/Eastern: 09:15 local on 02/10/2026 is 14:15Z
    expect(sys).toMatchObject({
      category: [{ coding: [{ code: 'vital-signs' }] }],
      valueQuantity: { value: 132, unit: 'mm[Hg]' },
      effectiveDateTime: '2026-02-10T14:15:00.000Z',
    });
    // paged (limit 1) chart reads with the department, the 429 and the 503 retried
    const reads = sim.apiRequests(`/chart/501/`).filter((r) => r.clientId === 'chart-client');
    expect(reads.every((r) => r.query.get('departmentid') === '1' && r.query.get('limit') === '1')).toBe(true);
    expect(reads.filter((r) => r.path.endsWith('/problems') && r.status === 200)).toHaveLength(2);
    expect(reads.map((r) => r.status)).toEqual(expect.arrayContaining([429, 503]));

    // A problem is resolved: only that Condition is new; the rest re-read is dropped as duplicates.
    const before = (await store.listMessages({ sourceId: ctx.id, limit: 1000 })).length;
    sim.setChart(PRACTICE, '501', 'problems', [
      { ...problems[0], events: [...problems[0].events, { eventtype: 'END', startdate: '02/01/2026' }] },
      problems[1],
    ]);
    await src.pollOnce();
    const after = await store.listMessages({ sourceId: ctx.id, limit: 1000 });
    expect(after.length - before).toBe(1);
    expect(after.at(-1)!.headers.controlId).toMatch(/^problem:9001:/);
  });

  it('runs its poll loop from start() and stops cleanly', async () => {
    sim.opts.clients['client-d'] = 'secret-d';
    sim.subscribe(PRACTICE, 'providers', 'client-d');
    const { src, ctx } = makeSource({
      feeds: ['providers'],
      clientId: 'client-d',
      clientSecret: 'secret-d',
      pollIntervalMs: 50,
    });
    sim.addProvider(PRACTICE, { providerid: 99, firstname: 'New', lastname: 'Doc' });
    await src.start();
    expect(src.isReady()).toBe(true);
    for (let i = 0; i < 100 && ctx.submitted.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(ctx.submitted.map((m) => m.contentType)).toEqual(['application/vnd.athena.provider+json']);
    await src.stop();
    expect(src.isReady()).toBe(false);
  });
});
