import type { MessageStore } from '../../message-store';
import { bundleFor, msg, sleep, type ConformanceContext } from './helpers';

/** Claims for processing, transform results, routing and failure. */
export function processingConformance(c: ConformanceContext): void {
  let store: MessageStore;
  beforeEach(() => {
    store = c.store();
  });

  describe('processing', () => {
    it('claims received messages oldest first, leased to one owner, with bodies', async () => {
      const ids = (await store.insert([msg(), msg(), msg()])).map((r) => r.id);
      const a = await store.claimReceived('a', 2, 60_000);
      expect(a.map((m) => m.id)).toEqual(ids.slice(0, 2));
      expect(a[0].body).toBeInstanceOf(Buffer);
      const b = await store.claimReceived('b', 10, 60_000);
      expect(b.map((m) => m.id)).toEqual([ids[2]]);
      expect(await store.claimReceived('c', 10, 60_000)).toEqual([]);
    });

    it('gives an expired lease to another owner (also a message left transformed)', async () => {
      const [r1, r2] = await store.insert([msg(), msg()]);
      await store.claimReceived('crashed', 10, 400);
      await store.recordTransformed(r2.id, bundleFor('x'), 'k');
      expect(await store.claimReceived('other', 10, 60_000)).toEqual([]);
      await sleep(450);
      const again = await store.claimReceived('other', 10, 60_000);
      expect(again.map((m) => m.id)).toEqual([r1.id, r2.id]);
    });

    it('fails a message claimed more than maxAttempts times without being recorded; a replay starts it afresh', async () => {
      const [r] = await store.insert([msg()]);
      for (let i = 0; i < 3; i++) {
        expect((await store.claimReceived('dies', 10, 40, { maxAttempts: 3 })).map((m) => m.id)).toEqual([r.id]);
        await sleep(60);
      }
      expect(await store.claimReceived('dies', 10, 40, { maxAttempts: 3 })).toEqual([]);
      const m = (await store.getMessage(r.id))!;
      expect(m.status).toBe('failed');
      expect(m.error?.code).toBe('FERRY_E_INTERNAL_PROCESSING_ATTEMPTS');
      expect((await store.events(r.id)).map((e) => e.status)).toEqual(['received', 'failed']);
      expect(await store.replay({ ids: [r.id] })).toEqual([r.id]);
      expect((await store.claimReceived('p', 10, 60_000, { maxAttempts: 3 })).map((x) => x.id)).toEqual([r.id]);
    });

    it('records event rows of their own (the ACK sent): calls during a write go together, none lost, close waits for them', async () => {
      const ids = (await store.insert(Array.from({ length: 12 }, () => msg()))).map((r) => r.id);
      const calls: Promise<void>[] = [];
      for (const [i, id] of ids.entries()) {
        calls.push(store.recordEvents!([{ messageId: id, status: 'ack', detail: `MSA|AA|${i}` }]));
        if (i % 3 === 2) await new Promise((r) => setImmediate(r));
      }
      await Promise.all(calls);
      for (const [i, id] of ids.entries())
        expect((await store.events(id)).map((e) => [e.status, e.detail])).toEqual([
          ['received', undefined],
          ['ack', `MSA|AA|${i}`],
        ]);
      // A read for people sees rows recorded before it, also those still queued behind a write.
      void store.recordEvents!([{ messageId: ids[0], status: 'ack', detail: 'again' }]);
      const queued = store.recordEvents!([{ messageId: ids[1], status: 'ack', detail: 'again' }]);
      expect((await store.events(ids[1])).map((e) => e.detail)).toContain('again');
      await queued;
      // Closing writes what is queued first.
      const late = [0, 1, 2].map((i) =>
        store.recordEvents!([{ messageId: ids[2], status: 'ack', detail: `late ${i}` }]),
      );
      await store.close();
      await Promise.all(late);
      await store.open();
      expect((await store.events(ids[2])).map((e) => e.detail).filter((d) => d?.startsWith('late'))).toEqual([
        'late 0',
        'late 1',
        'late 2',
      ]);
    });

    it('gathers event rows recorded one at a time, as the ACKs of a feed sending one message at a time, into one write', async () => {
      const ids = (await store.insert(Array.from({ length: 10 }, () => msg()))).map((r) => r.id);
      // Each write is a transaction (on SQLite a commit on the engine's thread); before the
      // linger, one ACK a millisecond was one write each.
      const writes = jest.spyOn(store as unknown as { write: (...a: unknown[]) => Promise<unknown> }, 'write');
      try {
        const calls: Promise<void>[] = [];
        for (const [i, id] of ids.entries()) {
          calls.push(store.recordEvents!([{ messageId: id, status: 'ack', detail: `MSA|AA|${i}` }]));
          await sleep(1);
        }
        await Promise.all(calls);
        expect(writes.mock.calls.length).toBeLessThanOrEqual(5);
      } finally {
        writes.mockRestore();
      }
      for (const [i, id] of ids.entries())
        expect((await store.events(id)).map((e) => e.detail)).toContain(`MSA|AA|${i}`);
    });

    it('records transformed, failed, unrouted, filtered and routed, each as an event', async () => {
      const [t, f, u, fi, ro] = (await store.insert([msg(), msg(), msg(), msg(), msg()])).map((r) => r.id);
      await store.claimReceived('p', 10, 60_000);
      for (const id of [t, u, fi, ro]) await store.recordTransformed(id, bundleFor(id), undefined);
      const stT = await store.getMessage(t, { bundle: true });
      expect(stT!.status).toBe('transformed');
      expect(stT!.bundle).toEqual(bundleFor(t));
      await store.recordFailed(f, { code: 'FERRY_E_INPUT_TRANSFORM_FAILED', message: 'bad PID', retryable: false });
      await store.recordRouting(u, { status: 'unrouted' });
      await store.recordRouting(fi, { status: 'filtered', detail: 'route-1: test patient' });
      await store.recordRouting(ro, {
        status: 'routed',
        deliveries: [{ routeId: 'r', sinkId: 's1', bundle: bundleFor(ro), strictOrder: true }],
      });
      const status = async (id: string) => (await store.getMessage(id))!.status;
      expect(await status(f)).toBe('failed');
      expect((await store.getMessage(f))!.error).toMatchObject({
        code: 'FERRY_E_INPUT_TRANSFORM_FAILED',
        retryable: false,
      });
      expect(await status(u)).toBe('unrouted');
      expect(await status(fi)).toBe('filtered');
      expect(await status(ro)).toBe('routed');
      expect((await store.events(f)).map((e) => e.status)).toEqual(['received', 'failed']);
      expect((await store.events(fi)).map((e) => [e.status, e.detail])).toEqual([
        ['received', undefined],
        ['transformed', undefined],
        ['filtered', 'route-1: test patient'],
      ]);
      expect((await store.events(ro)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'routed',
        'delivery:pending',
      ]);
      const d = await store.deliveries(ro);
      expect(d).toHaveLength(1);
      expect(d[0]).toMatchObject({
        messageId: ro,
        routeId: 'r',
        sinkId: 's1',
        status: 'pending',
        attempts: 0,
        strictOrder: true,
      });
      // ordering key falls back to the source when none is given
      expect(d[0].orderingKey).toBe('source:src-a');
      // nothing left to claim: processed messages are not claimed again
      expect(await store.claimReceived('p2', 10, 60_000)).toEqual([]);
      // may reject at once, or (write-behind) on the next transition of that message
      await store.recordTransformed('missing', bundleFor('m'), 'k').catch(() => undefined);
      await expect(store.recordRouting('missing', { status: 'unrouted' })).rejects.toMatchObject({ kind: 'internal' });
    });

    it('routes a message once: a second processor whose lease ran out cannot route it again', async () => {
      const [r] = await store.insert([msg()]);
      await store.claimReceived('slow', 1, 60_000);
      const route = {
        status: 'routed' as const,
        deliveries: [{ routeId: 'r', sinkId: 's', bundle: bundleFor('b'), strictOrder: true }],
      };
      await store.recordTransformed(r.id, bundleFor('b'), 'k');
      await store.recordRouting(r.id, route);
      // the slow first processor finishes later
      await store.recordTransformed(r.id, bundleFor('b'), 'k');
      await store.recordRouting(r.id, route);
      await store.recordFailed(r.id, { code: 'X', message: 'late' });
      expect(await store.deliveries(r.id)).toHaveLength(1);
      expect((await store.getMessage(r.id))!.status).toBe('routed');
      expect((await store.events(r.id)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'routed',
        'delivery:pending',
      ]);
    });

    it('a routing with no deliveries leaves the message delivered', async () => {
      const [r] = await store.insert([msg()]);
      await store.claimReceived('p', 1, 60_000);
      await store.recordTransformed(r.id, bundleFor('x'), 'k');
      await store.recordRouting(r.id, { status: 'routed', deliveries: [] });
      expect((await store.getMessage(r.id))!.status).toBe('delivered');
    });
  });
}
