import type { MessageFilter, PruneOptions, PruneResult } from '../message-store';
import { SqlAdminQueriesPart } from './admin-queries';
import { UNROUTED_MESSAGE, type EventRow, type SqlExec } from './sql-exec';
import { SqlStoreBase } from './store-base';

/**
 * Bulk operations, each in steps of its own short transactions with the event loop free between
 * them: replay (messages processed again), retry of deliveries, and retention (`prune`: bodies
 * dropped, old messages and audit entries deleted).
 */
export abstract class SqlRetentionPart extends SqlAdminQueriesPart {
  /**
   * Bulk operations (replay, retry, prune) run in steps of this many messages or deliveries, each
   * its own transaction, with the event loop free between them: SQLite's calls are synchronous
   * on the engine's thread, and one transaction for a replay of 20,000 messages stood the engine
   * still for a third of a second (a million: a quarter of a minute).
   */
  bulkStep = 500;

  /** `step` over `items`, `bulkStep` at a time, each in its own transaction; what the steps return, in order. */
  private async inSteps<T>(items: string[], step: (x: SqlExec, part: string[]) => Promise<T[]>): Promise<T[]> {
    const out: T[] = [];
    for (let o = 0; o < items.length; o += this.bulkStep) {
      const part = items.slice(o, o + this.bulkStep);
      out.push(...(await this.txSettled((x) => step(x, part), { long: true })));
      await SqlStoreBase.breathe();
    }
    return out;
  }

  async replay(filter: MessageFilter): Promise<string[]> {
    this.assertOpen();
    const now = this.now();
    const limit = filter.limit && filter.limit > 0 ? ` LIMIT ${Math.floor(filter.limit)}` : '';
    const candidates = (
      await this.readForAdmin(async (x) => {
        const { where, params } = await this.filterSqlOn(x, filter);
        return x.all(
          `SELECT m.id FROM messages m ${where ? `${where} AND` : 'WHERE'} m.pruned_at IS NULL AND m.status NOT IN ${UNROUTED_MESSAGE} ORDER BY m.seq${limit}`,
          params,
        );
      })
    ).map((r) => r.id as string);
    return this.inSteps(candidates, async (x, part) => {
      // Still replayable: not pruned, not being processed (the engine or another instance may
      // have moved it since the candidates were read).
      const rows = await x.all(
        `UPDATE messages SET status = 'received', error = NULL, lease_owner = NULL, lease_expires = NULL, process_attempts = 0, updated_at = ?
         WHERE id IN (${part.map(() => '?').join(', ')}) AND pruned_at IS NULL AND status NOT IN ${UNROUTED_MESSAGE} RETURNING id, seq`,
        [now, ...part],
      );
      if (!rows.length) return [];
      const ids = rows.sort((a, b) => Number(a.seq) - Number(b.seq)).map((r) => r.id as string);
      const inIds = `(${ids.map(() => '?').join(', ')})`;
      await x.run(`UPDATE message_content SET bundle = NULL WHERE message_id IN ${inIds}`, ids);
      const superseded = await x.all(
        `UPDATE deliveries SET superseded = 1, lease_owner = NULL, lease_expires = NULL WHERE message_id IN ${inIds} AND superseded = 0 RETURNING message_id, sink_id, ordering_key, strict_order, status`,
        ids,
      );
      await this.promoteHeads(
        x,
        superseded.filter((r) => r.status === 'pending' || r.status === 'failed'),
      );
      const n = new Map<string, number>();
      for (const r of superseded) n.set(r.message_id as string, (n.get(r.message_id as string) ?? 0) + 1);
      await this.events_(
        x,
        ids.map((id) => ({
          id,
          at: now,
          status: 'received',
          detail: n.get(id) ? `replay (${n.get(id)} deliveries superseded)` : 'replay',
        })),
      );
      return ids;
    });
  }

  /**
   * Retry deliveries without transforming again (same bundle): dead or failed deliveries matching
   * the filter become pending, due now, attempts reset. Returns the delivery ids re-queued.
   */
  async retryDeliveries(filter: MessageFilter & { deliveryIds?: string[] }): Promise<string[]> {
    this.assertOpen();
    const now = this.now();
    const statuses = filter.deliveryStatus?.length ? filter.deliveryStatus : ['dead', 'failed'];
    const c: string[] = ['d.superseded = 0', `d.status IN (${statuses.map(() => '?').join(', ')})`];
    const p: unknown[] = [...statuses];
    if (filter.sinkId) {
      c.push('d.sink_id = ?');
      p.push(filter.sinkId);
    }
    if (filter.routeId) {
      c.push('d.route_id = ?');
      p.push(filter.routeId);
    }
    if (filter.deliveryIds) {
      c.push(filter.deliveryIds.length ? `d.id IN (${filter.deliveryIds.map(() => '?').join(', ')})` : '1 = 0');
      p.push(...filter.deliveryIds);
    }
    const candidates = (
      await this.readForAdmin(async (x) => {
        const { where, params } = await this.filterSqlOn(x, {
          ...filter,
          deliveryStatus: undefined,
          sinkId: undefined,
          routeId: undefined,
        });
        return x.all(
          `SELECT d.id FROM deliveries d WHERE ${c.join(' AND ')} AND d.message_id IN (SELECT m.id FROM messages m ${where}) ORDER BY d.message_seq, d.seq`,
          [...p, ...params],
        );
      })
    ).map((r) => r.id as string);
    return this.inSteps(candidates, async (x, part) => {
      // Still open to a retry (superseded or delivered meanwhile: left alone).
      const rows = await x.all(
        `UPDATE deliveries SET status = 'pending', attempts = 0, probe_attempts = 0, first_attempt_at = NULL, next_attempt_at = NULL, lease_owner = NULL, lease_expires = NULL
         WHERE id IN (${part.map(() => '?').join(', ')}) AND superseded = 0 AND status IN (${statuses.map(() => '?').join(', ')})
         RETURNING id, message_id, message_seq, seq, sink_id, route_id`,
        [...part, ...statuses],
      );
      if (!rows.length) return [];
      await this.settleHeads(
        x,
        rows.map((r) => r.id as string),
      );
      rows.sort((a, b) => Number(a.message_seq) - Number(b.message_seq) || Number(a.seq) - Number(b.seq));
      const evs: EventRow[] = rows.map((r) => ({
        id: r.message_id as string,
        at: now,
        status: 'delivery:pending',
        sinkId: r.sink_id as string,
        routeId: r.route_id as string,
        detail: 'retry requested',
      }));
      const touched = [...new Set(rows.map((r) => r.message_id as string))];
      const moved = await x.all(
        `UPDATE messages SET status = 'routed', updated_at = ? WHERE id IN (${touched.map(() => '?').join(', ')}) AND status <> 'routed' RETURNING id, seq`,
        [now, ...touched],
      );
      for (const m of moved.sort((a, b) => Number(a.seq) - Number(b.seq)))
        evs.push({ id: m.id as string, at: now, status: 'routed', detail: 'retry requested' });
      await this.events_(x, evs);
      return rows.map((r) => r.id as string);
    });
  }

  /** Messages a step of `prune` looks at (by seq), and the most it prunes or deletes (tests make them small). */
  pruneStep = { scan: 20_000, batch: 500 };

  /**
   * In steps, each its own short transaction over a bounded range of messages, with the event
   * loop free between them: the engine keeps acknowledging and delivering while a large prune
   * runs (one transaction for everything held SQLite's lock -- and, its calls being synchronous,
   * the engine's thread -- for about a minute per million messages).
   */
  async prune(opts: PruneOptions): Promise<PruneResult> {
    this.assertOpen();
    const now = this.now();
    // The times given are on this process's clock; the rows' on the database's (see `clockOffsetMs`).
    const onDb = (d: Date) => d.getTime() + this.clockOffsetMs;
    const passes: { statuses: string[]; before: number; del: boolean }[] = [
      { statuses: ['delivered', 'filtered', 'unrouted'], before: onDb(opts.bodiesBefore), del: false },
    ];
    if (opts.deadBefore) passes.push({ statuses: ['dead', 'failed'], before: onDb(opts.deadBefore), del: false });
    if (opts.deleteBefore)
      passes.push({
        statuses: ['delivered', 'filtered', 'unrouted', 'dead', 'failed'],
        before: onDb(opts.deleteBefore),
        del: true,
      });
    const top = Number((await this.readSettled((x) => x.all('SELECT MAX(seq) AS s FROM messages')))[0]?.s ?? 0);
    let messages = 0;
    let deleted = 0;
    const { scan, batch } = this.pruneStep;
    for (const pass of passes) {
      for (let after = 0; after < top;) {
        const upTo = Math.min(after + scan, top);
        const step = await this.txSettled(
          async (x) => {
            const rows = await x.all(
              `SELECT seq, id FROM messages
               WHERE seq > ? AND seq <= ? AND status IN (${pass.statuses.map(() => '?').join(', ')}) AND updated_at < ?${pass.del ? '' : ' AND pruned_at IS NULL'}
               ORDER BY seq LIMIT ?${this.lockClause('messages')}`,
              [after, upTo, ...pass.statuses, pass.before, batch],
            );
            const next = rows.length === batch ? Number(rows[rows.length - 1].seq) : upTo;
            if (!rows.length) return { next, n: 0 };
            const seqs = rows.map((r) => Number(r.seq));
            const ids = rows.map((r) => r.id as string);
            const inSeqs = `(${seqs.map(() => '?').join(', ')})`;
            const inIds = `(${ids.map(() => '?').join(', ')})`;
            if (pass.del) {
              await x.run(`DELETE FROM message_events WHERE message_id IN ${inIds}`, ids);
              // A dead message's other deliveries may still be open.
              const gone = await x.all(
                `DELETE FROM deliveries WHERE message_id IN ${inIds} RETURNING sink_id, ordering_key, strict_order, status, superseded`,
                ids,
              );
              await this.promoteHeads(
                x,
                gone.filter((r) => (r.status === 'pending' || r.status === 'failed') && !Number(r.superseded)),
              );
              await x.run(`DELETE FROM message_content WHERE message_id IN ${inIds}`, ids);
              return { next, n: await x.run(`DELETE FROM messages WHERE seq IN ${inSeqs}`, seqs) };
            }
            // (PostgreSQL: the rows are locked by the SELECT; one another instance's prune holds is
            // skipped, and left to its prune.)
            const n = await x.run(`UPDATE messages SET pruned_at = ? WHERE seq IN ${inSeqs} AND pruned_at IS NULL`, [
              now,
              ...seqs,
            ]);
            await x.run(`DELETE FROM message_content WHERE message_id IN ${inIds}`, ids);
            await x.run(`UPDATE deliveries SET bundle = NULL WHERE bundle IS NOT NULL AND message_id IN ${inIds}`, ids);
            return { next, n };
          },
          { long: true },
        );
        if (pass.del) deleted += step.n;
        else messages += step.n;
        after = step.next;
        // Sockets, timers and the other stages run between steps (a resolved promise alone
        // would go straight on to the next one).
        await SqlStoreBase.breathe();
      }
    }
    let auditDeleted: number | undefined;
    if (opts.auditBefore) {
      const before = onDb(opts.auditBefore);
      auditDeleted = await this.txSettled((x) => x.run('DELETE FROM audit_log WHERE at < ?', [before]), { long: true });
    }
    if (messages || deleted || auditDeleted) await this.compact();
    return auditDeleted === undefined ? { messages, deleted } : { messages, deleted, auditDeleted };
  }
}
