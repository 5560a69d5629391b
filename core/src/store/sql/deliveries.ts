import { FerryError } from '../../errors';
import type { DeliveryStatus, MessageStatus } from '../../model/message';
import { lazyJson } from '../../util/lazy-json';
import type {
  ClaimedDelivery,
  CompleteOptions,
  CompleteResult,
  DeliveryClaimFilter,
  DeliveryOutcome,
  InstanceStart,
} from '../message-store';
import { SqlMessagesPart } from './messages';
import {
  CHUNK,
  errJson,
  JOIN_CONTENT,
  OPEN_DELIVERY,
  UNROUTED_MESSAGE,
  type EventRow,
  type Row,
  type SqlExec,
} from './sql-exec';

/** SQL: an older open strict delivery of (sink, key) than `seq` exists. */
export function olderOpenStrict(sink: string, key: string, seq: string): string {
  return `EXISTS (SELECT 1 FROM deliveries e WHERE e.sink_id = ${sink} AND e.ordering_key = ${key} AND e.superseded = 0
                 AND e.status IN ${OPEN_DELIVERY} AND e.strict_order = 1 AND e.message_seq < ${seq})`;
}

/**
 * Deliveries: their rows and the heads of each sink's ordering keys, claims (the dispatcher's hot
 * path), leases of deliveries and of messages being processed, outcomes, and the next due retry.
 */
export abstract class SqlDeliveriesPart extends SqlMessagesPart {
  /** Rows: [id, message_id, message_seq, route_id, sink_id, ordering_key, strict_order, created_at, bundle]. */
  protected async insertDeliveries(x: SqlExec, rows: unknown[][]): Promise<void> {
    const per = 100;
    if (!this.keyHeads) {
      for (let o = 0; o < rows.length; o += per) {
        const part = rows.slice(o, o + per);
        await x.run(
          `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, bundle)
           VALUES ${part.map(() => `(?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)`).join(', ')}`,
          part.flat(),
        );
      }
      return;
    }
    // Each strict delivery's head flag, set as it is written: held (0) by an older strict delivery
    // of its (sink, key) in this batch -- known here -- or open in the store; otherwise 1.
    const group = (r: unknown[]) => `${r[4]}\u0000${r[5]}`;
    const oldest = new Map<string, number>();
    for (const r of rows) if (r[6]) oldest.set(group(r), Math.min(oldest.get(group(r)) ?? Infinity, Number(r[2])));
    const held = rows.map((r) => (r[6] && Number(r[2]) > oldest.get(group(r))! ? 1 : 0));
    for (let o = 0; o < rows.length; o += per) {
      const part = rows.slice(o, o + per);
      await x.run(
        `INSERT INTO deliveries (id, message_id, message_seq, route_id, sink_id, status, attempts, ordering_key, strict_order, created_at, bundle, head)
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, 'pending', 0, v.column6, v.column7, v.column8, v.column9,
           CASE WHEN v.column7 = 1 AND (v.column10 = 1 OR ${olderOpenStrict('v.column5', 'v.column6', 'v.column3')}) THEN 0 ELSE 1 END
         FROM (VALUES ${part.map(() => `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).join(', ')}) AS v`,
        part.flatMap((r, i) => [...r, held[o + i]]),
      );
    }
  }

  /**
   * Heads of each sink's ordering keys (`deliveries.head`), kept by stores with one writer
   * (SQLite): an open delivery with head = 0 is held by an older open strict delivery of the same
   * (sink, key); the claim visits heads only, so a sink down with a large backlog costs its claim
   * the few deliveries it may take, not the backlog. A head may be stale (1 while an older one is
   * open again: a replay or retry reopened it, or it was routed late); the claim checks each
   * candidate, so stale heads cost a visit, never the order. A delivery that should be a head and
   * is not would never be claimed: every change that takes an open strict delivery out of its
   * group's front promotes the next (`promoteHeads`), and every one that opens one sets its flag.
   * PostgreSQL's instances write concurrently and could miss each other's changes; it leaves
   * every head at 1 and claims with the full check.
   */
  protected readonly keyHeads: boolean = false;

  /**
   * The groups (sink, key) of `rows` (with sink_id, ordering_key, strict_order) lost open strict
   * deliveries: the oldest open strict deliveries left in each become heads.
   */
  protected async promoteHeads(x: SqlExec, rows: Row[]): Promise<void> {
    if (!this.keyHeads) return;
    const groups = new Map<string, [string, string]>();
    for (const r of rows)
      if (Number(r.strict_order) === 1)
        groups.set(`${r.sink_id}\u0000${r.ordering_key}`, [r.sink_id as string, r.ordering_key as string]);
    const list = [...groups.values()];
    for (let o = 0; o < list.length; o += CHUNK) {
      const part = list.slice(o, o + CHUNK);
      await x.run(
        `UPDATE deliveries SET head = 1 WHERE seq IN (
           SELECT d.seq FROM (VALUES ${part.map(() => '(?, ?)').join(', ')}) AS g
           JOIN deliveries d ON d.sink_id = g.column1 AND d.ordering_key = g.column2
             AND d.message_seq = (SELECT MIN(e.message_seq) FROM deliveries e
                                  WHERE e.sink_id = g.column1 AND e.ordering_key = g.column2 AND e.superseded = 0
                                    AND e.status IN ${OPEN_DELIVERY} AND e.strict_order = 1)
           WHERE d.superseded = 0 AND d.status IN ${OPEN_DELIVERY} AND d.strict_order = 1 AND d.head = 0)`,
        part.flat(),
      );
    }
  }

  /** Deliveries `ids` were opened again (a retry): each one's head flag set from its group. */
  protected async settleHeads(x: SqlExec, ids: string[]): Promise<void> {
    if (!this.keyHeads) return;
    for (let o = 0; o < ids.length; o += CHUNK) {
      const part = ids.slice(o, o + CHUNK);
      await x.run(
        `UPDATE deliveries SET head = CASE WHEN strict_order = 1 AND ${olderOpenStrict('deliveries.sink_id', 'deliveries.ordering_key', 'deliveries.message_seq')} THEN 0 ELSE 1 END
         WHERE id IN (${part.map(() => '?').join(', ')})`,
        part,
      );
    }
  }

  // ------------------------------------------------------------------------------------------
  // Deliveries

  async claimDeliveries(
    owner: string,
    limit: number,
    leaseMs: number,
    nowDate?: Date,
    filter: DeliveryClaimFilter = {},
  ): Promise<ClaimedDelivery[]> {
    this.assertOpen();
    if (limit <= 0) return [];
    const now = nowDate?.getTime() ?? this.now();
    if (filter.excludeSinkIds?.length && !filter.sinkIds) {
      // Sinks no longer configured: which sinks have open deliveries (one index step per sink),
      // less the known ones -- rather than walking every open delivery of the known sinks.
      const known = new Set(filter.excludeSinkIds);
      const gone = (await this.read((x) => this.openSinkIds(x))).filter((id) => !known.has(id));
      if (!gone.length) return [];
      filter = { sinkIds: gone };
    }
    let sinkSql = '';
    const sinkParams: string[] = [];
    if (filter.sinkIds) {
      if (!filter.sinkIds.length) return [];
      sinkSql += ` AND d.sink_id IN (${filter.sinkIds.map(() => '?').join(', ')})`;
      sinkParams.push(...filter.sinkIds);
    }
    if (filter.excludeSinkIds?.length) {
      sinkSql += ` AND d.sink_id NOT IN (${filter.excludeSinkIds.map(() => '?').join(', ')})`;
      sinkParams.push(...filter.excludeSinkIds);
    }
    // Claimable: due, not leased, and (strict) not held by an older open delivery of its key or
    // an older message of its key (or of a key not known yet) still being processed.
    const claimable = `
           AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)
           AND (d.lease_expires IS NULL OR d.lease_expires <= ?)
           AND (d.strict_order = 0 OR (
             NOT ${olderOpenStrict('d.sink_id', 'd.ordering_key', 'd.message_seq')}
             -- Evaluated once: usually no unrouted message is older than any candidate, and the
             -- per-candidate search below is skipped.
             AND (d.message_seq < (SELECT COALESCE(MIN(u.seq), 9223372036854775807) FROM messages u WHERE u.status IN ${UNROUTED_MESSAGE})
                  OR NOT EXISTS (SELECT 1 FROM messages m
                         WHERE m.status IN ${UNROUTED_MESSAGE} AND m.seq < d.message_seq
                           AND (m.ordering_key IS NULL OR m.ordering_key = d.ordering_key)))))`;
    // SQLite: the LIMITs as literals, rounded up to a power of two (a handful of cached statements;
    // the first `limit` candidates are taken). Bound LIMITs made this query ~2.5x slower (a sorter
    // set up for each of its three ORDER BY ... LIMIT on every run: 376 vs 146 us with 5 open
    // deliveries, measured side by side), and it runs once or twice per message at one connection.
    const cap = 2 ** Math.ceil(Math.log2(Math.max(1, Math.min(limit, 1 << 20))));
    const rows = await this.claimTx(async (x) => {
      const found = this.keyHeads
        ? // Heads only (two indexes): retries that are due, earliest due first (a failed delivery
          // always has its next attempt time), then new deliveries, oldest first. A key held
          // behind a failed delivery, and a failed one scheduled for later, are not visited; when
          // a down sink comes back, its keys' retries are taken in the order they fell due
          // without sorting them all first. (Per key there is only ever one to take.)
          await x.all(
            `SELECT d.seq FROM deliveries d WHERE d.seq IN (
               SELECT seq FROM (SELECT d.seq FROM deliveries d WHERE d.superseded = 0 AND d.status = 'pending' AND d.head = 1${sinkSql}${claimable}
                                ORDER BY d.message_seq, d.seq LIMIT ${cap})
               UNION ALL
               SELECT seq FROM (SELECT d.seq FROM deliveries d WHERE d.superseded = 0 AND d.status = 'failed' AND d.head = 1${sinkSql} AND d.next_attempt_at <= ?${claimable}
                                ORDER BY d.next_attempt_at, d.seq LIMIT ${cap}))
             ORDER BY CASE WHEN d.status = 'failed' THEN 0 ELSE 1 END, CASE WHEN d.status = 'failed' THEN d.next_attempt_at ELSE d.message_seq END, d.seq LIMIT ${cap}`,
            [...sinkParams, now, now, ...sinkParams, now, now, now],
          )
        : await x.all(
            `SELECT d.seq FROM deliveries d
             WHERE d.superseded = 0 AND d.status IN ${OPEN_DELIVERY}${sinkSql}${claimable}
             ORDER BY d.message_seq, d.seq LIMIT ?${this.lockClause('d')}`,
            [...sinkParams, now, now, limit],
          );
      const cand = found.length > limit ? found.slice(0, limit) : found;
      if (!cand.length) return [];
      const claimed = await x.all(
        `UPDATE deliveries SET lease_owner = ?, lease_expires = ?, first_attempt_at = COALESCE(first_attempt_at, ?)
         WHERE seq IN (${cand.map(() => '?').join(', ')}) RETURNING *`,
        [owner, now + leaseMs, now, ...cand.map((r) => r.seq)],
      );
      const ids = [...new Set(claimed.map((r) => r.message_id as string))];
      const rows = await x.all(
        `SELECT ${this.columns(true, true, 'm')} FROM messages m ${JOIN_CONTENT} WHERE m.id IN (${ids.map(() => '?').join(', ')})`,
        ids,
      );
      const msgs = new Map(rows.map((r) => [r.id as string, r]));
      return claimed.map((d) => ({ d, m: msgs.get(d.message_id as string)! }));
    });
    return rows
      .map(({ d, m }) => {
        const message = this.toMessage(m, true, true);
        const delivery = this.toDelivery(d);
        // The bundle stays JSON text until something reads it (the file and HTTP sinks never do).
        const bundleJson = String(d.bundle ?? m.bundle ?? 'null');
        const c = {
          ...delivery,
          firstAttemptAt: delivery.firstAttemptAt ?? new Date(now),
          bundleJson,
          message,
        } as ClaimedDelivery;
        return lazyJson(c, 'bundle', bundleJson);
      })
      .sort((a, b) => a.message.seq - b.message.seq || (a.id < b.id ? -1 : 1));
  }

  /** The sinks with open deliveries: a skip scan of the open deliveries' (sink, key) index. */
  private async openSinkIds(x: SqlExec): Promise<string[]> {
    const open = `superseded = 0 AND status IN ${OPEN_DELIVERY}`;
    const rows = await x.all(
      `WITH RECURSIVE s(id) AS (
         SELECT MIN(sink_id) FROM deliveries WHERE ${open}
         UNION ALL
         SELECT (SELECT MIN(sink_id) FROM deliveries WHERE ${open} AND sink_id > s.id) FROM s WHERE s.id IS NOT NULL)
       SELECT id FROM s WHERE id IS NOT NULL`,
    );
    return rows.map((r) => r.id as string);
  }

  async renewDeliveryLeases(owner: string, deliveryIds: string[], leaseMs: number): Promise<string[]> {
    this.assertOpen();
    if (!deliveryIds.length) return [];
    const until = this.now() + leaseMs;
    return this.write(async (x) => {
      const held: string[] = [];
      for (let o = 0; o < deliveryIds.length; o += CHUNK) {
        const part = deliveryIds.slice(o, o + CHUNK);
        // The same fence as completeDeliveries: still ours, or superseded by a replay in flight.
        const rows = await x.all(
          `UPDATE deliveries SET lease_expires = ? WHERE id IN (${part.map(() => '?').join(', ')}) AND status IN ('pending', 'failed') AND (lease_owner = ? OR superseded = 1) RETURNING id`,
          [until, ...part, owner],
        );
        for (const r of rows) held.push(r.id as string);
      }
      return held;
    });
  }

  /**
   * Gives back every open lease (messages being processed, deliveries being made) held by `owners`
   * -- instances known to be dead -- or, with `{ allBut }`, by anyone but that owner. Their work
   * is claimed again at once instead of after its lease.
   */
  protected releaseLeasesOf(x: SqlExec, who: { owners: string[] } | { allBut: string }): Promise<InstanceStart> {
    const run = async (table: 'messages' | 'deliveries', open: string): Promise<number> => {
      if ('allBut' in who)
        return x.run(
          `UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE status IN ${open} AND lease_owner IS NOT NULL AND lease_owner <> ?`,
          [who.allBut],
        );
      let n = 0;
      for (let o = 0; o < who.owners.length; o += CHUNK) {
        const part = who.owners.slice(o, o + CHUNK);
        n += await x.run(
          `UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE status IN ${open} AND lease_owner IN (${part.map(() => '?').join(', ')})`,
          part,
        );
      }
      return n;
    };
    return (async () => ({
      releasedMessages: await run('messages', UNROUTED_MESSAGE),
      releasedDeliveries: await run('deliveries', OPEN_DELIVERY),
    }))();
  }

  async releaseDeliveryLeases(owner: string, keep: string[]): Promise<number> {
    return this.releaseLeases('deliveries', `status IN ('pending', 'failed')`, owner, keep);
  }

  async renewMessageLeases(owner: string, messageIds: string[], leaseMs: number): Promise<string[]> {
    this.assertOpen();
    if (!messageIds.length) return [];
    const until = this.now() + leaseMs;
    return this.write(async (x) => {
      const held: string[] = [];
      for (let o = 0; o < messageIds.length; o += CHUNK) {
        const part = messageIds.slice(o, o + CHUNK);
        const rows = await x.all(
          `UPDATE messages SET lease_expires = ? WHERE id IN (${part.map(() => '?').join(', ')}) AND status IN ${UNROUTED_MESSAGE} AND lease_owner = ? RETURNING id`,
          [until, ...part, owner],
        );
        for (const r of rows) held.push(r.id as string);
      }
      return held;
    });
  }

  async releaseMessageLeases(owner: string, keep: string[]): Promise<number> {
    return this.releaseLeases('messages', `status IN ${UNROUTED_MESSAGE}`, owner, keep);
  }

  /** Open rows of `table` leased to `owner`, other than `keep`, given back (leases held unknowingly). */
  private releaseLeases(
    table: 'deliveries' | 'messages',
    open: string,
    owner: string,
    keep: string[],
  ): Promise<number> {
    this.assertOpen();
    return this.write(async (x) => {
      const rows = await x.all(`SELECT id FROM ${table} WHERE lease_owner = ? AND ${open}`, [owner]);
      const kept = new Set(keep);
      const orphans = rows.map((r) => r.id as string).filter((id) => !kept.has(id));
      for (let o = 0; o < orphans.length; o += CHUNK) {
        const part = orphans.slice(o, o + CHUNK);
        await x.run(
          `UPDATE ${table} SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ? AND id IN (${part.map(() => '?').join(', ')})`,
          [owner, ...part],
        );
      }
      return orphans.length;
    });
  }

  async completeDelivery(deliveryId: string, outcome: DeliveryOutcome, opts?: CompleteOptions): Promise<void> {
    await this.completeDeliveries([{ deliveryId, outcome }], opts);
  }

  /**
   * Records the outcomes of several deliveries in one operation: the delivered ones with one
   * UPDATE, then their messages' statuses from one count per batch. Ids that match no delivery
   * are reported (INTERNAL_STORE_NO_DELIVERY) after the others are recorded.
   */
  async completeDeliveries(
    items: { deliveryId: string; outcome: DeliveryOutcome }[],
    opts: CompleteOptions = {},
  ): Promise<CompleteResult> {
    this.assertOpen();
    if (!items.length) return { stale: [] };
    const now = this.now();
    const { missing, stale } = await this.write(async (x) => {
      const clear = 'lease_owner = NULL, lease_expires = NULL';
      // A paused sink's probe: an attempt, but not one of the retry policy's maxAttempts.
      const probed = (o: DeliveryOutcome) =>
        o.status !== 'delivered' && o.probe ? 'probe_attempts = probe_attempts + 1, ' : '';
      const ret = 'RETURNING id, message_id, route_id, sink_id, superseded, ordering_key, strict_order, status';
      // Fenced by the lease: only the owner's own claim (or one a replay superseded in flight).
      const fence =
        opts.owner === undefined ? '' : ` AND status IN ('pending', 'failed') AND (lease_owner = ? OR superseded = 1)`;
      const fenceArgs = opts.owner === undefined ? [] : [opts.owner];
      const rows: Row[] = [];
      const delivered = items.filter((i) => i.outcome.status === 'delivered').map((i) => i.deliveryId);
      for (let o = 0; o < delivered.length; o += CHUNK) {
        const part = delivered.slice(o, o + CHUNK);
        rows.push(
          ...(await x.all(
            `UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, next_attempt_at = NULL, ${clear} WHERE id IN (${part.map(() => '?').join(', ')})${fence} ${ret}`,
            [now, ...part, ...fenceArgs],
          )),
        );
      }
      for (const { deliveryId, outcome } of items) {
        if (outcome.status === 'failed')
          rows.push(
            ...(await x.all(
              `UPDATE deliveries SET status = 'failed', attempts = attempts + 1, ${probed(outcome)}next_attempt_at = ?, last_error = ?, ${clear} WHERE id = ?${fence} ${ret}`,
              [
                // The caller's clock -> the database's.
                outcome.nextAttemptAt.getTime() + this.clockOffsetMs,
                errJson(outcome.error),
                deliveryId,
                ...fenceArgs,
              ],
            )),
          );
        else if (outcome.status === 'dead')
          rows.push(
            ...(await x.all(
              `UPDATE deliveries SET status = 'dead', attempts = attempts + 1, ${probed(outcome)}next_attempt_at = NULL, last_error = ?, ${clear} WHERE id = ?${fence} ${ret}`,
              [errJson(outcome.error), deliveryId, ...fenceArgs],
            )),
          );
      }
      // Delivered and dead ones left their keys' fronts: the next ones become heads.
      await this.promoteHeads(
        x,
        rows.filter((r) => r.status !== 'failed' && !Number(r.superseded)),
      );
      const byId = new Map(rows.map((r) => [r.id as string, r]));
      // Not updated: unknown, or (fenced) no longer this owner's -- unless already recorded as is.
      const notUpdated = items.filter((i) => !byId.has(i.deliveryId));
      const missing: string[] = [];
      const stale: CompleteResult['stale'] = [];
      if (notUpdated.length) {
        const found = new Map<string, Row>();
        for (let o = 0; o < notUpdated.length; o += CHUNK) {
          const part = notUpdated.slice(o, o + CHUNK).map((i) => i.deliveryId);
          for (const r of await x.all(
            `SELECT id, status, lease_owner FROM deliveries WHERE id IN (${part.map(() => '?').join(', ')})`,
            part,
          ))
            found.set(r.id as string, r);
        }
        for (const { deliveryId, outcome } of notUpdated) {
          const r = found.get(deliveryId);
          if (!r) missing.push(deliveryId);
          else if (r.status !== outcome.status || r.lease_owner != null)
            stale.push({
              deliveryId,
              status: r.status as DeliveryStatus,
              ...(r.lease_owner != null ? { leaseOwner: r.lease_owner as string } : {}),
            });
        }
      }
      const evs: EventRow[] = [];
      const open = new Set<string>();
      for (const { deliveryId, outcome } of items) {
        const d = byId.get(deliveryId);
        if (!d) continue;
        const detail =
          outcome.status === 'delivered'
            ? undefined
            : outcome.probe
              ? `${outcome.error.code} (probe)`
              : outcome.error.code;
        const ev = {
          id: d.message_id as string,
          at: now,
          status: `delivery:${outcome.status}`,
          sinkId: d.sink_id as string,
          routeId: d.route_id as string,
        };
        if (Number(d.superseded)) evs.push({ ...ev, detail: `${detail ?? ''} (superseded)`.trim() });
        else {
          evs.push({ ...ev, detail });
          open.add(d.message_id as string);
        }
      }
      // The messages' new statuses. Their rows are locked first (PostgreSQL, in id order): two
      // deliveries of one message completing at once on two instances must not both see the
      // other still open and leave the message `routed` for ever; the counts that follow see
      // every completion committed before the lock was granted.
      const ids = [...open].sort();
      for (let o = 0; o < ids.length; o += CHUNK) {
        const part = ids.slice(o, o + CHUNK);
        const marks = part.map(() => '?').join(', ');
        const cur = await x.all(
          `SELECT id, status FROM messages WHERE id IN (${marks}) ORDER BY id${this.rowLockClause()}`,
          part,
        );
        const counts = await x.all(
          `SELECT message_id, COUNT(*) AS total, COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead,
                  COALESCE(SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END), 0) AS delivered
           FROM deliveries WHERE message_id IN (${marks}) AND superseded = 0 GROUP BY message_id`,
          part,
        );
        const count = new Map(counts.map((c) => [c.message_id as string, c]));
        const change = new Map<MessageStatus, string[]>();
        for (const m of cur) {
          const c = count.get(m.id);
          if (!c || !['routed', 'dead', 'delivered'].includes(m.status)) continue;
          const next: MessageStatus =
            Number(c.dead) > 0 ? 'dead' : Number(c.delivered) === Number(c.total) ? 'delivered' : 'routed';
          if (next === m.status) continue;
          change.set(next, [...(change.get(next) ?? []), m.id]);
        }
        for (const [next, list] of change) {
          await x.run(
            `UPDATE messages SET status = ?, updated_at = ? WHERE id IN (${list.map(() => '?').join(', ')})`,
            [next, now, ...list],
          );
          for (const id of list) evs.push({ id, at: now, status: next });
        }
      }
      await this.events_(x, evs);
      return { missing, stale };
    });
    if (missing.length)
      throw new FerryError('INTERNAL_STORE_NO_DELIVERY', `no delivery ${missing.join(', ')}`, {
        kind: 'internal',
        details: { deliveryIds: missing, stale },
      });
    return { stale };
  }

  async nextDueAt(filter: DeliveryClaimFilter = {}): Promise<Date | undefined> {
    this.assertOpen();
    if (filter.sinkIds && !filter.sinkIds.length) return undefined;
    let sinkSql = '';
    const params: string[] = [];
    if (filter.sinkIds) {
      sinkSql += ` AND sink_id IN (${filter.sinkIds.map(() => '?').join(', ')})`;
      params.push(...filter.sinkIds);
    }
    if (filter.excludeSinkIds?.length) {
      sinkSql += ` AND sink_id NOT IN (${filter.excludeSinkIds.map(() => '?').join(', ')})`;
      params.push(...filter.excludeSinkIds);
    }
    // Not the ones leased (a retry under way: its next attempt is past, and would wake the
    // dispatcher every few milliseconds for as long as the call runs). A lease that runs out
    // because its instance died is found by the dispatcher's regular poll.
    const rows = await this.readSettled(
      (x) =>
        x.all(
          `SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE superseded = 0 AND status = 'failed' AND next_attempt_at IS NOT NULL${sinkSql}
             AND (lease_expires IS NULL OR lease_expires <= ?)`,
          [...params, this.now()],
        ),
      false,
    );
    // The database's clock -> the caller's (it sleeps until then).
    const t = rows[0]?.t;
    return t == null ? undefined : new Date(Number(t) - this.clockOffsetMs);
  }
}
