import type { Bundle } from '@medplum/fhirtypes';
import { issuesOf, type DataQualityIssue } from '../../../model/message';
import type { MessageStore } from '../../message-store';
import { bundleFor, msg, routed, sleep, type ConformanceContext } from './helpers';

/** Deliveries: claims, leases, outcomes, ordering, data-quality issues. */
export function deliveriesConformance(c: ConformanceContext): void {
  const { h, extra } = c;
  let store: MessageStore;
  beforeEach(() => {
    store = c.store();
  });

  describe('deliveries', () => {
    it('delivers the bundle each route gave, with the message, and moves the message to delivered', async () => {
      const [r] = await store.insert([msg()]);
      await store.claimReceived('p', 1, 60_000);
      const canonical = bundleFor('canonical');
      const changed: Bundle = { ...bundleFor('changed'), meta: { tag: [{ code: 'x' }] } };
      await store.recordTransformed(r.id, canonical, 'k');
      await store.recordRouting(r.id, {
        status: 'routed',
        deliveries: [
          { routeId: 'r1', sinkId: 'a', bundle: canonical, strictOrder: true },
          { routeId: 'r2', sinkId: 'b', bundle: changed, strictOrder: false },
        ],
      });
      const c = await store.claimDeliveries('w', 10, 60_000);
      expect(c).toHaveLength(2);
      const a = c.find((d) => d.sinkId === 'a')!;
      const b = c.find((d) => d.sinkId === 'b')!;
      expect(a.bundle).toEqual(canonical);
      expect(b.bundle).toEqual(changed);
      expect(a.message.body).toBeInstanceOf(Buffer);
      expect(a.message.id).toBe(r.id);
      expect(a.attempts).toBe(0);
      expect(a.firstAttemptAt).toBeInstanceOf(Date);
      expect(await store.claimDeliveries('w2', 10, 60_000)).toEqual([]); // leased
      await store.completeDelivery(a.id, { status: 'delivered' });
      expect((await store.getMessage(r.id))!.status).toBe('routed');
      await store.completeDelivery(b.id, { status: 'delivered' });
      expect((await store.getMessage(r.id))!.status).toBe('delivered');
      const ds = await store.deliveries(r.id);
      expect(ds.every((d) => d.status === 'delivered' && d.attempts === 1 && d.deliveredAt instanceof Date)).toBe(true);
      expect((await store.events(r.id)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'routed',
        'delivery:pending',
        'delivery:pending',
        'delivery:delivered',
        'delivery:delivered',
        'delivered',
      ]);
    });

    it('claims at most the limit asked for, oldest first, whatever the limit (3, 5, 1)', async () => {
      const stored = await store.insert([msg(), msg(), msg(), msg(), msg(), msg(), msg(), msg(), msg()]);
      await store.claimReceived('p', 9, 60_000);
      for (const r of stored) {
        await store.recordTransformed(r.id, bundleFor('x'), `k-${r.id}`);
        await store.recordRouting(r.id, {
          status: 'routed',
          deliveries: [{ routeId: 'r', sinkId: 'a', bundle: bundleFor('x'), strictOrder: false }],
        });
      }
      const first = await store.claimDeliveries('w', 3, 60_000);
      const second = await store.claimDeliveries('w', 5, 60_000);
      const third = await store.claimDeliveries('w', 1, 60_000);
      expect([first.length, second.length, third.length]).toEqual([3, 5, 1]);
      expect([...first, ...second, ...third].map((d) => d.messageId)).toEqual(stored.map((r) => r.id));
      expect(await store.claimDeliveries('w', 3, 60_000)).toEqual([]);
    });

    it('records whole processing results at once (bundles as JSON text), and claims per sink', async () => {
      const [r, f] = await store.insert([msg(), msg()]);
      await store.claimReceived('p', 2, 60_000);
      const canonical = bundleFor('canonical');
      const changed: Bundle = { ...bundleFor('changed'), meta: { tag: [{ code: 'y' }] } };
      await store.recordProcessed([
        {
          id: r.id,
          transformed: { bundleJson: JSON.stringify(canonical), orderingKey: 'k1' },
          outcome: {
            status: 'routed',
            deliveries: [
              { routeId: 'r1', sinkId: 'a', strictOrder: true, unchanged: true },
              { routeId: 'r2', sinkId: 'b', strictOrder: true, bundleJson: JSON.stringify(changed) },
            ],
          },
        },
        { id: f.id, outcome: { status: 'failed', error: { code: 'INPUT_X', message: 'bad', retryable: false } } },
      ]);
      expect((await store.getMessage(f.id))!.status).toBe('failed');
      expect((await store.getMessage(r.id, { bundle: true }))!.bundle).toEqual(canonical);
      expect(await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: [] })).toEqual([]);
      const [b] = await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['b'] });
      expect(b.sinkId).toBe('b');
      expect(JSON.parse(b.bundleJson)).toEqual(changed);
      expect(b.bundle).toEqual(changed);
      const rest = await store.claimDeliveries('w', 10, 60_000, undefined, { excludeSinkIds: ['b'] });
      expect(rest.map((d) => d.sinkId)).toEqual(['a']);
      expect(rest[0].bundleJson).toBe(JSON.stringify(canonical));
    });

    it('stores data-quality issues as one event each, before the outcome, set-wise and one by one; a replay starts over', async () => {
      const [a, b, c] = await store.insert([msg(), msg(), msg()]);
      await store.claimReceived('p', 3, 60_000);
      const text = JSON.stringify(bundleFor('dq'));
      const pid7: DataQualityIssue = {
        severity: 'warning',
        location: 'PID-7',
        occurrence: 1,
        sequence: 3,
        path: 'Patient.birthDate',
        code: 'invalid-date',
        text: 'not a valid HL7 date/time',
        hl7ErrorCode: '102',
      };
      const obx5: DataQualityIssue = {
        severity: 'error',
        location: 'OBX-5',
        occurrence: 2,
        code: 'invalid-number',
        text: 'not a number (NM)',
      };
      // a and b set-wise (one batch); c alone after an unknown id forces the one-by-one path
      await store.recordProcessed([
        {
          id: a.id,
          transformed: { bundleJson: text, orderingKey: 'k' },
          outcome: { status: 'unrouted' },
          issues: [pid7],
        },
        {
          id: b.id,
          outcome: {
            status: 'failed',
            error: { code: 'FERRY_E_INPUT_DATA_QUALITY', message: 'OBX-5 (invalid-number)', retryable: false },
          },
          issues: [pid7, obx5],
        },
      ]);
      await store.recordProcessed([
        { id: 'no-such-message', outcome: { status: 'unrouted' } },
        {
          id: c.id,
          transformed: { bundleJson: text, orderingKey: 'k' },
          outcome: { status: 'unrouted' },
          issues: [obx5],
        },
      ]);
      expect((await store.events(a.id)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'data-quality',
        'unrouted',
      ]);
      expect(issuesOf(await store.events(a.id))).toEqual([pid7]);
      expect((await store.events(b.id)).map((e) => e.status)).toEqual([
        'received',
        'data-quality',
        'data-quality',
        'failed',
      ]);
      expect(issuesOf(await store.events(b.id))).toEqual([pid7, obx5]);
      expect(issuesOf(await store.events(c.id))).toEqual([obx5]);
      // replayed and processed clean: no issues now (the old ones stay in the history)
      await store.replay({ ids: [b.id] });
      await store.claimReceived('p', 3, 60_000);
      await store.recordProcessed([
        { id: b.id, transformed: { bundleJson: text, orderingKey: 'k' }, outcome: { status: 'unrouted' } },
      ]);
      expect(issuesOf(await store.events(b.id))).toEqual([]);
      expect((await store.events(b.id)).filter((e) => e.status === 'data-quality')).toHaveLength(2);
    });

    it('records a batch of processing results set-wise: every outcome, its events, a stale result dropped, an unknown id reported alone', async () => {
      const [a, b, c, d, e] = await store.insert([msg(), msg(), msg(), msg(), msg()]);
      await store.claimReceived('p', 5, 60_000);
      const text = JSON.stringify(bundleFor('t'));
      // d is routed already (a second processor's late result must not route it again).
      await store.recordProcessed([
        { id: d.id, transformed: { bundleJson: text, orderingKey: 'kd' }, outcome: { status: 'unrouted' } },
      ]);
      await store.recordProcessed([
        {
          id: a.id,
          transformed: { bundleJson: text, orderingKey: 'ka' },
          outcome: {
            status: 'routed',
            deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: true, unchanged: true }],
          },
        },
        { id: b.id, transformed: { bundleJson: text }, outcome: { status: 'filtered', detail: 'r: filter' } },
        { id: c.id, outcome: { status: 'failed', error: { code: 'INPUT_BAD', message: 'bad', retryable: false } } },
        {
          id: d.id,
          transformed: { bundleJson: text, orderingKey: 'kd' },
          outcome: {
            status: 'routed',
            deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: true, unchanged: true }],
          },
        },
      ]);
      // An unknown id fails alone (reported by id); the others of its batch are recorded.
      const { failed } = await store.recordProcessed([
        { id: 'no-such-message', transformed: { bundleJson: text }, outcome: { status: 'unrouted' } },
        {
          id: e.id,
          transformed: { bundleJson: text, orderingKey: 'ke' },
          outcome: {
            status: 'routed',
            deliveries: [
              {
                routeId: 'r',
                sinkId: 's',
                strictOrder: false,
                bundleJson: '{"resourceType":"Bundle","type":"collection"}',
              },
            ],
          },
        },
      ]);
      expect(failed).toEqual([
        {
          id: 'no-such-message',
          error: expect.objectContaining({ code: expect.stringContaining('INTERNAL_STORE_NO_MESSAGE') }),
        },
      ]);
      const [de] = await store.deliveries(e.id);
      expect(de.orderingKey).toBe('ke');
      const claimedE = (await store.claimDeliveries('w', 10, 60_000)).find((x) => x.messageId === e.id)!;
      expect(claimedE.bundleJson).toBe('{"resourceType":"Bundle","type":"collection"}');
      expect((await store.getMessage(a.id, { bundle: true }))!.bundle).toEqual(bundleFor('t'));
      expect((await store.events(a.id)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'routed',
        'delivery:pending',
      ]);
      expect((await store.deliveries(a.id)).map((x) => `${x.sinkId}:${x.status}:${x.orderingKey}`)).toEqual([
        's:pending:ka',
      ]);
      expect((await store.getMessage(b.id))!.status).toBe('filtered');
      expect((await store.events(b.id)).map((e) => `${e.status}${e.detail ? `(${e.detail})` : ''}`)).toEqual([
        'received',
        'transformed',
        'filtered(r: filter)',
      ]);
      const fc = (await store.getMessage(c.id))!;
      expect(fc.status).toBe('failed');
      expect(fc.error?.code).toBe('INPUT_BAD');
      expect((await store.events(c.id)).map((e) => e.status)).toEqual(['received', 'failed']);
      expect((await store.getMessage(d.id))!.status).toBe('unrouted');
      expect(await store.deliveries(d.id)).toEqual([]);
    });

    it('records several delivery outcomes at once; an unknown id is reported and the others still recorded', async () => {
      const [a, b] = await store.insert([msg(), msg()]);
      await store.claimReceived('p', 2, 60_000);
      const plan = (sinkIds: string[]) => ({
        status: 'routed' as const,
        deliveries: sinkIds.map((sinkId) => ({ routeId: 'r', sinkId, strictOrder: false, bundle: bundleFor('x') })),
      });
      await store.recordTransformed(a.id, bundleFor('x'), 'ka');
      await store.recordRouting(a.id, plan(['s1', 's2']));
      await store.recordTransformed(b.id, bundleFor('x'), 'kb');
      await store.recordRouting(b.id, plan(['s1']));
      const ds = await store.claimDeliveries('w', 10, 60_000);
      const of = (m: string, sink: string) => ds.find((d) => d.messageId === m && d.sinkId === sink)!.id;
      await expect(
        store.completeDeliveries([
          { deliveryId: of(a.id, 's1'), outcome: { status: 'delivered' } },
          { deliveryId: 'no-such-delivery', outcome: { status: 'delivered' } },
          {
            deliveryId: of(a.id, 's2'),
            outcome: { status: 'dead', error: { code: 'E', message: 'e', retryable: false } },
          },
          { deliveryId: of(b.id, 's1'), outcome: { status: 'delivered' } },
        ]),
      ).rejects.toMatchObject({
        code: expect.stringContaining('INTERNAL_STORE_NO_DELIVERY'),
        details: { deliveryIds: ['no-such-delivery'] },
      });
      expect((await store.getMessage(a.id))!.status).toBe('dead');
      expect((await store.getMessage(b.id))!.status).toBe('delivered');
      expect((await store.events(b.id)).map((e) => e.status).slice(-2)).toEqual(['delivery:delivered', 'delivered']);
      expect((await store.deliveries(a.id)).map((d) => `${d.sinkId}:${d.status}:${d.attempts}`).sort()).toEqual([
        's1:delivered:1',
        's2:dead:1',
      ]);
    });

    it('an unchanged route bundle is delivered as the message bundle; one changed in place is delivered as changed', async () => {
      const [r] = await store.insert([msg()]);
      await store.claimReceived('p', 1, 60_000);
      const canonical = bundleFor('canonical');
      await store.recordTransformed(r.id, canonical, 'k');
      const mutated = bundleFor('canonical');
      const [s] = await store.insert([msg()]);
      await store.claimReceived('p', 1, 60_000);
      await store.recordTransformed(s.id, mutated, 'k2');
      mutated.meta = { tag: [{ code: 'step-changed-it' }] }; // a step changed the very object in place
      await store.recordRouting(r.id, {
        status: 'routed',
        deliveries: [{ routeId: 'r1', sinkId: 'a', bundle: canonical, strictOrder: false, unchanged: true }],
      });
      await store.recordRouting(s.id, {
        status: 'routed',
        deliveries: [{ routeId: 'r1', sinkId: 'a', bundle: mutated, strictOrder: false }],
      });
      const c = await store.claimDeliveries('w', 10, 60_000);
      expect(c.find((d) => d.messageId === r.id)!.bundle).toEqual(bundleFor('canonical'));
      expect(c.find((d) => d.messageId === s.id)!.bundle.meta).toEqual({ tag: [{ code: 'step-changed-it' }] });
      expect((await store.getMessage(s.id, { bundle: true }))!.bundle!.meta).toBeUndefined();
      expect((await store.events(r.id)).map((e) => e.status)).toEqual([
        'received',
        'transformed',
        'routed',
        'delivery:pending',
      ]);
    });

    it('retries a failed delivery when due, counts attempts, and dead-letters', async () => {
      const [id] = await routed(store, ['k1']);
      const [d] = await store.claimDeliveries('w', 10, 60_000);
      const at = new Date(Date.now() + 5_000);
      await store.completeDelivery(d.id, {
        status: 'failed',
        error: { code: 'FERRY_E_DELIVERY_HTTP_503', message: '503', retryable: true },
        nextAttemptAt: at,
      });
      const [f] = await store.deliveries(id);
      expect(f).toMatchObject({ status: 'failed', attempts: 1, lastError: { code: 'FERRY_E_DELIVERY_HTTP_503' } });
      expect(f.nextAttemptAt!.getTime()).toBe(at.getTime());
      expect((await store.nextDueAt())!.getTime()).toBe(at.getTime());
      // Of some sinks only (the dispatcher leaves out the ones it is not claiming for).
      expect((await store.nextDueAt({ sinkIds: ['sink-1'] }))!.getTime()).toBe(at.getTime());
      expect(await store.nextDueAt({ sinkIds: ['sink-2'] })).toBeUndefined();
      expect(await store.nextDueAt({ sinkIds: [] })).toBeUndefined();
      expect(await store.nextDueAt({ excludeSinkIds: ['sink-1'] })).toBeUndefined();
      expect((await store.nextDueAt({ excludeSinkIds: ['sink-2'] }))!.getTime()).toBe(at.getTime());
      expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]);
      expect(await store.backlog()).toMatchObject({ deliveriesDue: 0, deliveriesScheduled: 1 });
      const later = await store.claimDeliveries('w', 10, 60_000, new Date(at.getTime() + 1));
      expect(later.map((x) => x.id)).toEqual([d.id]);
      // Leased (its retry under way): not a next due time to wake for.
      expect(await store.nextDueAt()).toBeUndefined();
      expect(later[0].attempts).toBe(1);
      expect(later[0].firstAttemptAt.getTime()).toBe(d.firstAttemptAt.getTime());
      await store.completeDelivery(d.id, {
        status: 'dead',
        error: { code: 'FERRY_E_DELIVERY_HTTP_400', message: '400', retryable: false },
      });
      expect((await store.deliveries(id))[0]).toMatchObject({ status: 'dead', attempts: 2 });
      expect((await store.getMessage(id))!.status).toBe('dead');
      expect(await store.nextDueAt()).toBeUndefined();
      expect((await store.stats()).deliveries).toMatchObject({ dead: 1 });
    });

    it('strict order: per (key, sink) only the oldest open delivery is eligible; other keys and sinks run in parallel', async () => {
      const ids = await routed(store, ['A', 'B', 'A', 'B', 'A'], { sinks: ['s1', 's2'] });
      const first = await store.claimDeliveries('w', 100, 60_000);
      // A1 and B1 for each sink
      expect(
        first.map((d) => `${d.messageId === ids[0] ? 'A1' : d.messageId === ids[1] ? 'B1' : '?'}:${d.sinkId}`).sort(),
      ).toEqual(['A1:s1', 'A1:s2', 'B1:s1', 'B1:s2']);
      // A1 fails on s1: A3 on s1 is held, A3 on s2 proceeds once A1:s2 is delivered
      const a1s1 = first.find((d) => d.messageId === ids[0] && d.sinkId === 's1')!;
      await store.completeDelivery(a1s1.id, {
        status: 'failed',
        error: { code: 'X', message: 'x' },
        nextAttemptAt: new Date(Date.now() + 60_000),
      });
      for (const d of first) if (d !== a1s1) await store.completeDelivery(d.id, { status: 'delivered' });
      const second = await store.claimDeliveries('w', 100, 60_000);
      expect(
        second.map((d) => `${d.messageId === ids[2] ? 'A3' : d.messageId === ids[3] ? 'B4' : '?'}:${d.sinkId}`).sort(),
      ).toEqual(['A3:s2', 'B4:s1', 'B4:s2']);
      for (const d of second) await store.completeDelivery(d.id, { status: 'delivered' });
      const third = await store.claimDeliveries('w', 100, 60_000);
      expect(third.map((d) => `${d.messageId === ids[4] ? 'A5' : '?'}:${d.sinkId}`)).toEqual(['A5:s2']);
      await store.completeDelivery(third[0].id, { status: 'delivered' });
      // A1:s1 due again -> delivered -> A3:s1, then A5:s1
      const retry = await store.claimDeliveries('w', 100, 60_000, new Date(Date.now() + 61_000));
      expect(retry.map((d) => d.id)).toEqual([a1s1.id]);
      await store.completeDelivery(a1s1.id, { status: 'delivered' });
      const a3 = await store.claimDeliveries('w', 100, 60_000);
      expect(a3.map((d) => [d.messageId, d.sinkId])).toEqual([[ids[2], 's1']]);
      await store.completeDelivery(a3[0].id, { status: 'delivered' });
      const a5 = await store.claimDeliveries('w', 100, 60_000);
      expect(a5.map((d) => [d.messageId, d.sinkId])).toEqual([[ids[4], 's1']]);
    });

    it('an in-flight (leased) delivery holds later ones of its key; a dead one does not', async () => {
      const ids = await routed(store, ['K', 'K', 'K']);
      const [d1] = await store.claimDeliveries('w', 1, 60_000);
      expect(d1.messageId).toBe(ids[0]);
      expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]);
      await store.completeDelivery(d1.id, { status: 'dead', error: { code: 'X', message: 'x', retryable: false } });
      const [d2] = await store.claimDeliveries('w', 10, 60_000);
      expect(d2.messageId).toBe(ids[1]);
    });

    it("a deleted dead message's open delivery no longer holds its key (retention)", async () => {
      const [a] = await routed(store, ['K'], { sinks: ['s1', 's2'] });
      const [b] = await routed(store, ['K'], { sink: 's2' });
      const first = await store.claimDeliveries('w', 10, 60_000);
      expect(first.map((d) => `${d.messageId === a ? 'A' : 'B'}:${d.sinkId}`).sort()).toEqual(['A:s1', 'A:s2']);
      const error = { code: 'E', message: 'e', retryable: false };
      await store.completeDelivery(first.find((d) => d.sinkId === 's1')!.id, { status: 'dead', error });
      await store.completeDelivery(first.find((d) => d.sinkId === 's2')!.id, {
        status: 'failed',
        error,
        nextAttemptAt: new Date(Date.now() + 3_600_000),
      });
      expect((await store.getMessage(a))!.status).toBe('dead');
      expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]); // B:s2 held behind A:s2
      expect(
        await store.prune({ bodiesBefore: new Date(0), deleteBefore: new Date(Date.now() + 60_000) }),
      ).toMatchObject({ deleted: 1 });
      expect((await store.claimDeliveries('w', 10, 60_000)).map((d) => [d.messageId, d.sinkId])).toEqual([[b, 's2']]);
    });

    it('ordering none: later deliveries are not held', async () => {
      const ids = await routed(store, ['N', 'N', 'N'], { strict: false });
      const all = await store.claimDeliveries('w', 10, 60_000);
      expect(all.map((d) => d.messageId)).toEqual(ids);
    });

    it('a strict delivery waits for an older message of its key (or of unknown key) still being processed', async () => {
      const [older] = await store.insert([msg()]);
      const [newer] = await store.insert([msg()]);
      const claimed = await store.claimReceived('p', 10, 60_000);
      expect(claimed).toHaveLength(2);
      // the newer one is routed first (e.g. by another instance)
      await store.recordTransformed(newer.id, bundleFor('n'), 'P1');
      await store.recordRouting(newer.id, {
        status: 'routed',
        deliveries: [{ routeId: 'r', sinkId: 's', bundle: bundleFor('n'), strictOrder: true }],
      });
      expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]); // older: key unknown yet
      await store.recordTransformed(older.id, bundleFor('o'), 'P2');
      expect((await store.getMessage(older.id))!.status).toBe('transformed'); // its key is now known
      expect((await store.claimDeliveries('w', 10, 60_000)).map((d) => d.messageId)).toEqual([newer.id]); // different key
    });

    it('an expired delivery lease is claimed again by another worker', async () => {
      await routed(store, ['L']);
      const [d] = await store.claimDeliveries('crashed', 1, 300);
      await sleep(350);
      const [again] = await store.claimDeliveries('other', 1, 60_000);
      expect(again.id).toBe(d.id);
    });

    it("an owner's late outcome after its lease was taken over changes nothing; its own, even after expiry, counts", async () => {
      const [m1, m2] = await routed(store, ['F1', 'F2']);
      const [d1, d2] = await store.claimDeliveries('slow', 2, 300);
      await sleep(350);
      // d1 is taken over by another instance, which delivers it; d2 is left alone (expired, not reclaimed).
      const [again] = await store.claimDeliveries('fast', 1, 60_000, undefined, {});
      expect(again.id).toBe(d1.id);
      const dead = { status: 'dead' as const, error: { code: 'E_LATE', message: 'timed out', retryable: false } };
      // The slow instance's outcome for d1 arrives while the other still holds it: not recorded.
      const r1 = await store.completeDeliveries([{ deliveryId: d1.id, outcome: dead }], { owner: 'slow' });
      expect(r1.stale).toEqual([{ deliveryId: d1.id, status: 'pending', leaseOwner: 'fast' }]);
      expect((await store.deliveries(m1))[0]).toMatchObject({ status: 'pending', attempts: 0 });
      await store.completeDeliveries([{ deliveryId: d1.id, outcome: { status: 'delivered' } }], { owner: 'fast' });
      // ... and once it is delivered, a late failure cannot turn it back into a dead one.
      expect((await store.completeDeliveries([{ deliveryId: d1.id, outcome: dead }], { owner: 'slow' })).stale).toEqual(
        [{ deliveryId: d1.id, status: 'delivered' }],
      );
      expect((await store.getMessage(m1))!.status).toBe('delivered');
      expect((await store.deliveries(m1))[0]).toMatchObject({ status: 'delivered', attempts: 1 });
      expect((await store.events(m1)).filter((e) => e.status.startsWith('delivery:')).map((e) => e.status)).toEqual([
        'delivery:pending',
        'delivery:delivered',
      ]);
      // d2's lease ran out but nobody claimed it: the slow instance's outcome is still the truth.
      expect(
        (await store.completeDeliveries([{ deliveryId: d2.id, outcome: { status: 'delivered' } }], { owner: 'slow' }))
          .stale,
      ).toEqual([]);
      expect((await store.getMessage(m2))!.status).toBe('delivered');
    });

    it("renews the leases its owner still holds (and a replayed one's), not those taken over or made final", async () => {
      await routed(store, ['K1', 'K2', 'K3', 'K4']);
      const [d1, d2, d3, d4] = await store.claimDeliveries('me', 4, 300);
      await store.completeDelivery(d3.id, { status: 'delivered' }, { owner: 'me' });
      await store.replay({ ids: [d4.messageId] });
      await sleep(200);
      expect((await store.renewDeliveryLeases('me', [d1.id, d2.id, d3.id, d4.id], 60_000)).sort()).toEqual(
        [d1.id, d4.id, d2.id].sort(),
      );
      await sleep(200);
      // The first lease would have run out by now: renewed, nobody else gets d1 or d2.
      expect(await store.claimDeliveries('other', 10, 60_000)).toEqual([]);
      expect(await store.renewDeliveryLeases('other', [d1.id], 60_000)).toEqual([]);
      expect(await store.renewDeliveryLeases('me', [], 60_000)).toEqual([]);
    });

    it('gives back the open deliveries and messages leased to an owner except those it keeps (a claim whose answer was lost)', async () => {
      await routed(store, ['O1', 'O2', 'O3']);
      const [d1, d2, d3] = await store.claimDeliveries('me', 3, 60_000);
      await store.completeDelivery(d3.id, { status: 'delivered' }, { owner: 'me' });
      expect(await store.releaseDeliveryLeases('me', [d1.id])).toBe(1);
      expect((await store.claimDeliveries('other', 10, 60_000)).map((d) => d.id)).toEqual([d2.id]);
      expect(await store.releaseDeliveryLeases('me', [d1.id])).toBe(0);
      // The same for messages claimed for processing.
      const [m1, m2] = await store.insert([msg(), msg()]);
      await store.claimReceived('me', 2, 60_000);
      expect(await store.releaseMessageLeases('me', [m1.id])).toBe(1);
      expect((await store.claimReceived('other', 10, 60_000)).map((m) => m.id)).toEqual([m2.id]);
    });

    it('renews the leases of messages still being processed, and only those its owner holds', async () => {
      const [m1, m2, m3] = await store.insert([msg(), msg(), msg()]);
      await store.claimReceived('me', 2, 1);
      await new Promise((r) => setTimeout(r, 5));
      // expired, not yet claimed again: still the owner's to renew
      expect((await store.renewMessageLeases('me', [m1.id, m2.id, m3.id], 60_000)).sort()).toEqual(
        [m1.id, m2.id].sort(),
      );
      // renewed: not claimable by another instance (only the unclaimed m3 is)
      expect((await store.claimReceived('other', 10, 60_000)).map((m) => m.id)).toEqual([m3.id]);
      expect(await store.renewMessageLeases('other', [m1.id], 60_000)).toEqual([]);
      expect(await store.renewMessageLeases('me', [], 60_000)).toEqual([]);
    });

    it('recording the same outcome again (a retry after a lost COMMIT answer) counts it once', async () => {
      const [m] = await routed(store, ['G']);
      const [d] = await store.claimDeliveries('w', 1, 60_000);
      const failed = {
        status: 'failed' as const,
        error: { code: 'E_HTTP_503', message: 'busy', retryable: true },
        nextAttemptAt: new Date(Date.now() + 60_000),
      };
      expect((await store.completeDeliveries([{ deliveryId: d.id, outcome: failed }], { owner: 'w' })).stale).toEqual(
        [],
      );
      expect((await store.completeDeliveries([{ deliveryId: d.id, outcome: failed }], { owner: 'w' })).stale).toEqual(
        [],
      );
      expect((await store.deliveries(m))[0]).toMatchObject({ status: 'failed', attempts: 1 });
      expect((await store.events(m)).filter((e) => e.status === 'delivery:failed')).toHaveLength(1);
      // Without an owner (tools, tests) an outcome is recorded whatever the lease.
      await store.completeDelivery(d.id, { status: 'delivered' });
      expect((await store.deliveries(m))[0]).toMatchObject({ status: 'delivered', attempts: 2 });
    });

    it('the outcome of a delivery a replay superseded while in flight is still recorded (as superseded)', async () => {
      const [m] = await routed(store, ['H']);
      const [d] = await store.claimDeliveries('w', 1, 60_000);
      expect(await store.replay({ ids: [m] })).toEqual([m]);
      expect(
        (await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'delivered' } }], { owner: 'w' }))
          .stale,
      ).toEqual([]);
      expect((await store.deliveries(m, { includeSuperseded: true }))[0]).toMatchObject({
        status: 'delivered',
        attempts: 1,
      });
      expect(
        (await store.events(m)).some((e) => e.status === 'delivery:delivered' && e.detail === '(superseded)'),
      ).toBe(true);
      expect((await store.getMessage(m))!.status).toBe('received');
    });

    it('two workers claiming at once never get the same delivery', async () => {
      const keys = Array.from({ length: 40 }, (_, i) => `W${i % 10}`);
      await routed(store, keys);
      const other = h.sibling ? h.sibling(store) : store;
      if (other !== store) {
        await other.open();
        extra.push(other);
      }
      const seen: string[] = [];
      const done: string[] = [];
      const worker = async (s: MessageStore, owner: string) => {
        for (let i = 0; i < 200; i++) {
          const c = await s.claimDeliveries(owner, 3, 60_000);
          if (!c.length) {
            if (done.length === keys.length) return;
            await sleep(2);
            continue;
          }
          for (const d of c) {
            seen.push(d.id);
            await s.completeDelivery(d.id, { status: 'delivered' });
            done.push(d.messageId);
          }
        }
      };
      await Promise.all([worker(store, 'one'), worker(other, 'two')]);
      expect(new Set(seen).size).toBe(seen.length);
      expect(done).toHaveLength(keys.length);
    });
  });
}
