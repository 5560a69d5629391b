import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EngineMetrics } from '../admin/metrics';
import { defineErrors, FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import type { Logger } from 'winston';
import type { Delivery } from '../plugin/api';
import Database from 'better-sqlite3';
import type { MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { Dispatcher, type SinkRuntime } from './dispatcher';
import { capture } from './__fixtures__/capture';
import { routed } from './__fixtures__/routed';
import { storeWith } from './__fixtures__/store-with';

/**
 * The dispatcher's plain delivery path on a real SQLite store: what each outcome records, the
 * per-sink slots, the time limit of a call, lease renewal, removed sinks and operator holds.
 * (dispatcher.test.ts has the claim spacing, the lost claim answer and the circuit breaker.)
 */
const testErrors = defineErrors({
  DELIVERY_REFUSED_TEST: { kind: 'input', description: 'test sink: refused for good' },
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dispatcher-delivery-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const retry = { maxAttempts: 2, initialDelayMs: 40, maxDelayMs: 80, multiplier: 2, jitter: 0, maxAgeMs: 60_000 };
const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let n = 0;

async function openStore(): Promise<SqliteMessageStore> {
  const store = new SqliteMessageStore({ path: path.join(dir, `d${++n}.db`), logger: silentLogger() });
  await store.open();
  return store;
}

function dispatcherOf(
  store: MessageStore,
  sinks: SinkRuntime[],
  opts: { leaseMs?: number; pollIntervalMs?: number; stopGraceMs?: number; logger?: Logger } = {},
) {
  const metrics = new EngineMetrics(false);
  const logger = opts.logger ?? silentLogger();
  const d = new Dispatcher(store, new Map(sinks.map((s) => [s.id, s])), logger, metrics, {
    owner: 'me',
    leaseMs: opts.leaseMs ?? 60_000,
    pollIntervalMs: opts.pollIntervalMs ?? 20,
    ...(opts.stopGraceMs === undefined ? {} : { stopGraceMs: opts.stopGraceMs }),
  });
  return { d, metrics };
}

/** A promise and its resolve, for a sink call the test ends. */
function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const runtime = (
  id: string,
  deliver: (d: Delivery) => Promise<void>,
  more: Partial<SinkRuntime> = {},
): SinkRuntime => ({ id, sink: { deliver }, retry, logger: silentLogger(), concurrency: 4, ...more });

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

async function counted(metrics: EngineMetrics, outcome: string): Promise<number> {
  const v = (await metrics.deliveries.get()).values.filter((x) => x.labels.outcome === outcome);
  return v.reduce((a, x) => a + x.value, 0);
}

describe('Dispatcher: delivering', () => {
  it('hands each delivery to its sink once (attempt 1, route, message, bundle) and records it delivered', async () => {
    const store = await openStore();
    const ids = await routed(store, 3);
    const got: Delivery[] = [];
    const { d, metrics } = dispatcherOf(store, [runtime('s', async (x) => void got.push(x))]);
    d.start();
    try {
      await until(() => got.length === 3);
      await until(async () =>
        (await Promise.all(ids.map((id) => store.getMessage(id)))).every((m) => m?.status === 'delivered'),
      );
    } finally {
      await d.stop();
    }
    expect(got.map((x) => x.message.id).sort()).toEqual([...ids].sort());
    expect(got.map((x) => [x.attempt, x.routeId])).toEqual([
      [1, 'r'],
      [1, 'r'],
      [1, 'r'],
    ]);
    expect(got[0].bundle).toEqual(JSON.parse(bundleJson));
    for (const id of ids) expect((await store.deliveries(id))[0]).toMatchObject({ status: 'delivered', attempts: 1 });
    expect(await counted(metrics, 'delivered')).toBe(3);
    expect((await metrics.deliveryLatency.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value).toBe(3);
    expect((await metrics.endToEnd.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value).toBe(3);
    expect((await metrics.inFlight.get()).values[0].value).toBe(0);
    expect(d.busy).toBe(0);
    await store.close();
  });

  it('a sink that throws something not a FerryError: failed (retryable, DELIVERY_UNEXPECTED, next attempt by the backoff), then dead at maxAttempts', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    const attempts: number[] = [];
    const { d, metrics } = dispatcherOf(store, [
      runtime(
        's',
        async (x) => {
          attempts.push(x.attempt);
          throw new Error('socket hang up');
        },
        // long enough between the attempts to see the failed state on a loaded machine
        { retry: { ...retry, initialDelayMs: 400, maxDelayMs: 400 } },
      ),
    ]);
    const t0 = Date.now();
    d.start();
    try {
      await until(async () => (await store.deliveries(id))[0].status === 'failed');
      const [failed] = await store.deliveries(id);
      expect(failed).toMatchObject({
        attempts: 1,
        lastError: { code: 'FERRY_E_DELIVERY_UNEXPECTED', message: 'socket hang up', retryable: true },
      });
      // the first retry after initialDelayMs (400 ms), not at once and not a minute later
      expect(failed.nextAttemptAt!.getTime() - t0).toBeGreaterThanOrEqual(390);
      expect(failed.nextAttemptAt!.getTime() - Date.now()).toBeLessThan(1000);
      await until(async () => (await store.deliveries(id))[0].status === 'dead');
    } finally {
      await d.stop();
    }
    expect(attempts).toEqual([1, 2]);
    expect((await store.deliveries(id))[0]).toMatchObject({ status: 'dead', attempts: 2 });
    expect(await counted(metrics, 'retry')).toBe(1);
    expect(await counted(metrics, 'dead')).toBe(1);
    expect(await counted(metrics, 'delivered')).toBe(0);
    expect((await store.getMessage(id))?.status).toBe('dead');
    await store.close();
  });

  it('a sink refusing a delivery for good (not retryable): dead after one attempt, with its code', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    let calls = 0;
    const { d } = dispatcherOf(store, [
      runtime('s', async () => {
        calls++;
        throw new FerryError(testErrors.codes.DELIVERY_REFUSED_TEST, 'no such patient', {
          kind: 'input',
          retryable: false,
        });
      }),
    ]);
    d.start();
    try {
      await until(async () => (await store.deliveries(id))[0].status === 'dead');
      await sleep(100);
    } finally {
      await d.stop();
    }
    expect(calls).toBe(1);
    expect((await store.deliveries(id))[0]).toMatchObject({
      status: 'dead',
      attempts: 1,
      lastError: { code: 'FERRY_E_DELIVERY_REFUSED_TEST', retryable: false },
    });
    await store.close();
  });

  it('at most `concurrency` calls to a sink at once, and each sink has its own slots', async () => {
    const store = await openStore();
    await routed(store, 12, 'a');
    await routed(store, 3, 'b');
    const now = { a: 0, b: 0 };
    const most = { a: 0, b: 0 };
    const done: string[] = [];
    const slow = (k: 'a' | 'b') => async (x: Delivery) => {
      now[k]++;
      most[k] = Math.max(most[k], now[k]);
      await sleep(40);
      now[k]--;
      done.push(`${k}:${x.message.id}`);
    };
    const { d } = dispatcherOf(store, [
      runtime('a', slow('a'), { concurrency: 3 }),
      runtime('b', slow('b'), { concurrency: 1 }),
    ]);
    d.start();
    try {
      await until(() => now.a === 3 && now.b === 1);
      expect(d.busy).toBe(4);
      expect(d.sinkViews().map((v) => [v.id, v.concurrency, v.inFlight, v.circuit])).toEqual([
        ['a', 3, 3, { state: 'closed', disabled: true }],
        ['b', 1, 1, { state: 'closed', disabled: true }],
      ]);
      await until(() => done.length === 15);
    } finally {
      await d.stop();
    }
    expect(most).toEqual({ a: 3, b: 1 });
    await store.close();
  });

  it('one ordering key: one delivery at a time, in order', async () => {
    const store = await openStore();
    const ids = await routed(store, 5, 's', 'same');
    const got: string[] = [];
    let now = 0;
    let most = 0;
    const { d } = dispatcherOf(store, [
      runtime('s', async (x) => {
        most = Math.max(most, ++now);
        await sleep(5);
        now--;
        got.push(x.message.id);
      }),
    ]);
    d.start();
    try {
      await until(() => got.length === 5);
    } finally {
      await d.stop();
    }
    expect(got).toEqual(ids);
    expect(most).toBe(1);
    await store.close();
  });

  it('a call past deliveryTimeoutMs fails (retryable, DELIVERY_TIMEOUT, its signal aborted), and is made again', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    const reasons: unknown[] = [];
    let calls = 0;
    let abortedAfter = 0;
    const { d } = dispatcherOf(store, [
      runtime(
        's',
        (x) => {
          calls++;
          if (calls > 1) return Promise.resolve();
          const began = Date.now();
          return new Promise<void>((_, reject) =>
            x.signal!.addEventListener(
              'abort',
              () => (
                (abortedAfter = Date.now() - began),
                reasons.push(x.signal!.reason),
                reject(new Error('aborted late'))
              ),
            ),
          );
        },
        { deliveryTimeoutMs: 150 },
      ),
    ]);
    const t0 = Date.now();
    d.start();
    let failedAfter = 0;
    try {
      await until(async () => (await store.deliveries(id))[0].attempts >= 1);
      failedAfter = Date.now() - t0;
      expect((await store.deliveries(id))[0].lastError).toMatchObject({
        code: 'FERRY_E_DELIVERY_TIMEOUT',
        retryable: true,
      });
      expect((await store.deliveries(id))[0].lastError?.message).toMatch(/within 150 ms/);
      await until(async () => (await store.deliveries(id))[0].status === 'delivered');
    } finally {
      await d.stop();
    }
    expect(failedAfter).toBeGreaterThanOrEqual(140);
    expect(failedAfter).toBeLessThan(3000);
    // given up on no sooner than the limit after the call began (the sweep runs every 50 ms)
    expect(abortedAfter).toBeGreaterThanOrEqual(145);
    expect(abortedAfter).toBeLessThan(2000);
    expect(reasons).toEqual([expect.objectContaining({ code: 'FERRY_E_DELIVERY_TIMEOUT' })]);
    expect(calls).toBe(2);
    expect((await store.deliveries(id))[0]).toMatchObject({ status: 'delivered', attempts: 2 });
    await store.close();
  });

  it('renews the lease of a call that outlasts it: another instance cannot claim the delivery meanwhile', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    let calls = 0;
    const other: number[] = [];
    const { d } = dispatcherOf(
      store,
      [
        runtime(
          's',
          async () => {
            calls++;
            // the lease is 300 ms; the call takes three of them, another instance trying all along
            for (let i = 0; i < 9; i++) {
              await sleep(100);
              other.push((await store.claimDeliveries('other', 10, 300)).length);
            }
          },
          { deliveryTimeoutMs: 0 },
        ),
      ],
      { leaseMs: 300 },
    );
    d.start();
    try {
      await until(async () => (await store.deliveries(id))[0].status === 'delivered', 10_000);
    } finally {
      await d.stop();
    }
    expect(calls).toBe(1);
    expect(other).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0]);
    await store.close();
  }, 20_000);

  it('a delivery to a sink no longer configured fails (retryable, CONFIG_SINK_GONE) and waits a minute, the configured sinks unharmed', async () => {
    const store = await openStore();
    const [gone] = await routed(store, 1, 'old');
    const [kept] = await routed(store, 1, 's');
    const got: string[] = [];
    const { logs, logger } = capture();
    const { d, metrics } = dispatcherOf(store, [runtime('s', async (x) => void got.push(x.message.id))], { logger });
    d.start();
    try {
      await until(async () => (await store.deliveries(gone))[0].status === 'failed');
      await until(() => got.length === 1);
    } finally {
      await d.stop();
    }
    expect(got).toEqual([kept]);
    const [dl] = await store.deliveries(gone);
    expect(dl).toMatchObject({
      status: 'failed',
      attempts: 1,
      lastError: { code: 'FERRY_E_CONFIG_SINK_GONE', message: 'sink "old" is no longer configured', retryable: true },
    });
    // Logged (by the dispatcher's logger: the sink has none) and counted as a retry, not as dead.
    expect(logs.filter((l) => l.message === 'delivery failed, will retry')).toEqual([
      expect.objectContaining({
        level: 'warn',
        deliveryId: dl.id,
        errorCode: 'FERRY_E_CONFIG_SINK_GONE',
        retryable: true,
      }),
    ]);
    expect(await counted(metrics, 'retry')).toBe(1);
    expect(await counted(metrics, 'dead')).toBe(0);
    const wait = dl.nextAttemptAt!.getTime() - Date.now();
    expect(wait).toBeGreaterThan(50_000);
    expect(wait).toBeLessThanOrEqual(60_000);
    await store.close();
  });

  it('removeSink waits for the calls to it under way; a sink set later is claimed for at once', async () => {
    const store = await openStore();
    await routed(store, 1, 'a');
    let finished = false;
    const { d } = dispatcherOf(
      store,
      [
        runtime('a', async () => {
          await sleep(200);
          finished = true;
        }),
      ],
      { pollIntervalMs: 10_000 },
    );
    d.start();
    try {
      await until(() => d.busy === 1);
      await d.removeSink('a');
      expect(finished).toBe(true);
      expect(d.sinkViews()).toEqual([]);
      const [id] = await routed(store, 1, 'b');
      const got: string[] = [];
      d.setSink(runtime('b', async (x) => void got.push(x.message.id)));
      // the poll interval is 10 s: setSink itself starts the claim
      await until(() => got.length === 1, 3000);
      expect(got).toEqual([id]);
    } finally {
      await d.stop();
    }
    await store.close();
  });

  it('a held sink is not claimed for until it is released (refreshHolds(true) after a change through this engine)', async () => {
    const store = await openStore();
    await store.holdSink('s', { reason: 'maintenance' });
    const [id] = await routed(store, 1);
    const got: string[] = [];
    const { d, metrics } = dispatcherOf(store, [runtime('s', async (x) => void got.push(x.message.id))]);
    d.start();
    try {
      await until(() => d.sinkViews()[0].hold !== undefined);
      expect(d.sinkViews()[0].hold).toMatchObject({ reason: 'maintenance' });
      expect(d.sinkViews()[0].hold).not.toHaveProperty('sinkId');
      expect((await metrics.sinkHeld.get()).values[0]).toMatchObject({ labels: { sink: 's' }, value: 1 });
      await sleep(200);
      expect(got).toEqual([]);
      await store.releaseSink('s');
      await d.refreshHolds(true);
      expect(d.sinkViews()[0].hold).toBeUndefined();
      expect((await metrics.sinkHeld.get()).values[0].value).toBe(0);
      await until(() => got.length === 1, 2000);
    } finally {
      await d.stop();
    }
    expect(got).toEqual([id]);
    await store.close();
  });

  it('holds of sinks it does not have are ignored; without `now` the holds are read at most once a second', async () => {
    const store = await openStore();
    const { d, metrics } = dispatcherOf(store, [runtime('s', async () => undefined)]);
    await store.holdSink('elsewhere');
    await d.refreshHolds(true);
    expect(d.sinkViews()[0].hold).toBeUndefined();
    expect((await metrics.sinkHeld.get()).values.map((v) => [v.labels.sink, v.value])).toEqual([['s', 0]]);
    await store.holdSink('s');
    await d.refreshHolds();
    expect(d.sinkViews()[0].hold).toBeUndefined(); // read less than a second ago
    await d.refreshHolds(true);
    expect(d.sinkViews()[0].hold).toBeDefined();
    await store.close();
  });
});

describe('Dispatcher: what it logs and measures of each attempt', () => {
  it('delivered at debug, a retry at warn, dead at error: each with the message, delivery, route, attempt and code (never the message itself)', async () => {
    const store = await openStore();
    const [okId] = await routed(store, 1, 'ok');
    const [badId] = await routed(store, 1, 'bad');
    const { logs, logger } = capture();
    const { d, metrics } = dispatcherOf(store, [
      runtime('ok', async () => undefined, { logger }),
      runtime(
        'bad',
        async () => {
          throw new Error('refused');
        },
        { logger, retry: { ...retry, initialDelayMs: 100, maxDelayMs: 100 } },
      ),
    ]);
    d.start();
    try {
      await until(async () => (await store.deliveries(badId))[0].status === 'dead');
      await until(async () => (await store.deliveries(okId))[0].status === 'delivered');
    } finally {
      await d.stop();
    }
    await sleep(50);
    const [okD] = await store.deliveries(okId);
    const [badD] = await store.deliveries(badId);
    const delivered = logs.filter((l) => l.message === 'delivered');
    expect(delivered).toEqual([
      expect.objectContaining({ level: 'debug', messageId: okId, deliveryId: okD.id, route: 'r', attempt: 1 }),
    ]);
    const retryLog = logs.filter((l) => l.message === 'delivery failed, will retry');
    expect(retryLog).toEqual([
      expect.objectContaining({
        level: 'warn',
        messageId: badId,
        deliveryId: badD.id,
        route: 'r',
        attempt: 1,
        errorCode: 'FERRY_E_DELIVERY_UNEXPECTED',
        retryable: true,
      }),
    ]);
    expect(Date.parse(String(retryLog[0].next))).toBeGreaterThan(Date.now() - 5000);
    const dead = logs.filter((l) => l.message === 'delivery dead');
    expect(dead).toEqual([
      expect.objectContaining({
        level: 'error',
        messageId: badId,
        attempt: 2,
        errorCode: 'FERRY_E_DELIVERY_UNEXPECTED',
      }),
    ]);
    expect(dead[0]).not.toHaveProperty('next');
    expect(dead[0]).not.toHaveProperty('probe');
    for (const l of logs) expect(JSON.stringify(l)).not.toMatch(/"m0"|Bundle/);
    // the call's time and the message's time to delivery, in seconds
    const latency = (await metrics.deliveryLatency.get()).values;
    expect(latency.find((v) => v.metricName?.endsWith('_count') && v.labels.sink === 'ok')?.value).toBe(1);
    expect(latency.find((v) => v.metricName?.endsWith('_count') && v.labels.sink === 'bad')).toBeUndefined();
    const sum = latency.find((v) => v.metricName?.endsWith('_sum') && v.labels.sink === 'ok')!.value;
    expect(sum).toBeGreaterThanOrEqual(0);
    expect(sum).toBeLessThan(5);
    const e2e = (await metrics.endToEnd.get()).values.find(
      (v) => v.metricName?.endsWith('_sum') && v.labels.sink === 'ok',
    )!.value;
    expect(e2e).toBeGreaterThan(0);
    expect(e2e).toBeLessThan(60);
    const byOutcome = (await metrics.deliveries.get()).values
      .map((v) => `${v.labels.route}/${v.labels.sink}/${v.labels.outcome}=${v.value}`)
      .sort();
    expect(byOutcome).toEqual(['r/bad/dead=1', 'r/bad/retry=1', 'r/ok/delivered=1']);
    await store.close();
  });
});

describe('Dispatcher: a sink with a circuit breaker', () => {
  it("a probe's failure is logged as a probe (without a circuit no attempt is: see the logging test below)", async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    const { logs, logger } = capture();
    const { d } = dispatcherOf(
      store,
      [
        runtime(
          's',
          async () => {
            throw new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });
          },
          {
            logger,
            retry: { ...retry, maxAttempts: 50, initialDelayMs: 10, maxDelayMs: 10 },
            circuit: { failureThreshold: 2, openMs: 50, maxOpenMs: 100 },
          },
        ),
      ],
      { logger },
    );
    d.start();
    const failures = () => logs.filter((l) => l.message === 'delivery failed, will retry');
    try {
      await until(() => failures().length >= 1);
    } finally {
      await d.stop();
    }
    // A circuit starts slow (the engine may have restarted during an outage): its first attempts are probes.
    expect(failures()[0]).toMatchObject({
      messageId: id,
      attempt: 1,
      probe: true,
      errorCode: 'FERRY_E_DELIVERY_NETWORK',
    });
    expect((await store.deliveries(id))[0]).toMatchObject({ status: 'failed' });
    await store.close();
  });
});

describe('Dispatcher: outcomes it cannot record, stopping, and the store clock', () => {
  it('a sink that rejects with nothing (undefined): failed, DELIVERY_UNEXPECTED "undefined"', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);

    const { d } = dispatcherOf(store, [
      runtime('s', () => Promise.reject(undefined), {
        retry: { ...retry, maxAgeMs: 600_000, initialDelayMs: 60_000, maxDelayMs: 60_000 },
      }),
    ]);
    d.start();
    try {
      await until(async () => (await store.deliveries(id))[0].attempts >= 1);
    } finally {
      await d.stop();
    }
    expect((await store.deliveries(id))[0]).toMatchObject({
      status: 'failed',
      lastError: { code: 'FERRY_E_DELIVERY_UNEXPECTED', message: 'undefined', retryable: true },
    });
    expect(d.busy).toBe(0);
    await store.close();
  });

  it("the retries' maximum age on one clock: a store whose clock is an hour behind ours does not make a first failure dead", async () => {
    const store = await openStore();
    // As PostgreSQL measures a server's clock: every time the store writes is on it.
    (store as unknown as { clockOffsetMs: number }).clockOffsetMs = -3_600_000;
    expect(store.clockAheadMs()).toBe(-3_600_000);
    const [id] = await routed(store, 1);
    const { d } = dispatcherOf(store, [
      runtime(
        's',
        async () => {
          throw new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });
        },
        { retry: { ...retry, maxAgeMs: 600_000, initialDelayMs: 60_000, maxDelayMs: 60_000 } },
      ),
    ]);
    d.start();
    try {
      await until(async () => (await store.deliveries(id))[0].attempts >= 1);
    } finally {
      await d.stop();
    }
    // Its first attempt an hour ago on the store's clock is now on ours: retried, not dead.
    expect((await store.deliveries(id))[0]).toMatchObject({ status: 'failed', attempts: 1 });
    await store.close();
  });

  it("a lease lost during the call is logged once per delivery; the call's outcome is then not recorded (warned, with what holds it now)", async () => {
    const store = await openStore();
    const [a, b] = await routed(store, 2);
    const { logs, logger } = capture();
    const calls = new Map<string, ReturnType<typeof gate>>();
    const { d } = dispatcherOf(
      store,
      [
        runtime(
          's',
          async (x) => {
            const g = gate();
            calls.set(x.message.id, g);
            await g.wait;
          },
          { logger, deliveryTimeoutMs: 0 },
        ),
      ],
      // One claim at the start; no other for 10 s (it would take back the leases released below).
      { leaseMs: 300, logger, pollIntervalMs: 10_000 },
    );
    d.start();
    try {
      await until(() => calls.size === 2);
      // Another instance takes both over (as after this one lost the store for longer than the lease),
      // and gives up on b (dead).
      expect(await store.releaseDeliveryLeases('me', [])).toBe(2);
      const taken = await store.claimDeliveries('other', 10, 60_000);
      expect(taken.map((x) => x.messageId).sort()).toEqual([a, b].sort());
      await store.completeDelivery(
        taken.find((x) => x.messageId === b)!.id,
        { status: 'dead', error: { code: 'E', message: 'e', retryable: false } },
        { owner: 'other' },
      );
      const lost = () => logs.filter((l) => l.message.startsWith('delivery lease lost while its sink call'));
      await until(() => lost().length === 2);
      // more renewals (every 100 ms) meanwhile: still once each
      await sleep(350);
      expect(
        lost()
          .map((l) => l.messageId)
          .sort(),
      ).toEqual([a, b].sort());
      expect(lost()[0]).toMatchObject({ level: 'warn', leaseMs: 300 });
      calls.get(a)!.open();
      calls.get(b)!.open();
      await until(() => d.busy === 0);
    } finally {
      await d.stop();
    }
    const stale = logs.filter(
      (l) => l.message === 'delivery outcome not recorded: the delivery is no longer leased to this instance',
    );
    expect(
      stale.map((l) => [l.messageId, l.level, l.outcome, l.currentStatus, l.otherOwner, l.leaseMs]).sort(),
    ).toEqual(
      [
        [a, 'warn', 'delivered', 'pending', true, 300],
        [b, 'warn', 'delivered', 'dead', false, 300],
      ].sort(),
    );
    // a is still the other instance's
    expect((await store.deliveries(a))[0]).toMatchObject({ status: 'pending', attempts: 0 });
    await store.close();
  }, 20_000);

  it('an outcome the store refuses (its delivery deleted meanwhile) is logged as not recorded, and the slot freed', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    const { logs, logger } = capture();
    const call = gate();
    let started = false;
    const { d } = dispatcherOf(
      store,
      [
        runtime(
          's',
          async () => {
            started = true;
            await call.wait;
          },
          { logger },
        ),
      ],
      { logger },
    );
    d.start();
    try {
      await until(() => started);
      const other = new Database(store.file);
      other.prepare('DELETE FROM deliveries WHERE message_id = ?').run(id);
      other.close();
      call.open();
      await until(() => logs.some((l) => l.message === 'could not record delivery outcome'));
      await until(() => d.busy === 0);
    } finally {
      await d.stop();
    }
    expect(logs.filter((l) => l.message === 'could not record delivery outcome')).toEqual([
      expect.objectContaining({ level: 'error', messageId: id, errorCode: 'FERRY_E_INTERNAL_STORE_NO_DELIVERY' }),
    ]);
    await store.close();
  });

  it('stop: a call that ends within the grace is recorded as made; one still running then is given up on (ENGINE_STOPPING)', async () => {
    const store = await openStore();
    const [quick, stuck] = await routed(store, 2);
    const calls = new Map<string, ReturnType<typeof gate>>();
    const { d } = dispatcherOf(
      store,
      [
        runtime(
          's',
          async (x) => {
            const g = gate();
            calls.set(x.message.id, g);
            if (x.message.id === stuck) x.signal!.addEventListener('abort', () => g.open());
            await g.wait;
          },
          { deliveryTimeoutMs: 0 },
        ),
      ],
      { stopGraceMs: 300 },
    );
    d.start();
    await until(() => calls.size === 2);
    const stopped = d.stop();
    // One call ends during the grace: stop still waits for the other (until the grace is over).
    calls.get(quick)!.open();
    await stopped;
    expect((await store.deliveries(quick))[0]).toMatchObject({ status: 'delivered' });
    expect((await store.deliveries(stuck))[0]).toMatchObject({
      status: 'failed',
      attempts: 1,
      lastError: {
        code: 'FERRY_E_DELIVERY_ENGINE_STOPPING',
        message: 'sink "s" did not finish the delivery before the engine stopped',
        retryable: true,
      },
    });
    await store.close();
  });
});

describe('Dispatcher: claims', () => {
  it('a failed claim is logged (error; debug while the store is down) and made again; after a lost answer the leases it left are given back first, never those of calls under way', async () => {
    const store = await openStore();
    const [inCall] = await routed(store, 1, 'a');
    const [orphan] = await routed(store, 1, 'b');
    const { logs, logger } = capture();
    const call = gate();
    const got: string[] = [];
    let loseAnswer = true;
    let failing = false;
    let down = false;
    const lost = () =>
      new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient', retryable: true });
    const s = storeWith(store, {
      claimDeliveries: async (owner, limit, leaseMs, now, filter) => {
        if (failing) throw lost();
        const claimed = await store.claimDeliveries(owner, limit, leaseMs, now, filter);
        // b's first claim commits, and its answer is lost with the connection.
        if (loseAnswer && claimed.some((x) => x.sinkId === 'b')) {
          loseAnswer = false;
          throw lost();
        }
        return claimed;
      },
      reachable: () => !down,
    });
    const { d } = dispatcherOf(
      s,
      [
        runtime('a', async (x) => {
          got.push(x.message.id);
          await call.wait;
        }),
        runtime('b', async (x) => void got.push(x.message.id)),
      ],
      { logger },
    );
    const released = () => logs.filter((l) => l.message.startsWith('released delivery leases a lost claim answer'));
    const failed = () => logs.filter((l) => l.message === 'delivery claim failed');
    d.start();
    try {
      await until(() => got.length === 2);
      expect(got).toEqual([inCall, orphan]);
      expect(released()).toEqual([expect.objectContaining({ level: 'info', deliveries: 1 })]);
      expect(failed()).toEqual([
        expect.objectContaining({ level: 'error', errorCode: 'FERRY_E_TRANSIENT_STORE_CONNECTION' }),
      ]);
      // The store down: claims fail (at debug), and are made again once it is back; nothing to give back.
      down = true;
      failing = true;
      await until(() => failed().length >= 3);
      expect(
        failed()
          .slice(1)
          .map((l) => l.level),
      ).toEqual(
        failed()
          .slice(1)
          .map(() => 'debug'),
      );
      failing = false;
      down = false;
      const [more] = await routed(store, 1, 'b');
      await until(() => got.length === 3);
      expect(got[2]).toBe(more);
      expect(released()).toHaveLength(1);
      // The call under way kept its lease throughout: another instance finds nothing to claim.
      expect(await store.claimDeliveries('other', 10, 60_000)).toEqual([]);
      call.open();
      await until(async () => (await store.deliveries(inCall))[0].status === 'delivered');
    } finally {
      call.open();
      await d.stop();
    }
    await store.close();
  });

  it('claims in batches: with calls in flight, a sink is claimed for again once half its slots are free, for its free slots', async () => {
    const store = await openStore();
    const ids = await routed(store, 10);
    const limits: number[] = [];
    const s = storeWith(store, {
      claimDeliveries: (owner, limit, leaseMs, now, filter) => {
        if (filter?.sinkIds) limits.push(limit);
        return store.claimDeliveries(owner, limit, leaseMs, now, filter);
      },
    });
    const calls = new Map<string, ReturnType<typeof gate>>();
    const { d } = dispatcherOf(s, [
      runtime('s', async (x) => {
        const g = gate();
        calls.set(x.message.id, g);
        await g.wait;
      }),
    ]);
    const finish = async (n: number) => {
      const open = [...calls.entries()].filter(([id]) => !done.has(id)).slice(0, n);
      for (const [id, g] of open) {
        done.add(id);
        g.open();
      }
      await until(() => d.busy === calls.size - done.size);
    };
    const done = new Set<string>();
    d.start();
    try {
      await until(() => calls.size === 4);
      expect(limits).toEqual([4]);
      // One slot free of 4: not claimed for (five polls).
      await finish(1);
      await sleep(100);
      expect(limits).toEqual([4]);
      expect(calls.size).toBe(4);
      // Two free: claimed for two.
      await finish(1);
      await until(() => calls.size === 6);
      expect(limits).toEqual([4, 2]);
      for (;;) {
        await finish(calls.size - done.size);
        if (done.size === ids.length) break;
        await until(() => calls.size > done.size);
      }
    } finally {
      for (const g of calls.values()) g.open();
      await d.stop();
    }
    expect([...calls.keys()].sort()).toEqual([...ids].sort());
    await store.close();
  });

  it('a claim that rejects with nothing at all (undefined) is logged, and the next claim is made', async () => {
    const store = await openStore();
    const [id] = await routed(store, 1);
    const { logs, logger } = capture();
    let rejected = 0;
    const s = storeWith(store, {
      claimDeliveries: (...args) => (rejected++ === 0 ? Promise.reject(undefined) : store.claimDeliveries(...args)),
    });
    const got: string[] = [];
    const { d } = dispatcherOf(s, [runtime('s', async (x) => void got.push(x.message.id))], { logger });
    d.start();
    try {
      await until(() => got.length === 1);
    } finally {
      await d.stop();
    }
    expect(got).toEqual([id]);
    expect(logs.filter((l) => l.message === 'delivery claim failed')).toEqual([
      expect.objectContaining({ level: 'error', error: 'undefined' }),
    ]);
    await store.close();
  });

  it('stop while a claim is under way: no claim after it, neither for the other sinks nor for removed ones', async () => {
    const store = await openStore();
    await routed(store, 1, 'b');
    await routed(store, 1, 'old');
    const claims: { filter: string; afterStop: boolean }[] = [];
    let stopping = false;
    const first = gate();
    let inFirst = false;
    const s = storeWith(store, {
      claimDeliveries: async (owner, limit, leaseMs, now, filter) => {
        claims.push({ filter: JSON.stringify(filter), afterStop: stopping });
        if (!inFirst) {
          inFirst = true;
          await first.wait;
        }
        return store.claimDeliveries(owner, limit, leaseMs, now, filter);
      },
    });
    const got: string[] = [];
    const { d } = dispatcherOf(s, [
      runtime('a', async (x) => void got.push(x.message.id)),
      runtime('b', async (x) => void got.push(x.message.id)),
    ]);
    d.start();
    await until(() => inFirst);
    stopping = true;
    const stopped = d.stop();
    first.open();
    await stopped;
    expect(claims).toEqual([{ filter: JSON.stringify({ sinkIds: ['a'] }), afterStop: false }]);
    expect(got).toEqual([]);
    await store.close();
  });
});
