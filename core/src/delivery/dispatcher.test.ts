import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EngineMetrics } from '../admin/metrics';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import type { Delivery } from '../plugin/api';
import type { MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { Dispatcher } from './dispatcher';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dispatcher-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const retry = { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 50, multiplier: 2, jitter: 0, maxAgeMs: 60_000 };

describe('Dispatcher', () => {
  it('gives back the leases of a claim whose answer was lost with the connection, instead of waiting out the lease', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'lost-claim.db'), logger: silentLogger() });
    await store.open();
    const ids = (await store.insert([1, 2, 3].map((i) => ({ sourceId: 's', contentType: 'text/plain', body: Buffer.from(`m${i}`) })))).map((r) => r.id);
    await store.claimReceived('p', 3, 60_000);
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    // One ordering key: a delivery left leased holds the later ones.
    await store.recordProcessed(ids.map((id) => ({ id, transformed: { bundleJson, orderingKey: 'k' }, outcome: { status: 'routed' as const, deliveries: [{ routeId: 'r', sinkId: 'out', strictOrder: true, unchanged: true }] } })));
    // The first claim commits, then its answer is lost (the connection died during COMMIT).
    let lost = 0;
    const claimLosingFirstAnswer = async (...args: Parameters<MessageStore['claimDeliveries']>) => {
      const claimed = await store.claimDeliveries(...args);
      if (claimed.length && lost++ === 0) throw new FerryError('TRANSIENT_STORE_CONNECTION', 'PostgreSQL connection lost: Connection terminated', { kind: 'transient' });
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
    const dispatcher = new Dispatcher(flaky, new Map([['out', { id: 'out', sink, retry, logger, concurrency: 8 }]]), logger, new EngineMetrics(false), { owner: 'me', leaseMs: 60_000, pollIntervalMs: 20 });
    const t0 = Date.now();
    dispatcher.start();
    try {
      for (let i = 0; i < 150 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await dispatcher.stop();
    }
    expect(lost).toBeGreaterThan(1); // the lost claim, then the ones after it
    // In order, once each, within seconds -- not after the one-minute lease.
    expect(got).toEqual(ids);
    expect(Date.now() - t0).toBeLessThan(3000);
    for (const id of ids) expect((await store.getMessage(id))?.status).toBe('delivered');
    await store.close();
  });

  it("spaces the claims of a sink whose claims are slow and find little (a down sink's large backlog), and keeps delivering to the others", async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'spaced.db'), logger: silentLogger() });
    await store.open();
    const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
    const route = async (n: number) => {
      const ids = (await store.insert(Array.from({ length: n }, (_, i) => ({ sourceId: 's', contentType: 'text/plain', body: Buffer.from(`m${i}`) })))).map((r) => r.id);
      await store.claimReceived('p', n, 60_000);
      await store.recordProcessed(ids.map((id) => ({ id, transformed: { bundleJson, orderingKey: id }, outcome: { status: 'routed' as const, deliveries: [{ routeId: 'r', sinkId: 'up', strictOrder: true, unchanged: true }] } })));
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
      ['up', { id: 'up', sink: { deliver: async (d: Delivery) => void got.push(d.message.id) }, retry, logger, concurrency: 4 }],
      ['down', { id: 'down', sink: { deliver: async () => undefined }, retry, logger, concurrency: 4 }],
    ]);
    const dispatcher = new Dispatcher(slow, sinks, logger, new EngineMetrics(false), { owner: 'me', leaseMs: 60_000, pollIntervalMs: 5 });
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
});
