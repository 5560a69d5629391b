/** The dashboard: sources, sinks, throughput from /metrics and /api/throughput, sink holds. */
import { $, api, el, SERIES_MS, showError, timeCell } from './common.js';

// ---------- dashboard ----------

export interface Sample {
  t: number;
  received: number;
  delivered: number;
  bySource: Record<string, number>;
}
export let last: Sample | undefined;
/** Messages / s per source since the previous poll. */
export let sourceRates: Record<string, number> = {};

/** GET /api/throughput: per-minute counts of the last hour, from the store (every instance). */
export interface Throughput {
  since: string;
  bucketMs: number;
  buckets: number;
  received: Record<string, number[]>;
  failed: Record<string, number[]>;
  delivered: Record<string, number[]>;
}
export let throughput: Throughput | undefined;
export let throughputAt = 0;

export const add = (a: number[], b: number[]) => a.map((v, i) => v + (b[i] ?? 0));
export const total = (m: Record<string, number[]>, n: number) =>
  Object.values(m).reduce(add, new Array<number>(n).fill(0));

export interface Metric {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export function parseMetrics(text: string): Metric[] {
  const out: Metric[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
export const sum = (ms: Metric[], name: string, f: (l: Record<string, string>) => boolean = () => true) =>
  ms.filter((m) => m.name === name && f(m.labels)).reduce((a, m) => a + m.value, 0);

export function kvTable(id: string, rows: [string, string | number][]): void {
  const t = $(id) as HTMLTableElement;
  // Rows are updated in place (no layout shift when values change).
  rows.forEach(([k, v], i) => {
    let tr = t.rows[i];
    if (!tr) {
      tr = t.insertRow();
      tr.insertCell();
      tr.insertCell();
    }
    tr.cells[0].textContent = k;
    tr.cells[1].textContent = String(v);
  });
  while (t.rows.length > rows.length) t.deleteRow(-1);
}

export function spark(target: string | Element, values: number[], width = 240, height = 40): void {
  const svg = typeof target === 'string' ? document.getElementById(target)! : target;
  let line = svg.querySelector('polyline');
  if (!line) {
    line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    svg.appendChild(line);
  }
  const max = Math.max(1e-9, ...values);
  const n = values.length;
  const pts = values.map(
    (v, i) => `${n > 1 ? ((i / (n - 1)) * width).toFixed(1) : 0},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`,
  );
  line.setAttribute('points', pts.join(' '));
}

export interface SinkView {
  id: string;
  inFlight: number;
  backlog?: number;
  oldestWaitingSince?: string;
  circuit: { state: string; lastErrorCode?: string; nextProbeAt?: string };
  hold?: { since: string; until?: string; reason?: string };
}
export interface SourceView {
  id: string;
  type: string;
  ready: boolean;
  stats?: Record<string, unknown>;
  lastMessageAt?: string;
  failed?: number;
}

export async function loadThroughput(): Promise<void> {
  throughput = await api<Throughput>('/api/throughput?minutes=60');
  throughputAt = Date.now();
  const n = throughput.buckets;
  const rec = total(throughput.received, n);
  const del = total(throughput.delivered, n);
  spark('spark-received', rec);
  spark('spark-delivered', del);
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
  $('hour-received').textContent = `${sum(rec)} in the last hour`;
  $('hour-delivered').textContent = `${sum(del)} in the last hour`;
  $('spark-received').setAttribute('data-total', String(sum(rec)));
  $('spark-delivered').setAttribute('data-total', String(sum(del)));
}

export async function poll(): Promise<void> {
  try {
    const [stats, sinks, sources, metricsText] = await Promise.all([
      api<{ messages: Record<string, number>; deliveries: Record<string, number> }>('/api/stats'),
      api<SinkView[]>('/api/sinks'),
      api<SourceView[]>('/api/sources'),
      api<string>('/metrics', { text: true }),
    ]);
    const ms = parseMetrics(metricsText);
    const now = Date.now();
    const bySource: Record<string, number> = {};
    for (const m of ms)
      if (m.name === 'ferry_messages_received_total' && m.labels.source)
        bySource[m.labels.source] = (bySource[m.labels.source] ?? 0) + m.value;
    const s: Sample = {
      t: now,
      received: sum(ms, 'ferry_messages_received_total'),
      delivered: sum(ms, 'ferry_deliveries_total', (l) => l.outcome === 'delivered'),
      bySource,
    };
    if (last && now > last.t) {
      const dt = (now - last.t) / 1000;
      const prev = last;
      $('rate-received').textContent = Math.max(0, (s.received - prev.received) / dt).toFixed(1);
      $('rate-delivered').textContent = Math.max(0, (s.delivered - prev.delivered) / dt).toFixed(1);
      sourceRates = Object.fromEntries(
        Object.entries(bySource).map(([k, v]) => [k, Math.max(0, (v - (prev.bySource[k] ?? 0)) / dt)]),
      );
    }
    last = s;
    if (Date.now() - throughputAt >= SERIES_MS) await loadThroughput();
    const backlog = ms
      .filter((m) => m.name === 'ferry_store_backlog')
      .map((m) => [m.labels.kind.replace(/_/g, ' '), m.value] as [string, number]);
    const storeUp = sum(ms, 'ferry_store_up');
    kvTable('backlog', [['store', storeUp ? 'up' : 'UNREACHABLE'], ...backlog]);
    kvTable('msg-status', Object.entries(stats.messages).sort());
    renderSources(sources);
    renderSinks(sinks, ms);
    $('dash-updated').textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    showError(undefined);
  } catch (e) {
    showError(`Dashboard not updated: ${(e as Error).message}`);
  }
}

export function rowFor(tbody: HTMLTableSectionElement, key: string, cells: number): HTMLTableRowElement {
  let tr = tbody.querySelector<HTMLTableRowElement>(`tr[data-key="${CSS.escape(key)}"]`);
  if (!tr) {
    tr = tbody.insertRow();
    tr.dataset.key = key;
    for (let i = 0; i < cells; i++) tr.insertCell();
  }
  return tr;
}

export function renderSources(list: SourceView[]): void {
  const tbody = ($('sources') as HTMLTableElement).tBodies[0];
  for (const s of list) {
    const tr = rowFor(tbody, s.id, 8);
    tr.cells[0].textContent = s.id;
    tr.cells[1].textContent = s.type;
    tr.cells[2].textContent = s.ready ? 'ready' : 'NOT READY';
    tr.cells[3].textContent = sourceRates[s.id] === undefined ? '–' : sourceRates[s.id].toFixed(1);
    // The last hour per minute (the server's series): received, with the failed count beside.
    let svg = tr.cells[4].querySelector('svg');
    if (!svg) {
      svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      svg.setAttribute('class', 'spark small');
      svg.setAttribute('viewBox', '0 0 120 20');
      svg.setAttribute('width', '120');
      svg.setAttribute('height', '20');
      svg.setAttribute('aria-label', `messages from ${s.id} per minute, last hour`);
      tr.cells[4].append(svg);
    }
    const rec = throughput?.received[s.id] ?? new Array<number>(throughput?.buckets ?? 60).fill(0);
    spark(svg, rec, 120, 20);
    const hour = rec.reduce((a, b) => a + b, 0);
    const failedHour = (throughput?.failed[s.id] ?? []).reduce((a, b) => a + b, 0);
    tr.cells[4].title = `${hour} received, ${failedHour} failed in the last hour`;
    svg.setAttribute('data-total', String(hour));
    tr.cells[5].replaceChildren(s.lastMessageAt ? timeCell(s.lastMessageAt) : '—');
    tr.cells[6].textContent = String(s.failed ?? 0);
    tr.cells[6].className = s.failed ? 'failed' : '';
    tr.cells[7].textContent = s.stats
      ? Object.entries(s.stats)
          .map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
          .join(' · ')
      : '';
    tr.cells[7].title = tr.cells[7].textContent;
  }
}

export function renderSinks(list: SinkView[], ms: Metric[]): void {
  const tbody = ($('sinks') as HTMLTableElement).tBodies[0];
  for (const k of list) {
    const tr = rowFor(tbody, k.id, 9);
    const count = (outcome: string) =>
      sum(ms, 'ferry_deliveries_total', (l) => l.sink === k.id && l.outcome === outcome);
    tr.cells[0].textContent = k.id;
    tr.cells[1].textContent = k.circuit.state + (k.circuit.lastErrorCode ? ` (${k.circuit.lastErrorCode})` : '');
    tr.cells[1].className = `state-${k.circuit.state}`;
    tr.cells[2].textContent = String(k.inFlight);
    const backlog = tr.cells[3];
    backlog.replaceChildren(String(k.backlog ?? 0));
    if (k.oldestWaitingSince) backlog.append(' since ', timeCell(k.oldestWaitingSince));
    tr.cells[4].textContent = String(count('delivered'));
    tr.cells[5].textContent = String(count('retry'));
    tr.cells[6].textContent = String(count('dead'));
    const hold = tr.cells[7];
    hold.replaceChildren();
    if (k.hold) {
      hold.className = 'held';
      hold.append(
        'HELD until ',
        k.hold.until ? timeCell(k.hold.until) : 'released',
        k.hold.reason ? ` — ${k.hold.reason}` : '',
      );
      hold.title = `held since ${new Date(k.hold.since).toISOString()}${k.hold.until ? ` until ${new Date(k.hold.until).toISOString()}` : ''}`;
    } else {
      hold.className = '';
      hold.removeAttribute('title');
      hold.textContent = '—';
    }
    const act = tr.cells[8];
    act.className = 'op';
    const want = k.hold ? 'release' : 'hold';
    if (act.dataset.action !== want) {
      act.dataset.action = want;
      const b = el('button', k.hold ? 'Release' : 'Hold…');
      b.type = 'button';
      b.dataset.sink = k.id;
      b.addEventListener('click', () => (k.hold ? void releaseSink(k.id) : openHold(k.id)));
      act.replaceChildren(b);
    }
  }
}

export function openHold(sink: string): void {
  const f = $('hold-form');
  f.dataset.sink = sink;
  $('hold-sink').textContent = sink;
  f.hidden = false;
  $('hold-minutes').focus();
}

export async function holdSink(ev: Event): Promise<void> {
  ev.preventDefault();
  const f = $('hold-form');
  const sink = f.dataset.sink!;
  const minutes = ($('hold-minutes') as HTMLInputElement).value;
  const reason = ($('hold-reason') as HTMLInputElement).value.trim();
  try {
    await api(`/api/sinks/${encodeURIComponent(sink)}/hold`, {
      method: 'POST',
      body: { ...(minutes ? { minutes: Number(minutes) } : {}), ...(reason ? { reason } : {}) },
    });
    f.hidden = true;
    await poll();
  } catch (e) {
    showError(`Hold failed: ${(e as Error).message}`);
  }
}

export async function releaseSink(sink: string): Promise<void> {
  if (!confirm(`Release sink ${sink}? Its deliveries resume at once.`)) return;
  try {
    await api(`/api/sinks/${encodeURIComponent(sink)}/hold`, { method: 'DELETE' });
    await poll();
  } catch (e) {
    showError(`Release failed: ${(e as Error).message}`);
  }
}
