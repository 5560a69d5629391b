import type { MessageStore } from '../../message-store';
import { bundleFor, loopTurnsDuring, msg, routed, type ConformanceContext } from './helpers';

/** Replay and retry. */
export function replayConformance(c: ConformanceContext): void {
  let store: MessageStore;
  beforeEach(() => {
    store = c.store();
  });

  describe('replay and retry', () => {
    it('replays a dead message from the start: received again, old deliveries superseded', async () => {
      const [id] = await routed(store, ['R']);
      const [d] = await store.claimDeliveries('w', 1, 60_000);
      await store.completeDelivery(d.id, { status: 'dead', error: { code: 'X', message: 'x', retryable: false } });
      expect((await store.listMessages({ deliveryStatus: ['dead'], sinkId: 'sink-1' })).map((m) => m.id)).toEqual([id]);
      const replayed = await store.replay({ deliveryStatus: ['dead'] });
      expect(replayed).toEqual([id]);
      expect((await store.getMessage(id))!.status).toBe('received');
      expect(await store.deliveries(id)).toEqual([]);
      expect(await store.deliveries(id, { includeSuperseded: true })).toHaveLength(1);
      expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]);
      const [again] = await store.claimReceived('p', 10, 60_000);
      expect(again.id).toBe(id);
      await store.recordTransformed(id, bundleFor('v2'), 'R');
      await store.recordRouting(id, {
        status: 'routed',
        deliveries: [{ routeId: 'route-1', sinkId: 'sink-1', bundle: bundleFor('v2'), strictOrder: true }],
      });
      const [nd] = await store.claimDeliveries('w', 10, 60_000);
      expect(nd.bundle.id).toBe('v2');
      await store.completeDelivery(nd.id, { status: 'delivered' });
      expect((await store.getMessage(id))!.status).toBe('delivered');
      expect((await store.events(id)).some((e) => e.status === 'received' && e.detail?.startsWith('replay'))).toBe(
        true,
      );
      // replaying a message still waiting to be processed does nothing
      const [fresh] = await store.insert([msg()]);
      expect(await store.replay({ ids: [fresh.id] })).toEqual([]);
    });

    it('replays by filter: source, status, time range, limit', async () => {
      const a = (await store.insert([msg({ sourceId: 'rs-a' })]))[0].id;
      const b = (await store.insert([msg({ sourceId: 'rs-b' })]))[0].id;
      await store.claimReceived('p', 10, 60_000);
      await store.recordFailed(a, { code: 'E', message: 'e' });
      await store.recordFailed(b, { code: 'E', message: 'e' });
      expect(await store.replay({ status: ['failed'], sourceId: 'rs-b' })).toEqual([b]);
      expect(await store.replay({ status: ['failed'], since: new Date(Date.now() + 60_000) })).toEqual([]);
      expect(await store.replay({ status: ['failed'], limit: 1 })).toEqual([a]);
      expect((await store.getMessage(a))!.error).toBeUndefined();
    });

    it('retryDeliveries re-queues dead deliveries with their bundle, without transforming again', async () => {
      const [id] = await routed(store, ['T']);
      const [d] = await store.claimDeliveries('w', 1, 60_000);
      await store.completeDelivery(d.id, { status: 'dead', error: { code: 'X', message: 'x', retryable: false } });
      expect(await store.retryDeliveries({ sinkId: 'other' })).toEqual([]);
      expect(await store.retryDeliveries({ sinkId: 'sink-1' })).toEqual([d.id]);
      expect((await store.getMessage(id))!.status).toBe('routed');
      const [again] = await store.claimDeliveries('w', 1, 60_000);
      expect(again).toMatchObject({ id: d.id, attempts: 0 });
      expect(again.bundle).toEqual(d.bundle);
    });

    it("counts a paused sink's probes among the attempts and apart (probeAttempts); a retry clears both", async () => {
      const [id] = await routed(store, ['P']);
      const err = { code: 'NET', message: 'refused', retryable: true };
      const due = () => new Date(Date.now() - 1000);
      let [d] = await store.claimDeliveries('w', 1, 60_000);
      await store.completeDeliveries(
        [{ deliveryId: d.id, outcome: { status: 'failed', error: err, nextAttemptAt: due() } }],
        { owner: 'w' },
      );
      for (let i = 0; i < 2; i++) {
        [d] = await store.claimDeliveries('w', 1, 60_000);
        await store.completeDeliveries(
          [{ deliveryId: d.id, outcome: { status: 'failed', error: err, nextAttemptAt: due(), probe: true } }],
          { owner: 'w' },
        );
      }
      [d] = await store.claimDeliveries('w', 1, 60_000);
      expect(d).toMatchObject({ attempts: 3, probeAttempts: 2 });
      await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'dead', error: err, probe: true } }], {
        owner: 'w',
      });
      expect((await store.deliveries(id))[0]).toMatchObject({ status: 'dead', attempts: 4, probeAttempts: 3 });
      expect(
        (await store.events(id))
          .filter((e) => e.status.startsWith('delivery:'))
          .map((e) => `${e.status} ${e.detail ?? ''}`.trim()),
      ).toEqual([
        'delivery:pending',
        'delivery:failed NET',
        'delivery:failed NET (probe)',
        'delivery:failed NET (probe)',
        'delivery:dead NET (probe)',
      ]);
      await store.retryDeliveries({ sinkId: 'sink-1' });
      const [again] = await store.claimDeliveries('w', 1, 60_000);
      expect(again.attempts).toBe(0);
      expect(again.probeAttempts).toBeUndefined();
    });

    it('replays and retries in steps (each its own transaction, the event loop free between): every one, in order, once', async () => {
      const bulk = store as unknown as { bulkStep?: number };
      if (bulk.bulkStep !== undefined) bulk.bulkStep = 2;
      const ids = await routed(store, ['S1', 'S2', 'S3', 'S4', 'S5'], { sinks: ['sink-1', 'sink-2'] });
      const ds = await store.claimDeliveries('w', 20, 60_000);
      await store.completeDeliveries(
        ds.map((d) => ({
          deliveryId: d.id,
          outcome: { status: 'dead', error: { code: 'X', message: 'x', retryable: false } },
        })),
      );
      const { result: retried, turns } = await loopTurnsDuring(() => store.retryDeliveries({ sinkId: 'sink-2' }));
      expect(retried).toEqual(ds.filter((d) => d.sinkId === 'sink-2').map((d) => d.id));
      if (bulk.bulkStep !== undefined) expect(turns).toBeGreaterThan(2);
      for (const id of ids) {
        expect((await store.getMessage(id))!.status).toBe('routed');
        expect((await store.events(id)).slice(-2).map((e) => e.status)).toEqual(['delivery:pending', 'routed']);
      }
      expect(await store.retryDeliveries({ sinkId: 'sink-2' })).toEqual([]);
      expect(await store.replay({ ids, status: ['dead'] })).toEqual([]);
      expect(await store.replay({ ids })).toEqual(ids);
      for (const id of ids) {
        expect((await store.getMessage(id))!.status).toBe('received');
        expect((await store.events(id)).at(-1)).toMatchObject({
          status: 'received',
          detail: 'replay (2 deliveries superseded)',
        });
        expect(await store.deliveries(id)).toEqual([]);
      }
      expect(await store.replay({ ids })).toEqual([]);
    });
  });
}
