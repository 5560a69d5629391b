/**
 * Processing on transform worker threads and delivery concurrency per sink, end to end with the
 * real SQLite store and the HL7 v2 plugin loaded by name (so the worker threads can load it too).
 */
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import 'reflect-metadata';
import { inject, injectable } from 'tsyringe';
import {
  coreTokens,
  createLogger,
  definePlugin,
  Engine,
  type Delivery,
  type MessageSink,
  type SinkContext,
} from '@ferry/core';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'ferry-workers-'));

function adt(i: number): Buffer {
  return Buffer.from(
    [
      `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|W${i}|P|2.5.1`,
      'EVN|A08|20250101120000',
      `PID|1||MRN${i % 7}^^^HOSP^MR||DOE^JANE||19800101|${i % 2 ? 'F' : 'M'}`,
      `PV1|1|I|WARD^101^A||||1234^SMITH^JOHN|||MED||||1|||1234^SMITH^JOHN|IN|V${i}`,
    ].join('\r') + '\r',
  );
}

async function run(dir: string, transformWorkers: number, extra: Record<string, unknown> = {}, n = 40) {
  const engine = await Engine.create({
    config: {
      store: { kind: 'sqlite', path: path.join(dir, `w${transformWorkers}.db`) },
      plugins: ['@ferry/plugin-hl7v2-mllp'],
      sinks: { out: { type: 'file', dir: path.join(dir, `out${transformWorkers}`), format: 'ndjson' } },
      routes: [{ id: 'all', to: ['out'] }],
      processing: { transformWorkers, pollIntervalMs: 50, batchSize: 8 },
      admin: { enabled: false },
      log: { level: 'error' },
      ...extra,
    },
  });
  await engine.start();
  try {
    for (let i = 0; i < n; i++) await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: adt(i) }]);
    await engine.waitForIdle(20_000);
    return { workers: engine.transformWorkers, stats: await engine.store.stats() };
  } finally {
    await engine.stop();
  }
}

const lines = (dir: string, w: number) =>
  readFileSync(path.join(dir, `out${w}`, 'bundles.ndjson'), 'utf8')
    .trim()
    .split('\n');

describe('transform worker threads', () => {
  it('deliver byte-identical bundles to processing on the engine thread', async () => {
    const dir = tmp();
    const inThread = await run(dir, 0);
    const pooled = await run(dir, 1);
    expect(inThread.workers).toBe(0);
    expect(pooled.workers).toBe(1);
    expect(pooled.stats.messages).toEqual({ delivered: 40 });
    // Per ordering key the order is the same; across keys deliveries may interleave differently.
    expect([...lines(dir, 1)].sort()).toEqual([...lines(dir, 0)].sort());
    expect(lines(dir, 1)).toHaveLength(40);
  });

  it('run route conditions, filters and scripts in the worker', async () => {
    const dir = tmp();
    const script = path.join(dir, 'tag.js');
    writeFileSync(script, `module.exports = (bundle) => ({ ...bundle, meta: { tag: [{ code: 'from-script' }] } });`);
    const r = await run(
      dir,
      1,
      {
        routes: [
          {
            id: 'women',
            when: { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'female'" },
            steps: [{ script }],
            to: ['out'],
          },
          { id: 'other', steps: [{ filter: "Bundle.entry.resource.ofType(Patient).gender = 'other'" }], to: ['out'] },
        ],
      },
      10,
    );
    expect(r.workers).toBe(1);
    const out = lines(dir, 1).map((l) => JSON.parse(l));
    // Odd i are female: delivered by 'women' with the script's tag; every message is filtered out
    // by 'other', so the men end up filtered.
    expect(out).toHaveLength(5);
    expect(out.every((b) => b.meta?.tag?.[0]?.code === 'from-script')).toBe(true);
    expect(r.stats.messages).toEqual({ delivered: 5, filtered: 5 });
  });

  it('record a message the worker cannot transform as failed, with its error', async () => {
    const dir = tmp();
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'f.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        processing: { transformWorkers: 1, pollIntervalMs: 50 },
        admin: { enabled: false },
        log: { level: 'error' },
      },
    });
    await engine.start();
    try {
      const [bad] = await engine.submit('feed', [
        { contentType: 'application/hl7-v2', body: Buffer.from('this is not HL7'), headers: {} },
      ]);
      await engine.waitForIdle(20_000);
      const m = await engine.store.getMessage(bad.id);
      expect(engine.transformWorkers).toBe(1);
      expect(m?.status).toBe('failed');
      expect(m?.error?.code).toMatch(/INPUT_HL7/);
    } finally {
      await engine.stop();
    }
  });
});

// A JavaScript plugin (worker threads load plugins with plain require) whose transform ends its
// worker thread on a message saying EXIT, and never returns on one saying HANG -- on the engine
// thread it converts both like any other.
const CRASHY = `
const { isMainThread } = require('node:worker_threads');
class CrashyTransform {
  constructor() { this.name = 'crashy'; }
  canHandle(ct) { return ct === 'text/x-crashy'; }
  extractHeaders(body) { return { messageType: 'CRASHY', controlId: body.toString().trim(), orderingKey: 'k' + body.toString().trim() }; }
  toFhir(m) {
    const text = m.body.toString().trim();
    if (text === 'EXIT' && !isMainThread) process.exit(3);
    if (text === 'HANG' && !isMainThread) for (;;);
    return { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Basic', id: 'b-' + text, code: { text: isMainThread ? 'engine' : 'worker' } } }] };
  }
}
module.exports = {
  manifest: { id: 'crashy', version: '1.0.0', engine: '*' },
  configSchema: {},
  register(reg) { reg.addTransform(CrashyTransform); },
};
`;

describe('a transform worker that dies', () => {
  it('loses nothing: its batch is processed on the engine thread and another worker starts', async () => {
    const dir = tmp();
    const plugin = path.join(dir, 'crashy.js');
    writeFileSync(plugin, CRASHY);
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'c.db') },
        plugins: [plugin],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        processing: { transformWorkers: 1, pollIntervalMs: 20, batchSize: 4 },
        admin: { enabled: false },
        log: { level: 'error' },
      },
    });
    await engine.start();
    try {
      expect(engine.transformWorkers).toBe(1);
      const send = async (texts: string[]) => {
        await engine.submit(
          'feed',
          texts.map((t) => ({ contentType: 'text/x-crashy', body: Buffer.from(t) })),
        );
        await engine.waitForIdle(20_000);
      };
      const where = () => {
        const lines = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
          .trim()
          .split('\n');
        return Object.fromEntries(
          lines.map((l) => JSON.parse(l).entry[0].resource).map((r) => [r.id.slice(2), r.code.text]),
        );
      };
      await send(['a', 'b']);
      await send(['c', 'EXIT', 'd']);
      for (let i = 0; i < 200 && engine.transformWorkers < 1; i++) await new Promise((r) => setTimeout(r, 25));
      expect(engine.transformWorkers).toBe(1);
      await send(['e', 'f']);
      expect((await engine.store.stats()).messages).toEqual({ delivered: 7 });
      // The batch with EXIT was processed on the engine thread; before and after, on a worker.
      expect(where()).toEqual({
        a: 'worker',
        b: 'worker',
        c: 'engine',
        EXIT: 'engine',
        d: 'engine',
        e: 'worker',
        f: 'worker',
      });
    } finally {
      await engine.stop();
    }
  });
});

describe('a transform that never returns on a worker', () => {
  it('is given up after a quarter of the lease: that message is failed, the rest of its batch delivered', async () => {
    const dir = tmp();
    const plugin = path.join(dir, 'crashy.js');
    writeFileSync(plugin, CRASHY);
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'h.db') },
        plugins: [plugin],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        processing: { transformWorkers: 1, pollIntervalMs: 20, batchSize: 8, leaseMs: 2000 },
        admin: { enabled: false },
        log: { level: 'error' },
      },
    });
    await engine.start();
    try {
      const results = await engine.submit(
        'feed',
        ['a', 'HANG', 'b'].map((t) => ({ contentType: 'text/x-crashy', body: Buffer.from(t) })),
      );
      await engine.waitForIdle(20_000);
      const hang = await engine.store.getMessage(results[1].id);
      expect(hang?.status).toBe('failed');
      expect(hang?.error?.code).toBe('FERRY_E_INTERNAL_TRANSFORM_TIMEOUT');
      expect((await engine.store.stats()).messages).toEqual({ delivered: 2, failed: 1 });
      const ids = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).entry[0].resource.id);
      expect(ids.sort()).toEqual(['b-a', 'b-b']);
      for (let i = 0; i < 200 && engine.transformWorkers < 1; i++) await new Promise((r) => setTimeout(r, 25));
      expect(engine.transformWorkers).toBe(1);
    } finally {
      await engine.stop();
    }
  });
});

// A transform that takes 150 ms (wall clock) per message on a worker thread.
const SLOW = `
const { isMainThread } = require('node:worker_threads');
class SlowTransform {
  constructor() { this.name = 'slow'; }
  canHandle(ct) { return ct === 'text/x-slow'; }
  extractHeaders(body) { return { messageType: 'SLOW', controlId: body.toString().trim(), orderingKey: 'k' + body.toString().trim() }; }
  toFhir(m) {
    const text = m.body.toString().trim();
    const until = Date.now() + 150;
    while (Date.now() < until);
    return { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Basic', id: 'b-' + text, code: { text: isMainThread ? 'engine' : 'worker' } } }] };
  }
}
module.exports = {
  manifest: { id: 'slow', version: '1.0.0', engine: '*' },
  configSchema: {},
  register(reg) { reg.addTransform(SlowTransform); },
};
`;

describe('a batch that takes longer than its lease on a worker', () => {
  it('keeps its leases and its worker: every message processed once, on the worker, none timed out', async () => {
    const dir = tmp();
    const plugin = path.join(dir, 'slow.js');
    writeFileSync(plugin, SLOW);
    const log = new PassThrough();
    let text = '';
    log.on('data', (d) => (text += d));
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 's.db') },
        plugins: [plugin],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        // 24 x 150 ms = 3.6 s per batch (7.2 s for the one queued behind it): longer than the 3 s lease, and
        // than the 750 ms without an answer after which a worker used to be replaced (the timeout is now for
        // a worker that finishes no message). Leases of a second or so were renewed too late at times on a
        // machine at load 27 (timers late by more than two thirds of the lease).
        processing: { transformWorkers: 1, pollIntervalMs: 20, batchSize: 24, leaseMs: 3000 },
        admin: { enabled: false },
        log: { level: 'warn' },
      },
      logger: createLogger({ level: 'warn' }, log),
    });
    await engine.start();
    const texts = Array.from({ length: 48 }, (_, i) => `s${i}`);
    try {
      await engine.submit(
        'feed',
        texts.map((t) => ({ contentType: 'text/x-slow', body: Buffer.from(t) })),
      );
      await engine.waitForIdle(60_000);
      expect((await engine.store.stats()).messages).toEqual({ delivered: 48 });
    } finally {
      await engine.stop();
    }
    const out = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).entry[0].resource);
    // each once (a message re-claimed after its lease ran out would be delivered twice), all on the worker
    expect(out.map((r) => r.id).sort()).toEqual(texts.map((t) => 'b-' + t).sort());
    expect(new Set(out.map((r) => r.code.text))).toEqual(new Set(['worker']));
    const db = new Database(path.join(dir, 's.db'), { readonly: true });
    try {
      expect(db.prepare('SELECT MAX(process_attempts) AS n FROM messages').get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
    expect(text).not.toMatch(/did not answer in time|outlasted its lease/);
  }, 90_000);
});

// A sink that records how many deliveries it has in flight at once.
const peaks = new Map<string, { now: number; peak: number }>();
@injectable()
class SlowSink implements MessageSink {
  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext) {}
  async deliver(_d: Delivery): Promise<void> {
    const p = peaks.get(this.ctx.id) ?? { now: 0, peak: 0 };
    peaks.set(this.ctx.id, p);
    p.now++;
    p.peak = Math.max(p.peak, p.now);
    await new Promise((r) => setTimeout(r, 5));
    p.now--;
  }
}
const slowPlugin = definePlugin({
  manifest: { id: 'slow-sink', version: '1.0.0', engine: '*' },
  configSchema: {},
  register(reg) {
    reg.addSinkType('slow', SlowSink, {});
  },
});

describe('delivery concurrency per sink', () => {
  it("keeps each sink within its own concurrency (the sink entry's, else processing.deliveryWorkers)", async () => {
    const dir = tmp();
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'c.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { two: { type: 'slow', concurrency: 2 }, dflt: { type: 'slow' } },
        routes: [{ id: 'all', to: ['two', 'dflt'], ordering: 'none' }],
        processing: { transformWorkers: 0, deliveryWorkers: 5, pollIntervalMs: 20 },
        admin: { enabled: false },
        log: { level: 'error' },
      },
      plugins: [slowPlugin],
    });
    await engine.start();
    try {
      await engine.submit(
        'feed',
        Array.from({ length: 60 }, (_, i) => ({ contentType: 'application/hl7-v2', body: adt(i) })),
      );
      await engine.waitForIdle(30_000);
      expect((await engine.store.stats()).deliveries).toEqual({ delivered: 120 });
    } finally {
      await engine.stop();
    }
    expect(peaks.get('two')!.peak).toBe(2);
    expect(peaks.get('dflt')!.peak).toBeGreaterThan(2);
    expect(peaks.get('dflt')!.peak).toBeLessThanOrEqual(5);
  });
});

describe('a processing result the store cannot write', () => {
  it('is logged and left leased; the rest of its batch is recorded, counted and delivered', async () => {
    const dir = tmp();
    const file = path.join(dir, 'trigger.db');
    const stream = new PassThrough();
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: file },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        processing: { transformWorkers: 0, pollIntervalMs: 50, batchSize: 8 },
        admin: { enabled: false },
      },
      logger: createLogger({ level: 'info' }, stream),
    });
    await engine.start();
    // A real refusal by the database for one message (control id W3): its row cannot leave
    // processing, so the batch's set-wise write fails and is replayed message by message.
    // From a fresh turn of the event loop: this connection's synchronous DDL, run while one of the
    // engine's transactions is still between its statements (in this process's microtasks), would
    // wait for a lock that transaction cannot release until the DDL gives up.
    await new Promise((r) => setTimeout(r, 20));
    const db = new Database(file);
    db.exec(`CREATE TRIGGER refuse_w3 BEFORE UPDATE OF status ON messages
             WHEN json_extract(OLD.headers, '$.controlId') = 'W3' AND NEW.status NOT IN ('received', 'transformed')
             BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END`);
    db.close();
    try {
      for (let i = 0; i < 8; i++) await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: adt(i) }]);
      const deadline = Date.now() + 10_000;
      while (((await engine.store.stats()).messages.delivered ?? 0) < 7 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const stats = await engine.store.stats();
      expect(stats.messages).toEqual({ delivered: 7, received: 1 });
      const [w3] = await engine.store.listMessages({ status: ['received'] });
      expect(w3.headers.controlId).toBe('W3');
      const metrics = await engine.metrics.registry.getSingleMetricAsString('ferry_messages_processed_total');
      expect(metrics).toMatch(/ferry_messages_processed_total\{source="feed",outcome="routed"\} 7/);
      const log = Buffer.concat(chunks).toString('utf8');
      const notStored = log.split('\n').filter((l) => l.includes('processing result not stored'));
      expect(notStored).toHaveLength(1);
      expect(JSON.parse(notStored[0])).toMatchObject({ level: 'error', messageId: w3.id });
      expect(log.match(/"message routed"/g)).toHaveLength(7);
    } finally {
      await engine.stop();
    }
  });
});

describe('processing.lingerMs', () => {
  /** An engine whose processor only a stored message wakes (the idle poll far away). */
  async function lingering(file: string, processing: Record<string, number>): Promise<Engine> {
    const dir = tmp();
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, file) },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
        routes: [{ id: 'all', to: ['out'] }],
        processing: { transformWorkers: 0, ...processing },
        admin: { enabled: false },
        log: { level: 'error' },
      },
    });
    await engine.start();
    return engine;
  }

  /** Three messages one at a time, each committed before the next (as a feed waiting for its ACK sends them): one batch. */
  async function expectOneBatchOfThree(engine: Engine): Promise<void> {
    for (let i = 0; i < 3; i++) await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: adt(i) }]);
    await engine.waitForIdle(20_000);
    expect((await engine.store.stats()).messages).toEqual({ delivered: 3 });
    const batches = await engine.metrics.registry.getSingleMetricAsString('ferry_processing_batch_messages');
    expect(batches).toMatch(/^ferry_processing_batch_messages_count 1$/m);
    expect(batches).toMatch(/^ferry_processing_batch_messages_sum 3$/m);
  }

  it('under a light load, messages stored within the linger are processed as one batch', async () => {
    const engine = await lingering('linger.db', { lingerMs: 1500, pollIntervalMs: 60_000 });
    try {
      await expectOneBatchOfThree(engine);
    } finally {
      await engine.stop();
    }
  });

  it('ends as soon as a whole batch is stored', async () => {
    // a linger and an idle poll far beyond the test's wait: only a full batch ends the linger
    const engine = await lingering('linger-full.db', { batchSize: 3, lingerMs: 600_000, pollIntervalMs: 600_000 });
    try {
      await expectOneBatchOfThree(engine);
    } finally {
      await engine.stop();
    }
  });
});
