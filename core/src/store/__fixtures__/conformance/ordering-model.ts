import type { MessageStore, ProcessedMessage } from '../../message-store';
import { bundleFor, msg, type ConformanceContext } from './helpers';

/** Claims checked against a model of the ordering rules (property-based). */
export function orderingModelConformance(c: ConformanceContext): void {
  const { h } = c;
  let store: MessageStore;
  beforeEach(() => {
    store = c.store();
  });

  describe('claims against a model of the ordering rules', () => {
    // Random runs of routing (in and out of order), claims, outcomes, replays and retries,
    // each claim compared with what the ordering rules allow, computed here from scratch: a
    // store that keeps an index of what may be claimed (SQLite's key heads) must never lose
    // a delivery from it, nor hand out one the rules hold.
    for (const seed of [1, 2, 3, 4, 5]) {
      it(`seed ${seed}: every claim takes only what the rules allow, as many as there are, in order`, async () => {
        let state = seed * 0x9e3779b9;
        const rnd = (n: number) => {
          // mulberry32
          state = (state + 0x6d2b79f5) | 0;
          let t = Math.imul(state ^ (state >>> 15), 1 | state);
          t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
          return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n;
        };
        const pick = <T>(xs: T[]): T => xs[Math.floor(rnd(xs.length))];
        interface M {
          id: string;
          seq: number;
          key?: string;
          routed: boolean;
        }
        interface D {
          m: M;
          sink: string;
          strict: boolean;
          status: 'pending' | 'failed' | 'delivered' | 'dead';
          due?: number;
          id?: string;
          leased: boolean;
          superseded: boolean;
        }
        const msgs: M[] = [];
        const ds: D[] = [];
        const waiting: M[] = []; // claimed for processing, not routed yet
        const sinks = ['a', 'b'];
        const keys = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6'];
        const open = (d: D) => !d.superseded && (d.status === 'pending' || d.status === 'failed');
        const claimable = (d: D, now: number) =>
          open(d) &&
          !d.leased &&
          (d.due === undefined || d.due <= now) &&
          (!d.strict ||
            (!ds.some((e) => open(e) && e.strict && e.sink === d.sink && e.m.key === d.m.key && e.m.seq < d.m.seq) &&
              !msgs.some((m) => !m.routed && m.seq < d.m.seq && (m.key === undefined || m.key === d.m.key))));
        const label = (messageId: string, sinkId: string) => `${msgs.find((m) => m.id === messageId)!.seq}:${sinkId}`;
        // One message, or several in one recordProcessed (one batch, as the engine writes them).
        const route = async (...ms: M[]) => {
          const batch: ProcessedMessage[] = [];
          for (const m of ms) {
            m.key = pick(keys);
            const to = rnd(3) < 1 ? sinks : [pick(sinks)];
            const strict = rnd(5) >= 1;
            const deliveries = to.map((sinkId) => ({
              routeId: `r-${sinkId}`,
              sinkId,
              bundle: bundleFor(m.id),
              strictOrder: strict,
            }));
            if (ms.length === 1) {
              await store.recordTransformed(m.id, bundleFor(m.id), m.key);
              await store.recordRouting(m.id, { status: 'routed', deliveries });
            } else
              batch.push({
                id: m.id,
                transformed: { bundleJson: JSON.stringify(bundleFor(m.id)), orderingKey: m.key },
                outcome: { status: 'routed', deliveries },
              });
            m.routed = true;
            for (const sink of to) ds.push({ m, sink, strict, status: 'pending', leased: false, superseded: false });
            waiting.splice(waiting.indexOf(m), 1);
          }
          if (batch.length) expect((await store.recordProcessed(batch)).failed).toEqual([]);
        };
        // One claim, checked: only deliveries the rules allow, as many as asked for (or all there
        // are); new ones oldest first; retries oldest first or earliest due first (either is fair:
        // per key there is only ever one to take).
        const claimAndCheck = async (when: string, sinkId: string | undefined, limit: number, now: number) => {
          const cand = ds.filter((d) => (!sinkId || d.sink === sinkId) && claimable(d, now));
          const got = await store.claimDeliveries(
            'w',
            limit,
            60_000,
            new Date(now),
            sinkId ? { sinkIds: [sinkId] } : {},
          );
          const have = got.map((c) => cand.find((d) => d.m.id === c.messageId && d.sink === c.sinkId));
          expect({
            when,
            notAllowed: got.filter((_, i) => !have[i]).map((c) => label(c.messageId, c.sinkId)),
            n: got.length,
          }).toEqual({
            when,
            notAllowed: [],
            n: Math.min(limit, cand.length),
          });
          const bySeq = (x: D, y: D) => x.m.seq - y.m.seq || ds.indexOf(x) - ds.indexOf(y);
          const byDue = (x: D, y: D) => x.due! - y.due! || ds.indexOf(x) - ds.indexOf(y);
          const prefix = (part: D[], all: D[]) => part.every((d) => all.slice(0, part.length).includes(d));
          const taken = have as D[];
          const retries = taken.filter((d) => d.status === 'failed');
          const failedAllowed = cand.filter((d) => d.status === 'failed');
          expect({
            when,
            newOldestFirst: prefix(
              taken.filter((d) => d.status === 'pending'),
              cand.filter((d) => d.status === 'pending').sort(bySeq),
            ),
          }).toEqual({ when, newOldestFirst: true });
          expect({
            when,
            retriesInOrder:
              prefix(retries, [...failedAllowed].sort(bySeq)) || prefix(retries, [...failedAllowed].sort(byDue)),
          }).toEqual({ when, retriesInOrder: true });
          for (const [i, c] of got.entries()) Object.assign(taken[i], { leased: true, id: c.id });
          return taken;
        };
        let seq = 0;
        for (let step = 0; step < 220; step++) {
          if (h.checkInvariants) await h.checkInvariants(store, `step ${step}`);
          const op = rnd(100);
          if (op < 22) {
            const res = await store.insert(Array.from({ length: 1 + Math.floor(rnd(4)) }, () => msg()));
            for (const r of res) msgs.push({ id: r.id, seq: seq++, routed: false });
            await store.claimReceived('p', 10, 60_000);
            const fresh = msgs.slice(-res.length);
            waiting.push(...fresh);
            // Usually routed at once, in order, one by one or as one batch; sometimes the newer
            // first, or left for later.
            const r = rnd(8);
            if (r < 3) await route(...fresh);
            else if (r < 6) for (const m of rnd(3) < 1 ? [...fresh].reverse() : fresh) if (rnd(6) >= 1) await route(m);
          } else if (op < 30 && waiting.length) {
            if (rnd(2) < 1) await route(pick(waiting));
            else await route(...[...waiting].sort(() => rnd(2) - 1));
          } else if (op < 60) {
            const sinkId = rnd(6) < 1 ? undefined : pick(sinks);
            await claimAndCheck(`step ${step}`, sinkId, sinkId ? 1 + Math.floor(rnd(3)) : 100, Date.now());
          } else if (op < 82) {
            const leased = ds.filter((d) => d.leased && !d.superseded);
            if (!leased.length) continue;
            const d = pick(leased);
            const r = rnd(10);
            const error = { code: 'E_TEST', message: 'test', retryable: r < 8 };
            if (r < 5) {
              await store.completeDelivery(d.id!, { status: 'delivered' }, { owner: 'w' });
              d.status = 'delivered';
            } else if (r < 8) {
              // due at once or an hour later
              d.due = r < 6 ? Date.now() - 1 : Date.now() + 3_600_000;
              await store.completeDelivery(
                d.id!,
                { status: 'failed', error, nextAttemptAt: new Date(d.due) },
                { owner: 'w' },
              );
              d.status = 'failed';
            } else {
              await store.completeDelivery(d.id!, { status: 'dead', error }, { owner: 'w' });
              d.status = 'dead';
            }
            d.leased = false;
          } else if (op < 84) {
            // Whole messages deleted by retention: a dead one's other deliveries may be open.
            const final: M[] = [];
            for (const m of msgs)
              if (m.routed && ['delivered', 'dead'].includes((await store.getMessage(m.id))!.status)) final.push(m);
            if (!final.length || ds.some((d) => final.includes(d.m) && d.leased && !d.superseded)) continue;
            const r = await store.prune({ bodiesBefore: new Date(0), deleteBefore: new Date(Date.now() + 3_600_000) });
            expect(r.deleted).toBe(final.length);
            for (const m of final) msgs.splice(msgs.indexOf(m), 1);
            for (let i = ds.length - 1; i >= 0; i--) if (final.includes(ds[i].m)) ds.splice(i, 1);
          } else if (op < 92) {
            // A replay of a routed message none of whose deliveries is in flight.
            const m = msgs.filter((x) => x.routed && !ds.some((d) => d.m === x && !d.superseded && d.leased));
            if (!m.length) continue;
            const x = pick(m);
            expect(await store.replay({ ids: [x.id] })).toEqual([x.id]);
            for (const d of ds) if (d.m === x) d.superseded = true;
            x.routed = false; // its key stays known
            await store.claimReceived('p', 10, 60_000);
            waiting.push(x);
          } else {
            const dead = ds.filter((d) => d.status === 'dead' && !d.superseded && d.id);
            if (!dead.length) continue;
            const d = pick(dead);
            expect(await store.retryDeliveries({ deliveryIds: [d.id!] })).toEqual([d.id]);
            d.status = 'pending';
            d.due = undefined;
          }
        }
        // Drain: route what waits, then deliver everything the rules allow until nothing is left.
        for (const m of [...waiting]) await route(m);
        for (const d of ds)
          if (d.leased && !d.superseded) {
            await store.completeDelivery(d.id!, { status: 'delivered' }, { owner: 'w' });
            d.status = 'delivered';
            d.leased = false;
          }
        const later = Date.now() + 7_200_000;
        for (let round = 0; round < 2000 && ds.some(open); round++) {
          // Claims of a few at a time, per sink or all: every retry is due now.
          const sinkId = rnd(4) < 1 ? undefined : pick(sinks);
          const got = await claimAndCheck(`drain ${round}`, sinkId, 1 + Math.floor(rnd(4)), later);
          for (const d of got) {
            await store.completeDelivery(d.id!, { status: 'delivered' }, { owner: 'w' });
            d.status = 'delivered';
            d.leased = false;
          }
        }
        expect(ds.filter(open)).toEqual([]);
      }, 60_000);
    }
  });
}
