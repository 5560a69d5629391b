/**
 * Ferry Console (browser script, served at /console/app.js; its modules beside it at /console/<name>.js). Vanilla DOM, no dependencies. Every
 * datum comes from the admin JSON API with the pasted token or the one of the OIDC sign-in; the server decides what a role sees.
 * Data is only ever written with textContent (never innerHTML).
 */
import {
  $,
  api,
  ApiError,
  can,
  EXPIRES_KEY,
  OIDC_KEY,
  POLL_MS,
  principal,
  setPrincipal,
  showError,
  TOKEN_KEY,
  type Principal,
} from './common.js';
import { holdSink, poll } from './dashboard.js';
import { currentRaw, loadDetail, replayDry, replayGo } from './detail.js';
import {
  bulkDry,
  bulkGo,
  cancelBulk,
  listLoaded,
  matchingFilter,
  resetPaging,
  search,
  selected,
  selectionChanged,
} from './messages.js';
import { loadRoutes, runTester } from './routes.js';

let pollTimer: number | undefined;

// ---------- sign in / out ----------

async function signIn(token: string): Promise<void> {
  sessionStorage.setItem(TOKEN_KEY, token);
  let who: Principal;
  try {
    who = await api<Principal>('/api/whoami');
    setPrincipal(who);
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
    setPrincipal(undefined);
    showError(
      e instanceof ApiError && e.status === 401
        ? 'This token is not accepted.'
        : `Cannot sign in: ${(e as Error).message}`,
    );
    route();
    return;
  }
  showError(undefined);
  if (!watchExpiry()) return;
  document.body.classList.toggle('role-operator', can('operator'));
  document.body.classList.toggle('role-phi-reader', can('phi-reader'));
  $('who').textContent = `${who.name} (${who.roles.join(', ')})`;
  if (!location.hash || location.hash === '#/signin') location.hash = '#/dashboard';
  else route();
}

export function signOut(msg?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EXPIRES_KEY);
  if (expiryTimer !== undefined) {
    clearTimeout(expiryTimer);
    expiryTimer = undefined;
  }
  setPrincipal(undefined);
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
  if (left <= 0) {
    signOut('Signed out: the sign-in has expired; sign in again.');
    return false;
  }
  // setTimeout holds at most 2^31-1 ms.
  expiryTimer = window.setTimeout(
    () => signOut('Signed out: the sign-in has expired; sign in again.'),
    Math.min(left, 2 ** 31 - 1),
  );
  return true;
}

const b64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');

async function publicPost<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  const text = await res.text();
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = { error: text };
  }
  if (!res.ok) throw new ApiError(res.status, (data as { error?: string }).error ?? `HTTP ${res.status}`);
  return data as T;
}

/** Step 1: a code verifier kept in this tab, its S256 challenge to the server, then off to the provider. */
async function oidcStart(): Promise<void> {
  try {
    if (!crypto.subtle) throw new Error('this page needs a secure origin (https or localhost) for single sign-on');
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
    const r = await publicPost<{ authorizationUrl: string; state: string }>('/console/oidc/start', {
      codeChallenge: challenge,
      codeChallengeMethod: 'S256',
    });
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
  if (q.get('error')) {
    showError(`The sign-in was refused by the identity provider: ${q.get('error')}`);
    return false;
  }
  let saved: { state?: string; verifier?: string } = {};
  try {
    saved = pending ? JSON.parse(pending) : {};
  } catch {
    /* ignored: refused below */
  }
  if (!saved.state || !saved.verifier || saved.state !== q.get('state')) {
    showError(
      'Sign-in refused: the answer does not belong to a sign-in started in this tab (state mismatch). Sign in again.',
    );
    return false;
  }
  try {
    const r = await publicPost<{ token: string; expiresAt: string }>('/console/oidc/token', {
      code: q.get('code'),
      state: saved.state,
      codeVerifier: saved.verifier,
    });
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
    const res = await fetch('/console/oidc', {
      headers: { accept: 'application/json' },
      credentials: 'omit',
      cache: 'no-store',
    });
    const c = (await res.json()) as { enabled?: boolean; displayName?: string };
    if (!c.enabled) return;
    $('oidc-signin').textContent = `Sign in with ${c.displayName ?? 'single sign-on'}`;
    $('oidc').hidden = false;
  } catch {
    /* no button */
  }
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

export function route(): void {
  if (pollTimer !== undefined) {
    clearInterval(pollTimer);
    pollTimer = undefined;
  }
  if (!principal) {
    show('signin');
    $('token').focus();
    return;
  }
  const h = location.hash;
  const m = /^#\/message\/([A-Za-z0-9_-]+)$/.exec(h);
  if (m) {
    show('detail');
    void loadDetail(m[1]);
    return;
  }
  if (h.startsWith('#/messages')) {
    show('messages');
    if (!listLoaded) void search(false);
    return;
  }
  if (h.startsWith('#/routes')) {
    show('routes');
    void loadRoutes();
    return;
  }
  show('dashboard');
  void poll();
  pollTimer = window.setInterval(() => void poll(), POLL_MS);
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
    resetPaging();
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
  $('bulk-retry').addEventListener(
    'click',
    () => void bulkDry({ ids: [...selected], mode: 'redeliver', deliveryStatus: 'dead' }),
  );
  $('bulk-all').addEventListener('click', () => {
    const body = matchingFilter();
    if (!body) showError('Replay all matching: not with a patient filter (select the messages instead).');
    else if (!Object.keys(body).length)
      showError('Replay all matching: set a filter first (replaying every message needs one).');
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
    cancelBulk();
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
    void oidcCallback(q).then((ok) => {
      if (!ok) route();
    });
    return;
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) void signIn(token);
  else route();
}

init();
