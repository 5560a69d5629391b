/** Routes and the route tester. */
import { $, api, el, showError } from './common.js';
import { rowFor, type SourceView } from './dashboard.js';

// ---------- routes and the route tester ----------

export interface RouteView {
  id: string;
  from: string[];
  when: { messageType: string[]; fhirpath: string };
  steps: Record<string, unknown>[];
  to: string[];
  ordering: string;
  matched: number;
  filtered: number;
}

export const stepText = (st: Record<string, unknown>) =>
  Object.entries(st)
    .map(([k, v]) => (v === true ? k : `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`))
    .join(', ');

export async function loadRoutes(): Promise<void> {
  try {
    const [routes, sources] = await Promise.all([api<RouteView[]>('/api/routes'), api<SourceView[]>('/api/sources')]);
    const tbody = ($('routes') as HTMLTableElement).tBodies[0];
    for (const r of routes) {
      const tr = rowFor(tbody, r.id, 7);
      tr.cells[0].textContent = r.id;
      tr.cells[1].textContent = r.from.length ? r.from.join(', ') : 'any source';
      const when = [
        r.when.messageType.length ? `type ${r.when.messageType.join(' | ')}` : '',
        r.when.fhirpath ? `fhirpath ${r.when.fhirpath}` : '',
      ]
        .filter(Boolean)
        .join('; ');
      tr.cells[2].textContent = when || 'always';
      tr.cells[3].textContent = r.steps.map(stepText).join(' → ') || '—';
      tr.cells[4].textContent = r.to.join(', ') + (r.ordering === 'strict' ? ' (strict order)' : '');
      tr.cells[5].textContent = String(r.matched);
      tr.cells[6].textContent = String(r.filtered);
      for (const i of [2, 3]) {
        tr.cells[i].className = 'wrap';
        tr.cells[i].title = tr.cells[i].textContent;
      }
    }
    const sel = $('t-source') as HTMLSelectElement;
    for (const s of sources) if (![...sel.options].some((o) => o.value === s.id)) sel.add(new Option(s.id, s.id));
    showError(undefined);
  } catch (e) {
    showError(`Routes not loaded: ${(e as Error).message}`);
  }
}

export interface TraceView {
  contentType: string;
  sourceId: string;
  messageType?: string;
  routes: {
    route: string;
    matched: boolean;
    failed?: string;
    detail?: string;
    steps: { step: string; result: string; error?: string }[];
    sinks: Record<string, unknown>;
  }[];
}

export async function runTester(ev: Event): Promise<void> {
  ev.preventDefault();
  const out = $('t-result');
  const message = ($('t-message') as HTMLTextAreaElement).value;
  if (!message.trim()) {
    showError('Route tester: paste or upload a message first.');
    return;
  }
  const source = ($('t-source') as HTMLSelectElement).value;
  const contentType = ($('t-type') as HTMLSelectElement).value;
  out.replaceChildren(el('p', 'Testing…'));
  try {
    const t = await api<TraceView>('/api/routes/test', {
      method: 'POST',
      body: { message, ...(source ? { source } : {}), ...(contentType ? { contentType } : {}) },
    });
    const sinks = new Set(t.routes.flatMap((r) => Object.keys(r.sinks)));
    const head = el(
      'p',
      `${t.contentType}${t.messageType ? `, type ${t.messageType}` : ''}, on source ${t.sourceId}: ${sinks.size ? `delivered to ${[...sinks].join(', ')}` : 'delivered to no sink'}.`,
    );
    head.id = 't-summary';
    const items = t.routes.map((r) => {
      const div = el('div', undefined, `route-result${r.matched ? '' : ' nomatch'}`);
      div.dataset.route = r.route;
      div.append(
        el('span', `route ${r.route}: `),
        el('span', r.matched ? 'matches' : `no match — ${r.failed}: ${r.detail ?? ''}`, 'verdict'),
      );
      if (r.steps.length) {
        const ol = el('ol');
        for (const st of r.steps) ol.append(el('li', `${st.step}: ${st.result}${st.error ? ` (${st.error})` : ''}`));
        div.append(ol);
      }
      for (const [sink, bundle] of Object.entries(r.sinks)) {
        const d = el('details');
        d.dataset.sink = sink;
        d.append(el('summary', `sink ${sink} would receive`), el('pre', JSON.stringify(bundle, null, 2)));
        div.append(d);
      }
      return div;
    });
    out.replaceChildren(head, ...items);
    showError(undefined);
  } catch (e) {
    out.replaceChildren(el('p', `Not tested: ${(e as Error).message}`));
  }
}
