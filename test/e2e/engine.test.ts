/**
 * The engine end to end, in-process: a third-party plugin loaded by path (transform + sink type),
 * the real SQLite store, the core file sink, routes with steps, retries, dead letters, replay,
 * the admin API, and the PHI rule for logs.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type { HttpSource } from '@ferry/core';
import { ConfigError, createLogger, Engine, silentLogger, type Role } from '@ferry/core';
import { CSV_TYPE, memorySinkAborted, memorySinkDeliveries } from '../plugins/csv-patient';
import { roleTokens, type RoleTokens } from '../support';

/** One API token per role, in each engine's config (the admin API needs one). */
let roles: RoleTokens;
beforeAll(async () => {
  roles = await roleTokens();
});
/** A request to the admin API as `role` (admin by default). */
const api = (url: string, init: RequestInit = {}, role: Role = 'admin') =>
  fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), ...roles.auth(role) } });

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-'));
}

function baseConfig(dir: string, extra: Record<string, unknown> = {}) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: [{ package: pluginPath, config: { system: 'urn:oid:1.2.3.4' } }],
    processing: { pollIntervalMs: 50 },
    admin: { enabled: true, port: 0, auth: { tokens: roles.tokens } },
    ...extra,
  };
}

const csv = (line: string) => ({ contentType: CSV_TYPE, body: Buffer.from(line) });

describe('engine end to end', () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
  });

  it('routes a message through transform and steps to several sinks, recording every state', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: {
          mem: { type: 'memory' },
          archive: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' },
        },
        routes: [
          {
            id: 'patients',
            when: { messageType: ['CSV^*'], fhirpath: 'Bundle.entry.resource.ofType(Patient).exists()' },
            steps: ['validate'],
            to: ['mem', 'archive'],
          },
        ],
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A100,Doe,Jane,1980-05-01,female')]);
    await engine.waitForIdle();
    const m = await engine.store.getMessage(r.id, { bundle: true });
    expect(m?.status).toBe('delivered');
    expect(m?.headers.orderingKey).toBe('urn:oid:1.2.3.4|A100');
    const events = (await engine.store.events(r.id)).map((e) => e.status);
    expect(events).toEqual(expect.arrayContaining(['received', 'transformed', 'routed']));
    expect((await engine.store.deliveries(r.id)).map((d) => `${d.sinkId}:${d.status}`).sort()).toEqual([
      'archive:delivered',
      'mem:delivered',
    ]);
    expect(memorySinkDeliveries.get('mem')?.at(-1)?.bundle.entry?.[0].resource).toMatchObject({
      resourceType: 'Patient',
      birthDate: '1980-05-01',
    });
    const lines = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
      .trim()
      .split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]).resourceType).toBe('Bundle');
  });

  it('keeps a message no route matches as unrouted, and a filtered one as filtered', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: { mem: { type: 'memory' } },
        routes: [
          { id: 'only-adt', when: { messageType: ['ADT^*'] }, to: ['mem'] },
          {
            id: 'women',
            when: { messageType: ['CSV^*'] },
            steps: [{ filter: "Bundle.entry.resource.ofType(Patient).gender = 'female'" }],
            to: ['mem'],
          },
        ],
      }),
    });
    await engine.start();
    const [male] = await engine.submit('intake', [csv('A200,Roe,John,1970,male')]);
    await engine.waitForIdle();
    expect((await engine.store.getMessage(male.id))?.status).toBe('filtered');

    await engine.stop();
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: { mem: { type: 'memory' } },
        routes: [{ id: 'only-adt', when: { messageType: ['ADT^*'] }, to: ['mem'] }],
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A201,Roe,Jim,1971,male')]);
    await engine.waitForIdle();
    expect((await engine.store.getMessage(r.id))?.status).toBe('unrouted');
    const unrouted = await engine.store.listMessages({ status: ['unrouted'] });
    expect(unrouted.map((x) => x.id)).toContain(r.id);
  });

  it('fails a message whose bundle does not validate, keeping the OperationOutcome', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: { mem: { type: 'memory' } },
        routes: [{ id: 'v', steps: ['validate'], to: ['mem'] }],
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A300,Poe,Ed,not-a-date,male')]);
    await engine.waitForIdle();
    const m = await engine.store.getMessage(r.id);
    expect(m?.status).toBe('failed');
    expect(m?.error?.code).toBe('FERRY_E_INPUT_FHIR_INVALID');
    expect(m?.error?.outcome?.issue?.length).toBeGreaterThan(0);
  });

  it('retries a retryable failure with backoff, dead-letters a permanent one, and replays it', async () => {
    const dir = tmp();
    const retry = { initialDelayMs: 20, maxDelayMs: 50, jitter: 0 };
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: {
          flaky: { type: 'memory', failFirst: 2, retry },
          strict: { type: 'memory', failFirst: 1, failMode: 'permanent', retry },
        },
        routes: [{ id: 'r', to: ['flaky', 'strict'] }],
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A400,Lee,Ann,1990-01-02,female')]);
    await engine.waitForIdle(10_000, { includeScheduled: true });
    const ds = await engine.store.deliveries(r.id);
    expect(ds.find((d) => d.sinkId === 'flaky')).toMatchObject({ status: 'delivered', attempts: 3 });
    expect(ds.find((d) => d.sinkId === 'strict')).toMatchObject({ status: 'dead', attempts: 1 });
    expect((await engine.store.getMessage(r.id))?.status).toBe('dead');

    const res = await api(`${engine.adminUrl}/api/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ status: 'dead' }),
    });
    expect(await res.json()).toMatchObject({ replayed: 1 });
    await engine.waitForIdle();
    expect((await engine.store.getMessage(r.id))?.status).toBe('delivered');
  });

  it('pauses a sink that keeps failing, probes it without spending maxAttempts, and shows it in /api/sinks, /metrics and the log (no PHI)', async () => {
    const dir = tmp();
    const stream = new PassThrough();
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    engine = await Engine.create({
      logger: createLogger({ level: 'info' }, stream),
      config: baseConfig(dir, {
        sinks: {
          // Down for six calls; three attempts would make the delivery dead without the breaker.
          down: {
            type: 'memory',
            failFirst: 6,
            retry: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20, jitter: 0 },
            circuitBreaker: { failureThreshold: 2, openMs: 100, maxOpenMs: 200 },
          },
        },
        routes: [{ id: 'r', to: ['down'] }],
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('MRN555000111,Paused,Penelope,1966-06-06,female')]);
    const base = engine.adminUrl!;
    type View = { id: string; circuit: { state: string; lastErrorCode?: string; nextProbeAt?: string } };
    let seen: View | undefined;
    for (let i = 0; i < 100 && !seen; i++) {
      const [s] = (await (await api(`${base}/api/sinks`)).json()) as View[];
      if (s.circuit.state !== 'closed') seen = s;
      else await new Promise((res) => setTimeout(res, 10));
    }
    expect(seen).toMatchObject({ id: 'down', circuit: { lastErrorCode: 'FERRY_E_DELIVERY_MEMORY_DOWN' } });
    expect(await (await api(`${base}/metrics`)).text()).toMatch(/^ferry_sink_paused\{sink="down"\} 1$/m);
    await engine.waitForIdle(10_000, { includeScheduled: true });
    const [d] = await engine.store.deliveries(r.id);
    // Two failures paused it (slow start: the sink had not answered since the engine started, so
    // they were probes too), four probes failed, the seventh call was taken.
    expect(d).toMatchObject({ status: 'delivered', attempts: 7, probeAttempts: 6 });
    const metrics = await (await api(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^ferry_sink_paused\{sink="down"\} 0$/m);
    expect(metrics).toMatch(/^ferry_sink_pauses_total\{sink="down"\} 1$/m);
    expect(((await (await api(`${base}/api/sinks`)).json()) as unknown[])[0]).toMatchObject({
      id: 'down',
      concurrency: 8,
      inFlight: 0,
      circuit: { state: 'closed', consecutiveFailures: 0 },
    });
    await engine.stop();
    engine = undefined;
    const log = Buffer.concat(chunks).toString('utf8');
    expect(log).toMatch(/deliveries paused/);
    expect(log).toMatch(/sink probe failed/);
    expect(log).toMatch(/deliveries resumed/);
    for (const phi of ['Paused', 'Penelope', 'MRN555000111', '1966-06-06']) expect(log).not.toContain(phi);
  });

  it('holds a sink through the admin API until released or until a set time: its deliveries wait, unattempted', async () => {
    const dir = tmp();
    const stream = new PassThrough();
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    engine = await Engine.create({
      logger: createLogger({ level: 'info' }, stream),
      config: baseConfig(dir, { sinks: { held: { type: 'memory' } }, routes: [{ id: 'r', to: ['held'] }] }),
    });
    await engine.start();
    const base = engine.adminUrl!;
    const post = (p: string, body: unknown) =>
      api(`${base}${p}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await post('/api/sinks/nope/hold', {})).status).toBe(404);
    expect((await post('/api/sinks/held/hold', { until: 'tomorrow-ish' })).status).toBe(400);
    expect((await post('/api/sinks/held/hold', { until: Date.now() + 60_000, minutes: 5 })).status).toBe(400);
    const hold = await post('/api/sinks/held/hold', { reason: 'EHR downtime' });
    expect(hold.status).toBe(200);
    expect(await hold.json()).toMatchObject({ sinkId: 'held', reason: 'EHR downtime' });
    const [r] = await engine.submit('intake', [csv('MRN777000111,Held,Hattie,1977-07-07,female')]);
    await new Promise((res) => setTimeout(res, 600));
    expect(memorySinkDeliveries.get('held') ?? []).toHaveLength(0);
    expect(await engine.store.deliveries(r.id)).toMatchObject([{ status: 'pending', attempts: 0 }]);
    expect(((await (await api(`${base}/api/sinks`)).json()) as unknown[])[0]).toMatchObject({
      id: 'held',
      hold: { reason: 'EHR downtime' },
    });
    expect(await (await api(`${base}/metrics`)).text()).toMatch(/^ferry_sink_held\{sink="held"\} 1$/m);
    expect(await (await api(`${base}/api/sinks/held/hold`, { method: 'DELETE' })).json()).toEqual({ released: true });
    await engine.waitForIdle();
    expect(memorySinkDeliveries.get('held')).toHaveLength(1);
    expect(await (await api(`${base}/metrics`)).text()).toMatch(/^ferry_sink_held\{sink="held"\} 0$/m);
    expect(await (await api(`${base}/api/sinks/held/hold`, { method: 'DELETE' })).json()).toEqual({ released: false });

    // A hold with an end: deliveries resume by themselves when it passes.
    await post('/api/sinks/held/hold', { until: new Date(Date.now() + 700).toISOString() });
    const t0 = Date.now();
    await engine.submit('intake', [csv('MRN777000222,Held,Harry,1977-07-08,male')]);
    await engine.waitForIdle(10_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(memorySinkDeliveries.get('held')).toHaveLength(2);
    await engine.stop();
    engine = undefined;
    const log = Buffer.concat(chunks).toString('utf8');
    expect(log).toMatch(/sink held/);
    expect(log).toMatch(/sink released/);
    for (const phi of ['Hattie', 'Harry', 'MRN777000111', 'MRN777000222']) expect(log).not.toContain(phi);
  });

  it('makes a delivery whose sink call outlasts the lease once: the lease is renewed while the call runs', async () => {
    const dir = tmp();
    memorySinkDeliveries.delete('slow');
    // The sink takes 1.5 s; the lease is 0.4 s. Without renewal the dispatcher claimed the
    // expired delivery again and called the sink a second (and third) time meanwhile.
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: { slow: { type: 'memory', delayMs: 1500 } },
        routes: [{ id: 'r', to: ['slow'] }],
        processing: { pollIntervalMs: 50, leaseMs: 400 },
      }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A450,Slow,Sam,1990-01-02,male')]);
    await engine.waitForIdle(10_000);
    expect(memorySinkDeliveries.get('slow')).toHaveLength(1);
    expect(await engine.store.deliveries(r.id)).toEqual([
      expect.objectContaining({ status: 'delivered', attempts: 1 }),
    ]);
    expect((await engine.store.getMessage(r.id))?.status).toBe('delivered');
  });

  it("gives up on a sink call that never returns after the sink's deliveryTimeoutMs, tells the sink, and retries", async () => {
    const dir = tmp();
    memorySinkDeliveries.delete('stuck');
    memorySinkAborted.delete('stuck');
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: {
          stuck: {
            type: 'memory',
            hangFirst: 1,
            deliveryTimeoutMs: 300,
            retry: { initialDelayMs: 20, maxDelayMs: 50, jitter: 0 },
          },
        },
        routes: [{ id: 'r', to: ['stuck'] }],
      }),
    });
    await engine.start();
    const [first] = await engine.submit('intake', [csv('A460,Hung,Hal,1990-01-02,male')]);
    const [later] = await engine.submit('intake', [csv('A460,Hung,Hal,1990-01-03,male')]);
    await engine.waitForIdle(10_000, { includeScheduled: true });
    expect(memorySinkAborted.get('stuck')).toBe(1);
    expect(await engine.store.deliveries(first.id)).toEqual([
      expect.objectContaining({ status: 'delivered', attempts: 2 }),
    ]);
    // The engine's first call to the sink since it started: a probe (slow start), not counted towards maxAttempts.
    expect((await engine.store.events(first.id)).find((e) => e.status === 'delivery:failed')?.detail).toBe(
      'FERRY_E_DELIVERY_TIMEOUT (probe)',
    );
    // The later update of the same patient was held behind it (strict order), then delivered after it.
    expect((await engine.store.getMessage(later.id))?.status).toBe('delivered');
    expect(memorySinkDeliveries.get('stuck')!.map((d) => d.message.id)).toEqual([first.id, later.id]);
  });

  it('acknowledges a duplicate again under ignore and refuses it under reject, storing nothing new', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, { sinks: { mem: { type: 'memory' } }, routes: [{ id: 'r', to: ['mem'] }] }),
    });
    await engine.start();
    const line = 'D100,Dup,Dee,1999-09-09,female';
    const ignore = { duplicates: { policy: 'ignore' as const, windowMs: 60_000 } };
    const [first] = await engine.submit('intake', [csv(line)], ignore);
    const [again] = await engine.submit('intake', [csv(line)], ignore);
    expect(again).toMatchObject({ duplicate: true, stored: false, duplicateOf: first.id });
    await expect(
      engine.submit('intake', [csv(line)], { duplicates: { policy: 'reject', windowMs: 60_000 } }),
    ).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_DUPLICATE_REJECTED',
      kind: 'input',
    });
    const mixed = await engine.submit('intake', [csv(line), csv('D101,New,Nia,2000-01-01,female')], {
      duplicates: { policy: 'reject', windowMs: 60_000 },
    });
    expect(mixed.map((r) => [r.stored, !!r.rejected])).toEqual([
      [false, true],
      [true, false],
    ]);
    await engine.waitForIdle();
    expect((await engine.store.listMessages({ sourceId: 'intake' })).length).toBe(2);
  });

  it('serves health, readiness, metrics and the message API', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, { sinks: { mem: { type: 'memory' } }, routes: [{ id: 'r', to: ['mem'] }] }),
    });
    await engine.start();
    const [r] = await engine.submit('intake', [csv('A500,Kim,Lu,2001-02-03,other')]);
    await engine.waitForIdle();
    const base = engine.adminUrl!;
    expect(await (await fetch(`${base}/health`)).json()).toEqual({ status: 'ok' });
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const metrics = await (await api(`${base}/metrics`)).text();
    expect(metrics).toMatch(/ferry_messages_received_total\{source="intake"\} 1/);
    expect(metrics).toMatch(/ferry_deliveries_total\{route="r",sink="mem",outcome="delivered"\} 1/);
    expect(metrics).toMatch(/ferry_delivery_duration_seconds_bucket/);
    expect(metrics).toMatch(/^ferry_store_up 1$/m);
    expect(metrics).toMatch(/^ferry_store_backlog\{kind="deliveries_due"\} 0$/m);
    expect(metrics).toMatch(/^ferry_store_messages\{status="dead"\} 0$/m);
    const list = (await (await api(`${base}/api/messages?status=delivered`)).json()) as {
      id: string;
      body?: unknown;
    }[];
    expect(list.map((x) => x.id)).toContain(r.id);
    expect(list[0].body).toBeUndefined();
    const one = (await (await api(`${base}/api/messages/${r.id}`)).json()) as {
      body?: string;
      deliveries: unknown[];
      events: unknown[];
    };
    expect(one.body).toBeUndefined();
    expect(one.deliveries).toHaveLength(1);
    expect(((await (await api(`${base}/api/messages/${r.id}?body=true`)).json()) as { body?: string }).body).toContain(
      'A500',
    );
    expect((await api(`${base}/api/messages/nope`)).status).toBe(404);
    expect((await api(`${base}/api/messages?status=bogus`)).status).toBe(400);
    // Without a token nothing but /health and /ready; a viewer gets metadata, never the body or the ordering key.
    expect((await fetch(`${base}/api/messages`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await api(`${base}/api/messages/${r.id}?body=true`, {}, 'viewer')).status).toBe(403);
    const seen = JSON.stringify(await (await api(`${base}/api/messages/${r.id}`, {}, 'viewer')).json());
    expect(seen).toContain(r.id);
    expect(seen).not.toMatch(/A500|orderingKey/);
  });

  it('metrics show open work and dead letters from the store', async () => {
    const dir = tmp();
    engine = await Engine.create({
      config: baseConfig(dir, {
        sinks: {
          mem: { type: 'memory' },
          refuses: { type: 'memory', failFirst: 1, failMode: 'permanent' },
          later: { type: 'memory', failFirst: 100, retry: { initialDelayMs: 3_600_000, jitter: 0 } },
        },
        routes: [
          { id: 'r', to: ['mem'] },
          {
            id: 'dead',
            when: { fhirpath: "Bundle.entry.resource.ofType(Patient).identifier.value = 'D1'" },
            to: ['refuses'],
          },
          {
            id: 'retry',
            when: { fhirpath: "Bundle.entry.resource.ofType(Patient).identifier.value = 'R1'" },
            to: ['later'],
          },
        ],
      }),
    });
    await engine.start();
    await engine.submit('intake', [
      csv('D1,Dee,Ad,2001-02-03,other'),
      csv('R1,Ray,Tr,2001-02-03,other'),
      csv('OK1,Oka,Ok,2001-02-03,other'),
    ]);
    const scrape = async () => (await api(`${engine!.adminUrl}/metrics`)).text();
    let metrics = '';
    // (a loaded machine takes seconds to dead-letter and schedule: up to 20 s, usually < 1 s)
    const settled = (m: string) =>
      /^ferry_store_backlog\{kind="deliveries_scheduled"\} 1$/m.test(m) &&
      /^ferry_store_messages\{status="dead"\} 1$/m.test(m) &&
      /^ferry_store_messages\{status="routed"\} 1$/m.test(m);
    for (let i = 0; i < 400 && !settled(metrics); i++) {
      await new Promise((r) => setTimeout(r, 50));
      metrics = await scrape();
    }
    expect(metrics).toMatch(/^ferry_store_up 1$/m);
    expect(metrics).toMatch(/^ferry_store_messages\{status="dead"\} 1$/m);
    expect(metrics).toMatch(/^ferry_store_messages\{status="routed"\} 1$/m);
    expect(metrics).toMatch(/^ferry_store_backlog\{kind="deliveries_scheduled"\} 1$/m);
    expect(metrics).toMatch(/^ferry_store_backlog\{kind="unprocessed_messages"\} 0$/m);
    expect(metrics).not.toMatch(/Dee|Ray|D1|R1/);
    await engine.stop();
    // A closed store is down, with no stale figures.
    expect(await engine.metrics.storeState()).toEqual({ reachable: false });
    engine = undefined;
  });

  it('never writes a patient name or MRN to the log at info level', async () => {
    const dir = tmp();
    const stream = new PassThrough();
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const logger = createLogger({ level: 'info' }, stream);
    engine = await Engine.create({
      logger,
      config: baseConfig(dir, {
        sinks: {
          mem: { type: 'memory' },
          bad: { type: 'memory', failFirst: 1, retry: { initialDelayMs: 10, jitter: 0 } },
        },
        routes: [{ id: 'r', steps: ['validate'], to: ['mem', 'bad'] }],
      }),
    });
    await engine.start();
    await engine.submit('intake', [csv('MRN987654321,Quixotically,Zebulon,1955-11-05,male')]);
    await engine.submit('intake', [csv('MRN123123999,Xylophonist,Perpetua,bad-date,female')]);
    await engine.waitForIdle(10_000, { includeScheduled: true });
    await engine.stop();
    engine = undefined;
    const log = Buffer.concat(chunks).toString('utf8');
    expect(log).toMatch(/message routed/);
    expect(log).toMatch(/message failed/);
    for (const phi of [
      'Quixotically',
      'Zebulon',
      'MRN987654321',
      'Xylophonist',
      'Perpetua',
      'MRN123123999',
      '1955-11-05',
    ])
      expect(log).not.toContain(phi);
  });

  it('a source with no duplicates config gets the 24 h window (a fake clock, the same bytes resent over HTTP)', async () => {
    const dir = tmp();
    // Only Date is faked (sources stamp receivedAt with it); timers, I/O and the event loop are real.
    jest.useFakeTimers({
      doNotFake: [
        'hrtime',
        'nextTick',
        'performance',
        'queueMicrotask',
        'requestAnimationFrame',
        'cancelAnimationFrame',
        'requestIdleCallback',
        'cancelIdleCallback',
        'setImmediate',
        'clearImmediate',
        'setInterval',
        'clearInterval',
        'setTimeout',
        'clearTimeout',
      ],
    });
    let t = Date.parse('2031-03-04T05:06:07.000Z');
    jest.setSystemTime(t);
    try {
      // The hl7v2 plugin reads the control id (MSH-10) the duplicate key is made of.
      engine = await Engine.create({
        logger: silentLogger(),
        config: baseConfig(dir, {
          plugins: ['@ferry/plugin-hl7v2-mllp'],
          admin: { enabled: false },
          sources: { web: { type: 'http', host: '127.0.0.1', port: 0, path: '/in' } },
        }),
      });
      await engine.start();
      const url = engine.source<HttpSource>('web')!.url;
      const body =
        'MSH|^~\\&|APP|FAC|FERRY|HOSP|20250101120000||ADT^A08^ADT_A01|WIN24|P|2.5.1\rPID|1||W1^^^HOSP^MR||DOE^W\r';
      const post = async () =>
        (await (
          await fetch(url, { method: 'POST', headers: { 'content-type': 'application/hl7-v2' }, body })
        ).json()) as { id: string; duplicate?: boolean };
      const first = await post();
      jest.setSystemTime((t += 24 * 3600_000 - 1));
      expect(await post()).toEqual({ id: first.id, duplicate: true });
      jest.setSystemTime((t += 2));
      const later = await post();
      expect(later.duplicate).toBeUndefined();
      expect(later.id).not.toBe(first.id);
    } finally {
      await engine?.stop();
      engine = undefined;
      jest.useRealTimers();
    }
  });

  it('refuses a bad config listing every problem by path', async () => {
    await expect(
      Engine.create({
        config: {
          plugins: ['./no/such/plugin'],
          sinks: { archive: { type: 'file', dir: '/tmp/x', format: 'xml' } },
          routes: [{ id: 'r', from: ['ghost'], to: ['archive', 'fihr'] }],
        },
      }),
    ).rejects.toThrow(ConfigError);
    // The refusal itself, not a catch that would pass if nothing were thrown.
    const e = await Engine.create({
      config: {
        sinks: { archive: { type: 'file', dir: '/tmp/x', format: 'xml' } },
        routes: [{ id: 'r', from: ['ghost'], to: ['archive', 'fihr'] }],
      },
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(ConfigError);
    const problems = (e as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sinks\.archive\.format: /),
        'routes[0].from[0]: unknown source "ghost"',
        expect.stringMatching(/^routes\[0\]\.to\[1\]: unknown sink "fihr"/),
      ]),
    );
  });

  it('keeps every accepted message across a stop and restart: unprocessed work resumes', async () => {
    const dir = tmp();
    const cfg = baseConfig(dir, {
      sinks: { archive: { type: 'file', dir: path.join(dir, 'out'), format: 'json' } },
      routes: [{ id: 'r', to: ['archive'] }],
    });
    engine = await Engine.create({ config: cfg });
    await engine.start();
    const results = await engine.submit(
      'intake',
      Array.from({ length: 50 }, (_, i) => csv(`B${i},Fam${i},Giv${i},1980-01-01,unknown`)),
    );
    await engine.stop();
    engine = await Engine.create({ config: cfg });
    await engine.start();
    await engine.waitForIdle();
    for (const r of results) expect((await engine.store.getMessage(r.id))?.status).toBe('delivered');
    expect(readdirSync(path.join(dir, 'out')).filter((f) => f.endsWith('.json'))).toHaveLength(50);
  });
});
