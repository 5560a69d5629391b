import { FerryError, transientError } from '../../errors';
import { errorFields } from '../../logging/logger';
import type { MessageHeaders } from '../../model/message';
import { contentHash } from '../content-hash';
import { newId } from '../ids';
import type { InsertOptions, InsertResult, NewMessage } from '../message-store';
import { CHUNK, dedupKey, type SqlExec } from './sql-exec';
import { SqlStoreBase } from './store-base';

interface PendingInsert {
  messages: NewMessage[];
  opts?: InsertOptions;
  resolve(r: InsertResult[]): void;
  reject(e: unknown): void;
}

/**
 * The duplicate lookup: earlier copies of a batch's messages by sender + control id (`dedup_key`)
 * in the window, for one source and up to CHUNK keys. Unsorted on purpose: with `ORDER BY seq`
 * SQLite took the `(source_id, seq)` index, which gives that order for free, and walked every
 * message of the source to filter the keys -- an insert's cost grew with everything stored from
 * its source (1.3 ms a lookup at 10,000 messages; a 400 msgs/s soak fell to ~100 msgs/s within two
 * minutes). Without it the `(source_id, dedup_key, received_at)` index serves it (a few rows).
 */
export function duplicateLookupSql(keys: number): string {
  return `SELECT seq, id, source_id, dedup_key, received_at, content_hash, content_type FROM messages
           WHERE source_id = ? AND dedup_key IN (${Array.from({ length: keys }, () => '?').join(', ')}) AND received_at >= ? AND duplicate_of IS NULL`;
}

/**
 * Messages in: `insert` with its group commit (every caller of one event-loop turn, and those
 * arriving while a commit is in flight, share one durable transaction; on SQLite the next batch
 * commits while the previous one's WAL sync runs, each batch answered once its own sync is done),
 * the duplicate lookup, and the sources' checkpoints (written with the messages they cover).
 */
export abstract class SqlMessagesPart extends SqlStoreBase {
  private queue: PendingInsert[] = [];
  private queuedCount = 0;
  private timer?: NodeJS.Immediate;
  private flushing?: Promise<void>;
  /** Commits made by `insert` (for tests and the benchmark). */
  insertCommits = 0;

  insert(messages: NewMessage[], opts?: InsertOptions): Promise<InsertResult[]> {
    try {
      this.assertOpen();
    } catch (e) {
      return Promise.reject(e);
    }
    if (!messages.length && !opts?.checkpoint) return Promise.resolve([]);
    return new Promise<InsertResult[]>((resolve, reject) => {
      this.queue.push({ messages, opts, resolve, reject });
      this.queuedCount += Math.max(1, messages.length);
      this.schedule();
    });
  }

  protected nextInsertFlush(): Promise<void> | undefined {
    if (this.flushing) return this.flushing;
    return this.queue.length ? this.flush() : undefined;
  }

  protected stopInsertTimer(): void {
    if (this.timer) this.clearTimer();
  }

  private clearTimer(): void {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearImmediate(t);
  }

  private schedule(): void {
    if (this.flushing) return; // the running flush picks the queue up when it ends
    if (this.queuedCount >= this.groupCommit.maxBatch) {
      if (this.timer) this.clearTimer();
      void this.flush();
      return;
    }
    if (this.timer) return;
    // The next turn of the event loop: every caller whose I/O arrived in this turn joins the
    // batch, and callers arriving while a commit is in flight join the next one -- so under load
    // batches fill by themselves and nobody waits on a timer.
    this.timer = setImmediate(() => {
      this.timer = undefined;
      void this.flush();
    });
  }

  private flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (!this.queue.length) return Promise.resolve();
    // Take up to maxBatch messages (whole calls; a single call larger than maxBatch goes alone).
    const batch: PendingInsert[] = [];
    let n = 0;
    while (this.queue.length) {
      const next = this.queue[0];
      const size = Math.max(1, next.messages.length);
      if (batch.length && n + size > this.groupCommit.maxBatch) break;
      batch.push(this.queue.shift()!);
      n += size;
    }
    this.queuedCount -= n;
    this.flushing = this.commitBatch(batch).finally(() => {
      this.flushing = undefined;
      if (this.queue.length) {
        if (this.queuedCount >= this.groupCommit.maxBatch || this.closing) void this.flush();
        else this.schedule();
      }
    });
    return this.flushing;
  }

  private async commitBatch(batch: PendingInsert[]): Promise<void> {
    // Refuse malformed calls alone, before the transaction, so they cannot fail the others.
    const valid: PendingInsert[] = [];
    for (const p of batch) {
      const bad = this.validate(p.messages);
      if (bad) p.reject(bad);
      else valid.push(p);
    }
    if (!valid.length) return;
    try {
      const { result: results, durable } = await this.txDurableLater((x) => this.insertCalls(x, valid));
      this.insertCommits++;
      // Answered once on disk; the next batch may commit meanwhile (its own sync comes after this one's).
      durable.then(
        () => valid.forEach((p, i) => p.resolve(results[i])),
        (e: unknown) => {
          const err = this.writeError(e);
          for (const p of valid) p.reject(err);
        },
      );
    } catch (e) {
      // One call alone, or the store itself unavailable (a lost connection: every call would fail
      // the same way): everybody is told, nobody is committed one by one.
      if (valid.length === 1 || (e instanceof FerryError && e.retryable)) {
        const err = this.writeError(e);
        for (const p of valid) p.reject(err);
        return;
      }
      // Commit each call alone so one caller's failure is not everybody's.
      this.logger.warn('store group commit failed; committing calls one by one', {
        store: this.kind,
        calls: valid.length,
        ...errorFields(e),
      });
      for (const p of valid) {
        try {
          const [r] = await this.tx((x) => this.insertCalls(x, [p]), { durable: true });
          this.insertCommits++;
          p.resolve(r);
        } catch (e2) {
          p.reject(this.writeError(e2));
        }
      }
    }
  }

  private validate(messages: NewMessage[]): FerryError | undefined {
    for (const m of messages) {
      if (!m || typeof m.sourceId !== 'string' || !m.sourceId)
        return new FerryError('INPUT_MESSAGE_NO_SOURCE', 'a stored message needs a sourceId', { kind: 'input' });
      if (!Buffer.isBuffer(m.body))
        return new FerryError('INPUT_MESSAGE_BODY', 'a stored message body must be a Buffer', { kind: 'input' });
      if (typeof m.contentType !== 'string' || !m.contentType)
        return new FerryError('INPUT_MESSAGE_CONTENT_TYPE', 'a stored message needs a content type', { kind: 'input' });
    }
    return undefined;
  }

  private writeError(e: unknown): FerryError {
    if (e instanceof FerryError) return e;
    return transientError(
      'STORE_WRITE',
      `could not store messages: ${(e as Error)?.message ?? String(e)}`,
      { store: this.kind },
      e,
    );
  }

  /**
   * Inserts every message of several insert calls in one transaction: one duplicate lookup for
   * the whole batch, multi-row INSERTs for messages and their `received` events.
   */
  private async insertCalls(
    x: SqlExec,
    calls: { messages: NewMessage[]; opts?: InsertOptions }[],
  ): Promise<InsertResult[][]> {
    // #region mutation: insert-items (scripts/mutation.mjs mutates this region)
    const now = this.now();
    type Item = {
      m: NewMessage;
      headers: MessageHeaders;
      receivedAt: number;
      key?: string;
      hash?: string;
      ignore?: readonly string[];
      windowMs?: number;
      policy?: string;
      result?: InsertResult;
    };
    const items: Item[][] = calls.map((c) =>
      c.messages.map((m) => {
        const headers = m.headers ?? {};
        const dup = c.opts?.duplicates;
        const key = dup ? dedupKey(headers) : undefined;
        // Only messages that are compared need their hash (a source's own, or the body's).
        const hash = key ? (m.contentHash ?? contentHash(m.contentType, m.body, dup?.ignoreFields)) : m.contentHash;
        return {
          m,
          headers,
          receivedAt: m.receivedAt?.getTime() ?? now,
          key,
          hash,
          ignore: dup?.ignoreFields,
          windowMs: dup?.windowMs,
          policy: dup?.policy,
        };
      }),
    );
    const flat = items.flat();
    // #endregion

    // #region mutation: duplicate-decision (scripts/mutation.mjs mutates this region)
    // Duplicates: earlier messages (stored, or earlier in this batch) with the same source + key in
    // the window, compared by content. A row stored before content hashes (NULL) brings its body.
    type Seen = { id: string; receivedAt: number; hash?: string; legacy?: { contentType: string; body?: Buffer } };
    const checked = flat.filter((i) => i.key);
    const seen = new Map<string, Seen[]>();
    if (checked.length) {
      const groupKeys = [...new Set(checked.map((i) => `${i.m.sourceId}|${i.key}`))].sort();
      await this.lockKeys(x, groupKeys);
      const since = Math.min(...checked.map((i) => i.receivedAt - (i.windowMs ?? 0)));
      // Per source, so the lookup walks the (source_id, dedup_key, received_at) index.
      const bySource = new Map<string, Set<string>>();
      for (const i of checked) {
        const set = bySource.get(i.m.sourceId) ?? new Set<string>();
        set.add(i.key!);
        bySource.set(i.m.sourceId, set);
      }
      const lookups = [...bySource].flatMap(([sourceId, set]) => {
        const keys = [...set];
        const parts: { sourceId: string; keys: string[] }[] = [];
        for (let o = 0; o < keys.length; o += CHUNK) parts.push({ sourceId, keys: keys.slice(o, o + CHUNK) });
        return parts;
      });
      const legacy: Seen[] = [];
      for (const { sourceId, keys: part } of lookups) {
        const rows = await x.all(duplicateLookupSql(part.length), [sourceId, ...part, since]);
        // Oldest first (sorted here: see duplicateLookupSql).
        rows.sort((a, b) => Number(a.seq) - Number(b.seq));
        for (const r of rows) {
          const k = `${r.source_id}|${r.dedup_key}`;
          const list = seen.get(k) ?? [];
          const e: Seen = { id: r.id, receivedAt: Number(r.received_at) };
          if (r.content_hash != null) e.hash = r.content_hash as string;
          else {
            e.legacy = { contentType: r.content_type as string };
            legacy.push(e);
          }
          list.push(e);
          seen.set(k, list);
        }
      }
      for (let o = 0; o < legacy.length; o += CHUNK) {
        const part = legacy.slice(o, o + CHUNK);
        const byId = new Map(part.map((e) => [e.id, e]));
        const rows = await x.all(
          `SELECT message_id, body FROM message_content WHERE message_id IN (${part.map(() => '?').join(', ')})`,
          part.map((e) => e.id),
        );
        for (const r of rows)
          if (r.body != null)
            byId.get(r.message_id)!.legacy!.body = Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body as Uint8Array);
      }
    }
    /** An earlier message's content hash as `item` computes it (a legacy row's from its body; pruned: unknown). */
    const hashOf = (e: Seen, item: Item): string | undefined =>
      e.hash ?? (e.legacy?.body ? contentHash(e.legacy.contentType, e.legacy.body, item.ignore) : undefined);

    const toInsert: { item: Item; id: string; duplicateOf?: string }[] = [];
    const dupEvents: { id: string; detail: string }[] = [];
    const reusedEvents: { id: string; detail: string }[] = [];
    for (const item of flat) {
      let duplicateOf: string | undefined;
      let reuses: string | undefined;
      if (item.key) {
        const list = seen.get(`${item.m.sourceId}|${item.key}`);
        const from = item.receivedAt - (item.windowMs ?? 0);
        for (let j = (list?.length ?? 0) - 1; j >= 0; j--) {
          const e = list![j];
          if (e.receivedAt < from) continue;
          if (hashOf(e, item) === item.hash) {
            duplicateOf = e.id;
            break;
          }
          // The newest message with this identity but other content.
          reuses ??= e.id;
        }
        if (duplicateOf) reuses = undefined;
        if (duplicateOf && item.policy !== 'accept') {
          dupEvents.push({ id: duplicateOf, detail: item.policy === 'reject' ? 'rejected' : 'ignored' });
          item.result = { id: duplicateOf, duplicate: true, duplicateOf, stored: false };
          continue;
        }
      }
      const id = newId(now);
      toInsert.push({ item, id, duplicateOf });
      item.result = { id, duplicate: !!duplicateOf, duplicateOf, stored: true };
      if (reuses) {
        item.result.reusesControlIdOf = reuses;
        reusedEvents.push({ id, detail: `control id of ${reuses}, other content` });
      }
      if (item.key && !duplicateOf) {
        const k = `${item.m.sourceId}|${item.key}`;
        const list = seen.get(k) ?? [];
        list.push({ id, receivedAt: item.receivedAt, hash: item.hash });
        seen.set(k, list);
      }
    }
    // #endregion

    // #region mutation: insert-rows (scripts/mutation.mjs mutates this region)
    for (let o = 0; o < toInsert.length; o += CHUNK) {
      const part = toInsert.slice(o, o + CHUNK);
      const params: unknown[] = [];
      for (const { item, id, duplicateOf } of part) {
        const dk = dedupKey(item.headers);
        params.push(
          id,
          item.m.sourceId,
          item.m.contentType,
          JSON.stringify(item.headers),
          item.receivedAt,
          duplicateOf ?? null,
          dk ?? null,
          item.headers.orderingKey ?? null,
          now,
          item.hash ?? null,
          item.headers.messageType ?? null,
          item.headers.controlId ?? null,
        );
      }
      const n = await x.run(
        `INSERT INTO messages (id, source_id, content_type, headers, received_at, status, duplicate_of, dedup_key, ordering_key, updated_at, content_hash, message_type, control_id)
         VALUES ${part.map(() => `(?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?, ?, ?)`).join(', ')}`,
        params,
      );
      if (n !== part.length)
        throw new FerryError('INTERNAL_STORE_INSERT', `inserted ${n} of ${part.length} messages`, { kind: 'internal' });
      await x.run(
        `INSERT INTO message_content (message_id, body) VALUES ${part.map(() => '(?, ?)').join(', ')}`,
        part.flatMap((t) => [t.id, t.item.m.body]),
      );
    }
    const events = [
      ...toInsert.map((t) => ({
        id: t.id,
        status: 'received',
        detail: t.duplicateOf ? `duplicate of ${t.duplicateOf}` : null,
      })),
      ...dupEvents.map((d) => ({ id: d.id, status: 'duplicate', detail: d.detail })),
      ...reusedEvents.map((d) => ({ id: d.id, status: 'control-id-reused', detail: d.detail })),
    ];
    for (let o = 0; o < events.length; o += CHUNK) {
      const part = events.slice(o, o + CHUNK);
      await x.run(
        `INSERT INTO message_events (message_id, at, status, detail) VALUES ${part.map(() => '(?, ?, ?, ?)').join(', ')}`,
        part.flatMap((e) => [e.id, now, e.status, e.detail]),
      );
    }
    for (const c of calls) {
      if (c.opts?.checkpoint)
        await this.upsertCheckpoint(x, c.opts.checkpoint.sourceId, c.opts.checkpoint.key, c.opts.checkpoint.value, now);
    }
    return items.map((list) => list.map((i) => i.result!));
    // #endregion
  }

  private upsertCheckpoint(x: SqlExec, sourceId: string, key: string, value: string, now: number): Promise<number> {
    return x.run(
      `INSERT INTO checkpoints (source_id, key, value, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (source_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
      [sourceId, key, value, now],
    );
  }

  async getCheckpoint(sourceId: string, key: string): Promise<string | undefined> {
    this.assertOpen();
    const rows = await this.readSettled((x) =>
      x.all('SELECT value FROM checkpoints WHERE source_id = ? AND key = ?', [sourceId, key]),
    );
    return rows[0]?.value ?? undefined;
  }

  async setCheckpoint(sourceId: string, key: string, value: string): Promise<void> {
    this.assertOpen();
    const now = this.now();
    await this.tx((x) => this.upsertCheckpoint(x, sourceId, key, value, now), { durable: true });
  }
}
