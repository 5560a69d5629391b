import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { silentLogger } from '../logging/logger';
import { dead, names, retryAt, routed } from './__fixtures__/claims';
import { bundleFor, msg } from './__fixtures__/conformance/helpers';
import type { ClaimedDelivery } from './message-store';
import { PostgresMessageStore } from './postgres.store';

/**
 * The claims and leases where PostgreSQL takes another path than SQLite (the `store` module's
 * mutation run includes this file, beside sqlite.store.claims.test.ts): its delivery claim query
 * (no key heads: every open delivery, oldest message first), the row locks of both claims
 * (`FOR UPDATE OF ... SKIP LOCKED`: instances split a backlog), the statements it must never send
 * with an empty `IN ()` (SQLite accepts one, PostgreSQL refuses it), and the order of the rows
 * `UPDATE ... RETURNING` gives back (a row updated again moves: not its id order, unlike SQLite's).
 * On a fake store clock, so every lease and retry time is checked at its exact bound; a schema per test.
 * The store keeps times on the database's clock (the fake clock plus the offset it measures at open:
 * `clockAheadMs()`; the times it is given are local, it adds the offset), so the times it returns are compared through `db()`.
 */
const URL = TEST_PG_URL;
// Without PostgreSQL: skipped visibly (locally) or failed (CI=true).
const pgDescribe = requires(pgRequirement(URL));
const prefix = `ferry_claims_${randomBytes(4).toString('hex')}`;
const schemas = new Set<string>();
const open: PostgresMessageStore[] = [];
let n = 0;

const T0 = Date.UTC(2026, 0, 1);
let clock = T0;
beforeEach(() => {
  clock = T0;
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});
afterAll(async () => {
  if (!schemas.size) return;
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
});

type Logged = { message: string; meta?: Record<string, unknown> };
/** A store on a schema of its own (or on `schema`: a second instance sharing the first one's tables). */
async function openStore(opts: { errors?: Logged[]; schema?: string } = {}): Promise<PostgresMessageStore> {
  const schema = opts.schema ?? `${prefix}_${++n}`;
  schemas.add(schema);
  const logger = silentLogger();
  const errors = opts.errors;
  if (errors)
    logger.error = ((message: string, meta?: Record<string, unknown>) => (
      errors.push({ message, meta }),
      logger
    )) as never;
  const s = new PostgresMessageStore({ url: URL, schema, logger, poolSize: 3, now: () => clock });
  await s.open();
  open.push(s);
  return s;
}
/** Fake-clock time `t` as the store writes and compares it (on the database's clock). */
const db = (s: PostgresMessageStore, t: number) => t + s.clockAheadMs();
const schemaOf = (s: PostgresMessageStore) => (s as unknown as { schema: string }).schema;

pgDescribe('PostgresMessageStore claimReceived', () => {
  it('nothing to claim (an empty store, limit 0 or below): [] without an error', async () => {
    const store = await openStore();
    expect(await store.claimReceived('a', 10, 1000)).toEqual([]);
    expect(await store.claimReceived('a', 10, 1000, { maxAttempts: 3 })).toEqual([]);
    await store.insert([msg()]);
    expect(await store.claimReceived('a', 0, 1000)).toEqual([]);
    expect(await store.claimReceived('a', -1, 1000)).toEqual([]);
  });

  it('claims received messages oldest first, up to the limit, each once, with its own body', async () => {
    const store = await openStore();
    const bodies = ['one', 'two', 'three', 'four', 'five'];
    const ids = (await store.insert(bodies.map((b) => msg({ body: Buffer.from(b) })))).map((r) => r.id);
    const a = await store.claimReceived('a', 2, 1000, { maxAttempts: 3 });
    expect(a.map((m) => m.id)).toEqual(ids.slice(0, 2));
    const b = await store.claimReceived('b', 10, 1000, { maxAttempts: 3 });
    expect(b.map((m) => m.id)).toEqual(ids.slice(2));
    expect([...a, ...b].map((m) => String(m.body))).toEqual(bodies);
    expect([...a, ...b].every((m) => m.status === 'received')).toBe(true);
    expect(await store.claimReceived('c', 10, 1000)).toEqual([]);
  });

  it('returned in message order although PostgreSQL returns the claimed rows in their physical order', async () => {
    const store = await openStore();
    const ids = (await store.insert([msg(), msg(), msg(), msg()])).map((r) => r.id);
    // The first two claimed (their rows rewritten: now behind the others in the table), the lease lapses.
    expect((await store.claimReceived('a', 2, 100)).map((m) => m.id)).toEqual(ids.slice(0, 2));
    clock += 100;
    expect((await store.claimReceived('b', 10, 100)).map((m) => m.id)).toEqual(ids);
  });

  it('a lease holds until its exact end, then goes to another owner, who alone may renew it', async () => {
    const store = await openStore();
    const [m] = await store.insert([msg()]);
    expect((await store.claimReceived('a', 10, 500)).map((x) => x.id)).toEqual([m.id]);
    clock = T0 + 499;
    expect(await store.claimReceived('b', 10, 500)).toEqual([]);
    clock = T0 + 500;
    expect((await store.claimReceived('b', 10, 500)).map((x) => x.id)).toEqual([m.id]);
    expect(await store.renewMessageLeases('a', [m.id], 500)).toEqual([]);
    expect(await store.renewMessageLeases('b', [m.id], 500)).toEqual([m.id]);
    clock = T0 + 999;
    expect(await store.claimReceived('c', 10, 500)).toEqual([]);
    clock = T0 + 1000;
    expect((await store.claimReceived('c', 10, 500)).map((x) => x.id)).toEqual([m.id]);
  });

  it('the claim past maxAttempts fails the message (error, event, log) and returns the others', async () => {
    const errors: Logged[] = [];
    const store = await openStore({ errors });
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
    expect(failed.error?.code).toBe('FERRY_E_INTERNAL_PROCESSING_ATTEMPTS');
    expect((await store.events(m.id)).map((e) => [e.status, e.detail ?? null, e.at.getTime()])).toEqual([
      ['received', null, db(store, T0)],
      ['failed', 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS', db(store, T0 + 200)],
    ]);
    expect(errors).toEqual([
      {
        message: 'message failed: processing never finished',
        meta: { messageId: m.id, attempts: 3, errorCode: 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS' },
      },
    ]);
  });

  it('two instances claiming the same backlog at once split it: every message claimed, none twice', async () => {
    const a = await openStore();
    const b = await openStore({ schema: schemaOf(a) });
    const ids = (await a.insert(Array.from({ length: 60 }, () => msg()))).map((r) => r.id);
    const got: string[] = [];
    for (let round = 0; round < 12; round++) {
      const [x, y] = await Promise.all([a.claimReceived('a', 5, 60_000), b.claimReceived('b', 5, 60_000)]);
      got.push(...x.map((m) => m.id), ...y.map((m) => m.id));
    }
    expect(new Set(got).size).toBe(got.length);
    expect([...got].sort()).toEqual([...ids].sort());
  });
});

pgDescribe('PostgresMessageStore claimDeliveries', () => {
  it('per (sink, key) only the oldest open strict delivery; other keys and sinks at once; each claimed once', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'A', 'B'], { sinks: ['s1', 's2'] });
    const first = await store.claimDeliveries('w', 100, 60_000);
    expect(names(first, ids)).toEqual(['0:s1', '0:s2', '2:s1', '2:s2']);
    expect(await store.claimDeliveries('w', 100, 60_000)).toEqual([]);
    await store.completeDelivery(first[0].id, { status: 'delivered' });
    expect(names(await store.claimDeliveries('w', 100, 60_000), ids)).toEqual(['1:s1']);
  });

  it('a failed strict delivery holds its key until it is delivered; a dead one releases it', async () => {
    const store = await openStore();
    const ids = await routed(store, ['K', 'K', 'K']);
    const [d0] = await store.claimDeliveries('w', 100, 60_000);
    expect(names([d0], ids)).toEqual(['0:s1']);
    await store.completeDelivery(d0.id, retryAt(T0 + 1000));
    expect(await store.claimDeliveries('w', 100, 60_000)).toEqual([]);
    clock = T0 + 999;
    expect(await store.claimDeliveries('w', 100, 60_000)).toEqual([]);
    clock = T0 + 1000;
    const [again] = await store.claimDeliveries('w', 100, 60_000);
    expect(again).toMatchObject({ id: d0.id, attempts: 1, status: 'failed' });
    expect(again.firstAttemptAt.getTime()).toBe(db(store, T0));
    await store.completeDelivery(d0.id, dead);
    expect(names(await store.claimDeliveries('w', 100, 60_000), ids)).toEqual(['1:s1']);
  });

  it('the limit takes the oldest messages first; limit 0 or below claims nothing', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B', 'C']);
    expect(await store.claimDeliveries('w', 0, 60_000)).toEqual([]);
    expect(await store.claimDeliveries('w', -1, 60_000)).toEqual([]);
    expect(names(await store.claimDeliveries('w', 2, 60_000), ids)).toEqual(['0:s1', '1:s1']);
    expect(names(await store.claimDeliveries('w', 2, 60_000), ids)).toEqual(['2:s1']);
  });

  it('each delivery with its message and its own bundle; in message order, then id order, whatever order PostgreSQL returns', async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B'], { sinks: ['s1', 's2'] });
    // s1's deliveries claimed (their rows rewritten: now behind s2's in the table), their leases lapse.
    expect(names(await store.claimDeliveries('w', 10, 100, undefined, { sinkIds: ['s1'] }), ids)).toEqual([
      '0:s1',
      '1:s1',
    ]);
    clock += 100;
    const got = await store.claimDeliveries('w', 10, 60_000);
    expect(names(got, ids)).toEqual(['0:s1', '0:s2', '1:s1', '1:s2']);
    for (const d of got) {
      expect(d.bundle).toEqual(bundleFor(`${d.messageId}:${d.sinkId}`));
      expect(d.message.id).toBe(d.messageId);
      expect(String(d.message.body)).toContain(`|${d.message.headers.controlId}|`);
      expect(d).toMatchObject({ routeId: 'r1', status: 'pending', attempts: 0, strictOrder: true });
    }
    expect(got[0].id < got[1].id && got[2].id < got[3].id).toBe(true);
  });

  it('a lease holds until its exact end, then goes to another worker; the first attempt time is kept', async () => {
    const store = await openStore();
    const ids = await routed(store, ['L']);
    clock = T0 + 10;
    const [d] = await store.claimDeliveries('a', 10, 500);
    clock = T0 + 509;
    expect(await store.claimDeliveries('b', 10, 500)).toEqual([]);
    clock = T0 + 510;
    const [b] = await store.claimDeliveries('b', 10, 500);
    expect(names([b], ids)).toEqual(['0:s1']);
    expect(b.firstAttemptAt.getTime()).toBe(db(store, T0 + 10));
    expect(
      (await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'delivered' } }], { owner: 'a' })).stale,
    ).toHaveLength(1);
  });

  it('sinkIds: only those sinks ([] none, without an error); excludeSinkIds: the others', async () => {
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
    expect(
      sinks(await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['s1', 's3'], excludeSinkIds: ['s3'] })),
    ).toEqual(['0:s1', '1:s1']);
  });

  it('two instances claiming the same deliveries at once split them: none claimed twice', async () => {
    const a = await openStore();
    const b = await openStore({ schema: schemaOf(a) });
    const keys = Array.from({ length: 40 }, (_, i) => `K${i}`);
    await routed(a, keys, { strict: false });
    const got: string[] = [];
    for (let round = 0; round < 10; round++) {
      const [x, y] = await Promise.all([a.claimDeliveries('a', 5, 60_000), b.claimDeliveries('b', 5, 60_000)]);
      got.push(...x.map((d) => d.id), ...y.map((d) => d.id));
    }
    expect(got).toHaveLength(40);
    expect(new Set(got).size).toBe(40);
  });
});

pgDescribe('PostgresMessageStore renewDeliveryLeases', () => {
  it("extends its owner's leases from now; [] and exactly one statement's worth (200) of ids without an error", async () => {
    const store = await openStore();
    const keys = Array.from({ length: 200 }, (_, i) => `K${i}`);
    await routed(store, keys, { strict: false });
    const claimed = await store.claimDeliveries('me', 1000, 500);
    expect(claimed).toHaveLength(200);
    expect(await store.renewDeliveryLeases('me', [], 500)).toEqual([]);
    expect(await store.renewDeliveryLeases('other', [claimed[0].id], 500)).toEqual([]);
    clock = T0 + 400;
    const renewed = await store.renewDeliveryLeases(
      'me',
      claimed.map((d) => d.id),
      500,
    );
    expect(renewed.sort()).toEqual(claimed.map((d) => d.id).sort());
    clock = T0 + 899;
    expect(await store.claimDeliveries('other', 1000, 500)).toEqual([]);
    clock = T0 + 900;
    expect(await store.claimDeliveries('other', 1000, 500)).toHaveLength(200);
  });
});
