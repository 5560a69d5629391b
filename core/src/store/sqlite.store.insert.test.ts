import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import type { InsertResult, NewMessage } from './message-store';
import { SqliteMessageStore } from './sqlite.store';

/**
 * `insert` and its group commit on a real SQLite file, in seconds: no caller is told its messages
 * are stored before the transaction holding them commits, a failed batch fails every caller it
 * holds (or, when only one call is at fault, the others are committed one by one), malformed
 * calls are refused alone, and batches are cut at maxBatch without losing a call. (The
 * conformance suite, sqlite.store.test.ts, covers the rest of the store; scripts/mutation.mjs runs
 * this file for the `store` module's mutants instead of it.)
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-insert-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const open: SqliteMessageStore[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

type Logged = { level: string; message: string; meta?: Record<string, unknown> };
/** What the group commit logged (not the store's other notices, e.g. a side thread not built). */
const commitLog = (logged: Logged[]) => logged.filter((l) => l.message.startsWith('store group commit'));
let n = 0;
async function openStore(
  opts: { maxBatch?: number; now?: () => number } = {},
): Promise<{ store: SqliteMessageStore; logged: Logged[] }> {
  const logged: Logged[] = [];
  const logger = silentLogger();
  for (const level of ['warn', 'error'] as const)
    logger[level] = ((message: string, meta?: Record<string, unknown>) => (
      logged.push({ level, message, meta }),
      logger
    )) as never;
  const store = new SqliteMessageStore({
    path: path.join(dir, `i${++n}.db`),
    logger,
    groupCommit: opts.maxBatch ? { maxBatch: opts.maxBatch } : undefined,
    now: opts.now,
  });
  await store.open();
  open.push(store);
  return { store, logged };
}

const msg = (tag: string, over: Partial<NewMessage> = {}): NewMessage => ({
  sourceId: 'src-a',
  contentType: 'text/plain',
  body: Buffer.from(`body ${tag}`),
  headers: { controlId: tag },
  ...over,
});

/** The bodies stored under `ids`, read through a connection of its own (what is committed). */
function committedBodies(file: string, ids: string[]): string[] {
  const db = new Database(file, { readonly: true });
  try {
    const get = db.prepare('SELECT body FROM message_content WHERE message_id = ?');
    return ids.map((id) => String((get.get(id) as { body?: Buffer } | undefined)?.body ?? '<none>'));
  } finally {
    db.close();
  }
}
function committedCount(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return Number((db.prepare('SELECT COUNT(*) AS n FROM messages').get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/** Tracks which of `calls` have settled. */
function track<T>(calls: Promise<T>[]): { settled: () => number } {
  let settled = 0;
  for (const c of calls)
    c.then(
      () => settled++,
      () => settled++,
    );
  return { settled: () => settled };
}
/** The connection's `synchronous` setting after its last transaction (2 = FULL). */
const syncMode = (s: SqliteMessageStore) =>
  Number((s as unknown as { db: Database.Database }).db.pragma('synchronous', { simple: true }));
/**
 * The last commit reached the disk before its callers were told: committed with FULL (the first
 * commits of a new file, before its WAL exists) or the WAL fdatasynced since `walSyncsBefore` (WalSync).
 */
const synced = (s: SqliteMessageStore, walSyncsBefore: number) => syncMode(s) === 2 || s.walSyncs - walSyncsBefore >= 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ids = (rs: InsertResult[]) => rs.map((r) => r.id);

describe('insert: nothing resolved before its transaction commits', () => {
  it('while another connection holds the write lock no caller resolves and nothing is visible; then all resolve at once, each with its own messages', async () => {
    const { store } = await openStore();
    const other = new Database(store.file);
    other.exec('BEGIN IMMEDIATE');
    const before = store.insertCommits;
    const walBefore = store.walSyncs;
    const calls = [
      store.insert([msg('a1'), msg('a2')]),
      store.insert([msg('b1')]),
      store.insert([msg('c1'), msg('c2'), msg('c3')]),
    ];
    const t = track(calls);
    await sleep(150);
    expect(t.settled()).toBe(0);
    expect(committedCount(store.file)).toBe(0);
    expect(store.insertCommits).toBe(before);
    other.exec('COMMIT');
    other.close();
    const [a, b, c] = await Promise.all(calls);
    // One group commit for the three calls, each told about its own messages, in its own order.
    expect(store.insertCommits - before).toBe(1);
    expect(synced(store, walBefore)).toBe(true); // on disk before the callers are told
    expect(committedBodies(store.file, ids(a))).toEqual(['body a1', 'body a2']);
    expect(committedBodies(store.file, ids(b))).toEqual(['body b1']);
    expect(committedBodies(store.file, ids(c))).toEqual(['body c1', 'body c2', 'body c3']);
    expect([...a, ...b, ...c].every((r) => r.stored && !r.duplicate)).toBe(true);
  });

  it('calls made while a commit is in flight wait for the next commit, which follows by itself', async () => {
    const { store } = await openStore();
    const other = new Database(store.file);
    other.exec('BEGIN IMMEDIATE');
    const before = store.insertCommits;
    const first = store.insert([msg('first')]);
    await sleep(30); // its flush is under way, waiting for the lock
    const later = [store.insert([msg('l1')]), store.insert([msg('l2')])];
    await sleep(30);
    const t = track([first, ...later]);
    await sleep(30);
    expect(t.settled()).toBe(0);
    other.exec('COMMIT');
    other.close();
    const [f, l1, l2] = await Promise.all([first, ...later]);
    expect(store.insertCommits - before).toBe(2); // the first alone, then the two later ones together
    expect(committedBodies(store.file, [...ids(f), ...ids(l1), ...ids(l2)])).toEqual([
      'body first',
      'body l1',
      'body l2',
    ]);
  });
});

describe('insert: a failed batch', () => {
  // SQLite's own size limit gives the SQLITE_FULL of a full disk (see sqlite.store.test.ts).
  const fill = (s: SqliteMessageStore, pages?: number) => {
    const db = (s as unknown as { db: Database.Database }).db;
    db.pragma(`max_page_count = ${pages ?? Number(db.pragma('page_count', { simple: true }))}`);
  };
  const big = (tag: string) => msg(tag, { body: Buffer.alloc(30_000, tag) });

  it('the store unable to write (disk full): every caller of the batch is rejected with the cause, none committed one by one', async () => {
    const { store, logged } = await openStore();
    await store.insert([msg('before')]);
    fill(store);
    const before = store.insertCommits;
    const results = await Promise.allSettled([
      store.insert([big('x')]),
      store.insert([big('y'), big('z')]),
      store.insert([big('w')]),
    ]);
    for (const r of results)
      expect(r).toMatchObject({
        status: 'rejected',
        reason: { code: 'FERRY_E_TRANSIENT_STORE_FULL', retryable: true },
      });
    expect(store.insertCommits).toBe(before);
    expect(commitLog(logged)).toEqual([]);
    fill(store, 1_000_000);
    expect(committedCount(store.file)).toBe(1);
  });

  it('one call at fault (a header that cannot be written): it alone is rejected, the others committed one by one', async () => {
    const { store, logged } = await openStore();
    const before = store.insertCommits;
    const walBefore = store.walSyncs;
    const bad = msg('bad', { headers: { controlId: 'bad', size: 1n } as never });
    const [ok1, wrong, ok2] = await Promise.allSettled([
      store.insert([msg('ok1')]),
      store.insert([msg('bad-neighbour'), bad]),
      store.insert([msg('ok2'), msg('ok3')]),
    ]);
    expect(wrong).toMatchObject({ status: 'rejected', reason: { code: 'FERRY_E_TRANSIENT_STORE_WRITE' } });
    expect((wrong as PromiseRejectedResult).reason.message).toBe(
      'could not store messages: Do not know how to serialize a BigInt',
    );
    // Synced to disk, one by one too (acknowledged data survives a power loss).
    expect(synced(store, walBefore)).toBe(true);
    expect(ok1.status).toBe('fulfilled');
    expect(ok2.status).toBe('fulfilled');
    const [r1, r2] = [ok1, ok2].map((r) => (r as PromiseFulfilledResult<InsertResult[]>).value);
    expect(committedBodies(store.file, [...ids(r1), ...ids(r2)])).toEqual(['body ok1', 'body ok2', 'body ok3']);
    // Nothing of the failed call, not even its good message.
    expect(committedCount(store.file)).toBe(3);
    expect(store.insertCommits - before).toBe(2);
    expect(commitLog(logged)).toEqual([
      {
        level: 'warn',
        message: 'store group commit failed; committing calls one by one',
        meta: expect.objectContaining({ store: 'sqlite', calls: 3 }),
      },
    ]);
  });

  it("a failed call's checkpoint is not written either (one transaction)", async () => {
    const { store } = await openStore();
    await store.insert([msg('first')], { checkpoint: { sourceId: 'poller', key: 'cursor', value: '1' } });
    const bad = msg('bad', { headers: { controlId: 'bad', size: 1n } as never });
    await expect(
      store.insert([msg('good'), bad], { checkpoint: { sourceId: 'poller', key: 'cursor', value: '2' } }),
    ).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_WRITE' });
    expect(await store.getCheckpoint('poller', 'cursor')).toBe('1');
    expect(committedCount(store.file)).toBe(1);
  });

  it('a call alone that fails is rejected with its cause as a write error, without a retry one by one', async () => {
    const { store, logged } = await openStore();
    const bad = msg('bad', { headers: { controlId: 'bad', size: 1n } as never });
    await expect(store.insert([bad])).rejects.toMatchObject({
      code: 'FERRY_E_TRANSIENT_STORE_WRITE',
      kind: 'transient',
      details: { store: 'sqlite' },
    });
    expect(commitLog(logged)).toEqual([]);
    expect(committedCount(store.file)).toBe(0);
  });
});

describe('insert: the WAL cannot be synced after the commit', () => {
  it("an I/O error on the WAL's fdatasync: every caller of the batch is rejected with it (none told stored), the next batch is synced again", async () => {
    const { store } = await openStore();
    await store.insert([msg('before')]); // the WAL exists and its sync is open
    // The WAL's descriptor swapped for one the kernel refuses to sync (EINVAL on /dev/null): a real failed
    // fdatasync. The transaction itself commits; what the callers are told must wait for the sync.
    const wal = (store as unknown as { walSync: { fd?: number } }).walSync;
    const realFd = wal.fd;
    const devNull = fs.openSync('/dev/null', 'r');
    wal.fd = devNull;
    try {
      const results = await Promise.allSettled([store.insert([msg('x')]), store.insert([msg('y'), msg('z')])]);
      expect(results).toEqual([
        expect.objectContaining({
          status: 'rejected',
          reason: expect.objectContaining({ code: 'FERRY_E_TRANSIENT_STORE_IO', retryable: true }),
        }),
        expect.objectContaining({
          status: 'rejected',
          reason: expect.objectContaining({ code: 'FERRY_E_TRANSIENT_STORE_IO', retryable: true }),
        }),
      ]);
    } finally {
      wal.fd = realFd;
      fs.closeSync(devNull);
    }
    // Synced again: the next caller is told its message is stored.
    const [after] = await store.insert([msg('after')]);
    expect(after).toMatchObject({ stored: true });
  });
});

describe('insert: malformed calls', () => {
  it('are refused alone, before the transaction, each with its code; the others in the group are stored', async () => {
    const { store } = await openStore();
    const before = store.insertCommits;
    const cases: [NewMessage, string][] = [
      [null as unknown as NewMessage, 'FERRY_E_INPUT_MESSAGE_NO_SOURCE'],
      [msg('s', { sourceId: '' }), 'FERRY_E_INPUT_MESSAGE_NO_SOURCE'],
      [msg('s', { sourceId: 7 as unknown as string }), 'FERRY_E_INPUT_MESSAGE_NO_SOURCE'],
      [msg('b', { body: 'text' as unknown as Buffer }), 'FERRY_E_INPUT_MESSAGE_BODY'],
      [msg('c', { contentType: '' }), 'FERRY_E_INPUT_MESSAGE_CONTENT_TYPE'],
      [msg('c', { contentType: undefined as unknown as string }), 'FERRY_E_INPUT_MESSAGE_CONTENT_TYPE'],
      [msg('c', { contentType: 42 as unknown as string }), 'FERRY_E_INPUT_MESSAGE_CONTENT_TYPE'],
    ];
    const good = store.insert([msg('good')]);
    // A bad message after a good one in the same call fails the whole call.
    const results = await Promise.allSettled(cases.map(([m]) => store.insert([msg('fine'), m])));
    const says = {
      FERRY_E_INPUT_MESSAGE_NO_SOURCE: /needs a sourceId/,
      FERRY_E_INPUT_MESSAGE_BODY: /body must be a Buffer/,
      FERRY_E_INPUT_MESSAGE_CONTENT_TYPE: /needs a content type/,
    } as Record<string, RegExp>;
    results.forEach((r, i) => {
      expect(r).toMatchObject({ status: 'rejected', reason: { code: cases[i][1], kind: 'input' } });
      expect((r as PromiseRejectedResult).reason.message).toMatch(says[cases[i][1]]);
    });
    expect(committedBodies(store.file, ids(await good))).toEqual(['body good']);
    expect(committedCount(store.file)).toBe(1);
    expect(store.insertCommits - before).toBe(1);
  });

  it('a batch of malformed calls only commits nothing', async () => {
    const { store } = await openStore();
    const before = store.insertCommits;
    await expect(store.insert([msg('b', { body: 'x' as unknown as Buffer })])).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_MESSAGE_BODY',
    });
    // The next call's commit is the only one (its batch starts once the refused one's is over).
    await store.insert([msg('after')]);
    expect(store.insertCommits - before).toBe(1);
  });

  it('nothing to store: [] at once, no commit; a checkpoint alone is committed; a closed store rejects (never throws)', async () => {
    const { store } = await openStore();
    const before = store.insertCommits;
    expect(await store.insert([])).toEqual([]);
    expect(await store.insert([], {})).toEqual([]);
    expect(store.insertCommits).toBe(before);
    expect(await store.insert([], { checkpoint: { sourceId: 'p', key: 'k', value: 'v1' } })).toEqual([]);
    expect(store.insertCommits - before).toBe(1);
    expect(await store.getCheckpoint('p', 'k')).toBe('v1');
    await store.close();
    let thrown: unknown;
    let p: Promise<unknown> | undefined;
    try {
      p = store.insert([msg('late')]);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeUndefined();
    await expect(p).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CLOSED' });
  });
});

describe('insert: batches cut at maxBatch', () => {
  /** Calls of `sizes` messages made in one turn; the number of commits they took. */
  async function commitsFor(maxBatch: number, sizes: number[]): Promise<number> {
    const { store } = await openStore({ maxBatch });
    const before = store.insertCommits;
    const calls = sizes.map((k, c) =>
      store.insert(
        Array.from({ length: k }, (_, i) => msg(`${c}.${i}`)),
        k
          ? undefined
          : {
              checkpoint: { sourceId: 'p', key: `k${c}`, value: 'v' },
            },
      ),
    );
    const results = await Promise.all(calls);
    results.forEach((r, c) => expect(r).toHaveLength(sizes[c]));
    const all = results.flat();
    expect(committedBodies(store.file, ids(all))).toEqual(
      sizes.flatMap((k, c) => Array.from({ length: k }, (_, i) => `body ${c}.${i}`)),
    );
    return store.insertCommits - before;
  }

  it('whole calls up to maxBatch messages per commit, in order; the rest in the next, none lost', async () => {
    expect(await commitsFor(4, [2, 2, 2, 2])).toBe(2);
    expect(await commitsFor(4, [3, 3, 3])).toBe(3); // 3 + 3 > 4: never split a call
    expect(await commitsFor(4, [1, 3, 1])).toBe(2); // 1 + 3 = 4 fits
    expect(await commitsFor(4, [4, 1])).toBe(2);
    expect(await commitsFor(10, [1, 1, 1, 1, 1])).toBe(1);
  });

  it('a call larger than maxBatch goes alone; a checkpoint without messages counts as one', async () => {
    expect(await commitsFor(4, [6])).toBe(1);
    expect(await commitsFor(4, [1, 6, 1])).toBe(3);
    expect(await commitsFor(2, [1, 0, 1])).toBe(2);
  });

  it('maxBatch 1: every call commits alone', async () => {
    expect(await commitsFor(1, [1, 1, 1])).toBe(3);
  });
});

describe('insert: the rows it writes', () => {
  it('each message as given: source, content type, headers (none: {}), received time (given, else the store clock), body, one received event', async () => {
    const clock = Date.UTC(2026, 5, 1, 12);
    const { store } = await openStore({ now: () => clock });
    const given = new Date(Date.UTC(2026, 4, 30));
    const [a, b] = await store.insert([
      msg('a', {
        contentType: 'application/hl7-v2',
        receivedAt: given,
        headers: { controlId: 'a', messageType: 'ADT^A01', orderingKey: 'MRN1' },
      }),
      { sourceId: 'src-b', contentType: 'application/json', body: Buffer.from('{"x":1}') },
    ]);
    const ma = (await store.getMessage(a.id, { body: true }))!;
    expect(ma).toMatchObject({
      id: a.id,
      sourceId: 'src-a',
      contentType: 'application/hl7-v2',
      headers: { controlId: 'a', messageType: 'ADT^A01', orderingKey: 'MRN1' },
      status: 'received',
    });
    expect(ma.receivedAt.getTime()).toBe(given.getTime());
    expect((ma as { orderingKey?: string }).orderingKey).toBe('MRN1');
    expect(String(ma.body)).toBe('body a');
    const mb = (await store.getMessage(b.id, { body: true }))!;
    expect(mb).toMatchObject({ sourceId: 'src-b', contentType: 'application/json', headers: {}, status: 'received' });
    expect(mb.receivedAt.getTime()).toBe(clock);
    expect(String(mb.body)).toBe('{"x":1}');
    expect(mb.seq).toBeGreaterThan(ma.seq);
    for (const id of [a.id, b.id])
      expect((await store.events(id)).map((e) => [e.status, e.detail ?? null, e.at.getTime()])).toEqual([
        ['received', null, clock],
      ]);
    expect(await store.listMessages({ controlId: 'a' })).toHaveLength(1);
    expect(await store.listMessages({ messageType: 'ADT^A01' })).toHaveLength(1);
  });

  it('more messages than one multi-row INSERT takes: every one stored, body for body, with its event', async () => {
    const { store } = await openStore();
    const tags = Array.from({ length: 450 }, (_, i) => `m${i}`);
    const rs = await store.insert(tags.map((t) => msg(t)));
    expect(new Set(ids(rs)).size).toBe(450);
    expect(committedBodies(store.file, ids(rs))).toEqual(tags.map((t) => `body ${t}`));
    for (const i of [0, 199, 200, 399, 400, 449])
      expect((await store.events(rs[i].id)).map((e) => e.status)).toEqual(['received']);
    expect(await store.countMessages(['received'])).toEqual({ received: 450 });
  });

  it('compared only when asked: without duplicate options the same message twice is stored twice; with them, by content', async () => {
    const { store } = await openStore();
    const [a] = await store.insert([msg('same')]);
    const [b] = await store.insert([msg('same')]);
    expect(b).toMatchObject({ stored: true, duplicate: false });
    expect(b.id).not.toBe(a.id);
    const dup = { duplicates: { policy: 'ignore' as const, windowMs: 60_000 } };
    const [c] = await store.insert([msg('x')], dup);
    expect(await store.insert([msg('x')], dup)).toEqual([
      { id: c.id, duplicate: true, duplicateOf: c.id, stored: false },
    ]);
    const [d] = await store.insert([msg('x', { body: Buffer.from('other content') })], dup);
    expect(d).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: c.id });
    expect((await store.events(c.id)).map((e) => [e.status, e.detail ?? null])).toEqual([
      ['received', null],
      ['duplicate', 'ignored'],
    ]);
    expect((await store.events(d.id)).map((e) => [e.status, e.detail ?? null])).toEqual([
      ['received', null],
      ['control-id-reused', `control id of ${c.id}, other content`],
    ]);
    const [kept] = await store.insert([msg('x')], { duplicates: { policy: 'accept', windowMs: 60_000 } });
    expect(kept).toMatchObject({ stored: true, duplicate: true, duplicateOf: c.id });
    expect((await store.getMessage(kept.id))!.duplicateOf).toBe(c.id);
    expect((await store.events(kept.id)).map((e) => [e.status, e.detail ?? null])).toEqual([
      ['received', `duplicate of ${c.id}`],
    ]);
    // A source's own content hash is the content compared.
    const [e] = await store.insert([msg('h', { contentHash: 'H1', body: Buffer.from('one') })], dup);
    const [f] = await store.insert([msg('h', { contentHash: 'H1', body: Buffer.from('two') })], dup);
    expect(f).toMatchObject({ duplicate: true, duplicateOf: e.id, stored: false });
  });
});
