import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import { dead, names, retryAt, routed } from './__fixtures__/claims';
import { bundleFor, msg } from './__fixtures__/conformance/helpers';
import type { ClaimedDelivery } from './message-store';
import { SqliteMessageStore } from './sqlite.store';

/**
 * The claims and leases of the SQL store on a real SQLite file, on a fake store clock, so every
 * lease and retry time is checked at its exact bound and nothing sleeps: claimReceived (no double
 * claim, lease expiry, attempts, order), claimDeliveries (per-key order, what holds a delivery,
 * not before its next attempt, the lease, the sink filters) and renewDeliveryLeases. Seconds, not
 * the conformance suite's minutes: scripts/mutation.mjs runs this file for the `store` module.
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-claims-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const T0 = Date.UTC(2026, 0, 1);
let clock = T0;
const open: SqliteMessageStore[] = [];
beforeEach(() => {
  clock = T0;
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

type Logged = { message: string; meta?: Record<string, unknown> };
let n = 0;
async function openStore(errors: Logged[] = []): Promise<SqliteMessageStore> {
  const logger = silentLogger();
  logger.error = ((message: string, meta?: Record<string, unknown>) => (
    errors.push({ message, meta }),
    logger
  )) as never;
  const s = new SqliteMessageStore({ path: path.join(dir, `c${++n}.db`), logger, now: () => clock });
  await s.open();
  open.push(s);
  return s;
}

describe('claimReceived', () => {
  it('claims received messages oldest first, up to the limit, each once, with its own body', async () => {
    const store = await openStore();
    const bodies = ['one', 'two', 'three', 'four', 'five'];
    const ids = (await store.insert(bodies.map((b) => msg({ body: Buffer.from(b) })))).map((r) => r.id);
    expect(await store.claimReceived('a', 0, 1000)).toEqual([]);
    expect(await store.claimReceived('a', -1, 1000)).toEqual([]);
    const a = await store.claimReceived('a', 2, 1000);
    expect(a.map((m) => m.id)).toEqual(ids.slice(0, 2));
    const b = await store.claimReceived('b', 10, 1000);
    expect(b.map((m) => m.id)).toEqual(ids.slice(2));
    expect([...a, ...b].map((m) => String(m.body))).toEqual(bodies);
    expect([...a, ...b].every((m) => m.status === 'received')).toBe(true);
    expect(b.map((m) => m.seq)).toEqual([...b.map((m) => m.seq)].sort((x, y) => x - y));
    expect(await store.claimReceived('c', 10, 1000)).toEqual([]);
  });

  it('only received (or transformed) messages: routed, unrouted and failed ones are never claimed, leased or not', async () => {
    const store = await openStore();
    const [r, u, f, left] = (await store.insert([msg(), msg(), msg(), msg()])).map((x) => x.id);
    await store.claimReceived('p', 3, 100);
    await store.recordProcessed([
      {
        id: r,
        transformed: { bundleJson: JSON.stringify(bundleFor(r)), orderingKey: 'k' },
        outcome: {
          status: 'routed',
          deliveries: [{ routeId: 'r', sinkId: 's', bundle: bundleFor(r), strictOrder: true }],
        },
      },
      { id: u, transformed: { bundleJson: JSON.stringify(bundleFor(u)) }, outcome: { status: 'unrouted' } },
      { id: f, outcome: { status: 'failed', error: { code: 'X', message: 'x', retryable: false } } },
    ]);
    clock += 10_000;
    expect((await store.claimReceived('q', 10, 100)).map((m) => m.id)).toEqual([left]);
  });

  it('a lease holds until its exact end: not a millisecond before, then to another owner, who alone may renew it', async () => {
    const store = await openStore();
    const [m] = await store.insert([msg()]);
    expect((await store.claimReceived('a', 10, 500)).map((x) => x.id)).toEqual([m.id]);
    clock = T0 + 499;
    expect(await store.claimReceived('b', 10, 500)).toEqual([]);
    clock = T0 + 500;
    expect((await store.claimReceived('b', 10, 500)).map((x) => x.id)).toEqual([m.id]);
    // b's lease runs from b's claim: until T0 + 1000.
    clock = T0 + 999;
    expect(await store.claimReceived('c', 10, 500)).toEqual([]);
    expect(await store.renewMessageLeases('a', [m.id], 500)).toEqual([]);
    expect(await store.renewMessageLeases('b', [m.id], 500)).toEqual([m.id]);
    // Renewed from now: until T0 + 1499.
    clock = T0 + 1000;
    expect(await store.claimReceived('c', 10, 500)).toEqual([]);
    clock = T0 + 1498;
    expect(await store.claimReceived('c', 10, 500)).toEqual([]);
    clock = T0 + 1499;
    expect((await store.claimReceived('c', 10, 500)).map((x) => x.id)).toEqual([m.id]);
  });

  it('counts attempts: the claim past maxAttempts fails the message (error, event, log) and returns the others', async () => {
    const errors: Logged[] = [];
    const store = await openStore(errors);
    const [m] = await store.insert([msg()]);
    for (let i = 1; i <= 2; i++) {
      expect((await store.claimReceived('dies', 10, 100, { maxAttempts: 2 })).map((x) => x.id)).toEqual([m.id]);
      clock += 100;
    }
    const [other] = await store.insert([msg({ body: Buffer.from('other body') })]);
    const third = await store.claimReceived('dies', 10, 100, { maxAttempts: 2 });
    expect(third.map((x) => x.id)).toEqual([other.id]);
    expect(String(third[0].body)).toBe('other body');
    const failed = (await store.getMessage(m.id))!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toEqual({
      code: 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS',
      message:
        'processing was started 2 times and never finished (the engine or its worker stopped each time); not retried',
      retryable: false,
    });
    expect((await store.events(m.id)).map((e) => [e.status, e.detail ?? null, e.at.getTime()])).toEqual([
      ['received', null, T0],
      ['failed', 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS', T0 + 200],
    ]);
    expect(errors).toEqual([
      {
        message: 'message failed: processing never finished',
        meta: { messageId: m.id, attempts: 3, errorCode: 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS' },
      },
    ]);
    // Failed, no lease left: not claimed again (and the other, leased, neither).
    clock += 100;
    expect((await store.claimReceived('dies', 10, 100, { maxAttempts: 2 })).map((x) => x.id)).toEqual([other.id]);
  });

  it('several messages past maxAttempts in one claim are all failed', async () => {
    const store = await openStore();
    const ids = (await store.insert([msg(), msg(), msg()])).map((r) => r.id);
    expect(await store.claimReceived('dies', 10, 100, { maxAttempts: 1 })).toHaveLength(3);
    clock += 100;
    expect(await store.claimReceived('dies', 10, 100, { maxAttempts: 1 })).toEqual([]);
    for (const id of ids) expect((await store.getMessage(id))!.status).toBe('failed');
  });

  it('without maxAttempts (or 0) a message is claimed again however often', async () => {
    const errors: Logged[] = [];
    const store = await openStore(errors);
    const [m] = await store.insert([msg()]);
    for (let i = 0; i < 4; i++) {
      expect((await store.claimReceived('p', 10, 100)).map((x) => x.id)).toEqual([m.id]);
      expect((await store.claimReceived('p', 10, 100, { maxAttempts: 0 })).map((x) => x.id)).toEqual([]);
      clock += 100;
    }
    for (let i = 0; i < 2; i++) {
      expect((await store.claimReceived('p', 10, 100, { maxAttempts: 0 })).map((x) => x.id)).toEqual([m.id]);
      clock += 100;
    }
    expect((await store.getMessage(m.id))!.status).toBe('received');
    expect(errors).toEqual([]);
  });
});

describe('claimDeliveries: order and what holds a delivery', () => {
  it('per (sink, key) only the oldest open strict delivery; other keys and sinks at once; each claimed once', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'A', 'B'], { sinks: ['s1', 's2'] });
    const first = await store.claimDeliveries('w', 100, 60_000);
    expect(names(first, ids).sort()).toEqual(['0:s1', '0:s2', '2:s1', '2:s2']);
    expect(await store.claimDeliveries('w', 100, 60_000)).toEqual([]);
    await store.completeDelivery(first.find((d) => names([d], ids)[0] === '0:s1')!.id, { status: 'delivered' });
    expect(names(await store.claimDeliveries('w', 100, 60_000), ids)).toEqual(['1:s1']);
  });

  it('a failed strict delivery holds its key until it is delivered; a dead one releases it', async () => {
    const store = await openStore();
    const ids = await routed(store, ['K', 'K', 'K']);
    const [d0] = await store.claimDeliveries('w', 100, 60_000);
    expect(names([d0], ids)).toEqual(['0:s1']);
    await store.completeDelivery(d0.id, retryAt(T0 + 1000));
    expect(await store.claimDeliveries('w', 100, 60_000)).toEqual([]);
    clock = T0 + 1000;
    const [again] = await store.claimDeliveries('w', 100, 60_000);
    expect(again.id).toBe(d0.id);
    await store.completeDelivery(d0.id, dead);
    const [d1] = await store.claimDeliveries('w', 100, 60_000);
    expect(names([d1], ids)).toEqual(['1:s1']);
  });

  it('ordering none: nothing holds them, all at once in message order', async () => {
    const store = await openStore();
    const ids = await routed(store, ['N', 'N', 'N'], { strict: false });
    const [d0] = await store.claimDeliveries('w', 1, 60_000);
    await store.completeDelivery(d0.id, retryAt(T0 + 60_000));
    expect(names(await store.claimDeliveries('w', 100, 60_000), ids)).toEqual(['1:s1', '2:s1']);
  });

  it('an older message still being processed holds a strict delivery of its key (or of a key not known yet); other keys pass', async () => {
    const store = await openStore();
    const [older] = await store.insert([msg()]);
    await store.claimReceived('slow', 1, 600_000); // still being processed
    const [same] = await routed(store, ['P']);
    const [otherKey] = await routed(store, ['Q'], { strict: false });
    // Its key not known yet: it may be P, so P waits; Q is not strict.
    expect((await store.claimDeliveries('w', 100, 60_000)).map((d) => d.messageId)).toEqual([otherKey]);
    await store.recordTransformed(older.id, bundleFor('o'), 'Other');
    // Claims do not write held transform results; a read does: its key is known from here on.
    expect((await store.getMessage(older.id))!.status).toBe('transformed');
    expect((await store.claimDeliveries('w', 100, 60_000)).map((d) => d.messageId)).toEqual([same]);
  });

  it('an older message of the same key being processed holds it; a newer one does not', async () => {
    const store = await openStore();
    const [before] = await routed(store, ['R']);
    const [older] = await store.insert([msg()]);
    const [newer] = await store.insert([msg()]);
    await store.claimReceived('slow', 2, 600_000);
    await store.recordTransformed(older.id, bundleFor('o'), 'P');
    await store.recordTransformed(newer.id, bundleFor('n'), 'R');
    expect((await store.getMessage(older.id))!.status).toBe('transformed'); // a read writes both
    const [held] = await routed(store, ['P']);
    // R's delivery is older than the R message being processed; P's is newer than the P one.
    expect((await store.claimDeliveries('w', 100, 60_000)).map((d) => d.messageId)).toEqual([before]);
    await store.recordRouting(older.id, { status: 'unrouted' });
    expect((await store.claimDeliveries('w', 100, 60_000)).map((d) => d.messageId)).toEqual([held]);
  });

  it('the limit takes due retries first (earliest due first), then new deliveries oldest first; returned in message order', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B', 'C', 'D', 'E']);
    const all = await store.claimDeliveries('w', 100, 60_000);
    expect(names(all, ids)).toEqual(['0:s1', '1:s1', '2:s1', '3:s1', '4:s1']);
    // D due at +100, C at +200; A, B and E stay pending (given back: their leases released).
    await store.completeDelivery(all[3].id, retryAt(T0 + 100));
    await store.completeDelivery(all[2].id, retryAt(T0 + 200));
    expect(await store.releaseDeliveryLeases('w', [])).toBe(3);
    clock = T0 + 200;
    expect(names(await store.claimDeliveries('x', 1, 60_000), ids)).toEqual(['3:s1']);
    expect(names(await store.claimDeliveries('x', 2, 60_000), ids)).toEqual(['0:s1', '2:s1']);
    expect(names(await store.claimDeliveries('x', 100, 60_000), ids)).toEqual(['1:s1', '4:s1']);
  });

  it('a limit that is not a power of two: exactly that many (SQLite rounds its LIMIT up, the rest is left)', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B', 'C', 'D', 'E'], { strict: false });
    expect(names(await store.claimDeliveries('w', 3, 60_000), ids)).toEqual(['0:s1', '1:s1', '2:s1']);
    expect(names(await store.claimDeliveries('w', 3, 60_000), ids)).toEqual(['3:s1', '4:s1']);
  });

  it('limit 0 claims nothing', async () => {
    const store = await openStore();
    await routed(store, ['A']);
    expect(await store.claimDeliveries('w', 0, 60_000)).toEqual([]);
    expect(await store.claimDeliveries('w', -1, 60_000)).toHaveLength(0);
    expect(await store.claimDeliveries('w', 1, 60_000)).toHaveLength(1);
  });
});

describe('claimDeliveries: time', () => {
  it('a retry not before its next attempt time (to the millisecond), by the store clock or the one given', async () => {
    const store = await openStore();
    await routed(store, ['K']);
    const [d] = await store.claimDeliveries('w', 10, 60_000);
    await store.completeDelivery(d.id, retryAt(T0 + 1000));
    clock = T0 + 999;
    expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]);
    expect((await store.claimDeliveries('w', 10, 60_000, new Date(T0 + 1000))).map((x) => x.id)).toEqual([d.id]);
    await store.completeDelivery(d.id, retryAt(T0 + 2000));
    expect(await store.claimDeliveries('w', 10, 60_000, new Date(T0 + 1999))).toEqual([]);
    clock = T0 + 2000;
    const [again] = await store.claimDeliveries('w', 10, 60_000);
    expect(again).toMatchObject({ id: d.id, attempts: 2, status: 'failed' });
    // The first attempt's time is kept across retries.
    expect(again.firstAttemptAt.getTime()).toBe(T0);
  });

  it('a lease holds until its exact end, then goes to another worker; its own new lease runs from its claim', async () => {
    const store = await openStore();
    const ids = await routed(store, ['L']);
    clock = T0 + 10;
    const [d] = await store.claimDeliveries('a', 10, 500);
    expect(d.firstAttemptAt.getTime()).toBe(T0 + 10);
    clock = T0 + 509;
    expect(await store.claimDeliveries('b', 10, 500)).toEqual([]);
    clock = T0 + 510;
    const [b] = await store.claimDeliveries('b', 10, 500);
    expect(names([b], ids)).toEqual(['0:s1']);
    expect(b.firstAttemptAt.getTime()).toBe(T0 + 10);
    clock = T0 + 1009;
    expect(await store.claimDeliveries('c', 10, 500)).toEqual([]);
    // a lost its lease: a late outcome from it changes nothing.
    expect(
      (await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'delivered' } }], { owner: 'a' })).stale,
    ).toHaveLength(1);
    clock = T0 + 1010;
    expect(await store.claimDeliveries('c', 10, 500)).toHaveLength(1);
  });
});

describe('claimDeliveries: what comes with a delivery, and the sink filters', () => {
  it('each delivery with its message (body, headers) and its own bundle; several sinks of one message in id order', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B'], { sinks: ['s2', 's1'] });
    const got = await store.claimDeliveries('w', 10, 60_000);
    expect(got.map((d) => d.messageId)).toEqual([ids[0], ids[0], ids[1], ids[1]]);
    for (let i = 0; i < got.length; i += 2) expect(got[i].id < got[i + 1].id).toBe(true);
    for (const d of got) {
      expect(d.bundle).toEqual(bundleFor(`${d.messageId}:${d.sinkId}`));
      expect(JSON.parse(d.bundleJson)).toEqual(bundleFor(`${d.messageId}:${d.sinkId}`));
      expect(d.message.id).toBe(d.messageId);
      expect(String(d.message.body)).toContain(`|${d.message.headers.controlId}|`);
      expect(d.message.bundle).toEqual(bundleFor(d.messageId));
      expect(d).toMatchObject({ routeId: 'r1', status: 'pending', attempts: 0, strictOrder: true });
      expect(d.firstAttemptAt.getTime()).toBe(T0);
    }
  });

  it('in message order even when the messages were routed in another order', async () => {
    const store = await openStore();
    const [m1, m2, m3] = (await store.insert([msg(), msg(), msg()])).map((r) => r.id);
    await store.claimReceived('p', 3, 60_000);
    for (const id of [m3, m1, m2])
      await store.recordProcessed([
        {
          id,
          transformed: { bundleJson: JSON.stringify(bundleFor(id)), orderingKey: id },
          outcome: {
            status: 'routed',
            deliveries: [{ routeId: 'r1', sinkId: 's1', bundleJson: JSON.stringify(bundleFor(id)), strictOrder: true }],
          },
        },
      ]);
    expect((await store.claimDeliveries('w', 10, 60_000)).map((d) => d.messageId)).toEqual([m1, m2, m3]);
  });

  it("a route that changed nothing delivers the message's own bundle", async () => {
    const store = await openStore();
    const [m] = await store.insert([msg()]);
    await store.claimReceived('p', 1, 60_000);
    const json = JSON.stringify(bundleFor(`message ${m.id}`));
    await store.recordProcessed([
      {
        id: m.id,
        transformed: { bundleJson: json, orderingKey: 'k' },
        outcome: {
          status: 'routed',
          deliveries: [{ routeId: 'r1', sinkId: 's1', unchanged: true, strictOrder: true }],
        },
      },
    ]);
    const [d] = await store.claimDeliveries('w', 10, 60_000);
    expect(d.bundleJson).toBe(json);
    expect(d.bundle).toEqual(bundleFor(`message ${m.id}`));
  });

  it('sinkIds: only those sinks ([] none); excludeSinkIds: the others (sinks no longer configured)', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B'], { sinks: ['s1', 's2', 's3'] });
    const sinks = (ds: ClaimedDelivery[]) => names(ds, ids).sort();
    expect(await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: [] })).toEqual([]);
    expect(sinks(await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['s2'] }))).toEqual([
      '0:s2',
      '1:s2',
    ]);
    expect(await store.claimDeliveries('w', 10, 60_000, undefined, { excludeSinkIds: ['s1', 's2', 's3'] })).toEqual([]);
    expect(sinks(await store.claimDeliveries('w', 10, 60_000, undefined, { excludeSinkIds: ['s1', 's4'] }))).toEqual([
      '0:s3',
      '1:s3',
    ]);
    expect(sinks(await store.claimDeliveries('w', 10, 60_000, undefined, { excludeSinkIds: [] }))).toEqual([
      '0:s1',
      '1:s1',
    ]);
  });

  it('sinkIds and excludeSinkIds together: the first less the second', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A'], { sinks: ['s1', 's2', 's3'] });
    const got = await store.claimDeliveries('w', 10, 60_000, undefined, {
      sinkIds: ['s1', 's2', 's3'],
      excludeSinkIds: ['s1', 's3'],
    });
    expect(names(got, ids)).toEqual(['0:s2']);
    // A sink in neither list (s4) is not claimed for either.
    const more = await routed(store, ['B'], { sinks: ['s1', 's2', 's4'] });
    const next = await store.claimDeliveries('w', 10, 60_000, undefined, {
      sinkIds: ['s1', 's2'],
      excludeSinkIds: ['s1'],
    });
    expect(names(next, more)).toEqual(['0:s2']);
  });
});

describe('renewDeliveryLeases', () => {
  it("extends its owner's leases from now, not others', not final ones; a replayed one's too", async () => {
    const store = await openStore();
    const ids = await routed(store, ['K1', 'K2', 'K3', 'K4']);
    const [d1, d2, d3, d4] = await store.claimDeliveries('me', 4, 500);
    await store.completeDelivery(d3.id, { status: 'delivered' }, { owner: 'me' });
    await store.replay({ ids: [ids[3]] });
    clock = T0 + 400;
    expect((await store.renewDeliveryLeases('me', [d1.id, d2.id, d3.id, d4.id], 500)).sort()).toEqual(
      [d1.id, d2.id, d4.id].sort(),
    );
    expect(await store.renewDeliveryLeases('other', [d1.id], 500)).toEqual([]);
    expect(await store.renewDeliveryLeases('me', [], 500)).toEqual([]);
    clock = T0 + 899;
    expect(await store.claimDeliveries('other', 10, 60_000)).toEqual([]);
    clock = T0 + 900;
    expect((await store.claimDeliveries('other', 10, 60_000)).map((d) => d.id).sort()).toEqual([d1.id, d2.id].sort());
  });

  it('a retry under way (failed, claimed again) is renewed too; more ids than one statement takes are all renewed', async () => {
    const store = await openStore();
    const keys = Array.from({ length: 450 }, (_, i) => `K${i}`);
    await routed(store, keys, { strict: false });
    const claimed = await store.claimDeliveries('me', 1000, 500);
    expect(claimed).toHaveLength(450);
    await store.completeDelivery(claimed[0].id, retryAt(T0 + 100), { owner: 'me' });
    clock = T0 + 100;
    expect((await store.claimDeliveries('me', 1000, 500)).map((d) => d.id)).toEqual([claimed[0].id]);
    const renewed = await store.renewDeliveryLeases(
      'me',
      claimed.map((d) => d.id),
      1000,
    );
    expect(renewed.sort()).toEqual(claimed.map((d) => d.id).sort());
    clock = T0 + 1099;
    expect(await store.claimDeliveries('other', 1000, 500)).toEqual([]);
    clock = T0 + 1100;
    expect(await store.claimDeliveries('other', 1000, 500)).toHaveLength(450);
  });
});
