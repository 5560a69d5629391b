import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import type { DeliveryOutcome, MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { OutcomeRecorder } from './outcome-recorder';
import { capture } from './__fixtures__/capture';
import { routed } from './__fixtures__/routed';
import { storeWith } from './__fixtures__/store-with';

/**
 * The dispatcher's outcomes' group commit on a real SQLite store: what one event-loop turn records
 * goes to the store in one call, fenced by the owner's lease; each caller learns its own delivery's
 * fate (recorded, stale -- another owner's now --, or not recorded); a retry scheduled is announced.
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-outcome-recorder-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const open: SqliteMessageStore[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

/** A store with `count` deliveries to sink `s`, each on its own key, claimed by `me`: their ids. */
async function claimed(count: number): Promise<{ store: SqliteMessageStore; ids: string[] }> {
  const store = new SqliteMessageStore({ path: path.join(dir, `o${++n}.db`), logger: silentLogger() });
  await store.open();
  open.push(store);
  await routed(store, count);
  const ids = (await store.claimDeliveries('me', count, 60_000)).map((d) => d.id);
  expect(ids).toHaveLength(count);
  return { store, ids };
}

type Call = { ids: string[]; owner?: string };
/** The store, with each completeDeliveries call recorded (then made on the real store). */
function watched(store: MessageStore): { s: MessageStore; calls: Call[] } {
  const calls: Call[] = [];
  const s = storeWith(store, {
    completeDeliveries: (items, opts) => {
      calls.push({ ids: items.map((i) => i.deliveryId), owner: opts?.owner });
      return store.completeDeliveries(items, opts);
    },
  });
  return { s, calls };
}

const delivered: DeliveryOutcome = { status: 'delivered' };
const failed: DeliveryOutcome = {
  status: 'failed',
  error: { code: 'X', message: 'x', retryable: true },
  nextAttemptAt: new Date(Date.now() + 3_600_000),
};
const dead: DeliveryOutcome = { status: 'dead', error: { code: 'X', message: 'x', retryable: false } };
/** A delivery's status, read from the file (not through the store). */
async function statusOf(store: SqliteMessageStore, id: string): Promise<string | undefined> {
  const db = new Database(store.file, { readonly: true });
  try {
    return (db.prepare('SELECT status FROM deliveries WHERE id = ?').get(id) as { status?: string } | undefined)
      ?.status;
  } finally {
    db.close();
  }
}

describe('OutcomeRecorder', () => {
  it("one turn's outcomes go to the store in one call, fenced by the owner's lease; a later turn's in another", async () => {
    const { store, ids } = await claimed(4);
    const { s, calls } = watched(store);
    // (No one to tell of a retry scheduled: none told.)
    const r = new OutcomeRecorder(s, silentLogger(), { owner: 'me', leaseMs: 60_000 });
    expect(await Promise.all([r.record(ids[0], delivered), r.record(ids[1], dead)])).toEqual([undefined, undefined]);
    expect(calls).toEqual([{ ids: [ids[0], ids[1]], owner: 'me' }]);
    expect(await Promise.all([r.record(ids[2], delivered), r.record(ids[3], failed)])).toEqual([undefined, undefined]);
    expect(calls).toEqual([
      { ids: [ids[0], ids[1]], owner: 'me' },
      { ids: [ids[2], ids[3]], owner: 'me' },
    ]);
    expect(await Promise.all(ids.map((id) => statusOf(store, id)))).toEqual([
      'delivered',
      'dead',
      'delivered',
      'failed',
    ]);
  });

  it('a group with a retry scheduled (a failed outcome among others) is announced once it has committed; one without, not', async () => {
    const { store, ids } = await claimed(4);
    const seen: (string | undefined)[] = [];
    const r = new OutcomeRecorder(store, silentLogger(), { owner: 'me', leaseMs: 60_000 }, () => seen.push('retry'));
    await Promise.all([r.record(ids[0], delivered), r.record(ids[1], dead)]);
    expect(seen).toEqual([]);
    const both = Promise.all([r.record(ids[2], delivered), r.record(ids[3], failed)]);
    expect(seen).toEqual([]); // not before the commit
    await both;
    expect(seen).toEqual(['retry']);
    expect(await statusOf(store, ids[3])).toBe('failed');
  });

  it("an outcome for a delivery another owner holds now is not recorded: its caller learns who holds it; the group's others are recorded", async () => {
    const { store, ids } = await claimed(2);
    // The lease of ids[1] ran out and another instance took it over.
    expect(await store.releaseDeliveryLeases('me', [ids[0]])).toBe(1);
    expect((await store.claimDeliveries('other', 10, 60_000)).map((d) => d.id)).toEqual([ids[1]]);
    const r = new OutcomeRecorder(store, silentLogger(), { owner: 'me', leaseMs: 60_000 });
    expect(await Promise.all([r.record(ids[0], delivered), r.record(ids[1], delivered)])).toEqual([
      undefined,
      { deliveryId: ids[1], status: 'pending', leaseOwner: 'other' },
    ]);
    expect(await statusOf(store, ids[0])).toBe('delivered');
    expect(await statusOf(store, ids[1])).toBe('pending');
  });

  it('a delivery the store no longer has: only its caller is rejected; the others of its group are recorded (or stale)', async () => {
    const { store, ids } = await claimed(3);
    expect(await store.releaseDeliveryLeases('me', [ids[0], ids[1]])).toBe(1);
    expect((await store.claimDeliveries('other', 10, 60_000)).map((d) => d.id)).toEqual([ids[2]]);
    const db = new Database(store.file);
    db.prepare('DELETE FROM deliveries WHERE id = ?').run(ids[1]);
    db.close();
    const r = new OutcomeRecorder(store, silentLogger(), { owner: 'me', leaseMs: 60_000 });
    const got = await Promise.allSettled([
      r.record(ids[0], delivered),
      r.record(ids[1], delivered),
      r.record(ids[2], delivered),
    ]);
    expect(got[0]).toEqual({ status: 'fulfilled', value: undefined });
    expect(got[1]).toMatchObject({ status: 'rejected', reason: { code: 'FERRY_E_INTERNAL_STORE_NO_DELIVERY' } });
    expect(got[2]).toEqual({
      status: 'fulfilled',
      value: { deliveryId: ids[2], status: 'pending', leaseOwner: 'other' },
    });
    expect(await statusOf(store, ids[0])).toBe('delivered');
  });

  it('a store error that names no delivery rejects every caller of the group, and the next group is recorded', async () => {
    const { store, ids } = await claimed(3);
    let fail = true;
    const broken = new FerryError('INTERNAL_STORE_NO_DELIVERY', 'broken', { kind: 'internal' });
    const s = storeWith(store, {
      completeDeliveries: (items, opts) => (fail ? Promise.reject(broken) : store.completeDeliveries(items, opts)),
    });
    const r = new OutcomeRecorder(s, silentLogger(), { owner: 'me', leaseMs: 60_000 }, () => {
      throw new Error('no retry was scheduled');
    });
    const got = await Promise.allSettled([r.record(ids[0], failed), r.record(ids[1], delivered)]);
    expect(got).toEqual([
      { status: 'rejected', reason: broken },
      { status: 'rejected', reason: broken },
    ]);
    // Even one that rejects with nothing at all.
    const nothing = storeWith(store, { completeDeliveries: () => Promise.reject(undefined) });
    const r2 = new OutcomeRecorder(nothing, silentLogger(), { owner: 'me', leaseMs: 60_000 });
    expect(await Promise.allSettled([r2.record(ids[0], delivered)])).toEqual([
      { status: 'rejected', reason: undefined },
    ]);
    fail = false;
    expect(await r.record(ids[2], delivered)).toBeUndefined();
    expect(await statusOf(store, ids[2])).toBe('delivered');
    expect(await statusOf(store, ids[0])).toBe('pending');
  });

  it('a transient store error is tried again within half the lease: recorded; past it, the callers are rejected', async () => {
    const { store, ids } = await claimed(2);
    let calls = 0;
    let failures = 1;
    const lost = () =>
      new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient', retryable: true });
    const s = storeWith(store, {
      completeDeliveries: (items, opts) => {
        calls++;
        return failures-- > 0 ? Promise.reject(lost()) : store.completeDeliveries(items, opts);
      },
    });
    // Half of 60 s: the failure is retried after 50 ms (a warning says so, with the budget).
    const { logs, logger } = capture();
    const r = new OutcomeRecorder(s, logger, { owner: 'me', leaseMs: 60_000 });
    expect(await r.record(ids[0], delivered)).toBeUndefined();
    expect(calls).toBe(2);
    expect(await statusOf(store, ids[0])).toBe('delivered');
    expect(logs.filter((l) => l.level === 'warn')).toEqual([
      expect.objectContaining({ message: 'recording delivery outcomes failed; trying again', budgetMs: 30_000 }),
    ]);
    // Half of 200 ms: given up within it.
    failures = Infinity;
    const short = new OutcomeRecorder(s, logger, { owner: 'me', leaseMs: 200 });
    await expect(short.record(ids[1], delivered)).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
    expect(logs.filter((l) => l.level === 'warn').map((l) => l.budgetMs)).toEqual([30_000, 100]);
    expect(await statusOf(store, ids[1])).toBe('pending');
  });
});
