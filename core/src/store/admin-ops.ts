import { inputError, type CodeSuffix } from '../errors';
import { DeliveryStatus, MessageStatus } from '../model/message';
import type { MessageFilter, MessageStore, PruneResult } from './message-store';

/**
 * Store operations shared by the CLI (`ferry replay`, `ferry prune`) and the admin API, so both
 * accept the same filter and do the same thing.
 */

/** A replay request as the CLI and the admin API accept it (strings as in a query string). */
export interface ReplayRequest {
  ids?: string[] | string;
  /** Message status(es): `dead`, `failed`, `delivered`, ... (comma-separated or a list). */
  status?: string[] | string;
  /** Delivery status(es) on a joined delivery: `dead`, `failed`, ... */
  deliveryStatus?: string[] | string;
  source?: string;
  route?: string;
  sink?: string;
  /** ISO time or epoch ms: received at or after. */
  since?: string | number | Date;
  /** ISO time or epoch ms: received before. */
  until?: string | number | Date;
  limit?: string | number;
  /** Message type (`ADT^A01`, `*` any characters: `ADT^A0*`), as the message browser filters. */
  type?: string;
  /** Control id, exact. */
  controlId?: string;
  /**
   * `reprocess` (default): the message goes back to `received` and is transformed and routed
   * again with the current config; its old deliveries are superseded.
   * `redeliver`: only its dead/failed deliveries are retried with the bundle they have.
   */
  mode?: 'reprocess' | 'redeliver' | string;
  /** List what would be replayed without changing anything. */
  dryRun?: boolean | string;
}

export interface ReplayResult {
  mode: 'reprocess' | 'redeliver';
  dryRun: boolean;
  /** Message ids (reprocess) or delivery ids (redeliver). */
  ids: string[];
  count: number;
}

const list = (v: string[] | string | undefined): string[] | undefined => {
  if (v === undefined) return undefined;
  const a = (Array.isArray(v) ? v : [v])
    .flatMap((s) => String(s).split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  return a.length ? a : undefined;
};

function time(
  v: string | number | Date | undefined,
  name: string,
  code: CodeSuffix<'INPUT_'> = 'REPLAY_FILTER',
): Date | undefined {
  if (v === undefined || v === '') return undefined;
  if (v instanceof Date) return v;
  const d = typeof v === 'number' || /^\d+$/.test(v) ? new Date(Number(v)) : new Date(v);
  if (Number.isNaN(d.getTime()))
    throw inputError(code, `${name}: not a time (ISO 8601 or epoch ms): ${v}`, { field: name });
  return d;
}

/** A sink hold as the CLI (`ferry sink hold`) and the admin API (`POST /api/sinks/:id/hold`) accept it. */
export interface HoldRequest {
  /** ISO time or epoch ms: the hold ends then (absent: until released). */
  until?: string | number | Date;
  /** Or: the hold ends this many minutes from now. */
  minutes?: string | number;
  /** An operator's note, kept with the hold and logged (not for PHI). */
  reason?: string;
}

/** Validates a hold request; throws an input FerryError naming the field. */
export function holdRequest(req: HoldRequest, now = Date.now()): { until?: Date; reason?: string } {
  const out: { until?: Date; reason?: string } = {};
  const hasMinutes = req.minutes !== undefined && req.minutes !== '';
  const until = time(req.until, 'until', 'HOLD_REQUEST');
  if (until && hasMinutes)
    throw inputError('HOLD_REQUEST', 'until, minutes: give one or the other', { field: 'until' });
  if (until) {
    if (until.getTime() <= now)
      throw inputError('HOLD_REQUEST', `until: must be in the future: ${until.toISOString()}`, { field: 'until' });
    out.until = until;
  }
  if (hasMinutes) {
    const n = Number(req.minutes);
    if (!Number.isFinite(n) || n <= 0)
      throw inputError('HOLD_REQUEST', `minutes: must be a number > 0: ${req.minutes}`, { field: 'minutes' });
    out.until = new Date(now + n * 60_000);
  }
  if (req.reason !== undefined && req.reason !== null) {
    const r = String(req.reason).trim();
    if (r.length > 500) throw inputError('HOLD_REQUEST', 'reason: at most 500 characters', { field: 'reason' });
    if (r) out.reason = r;
  }
  return out;
}

/** Validates a replay request into a store filter; throws an input FerryError naming the field. */
export function replayFilter(req: ReplayRequest): MessageFilter {
  const f: MessageFilter = {};
  const ids = list(req.ids);
  if (ids) f.ids = ids;
  const status = list(req.status);
  if (status) {
    const bad = status.filter((s) => !(s in MessageStatus));
    if (bad.length)
      throw inputError(
        'REPLAY_FILTER',
        `status: unknown message status ${bad.join(', ')} (one of ${Object.keys(MessageStatus).join(', ')})`,
        { field: 'status' },
      );
    f.status = status as MessageFilter['status'];
  }
  const ds = list(req.deliveryStatus);
  if (ds) {
    const bad = ds.filter((s) => !(s in DeliveryStatus));
    if (bad.length)
      throw inputError(
        'REPLAY_FILTER',
        `deliveryStatus: unknown delivery status ${bad.join(', ')} (one of ${Object.keys(DeliveryStatus).join(', ')})`,
        { field: 'deliveryStatus' },
      );
    f.deliveryStatus = ds as MessageFilter['deliveryStatus'];
  }
  for (const [k, name] of [
    ['type', 'messageType'],
    ['controlId', 'controlId'],
  ] as const) {
    const v = req[k];
    if (v === undefined || v === '') continue;
    if (typeof v !== 'string' || v.length > 100)
      throw inputError('REPLAY_FILTER', `${k}: at most 100 characters`, { field: k });
    if (v.trim()) f[name] = v.trim();
  }
  if (req.source) f.sourceId = String(req.source);
  if (req.route) f.routeId = String(req.route);
  if (req.sink) f.sinkId = String(req.sink);
  f.since = time(req.since, 'since');
  f.until = time(req.until, 'until');
  if (!f.since) delete f.since;
  if (!f.until) delete f.until;
  if (req.limit !== undefined && req.limit !== '') {
    const n = Number(req.limit);
    if (!Number.isInteger(n) || n <= 0)
      throw inputError('REPLAY_FILTER', `limit: must be a positive integer: ${req.limit}`, { field: 'limit' });
    f.limit = n;
  }
  return f;
}

/** True when the filter would select every message: replaying all needs an explicit filter. */
export function isEmptyFilter(f: MessageFilter): boolean {
  return (
    !f.ids &&
    !f.status &&
    !f.deliveryStatus &&
    !f.sourceId &&
    !f.routeId &&
    !f.sinkId &&
    !f.since &&
    !f.until &&
    !f.messageType &&
    !f.controlId
  );
}

export async function replayMessages(store: MessageStore, req: ReplayRequest): Promise<ReplayResult> {
  const mode = (req.mode ?? 'reprocess') as ReplayResult['mode'];
  if (mode !== 'reprocess' && mode !== 'redeliver')
    throw inputError('REPLAY_MODE', `mode: must be reprocess or redeliver, not ${String(req.mode)}`, { field: 'mode' });
  const filter = replayFilter(req);
  if (isEmptyFilter(filter)) {
    throw inputError(
      'REPLAY_FILTER',
      'give message ids or a filter (status, deliveryStatus, source, route, sink, since, until, type, controlId)',
      { field: '' },
    );
  }
  const dryRun = req.dryRun === true || req.dryRun === 'true' || req.dryRun === '1';
  if (dryRun) {
    if (mode === 'redeliver') {
      const msgs = await store.listMessages({ ...filter, deliveryStatus: filter.deliveryStatus ?? ['dead', 'failed'] });
      const ids: string[] = [];
      for (const m of msgs) {
        for (const d of await store.deliveries(m.id)) {
          const want = filter.deliveryStatus ?? ['dead', 'failed'];
          if (
            want.includes(d.status) &&
            (!filter.sinkId || d.sinkId === filter.sinkId) &&
            (!filter.routeId || d.routeId === filter.routeId)
          )
            ids.push(d.id);
        }
      }
      return { mode, dryRun, ids, count: ids.length };
    }
    const msgs = await store.listMessages(filter);
    const ids = msgs.filter((m) => m.status !== 'received' && m.status !== 'transformed').map((m) => m.id);
    return { mode, dryRun, ids, count: ids.length };
  }
  const ids = mode === 'reprocess' ? await store.replay(filter) : await store.retryDeliveries(filter);
  return { mode, dryRun, ids, count: ids.length };
}

export interface RetentionSettings {
  deliveredDays: number;
  deadDays: number;
  /** Delete whole messages in a final status after this many days (0 / absent: keep metadata). */
  deleteDays?: number;
  /** Delete audit entries after this many days (0 / absent: keep them). */
  auditDays?: number;
}

/** Prune by retention in days, relative to `now`. */
export function pruneByRetention(
  store: MessageStore,
  r: RetentionSettings,
  now: Date = new Date(),
): Promise<PruneResult> {
  const day = 24 * 3600_000;
  return store.prune({
    bodiesBefore: new Date(now.getTime() - r.deliveredDays * day),
    deadBefore: new Date(now.getTime() - r.deadDays * day),
    ...(r.deleteDays ? { deleteBefore: new Date(now.getTime() - r.deleteDays * day) } : {}),
    ...(r.auditDays ? { auditBefore: new Date(now.getTime() - r.auditDays * day) } : {}),
  });
}
