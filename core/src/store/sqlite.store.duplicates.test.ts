import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { silentLogger } from '../logging/logger';
import { duplicatesConformance, type StoreHarness } from './__fixtures__/conformance';
import type { MessageStore, NewMessage } from './message-store';
import { dedupKey } from './sql/sql-exec';
import { SqliteMessageStore } from './sqlite.store';

/**
 * The duplicate decision at sizes and mixes the conformance suite does not reach: lookups of more
 * control ids than one query takes, several sources and windows in one group commit, the events
 * it leaves. (The rules themselves: __fixtures__/conformance.ts, "duplicates".)
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-dup-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
async function openStore(): Promise<SqliteMessageStore> {
  const s = new SqliteMessageStore({ path: path.join(dir, `d${++n}.db`), logger: silentLogger() });
  await s.open();
  return s;
}

const msg = (ctl: string, over: Partial<NewMessage> = {}, body = `body of ${ctl}`): NewMessage => ({
  sourceId: 'src-a',
  contentType: 'text/plain',
  body: Buffer.from(body),
  headers: { messageType: 'ADT^A01', controlId: ctl, sendingApplication: 'APP', sendingFacility: 'FAC' },
  ...over,
});
const ignore = (windowMs = 60_000) => ({ duplicates: { policy: 'ignore' as const, windowMs } });

describe('SqliteMessageStore duplicates at size', () => {
  it('finds every duplicate among 450 control ids of one call (more than one lookup query takes), and stores none of them again', async () => {
    const store = await openStore();
    const ctls = Array.from({ length: 450 }, (_, i) => `C${i}`);
    const first = await store.insert(
      ctls.map((c) => msg(c)),
      ignore(),
    );
    expect(first.every((r) => r.stored && !r.duplicate)).toBe(true);
    const again = await store.insert(
      ctls.map((c) => msg(c)),
      ignore(),
    );
    expect(again.map((r, i) => r.duplicateOf === first[i].id && !r.stored)).toEqual(ctls.map(() => true));
    expect(await store.countMessages(['received'])).toEqual({ received: 450 });
    // every first copy got its `duplicate` event
    for (const i of [0, 199, 200, 399, 400, 449])
      expect((await store.events(first[i].id)).map((e) => e.status)).toEqual(['received', 'duplicate']);
    await store.close();
  });

  it('one group commit of calls from several sources and windows: each compared only with its own source, within its own window', async () => {
    const store = await openStore();
    const now = Date.now();
    const [a] = await store.insert([msg('X', { receivedAt: new Date(now - 5000) })], ignore());
    const [b] = await store.insert([msg('X', { sourceId: 'src-b', receivedAt: new Date(now - 5000) })], ignore());
    // concurrent calls: one group commit, one lookup per source
    const [ra, rb, rShort, rc] = await Promise.all([
      store.insert([msg('X', { receivedAt: new Date(now) })], ignore()),
      store.insert([msg('X', { sourceId: 'src-b', receivedAt: new Date(now) })], ignore()),
      // the first copy is 5 s old: outside a 1 s window, so a new message (and no reuse: nothing in the window)
      store.insert([msg('X', { sourceId: 'src-b', receivedAt: new Date(now) })], ignore(1000)),
      store.insert([msg('X', { sourceId: 'src-c', receivedAt: new Date(now) })], ignore()),
    ]);
    expect(ra[0]).toEqual({ id: a.id, duplicate: true, duplicateOf: a.id, stored: false });
    expect(rb[0]).toEqual({ id: b.id, duplicate: true, duplicateOf: b.id, stored: false });
    expect(rShort[0]).toMatchObject({ stored: true, duplicate: false });
    expect(rShort[0].reusesControlIdOf).toBeUndefined();
    expect(rc[0]).toMatchObject({ stored: true, duplicate: false });
    await store.close();
  });

  it('the newest earlier copy with other content is the one reused; an identical one anywhere in the window wins over it', async () => {
    const store = await openStore();
    const now = Date.now();
    const [v1] = await store.insert([msg('R', { receivedAt: new Date(now - 3000) }, 'one')], ignore());
    const [v2] = await store.insert([msg('R', { receivedAt: new Date(now - 2000) }, 'two')], ignore());
    const [v3] = await store.insert([msg('R', { receivedAt: new Date(now - 1000) }, 'three')], ignore());
    expect(v2).toMatchObject({ stored: true, reusesControlIdOf: v1.id });
    expect(v3).toMatchObject({ stored: true, reusesControlIdOf: v2.id });
    // identical to the oldest: a duplicate of it, not a reuse of the newest
    const [again] = await store.insert([msg('R', { receivedAt: new Date(now) }, 'one')], ignore());
    expect(again).toEqual({ id: v1.id, duplicate: true, duplicateOf: v1.id, stored: false });
    // accept: stored again as a duplicate of the identical one -- and then no reuse of the newest either
    const [kept] = await store.insert([msg('R', { receivedAt: new Date(now) }, 'one')], {
      duplicates: { policy: 'accept', windowMs: 60_000 },
    });
    expect(kept).toMatchObject({ stored: true, duplicate: true, duplicateOf: v1.id });
    expect(kept.reusesControlIdOf).toBeUndefined();
    expect((await store.events(kept.id)).map((e) => e.status)).toEqual(['received']);
    // other content again: reuses the newest (v3); its event says so
    const [v4] = await store.insert([msg('R', { receivedAt: new Date(now) }, 'four')], ignore());
    expect(v4).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: v3.id });
    expect((await store.events(v4.id)).map((e) => [e.status, e.detail])).toEqual([
      ['received', undefined],
      ['control-id-reused', `control id of ${v3.id}, other content`],
    ]);
    await store.close();
  });

  it('accept: a duplicate stored again is marked, its event names the first copy, and the first copy gets no duplicate event', async () => {
    const store = await openStore();
    const [a] = await store.insert([msg('A1')], { duplicates: { policy: 'accept', windowMs: 60_000 } });
    const [b] = await store.insert([msg('A1')], { duplicates: { policy: 'accept', windowMs: 60_000 } });
    expect(b).toMatchObject({ stored: true, duplicate: true, duplicateOf: a.id });
    expect((await store.events(b.id)).map((e) => [e.status, e.detail])).toEqual([['received', `duplicate of ${a.id}`]]);
    expect((await store.events(a.id)).map((e) => e.status)).toEqual(['received']);
    // a third copy is a duplicate of the first, not of the second (which is itself a duplicate)
    const [c] = await store.insert([msg('A1')], { duplicates: { policy: 'accept', windowMs: 60_000 } });
    expect(c.duplicateOf).toBe(a.id);
    // reject's event says rejected
    const [r] = await store.insert([msg('A1')], { duplicates: { policy: 'reject', windowMs: 60_000 } });
    expect(r).toMatchObject({ stored: false, duplicateOf: a.id });
    expect((await store.events(a.id)).map((e) => [e.status, e.detail])).toEqual([
      ['received', undefined],
      ['duplicate', 'rejected'],
    ]);
    await store.close();
  });
});

describe('SqliteMessageStore duplicates: details the rules leave open', () => {
  it('the duplicate key is stored with each row, so its format is fixed: sending application | facility | control id', () => {
    expect(dedupKey({ controlId: 'C1', sendingApplication: 'APP', sendingFacility: 'FAC' })).toBe('APP|FAC|C1');
    expect(dedupKey({ controlId: 'C1' })).toBe('||C1');
    expect(dedupKey({ controlId: 'C1', sendingFacility: 'FAC' })).toBe('|FAC|C1');
    expect(dedupKey({ sendingApplication: 'APP' })).toBeUndefined();
    expect(dedupKey(undefined)).toBeUndefined();
  });

  it('the same bytes from another sending application or facility are not duplicates', async () => {
    const store = await openStore();
    const same = Buffer.from('identical bytes');
    const [a] = await store.insert([msg('S1', {}, 'identical bytes')], ignore());
    for (const headers of [
      { controlId: 'S1', sendingApplication: 'OTHER', sendingFacility: 'FAC' },
      { controlId: 'S1', sendingApplication: 'APP', sendingFacility: 'OTHER' },
    ]) {
      const [r] = await store.insert([{ ...msg('S1'), body: same, headers }], ignore());
      expect(r).toMatchObject({ stored: true, duplicate: false });
      expect(r.reusesControlIdOf).toBeUndefined();
    }
    expect((await store.insert([msg('S1', {}, 'identical bytes')], ignore()))[0].duplicateOf).toBe(a.id);
    await store.close();
  });

  it("ignore's event on the first copy says ignored (reject's says rejected)", async () => {
    const store = await openStore();
    const [a] = await store.insert([msg('I1')], ignore());
    await store.insert([msg('I1')], ignore());
    expect((await store.events(a.id)).map((e) => [e.status, e.detail])).toEqual([
      ['received', undefined],
      ['duplicate', 'ignored'],
    ]);
    await store.close();
  });

  it('accept, three copies in one call: the second and third are duplicates of the first, not of each other', async () => {
    const store = await openStore();
    const rs = await store.insert([msg('T1'), msg('T1'), msg('T1')], {
      duplicates: { policy: 'accept', windowMs: 60_000 },
    });
    expect(rs[0]).toMatchObject({ stored: true, duplicate: false });
    expect(rs.slice(1).map((r) => [r.stored, r.duplicateOf])).toEqual([
      [true, rs[0].id],
      [true, rs[0].id],
    ]);
    await store.close();
  });

  it('several rows stored before content hashes, compared in one lookup by the hashes of their bodies', async () => {
    const store = await openStore();
    const first = await store.insert([msg('L1'), msg('L2'), msg('L3')], ignore());
    const db = new Database(store.file);
    try {
      db.exec('UPDATE messages SET content_hash = NULL');
    } finally {
      db.close();
    }
    const again = await store.insert([msg('L1'), msg('L2'), msg('L3', {}, 'changed')], ignore());
    expect(again.map((r) => [r.duplicateOf ?? null, r.stored])).toEqual([
      [first[0].id, false],
      [first[1].id, false],
      [null, true],
    ]);
    expect(again[2].reusesControlIdOf).toBe(first[2].id);
    await store.close();
  });
});

/**
 * The conformance suite's duplicate rules alone, on SQLite (they run in sqlite.store.test.ts too):
 * the store-dedupe module's mutation run (scripts/mutation.mjs) needs them without the rest of
 * that suite, every test of which inserts and so reaches the duplicate decision.
 */
describe('MessageStore conformance, duplicates only: sqlite', () => {
  const h: StoreHarness = {
    make: (opts) =>
      new SqliteMessageStore({ path: path.join(dir, `c${++n}.db`), logger: silentLogger(), now: opts?.now }),
    rawSql: async (s, sql) => {
      const db = new Database((s as SqliteMessageStore).file);
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    },
  };
  let store: MessageStore;
  const extra: MessageStore[] = [];
  beforeEach(async () => {
    store = h.make();
    await store.open();
  });
  afterEach(async () => {
    for (const s of extra.splice(0)) await s.close();
    await store.close();
  });
  duplicatesConformance({ name: 'sqlite', h, extra, store: () => store });
});
