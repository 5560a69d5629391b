/** The message browser: filters, pages, and actions on a selection (dry-run count first, then confirm). */
import { $, api, can, el, showError, timeCell } from './common.js';

// ---------- message browser ----------

export interface MessageMeta {
  id: string;
  seq: number;
  sourceId: string;
  status: string;
  receivedAt: string;
  headers: Record<string, string | undefined>;
  orderingKey?: string;
  duplicateOf?: string;
  error?: { code: string; message?: string };
}
export let listLoaded = false;
export let lastSeq: number | undefined;
export const PAGE = 50;

export function filterQuery(): URLSearchParams {
  const q = new URLSearchParams();
  const v = (id: string) => ($(id) as HTMLInputElement).value.trim();
  if (v('f-status')) q.set('status', v('f-status'));
  if (v('f-source')) q.set('source', v('f-source'));
  if (v('f-type')) q.set('type', v('f-type'));
  if (v('f-control')) q.set('controlId', v('f-control'));
  if (v('f-since')) q.set('since', new Date(v('f-since')).toISOString());
  if (v('f-until')) q.set('until', new Date(v('f-until')).toISOString());
  if (can('phi-reader') && v('f-patient')) q.set('patient', v('f-patient'));
  q.set('limit', String(PAGE));
  return q;
}

export async function search(more: boolean): Promise<void> {
  const q = filterQuery();
  if (more && lastSeq !== undefined) q.set('before', String(lastSeq));
  const tbody = ($('messages') as HTMLTableElement).tBodies[0];
  try {
    const list = await api<MessageMeta[]>(`/api/messages?${q}`);
    listLoaded = true;
    if (!more) {
      tbody.replaceChildren();
      selected.clear();
      ($('sel-all') as HTMLInputElement).checked = false;
      selectionChanged();
    }
    for (const m of list) {
      const tr = tbody.insertRow();
      const sel = tr.insertCell();
      sel.className = 'op sel';
      const cb = el('input');
      cb.type = 'checkbox';
      cb.dataset.id = m.id;
      cb.setAttribute('aria-label', `select message ${m.headers?.controlId ?? m.id}`);
      cb.addEventListener('change', () => {
        if (cb.checked) selected.add(m.id);
        else selected.delete(m.id);
        selectionChanged();
      });
      sel.append(cb);
      tr.insertCell().append(timeCell(m.receivedAt));
      tr.insertCell().textContent = m.status;
      tr.insertCell().textContent = m.sourceId;
      tr.insertCell().textContent = m.headers?.messageType ?? '';
      tr.insertCell().textContent = m.headers?.controlId ?? '';
      const a = el('a', m.id);
      a.href = `#/message/${m.id}`;
      tr.insertCell().append(a);
    }
    lastSeq = list.length ? list[list.length - 1].seq : lastSeq;
    $('more').hidden = list.length < PAGE;
    showError(undefined);
  } catch (e) {
    showError(`Search failed: ${(e as Error).message}`);
  }
}

// ---------- actions on a selection (operator): the dry-run count first, then confirm ----------

export const selected = new Set<string>();
export let pendingBulk: Record<string, unknown> | undefined;

export function selectionChanged(): void {
  $('sel-count').textContent = `${selected.size} selected`;
  ($('bulk-replay') as HTMLButtonElement).disabled = selected.size === 0;
  ($('bulk-retry') as HTMLButtonElement).disabled = selected.size === 0;
  $('bulk-confirm').hidden = true;
  pendingBulk = undefined;
}

export const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
export function describeReplay(body: Record<string, unknown>, count: number, done: boolean): string {
  if (body.mode === 'redeliver')
    return `${done ? 'Retried' : 'Would retry'} ${plural(count, 'dead delivery', 'dead deliveries')}.`;
  return `${done ? 'Replayed' : 'Would replay'} ${plural(count, 'message', 'messages')}.`;
}

/** The replay filter of the browser's current filters ("all matching"); undefined with a patient filter. */
export function matchingFilter(): Record<string, unknown> | undefined {
  const q = filterQuery();
  if (q.get('patient')) return undefined;
  const body: Record<string, unknown> = {};
  for (const k of ['status', 'source', 'type', 'controlId', 'since', 'until']) if (q.get(k)) body[k] = q.get(k);
  return body;
}

export async function bulkDry(body: Record<string, unknown>): Promise<void> {
  $('bulk-result').textContent = '';
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body: { ...body, dryRun: true } });
    pendingBulk = body;
    $('bulk-count').textContent = describeReplay(body, r.count, false);
    $('bulk-confirm').hidden = false;
    ($('bulk-go') as HTMLButtonElement).disabled = r.count === 0;
    $(r.count ? 'bulk-go' : 'bulk-cancel').focus();
  } catch (e) {
    showError(`Dry run failed: ${(e as Error).message}`);
  }
}

export async function bulkGo(): Promise<void> {
  const body = pendingBulk;
  $('bulk-confirm').hidden = true;
  pendingBulk = undefined;
  if (!body) return;
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body });
    $('bulk-result').textContent = describeReplay(body, r.count, true);
    showError(undefined);
  } catch (e) {
    showError(`Replay failed: ${(e as Error).message}`);
  }
}

/** A new search starts from the first page. */
export function resetPaging(): void {
  lastSeq = undefined;
}

/** The selection's confirmation was cancelled. */
export function cancelBulk(): void {
  pendingBulk = undefined;
}
