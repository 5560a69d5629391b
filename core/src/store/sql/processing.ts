import type { Bundle } from '@medplum/fhirtypes';
import { FerryError } from '../../errors';
import { errorFields } from '../../logging/logger';
import { DATA_QUALITY_EVENT, type StoredError, type StoredMessage } from '../../model/message';
import { WakeableSleep } from '../../util/wakeable-sleep';
import { newId } from '../ids';
import type { ProcessedMessage, RoutingOutcome } from '../message-store';
import { SqlDeliveriesPart } from './deliveries';
import {
  errJson,
  rollbackTo,
  UNROUTED_MESSAGE,
  type BufferedExec,
  type EventRow,
  type PendingTransform,
  type Row,
  type SqlExec,
} from './sql-exec';

type ProcessingOutcome = ProcessedMessage['outcome'];

/**
 * How long a `recordEvents` write gathers rows before it runs: at one connection an ACK is sent
 * about every millisecond, and each alone was a transaction on the engine's thread between one
 * message's ACK and the next one's insert. The rows show in the message's history that much later.
 */
const EVENTS_LINGER_MS = 20;

/** One message's processing result, ready to write (see `plan`). */
interface ProcessingPlan {
  id: string;
  outcome: ProcessingOutcome;
  now: number;
  /** The cached transform result (object and text), when the transform ran in this process. */
  cached?: { bundle?: Bundle; json: string };
  /** The held transform result, written with the new status. */
  t?: PendingTransform;
  /** The message's next status. */
  status: string;
  /** Data-quality issues: one event each, before the outcome's. */
  issues?: ProcessedMessage['issues'];
}

/**
 * Processing: messages claimed for the transform, the transform results held until their
 * routing, and the routing or failure of each message written with its deliveries and events
 * (set-wise for a batch, message by message when one of them fails).
 */
export abstract class SqlProcessingPart extends SqlDeliveriesPart {
  /**
   * Bundles recorded by recordTransformed whose routing is not recorded yet (object and JSON), so
   * a delivery of the unchanged bundle references the message's bundle instead of a second copy,
   * without serialising it again.
   */
  private transformed = new Map<string, { bundle?: Bundle; json: string }>();
  /** Transform results waiting for the routing of their message (no batched writes). */
  private pendingTransforms = new Map<string, PendingTransform>();

  async claimReceived(
    owner: string,
    limit: number,
    leaseMs: number,
    opts: { maxAttempts?: number } = {},
  ): Promise<StoredMessage[]> {
    this.assertOpen();
    if (limit <= 0) return [];
    const now = this.now();
    const max = opts.maxAttempts ?? 0;
    const rows = await this.claimTx(async (x) => {
      const ids = await x.all(
        `SELECT seq FROM messages WHERE status IN ${UNROUTED_MESSAGE} AND (lease_expires IS NULL OR lease_expires <= ?) ORDER BY seq LIMIT ?${this.lockClause('messages')}`,
        [now, limit],
      );
      if (!ids.length) return [];
      const claimed = await x.all(
        `UPDATE messages SET lease_owner = ?, lease_expires = ?, process_attempts = process_attempts + 1
         WHERE seq IN (${ids.map(() => '?').join(', ')}) RETURNING ${this.columns(false, false)}, process_attempts`,
        [owner, now + leaseMs, ...ids.map((r) => r.seq)],
      );
      // Claimed more often than allowed without ever being recorded: its processing keeps dying
      // (the process, or a worker, each time). Failed here, kept for inspection and replay,
      // instead of taking the engine down again.
      const spent = max > 0 ? claimed.filter((r) => Number(r.process_attempts) > max) : [];
      if (spent.length) {
        const error: StoredError = {
          code: 'FERRY_E_INTERNAL_PROCESSING_ATTEMPTS',
          message: `processing was started ${max} times and never finished (the engine or its worker stopped each time); not retried`,
          retryable: false,
        };
        await x.run(
          `UPDATE messages SET status = 'failed', error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ? WHERE seq IN (${spent.map(() => '?').join(', ')})`,
          [errJson(error), now, ...spent.map((r) => r.seq)],
        );
        await this.events_(
          x,
          spent.map((r) => ({ id: r.id as string, at: now, status: 'failed', detail: error.code })),
        );
        for (const r of spent)
          this.logger.error('message failed: processing never finished', {
            messageId: r.id,
            attempts: Number(r.process_attempts),
            errorCode: error.code,
          });
      }
      const live = spent.length ? claimed.filter((r) => !spent.includes(r)) : claimed;
      const content = await this.content(
        x,
        live.map((r) => r.id as string),
        false,
      );
      return live.map((r) => ({ ...r, body: content.get(r.id)?.body ?? null }));
    });
    return rows.map((r) => this.toMessage(r, true, false)).sort((a, b) => a.seq - b.seq);
  }

  /**
   * Recorded with the transition that follows it, in the same transaction: the processor calls
   * recordRouting / recordFailed next. The result is held in memory and written by
   * recordRouting's / recordFailed's operation (one UPDATE of the message for both transitions,
   * one transaction per message on PostgreSQL, one savepoint in the shared one on SQLite). Reads through this store see it (it is written before they run). A crash before the
   * routing commits leaves the message `received`, to be transformed again; an error (unknown
   * id) shows in the routing call.
   */
  async recordTransformed(id: string, bundle: Bundle, orderingKey: string | undefined): Promise<void> {
    this.assertOpen();
    this.holdTransform(id, JSON.stringify(bundle), orderingKey, bundle);
  }

  private holdTransform(id: string, text: string, orderingKey: string | undefined, bundle?: Bundle): void {
    const t: PendingTransform = { text, key: orderingKey || null, at: this.now() };
    this.transformed.delete(id);
    this.transformed.set(id, { bundle, json: t.text });
    // Bounded: a processor that never records the routing must not grow this for ever.
    if (this.transformed.size > 4096) this.transformed.delete(this.transformed.keys().next().value!);
    this.pendingTransforms.set(id, t);
  }

  async recordProcessed(results: ProcessedMessage[]): Promise<{ failed: { id: string; error: unknown }[] }> {
    this.assertOpen();
    const plans = results.map((r) => {
      if (r.transformed) this.holdTransform(r.id, r.transformed.bundleJson, r.transformed.orderingKey);
      const p = this.plan(r.id, r.outcome);
      if (r.issues?.length) p.issues = r.issues;
      return p;
    });
    if (!plans.length) return { failed: [] };
    const ops = plans.map((p) => this.planOp(p));
    const together = this.plansOp(plans);
    // One operation for the batch (SQLite: inside the shared transaction; PostgreSQL: one
    // transaction instead of one per message). Every message is all-or-nothing on its own: when
    // one fails, the batch is undone and replayed message by message, each in its own
    // savepoint, so only that one fails.
    const errors = await this.write(async (tx) => {
      // Event rows are collected and inserted together at the end (SQLite: by the shared
      // transaction; PostgreSQL: here), not one INSERT round trip per message.
      const shared = (tx as Partial<BufferedExec>).events !== undefined;
      const x: BufferedExec = shared
        ? (tx as BufferedExec)
        : { all: (q, p) => tx.all(q, p), run: (q, p) => tx.run(q, p), events: [] };
      const buf = x.events;
      const mark = buf.length;
      await x.run('SAVEPOINT ferry_batch');
      try {
        buf.push(...(await together(x)));
        await this.stampConfigVersions(x, results);
        await x.run('RELEASE SAVEPOINT ferry_batch');
        if (!shared) await this.insertEvents(tx, buf);
        return [];
      } catch (e) {
        buf.length = mark;
        await rollbackTo(x, 'ferry_batch', e);
      }
      const failed: { id: string; error: unknown }[] = [];
      for (const [i, op] of ops.entries()) {
        const at = buf.length;
        await x.run('SAVEPOINT ferry_one');
        try {
          await op(x);
          await this.stampConfigVersions(x, [results[i]]);
          await x.run('RELEASE SAVEPOINT ferry_one');
        } catch (error) {
          buf.length = at;
          await rollbackTo(x, 'ferry_one', error);
          // The store's own trouble (disk full, a lost connection), not this message's: the batch
          // fails as a whole and is tried again, instead of this message waiting out its lease.
          const c = this.classify(error);
          if (c instanceof FerryError && c.kind === 'transient') throw c;
          failed.push({ id: plans[i].id, error });
        }
      }
      if (!shared) await this.insertEvents(tx, buf);
      return failed;
    });
    return { failed: errors };
  }

  /** Writes a transform result; false when the message was already processed. */
  private async applyTransform(x: SqlExec, id: string, t: PendingTransform): Promise<boolean> {
    // Only while unprocessed: a second processor whose lease ran out must not undo a routing.
    const n = await x.run(
      `UPDATE messages SET status = 'transformed', ordering_key = COALESCE(?, ordering_key, 'source:' || source_id), error = NULL, updated_at = ?
       WHERE id = ? AND status IN ${UNROUTED_MESSAGE}`,
      [t.key, t.at, id],
    );
    if (n) {
      await x.run('UPDATE message_content SET bundle = ? WHERE message_id = ?', [t.text, id]);
      await this.event(x, id, t.at, 'transformed');
    } else await this.requireMessage(x, id, 'seq');
    return n > 0;
  }

  /** Writes the held transform results (before reads, so they see them). */
  protected override async flushPendingTransforms(): Promise<void> {
    if (!this.pendingTransforms.size) return;
    const all = [...this.pendingTransforms];
    this.pendingTransforms.clear();
    for (const [id, t] of all) {
      await this.tx((x) => this.applyTransform(x, id, t)).catch((e) =>
        this.logger.debug('recordTransformed failed', { messageId: id, ...errorFields(e) }),
      );
    }
  }

  private staleProcessing(id: string, status: string): void {
    this.logger.warn('processing result dropped: the message was already processed (its lease had expired)', {
      messageId: id,
      status,
    });
  }

  /**
   * Moves a message out of processing (the held transform result first): returns its row, or
   * undefined when another processor already did (the result is then dropped).
   */
  private async finishProcessing(
    x: SqlExec,
    id: string,
    status: string,
    error: string | null,
    now: number,
    t: PendingTransform | undefined,
  ): Promise<Row | undefined> {
    // With a held transform result: one UPDATE takes the message through `transformed` to its
    // next status (both transitions are event rows, in order, in this transaction).
    const rows = t
      ? await x.all(
          `UPDATE messages SET status = ?, ordering_key = COALESCE(?, ordering_key, 'source:' || source_id), error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ?
           WHERE id = ? AND status IN ${UNROUTED_MESSAGE} RETURNING seq, source_id, ordering_key`,
          [status, t.key, error, now, id],
        )
      : await x.all(
          `UPDATE messages SET status = ?, error = ?, lease_owner = NULL, lease_expires = NULL, updated_at = ?
           WHERE id = ? AND status IN ${UNROUTED_MESSAGE} RETURNING seq, source_id, ordering_key`,
          [status, error, now, id],
        );
    if (rows[0]) {
      if (t) {
        await x.run('UPDATE message_content SET bundle = ? WHERE message_id = ?', [t.text, id]);
        await this.event(x, id, t.at, 'transformed');
      }
      return rows[0];
    }
    const m = await this.requireMessage(x, id, 'status');
    this.staleProcessing(id, m.status);
    return undefined;
  }

  async recordFailed(id: string, error: StoredError): Promise<void> {
    this.assertOpen();
    await this.write(this.failedOp(id, error));
  }

  async recordRouting(id: string, outcome: RoutingOutcome): Promise<void> {
    this.assertOpen();
    await this.write(this.routingOp(id, outcome));
  }

  /** The held transform result of a message, handed to the operation that records its next state. */
  private takeTransform(id: string): PendingTransform | undefined {
    const t = this.pendingTransforms.get(id);
    if (t) this.pendingTransforms.delete(id);
    return t;
  }

  /**
   * What recording one message's processing needs, taken from the held state (transform result,
   * cached bundle) when the operation is created: the operation owns it and can be run again.
   */
  private plan(id: string, outcome: ProcessingOutcome): ProcessingPlan {
    const now = this.now();
    const cached = this.transformed.get(id);
    this.transformed.delete(id);
    const t = this.takeTransform(id);
    const status =
      outcome.status === 'failed'
        ? 'failed'
        : outcome.status === 'routed' && !outcome.deliveries.length
          ? 'delivered'
          : outcome.status;
    return { id, outcome, now, cached, t, status };
  }

  /** The write of a processing failure (re-runnable: it owns what it writes). */
  private failedOp(id: string, error: StoredError): (x: SqlExec) => Promise<void> {
    return this.planOp(this.plan(id, { status: 'failed', error }));
  }

  /** The write of a routing decision (re-runnable: it owns what it writes). */
  private routingOp(id: string, outcome: RoutingOutcome): (x: SqlExec) => Promise<void> {
    return this.planOp(this.plan(id, outcome));
  }

  /** One message's processing, written on its own. */
  private planOp(p: ProcessingPlan): (x: SqlExec) => Promise<void> {
    return async (x) => {
      // Routed once only: when a lease ran out and two processors handled the message, the
      // second routing is dropped (no second set of deliveries).
      const error = p.outcome.status === 'failed' ? errJson(p.outcome.error) : null;
      const m = await this.finishProcessing(x, p.id, p.status, error, p.now, p.t);
      if (!m) return;
      const deliveries: unknown[][] = [];
      const evs = await this.afterProcessing(
        x,
        p,
        m,
        deliveries,
        async () => (await this.content(x, [p.id], true)).get(p.id)?.bundle ?? '',
      );
      if (deliveries.length) await this.insertDeliveries(x, deliveries);
      await this.events_(x, evs);
    };
  }

  /**
   * The rows a processed message adds once its status is written (`m`: its seq, source and
   * ordering key): event rows (returned) and delivery rows (pushed to `deliveries`). A delivery
   * whose bundle is the message's own references it (bundle NULL).
   */
  private async afterProcessing(
    x: SqlExec,
    p: ProcessingPlan,
    m: Row,
    deliveries: unknown[][],
    storedBundle: () => Promise<string>,
  ): Promise<EventRow[]> {
    const evs = await this.outcomeEvents(x, p, m, deliveries, storedBundle);
    // Each data-quality issue an event row of its own (where and why, never the value), before the outcome.
    if (p.issues?.length)
      evs.unshift(
        ...p.issues.map((i) => ({ id: p.id, at: p.now, status: DATA_QUALITY_EVENT, detail: JSON.stringify(i) })),
      );
    return evs;
  }

  private async outcomeEvents(
    x: SqlExec,
    p: ProcessingPlan,
    m: Row,
    deliveries: unknown[][],
    storedBundle: () => Promise<string>,
  ): Promise<EventRow[]> {
    const { id, now, outcome, cached } = p;
    switch (outcome.status) {
      case 'failed':
        return [{ id, at: now, status: 'failed', detail: outcome.error.code }];
      case 'unrouted':
        return [{ id, at: now, status: 'unrouted' }];
      case 'filtered':
        return [{ id, at: now, status: 'filtered', detail: outcome.detail }];
      case 'routed': {
        const key: string = m.ordering_key || `source:${m.source_id}`;
        let messageBundle: string | undefined = cached?.json ?? p.t?.text;
        const evs: EventRow[] = [{ id, at: now, status: 'routed', detail: `${outcome.deliveries.length} deliveries` }];
        for (const d of outcome.deliveries) {
          let text: string | null;
          // The message's bundle, as recorded: referenced, not stored again.
          if (
            d.unchanged &&
            ((d.bundle === undefined && d.bundleJson === undefined) ||
              (cached?.bundle !== undefined && d.bundle === cached.bundle))
          )
            text = null;
          else {
            text = d.bundleJson ?? JSON.stringify(d.bundle);
            if (messageBundle === undefined) messageBundle = await storedBundle();
            if (text === messageBundle) text = null;
          }
          deliveries.push([newId(now), id, m.seq, d.routeId, d.sinkId, key, d.strictOrder ? 1 : 0, now, text]);
          evs.push({ id, at: now, status: 'delivery:pending', sinkId: d.sinkId, routeId: d.routeId });
        }
        if (!outcome.deliveries.length) evs.push({ id, at: now, status: 'delivered', detail: 'no deliveries' });
        return evs;
      }
      default:
        outcome satisfies never;
        return [];
    }
  }

  /**
   * Several messages' processing written set-wise: one UPDATE of the messages (UPDATE ... FROM
   * VALUES), one of their contents, one multi-row INSERT of the deliveries -- the same rows and
   * events as `planOp` per message. Throws when a message is unknown (the caller then writes
   * message by message, so only that one fails).
   */
  private plansOp(plans: ProcessingPlan[]): (x: SqlExec) => Promise<EventRow[]> {
    return async (x) => {
      const evs: EventRow[] = [];
      const deliveries: unknown[][] = [];
      const per = 200;
      const updated = new Map<string, Row>();
      for (let o = 0; o < plans.length; o += per) {
        const part = plans.slice(o, o + per);
        const rows = await x.all(
          `UPDATE messages SET status = v.column2,
             ordering_key = CASE WHEN v.column5 = 'y' THEN COALESCE(v.column3, ordering_key, 'source:' || source_id) ELSE ordering_key END,
             error = v.column4, lease_owner = NULL, lease_expires = NULL, updated_at = CAST(v.column6 AS BIGINT)
           FROM (VALUES ${part.map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}) AS v
           WHERE messages.id = v.column1 AND messages.status IN ${UNROUTED_MESSAGE}
           RETURNING id, seq, source_id, ordering_key`,
          part.flatMap((p) => [
            p.id,
            p.status,
            p.t?.key ?? null,
            p.outcome.status === 'failed' ? errJson(p.outcome.error) : null,
            p.t ? 'y' : 'n',
            String(p.now),
          ]),
        );
        for (const r of rows) updated.set(r.id as string, r);
      }
      const missed = plans.filter((p) => !updated.has(p.id)).map((p) => p.id);
      if (missed.length) {
        const found = new Map(
          (
            await x.all(`SELECT id, status FROM messages WHERE id IN (${missed.map(() => '?').join(', ')})`, missed)
          ).map((r) => [r.id as string, r.status as string]),
        );
        const unknown = missed.find((id) => !found.has(id));
        if (unknown)
          throw new FerryError('INTERNAL_STORE_NO_MESSAGE', `no stored message ${unknown}`, {
            kind: 'internal',
            details: { messageId: unknown },
          });
        for (const id of missed) this.staleProcessing(id, found.get(id)!);
      }
      const bundles = plans.filter((p) => p.t && updated.has(p.id));
      for (let o = 0; o < bundles.length; o += per) {
        const part = bundles.slice(o, o + per);
        await x.run(
          `UPDATE message_content SET bundle = v.column2 FROM (VALUES ${part.map(() => '(?, ?)').join(', ')}) AS v WHERE message_content.message_id = v.column1`,
          part.flatMap((p) => [p.id, p.t!.text]),
        );
      }
      for (const p of plans) {
        const m = updated.get(p.id);
        if (!m) continue;
        if (p.t) evs.push({ id: p.id, at: p.t.at, status: 'transformed' });
        evs.push(
          ...(await this.afterProcessing(
            x,
            p,
            m,
            deliveries,
            async () => (await this.content(x, [p.id], true)).get(p.id)?.bundle ?? '',
          )),
        );
      }
      await this.insertDeliveries(x, deliveries);
      return evs;
    };
  }

  /** Event rows recorded while the previous `recordEvents` write runs: written together after it. */
  private eventBatch?: { rows: EventRow[]; done: Promise<void> };
  /** The `recordEvents` write in flight. */
  private eventsWriting?: Promise<void>;
  /** The wait before a batch of event rows is written; cut short by a read that must see them, or closing. */
  private readonly eventsLinger = new WakeableSleep();

  /**
   * Event rows without a transition of their own (the ACK each source sent): one write at a time,
   * the rows that arrive meanwhile in the next, and each write gathers rows for `EVENTS_LINGER_MS`
   * first -- a group commit, so a source recording one ACK per message does not cost one
   * transaction per message, also when one message at a time is all there is (a feed waiting for
   * each ACK; PostgreSQL runs every write as its own transaction). Each caller resolves once its
   * rows are committed; reads for people (`settle`) and `close` write them at once.
   */
  async recordEvents(events: { messageId: string; status: string; detail?: string }[]): Promise<void> {
    this.assertOpen();
    if (!events.length) return;
    const at = this.now();
    const rows = events.map((e) => ({ id: e.messageId, at, status: e.status, detail: e.detail ?? null }));
    if (this.eventBatch) {
      this.eventBatch.rows.push(...rows);
      return this.eventBatch.done;
    }
    const batch: { rows: EventRow[]; done: Promise<void> } = { rows, done: Promise.resolve() };
    this.eventBatch = batch;
    const previous = this.eventsWriting;
    batch.done = (async () => {
      // Behind the write in flight (its failure is its callers'), gathering rows meanwhile.
      await previous?.catch(() => undefined);
      if (!this.draining) await this.eventsLinger.sleep(EVENTS_LINGER_MS);
      this.eventBatch = undefined;
      const w = this.write((x) => this.events_(x, batch.rows));
      this.eventsWriting = w;
      try {
        await w;
      } finally {
        if (this.eventsWriting === w) this.eventsWriting = undefined;
      }
    })();
    return batch.done;
  }

  /** Waits for the event rows queued by `recordEvents` (closing: written before the store closes). */
  protected override async drainQueuedWrites(): Promise<void> {
    this.draining++;
    try {
      while (this.eventBatch || this.eventsWriting) {
        this.eventsLinger.wake();
        await (this.eventBatch?.done ?? this.eventsWriting)!.catch(() => undefined);
      }
    } finally {
      this.draining--;
    }
  }

  /** Callers of `drainQueuedWrites` waiting: event rows are written without a linger meanwhile. */
  private draining = 0;

  /** Stamps each message with the config version that routed it (in the transaction recording it). */
  private async stampConfigVersions(x: SqlExec, results: ProcessedMessage[], skip?: Set<string>): Promise<void> {
    const byVersion = new Map<number, string[]>();
    for (const r of results)
      if (r.configVersion !== undefined && !skip?.has(r.id))
        byVersion.set(r.configVersion, [...(byVersion.get(r.configVersion) ?? []), r.id]);
    for (const [version, ids] of byVersion)
      await x.run(`UPDATE messages SET config_version = ? WHERE id IN (${ids.map(() => '?').join(', ')})`, [
        version,
        ...ids,
      ]);
  }
}
