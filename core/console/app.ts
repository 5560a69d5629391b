/**
 * Ferry Console (browser script, served at /console/app.js). Vanilla DOM, no dependencies. Every
 * datum comes from the admin JSON API with the pasted token or the one of the OIDC sign-in; the server decides what a role sees.
 * Data is only ever written with textContent (never innerHTML).
 */
export {};

const ROLES = ['viewer', 'operator', 'phi-reader', 'admin'] as const;
type Role = (typeof ROLES)[number];
interface Principal { id: string; name: string; roles: Role[] }

const TOKEN_KEY = 'ferry.console.token';
/** With OIDC sign-in: when the bearer token expires (ISO time). */
const EXPIRES_KEY = 'ferry.console.expires';
/** An OIDC sign-in under way: its state and PKCE code verifier (this tab only). */
const OIDC_KEY = 'ferry.console.oidc';
const POLL_MS = 3000;
/** The server's per-minute series (GET /api/throughput) is read again this often. */
const SERIES_MS = 30_000;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, text?: string | number, cls?: string): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

let principal: Principal | undefined;
let pollTimer: number | undefined;

function topRank(p: Principal | undefined): number {
  return p ? Math.max(-1, ...p.roles.map((r) => ROLES.indexOf(r))) : -1;
}
const can = (role: Role) => topRank(principal) >= ROLES.indexOf(role);

class ApiError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

async function api<T = unknown>(path: string, init: { method?: string; body?: unknown; text?: boolean } = {}): Promise<T> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (init.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.body);
  }
  const res = await fetch(path, { method: init.method ?? 'GET', headers, body, credentials: 'omit', cache: 'no-store' });
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try { msg = (JSON.parse(text) as { error?: string }).error ?? text; } catch { /* not JSON */ }
    if (res.status === 401 && path !== '/api/whoami') signOut('Signed out: the token is no longer accepted.');
    throw new ApiError(res.status, `${res.status}: ${msg}`);
  }
  return (init.text ? text : text ? JSON.parse(text) : undefined) as T;
}

function showError(msg: string | undefined): void {
  const e = $('error');
  e.textContent = msg ?? '';
  e.hidden = !msg;
}

/** Local time, UTC on hover. */
function timeCell(v: string | number | undefined): HTMLElement {
  const s = el('span');
  if (v === undefined || v === null || v === '') return s;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) { s.textContent = String(v); return s; }
  s.textContent = d.toLocaleString();
  s.title = d.toISOString();
  return s;
}

// ---------- sign in / out ----------

async function signIn(token: string): Promise<void> {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    principal = await api<Principal>('/api/whoami');
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
    principal = undefined;
    showError(e instanceof ApiError && e.status === 401 ? 'This token is not accepted.' : `Cannot sign in: ${(e as Error).message}`);
    route();
    return;
  }
  showError(undefined);
  if (!watchExpiry()) return;
  document.body.classList.toggle('role-operator', can('operator'));
  document.body.classList.toggle('role-phi-reader', can('phi-reader'));
  $('who').textContent = `${principal.name} (${principal.roles.join(', ')})`;
  if (!location.hash || location.hash === '#/signin') location.hash = '#/dashboard';
  else route();
}

function signOut(msg?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EXPIRES_KEY);
  if (expiryTimer !== undefined) { clearTimeout(expiryTimer); expiryTimer = undefined; }
  principal = undefined;
  document.body.classList.remove('role-operator', 'role-phi-reader');
  $('who').textContent = '';
  showError(msg);
  route();
}

// ---------- sign in with the OIDC provider (authorization code + PKCE) ----------

let expiryTimer: number | undefined;

/** Signs out when the OIDC token expires (an API token has no such time here: the server says 401). */
function watchExpiry(): boolean {
  const at = Date.parse(sessionStorage.getItem(EXPIRES_KEY) ?? '');
  if (Number.isNaN(at)) return true;
  if (expiryTimer !== undefined) clearTimeout(expiryTimer);
  const left = at - Date.now();
  if (left <= 0) { signOut('Signed out: the sign-in has expired; sign in again.'); return false; }
  // setTimeout holds at most 2^31-1 ms.
  expiryTimer = window.setTimeout(() => signOut('Signed out: the sign-in has expired; sign in again.'), Math.min(left, 2 ** 31 - 1));
  return true;
}

const b64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

async function publicPost<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(body), credentials: 'omit', cache: 'no-store' });
  const text = await res.text();
  let data: unknown;
  try { data = JSON.parse(text); } catch { data = { error: text }; }
  if (!res.ok) throw new ApiError(res.status, (data as { error?: string }).error ?? `HTTP ${res.status}`);
  return data as T;
}

/** Step 1: a code verifier kept in this tab, its S256 challenge to the server, then off to the provider. */
async function oidcStart(): Promise<void> {
  try {
    if (!crypto.subtle) throw new Error('this page needs a secure origin (https or localhost) for single sign-on');
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
    const r = await publicPost<{ authorizationUrl: string; state: string }>('/console/oidc/start', { codeChallenge: challenge, codeChallengeMethod: 'S256' });
    sessionStorage.setItem(OIDC_KEY, JSON.stringify({ state: r.state, verifier }));
    location.assign(r.authorizationUrl);
  } catch (e) {
    showError(`Cannot start the sign-in: ${(e as Error).message}`);
  }
}

/** Step 2: back from the provider with ?code&state (or ?error): the state must be ours; the server exchanges the code. */
async function oidcCallback(q: URLSearchParams): Promise<boolean> {
  const pending = sessionStorage.getItem(OIDC_KEY);
  sessionStorage.removeItem(OIDC_KEY);
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', location.pathname + location.hash);
  if (q.get('error')) { showError(`The sign-in was refused by the identity provider: ${q.get('error')}`); return false; }
  let saved: { state?: string; verifier?: string } = {};
  try { saved = pending ? JSON.parse(pending) : {}; } catch { /* ignored: refused below */ }
  if (!saved.state || !saved.verifier || saved.state !== q.get('state')) {
    showError('Sign-in refused: the answer does not belong to a sign-in started in this tab (state mismatch). Sign in again.');
    return false;
  }
  try {
    const r = await publicPost<{ token: string; expiresAt: string }>('/console/oidc/token', { code: q.get('code'), state: saved.state, codeVerifier: saved.verifier });
    sessionStorage.setItem(EXPIRES_KEY, r.expiresAt);
    await signIn(r.token);
    return true;
  } catch (e) {
    showError(`Sign-in refused: ${(e as Error).message}`);
    return false;
  }
}

async function oidcButton(): Promise<void> {
  try {
    const res = await fetch('/console/oidc', { headers: { accept: 'application/json' }, credentials: 'omit', cache: 'no-store' });
    const c = (await res.json()) as { enabled?: boolean; displayName?: string };
    if (!c.enabled) return;
    $('oidc-signin').textContent = `Sign in with ${c.displayName ?? 'single sign-on'}`;
    $('oidc').hidden = false;
  } catch { /* no button */ }
}

// ---------- views ----------

const VIEWS = ['signin', 'dashboard', 'messages', 'detail', 'routes'] as const;
function show(view: (typeof VIEWS)[number]): void {
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  $('nav').hidden = !principal;
  $('signout').hidden = !principal;
  for (const n of ['dashboard', 'messages', 'routes']) {
    const a = $(`nav-${n}`);
    if (n === view || (n === 'messages' && view === 'detail')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function route(): void {
  if (pollTimer !== undefined) { clearInterval(pollTimer); pollTimer = undefined; }
  if (!principal) { show('signin'); $('token').focus(); return; }
  const h = location.hash;
  const m = /^#\/message\/([A-Za-z0-9_-]+)$/.exec(h);
  if (m) { show('detail'); void loadDetail(m[1]); return; }
  if (h.startsWith('#/messages')) { show('messages'); if (!listLoaded) void search(false); return; }
  if (h.startsWith('#/routes')) { show('routes'); void loadRoutes(); return; }
  show('dashboard');
  void poll();
  pollTimer = window.setInterval(() => void poll(), POLL_MS);
}

// ---------- dashboard ----------

interface Sample { t: number; received: number; delivered: number; bySource: Record<string, number> }
let last: Sample | undefined;
/** Messages / s per source since the previous poll. */
let sourceRates: Record<string, number> = {};

/** GET /api/throughput: per-minute counts of the last hour, from the store (every instance). */
interface Throughput { since: string; bucketMs: number; buckets: number; received: Record<string, number[]>; failed: Record<string, number[]>; delivered: Record<string, number[]> }
let throughput: Throughput | undefined;
let throughputAt = 0;

const add = (a: number[], b: number[]) => a.map((v, i) => v + (b[i] ?? 0));
const total = (m: Record<string, number[]>, n: number) => Object.values(m).reduce(add, new Array<number>(n).fill(0));

interface Metric { name: string; labels: Record<string, string>; value: number }
function parseMetrics(text: string): Metric[] {
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
const sum = (ms: Metric[], name: string, f: (l: Record<string, string>) => boolean = () => true) =>
  ms.filter((m) => m.name === name && f(m.labels)).reduce((a, m) => a + m.value, 0);

function kvTable(id: string, rows: [string, string | number][]): void {
  const t = $(id) as HTMLTableElement;
  // Rows are updated in place (no layout shift when values change).
  rows.forEach(([k, v], i) => {
    let tr = t.rows[i];
    if (!tr) { tr = t.insertRow(); tr.insertCell(); tr.insertCell(); }
    tr.cells[0].textContent = k;
    tr.cells[1].textContent = String(v);
  });
  while (t.rows.length > rows.length) t.deleteRow(-1);
}

function spark(target: string | Element, values: number[], width = 240, height = 40): void {
  const svg = typeof target === 'string' ? document.getElementById(target)! : target;
  let line = svg.querySelector('polyline');
  if (!line) { line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline'); svg.appendChild(line); }
  const max = Math.max(1e-9, ...values);
  const n = values.length;
  const pts = values.map((v, i) => `${n > 1 ? ((i / (n - 1)) * width).toFixed(1) : 0},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  line.setAttribute('points', pts.join(' '));
}

interface SinkView { id: string; inFlight: number; backlog?: number; oldestWaitingSince?: string; circuit: { state: string; lastErrorCode?: string; nextProbeAt?: string }; hold?: { since: string; until?: string; reason?: string } }
interface SourceView { id: string; type: string; ready: boolean; stats?: Record<string, unknown>; lastMessageAt?: string; failed?: number }

async function loadThroughput(): Promise<void> {
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

async function poll(): Promise<void> {
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
    for (const m of ms) if (m.name === 'ferry_messages_received_total' && m.labels.source) bySource[m.labels.source] = (bySource[m.labels.source] ?? 0) + m.value;
    const s: Sample = { t: now, received: sum(ms, 'ferry_messages_received_total'), delivered: sum(ms, 'ferry_deliveries_total', (l) => l.outcome === 'delivered'), bySource };
    if (last && now > last.t) {
      const dt = (now - last.t) / 1000;
      const prev = last;
      $('rate-received').textContent = Math.max(0, (s.received - prev.received) / dt).toFixed(1);
      $('rate-delivered').textContent = Math.max(0, (s.delivered - prev.delivered) / dt).toFixed(1);
      sourceRates = Object.fromEntries(Object.entries(bySource).map(([k, v]) => [k, Math.max(0, (v - (prev.bySource[k] ?? 0)) / dt)]));
    }
    last = s;
    if (Date.now() - throughputAt >= SERIES_MS) await loadThroughput();
    const backlog = ms.filter((m) => m.name === 'ferry_store_backlog').map((m) => [m.labels.kind.replace(/_/g, ' '), m.value] as [string, number]);
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

function rowFor(tbody: HTMLTableSectionElement, key: string, cells: number): HTMLTableRowElement {
  let tr = tbody.querySelector<HTMLTableRowElement>(`tr[data-key="${CSS.escape(key)}"]`);
  if (!tr) {
    tr = tbody.insertRow();
    tr.dataset.key = key;
    for (let i = 0; i < cells; i++) tr.insertCell();
  }
  return tr;
}

function renderSources(list: SourceView[]): void {
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
    tr.cells[7].textContent = s.stats ? Object.entries(s.stats).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' · ') : '';
    tr.cells[7].title = tr.cells[7].textContent;
  }
}

function renderSinks(list: SinkView[], ms: Metric[]): void {
  const tbody = ($('sinks') as HTMLTableElement).tBodies[0];
  for (const k of list) {
    const tr = rowFor(tbody, k.id, 9);
    const count = (outcome: string) => sum(ms, 'ferry_deliveries_total', (l) => l.sink === k.id && l.outcome === outcome);
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
      hold.append('HELD until ', k.hold.until ? timeCell(k.hold.until) : 'released', k.hold.reason ? ` — ${k.hold.reason}` : '');
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

function openHold(sink: string): void {
  const f = $('hold-form');
  f.dataset.sink = sink;
  $('hold-sink').textContent = sink;
  f.hidden = false;
  $('hold-minutes').focus();
}

async function holdSink(ev: Event): Promise<void> {
  ev.preventDefault();
  const f = $('hold-form');
  const sink = f.dataset.sink!;
  const minutes = ($('hold-minutes') as HTMLInputElement).value;
  const reason = ($('hold-reason') as HTMLInputElement).value.trim();
  try {
    await api(`/api/sinks/${encodeURIComponent(sink)}/hold`, { method: 'POST', body: { ...(minutes ? { minutes: Number(minutes) } : {}), ...(reason ? { reason } : {}) } });
    f.hidden = true;
    await poll();
  } catch (e) {
    showError(`Hold failed: ${(e as Error).message}`);
  }
}

async function releaseSink(sink: string): Promise<void> {
  if (!confirm(`Release sink ${sink}? Its deliveries resume at once.`)) return;
  try {
    await api(`/api/sinks/${encodeURIComponent(sink)}/hold`, { method: 'DELETE' });
    await poll();
  } catch (e) {
    showError(`Release failed: ${(e as Error).message}`);
  }
}

// ---------- message browser ----------

interface MessageMeta { id: string; seq: number; sourceId: string; status: string; receivedAt: string; headers: Record<string, string | undefined>; orderingKey?: string; duplicateOf?: string; error?: { code: string; message?: string } }
let listLoaded = false;
let lastSeq: number | undefined;
const PAGE = 50;

function filterQuery(): URLSearchParams {
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

async function search(more: boolean): Promise<void> {
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

const selected = new Set<string>();
let pendingBulk: Record<string, unknown> | undefined;

function selectionChanged(): void {
  $('sel-count').textContent = `${selected.size} selected`;
  ($('bulk-replay') as HTMLButtonElement).disabled = selected.size === 0;
  ($('bulk-retry') as HTMLButtonElement).disabled = selected.size === 0;
  $('bulk-confirm').hidden = true;
  pendingBulk = undefined;
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
function describeReplay(body: Record<string, unknown>, count: number, done: boolean): string {
  if (body.mode === 'redeliver') return `${done ? 'Retried' : 'Would retry'} ${plural(count, 'dead delivery', 'dead deliveries')}.`;
  return `${done ? 'Replayed' : 'Would replay'} ${plural(count, 'message', 'messages')}.`;
}

/** The replay filter of the browser's current filters ("all matching"); undefined with a patient filter. */
function matchingFilter(): Record<string, unknown> | undefined {
  const q = filterQuery();
  if (q.get('patient')) return undefined;
  const body: Record<string, unknown> = {};
  for (const k of ['status', 'source', 'type', 'controlId', 'since', 'until']) if (q.get(k)) body[k] = q.get(k);
  return body;
}

async function bulkDry(body: Record<string, unknown>): Promise<void> {
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

async function bulkGo(): Promise<void> {
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

// ---------- message detail ----------

interface Detail extends MessageMeta {
  body?: string;
  bundle?: unknown;
  contentType: string;
  events: { at: string; status: string; sinkId?: string; routeId?: string; detail?: string }[];
  deliveries: { id: string; routeId: string; sinkId: string; status: string; attempts: number; lastError?: { code?: string; message?: string } }[];
  issues: { location?: string; code?: string; reason?: string; severity?: string; [k: string]: unknown }[];
}
let currentRaw = '';

async function loadDetail(id: string): Promise<void> {
  $('d-id').textContent = id;
  $('replay-confirm').hidden = true;
  $('replay-result').textContent = '';
  try {
    const d = await api<Detail>(`/api/messages/${encodeURIComponent(id)}${can('phi-reader') ? '?body=true' : ''}`);
    const meta: [string, string | number][] = [
      ['status', d.status],
      ['source', d.sourceId],
      ['received', new Date(d.receivedAt).toLocaleString()],
      ['content type', d.contentType],
      ['seq', d.seq],
    ];
    for (const [k, v] of Object.entries(d.headers ?? {})) if (v !== undefined) meta.push([k, v]);
    if (d.orderingKey && d.headers?.orderingKey !== d.orderingKey) meta.push(['ordering key', d.orderingKey]);
    if (d.duplicateOf) meta.push(['duplicate of', d.duplicateOf]);
    if (d.error) meta.push(['error', `${d.error.code}${d.error.message ? `: ${d.error.message}` : ''}`]);
    kvTable('d-meta', meta);
    const ol = $('d-events');
    ol.replaceChildren(
      ...d.events.map((e) => {
        const li = el('li');
        // An ACK's text is shown under "ACK sent"; here its code (MSA-1).
        const detail = e.status === 'ack' ? /MSA.(\w+)/.exec(e.detail ?? '')?.[1] : e.detail;
        li.append(timeCell(e.at), ` ${e.status}`, e.routeId ? ` route ${e.routeId}` : '', e.sinkId ? ` sink ${e.sinkId}` : '', detail ? ` — ${detail}` : '');
        return li;
      }),
    );
    const tbody = ($('d-deliveries') as HTMLTableElement).tBodies[0];
    tbody.replaceChildren();
    for (const x of d.deliveries) {
      const tr = tbody.insertRow();
      for (const v of [x.routeId, x.sinkId, x.status, x.attempts, x.lastError ? `${x.lastError.code ?? ''} ${x.lastError.message ?? ''}`.trim() : '']) tr.insertCell().textContent = String(v);
    }
    // The ACK the source sent (below phi-reader: its MSA code and control id only).
    const acks = d.events.filter((e) => e.status === 'ack' && e.detail).map((e) => e.detail!.split(/\r\n|\r|\n/).filter(Boolean).join('\n'));
    $('d-ack').textContent = acks.length ? acks.join('\n\n') : '(none recorded: a source that sends no ACK, or a message stored before ACKs were kept)';
    $('d-issues').replaceChildren(...(d.issues.length ? d.issues.map((i) => el('li', Object.entries(i).map(([k, v]) => `${k}: ${String(v)}`).join(' · '))) : [el('li', 'none')]));
    currentRaw = d.body ?? '';
    if (currentRaw.startsWith('MSH')) await loadDefinitions();
    renderTree(currentRaw, d.contentType);
    renderBundle(d.bundle as BundleView | undefined);
    showError(undefined);
  } catch (e) {
    showError(`Message not loaded: ${(e as Error).message}`);
  }
}

/** Common HL7 v2.5 field names (positions are shown for the others). */
const FIELD_NAMES: Record<string, string[]> = {
  MSH: ['', 'Field Separator', 'Encoding Characters', 'Sending Application', 'Sending Facility', 'Receiving Application', 'Receiving Facility', 'Date/Time of Message', 'Security', 'Message Type', 'Message Control ID', 'Processing ID', 'Version ID'],
  EVN: ['', 'Event Type Code', 'Recorded Date/Time', 'Date/Time Planned Event', 'Event Reason Code', 'Operator ID', 'Event Occurred'],
  PID: ['', 'Set ID', 'Patient ID', 'Patient Identifier List', 'Alternate Patient ID', 'Patient Name', "Mother's Maiden Name", 'Date/Time of Birth', 'Administrative Sex', 'Patient Alias', 'Race', 'Patient Address', 'County Code', 'Phone Number - Home', 'Phone Number - Business', 'Primary Language', 'Marital Status', 'Religion', 'Patient Account Number', 'SSN Number'],
  PV1: ['', 'Set ID', 'Patient Class', 'Assigned Patient Location', 'Admission Type', 'Preadmit Number', 'Prior Patient Location', 'Attending Doctor', 'Referring Doctor', 'Consulting Doctor', 'Hospital Service'],
  OBR: ['', 'Set ID', 'Placer Order Number', 'Filler Order Number', 'Universal Service Identifier', 'Priority', 'Requested Date/Time', 'Observation Date/Time'],
  OBX: ['', 'Set ID', 'Value Type', 'Observation Identifier', 'Observation Sub-ID', 'Observation Value', 'Units', 'References Range', 'Abnormal Flags', 'Probability', 'Nature of Abnormal Test', 'Observation Result Status'],
};

/** Field and component names and data types (GET /api/hl7/definitions), read once. */
interface Definitions { segments: Record<string, Record<string, [string, string]>>; types: Record<string, Record<string, [string, string]>> }
let definitions: Definitions | null | undefined;
async function loadDefinitions(): Promise<void> {
  if (definitions !== undefined) return;
  try {
    definitions = await api<Definitions>('/api/hl7/definitions');
  } catch {
    definitions = null; // none loaded: the short table below
  }
}

function fieldLabel(seg: string, i: number): { name?: string; type?: string } {
  const d = definitions?.segments[seg]?.[i];
  if (d) return { name: d[0], type: d[1] || undefined };
  return { name: FIELD_NAMES[seg]?.[i] };
}

function componentLabel(type: string | undefined, j: number): { name?: string; type?: string } {
  const d = type ? definitions?.types[type]?.[j] : undefined;
  return d ? { name: d[0], type: d[1] || undefined } : {};
}

const labelText = (l: { name?: string; type?: string }) => (l.name ? ` ${l.name}${l.type ? ` (${l.type})` : ''}: ` : ' ');

// ---------- the Bundle: one block per entry, references are links to their entry ----------

interface BundleView { entry?: { fullUrl?: string; resource?: { resourceType?: string; id?: string } }[] }

function renderBundle(b: BundleView | undefined): void {
  const root = $('d-bundle');
  root.replaceChildren();
  if (!b) { root.textContent = '(no bundle)'; return; }
  const byRef = new Map<string, string>();
  (b.entry ?? []).forEach((e, i) => {
    const key = `entry-${i}`;
    if (e.fullUrl) byRef.set(e.fullUrl, key);
    if (e.resource?.resourceType && e.resource.id) byRef.set(`${e.resource.resourceType}/${e.resource.id}`, key);
  });
  const head = b.entry ? { ...b, entry: undefined } : b;
  root.append(el('pre', JSON.stringify(head, null, 2)));
  (b.entry ?? []).forEach((e, i) => {
    const det = el('details', undefined, 'entry');
    det.open = true;
    det.id = `entry-${i}`;
    det.dataset.resourceType = e.resource?.resourceType ?? '';
    if (e.fullUrl) det.dataset.fullUrl = e.fullUrl;
    det.append(el('summary', `${e.resource?.resourceType ?? '?'}${e.resource?.id ? `/${e.resource.id}` : ''}${e.fullUrl ? `  ${e.fullUrl}` : ''}`));
    const pre = el('pre');
    // "reference": "<ref>" lines: the value becomes a link to the entry it names (when in the Bundle).
    for (const line of JSON.stringify(e, null, 2).split('\n')) {
      const m = /^(\s*"reference": ")(.*)(",?)$/.exec(line);
      const target = m ? byRef.get(JSON.parse(`"${m[2]}"`) as string) : undefined;
      if (m && target) {
        const a = el('a', m[2], 'ref');
        a.href = `#${location.hash.slice(1)}`;
        a.dataset.target = target;
        a.addEventListener('click', (ev) => {
          ev.preventDefault();
          const t = document.getElementById(target) as HTMLDetailsElement | null;
          if (!t) return;
          t.open = true;
          for (const x of document.querySelectorAll('#d-bundle .entry.target')) x.classList.remove('target');
          t.classList.add('target');
          t.scrollIntoView({ block: 'start' });
          t.querySelector('summary')?.focus();
        });
        pre.append(m[1], a, `${m[3]}\n`);
      } else pre.append(`${line}\n`);
    }
    det.append(pre);
    root.append(det);
  });
}

function renderTree(raw: string, contentType: string): void {
  const root = $('d-tree');
  root.replaceChildren();
  if (!raw) { root.textContent = '(no body: pruned, or not readable with this role)'; return; }
  if (!raw.startsWith('MSH')) {
    let text = raw;
    if (/json/.test(contentType)) try { text = JSON.stringify(JSON.parse(raw), null, 2); } catch { /* as is */ }
    root.append(el('pre', text));
    return;
  }
  const fs = raw[3];
  const [cs, rs, esc, ss] = [raw[4] ?? '^', raw[5] ?? '~', raw[6] ?? '\\', raw[7] ?? '&'];
  const unescape = (v: string) =>
    v.replace(new RegExp(`\\${esc}([FSTRE])\\${esc}`, 'g'), (_m, c: string) => ({ F: fs, S: cs, T: ss, R: rs, E: esc })[c] ?? _m);
  for (const seg of raw.split(/\r\n|\r|\n/).filter(Boolean)) {
    const name = seg.slice(0, 3);
    const fields = seg.split(fs);
    const det = el('details');
    det.open = true;
    const sum = el('summary', name);
    det.append(sum);
    // MSH-1 is the field separator itself: MSH's fields are numbered one on.
    const values = name === 'MSH' ? ['', fs, ...fields.slice(1)] : fields;
    for (let i = 1; i < values.length; i++) {
      const v = values[i];
      if (!v) continue;
      const pos = `${name}-${i}`;
      const label = fieldLabel(name, i);
      const line = el('div', undefined, 'field');
      line.dataset.pos = pos;
      if (label.type) line.dataset.type = label.type;
      line.append(el('span', pos, 'pos'), label.name ? el('span', labelText(label), 'fname') : ' ', name === 'MSH' && i <= 2 ? v : unescape(v));
      det.append(line);
      if (!(name === 'MSH' && i <= 2) && v.includes(cs)) {
        v.split(rs)[0].split(cs).forEach((c, j) => {
          if (!c) return;
          const sub = el('div', undefined, 'field comp');
          sub.dataset.pos = `${pos}.${j + 1}`;
          const cl = componentLabel(label.type, j + 1);
          sub.append(el('span', `  ${pos}.${j + 1}`, 'pos'), cl.name ? el('span', labelText(cl), 'fname') : ' ', unescape(c));
          det.append(sub);
        });
      }
    }
    root.append(det);
  }
}

/** The detail's pending action: replay (reprocess) or retry its dead deliveries (redeliver). */
let detailBody: Record<string, unknown> | undefined;

async function replayDry(mode: 'reprocess' | 'redeliver'): Promise<void> {
  const id = $('d-id').textContent!;
  const body = mode === 'reprocess' ? { ids: [id] } : { ids: [id], mode, deliveryStatus: 'dead' };
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body: { ...body, dryRun: true } });
    detailBody = body;
    $('replay-count').textContent = describeReplay(body, r.count, false);
    $('replay-confirm').hidden = false;
    ($('replay-go') as HTMLButtonElement).disabled = r.count === 0;
    $(r.count ? 'replay-go' : 'replay-cancel').focus();
  } catch (e) {
    showError(`Replay (dry run) failed: ${(e as Error).message}`);
  }
}

async function replayGo(): Promise<void> {
  const id = $('d-id').textContent!;
  const body = detailBody;
  $('replay-confirm').hidden = true;
  if (!body) return;
  try {
    const r = await api<{ count: number }>('/api/replay', { method: 'POST', body });
    $('replay-result').textContent = body.mode === 'redeliver' ? describeReplay(body, r.count, true) : `Replayed ${r.count}.`;
    setTimeout(() => void loadDetail(id), 1000);
  } catch (e) {
    showError(`Replay failed: ${(e as Error).message}`);
  }
}

// ---------- routes and the route tester ----------

interface RouteView { id: string; from: string[]; when: { messageType: string[]; fhirpath: string }; steps: Record<string, unknown>[]; to: string[]; ordering: string; matched: number; filtered: number }

const stepText = (st: Record<string, unknown>) =>
  Object.entries(st).map(([k, v]) => (v === true ? k : `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)).join(', ');

async function loadRoutes(): Promise<void> {
  try {
    const [routes, sources] = await Promise.all([api<RouteView[]>('/api/routes'), api<SourceView[]>('/api/sources')]);
    const tbody = ($('routes') as HTMLTableElement).tBodies[0];
    for (const r of routes) {
      const tr = rowFor(tbody, r.id, 7);
      tr.cells[0].textContent = r.id;
      tr.cells[1].textContent = r.from.length ? r.from.join(', ') : 'any source';
      const when = [r.when.messageType.length ? `type ${r.when.messageType.join(' | ')}` : '', r.when.fhirpath ? `fhirpath ${r.when.fhirpath}` : ''].filter(Boolean).join('; ');
      tr.cells[2].textContent = when || 'always';
      tr.cells[3].textContent = r.steps.map(stepText).join(' → ') || '—';
      tr.cells[4].textContent = r.to.join(', ') + (r.ordering === 'strict' ? ' (strict order)' : '');
      tr.cells[5].textContent = String(r.matched);
      tr.cells[6].textContent = String(r.filtered);
      for (const i of [2, 3]) { tr.cells[i].className = 'wrap'; tr.cells[i].title = tr.cells[i].textContent; }
    }
    const sel = $('t-source') as HTMLSelectElement;
    for (const s of sources) if (![...sel.options].some((o) => o.value === s.id)) sel.add(new Option(s.id, s.id));
    showError(undefined);
  } catch (e) {
    showError(`Routes not loaded: ${(e as Error).message}`);
  }
}

interface TraceView {
  contentType: string;
  sourceId: string;
  messageType?: string;
  routes: { route: string; matched: boolean; failed?: string; detail?: string; steps: { step: string; result: string; error?: string }[]; sinks: Record<string, unknown> }[];
}

async function runTester(ev: Event): Promise<void> {
  ev.preventDefault();
  const out = $('t-result');
  const message = ($('t-message') as HTMLTextAreaElement).value;
  if (!message.trim()) { showError('Route tester: paste or upload a message first.'); return; }
  const source = ($('t-source') as HTMLSelectElement).value;
  const contentType = ($('t-type') as HTMLSelectElement).value;
  out.replaceChildren(el('p', 'Testing…'));
  try {
    const t = await api<TraceView>('/api/routes/test', { method: 'POST', body: { message, ...(source ? { source } : {}), ...(contentType ? { contentType } : {}) } });
    const sinks = new Set(t.routes.flatMap((r) => Object.keys(r.sinks)));
    const head = el('p', `${t.contentType}${t.messageType ? `, type ${t.messageType}` : ''}, on source ${t.sourceId}: ${sinks.size ? `delivered to ${[...sinks].join(', ')}` : 'delivered to no sink'}.`);
    head.id = 't-summary';
    const items = t.routes.map((r) => {
      const div = el('div', undefined, `route-result${r.matched ? '' : ' nomatch'}`);
      div.dataset.route = r.route;
      div.append(el('span', `route ${r.route}: `), el('span', r.matched ? 'matches' : `no match — ${r.failed}: ${r.detail ?? ''}`, 'verdict'));
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

// ---------- wiring ----------

function init(): void {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('token') as HTMLInputElement;
    const t = input.value.trim();
    input.value = '';
    sessionStorage.removeItem(EXPIRES_KEY);
    if (t) void signIn(t);
  });
  $('signout').addEventListener('click', () => signOut());
  $('hold-form').addEventListener('submit', (ev) => void holdSink(ev));
  $('hold-cancel').addEventListener('click', () => ($('hold-form').hidden = true));
  $('filter-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    lastSeq = undefined;
    void search(false);
  });
  $('more').addEventListener('click', () => void search(true));
  $('replay').addEventListener('click', () => void replayDry('reprocess'));
  $('retry-dead').addEventListener('click', () => void replayDry('redeliver'));
  $('sel-all').addEventListener('change', () => {
    const on = ($('sel-all') as HTMLInputElement).checked;
    for (const cb of document.querySelectorAll<HTMLInputElement>('#messages tbody input[type=checkbox]')) {
      cb.checked = on;
      if (on) selected.add(cb.dataset.id!);
      else selected.delete(cb.dataset.id!);
    }
    selectionChanged();
  });
  $('bulk-replay').addEventListener('click', () => void bulkDry({ ids: [...selected] }));
  $('bulk-retry').addEventListener('click', () => void bulkDry({ ids: [...selected], mode: 'redeliver', deliveryStatus: 'dead' }));
  $('bulk-all').addEventListener('click', () => {
    const body = matchingFilter();
    if (!body) showError('Replay all matching: not with a patient filter (select the messages instead).');
    else if (!Object.keys(body).length) showError('Replay all matching: set a filter first (replaying every message needs one).');
    else void bulkDry(body);
  });
  $('bulk-go').addEventListener('click', () => void bulkGo());
  $('tester').addEventListener('submit', (ev) => void runTester(ev));
  $('t-file').addEventListener('change', () => {
    const f = ($('t-file') as HTMLInputElement).files?.[0];
    if (f) void f.text().then((text) => (($('t-message') as HTMLTextAreaElement).value = text));
  });
  $('bulk-cancel').addEventListener('click', () => {
    $('bulk-confirm').hidden = true;
    pendingBulk = undefined;
  });
  $('replay-go').addEventListener('click', () => void replayGo());
  $('replay-cancel').addEventListener('click', () => ($('replay-confirm').hidden = true));
  $('copy-raw').addEventListener('click', () => void navigator.clipboard?.writeText(currentRaw));
  $('oidc-signin').addEventListener('click', () => void oidcStart());
  window.addEventListener('hashchange', route);
  void oidcButton();
  const q = new URLSearchParams(location.search);
  if (q.has('state') || q.has('code') || q.has('error')) {
    route();
    void oidcCallback(q).then((ok) => { if (!ok) route(); });
    return;
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) void signIn(token);
  else route();
}

init();
