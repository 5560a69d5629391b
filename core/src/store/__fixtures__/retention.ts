import { routed as routedKeys } from './claims';
import { bundleFor, msg } from './conformance/helpers';
import type { DeliveryOutcome } from '../message-store';
import type { SqlMessageStore } from '../sql/sql.store';

/**
 * Retention (`prune`) tests shared by both SQL stores (sqlite.store.retention.test.ts,
 * postgres.store.retention.test.ts; each adds what only its database does): on a fake store clock,
 * so each pass's time bound is checked to the millisecond -- which messages lose their body (and
 * bundles), which are deleted with their events and deliveries, what is never touched, the steps
 * over a bounded range of messages, and the audit trail's own retention. Every time given to
 * `prune` is on the fake (local) clock: on PostgreSQL the store adds the offset it measured to the
 * database's clock (months, against a fake clock at 2026-01-01), so an offset left out shows.
 */
export const T0 = Date.UTC(2026, 0, 1);

type Suite = (title: string, fn: () => void) => void;

export interface RetentionHarness<S extends SqlMessageStore> {
  /** A new store of its own, on the clock `now`. */
  open(now: () => number): Promise<S>;
  /** Deliveries of message `id` still holding a bundle of their own (read from the database, not the store). */
  deliveryBundles(store: S, id: string): Promise<number>;
}

/** The fake clock (reset to T0 before each test), a store opener (closed after each test) and the tests' helpers. */
export function retentionFixture<S extends SqlMessageStore>(h: RetentionHarness<S>) {
  let clock = T0;
  const open: S[] = [];
  beforeEach(() => {
    clock = T0;
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  async function openStore(): Promise<S> {
    const s = await h.open(() => clock);
    open.push(s);
    return s;
  }

  /** One message per key, routed to each sink (strict order on its key); returns the message ids. */
  const routed = (store: S, keys: string[], sinks = ['s1']): Promise<string[]> => routedKeys(store, keys, { sinks });

  /** Each of `ids`' deliveries to `sink` given `outcome` now (their last change: now). */
  async function complete(store: S, ids: string[], outcome: DeliveryOutcome, sink = 's1'): Promise<void> {
    for (const id of ids) {
      const d = (await store.deliveries(id)).find((x) => x.sinkId === sink)!;
      await store.completeDelivery(d.id, outcome);
    }
  }

  return {
    openStore,
    routed,
    complete,
    deliveryBundles: h.deliveryBundles,
    /** Sets the fake clock. */
    setClock: (t: number) => {
      clock = t;
    },
    now: () => clock,
    hasBody: async (s: S, id: string) => (await s.getMessage(id, { body: true }))?.body !== undefined,
    hasBundle: async (s: S, id: string) => (await s.getMessage(id, { bundle: true }))?.bundle !== undefined,
  };
}

export const dead: DeliveryOutcome = { status: 'dead', error: { code: 'X', message: 'x', retryable: false } };
export const failedOnce: DeliveryOutcome = {
  status: 'failed',
  error: { code: 'X', message: 'x', retryable: true },
  nextAttemptAt: new Date(T0 + 3_600_000),
};
export const at = (t: number): Date => new Date(t);

/** The tests both stores must pass, under `d` (`describe`, or PostgreSQL's visible skip). */
export function pruneTests<S extends SqlMessageStore>(d: Suite, f: ReturnType<typeof retentionFixture<S>>): void {
  const { openStore, routed, complete, deliveryBundles, setClock, hasBody, hasBundle } = f;

  /** At T0 + 10 the dead message (key K) is deleted; `next`, behind it on K at sink s2, is claimable there. */
  async function expectDeletedThenNextClaimed(store: S, next: string): Promise<void> {
    setClock(T0 + 10);
    expect(await store.prune({ bodiesBefore: at(T0), deleteBefore: at(T0 + 10) })).toEqual({ messages: 0, deleted: 1 });
    expect(
      (await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['s2'] })).map((x) => x.messageId),
    ).toEqual([next]);
  }

  d('prune: bodies', () => {
    it('delivered, filtered and unrouted messages last changed before bodiesBefore lose body and bundles; exactly at it, not', async () => {
      const store = await openStore();
      const [del, held] = await routed(store, ['A', 'B']);
      const [filtered, unrouted] = (await store.insert([msg(), msg()])).map((r) => r.id);
      await store.claimReceived('p', 2, 60_000);
      setClock(T0 + 100);
      await store.recordProcessed([
        { id: filtered, transformed: { bundleJson: JSON.stringify(bundleFor('f')) }, outcome: { status: 'filtered' } },
        { id: unrouted, transformed: { bundleJson: JSON.stringify(bundleFor('u')) }, outcome: { status: 'unrouted' } },
      ]);
      setClock(T0 + 200);
      await complete(store, [del], { status: 'delivered' });
      await complete(store, [held], { status: 'delivered' });
      expect(await deliveryBundles(store, del)).toBe(1);
      // Last changed at T0 + 200: not before T0 + 200.
      expect(await store.prune({ bodiesBefore: at(T0 + 100) })).toEqual({ messages: 0, deleted: 0 });
      expect(await store.prune({ bodiesBefore: at(T0 + 200) })).toEqual({ messages: 2, deleted: 0 });
      for (const id of [filtered, unrouted]) {
        expect(await hasBody(store, id)).toBe(false);
        expect(await hasBundle(store, id)).toBe(false);
      }
      expect(await hasBody(store, del)).toBe(true);
      expect(await store.prune({ bodiesBefore: at(T0 + 201) })).toEqual({ messages: 2, deleted: 0 });
      for (const id of [del, held]) {
        expect(await hasBody(store, id)).toBe(false);
        expect(await hasBundle(store, id)).toBe(false);
        // Metadata, events and the deliveries (without their bundles) stay.
        expect((await store.getMessage(id))!.status).toBe('delivered');
        expect((await store.events(id)).length).toBeGreaterThan(0);
        expect(await store.deliveries(id)).toMatchObject([{ status: 'delivered', sinkId: 's1' }]);
        expect(await deliveryBundles(store, id)).toBe(0);
      }
      // Pruned once: not counted again.
      expect(await store.prune({ bodiesBefore: at(T0 + 10_000) })).toEqual({ messages: 0, deleted: 0 });
    });

    it('never the body of a message still to process or deliver, nor (without deadBefore) a dead or failed one', async () => {
      const store = await openStore();
      const [open1, dead1] = await routed(store, ['A', 'B']);
      await complete(store, [open1], failedOnce);
      await complete(store, [dead1], dead);
      const [received] = (await store.insert([msg()])).map((r) => r.id);
      const [failedMsg] = (await store.insert([msg()])).map((r) => r.id);
      await store.claimReceived('p', 10, 60_000);
      await store.recordProcessed([
        { id: failedMsg, outcome: { status: 'failed', error: { code: 'T', message: 't', retryable: false } } },
      ]);
      setClock(T0 + 10_000);
      expect(await store.prune({ bodiesBefore: at(T0 + 10_000) })).toEqual({ messages: 0, deleted: 0 });
      for (const id of [open1, dead1, received, failedMsg]) expect(await hasBody(store, id)).toBe(true);
      expect((await store.getMessage(dead1))!.status).toBe('dead');
      expect((await store.getMessage(failedMsg))!.status).toBe('failed');
    });

    it('deadBefore: dead and failed messages last changed before it lose their body; exactly at it, not', async () => {
      const store = await openStore();
      const [ok, deadMsg] = await routed(store, ['A', 'B']);
      await complete(store, [ok], { status: 'delivered' });
      const [failedMsg] = (await store.insert([msg()])).map((r) => r.id);
      await store.claimReceived('p', 1, 60_000);
      setClock(T0 + 50);
      await store.recordProcessed([
        { id: failedMsg, outcome: { status: 'failed', error: { code: 'T', message: 't', retryable: false } } },
      ]);
      await complete(store, [deadMsg], dead);
      const both = { bodiesBefore: at(T0), deadBefore: at(T0 + 50) };
      expect(await store.prune(both)).toEqual({ messages: 0, deleted: 0 });
      expect(await store.prune({ ...both, deadBefore: at(T0 + 51) })).toEqual({ messages: 2, deleted: 0 });
      for (const id of [deadMsg, failedMsg]) expect(await hasBody(store, id)).toBe(false);
      expect(await hasBody(store, ok)).toBe(true);
      expect(await store.prune({ bodiesBefore: at(T0 + 1), deadBefore: at(T0 + 51) })).toEqual({
        messages: 1,
        deleted: 0,
      });
    });
  });

  d('prune: deleting', () => {
    it('deleteBefore: messages in a final status last changed before it are deleted with their events, deliveries and content; exactly at it, not', async () => {
      const store = await openStore();
      const [ok, deadMsg, open1] = await routed(store, ['A', 'B', 'C']);
      setClock(T0 + 100);
      await complete(store, [ok], { status: 'delivered' });
      await complete(store, [deadMsg], dead);
      await complete(store, [open1], failedOnce);
      const [received] = (await store.insert([msg()])).map((r) => r.id);
      // Already pruned ones are deleted too.
      expect(await store.prune({ bodiesBefore: at(T0 + 101) })).toEqual({ messages: 1, deleted: 0 });
      expect(await store.prune({ bodiesBefore: at(T0), deleteBefore: at(T0 + 100) })).toEqual({
        messages: 0,
        deleted: 0,
      });
      expect(await store.prune({ bodiesBefore: at(T0), deleteBefore: at(T0 + 101) })).toEqual({
        messages: 0,
        deleted: 2,
      });
      for (const id of [ok, deadMsg]) {
        expect(await store.getMessage(id)).toBeUndefined();
        expect(await store.events(id)).toEqual([]);
        expect(await store.deliveries(id)).toEqual([]);
      }
      for (const id of [open1, received]) expect(await hasBody(store, id)).toBe(true);
      expect(await store.countMessages(['routed', 'received'])).toEqual({ routed: 1, received: 1 });
    });

    it('filtered, unrouted and failed messages are deleted too', async () => {
      const store = await openStore();
      const ids = (await store.insert([msg(), msg(), msg()])).map((r) => r.id);
      await store.claimReceived('p', 3, 60_000);
      await store.recordProcessed([
        { id: ids[0], transformed: { bundleJson: JSON.stringify(bundleFor('f')) }, outcome: { status: 'filtered' } },
        { id: ids[1], transformed: { bundleJson: JSON.stringify(bundleFor('u')) }, outcome: { status: 'unrouted' } },
        { id: ids[2], outcome: { status: 'failed', error: { code: 'T', message: 't', retryable: false } } },
      ]);
      setClock(T0 + 1);
      expect(await store.prune({ bodiesBefore: at(T0), deleteBefore: at(T0 + 1) })).toEqual({
        messages: 0,
        deleted: 3,
      });
      for (const id of ids) expect(await store.getMessage(id)).toBeUndefined();
    });

    it("a deleted dead message's delivery not yet tried (pending) no longer holds its key at its sink", async () => {
      const store = await openStore();
      const [m1] = await routed(store, ['K'], ['s1', 's2']);
      const [m2] = await routed(store, ['K'], ['s2']);
      await complete(store, [m1], dead, 's1');
      await expectDeletedThenNextClaimed(store, m2);
    });

    it("a deleted dead message's open delivery to another sink no longer holds its key there", async () => {
      const store = await openStore();
      // m1 goes to s1 and s2; dead at s1, its s2 delivery still open (failed, due later); m2 has the same key at s2.
      const [m1] = await routed(store, ['K'], ['s1', 's2']);
      const [m2] = await routed(store, ['K'], ['s2']);
      await complete(store, [m1], dead, 's1');
      const [d1] = await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['s2'] });
      expect(d1.messageId).toBe(m1);
      await store.completeDelivery(d1.id, failedOnce);
      expect((await store.getMessage(m1))!.status).toBe('dead');
      expect(await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['s2'] })).toEqual([]);
      await expectDeletedThenNextClaimed(store, m2);
    });
  });

  d('prune: in steps', () => {
    it('a bounded range of messages and a bounded batch per step: the same counts, every message once', async () => {
      const store = await openStore();
      Object.assign(store.pruneStep, { scan: 3, batch: 2 });
      const ids = await routed(
        store,
        Array.from({ length: 11 }, (_, i) => `K${i}`),
      );
      // 0-6 delivered, 7-8 dead, 9-10 open; two received after them.
      await complete(store, ids.slice(0, 7), { status: 'delivered' });
      await complete(store, ids.slice(7, 9), dead);
      await store.insert([msg(), msg()]);
      setClock(T0 + 1);
      const future = at(T0 + 1);
      expect(await store.prune({ bodiesBefore: future })).toEqual({ messages: 7, deleted: 0 });
      expect(await store.prune({ bodiesBefore: future, deadBefore: future })).toEqual({ messages: 2, deleted: 0 });
      for (const id of ids.slice(0, 9)) expect(await hasBody(store, id)).toBe(false);
      for (const id of ids.slice(9)) expect(await hasBody(store, id)).toBe(true);
      expect(await store.prune({ bodiesBefore: future, deleteBefore: future })).toEqual({ messages: 0, deleted: 9 });
      expect(await store.listMessages({ ids })).toHaveLength(2);
      expect(await store.countMessages(['routed', 'received'])).toEqual({ routed: 2, received: 2 });
    });

    it('a full batch in a range continues after its last message, not at the range end', async () => {
      const store = await openStore();
      Object.assign(store.pruneStep, { scan: 100, batch: 2 });
      const ids = await routed(
        store,
        Array.from({ length: 7 }, (_, i) => `K${i}`),
      );
      await complete(store, ids, { status: 'delivered' });
      setClock(T0 + 1);
      expect(await store.prune({ bodiesBefore: at(T0 + 1) })).toEqual({ messages: 7, deleted: 0 });
      for (const id of ids) expect(await hasBody(store, id)).toBe(false);
    });

    it('an empty store, or nothing old enough: nothing pruned', async () => {
      const store = await openStore();
      const all = { bodiesBefore: at(T0 + 1), deadBefore: at(T0 + 1), deleteBefore: at(T0 + 1) };
      expect(await store.prune(all)).toEqual({ messages: 0, deleted: 0 });
      // Messages in every range, none old enough (each step finds nothing: PostgreSQL refuses an empty `IN ()`).
      await routed(store, ['A', 'B']);
      await store.insert([msg()]);
      expect(await store.prune({ bodiesBefore: at(T0), deadBefore: at(T0), deleteBefore: at(T0) })).toEqual({
        messages: 0,
        deleted: 0,
      });
    });
  });

  d('prune: the audit trail', () => {
    it('auditBefore alone deletes audit entries before it (exactly at it: kept); without it none, and no count', async () => {
      const store = await openStore();
      await store.appendAudit([
        { principal: 'cli:a', action: 'replay', result: 'ok', at: at(T0 - 2000) },
        { principal: 'cli:a', action: 'prune', result: 'ok', at: at(T0 - 1000) },
        { principal: 'cli:a', action: 'retry', result: 'ok', at: at(T0) },
      ]);
      // Without auditBefore the result has no auditDeleted at all.
      expect(await store.prune({ bodiesBefore: at(T0) })).toStrictEqual({ messages: 0, deleted: 0 });
      expect(await store.prune({ bodiesBefore: at(T0), auditBefore: at(T0 - 1000) })).toEqual({
        messages: 0,
        deleted: 0,
        auditDeleted: 1,
      });
      expect((await store.auditEntries()).map((e) => e.action)).toEqual(['prune', 'retry']);
      expect(await store.prune({ bodiesBefore: at(T0), auditBefore: at(T0 - 1000) })).toEqual({
        messages: 0,
        deleted: 0,
        auditDeleted: 0,
      });
      expect((await store.prune({ bodiesBefore: at(T0), auditBefore: at(T0 + 1) })).auditDeleted).toBe(2);
      expect(await store.auditEntries()).toEqual([]);
    });
  });
}
