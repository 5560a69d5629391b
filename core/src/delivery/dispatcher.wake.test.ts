/**
 * When the dispatcher looks at the store while idle: the earliest due retry is read once per poll
 * interval (not after every delivery), yet a retry this dispatcher schedules is made at its time,
 * and a removed sink's deliveries are looked for at once after a reload removes it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EngineMetrics } from '../admin/metrics';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import type { Delivery } from '../plugin/api';
import type { MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { routed } from './__fixtures__/routed';
import { storeWith } from './__fixtures__/store-with';
import { Dispatcher, type SinkRuntime } from './dispatcher';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dispatcher-wake-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The real store, recording the filter of each of its reads of the earliest due retry. */
function countingDueReads(store: MessageStore): { store: MessageStore; reads: string[] } {
  const reads: string[] = [];
  const counted = storeWith(store, {
    nextDueAt: (filter) => {
      reads.push(JSON.stringify(filter));
      return store.nextDueAt(filter);
    },
  });
  return { store: counted, reads };
}

/** A dispatcher for one sink 'out' taking one delivery at a time (each message id into `got`), polling once a minute. */
function oneAtATime(store: MessageStore, got: string[]): Dispatcher {
  const logger = silentLogger();
  const rt: SinkRuntime = {
    id: 'out',
    sink: { deliver: async (d: Delivery) => void got.push(d.message.id) },
    retry: { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 50, multiplier: 2, jitter: 0, maxAgeMs: 60_000 },
    logger,
    concurrency: 1,
  };
  return new Dispatcher(store, new Map([['out', rt]]), logger, new EngineMetrics(false), {
    owner: 'me',
    leaseMs: 60_000,
    pollIntervalMs: 60_000,
  });
}

const until = async (cond: () => boolean, ms = 15_000) => {
  for (const t0 = Date.now(); !cond() && Date.now() - t0 < ms;) await new Promise((r) => setTimeout(r, 10));
  return cond();
};

describe('Dispatcher: idle reads of the store', () => {
  it('makes a retry it scheduled at its time, not at the next poll (a minute away here)', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'retry.db'), logger: silentLogger() });
    await store.open();
    const attempts: number[] = [];
    const sink = {
      deliver: async (d: Delivery) => {
        attempts.push(Date.now());
        if (attempts.length === 1)
          throw new FerryError('DELIVERY_UNEXPECTED', `not yet ${d.message.id}`, {
            kind: 'transient',
            retryable: true,
          });
      },
    };
    const retry = { maxAttempts: 3, initialDelayMs: 300, maxDelayMs: 300, multiplier: 1, jitter: 0, maxAgeMs: 60_000 };
    const logger = silentLogger();
    const rt: SinkRuntime = { id: 'out', sink, retry, logger, concurrency: 4 };
    const dispatcher = new Dispatcher(store, new Map([['out', rt]]), logger, new EngineMetrics(false), {
      owner: 'me',
      leaseMs: 60_000,
      pollIntervalMs: 60_000,
    });
    dispatcher.start();
    let id = '';
    try {
      await new Promise((r) => setTimeout(r, 100)); // idle turns: the store's due retries read (none)
      [id] = await routed(store, 1, 'out');
      dispatcher.kick();
      expect(await until(() => attempts.length >= 2)).toBe(true);
      await dispatcher.stop();
      expect(attempts[1] - attempts[0]).toBeGreaterThanOrEqual(300);
      expect((await store.getMessage(id))?.status).toBe('delivered');
    } finally {
      await dispatcher.stop();
      await store.close();
    }
  });

  it('reads the earliest due retry once per poll interval, not after every delivery', async () => {
    const sqlite = new SqliteMessageStore({ path: path.join(dir, 'due.db'), logger: silentLogger() });
    await sqlite.open();
    const { store, reads } = countingDueReads(sqlite);
    const got: string[] = [];
    const dispatcher = oneAtATime(store, got);
    dispatcher.start();
    try {
      // One message at a time, each delivered before the next is routed: an idle turn after each.
      for (let i = 0; i < 10; i++) {
        await routed(sqlite, 1, 'out');
        dispatcher.kick();
        expect(await until(() => got.length === i + 1)).toBe(true);
      }
      await dispatcher.stop();
      // Read again only for another question: a claim that found nothing and took SLOW_CLAIM_MS
      // (a loaded machine) spaces the sink's next claim, which leaves it out of the filter until
      // then. The same question is never asked twice in a row within the poll interval.
      expect(reads.length).toBeGreaterThanOrEqual(1);
      expect(reads.filter((f, i) => i > 0 && f === reads[i - 1])).toEqual([]);
    } finally {
      await dispatcher.stop();
      await sqlite.close();
    }
  });

  it('a delivery routed while an idle turn reads the earliest due retry is claimed at once, not at the next poll', async () => {
    const sqlite = new SqliteMessageStore({ path: path.join(dir, 'race.db'), logger: silentLogger() });
    await sqlite.open();
    // The idle turn's read of the earliest due retry is held until the test lets it go.
    let reading: (() => void) | undefined;
    let readStarted!: () => void;
    const started = new Promise<void>((r) => (readStarted = r));
    const store = storeWith(sqlite, {
      nextDueAt: async (filter) => {
        readStarted();
        await new Promise<void>((r) => (reading = r));
        return sqlite.nextDueAt(filter);
      },
    });
    const got: string[] = [];
    const dispatcher = oneAtATime(store, got);
    dispatcher.start();
    try {
      await started; // the first idle turn: nothing claimed, now reading the earliest due retry
      const [id] = await routed(sqlite, 1, 'out');
      dispatcher.kick(); // no sleep to cut short yet
      reading!();
      expect(await until(() => got.length === 1, 2_000)).toBe(true);
      expect(got).toEqual([id]);
    } finally {
      reading?.();
      await dispatcher.stop();
      await sqlite.close();
    }
  });

  it("looks for a removed sink's deliveries once per poll interval, and at once after a reload removes a sink", async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'gone.db'), logger: silentLogger() });
    await store.open();
    const logger = silentLogger();
    const retry = {
      maxAttempts: 3,
      initialDelayMs: 60_000,
      maxDelayMs: 60_000,
      multiplier: 1,
      jitter: 0,
      maxAgeMs: 600_000,
    };
    const keep: SinkRuntime = { id: 'keep', sink: { deliver: async () => undefined }, retry, logger, concurrency: 4 };
    const dispatcher = new Dispatcher(store, new Map([['keep', keep]]), logger, new EngineMetrics(false), {
      owner: 'me',
      leaseMs: 60_000,
      pollIntervalMs: 60_000,
    });
    const gone = async (id: string) => (await store.deliveries(id))[0]?.lastError?.code === 'FERRY_E_CONFIG_SINK_GONE';
    dispatcher.start();
    try {
      await new Promise((r) => setTimeout(r, 100)); // idle turns: no removed sink's delivery anywhere
      // routed by another instance still configured with sink 'old' (or before a reload removed it)
      const [id] = await routed(store, 1, 'old');
      dispatcher.kick();
      await new Promise((r) => setTimeout(r, 300));
      expect(await gone(id)).toBe(false); // not looked for again on this turn: the next poll is a minute away
      // a reload removes a sink: removed sinks' deliveries are looked for at once
      await dispatcher.removeSink('other');
      let failed = false;
      for (let i = 0; i < 300 && !failed; i++) {
        failed = await gone(id);
        if (!failed) await new Promise((r) => setTimeout(r, 10));
      }
      expect(failed).toBe(true);
      expect((await store.deliveries(id))[0].status).toBe('failed');
    } finally {
      await dispatcher.stop();
      await store.close();
    }
  });
});
