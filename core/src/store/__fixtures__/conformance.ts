/**
 * The behaviour every MessageStore must have, as a jest suite. `sqlite.store.test.ts` and
 * `postgres.store.test.ts` run it against a fresh store each; a third-party store can too.
 */
import type { Bundle } from '@medplum/fhirtypes';
import { issuesOf, type DataQualityIssue, type MessageStatus } from '../../model/message';
import type { MessageFilter, MessageStore, NewMessage, ProcessedMessage } from '../message-store';
import { migrations, type Dialect } from '../schema';

export interface StoreHarness {
  /** A new, empty, unopened store. `groupCommit` as in the config; `now` its clock (a fake one in tests). */
  make(opts?: { groupCommit?: { maxBatch?: number }; now?: () => number }): MessageStore;
  /** A second store on the same database (another engine process). */
  sibling?(store: MessageStore): MessageStore;
  /** Number of insert transactions committed so far by the store (group-commit check). */
  commits?(store: MessageStore): number;
  /**
   * Runs one SQL statement on the store's database behind its back (table names unqualified):
   * rows as an earlier schema version left them. Tests that need it are skipped without it.
   */
  rawSql?(store: MessageStore, sql: string): Promise<void>;
  /** The store's own bookkeeping checked (an index of its own kept exact); throws when it is not. */
  checkInvariants?(store: MessageStore, when: string): Promise<void>;
}

const bundleFor = (tag: string): Bundle => ({ resourceType: 'Bundle', type: 'collection', id: tag, entry: [] });

let counter = 0;
export function msg(over: Partial<NewMessage> = {}, controlId?: string): NewMessage {
  counter++;
  return {
    sourceId: 'src-a',
    contentType: 'application/hl7-v2',
    body: Buffer.from(`MSH|^~\\&|APP|FAC|||20250101||ADT^A01|${controlId ?? `C${counter}`}|P|2.5\r`),
    headers: { messageType: 'ADT^A01', controlId: controlId ?? `C${counter}`, sendingApplication: 'APP', sendingFacility: 'FAC' },
    ...over,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Insert, transform and route one message per key to one sink; returns the message ids. */
/**
 * Counts turns of the event loop while `work` runs: an operation done in one synchronous go (a
 * SQLite transaction) allows one or none; one done in steps with the loop free between, more.
 */
export async function loopTurnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let busy = true;
  const spin = () => {
    turns++;
    if (busy) setImmediate(spin);
  };
  setImmediate(spin);
  try {
    return { result: await work(), turns };
  } finally {
    busy = false;
  }
}

async function routed(store: MessageStore, keys: string[], opts: { sink?: string; strict?: boolean; sinks?: string[] } = {}): Promise<string[]> {
  const res = await store.insert(keys.map(() => msg()));
  const ids = res.map((r) => r.id);
  const claimed = await store.claimReceived('proc', ids.length, 60_000);
  expect(claimed.map((m) => m.id)).toEqual(ids);
  for (let i = 0; i < ids.length; i++) {
    await store.recordTransformed(ids[i], bundleFor(ids[i]), keys[i]);
    const sinks = opts.sinks ?? [opts.sink ?? 'sink-1'];
    await store.recordRouting(ids[i], {
      status: 'routed',
      deliveries: sinks.map((s) => ({ routeId: 'route-1', sinkId: s, bundle: bundleFor(ids[i]), strictOrder: opts.strict ?? true })),
    });
  }
  return ids;
}

export function storeConformance(name: string, h: StoreHarness): void {
  describe(`MessageStore conformance: ${name}`, () => {
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

    describe('lifecycle', () => {
      it('opens, applies migrations once, reopens the same data and closes', async () => {
        expect(store.isOpen()).toBe(true);
        const [r] = await store.insert([msg()]);
        if (h.sibling) {
          const again = h.sibling(store);
          await again.open(); // migrations already applied: no error, same data
          extra.push(again);
          expect((await again.getMessage(r.id))?.id).toBe(r.id);
        }
        await store.close();
        expect(store.isOpen()).toBe(false);
        await expect(store.insert([msg()])).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CLOSED', retryable: true });
        await store.open();
        expect((await store.getMessage(r.id))?.status).toBe('received');
      });
    });

    describe('insert', () => {
      it('stores messages with sortable unique ids and increasing seq, body and headers intact', async () => {
        const inputs = [msg(), msg(), msg({ receivedAt: new Date('2025-01-02T03:04:05Z') })];
        const res = await store.insert(inputs);
        expect(res.every((r) => r.stored && !r.duplicate)).toBe(true);
        const ids = res.map((r) => r.id);
        expect(new Set(ids).size).toBe(3);
        expect([...ids].sort()).toEqual(ids);
        const got = await Promise.all(ids.map((id) => store.getMessage(id, { body: true })));
        expect(got.map((m) => m!.seq)).toEqual([...got.map((m) => m!.seq)].sort((a, b) => a - b));
        expect(got[0]!.seq).toBeLessThan(got[1]!.seq);
        expect(got[0]!.body!.equals(inputs[0].body)).toBe(true);
        expect(got[0]!.headers).toEqual(inputs[0].headers);
        expect(got[0]!.status).toBe('received');
        expect(got[2]!.receivedAt.toISOString()).toBe('2025-01-02T03:04:05.000Z');
        expect((await store.getMessage(ids[0]))!.body).toBeUndefined();
        expect(await store.getMessage('nope')).toBeUndefined();
        const ev = await store.events(ids[0]);
        expect(ev.map((e) => e.status)).toEqual(['received']);
      });

      it('keeps binary bodies byte for byte', async () => {
        const body = Buffer.from([0, 1, 2, 0xff, 0x0b, 0x1c, 0x0d, 0xc3, 0x28]);
        const [r] = await store.insert([msg({ body })]);
        expect((await store.getMessage(r.id, { body: true }))!.body!.equals(body)).toBe(true);
      });

      it('group-commits concurrent inserts: each caller resolves after its batch is durable', async () => {
        const n = 60;
        const before = h.commits?.(store) ?? 0;
        const res = await Promise.all(Array.from({ length: n }, () => store.insert([msg()])));
        const commits = (h.commits?.(store) ?? 0) - before;
        if (h.commits) expect(commits).toBeLessThanOrEqual(n / 4);
        // Every resolved insert is readable (committed) from another connection.
        const reader = h.sibling ? h.sibling(store) : store;
        if (reader !== store) {
          await reader.open();
          extra.push(reader);
        }
        const seen = await reader.listMessages({ ids: res.map((r) => r[0].id) });
        expect(seen).toHaveLength(n);
      });

      it('with maxBatch 1 commits each call alone', async () => {
        const s = h.make({ groupCommit: { maxBatch: 1 } });
        await s.open();
        extra.push(s);
        const before = h.commits?.(s) ?? 0;
        await Promise.all(Array.from({ length: 10 }, () => s.insert([msg()])));
        if (h.commits) expect(h.commits(s) - before).toBe(10);
      });

      it('a bad call in a group does not fail the others', async () => {
        const good = Array.from({ length: 5 }, () => store.insert([msg()]));
        const bad = store.insert([{ ...msg(), body: 'not a buffer' as unknown as Buffer }]);
        await expect(bad).rejects.toMatchObject({ code: 'FERRY_E_INPUT_MESSAGE_BODY' });
        const ok = await Promise.all(good);
        expect(ok.flat().every((r) => r.stored)).toBe(true);
      });

      it('commits a checkpoint in the same transaction as the messages', async () => {
        await store.insert([msg(), msg()], { checkpoint: { sourceId: 'poller', key: 'cursor', value: '42' } });
        expect(await store.getCheckpoint('poller', 'cursor')).toBe('42');
        await store.setCheckpoint('poller', 'cursor', '43');
        expect(await store.getCheckpoint('poller', 'cursor')).toBe('43');
        expect(await store.getCheckpoint('poller', 'other')).toBeUndefined();
        await store.insert([], { checkpoint: { sourceId: 'poller', key: 'cursor', value: '44' } });
        expect(await store.getCheckpoint('poller', 'cursor')).toBe('44');
      });
    });

    describe('duplicates', () => {
      const dup = (policy: 'accept' | 'ignore' | 'reject', windowMs = 60_000) => ({ duplicates: { policy, windowMs } });

      it('ignore: acknowledges again without storing', async () => {
        const [a] = await store.insert([msg({}, 'DUP-1')], dup('ignore'));
        const [b] = await store.insert([msg({}, 'DUP-1')], dup('ignore'));
        expect(b).toEqual({ id: a.id, duplicate: true, duplicateOf: a.id, stored: false });
        expect(await store.listMessages({ sourceId: 'src-a' })).toHaveLength(1);
        expect((await store.events(a.id)).map((e) => e.status)).toEqual(['received', 'duplicate']);
      });

      it('reject: refuses without storing', async () => {
        const [a] = await store.insert([msg({}, 'DUP-2')], dup('reject'));
        const [b] = await store.insert([msg({}, 'DUP-2')], dup('reject'));
        expect(b).toMatchObject({ duplicate: true, duplicateOf: a.id, stored: false });
      });

      it('accept: stores again, marked as duplicate of the first', async () => {
        const [a] = await store.insert([msg({}, 'DUP-3')], dup('accept'));
        const [b] = await store.insert([msg({}, 'DUP-3')], dup('accept'));
        expect(b.stored).toBe(true);
        expect(b.duplicate).toBe(true);
        expect(b.duplicateOf).toBe(a.id);
        expect(b.id).not.toBe(a.id);
        expect((await store.getMessage(b.id))!.duplicateOf).toBe(a.id);
      });

      it('is per source, per sender and control id, within the window, and off without options', async () => {
        const now = Date.now();
        await store.insert([msg({}, 'DUP-4')], dup('ignore'));
        const [otherSource] = await store.insert([msg({ sourceId: 'src-b' }, 'DUP-4')], dup('ignore'));
        expect(otherSource.duplicate).toBe(false);
        const otherSender = msg({}, 'DUP-4');
        otherSender.headers = { ...otherSender.headers, sendingFacility: 'OTHER' };
        expect((await store.insert([otherSender], dup('ignore')))[0].duplicate).toBe(false);
        // received long ago: outside a 1 s window
        const [old] = await store.insert([msg({ receivedAt: new Date(now - 10_000) }, 'DUP-5')], dup('ignore'));
        expect(old.duplicate).toBe(false);
        expect((await store.insert([msg({}, 'DUP-5')], dup('ignore', 1000)))[0].duplicate).toBe(false);
        // without options: no detection at all
        expect((await store.insert([msg({}, 'DUP-4')]))[0].duplicate).toBe(false);
        // no control id: never a duplicate
        const noId = msg();
        noId.headers = { messageType: 'ADT^A01' };
        await store.insert([noId], dup('ignore'));
        expect((await store.insert([{ ...noId }], dup('ignore')))[0].duplicate).toBe(false);
      });

      /** An HL7 message of sender APP/FAC with control id `ctl`, sent at `ts` (MSH-7), of patient `mrn`. */
      const hl7 = (ctl: string, ts: string, mrn: string, over: Partial<NewMessage> = {}): NewMessage => ({
        sourceId: 'src-a',
        contentType: 'application/hl7-v2',
        body: Buffer.from(`MSH|^~\\&|APP|FAC|||${ts}||ADT^A01|${ctl}|P|2.5\rPID|1||${mrn}\r`),
        headers: { messageType: 'ADT^A01', controlId: ctl, sendingApplication: 'APP', sendingFacility: 'FAC' },
        ...over,
      });
      const byContent = (policy: 'accept' | 'ignore' | 'reject', windowMs = 60_000, ignoreFields: string[] = ['MSH-7']) => ({ duplicates: { policy, windowMs, ignoreFields } });

      it('judges by content: the same control id with other content is stored, processed and marked control-id-reused', async () => {
        const [a] = await store.insert([hl7('REUSE-1', '20250101', 'M1')], byContent('ignore'));
        const [b] = await store.insert([hl7('REUSE-1', '20250101', 'M2')], byContent('ignore'));
        expect(b).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: a.id });
        expect(b.duplicateOf).toBeUndefined();
        expect((await store.events(b.id)).map((e) => e.status)).toEqual(['received', 'control-id-reused']);
        expect((await store.events(b.id))[1].detail).toContain(a.id);
        expect((await store.getMessage(b.id))!.duplicateOf).toBeUndefined();
        // Both are claimed for processing.
        expect((await store.claimReceived('p', 10, 60_000)).map((m) => m.id)).toEqual([a.id, b.id]);
        // A resend of either is a duplicate of that one; the newest is matched first.
        const [c] = await store.insert([hl7('REUSE-1', '20250101', 'M2')], byContent('ignore'));
        expect(c).toEqual({ id: b.id, duplicate: true, duplicateOf: b.id, stored: false });
        const [d] = await store.insert([hl7('REUSE-1', '20250101', 'M1')], byContent('ignore'));
        expect(d).toEqual({ id: a.id, duplicate: true, duplicateOf: a.id, stored: false });
        // A third content: reuses the newest.
        const [e] = await store.insert([hl7('REUSE-1', '20250101', 'M3')], byContent('reject'));
        expect(e).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: b.id });
      });

      it('leaves the ignored fields out of the content: a resend with a new MSH-7 is a duplicate, unless MSH-7 counts', async () => {
        const [a] = await store.insert([hl7('REUSE-2', '20250101120000', 'M1')], byContent('ignore'));
        const [b] = await store.insert([hl7('REUSE-2', '20250101120500', 'M1')], byContent('ignore'));
        expect(b).toEqual({ id: a.id, duplicate: true, duplicateOf: a.id, stored: false });
        // Segment terminators do not count either (CRLF instead of CR).
        const crlf = hl7('REUSE-2', '20250101120000', 'M1');
        crlf.body = Buffer.from(crlf.body.toString('latin1').replace(/\r/g, '\r\n'), 'latin1');
        expect((await store.insert([crlf], byContent('ignore')))[0]).toMatchObject({ duplicate: true, duplicateOf: a.id });
        // With no ignored fields the timestamp is content.
        const [c] = await store.insert([hl7('REUSE-2', '20250101120500', 'M1')], byContent('ignore', 60_000, []));
        expect(c).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: a.id });
        // accept keeps a real duplicate, marked as one (not as a reuse). A hash is stored as its
        // insert computed it: c's (MSH-7 counted) matches no MSH-7-less hash; a's does.
        const [d] = await store.insert([hl7('REUSE-2', '20250101130000', 'M1')], byContent('accept'));
        expect(d).toMatchObject({ stored: true, duplicate: true, duplicateOf: a.id });
        expect(d.reusesControlIdOf).toBeUndefined();
      });

      it('compares by content inside one batch too', async () => {
        const r = await store.insert([hl7('REUSE-3', '1', 'M1'), hl7('REUSE-3', '2', 'M2'), hl7('REUSE-3', '3', 'M1')], byContent('ignore'));
        expect(r[0]).toMatchObject({ stored: true, duplicate: false });
        expect(r[1]).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: r[0].id });
        expect(r[2]).toEqual({ id: r[0].id, duplicate: true, duplicateOf: r[0].id, stored: false });
      });

      it('compares JSON as parsed, without its ignored paths; a source may bring its own content hash', async () => {
        const fhir = (json: object, ctl: string): NewMessage => ({ sourceId: 'src-j', contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(json)), headers: { controlId: ctl } });
        const opts = byContent('ignore', 60_000, ['meta.lastUpdated']);
        const [a] = await store.insert([fhir({ resourceType: 'Patient', id: 'p1', meta: { lastUpdated: '2025-01-01' }, gender: 'female' }, 'p1')], opts);
        // Other key order and lastUpdated: the same content.
        const [b] = await store.insert([fhir({ gender: 'female', meta: { lastUpdated: '2025-02-02' }, id: 'p1', resourceType: 'Patient' }, 'p1')], opts);
        expect(b).toMatchObject({ duplicate: true, duplicateOf: a.id, stored: false });
        const [c] = await store.insert([fhir({ resourceType: 'Patient', id: 'p1', gender: 'male' }, 'p1')], opts);
        expect(c).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: a.id });
        const own = (h: string): NewMessage => ({ ...fhir({ resourceType: 'Patient', id: 'p9' }, 'p9'), contentHash: h });
        const [d] = await store.insert([own('v1')], opts);
        expect((await store.insert([own('v1')], opts))[0]).toMatchObject({ duplicate: true, duplicateOf: d.id });
        expect((await store.insert([own('v2')], opts))[0]).toMatchObject({ stored: true, reusesControlIdOf: d.id });
      });

      it('the window bounds the content rule: just inside a duplicate, just outside a new message (and no reuse)', async () => {
        const now = Date.now();
        const at = (ms: number) => ({ receivedAt: new Date(ms) });
        const [a] = await store.insert([hl7('WIN-1', '1', 'M1', at(now - 10_000))], byContent('ignore', 10_000));
        // 10 s later exactly: still inside (received_at >= now - window).
        expect((await store.insert([hl7('WIN-1', '2', 'M1', at(now))], byContent('ignore', 10_000)))[0]).toMatchObject({ duplicate: true, duplicateOf: a.id });
        // One millisecond past the window: a new message, not marked as a reuse either.
        const [b] = await store.insert([hl7('WIN-1', '2', 'M1', at(now + 1))], byContent('ignore', 10_000));
        expect(b).toMatchObject({ stored: true, duplicate: false });
        expect(b.reusesControlIdOf).toBeUndefined();
        // Other content just inside the window: a reuse.
        const [c] = await store.insert([hl7('WIN-1', '2', 'M2', at(now + 9_000))], byContent('ignore', 10_000));
        expect(c).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: b.id });
      });

      it('compares with rows stored before content hashes by the hash of their body; a pruned body is other content', async () => {
        if (!h.rawSql) return;
        const [a] = await store.insert([hl7('OLD-1', '1', 'M1')], byContent('ignore'));
        const [b] = await store.insert([hl7('OLD-2', '1', 'M1')], byContent('ignore'));
        await h.rawSql(store, `UPDATE messages SET content_hash = NULL`);
        await h.rawSql(store, `UPDATE message_content SET body = NULL WHERE message_id = '${b.id}'`);
        expect((await store.insert([hl7('OLD-1', '2', 'M1')], byContent('ignore')))[0]).toEqual({ id: a.id, duplicate: true, duplicateOf: a.id, stored: false });
        expect((await store.insert([hl7('OLD-1', '2', 'M2')], byContent('ignore')))[0]).toMatchObject({ stored: true, reusesControlIdOf: a.id });
        expect((await store.insert([hl7('OLD-2', '1', 'M1')], byContent('ignore')))[0]).toMatchObject({ stored: true, duplicate: false, reusesControlIdOf: b.id });
      });

      it('catches a duplicate inside one batch and across concurrent group-committed calls', async () => {
        const r = await store.insert([msg({}, 'DUP-6'), msg({}, 'DUP-6')], dup('ignore'));
        expect(r[1]).toMatchObject({ duplicate: true, duplicateOf: r[0].id, stored: false });
        const many = await Promise.all(Array.from({ length: 8 }, () => store.insert([msg({}, 'DUP-7')], dup('ignore'))));
        expect(many.flat().filter((x) => x.stored)).toHaveLength(1);
      });
    });

    describe('duplicate window boundaries (a fake store clock; byte-identical resends)', () => {
      const HOUR = 3600_000;
      // A resend of the same bytes, received `afterMs` after the first on the store's clock.
      async function resendAfter(windowMs: number, afterMs: number, policy: 'ignore' | 'accept' | 'reject' = 'ignore') {
        let t = Date.parse('2031-03-04T05:06:07.000Z');
        const s = h.make({ now: () => t });
        extra.push(s);
        await s.open();
        const ctl = `WIN-${windowMs}-${afterMs}-${policy}`;
        const [first] = await s.insert([msg({}, ctl)], { duplicates: { policy, windowMs } });
        t += afterMs;
        const [again] = await s.insert([msg({}, ctl)], { duplicates: { policy, windowMs } });
        return { first, again };
      }

      it.each([
        ['1 s', 1000],
        ['the 24 h default', 24 * HOUR],
      ])('%s window: 1 ms inside is a duplicate, 1 ms outside is a new message', async (_name, windowMs) => {
        const inside = await resendAfter(windowMs, windowMs - 1);
        expect(inside.first).toMatchObject({ duplicate: false, stored: true });
        expect(inside.again).toEqual({ id: inside.first.id, duplicate: true, duplicateOf: inside.first.id, stored: false });
        const outside = await resendAfter(windowMs, windowMs + 1);
        expect(outside.again).toMatchObject({ duplicate: false, stored: true });
        expect(outside.again.id).not.toBe(outside.first.id);
      });

      it('24 h window: a resend 23 h 59 min later is a duplicate, 5x the window later is not', async () => {
        expect((await resendAfter(24 * HOUR, 24 * HOUR - 60_000)).again).toMatchObject({ duplicate: true, stored: false });
        expect((await resendAfter(24 * HOUR, 5 * 24 * HOUR)).again).toMatchObject({ duplicate: false, stored: true });
      });

      it('accept and reject see the same window', async () => {
        const acc = await resendAfter(24 * HOUR, 24 * HOUR - 1, 'accept');
        expect(acc.again).toMatchObject({ duplicate: true, duplicateOf: acc.first.id, stored: true });
        expect((await resendAfter(24 * HOUR, 24 * HOUR + 1, 'accept')).again).toMatchObject({ duplicate: false, stored: true });
        expect((await resendAfter(24 * HOUR, 24 * HOUR - 1, 'reject')).again).toMatchObject({ duplicate: true, stored: false });
        expect((await resendAfter(24 * HOUR, 24 * HOUR + 1, 'reject')).again).toMatchObject({ duplicate: false, stored: true });
      });
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
        await store.recordRouting(ro, { status: 'routed', deliveries: [{ routeId: 'r', sinkId: 's1', bundle: bundleFor(ro), strictOrder: true }] });
        const status = async (id: string) => (await store.getMessage(id))!.status;
        expect(await status(f)).toBe('failed');
        expect((await store.getMessage(f))!.error).toMatchObject({ code: 'FERRY_E_INPUT_TRANSFORM_FAILED', retryable: false });
        expect(await status(u)).toBe('unrouted');
        expect(await status(fi)).toBe('filtered');
        expect(await status(ro)).toBe('routed');
        expect((await store.events(f)).map((e) => e.status)).toEqual(['received', 'failed']);
        expect((await store.events(fi)).map((e) => [e.status, e.detail])).toEqual([
          ['received', undefined],
          ['transformed', undefined],
          ['filtered', 'route-1: test patient'],
        ]);
        expect((await store.events(ro)).map((e) => e.status)).toEqual(['received', 'transformed', 'routed', 'delivery:pending']);
        const d = await store.deliveries(ro);
        expect(d).toHaveLength(1);
        expect(d[0]).toMatchObject({ messageId: ro, routeId: 'r', sinkId: 's1', status: 'pending', attempts: 0, strictOrder: true });
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
        const route = { status: 'routed' as const, deliveries: [{ routeId: 'r', sinkId: 's', bundle: bundleFor('b'), strictOrder: true }] };
        await store.recordTransformed(r.id, bundleFor('b'), 'k');
        await store.recordRouting(r.id, route);
        // the slow first processor finishes later
        await store.recordTransformed(r.id, bundleFor('b'), 'k');
        await store.recordRouting(r.id, route);
        await store.recordFailed(r.id, { code: 'X', message: 'late' });
        expect(await store.deliveries(r.id)).toHaveLength(1);
        expect((await store.getMessage(r.id))!.status).toBe('routed');
        expect((await store.events(r.id)).map((e) => e.status)).toEqual(['received', 'transformed', 'routed', 'delivery:pending']);
      });

      it('a routing with no deliveries leaves the message delivered', async () => {
        const [r] = await store.insert([msg()]);
        await store.claimReceived('p', 1, 60_000);
        await store.recordTransformed(r.id, bundleFor('x'), 'k');
        await store.recordRouting(r.id, { status: 'routed', deliveries: [] });
        expect((await store.getMessage(r.id))!.status).toBe('delivered');
      });
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
        const pid7: DataQualityIssue = { severity: 'warning', location: 'PID-7', occurrence: 1, sequence: 3, path: 'Patient.birthDate', code: 'invalid-date', text: 'not a valid HL7 date/time', hl7ErrorCode: '102' };
        const obx5: DataQualityIssue = { severity: 'error', location: 'OBX-5', occurrence: 2, code: 'invalid-number', text: 'not a number (NM)' };
        // a and b set-wise (one batch); c alone after an unknown id forces the one-by-one path
        await store.recordProcessed([
          { id: a.id, transformed: { bundleJson: text, orderingKey: 'k' }, outcome: { status: 'unrouted' }, issues: [pid7] },
          { id: b.id, outcome: { status: 'failed', error: { code: 'FERRY_E_INPUT_DATA_QUALITY', message: 'OBX-5 (invalid-number)', retryable: false } }, issues: [pid7, obx5] },
        ]);
        await store.recordProcessed([
          { id: 'no-such-message', outcome: { status: 'unrouted' } },
          { id: c.id, transformed: { bundleJson: text, orderingKey: 'k' }, outcome: { status: 'unrouted' }, issues: [obx5] },
        ]);
        expect((await store.events(a.id)).map((e) => e.status)).toEqual(['received', 'transformed', 'data-quality', 'unrouted']);
        expect(issuesOf(await store.events(a.id))).toEqual([pid7]);
        expect((await store.events(b.id)).map((e) => e.status)).toEqual(['received', 'data-quality', 'data-quality', 'failed']);
        expect(issuesOf(await store.events(b.id))).toEqual([pid7, obx5]);
        expect(issuesOf(await store.events(c.id))).toEqual([obx5]);
        // replayed and processed clean: no issues now (the old ones stay in the history)
        await store.replay({ ids: [b.id] });
        await store.claimReceived('p', 3, 60_000);
        await store.recordProcessed([{ id: b.id, transformed: { bundleJson: text, orderingKey: 'k' }, outcome: { status: 'unrouted' } }]);
        expect(issuesOf(await store.events(b.id))).toEqual([]);
        expect((await store.events(b.id)).filter((e) => e.status === 'data-quality')).toHaveLength(2);
      });

      it('records a batch of processing results set-wise: every outcome, its events, a stale result dropped, an unknown id reported alone', async () => {
        const [a, b, c, d, e] = await store.insert([msg(), msg(), msg(), msg(), msg()]);
        await store.claimReceived('p', 5, 60_000);
        const text = JSON.stringify(bundleFor('t'));
        // d is routed already (a second processor's late result must not route it again).
        await store.recordProcessed([{ id: d.id, transformed: { bundleJson: text, orderingKey: 'kd' }, outcome: { status: 'unrouted' } }]);
        await store.recordProcessed([
          { id: a.id, transformed: { bundleJson: text, orderingKey: 'ka' }, outcome: { status: 'routed', deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: true, unchanged: true }] } },
          { id: b.id, transformed: { bundleJson: text }, outcome: { status: 'filtered', detail: 'r: filter' } },
          { id: c.id, outcome: { status: 'failed', error: { code: 'INPUT_BAD', message: 'bad', retryable: false } } },
          { id: d.id, transformed: { bundleJson: text, orderingKey: 'kd' }, outcome: { status: 'routed', deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: true, unchanged: true }] } },
        ]);
        // An unknown id fails alone (reported by id); the others of its batch are recorded.
        const { failed } = await store.recordProcessed([
          { id: 'no-such-message', transformed: { bundleJson: text }, outcome: { status: 'unrouted' } },
          { id: e.id, transformed: { bundleJson: text, orderingKey: 'ke' }, outcome: { status: 'routed', deliveries: [{ routeId: 'r', sinkId: 's', strictOrder: false, bundleJson: '{"resourceType":"Bundle","type":"collection"}' }] } },
        ]);
        expect(failed).toEqual([{ id: 'no-such-message', error: expect.objectContaining({ code: expect.stringContaining('INTERNAL_STORE_NO_MESSAGE') }) }]);
        const [de] = await store.deliveries(e.id);
        expect(de.orderingKey).toBe('ke');
        const claimedE = (await store.claimDeliveries('w', 10, 60_000)).find((x) => x.messageId === e.id)!;
        expect(claimedE.bundleJson).toBe('{"resourceType":"Bundle","type":"collection"}');
        expect((await store.getMessage(a.id, { bundle: true }))!.bundle).toEqual(bundleFor('t'));
        expect((await store.events(a.id)).map((e) => e.status)).toEqual(['received', 'transformed', 'routed', 'delivery:pending']);
        expect((await store.deliveries(a.id)).map((x) => `${x.sinkId}:${x.status}:${x.orderingKey}`)).toEqual(['s:pending:ka']);
        expect((await store.getMessage(b.id))!.status).toBe('filtered');
        expect((await store.events(b.id)).map((e) => `${e.status}${e.detail ? `(${e.detail})` : ''}`)).toEqual(['received', 'transformed', 'filtered(r: filter)']);
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
        const plan = (sinkIds: string[]) => ({ status: 'routed' as const, deliveries: sinkIds.map((sinkId) => ({ routeId: 'r', sinkId, strictOrder: false, bundle: bundleFor('x') })) });
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
            { deliveryId: of(a.id, 's2'), outcome: { status: 'dead', error: { code: 'E', message: 'e', retryable: false } } },
            { deliveryId: of(b.id, 's1'), outcome: { status: 'delivered' } },
          ]),
        ).rejects.toMatchObject({ code: expect.stringContaining('INTERNAL_STORE_NO_DELIVERY'), details: { deliveryIds: ['no-such-delivery'] } });
        expect((await store.getMessage(a.id))!.status).toBe('dead');
        expect((await store.getMessage(b.id))!.status).toBe('delivered');
        expect((await store.events(b.id)).map((e) => e.status).slice(-2)).toEqual(['delivery:delivered', 'delivered']);
        expect((await store.deliveries(a.id)).map((d) => `${d.sinkId}:${d.status}:${d.attempts}`).sort()).toEqual(['s1:delivered:1', 's2:dead:1']);
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
        await store.recordRouting(r.id, { status: 'routed', deliveries: [{ routeId: 'r1', sinkId: 'a', bundle: canonical, strictOrder: false, unchanged: true }] });
        await store.recordRouting(s.id, { status: 'routed', deliveries: [{ routeId: 'r1', sinkId: 'a', bundle: mutated, strictOrder: false }] });
        const c = await store.claimDeliveries('w', 10, 60_000);
        expect(c.find((d) => d.messageId === r.id)!.bundle).toEqual(bundleFor('canonical'));
        expect(c.find((d) => d.messageId === s.id)!.bundle.meta).toEqual({ tag: [{ code: 'step-changed-it' }] });
        expect((await store.getMessage(s.id, { bundle: true }))!.bundle!.meta).toBeUndefined();
        expect((await store.events(r.id)).map((e) => e.status)).toEqual(['received', 'transformed', 'routed', 'delivery:pending']);
      });

      it('retries a failed delivery when due, counts attempts, and dead-letters', async () => {
        const [id] = await routed(store, ['k1']);
        const [d] = await store.claimDeliveries('w', 10, 60_000);
        const at = new Date(Date.now() + 5_000);
        await store.completeDelivery(d.id, { status: 'failed', error: { code: 'FERRY_E_DELIVERY_HTTP_503', message: '503', retryable: true }, nextAttemptAt: at });
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
        await store.completeDelivery(d.id, { status: 'dead', error: { code: 'FERRY_E_DELIVERY_HTTP_400', message: '400', retryable: false } });
        expect((await store.deliveries(id))[0]).toMatchObject({ status: 'dead', attempts: 2 });
        expect((await store.getMessage(id))!.status).toBe('dead');
        expect(await store.nextDueAt()).toBeUndefined();
        expect((await store.stats()).deliveries).toMatchObject({ dead: 1 });
      });

      it('strict order: per (key, sink) only the oldest open delivery is eligible; other keys and sinks run in parallel', async () => {
        const ids = await routed(store, ['A', 'B', 'A', 'B', 'A'], { sinks: ['s1', 's2'] });
        const first = await store.claimDeliveries('w', 100, 60_000);
        // A1 and B1 for each sink
        expect(first.map((d) => `${d.messageId === ids[0] ? 'A1' : d.messageId === ids[1] ? 'B1' : '?'}:${d.sinkId}`).sort()).toEqual(['A1:s1', 'A1:s2', 'B1:s1', 'B1:s2']);
        // A1 fails on s1: A3 on s1 is held, A3 on s2 proceeds once A1:s2 is delivered
        const a1s1 = first.find((d) => d.messageId === ids[0] && d.sinkId === 's1')!;
        await store.completeDelivery(a1s1.id, { status: 'failed', error: { code: 'X', message: 'x' }, nextAttemptAt: new Date(Date.now() + 60_000) });
        for (const d of first) if (d !== a1s1) await store.completeDelivery(d.id, { status: 'delivered' });
        const second = await store.claimDeliveries('w', 100, 60_000);
        expect(second.map((d) => `${d.messageId === ids[2] ? 'A3' : d.messageId === ids[3] ? 'B4' : '?'}:${d.sinkId}`).sort()).toEqual(['A3:s2', 'B4:s1', 'B4:s2']);
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
        await store.completeDelivery(first.find((d) => d.sinkId === 's2')!.id, { status: 'failed', error, nextAttemptAt: new Date(Date.now() + 3_600_000) });
        expect((await store.getMessage(a))!.status).toBe('dead');
        expect(await store.claimDeliveries('w', 10, 60_000)).toEqual([]); // B:s2 held behind A:s2
        expect(await store.prune({ bodiesBefore: new Date(0), deleteBefore: new Date(Date.now() + 60_000) })).toMatchObject({ deleted: 1 });
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
        await store.recordRouting(newer.id, { status: 'routed', deliveries: [{ routeId: 'r', sinkId: 's', bundle: bundleFor('n'), strictOrder: true }] });
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
        expect((await store.completeDeliveries([{ deliveryId: d1.id, outcome: dead }], { owner: 'slow' })).stale).toEqual([{ deliveryId: d1.id, status: 'delivered' }]);
        expect((await store.getMessage(m1))!.status).toBe('delivered');
        expect((await store.deliveries(m1))[0]).toMatchObject({ status: 'delivered', attempts: 1 });
        expect((await store.events(m1)).filter((e) => e.status.startsWith('delivery:')).map((e) => e.status)).toEqual(['delivery:pending', 'delivery:delivered']);
        // d2's lease ran out but nobody claimed it: the slow instance's outcome is still the truth.
        expect((await store.completeDeliveries([{ deliveryId: d2.id, outcome: { status: 'delivered' } }], { owner: 'slow' })).stale).toEqual([]);
        expect((await store.getMessage(m2))!.status).toBe('delivered');
      });

      it("renews the leases its owner still holds (and a replayed one's), not those taken over or made final", async () => {
        await routed(store, ['K1', 'K2', 'K3', 'K4']);
        const [d1, d2, d3, d4] = await store.claimDeliveries('me', 4, 300);
        await store.completeDelivery(d3.id, { status: 'delivered' }, { owner: 'me' });
        await store.replay({ ids: [d4.messageId] });
        await sleep(200);
        expect((await store.renewDeliveryLeases('me', [d1.id, d2.id, d3.id, d4.id], 60_000)).sort()).toEqual([d1.id, d4.id, d2.id].sort());
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
        expect((await store.renewMessageLeases('me', [m1.id, m2.id, m3.id], 60_000)).sort()).toEqual([m1.id, m2.id].sort());
        // renewed: not claimable by another instance (only the unclaimed m3 is)
        expect((await store.claimReceived('other', 10, 60_000)).map((m) => m.id)).toEqual([m3.id]);
        expect(await store.renewMessageLeases('other', [m1.id], 60_000)).toEqual([]);
        expect(await store.renewMessageLeases('me', [], 60_000)).toEqual([]);
      });

      it('recording the same outcome again (a retry after a lost COMMIT answer) counts it once', async () => {
        const [m] = await routed(store, ['G']);
        const [d] = await store.claimDeliveries('w', 1, 60_000);
        const failed = { status: 'failed' as const, error: { code: 'E_HTTP_503', message: 'busy', retryable: true }, nextAttemptAt: new Date(Date.now() + 60_000) };
        expect((await store.completeDeliveries([{ deliveryId: d.id, outcome: failed }], { owner: 'w' })).stale).toEqual([]);
        expect((await store.completeDeliveries([{ deliveryId: d.id, outcome: failed }], { owner: 'w' })).stale).toEqual([]);
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
        expect((await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'delivered' } }], { owner: 'w' })).stale).toEqual([]);
        expect((await store.deliveries(m, { includeSuperseded: true }))[0]).toMatchObject({ status: 'delivered', attempts: 1 });
        expect((await store.events(m)).some((e) => e.status === 'delivery:delivered' && e.detail === '(superseded)')).toBe(true);
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
        await store.recordRouting(id, { status: 'routed', deliveries: [{ routeId: 'route-1', sinkId: 'sink-1', bundle: bundleFor('v2'), strictOrder: true }] });
        const [nd] = await store.claimDeliveries('w', 10, 60_000);
        expect(nd.bundle.id).toBe('v2');
        await store.completeDelivery(nd.id, { status: 'delivered' });
        expect((await store.getMessage(id))!.status).toBe('delivered');
        expect((await store.events(id)).some((e) => e.status === 'received' && e.detail?.startsWith('replay'))).toBe(true);
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
        await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'failed', error: err, nextAttemptAt: due() } }], { owner: 'w' });
        for (let i = 0; i < 2; i++) {
          [d] = await store.claimDeliveries('w', 1, 60_000);
          await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'failed', error: err, nextAttemptAt: due(), probe: true } }], { owner: 'w' });
        }
        [d] = await store.claimDeliveries('w', 1, 60_000);
        expect(d).toMatchObject({ attempts: 3, probeAttempts: 2 });
        await store.completeDeliveries([{ deliveryId: d.id, outcome: { status: 'dead', error: err, probe: true } }], { owner: 'w' });
        expect((await store.deliveries(id))[0]).toMatchObject({ status: 'dead', attempts: 4, probeAttempts: 3 });
        expect((await store.events(id)).filter((e) => e.status.startsWith('delivery:')).map((e) => `${e.status} ${e.detail ?? ''}`.trim())).toEqual([
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
        await store.completeDeliveries(ds.map((d) => ({ deliveryId: d.id, outcome: { status: 'dead', error: { code: 'X', message: 'x', retryable: false } } })));
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
          expect((await store.events(id)).at(-1)).toMatchObject({ status: 'received', detail: 'replay (2 deliveries superseded)' });
          expect(await store.deliveries(id)).toEqual([]);
        }
        expect(await store.replay({ ids })).toEqual([]);
      });
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
          const pick = <T,>(xs: T[]): T => xs[Math.floor(rnd(xs.length))];
          interface M { id: string; seq: number; key?: string; routed: boolean }
          interface D { m: M; sink: string; strict: boolean; status: 'pending' | 'failed' | 'delivered' | 'dead'; due?: number; id?: string; leased: boolean; superseded: boolean }
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
              const deliveries = to.map((sinkId) => ({ routeId: `r-${sinkId}`, sinkId, bundle: bundleFor(m.id), strictOrder: strict }));
              if (ms.length === 1) {
                await store.recordTransformed(m.id, bundleFor(m.id), m.key);
                await store.recordRouting(m.id, { status: 'routed', deliveries });
              } else batch.push({ id: m.id, transformed: { bundleJson: JSON.stringify(bundleFor(m.id)), orderingKey: m.key }, outcome: { status: 'routed', deliveries } });
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
            const got = await store.claimDeliveries('w', limit, 60_000, new Date(now), sinkId ? { sinkIds: [sinkId] } : {});
            const have = got.map((c) => cand.find((d) => d.m.id === c.messageId && d.sink === c.sinkId));
            expect({ when, notAllowed: got.filter((_, i) => !have[i]).map((c) => label(c.messageId, c.sinkId)), n: got.length }).toEqual({
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
            expect({ when, newOldestFirst: prefix(taken.filter((d) => d.status === 'pending'), cand.filter((d) => d.status === 'pending').sort(bySeq)) }).toEqual({ when, newOldestFirst: true });
            expect({ when, retriesInOrder: prefix(retries, [...failedAllowed].sort(bySeq)) || prefix(retries, [...failedAllowed].sort(byDue)) }).toEqual({ when, retriesInOrder: true });
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
                await store.completeDelivery(d.id!, { status: 'failed', error, nextAttemptAt: new Date(d.due) }, { owner: 'w' });
                d.status = 'failed';
              } else {
                await store.completeDelivery(d.id!, { status: 'dead', error }, { owner: 'w' });
                d.status = 'dead';
              }
              d.leased = false;
            } else if (op < 84) {
              // Whole messages deleted by retention: a dead one's other deliveries may be open.
              const final: M[] = [];
              for (const m of msgs) if (m.routed && ['delivered', 'dead'].includes((await store.getMessage(m.id))!.status)) final.push(m);
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
          for (const d of ds) if (d.leased && !d.superseded) {
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

    describe('sink holds', () => {
      it('holds a sink until released or until a set time; holding again replaces the hold', async () => {
        expect(await store.sinkHolds()).toEqual([]);
        const before = Date.now();
        const h = await store.holdSink('fhir', { reason: 'EHR maintenance' });
        expect(h).toMatchObject({ sinkId: 'fhir', reason: 'EHR maintenance' });
        expect(h.since.getTime()).toBeGreaterThanOrEqual(before - 1000);
        const until = new Date(Date.now() + 60_000);
        await store.holdSink('archive', { until });
        expect(await store.sinkHolds()).toEqual([
          { sinkId: 'archive', since: expect.any(Date), until },
          { sinkId: 'fhir', since: h.since, reason: 'EHR maintenance' },
        ]);
        // Again: replaced (no reason now, an end in the past: over at once).
        await store.holdSink('archive', { until: new Date(Date.now() - 1) });
        expect((await store.sinkHolds()).map((x) => x.sinkId)).toEqual(['fhir']);
        expect(await store.releaseSink('fhir')).toBe(true);
        expect(await store.releaseSink('fhir')).toBe(false);
        expect(await store.sinkHolds()).toEqual([]);
        await expect(store.holdSink('', {})).rejects.toMatchObject({ kind: 'input' });
        await expect(store.holdSink('x', { until: new Date(NaN) })).rejects.toMatchObject({ kind: 'input' });
      });
    });

    describe('audit trail and API tokens', () => {
      it('appends audit entries, queries them by principal, action, message id, time and seq, and prunes only by its own retention', async () => {
        const t0 = Date.now();
        await store.appendAudit([
          { principal: 'token:abc (ops)', role: 'operator', remote: '127.0.0.1', action: 'replay', messageIds: ['M1', 'M2'], result: 'ok', detail: 'reprocess 2' },
          { principal: 'anonymous', remote: '10.0.0.9', action: 'auth.failed', result: 'denied', detail: 'wrong-secret' },
        ]);
        await store.appendAudit([{ principal: 'cli:alice', action: 'prune', result: 'ok', at: new Date(t0 - 86_400_000) }]);
        const all = await store.auditEntries();
        expect(all.map((e) => e.action)).toEqual(['replay', 'auth.failed', 'prune']);
        expect(all[0]).toMatchObject({ principal: 'token:abc (ops)', role: 'operator', remote: '127.0.0.1', messageIds: ['M1', 'M2'], result: 'ok', detail: 'reprocess 2' });
        expect(all[0].at.getTime()).toBeGreaterThanOrEqual(t0 - 1000);
        expect(all[1].messageIds).toBeUndefined();
        expect((await store.auditEntries({ messageId: 'M2' })).map((e) => e.action)).toEqual(['replay']);
        expect((await store.auditEntries({ principal: 'anonymous' })).map((e) => e.detail)).toEqual(['wrong-secret']);
        expect((await store.auditEntries({ since: new Date(t0 - 1000) })).length).toBe(2);
        expect((await store.auditEntries({ newestFirst: true, limit: 1 }))[0].action).toBe('prune');
        expect((await store.auditEntries({ afterSeq: all[0].seq })).map((e) => e.action)).toEqual(['auth.failed', 'prune']);
        await expect(store.appendAudit([{ principal: '', action: 'x', result: 'ok' }])).rejects.toMatchObject({ kind: 'input' });
        // Message retention does not touch it; its own does.
        expect((await store.prune({ bodiesBefore: new Date() })).auditDeleted).toBeUndefined();
        expect((await store.prune({ bodiesBefore: new Date(), auditBefore: new Date(t0 - 3_600_000) })).auditDeleted).toBe(1);
        expect((await store.auditEntries()).map((e) => e.action)).toEqual(['replay', 'auth.failed']);
      });

      it('keeps API tokens as given (hash only), lists them, revokes once', async () => {
        const expiresAt = new Date(Date.now() + 86_400_000);
        await store.createApiToken({ id: 'tok1', name: 'ops', roles: ['operator'], hash: 'scrypt$x', createdAt: new Date(1000), createdBy: 'cli:alice', expiresAt });
        await store.createApiToken({ id: 'tok2', name: 'audit', roles: ['viewer', 'phi-reader'], hash: 'scrypt$y', createdAt: new Date(2000) });
        await expect(store.createApiToken({ id: 'tok1', name: 'again', roles: ['admin'], hash: 'h', createdAt: new Date() })).rejects.toMatchObject({ kind: 'input' });
        expect(await store.apiToken('tok1')).toEqual({ id: 'tok1', name: 'ops', roles: ['operator'], hash: 'scrypt$x', createdAt: new Date(1000), createdBy: 'cli:alice', expiresAt });
        expect((await store.apiTokens()).map((t) => t.id)).toEqual(['tok1', 'tok2']);
        expect(await store.apiToken('nope')).toBeUndefined();
        expect(await store.revokeApiToken('tok2', 'cli:bob')).toBe(true);
        expect(await store.revokeApiToken('tok2')).toBe(false);
        expect(await store.revokeApiToken('nope')).toBe(false);
        expect(await store.apiToken('tok2')).toMatchObject({ revokedBy: 'cli:bob', revokedAt: expect.any(Date) });
      });
    });

    describe('queries, retention, stats', () => {
      it('lists by status, source, sink, time range, newest first, limit', async () => {
        const t0 = Date.now();
        const ids = await routed(store, ['Q1', 'Q2'], { sink: 'qs' });
        const [other] = await store.insert([msg({ sourceId: 'q-other', receivedAt: new Date(t0 - 3_600_000) })]);
        expect((await store.listMessages({ status: ['routed'] as MessageStatus[] })).map((m) => m.id)).toEqual(ids);
        expect((await store.listMessages({ sinkId: 'qs' })).map((m) => m.id)).toEqual(ids);
        expect((await store.listMessages({ routeId: 'route-1', deliveryStatus: ['pending'] })).map((m) => m.id)).toEqual(ids);
        expect((await store.listMessages({ sourceId: 'q-other' })).map((m) => m.id)).toEqual([other.id]);
        expect((await store.listMessages({ until: new Date(t0 - 1000) })).map((m) => m.id)).toEqual([other.id]);
        expect((await store.listMessages({ since: new Date(t0 - 1000), newestFirst: true, limit: 1 })).map((m) => m.id)).toEqual([ids[1]]);
        expect(await store.listMessages({ ids: [] })).toEqual([]);
        expect((await store.listMessages({}))[0].body).toBeUndefined();
      });

      it('pages newest first by keyset (beforeSeq): each page continues below the last seq, filters kept', async () => {
        const ids = await routed(store, ['K1', 'K2', 'K3', 'K4', 'K5'], { sink: 'ks' });
        const first = await store.listMessages({ sinkId: 'ks', newestFirst: true, limit: 2 });
        expect(first.map((m) => m.id)).toEqual([ids[4], ids[3]]);
        const second = await store.listMessages({ sinkId: 'ks', newestFirst: true, limit: 2, beforeSeq: first[1].seq });
        expect(second.map((m) => m.id)).toEqual([ids[2], ids[1]]);
        const third = await store.listMessages({ sinkId: 'ks', newestFirst: true, limit: 2, beforeSeq: second[1].seq });
        expect(third.map((m) => m.id)).toEqual([ids[0]]);
        expect(await store.listMessages({ sinkId: 'ks', newestFirst: true, beforeSeq: first[0].seq - 4 })).toEqual([]);
      });

      it('counts open deliveries per sink with the oldest one (sinkBacklog)', async () => {
        const before = await store.sinkBacklog();
        const t0 = Date.now();
        await routed(store, ['SB1', 'SB2'], { sink: 'sb-a' });
        await routed(store, ['SB3'], { sink: 'sb-b' });
        const after = await store.sinkBacklog();
        expect(before['sb-a']).toBeUndefined();
        expect(after['sb-a']).toEqual({ open: 2, oldestAt: expect.any(Date) });
        expect(after['sb-b'].open).toBe(1);
        expect(after['sb-a'].oldestAt!.getTime()).toBeGreaterThanOrEqual(t0 - 5_000);
        const ds = await store.claimDeliveries('w', 10, 60_000, undefined, { sinkIds: ['sb-b'] });
        expect(ds).toHaveLength(1);
        await store.completeDelivery(ds[0].id, { status: 'delivered' });
        expect((await store.sinkBacklog())['sb-b']).toBeUndefined();
      });

      it('filters by message type (with * wildcards) and by control id, matched exactly', async () => {
        const [a, b, c] = await store.insert([
          msg({ sourceId: 'mt', headers: { messageType: 'ADT^A04', controlId: 'CTL_1%' } }),
          msg({ sourceId: 'mt', headers: { messageType: 'ORU^R01', controlId: 'CTL-2' } }),
          msg({ sourceId: 'mt', headers: { messageType: 'ADT^A08', controlId: 'CTLX1' } }),
        ]);
        const ids = (f: Partial<MessageFilter>) => store.listMessages({ sourceId: 'mt', ...f }).then((l) => l.map((m) => m.id));
        expect(await ids({ messageType: 'ADT^A0*' })).toEqual([a.id, c.id]);
        expect(await ids({ messageType: 'ADT^A04' })).toEqual([a.id]);
        expect(await ids({ messageType: 'ADT' })).toEqual([]);
        expect(await ids({ messageType: '*R01' })).toEqual([b.id]);
        expect(await ids({ controlId: 'CTL_1%' })).toEqual([a.id]);
        expect(await ids({ controlId: 'CTL-2' })).toEqual([b.id]);
        expect(await ids({ controlId: 'CTL' })).toEqual([]);
      });

      it('pages newest first through several types matched by a pattern (keyset `beforeSeq`), and replays by a pattern', async () => {
        const types = ['ADT^A01', 'ADT^A04', 'ADT^A08', 'ADT^A11', 'ORU^R01'];
        const stored = await store.insert(types.flatMap((t, i) => [0, 1, 2].map((k) => msg({ sourceId: 'pg', headers: { messageType: t, controlId: `P${i}-${k}` } }))));
        // insertion order: ADT^A01 x3, ADT^A04 x3, ... ; seq follows it
        const all = await store.listMessages({ sourceId: 'pg', newestFirst: true });
        const want = all.filter((m) => /^ADT\^A0/.test(m.headers.messageType ?? '')).map((m) => m.id);
        expect(want).toHaveLength(9);
        const pages: string[][] = [];
        let before: number | undefined;
        for (;;) {
          const page = await store.listMessages({ sourceId: 'pg', messageType: 'ADT^A0*', newestFirst: true, limit: 4, ...(before !== undefined ? { beforeSeq: before } : {}) });
          if (!page.length) break;
          pages.push(page.map((m) => m.id));
          before = page[page.length - 1].seq;
        }
        expect(pages.map((p) => p.length)).toEqual([4, 4, 1]);
        expect(pages.flat()).toEqual(want);
        expect((await store.listMessages({ sourceId: 'pg', messageType: 'ADT^A0*', controlId: 'P1-2' })).map((m) => m.id)).toEqual([stored[5].id]);
        expect(await store.listMessages({ messageType: 'ZZZ*' })).toEqual([]);
        expect((await store.listMessages({ sourceId: 'pg', messageType: '*' })).length).toBe(15);
        // replay by pattern: the unrouted ones are not candidates; none of these is routed yet
        expect(await store.replay({ sourceId: 'pg', messageType: 'ADT^A1*' })).toEqual([]);
      });

      it('counts per minute the messages received and failed per source and the deliveries made per sink (throughput), and each source’s newest message and failed count', async () => {
        const since = new Date(Date.now() - 10 * 60_000);
        const ids = await routed(store, ['T1', 'T2', 'T3'], { sink: 'tp-sink' });
        const ds = await store.claimDeliveries('w', 10, 60_000);
        await store.completeDelivery(ds[0].id, { status: 'delivered' });
        await store.completeDelivery(ds[1].id, { status: 'delivered' });
        const [bad] = await store.insert([msg({ sourceId: 'tp-src' })]);
        await store.claimReceived('proc', 10, 60_000);
        await store.recordFailed(bad.id, { code: 'X', message: 'x' });
        const t = await store.throughput(since, 60_000, new Date(since.getTime() + 11 * 60_000));
        expect(t.buckets).toBe(11);
        const total = (m: Record<string, number[]>, k: string) => (m[k] ?? []).reduce((a, b) => a + b, 0);
        expect(total(t.received, 'src-a')).toBe(ids.length);
        expect(total(t.failed, 'src-a')).toBe(0);
        expect(total(t.received, 'tp-src')).toBe(1);
        expect(total(t.failed, 'tp-src')).toBe(1);
        expect(total(t.delivered, 'tp-sink')).toBe(2);
        // all in the last bucket (the current minute), none before
        expect(t.received['src-a'][10]).toBe(ids.length);
        expect(t.received['src-a'].slice(0, 10)).toEqual(new Array(10).fill(0));
        expect(await store.throughput(new Date(Date.now() + 60_000), 60_000, new Date(Date.now() + 120_000))).toMatchObject({ received: {}, delivered: {} });
        const a = await store.sourceActivity(['src-a', 'tp-src', 'none']);
        expect(a['src-a'].failed).toBe(0);
        expect(a['tp-src'].failed).toBe(1);
        expect(a['src-a'].lastMessageAt!.getTime()).toBeGreaterThanOrEqual(since.getTime());
        expect(a.none).toEqual({ failed: 0 });
      });

      it('fills message type and control id of rows stored before them (migration 12 backfill)', async () => {
        if (!h.rawSql) return;
        const [a] = await store.insert([msg({ sourceId: 'bf', headers: { messageType: 'SIU^S12', controlId: 'BF-1' } })]);
        await h.rawSql(store, `UPDATE messages SET message_type = NULL, control_id = NULL`);
        expect(await store.listMessages({ sourceId: 'bf', controlId: 'BF-1' })).toEqual([]);
        const m12 = migrations.find((m) => m.version === 12)!;
        for (const sql of m12.only![name as Dialect]!.filter((s) => s.startsWith('UPDATE'))) await h.rawSql(store, sql);
        expect((await store.listMessages({ sourceId: 'bf', controlId: 'BF-1' })).map((m) => m.id)).toEqual([a.id]);
        expect((await store.listMessages({ sourceId: 'bf', messageType: 'SIU^*' })).map((m) => m.id)).toEqual([a.id]);
      });

      it('prunes bodies of delivered messages, keeps dead ones longer, keeps metadata; deletes very old rows', async () => {
        const [ok, dead] = await routed(store, ['P1', 'P2']);
        const ds = await store.claimDeliveries('w', 10, 60_000);
        await store.completeDelivery(ds.find((d) => d.messageId === ok)!.id, { status: 'delivered' });
        await store.completeDelivery(ds.find((d) => d.messageId === dead)!.id, { status: 'dead', error: { code: 'X', message: 'x' } });
        const [waiting] = await store.insert([msg()]);
        const future = new Date(Date.now() + 1000);
        const r = await store.prune({ bodiesBefore: future, deadBefore: new Date(Date.now() - 86_400_000) });
        expect(r.messages).toBe(1);
        expect((await store.getMessage(ok, { body: true, bundle: true }))!.body).toBeUndefined();
        expect((await store.getMessage(ok, { bundle: true }))!.bundle).toBeUndefined();
        expect((await store.getMessage(ok))!.status).toBe('delivered');
        expect((await store.events(ok)).length).toBeGreaterThan(0);
        expect((await store.getMessage(dead, { body: true }))!.body).toBeInstanceOf(Buffer);
        expect((await store.getMessage(waiting.id, { body: true }))!.body).toBeInstanceOf(Buffer);
        // a pruned message cannot be replayed (no body)
        expect(await store.replay({ ids: [ok] })).toEqual([]);
        expect((await store.prune({ bodiesBefore: future, deadBefore: future })).messages).toBe(1);
        const del = await store.prune({ bodiesBefore: future, deleteBefore: future });
        expect(del.deleted).toBe(2);
        expect(await store.getMessage(ok)).toBeUndefined();
        expect(await store.events(ok)).toEqual([]);
        expect(await store.getMessage(waiting.id)).toBeDefined();
      });

      it('prunes in steps (a bounded range of messages each): the same result, the event loop free between steps', async () => {
        const step = (store as unknown as { pruneStep?: { scan: number; batch: number } }).pruneStep;
        if (step) Object.assign(step, { scan: 5, batch: 2 });
        const ids = await routed(store, ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K']);
        const ds = await store.claimDeliveries('w', 20, 60_000);
        const byMsg = new Map(ds.map((d) => [d.messageId, d]));
        // 7 delivered, 2 dead, 2 left open (still routed); then more received after them.
        for (const id of ids.slice(0, 7)) await store.completeDelivery(byMsg.get(id)!.id, { status: 'delivered' });
        for (const id of ids.slice(7, 9)) await store.completeDelivery(byMsg.get(id)!.id, { status: 'dead', error: { code: 'X', message: 'x' } });
        await store.insert([msg(), msg()]);
        const future = new Date(Date.now() + 1000);
        const { result: r, turns } = await loopTurnsDuring(() => store.prune({ bodiesBefore: future, deadBefore: future }));
        expect(r).toEqual({ messages: 9, deleted: 0 });
        if (step) expect(turns).toBeGreaterThan(4);
        for (const id of ids.slice(0, 9)) expect((await store.getMessage(id, { body: true }))!.body).toBeUndefined();
        for (const id of ids.slice(9)) expect((await store.getMessage(id, { body: true }))!.body).toBeInstanceOf(Buffer);
        expect(await store.prune({ bodiesBefore: future, deadBefore: future })).toEqual({ messages: 0, deleted: 0 });
        expect(await store.prune({ bodiesBefore: future, deleteBefore: future })).toEqual({ messages: 0, deleted: 9 });
        expect(await store.listMessages({ ids })).toHaveLength(2);
        expect(await store.countMessages(['routed', 'received', 'delivered', 'dead'])).toEqual({ routed: 2, received: 2, delivered: 0, dead: 0 });
      });

      it('counts messages and deliveries by status, and the backlog', async () => {
        await routed(store, ['S1', 'S2']);
        await store.insert([msg()]);
        const s = await store.stats();
        expect(s.messages).toMatchObject({ routed: 2, received: 1 });
        expect(s.deliveries).toMatchObject({ pending: 2 });
        expect(await store.backlog()).toEqual({ unprocessedMessages: 1, deliveriesDue: 2, deliveriesScheduled: 0, deliveriesLeased: 0 });
        await store.claimDeliveries('w', 1, 60_000);
        expect((await store.backlog()).deliveriesLeased).toBe(1);
        expect(await store.countMessages(['received', 'routed', 'dead'])).toEqual({ received: 1, routed: 2, dead: 0 });
        expect(await store.countMessages([])).toEqual({});
      });
    });
  });
}
