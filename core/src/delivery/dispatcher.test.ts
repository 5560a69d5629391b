import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EngineMetrics } from '../admin/metrics';
import { defineErrors, FerryError } from '../errors';

/** A sink's own code (as a plugin declares it), for a throttled answer. */
const testErrors = defineErrors({ DELIVERY_BUSY: { kind: 'transient', description: 'test sink: busy' } });
import { silentLogger } from '../logging/logger';
import type { Delivery } from '../plugin/api';
import type { MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { Dispatcher, deliveryOutcome, toSinkDelivery } from './dispatcher';
import type { ClaimedDelivery } from '../store/message-store';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dispatcher-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const retry = { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 50, multiplier: 2, jitter: 0, maxAgeMs: 60_000 };

describe('Dispatcher', () => {
  it('gives back the leases of a claim whose answer was lost with the connection, instead of waiting out the lease', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'lost-claim.db'), logger: silentLogger() });
    await store.open();
    const ids = (
      await store.insert(
        [1, 2, 3].map((i) => ({ sourceId: 's', contentType: 'text/plain', body: Buffer.from(`m${i}`) })),
      )
    ).map((r) => r.id);
    await store.claimReceived('p', 3, 60_000);
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    // One ordering key: a delivery left leased holds the later ones.
    await store.recordProcessed(
      ids.map((id) => ({
        id,
        transformed: { bundleJson, orderingKey: 'k' },
        outcome: {
          status: 'routed' as const,
          deliveries: [{ routeId: 'r', sinkId: 'out', strictOrder: true, unchanged: true }],
        },
      })),
    );
    // The first claim commits, then its answer is lost (the connection died during COMMIT).
    let lost = 0;
    const claimLosingFirstAnswer = async (...args: Parameters<MessageStore['claimDeliveries']>) => {
      const claimed = await store.claimDeliveries(...args);
      if (claimed.length && lost++ === 0)
        throw new FerryError('TRANSIENT_STORE_CONNECTION', 'PostgreSQL connection lost: Connection terminated', {
          kind: 'transient',
        });
      return claimed;
    };
    // The real store, every call made on it, except that one answer lost.
    const flaky = new Proxy(store, {
      get: (target, prop) => {
        if (prop === 'claimDeliveries') return claimLosingFirstAnswer;
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as MessageStore;
    const got: string[] = [];
    const sink = { deliver: async (d: Delivery) => void got.push(d.message.id) };
    const logger = silentLogger();
    const dispatcher = new Dispatcher(
      flaky,
      new Map([['out', { id: 'out', sink, retry, logger, concurrency: 8 }]]),
      logger,
      new EngineMetrics(false),
      { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 },
    );
    const t0 = Date.now();
    dispatcher.start();
    try {
      for (let i = 0; i < 150 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await dispatcher.stop();
    }
    expect(lost).toBeGreaterThan(1); // the lost claim, then the ones after it
    // In order, once each, within the 150 polls above -- not after the one-minute lease.
    expect(got).toEqual(ids);
    expect(Date.now() - t0).toBeLessThan(60_000);
    for (const id of ids) expect((await store.getMessage(id))?.status).toBe('delivered');
    await store.close();
  });

  it("spaces the claims of a sink whose claims are slow and find little (a down sink's large backlog), and keeps delivering to the others", async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'spaced.db'), logger: silentLogger() });
    await store.open();
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    const route = async (n: number) => {
      const ids = (
        await store.insert(
          Array.from({ length: n }, (_, i) => ({
            sourceId: 's',
            contentType: 'text/plain',
            body: Buffer.from(`m${i}`),
          })),
        )
      ).map((r) => r.id);
      await store.claimReceived('p', n, 60_000);
      await store.recordProcessed(
        ids.map((id) => ({
          id,
          transformed: { bundleJson, orderingKey: id },
          outcome: {
            status: 'routed' as const,
            deliveries: [{ routeId: 'r', sinkId: 'up', strictOrder: true, unchanged: true }],
          },
        })),
      );
    };
    // The claims for "down" stand for a backlog the query walks: 60 ms each, nothing found.
    const claimsFor = { up: 0, down: 0 };
    const slow = new Proxy(store, {
      get: (target, prop) => {
        if (prop === 'claimDeliveries')
          return async (...args: Parameters<MessageStore['claimDeliveries']>) => {
            const sink = args[4]?.sinkIds?.[0];
            if (sink === 'down') {
              claimsFor.down++;
              await new Promise((r) => setTimeout(r, 60));
              return [];
            }
            if (sink === 'up') claimsFor.up++;
            return store.claimDeliveries(...args);
          };
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as MessageStore;
    const got: string[] = [];
    const logger = silentLogger();
    const sinks = new Map([
      [
        'up',
        {
          id: 'up',
          sink: { deliver: async (d: Delivery) => void got.push(d.message.id) },
          retry,
          logger,
          concurrency: 4,
        },
      ],
      ['down', { id: 'down', sink: { deliver: async () => undefined }, retry, logger, concurrency: 4 }],
    ]);
    const dispatcher = new Dispatcher(slow, sinks, logger, new EngineMetrics(false), {
      owner: 'me',
      leaseMs: 60_000,
      pollIntervalMs: 5,
    });
    dispatcher.start();
    const t0 = Date.now();
    try {
      // Traffic for "up" keeps arriving (each routing kicks a loop that would claim for both).
      for (let i = 0; i < 10; i++) {
        await route(5);
        dispatcher.kick();
        await new Promise((r) => setTimeout(r, 100));
      }
      for (let i = 0; i < 100 && got.length < 50; i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await dispatcher.stop();
    }
    const secs = (Date.now() - t0) / 1000;
    expect(got).toHaveLength(50);
    // Unspaced, "down" was claimed on every turn of the loop -- 18 claims in 1.1 s, the loop busy
    // with them all the time, as many claims for "up" -- spaced at four times 60 ms: at most ~1
    // in 300 ms (4 in 1.0 s, and 155 claims for "up").
    expect(claimsFor.down).toBeLessThanOrEqual(Math.ceil(secs / 0.3) + 1);
    expect(claimsFor.down).toBeGreaterThan(1);
    await store.close();
  }, 30_000);

  it('stop gives up on sink calls that outlast stopGraceMs: failed (retryable, made again later), the sink told through its signal', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'stop-grace.db'), logger: silentLogger() });
    await store.open();
    const [{ id }] = await store.insert([{ sourceId: 's', contentType: 'text/plain', body: Buffer.from('m') }]);
    await store.claimReceived('p', 1, 60_000);
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    await store.recordProcessed([
      {
        id,
        transformed: { bundleJson, orderingKey: 'k' },
        outcome: {
          status: 'routed' as const,
          deliveries: [{ routeId: 'r', sinkId: 'out', strictOrder: true, unchanged: true }],
        },
      },
    ]);
    let called = 0;
    let aborted: unknown;
    // a sink that never answers (no deliveryTimeoutMs either)
    const sink = {
      deliver: (d: Delivery) =>
        new Promise<void>(() => {
          called++;
          d.signal?.addEventListener('abort', () => (aborted = d.signal?.reason));
        }),
    };
    const logger = silentLogger();
    const dispatcher = new Dispatcher(
      store,
      new Map([['out', { id: 'out', sink, retry, logger, concurrency: 1, deliveryTimeoutMs: 0 }]]),
      logger,
      new EngineMetrics(false),
      {
        owner: 'me',
        leaseMs: 60_000,
        pollIntervalMs: 20,
        stopGraceMs: 300,
      },
    );
    dispatcher.start();
    for (let i = 0; i < 100 && !called; i++) await new Promise((r) => setTimeout(r, 20));
    expect(called).toBe(1);
    const t0 = Date.now();
    await dispatcher.stop();
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(3000);
    expect(aborted).toMatchObject({ code: 'FERRY_E_DELIVERY_ENGINE_STOPPING' });
    const [dl] = await store.deliveries(id);
    expect(dl).toMatchObject({ status: 'failed', attempts: 1 });
    await store.close();
  });

  describe('circuit breaker', () => {
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    /** `n` messages routed to sink "s", on `keys` ordering keys (message i on key i % keys). */
    async function routed(store: SqliteMessageStore, n: number, keys: number): Promise<string[]> {
      const ids = (
        await store.insert(
          Array.from({ length: n }, (_, i) => ({
            sourceId: 'src',
            contentType: 'text/plain',
            body: Buffer.from(`m${i}`),
          })),
        )
      ).map((r) => r.id);
      await store.claimReceived('p', n, 60_000);
      await store.recordProcessed(
        ids.map((id, i) => ({
          id,
          transformed: { bundleJson, orderingKey: `k${i % keys}` },
          outcome: {
            status: 'routed' as const,
            deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: true, unchanged: true }],
          },
        })),
      );
      return ids;
    }
    /** A sink that refuses connections until `up` is set, recording every call. */
    function flakySink() {
      const calls: { id: string; attempt: number; up: boolean }[] = [];
      const got: string[] = [];
      const state = { up: false };
      const sink = {
        deliver: async (d: Delivery) => {
          calls.push({ id: d.message.id, attempt: d.attempt, up: state.up });
          if (!state.up)
            throw new FerryError('DELIVERY_NETWORK', 'connect ECONNREFUSED 127.0.0.1:1', {
              kind: 'transient',
              retryable: true,
            });
          got.push(d.message.id);
        },
      };
      return { sink, calls, got, state };
    }
    // Two attempts 20-40 ms apart: without the breaker an outage of a second kills every delivery.
    const shortRetry = {
      maxAttempts: 2,
      initialDelayMs: 20,
      maxDelayMs: 40,
      multiplier: 2,
      jitter: 0,
      maxAgeMs: 60_000,
    };
    const circuit = { failureThreshold: 3, openMs: 100, maxOpenMs: 300 };

    it("pauses a failing sink instead of spending its deliveries' attempts, probes it, and resumes in order when it answers", async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'circuit.db'), logger: silentLogger() });
      await store.open();
      const ids = await routed(store, 30, 5);
      const { sink, calls, got, state } = flakySink();
      const logger = silentLogger();
      const metrics = new EngineMetrics(false);
      const dispatcher = new Dispatcher(
        store,
        new Map([['s', { id: 's', sink, retry: shortRetry, logger, concurrency: 4, circuit }]]),
        logger,
        metrics,
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 },
      );
      dispatcher.start();
      try {
        await new Promise((r) => setTimeout(r, 1200));
        const down = dispatcher.sinkViews()[0];
        expect(down.circuit).toMatchObject({
          state: expect.stringMatching(/open/),
          lastErrorCode: 'FERRY_E_DELIVERY_NETWORK',
        });
        expect(await metrics.registry.getSingleMetricAsString('ferry_sink_paused')).toMatch(
          /ferry_sink_paused\{sink="s"\} 1/,
        );
        // 1.2 s down: three calls one at a time (slow start: the sink never answered since the
        // start), then one probe per pause (100, 200, 300, 300 ms).
        expect(calls.length).toBeLessThanOrEqual(3 + 6);
        expect(calls.length).toBeGreaterThanOrEqual(3 + 2);
        expect((await store.stats()).deliveries.dead ?? 0).toBe(0);
        state.up = true;
        for (let i = 0; i < 100 && got.length < ids.length; i++) await new Promise((r) => setTimeout(r, 20));
      } finally {
        await dispatcher.stop();
      }
      expect([...got].sort()).toEqual([...ids].sort());
      // Per key, in arrival order.
      for (let k = 0; k < 5; k++)
        expect(got.filter((id) => ids.indexOf(id) % 5 === k)).toEqual(ids.filter((_, i) => i % 5 === k));
      expect(dispatcher.sinkViews()[0].circuit).toMatchObject({ state: 'closed', consecutiveFailures: 0 });
      expect(await metrics.registry.getSingleMetricAsString('ferry_sink_paused')).toMatch(
        /ferry_sink_paused\{sink="s"\} 0/,
      );
      expect(await metrics.registry.getSingleMetricAsString('ferry_sink_pauses_total')).toMatch(
        /ferry_sink_pauses_total\{sink="s"\} 1/,
      );
      // The probes were attempts (counted and marked), not spent from maxAttempts.
      const probed = (await Promise.all(ids.map((id) => store.deliveries(id))))
        .flat()
        .filter((d) => (d.probeAttempts ?? 0) > 0);
      expect(probed.length).toBeGreaterThan(0);
      for (const d of probed) expect(d).toMatchObject({ status: 'delivered' });
      const events = (await Promise.all(probed.map((d) => store.events(d.messageId)))).flat();
      expect(
        events.some((e) => e.status === 'delivery:failed' && e.detail === 'FERRY_E_DELIVERY_NETWORK (probe)'),
      ).toBe(true);
      await store.close();
    }, 20_000);

    it('slow start: an engine restarted during an outage makes failureThreshold attempts (probes) before pausing the sink again, not one counted attempt per slot; a sink that answers gets its full concurrency', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'slow-start.db'), logger: silentLogger() });
      await store.open();
      const ids = await routed(store, 40, 40);
      const { sink, calls, got, state } = flakySink();
      let inFlight = 0;
      let maxInFlight = 0;
      const slow = {
        deliver: async (d: Delivery) => {
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          try {
            await new Promise((r) => setTimeout(r, 20));
            await sink.deliver(d);
          } finally {
            inFlight--;
          }
        },
      };
      const logger = silentLogger();
      const start = () =>
        new Dispatcher(
          store,
          new Map([
            [
              's',
              {
                id: 's',
                sink: slow,
                retry: { ...shortRetry, maxAttempts: 3 },
                logger,
                concurrency: 16,
                circuit: { failureThreshold: 3, openMs: 60_000, maxOpenMs: 60_000 },
              },
            ],
          ]),
          logger,
          new EngineMetrics(false),
          { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 },
        );
      // Three starts while the sink is down (a crash loop): three attempts each, one at a time.
      for (let restart = 1; restart <= 3; restart++) {
        const dispatcher = start();
        dispatcher.start();
        try {
          for (let i = 0; i < 100 && dispatcher.sinkViews()[0].circuit.state !== 'open'; i++)
            await new Promise((r) => setTimeout(r, 10));
          await new Promise((r) => setTimeout(r, 200));
          expect(calls).toHaveLength(3 * restart);
          expect(maxInFlight).toBe(1);
        } finally {
          await dispatcher.stop();
        }
      }
      // Without slow start the first claim alone would have tried 16 deliveries at every start,
      // counted, and with maxAttempts 3 the oldest would be dead by now.
      expect((await store.stats()).deliveries.dead ?? 0).toBe(0);
      const tried = (await Promise.all(ids.map((id) => store.deliveries(id)))).flat().filter((d) => d.attempts > 0);
      for (const d of tried) expect(d.probeAttempts).toBe(d.attempts);
      state.up = true;
      const dispatcher = start();
      dispatcher.start();
      try {
        for (let i = 0; i < 200 && got.length < ids.length; i++) await new Promise((r) => setTimeout(r, 20));
        expect(dispatcher.sinkViews()[0].circuit).toEqual({ state: 'closed', consecutiveFailures: 0, failedProbes: 0 });
      } finally {
        await dispatcher.stop();
      }
      expect([...got].sort()).toEqual([...ids].sort());
      // Its full concurrency, not one at a time: 16 calls at once -- or 15, when the claim that
      // followed the first answer ran while that answer's outcome was still being committed (its
      // slot is held until then, and the next claim waits for half the slots).
      expect(maxInFlight).toBeGreaterThanOrEqual(15);
      await store.close();
    }, 30_000);

    it('without it (failureThreshold 0) the same outage makes every delivery dead', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'no-circuit.db'), logger: silentLogger() });
      await store.open();
      const ids = await routed(store, 10, 10);
      const { sink } = flakySink();
      const logger = silentLogger();
      const dispatcher = new Dispatcher(
        store,
        new Map([
          [
            's',
            { id: 's', sink, retry: shortRetry, logger, concurrency: 4, circuit: { ...circuit, failureThreshold: 0 } },
          ],
        ]),
        logger,
        new EngineMetrics(false),
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 },
      );
      dispatcher.start();
      try {
        for (let i = 0; i < 100 && ((await store.stats()).deliveries.dead ?? 0) < ids.length; i++)
          await new Promise((r) => setTimeout(r, 20));
      } finally {
        await dispatcher.stop();
      }
      expect((await store.stats()).deliveries.dead).toBe(ids.length);
      expect(dispatcher.sinkViews()[0].circuit).toEqual({ state: 'closed', disabled: true });
      await store.close();
    }, 20_000);

    it('one ordering key: its first delivery is the probe each time, and is delivered, not dead, after more probes than maxAttempts', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'circuit-one-key.db'), logger: silentLogger() });
      await store.open();
      const ids = await routed(store, 3, 1);
      const { sink, calls, got, state } = flakySink();
      const logger = silentLogger();
      const dispatcher = new Dispatcher(
        store,
        new Map([
          [
            's',
            {
              id: 's',
              sink,
              retry: shortRetry,
              logger,
              concurrency: 4,
              circuit: { failureThreshold: 1, openMs: 50, maxOpenMs: 50 },
            },
          ],
        ]),
        logger,
        new EngineMetrics(false),
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 },
      );
      dispatcher.start();
      try {
        for (let i = 0; i < 100 && calls.length < 6; i++) await new Promise((r) => setTimeout(r, 20));
        state.up = true;
        for (let i = 0; i < 100 && got.length < ids.length; i++) await new Promise((r) => setTimeout(r, 20));
      } finally {
        await dispatcher.stop();
      }
      expect(got).toEqual(ids);
      const [first] = await store.deliveries(ids[0]);
      expect(calls.filter((c) => c.id === ids[0] && !c.up).length).toBeGreaterThanOrEqual(5);
      expect(first).toMatchObject({ status: 'delivered', attempts: calls.filter((c) => c.id === ids[0]).length });
      // Every failure was a probe: the first one's too (slow start: the sink had not answered since
      // the dispatcher started); the last call, taken, is counted.
      expect(first.probeAttempts).toBe(first.attempts - 1);
      await store.close();
    }, 20_000);

    /**
     * Claim rounds in one second while sink "s" (three deliveries, failing) is paused and the
     * dispatcher polls every 200 ms: an idle dispatcher makes ~5 turns, each claiming for the
     * configured sinks it may claim for and for removed sinks' deliveries.
     */
    /** The store, with its claims counted. */
    function countingClaims(store: MessageStore): { store: MessageStore; claims: () => number } {
      let claims = 0;
      const counting = new Proxy(store, {
        get: (target, prop) => {
          if (prop === 'claimDeliveries')
            return (...args: Parameters<MessageStore['claimDeliveries']>) => {
              claims++;
              return store.claimDeliveries(...args);
            };
          const v = Reflect.get(target, prop);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      }) as MessageStore;
      return { store: counting, claims: () => claims };
    }

    async function claimsWhilePaused(
      file: string,
      retry: typeof shortRetry,
      circuit: { failureThreshold: number; openMs: number; maxOpenMs: number },
      expectCalls: number,
    ): Promise<number> {
      const store = new SqliteMessageStore({ path: path.join(dir, file), logger: silentLogger() });
      await store.open();
      await routed(store, 3, 3);
      const { store: counting, claims: count } = countingClaims(store);
      const { sink, calls } = flakySink();
      const logger = silentLogger();
      const dispatcher = new Dispatcher(
        counting,
        new Map([['s', { id: 's', sink, retry, logger, concurrency: 4, circuit }]]),
        logger,
        new EngineMetrics(false),
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 200 },
      );
      dispatcher.start();
      try {
        for (let i = 0; i < 50 && calls.length < expectCalls; i++) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 100));
        const before = count();
        await new Promise((r) => setTimeout(r, 1000));
        expect(calls).toHaveLength(expectCalls);
        return count() - before;
      } finally {
        await dispatcher.stop();
        await store.close();
      }
    }

    it('does not spin on a paused sink that has nothing due to probe with', async () => {
      // Each failure schedules its retry in 10 s: once the 50 ms pause is over, nothing is due for a probe.
      const later = { ...shortRetry, initialDelayMs: 10_000, maxDelayMs: 10_000 };
      // Polled like an idle sink, not claimed for every 5 ms (~300 claims before the fix).
      // (Slow start: the first failure pauses the sink; each 50 ms pause then probes the next delivery, until all three have failed.)
      expect(
        await claimsWhilePaused('circuit-idle.db', later, { failureThreshold: 1, openMs: 50, maxOpenMs: 50 }, 3),
      ).toBeLessThanOrEqual(14);
    }, 20_000);

    it("is not woken every few milliseconds by a paused sink's retries falling due", async () => {
      // Retries due 20 ms after each failure, the pause 2 s: due all through the pause. Only removed
      // sinks' deliveries are claimed for meanwhile, at idle polling's pace (~180 rounds before the fix).
      // (Slow start: one call, which paused the sink; its retry falls due 20 ms later, the other two are pending.)
      expect(
        await claimsWhilePaused(
          'circuit-due.db',
          { ...shortRetry, maxAttempts: 100 },
          { failureThreshold: 1, openMs: 2000, maxOpenMs: 2000 },
          1,
        ),
      ).toBeLessThanOrEqual(8);
    }, 20_000);

    it('resumes a held sink when its hold ends, without spinning until the holds are read again', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'hold-ends.db'), logger: silentLogger() });
      await store.open();
      await store.holdSink('s', { until: new Date(Date.now() + 300) });
      const { store: counting, claims } = countingClaims(store);
      const { sink, got, state } = flakySink();
      state.up = true;
      const logger = silentLogger();
      const dispatcher = new Dispatcher(
        counting,
        new Map([['s', { id: 's', sink, retry: shortRetry, logger, concurrency: 4 }]]),
        logger,
        new EngineMetrics(false),
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 200 },
      );
      dispatcher.start();
      try {
        await new Promise((r) => setTimeout(r, 50));
        expect(dispatcher.sinkViews()[0].hold?.until).toBeInstanceOf(Date);
        const ids = await routed(store, 2, 2);
        dispatcher.kick();
        await new Promise((r) => setTimeout(r, 150));
        expect(got).toEqual([]); // held
        for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
        expect([...got].sort()).toEqual([...ids].sort());
        // The hold is over but still in memory until the next read of the holds (every second):
        // the dispatcher polls like any idle one meanwhile (~5 rounds of two claims), not every 5 ms (~180).
        const before = claims();
        await new Promise((r) => setTimeout(r, 500));
        expect(claims() - before).toBeLessThanOrEqual(10);
      } finally {
        await dispatcher.stop();
        await store.close();
      }
    }, 20_000);

    it('is not woken every few milliseconds by its own retry under way (a failed delivery leased to it, due in the past)', async () => {
      const store = new SqliteMessageStore({ path: path.join(dir, 'retry-in-flight.db'), logger: silentLogger() });
      await store.open();
      await routed(store, 1, 1);
      const { store: counting, claims } = countingClaims(store);
      let calls = 0;
      let inSecond: () => void = () => undefined;
      const second = new Promise<void>((r) => (inSecond = r));
      const sink = {
        deliver: async () => {
          if (++calls === 1)
            throw new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });
          inSecond();
          await new Promise((r) => setTimeout(r, 1000)); // a slow answer
        },
      };
      const logger = silentLogger();
      const dispatcher = new Dispatcher(
        counting,
        new Map([['s', { id: 's', sink, retry: shortRetry, logger, concurrency: 8 }]]),
        logger,
        new EngineMetrics(false),
        { owner: 'me', leaseMs: 60_000, pollIntervalMs: 200 },
      );
      dispatcher.start();
      try {
        await second;
        const before = claims();
        await new Promise((r) => setTimeout(r, 800));
        // Idle polling while the call runs (~4 rounds of two claims), not a round every 5 ms (~300 claims).
        expect(claims() - before).toBeLessThanOrEqual(10);
      } finally {
        await dispatcher.stop();
        await store.close();
      }
    }, 20_000);

    it('counts towards maxAttempts only the attempts that were not probes', () => {
      const d = { attempts: 5, probeAttempts: 4, createdAt: new Date(), firstAttemptAt: new Date() } as ClaimedDelivery;
      const err = new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });
      // 1 counted before, this one the second: dead at maxAttempts 2.
      expect(deliveryOutcome(shortRetry, d, err).status).toBe('dead');
      expect(deliveryOutcome(shortRetry, { ...d, probeAttempts: 5 } as ClaimedDelivery, err).status).toBe('failed');
      // A probe never makes a delivery dead by maxAttempts; its max age still does.
      expect(deliveryOutcome(shortRetry, d, err, new Date(), 0, true)).toMatchObject({ status: 'failed', probe: true });
      expect(
        deliveryOutcome(
          { ...shortRetry, maxAgeMs: 1 },
          { ...d, firstAttemptAt: new Date(Date.now() - 1000) } as ClaimedDelivery,
          err,
          new Date(),
          0,
          true,
        ),
      ).toMatchObject({ status: 'dead', probe: true });
    });
  });
});

describe('deliveryOutcome: the next state of a delivery whose attempt failed', () => {
  const policy = {
    maxAttempts: 3,
    initialDelayMs: 1000,
    maxDelayMs: 60_000,
    multiplier: 2,
    jitter: 0,
    maxAgeMs: 3_600_000,
  };
  const now = new Date(Date.UTC(2030, 0, 1, 12, 0, 0));
  const d = (attempts: number, more: Partial<ClaimedDelivery> = {}) =>
    ({
      attempts,
      createdAt: new Date(now.getTime() - 10_000),
      firstAttemptAt: new Date(now.getTime() - 5_000),
      ...more,
    }) as ClaimedDelivery;
  const transient = new FerryError('DELIVERY_NETWORK', 'refused', { kind: 'transient', retryable: true });

  it('failed with the next attempt by the backoff of the attempts so far (this one counted), dead at maxAttempts', () => {
    expect(deliveryOutcome(policy, d(0), transient, now)).toEqual({
      status: 'failed',
      nextAttemptAt: new Date(now.getTime() + 1000),
      error: { code: 'FERRY_E_DELIVERY_NETWORK', message: 'refused', retryable: true, outcome: undefined },
    });
    expect(deliveryOutcome(policy, d(1), transient, now)).toMatchObject({
      status: 'failed',
      nextAttemptAt: new Date(now.getTime() + 2000),
    });
    expect(deliveryOutcome(policy, d(2), transient, now)).toEqual({
      status: 'dead',
      error: expect.objectContaining({ code: 'FERRY_E_DELIVERY_NETWORK' }),
    });
  });

  it('a permanent error is dead at once, keeping the sink’s OperationOutcome; a Retry-After longer than the backoff wins', () => {
    const outcome = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid' }] };
    const permanent = new FerryError('DELIVERY_REJECTED', 'bad bundle', {
      kind: 'input',
      retryable: false,
      details: { outcome },
    });
    expect(deliveryOutcome(policy, d(0), permanent, now)).toEqual({
      status: 'dead',
      error: { code: 'FERRY_E_DELIVERY_REJECTED', message: 'bad bundle', retryable: false, outcome },
    });
    const later = new FerryError(testErrors.codes.DELIVERY_BUSY, '429', {
      kind: 'transient',
      retryable: true,
      details: { retryAfterMs: 30_000 },
    });
    expect(deliveryOutcome(policy, d(0), later, now)).toMatchObject({
      status: 'failed',
      nextAttemptAt: new Date(now.getTime() + 30_000),
    });
  });

  it('max age from the first attempt (else the creation), on the store’s clock', () => {
    const aged = { ...policy, maxAgeMs: 6_000 };
    // first attempt 5 s ago: the next (in 1 s) is just at the limit, still made
    expect(deliveryOutcome(aged, d(0), transient, now).status).toBe('failed');
    // the store's clock 1 s ahead: its first attempt was 6 s ago on ours -> past the limit
    expect(deliveryOutcome(aged, d(0), transient, now, 1000).status).toBe('dead');
    // no first attempt recorded: from the creation (10 s ago)
    expect(deliveryOutcome(aged, d(0, { firstAttemptAt: undefined as never }), transient, now).status).toBe('dead');
  });

  it('probes before it do not count; a probe is marked as one', () => {
    expect(deliveryOutcome(policy, d(4, { probeAttempts: 3 }), transient, now)).toMatchObject({
      status: 'failed',
      nextAttemptAt: new Date(now.getTime() + 2000),
    });
    expect(deliveryOutcome(policy, d(4, { probeAttempts: 2 }), transient, now).status).toBe('dead');
    expect(deliveryOutcome(policy, d(0), transient, now)).not.toHaveProperty('probe');
    expect(deliveryOutcome(policy, d(9), transient, now, 0, true)).toMatchObject({
      status: 'failed',
      probe: true,
      nextAttemptAt: expect.any(Date),
    });
    // A probe's backoff is that of the counted attempts before it (2 here), itself not counted.
    expect(deliveryOutcome(policy, d(2), transient, now, 0, true)).toMatchObject({
      status: 'failed',
      probe: true,
      nextAttemptAt: new Date(now.getTime() + 2000),
    });
  });
});

describe('toSinkDelivery: what a sink is handed', () => {
  const message = { id: 'm1' } as ClaimedDelivery['message'];
  it('the attempt number (completed + 1), route and message; the bundle parsed from its JSON only when read', () => {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [] };
    const x = toSinkDelivery({
      id: 'd1',
      attempts: 2,
      routeId: 'r',
      message,
      bundleJson: JSON.stringify(bundle),
    } as unknown as ClaimedDelivery);
    expect([x.deliveryId, x.attempt, x.routeId, x.message]).toEqual(['d1', 3, 'r', message]);
    expect(x.bundle).toEqual(bundle);
    const y = toSinkDelivery({ id: 'd2', attempts: 0, routeId: 'r', message, bundle } as unknown as ClaimedDelivery);
    expect(y.attempt).toBe(1);
    expect(y.bundle).toBe(bundle);
  });

  it('its signal aborts with the reason the engine gives up for, also when read after', () => {
    const x = toSinkDelivery({
      id: 'd1',
      attempts: 0,
      routeId: 'r',
      message,
      bundleJson: '{}',
    } as unknown as ClaimedDelivery);
    const before = x.signal!;
    expect(before.aborted).toBe(false);
    const why = new Error('timeout');
    x.abort(why);
    expect(before.aborted).toBe(true);
    expect(before.reason).toBe(why);
    expect(x.signal!.aborted).toBe(true);
    expect(x.signal!.reason).toBe(why);
    const y = toSinkDelivery({
      id: 'd2',
      attempts: 0,
      routeId: 'r',
      message,
      bundleJson: '{}',
    } as unknown as ClaimedDelivery);
    y.abort('stopping');
    expect(y.signal!.reason).toBe('stopping');
  });
});
