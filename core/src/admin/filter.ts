import { DeliveryStatus, MessageStatus } from '../model/message';
import type { MessageFilter } from '../store/message-store';

const messageStatuses = new Set<string>(Object.values(MessageStatus));
const deliveryStatuses = new Set<string>(Object.values(DeliveryStatus));

const list = (v: unknown): string[] | undefined =>
  v === undefined || v === '' ? undefined : Array.isArray(v) ? v.map(String) : String(v).split(',').map((s) => s.trim()).filter(Boolean);

/** Parses a replay/list filter from query parameters, a JSON body or CLI options. */
export function parseMessageFilter(q: Record<string, unknown>): { filter: MessageFilter } | { error: string } {
  const filter: MessageFilter = {};
  const ids = list(q.ids ?? q.id);
  if (ids) filter.ids = ids;
  const status = list(q.status);
  if (status) {
    const bad = status.filter((s) => !messageStatuses.has(s));
    if (bad.length) return { error: `unknown status ${bad.join(', ')}; one of ${[...messageStatuses].join(', ')}` };
    filter.status = status as MessageFilter['status'];
  }
  const ds = list(q.deliveryStatus);
  if (ds) {
    const bad = ds.filter((s) => !deliveryStatuses.has(s));
    if (bad.length) return { error: `unknown delivery status ${bad.join(', ')}; one of ${[...deliveryStatuses].join(', ')}` };
    filter.deliveryStatus = ds as MessageFilter['deliveryStatus'];
  }
  for (const k of ['sourceId', 'routeId', 'sinkId'] as const) {
    const v = q[k] ?? q[k.replace('Id', '')];
    if (typeof v === 'string' && v) filter[k] = v;
  }
  for (const k of ['since', 'until'] as const) {
    const v = q[k];
    if (v === undefined || v === '') continue;
    const d = new Date(String(v));
    if (Number.isNaN(d.getTime())) return { error: `${k}: not a date/time: ${String(v)}` };
    filter[k] = d;
  }
  if (q.limit !== undefined) {
    const n = Number(q.limit);
    if (!Number.isInteger(n) || n <= 0) return { error: 'limit: must be a positive integer' };
    filter.limit = n;
  }
  return { filter };
}
