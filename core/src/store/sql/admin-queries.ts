import { FerryError } from '../../errors';
import type { MessageEvent, MessageStatus, StoredDelivery, StoredMessage } from '../../model/message';
import type { BacklogInfo, MessageFilter, StoreStats, ThroughputSeries } from '../message-store';
import { SqlHoldsPart } from './holds';
import { JOIN_CONTENT, OPEN_DELIVERY, UNROUTED_MESSAGE, type SqlExec } from './sql-exec';

/** Most distinct message types a `*` pattern is resolved to. */
const MAX_TYPES = 2000;

/**
 * Reads for people and tools (the admin API, `ferry` commands, metrics): browse and search with
 * the message filter, one message's events and deliveries, backlog, throughput and counts. They
 * run through `readForAdmin` (after the queued transitions commit; off the engine's thread where
 * the store can).
 */
export abstract class SqlAdminQueriesPart extends SqlHoldsPart {
  async getMessage(id: string, opts: { body?: boolean; bundle?: boolean } = {}): Promise<StoredMessage | undefined> {
    this.assertOpen();
    const join = opts.body || opts.bundle ? JOIN_CONTENT : '';
    const rows = await this.readForAdmin((x) =>
      x.all(`SELECT ${this.columns(!!opts.body, !!opts.bundle, 'm')} FROM messages m ${join} WHERE m.id = ?`, [id]),
    );
    return rows[0] ? this.toMessage(rows[0], !!opts.body, !!opts.bundle) : undefined;
  }

  /**
   * The stored message types a pattern with `*` matches (`ADT^A0*`): the distinct values in the
   * pattern's literal prefix range, read by skipping through the type index (one probe per
   * distinct type, not a scan of the messages), then matched against the whole pattern.
   */
  private async typesMatching(x: SqlExec, pattern: string): Promise<string[]> {
    const prefix = pattern.slice(0, pattern.indexOf('*'));
    const c: string[] = ['message_type >= ?'];
    const p: unknown[] = [prefix];
    if (prefix) {
      const last = prefix.codePointAt(prefix.length - 1)!;
      c.push('message_type < ?');
      p.push(prefix.slice(0, -1) + String.fromCodePoint(last + 1));
    }
    const range = c.join(' AND ');
    const rows = await x.all(
      `WITH RECURSIVE t(v, n) AS (
         SELECT (SELECT MIN(message_type) FROM messages WHERE ${range}), 1
         UNION ALL
         SELECT (SELECT MIN(message_type) FROM messages WHERE message_type > t.v AND ${range}), t.n + 1 FROM t WHERE t.v IS NOT NULL AND t.n < ${MAX_TYPES}
       ) SELECT v FROM t WHERE v IS NOT NULL`,
      [...p, ...p],
    );
    const re = new RegExp(
      `^${pattern
        .split('*')
        .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
      's',
    );
    return rows.map((r) => String(r.v)).filter((v) => re.test(v));
  }

  /** `filterSql`'s statement with its `*` type pattern resolved (see typesMatching). */
  protected async filterSqlOn(
    x: SqlExec,
    f: MessageFilter,
  ): Promise<{ where: string; params: unknown[]; types?: string[] }> {
    const types = f.messageType?.includes('*') ? await this.typesMatching(x, f.messageType) : undefined;
    return { ...this.filterSql(f, types), types };
  }

  protected filterSql(f: MessageFilter, types_?: string[]): { where: string; params: unknown[] } {
    const c: string[] = [];
    const p: unknown[] = [];
    if (f.ids) {
      if (!f.ids.length) c.push('1 = 0');
      else {
        c.push(`m.id IN (${f.ids.map(() => '?').join(', ')})`);
        p.push(...f.ids);
      }
    }
    if (f.status?.length) {
      c.push(`m.status IN (${f.status.map(() => '?').join(', ')})`);
      p.push(...f.status);
    }
    if (f.sourceId) {
      c.push('m.source_id = ?');
      p.push(f.sourceId);
    }
    if (f.since) {
      c.push('m.received_at >= ?');
      p.push(f.since.getTime());
    }
    if (f.until) {
      c.push('m.received_at < ?');
      p.push(f.until.getTime());
    }
    // Message type and control id: their own indexed columns (migration 12). A type with `*` is
    // resolved to the stored types it matches first (typesMatching), then matched as a list.
    if (f.messageType) {
      const types = types_ ?? (f.messageType.includes('*') ? undefined : [f.messageType]);
      if (!types)
        throw new FerryError('INTERNAL_STORE_TYPES', 'a message type pattern not resolved to types', {
          kind: 'internal',
        });
      if (!types.length) c.push('1 = 0');
      else {
        c.push(types.length === 1 ? 'm.message_type = ?' : `m.message_type IN (${types.map(() => '?').join(', ')})`);
        p.push(...types);
      }
    }
    if (f.controlId) {
      c.push('m.control_id = ?');
      p.push(f.controlId);
    }
    if (f.beforeSeq !== undefined) {
      c.push('m.seq < ?');
      p.push(f.beforeSeq);
    }
    if (f.patient) {
      c.push("(m.ordering_key = ? OR m.ordering_key LIKE ? ESCAPE '\\')");
      p.push(f.patient, `%|${f.patient.replace(/[\\%_]/g, (ch) => `\\${ch}`)}`);
    }
    if (f.routeId || f.sinkId || f.deliveryStatus?.length) {
      const d: string[] = ['d.message_id = m.id', 'd.superseded = 0'];
      if (f.routeId) {
        d.push('d.route_id = ?');
        p.push(f.routeId);
      }
      if (f.sinkId) {
        d.push('d.sink_id = ?');
        p.push(f.sinkId);
      }
      if (f.deliveryStatus?.length) {
        d.push(`d.status IN (${f.deliveryStatus.map(() => '?').join(', ')})`);
        p.push(...f.deliveryStatus);
      }
      c.push(`EXISTS (SELECT 1 FROM deliveries d WHERE ${d.join(' AND ')})`);
    }
    return { where: c.length ? `WHERE ${c.join(' AND ')}` : '', params: p };
  }

  async listMessages(filter: MessageFilter): Promise<StoredMessage[]> {
    this.assertOpen();
    const order = filter.newestFirst ? 'DESC' : 'ASC';
    const limit = filter.limit && filter.limit > 0 ? ` LIMIT ${Math.floor(filter.limit)}` : '';
    const rows = await this.readForAdmin(async (x) => {
      const { where, params, types } = await this.filterSqlOn(x, filter);
      if (!types || types.length < 2 || !limit)
        return x.all(
          `SELECT ${this.columns(false, false, 'm')} FROM messages m ${where} ORDER BY m.seq ${order}${limit}`,
          params,
        );
      // Several types (ADT^A0*): one page per type, each read in seq order off the (type, seq)
      // index, merged -- instead of every message of those types sorted to find the page.
      const parts = types.map((t) => this.filterSql({ ...filter, messageType: t }, [t]));
      return x.all(
        `SELECT * FROM (${parts.map((q, i) => `SELECT * FROM (SELECT ${this.columns(false, false, 'm')} FROM messages m ${q.where} ORDER BY m.seq ${order}${limit}) t${i}`).join(' UNION ALL ')}) u ORDER BY seq ${order}${limit}`,
        parts.flatMap((q) => q.params),
      );
    });
    return rows.map((r) => this.toMessage(r, false, false));
  }

  async events(messageId: string): Promise<MessageEvent[]> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) =>
      x.all('SELECT * FROM message_events WHERE message_id = ? ORDER BY seq', [messageId]),
    );
    return rows.map((r) => {
      const e: MessageEvent = { messageId: r.message_id, at: new Date(Number(r.at)), status: r.status };
      if (r.sink_id) e.sinkId = r.sink_id;
      if (r.route_id) e.routeId = r.route_id;
      if (r.detail) e.detail = r.detail;
      return e;
    });
  }

  async deliveries(messageId: string, opts: { includeSuperseded?: boolean } = {}): Promise<StoredDelivery[]> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) =>
      x.all(
        `SELECT * FROM deliveries WHERE message_id = ?${opts.includeSuperseded ? '' : ' AND superseded = 0'} ORDER BY seq`,
        [messageId],
      ),
    );
    return rows.map((r) => this.toDelivery(r));
  }

  /** Work left: messages not yet routed, deliveries due now, deliveries waiting for a later retry, leased work. */
  async backlog(nowDate?: Date): Promise<BacklogInfo> {
    this.assertOpen();
    const now = nowDate?.getTime() ?? this.now();
    // Off the engine's thread where the store can (metrics, waitForIdle): with a large backlog
    // (a sink down for hours) the count is not free.
    return this.readForAdmin(async (x) => {
      const m = await x.all(`SELECT COUNT(*) AS n FROM messages WHERE status IN ${UNROUTED_MESSAGE}`);
      const d = await x.all(
        `SELECT
           SUM(CASE WHEN next_attempt_at IS NULL OR next_attempt_at <= ? THEN 1 ELSE 0 END) AS due,
           SUM(CASE WHEN next_attempt_at > ? THEN 1 ELSE 0 END) AS later,
           SUM(CASE WHEN lease_expires > ? THEN 1 ELSE 0 END) AS leased
         FROM deliveries WHERE superseded = 0 AND status IN ${OPEN_DELIVERY}`,
        [now, now, now],
      );
      return {
        unprocessedMessages: Number(m[0]?.n ?? 0),
        deliveriesDue: Number(d[0]?.due ?? 0),
        deliveriesScheduled: Number(d[0]?.later ?? 0),
        deliveriesLeased: Number(d[0]?.leased ?? 0),
      };
    });
  }

  async sinkBacklog(): Promise<Record<string, { open: number; oldestAt?: Date }>> {
    this.assertOpen();
    const rows = await this.readForAdmin((x) =>
      x.all(
        `SELECT sink_id, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE superseded = 0 AND status IN ${OPEN_DELIVERY} GROUP BY sink_id`,
      ),
    );
    const out: Record<string, { open: number; oldestAt?: Date }> = {};
    for (const r of rows)
      out[r.sink_id] = {
        open: Number(r.n),
        ...(r.oldest !== null && r.oldest !== undefined ? { oldestAt: new Date(Number(r.oldest)) } : {}),
      };
    return out;
  }

  async throughput(since: Date, bucketMs: number, now = new Date(this.now())): Promise<ThroughputSeries> {
    this.assertOpen();
    const t0 = since.getTime();
    const buckets = Math.max(1, Math.ceil((now.getTime() - t0) / bucketMs));
    // SQLite would walk the (source_id, seq) index for its GROUP BY -- every message -- rather than the window's range.
    const byReceived = this.dialect === 'sqlite' ? ' INDEXED BY messages_received_at' : '';
    const [msgs, dels] = await this.readForAdmin(async (x) => [
      await x.all(
        `SELECT source_id, b, COUNT(*) AS n, SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS f
         FROM (SELECT source_id, status, (received_at - CAST(? AS BIGINT)) / CAST(? AS BIGINT) AS b FROM messages${byReceived} WHERE received_at >= ?) w GROUP BY source_id, b`,
        [t0, bucketMs, t0],
      ),
      await x.all(
        `SELECT sink_id, b, COUNT(*) AS n
         FROM (SELECT sink_id, (delivered_at - CAST(? AS BIGINT)) / CAST(? AS BIGINT) AS b FROM deliveries WHERE delivered_at >= ?) w GROUP BY sink_id, b`,
        [t0, bucketMs, t0],
      ),
    ]);
    const out: ThroughputSeries = { since, bucketMs, buckets, received: {}, failed: {}, delivered: {} };
    const add = (m: Record<string, number[]>, k: string, b: number, n: number) => {
      if (b < 0 || b >= buckets) return; // a clock step: outside the window
      (m[k] ??= new Array<number>(buckets).fill(0))[b] += n;
    };
    for (const r of msgs) {
      add(out.received, r.source_id, Number(r.b), Number(r.n));
      add(out.failed, r.source_id, Number(r.b), Number(r.f));
    }
    for (const r of dels) add(out.delivered, r.sink_id, Number(r.b), Number(r.n));
    return out;
  }

  async sourceActivity(sourceIds: string[]): Promise<Record<string, { lastMessageAt?: Date; failed: number }>> {
    this.assertOpen();
    const out: Record<string, { lastMessageAt?: Date; failed: number }> = {};
    await this.readForAdmin(async (x) => {
      for (const id of sourceIds) {
        // The (source_id, seq) index: one probe per source.
        const r = await x.all('SELECT received_at FROM messages WHERE source_id = ? ORDER BY seq DESC LIMIT 1', [id]);
        out[id] = { failed: 0, ...(r[0] ? { lastMessageAt: new Date(Number(r[0].received_at)) } : {}) };
      }
      const failed = await x.all(
        `SELECT source_id, COUNT(*) AS n FROM messages WHERE status = 'failed' GROUP BY source_id`,
      );
      for (const r of failed) if (out[r.source_id]) out[r.source_id].failed = Number(r.n);
    });
    return out;
  }

  async countMessages(statuses: MessageStatus[]): Promise<Partial<Record<MessageStatus, number>>> {
    this.assertOpen();
    const out: Partial<Record<MessageStatus, number>> = Object.fromEntries(statuses.map((st) => [st, 0]));
    if (!statuses.length) return out;
    const rows = await this.readForAdmin((x) =>
      x.all(
        `SELECT status, COUNT(*) AS n FROM messages WHERE status IN (${statuses.map(() => '?').join(', ')}) GROUP BY status`,
        statuses,
      ),
    );
    for (const r of rows) out[r.status as MessageStatus] = Number(r.n);
    return out;
  }

  async stats(): Promise<StoreStats> {
    this.assertOpen();
    return this.readForAdmin(async (x) => {
      const m = await x.all('SELECT status, COUNT(*) AS n FROM messages GROUP BY status');
      const d = await x.all('SELECT status, COUNT(*) AS n FROM deliveries WHERE superseded = 0 GROUP BY status');
      return {
        messages: Object.fromEntries(m.map((r) => [r.status, Number(r.n)])),
        deliveries: Object.fromEntries(d.map((r) => [r.status, Number(r.n)])),
      };
    });
  }
}
