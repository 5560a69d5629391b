/** What every part of the console shares: roles, the session's principal, DOM helpers, the API call, errors. */
import { signOut } from './app.js';

export const ROLES = ['viewer', 'operator', 'phi-reader', 'admin'] as const;
export type Role = (typeof ROLES)[number];
export interface Principal {
  id: string;
  name: string;
  roles: Role[];
}

export const TOKEN_KEY = 'ferry.console.token';
/** With OIDC sign-in: when the bearer token expires (ISO time). */
export const EXPIRES_KEY = 'ferry.console.expires';
/** An OIDC sign-in under way: its state and PKCE code verifier (this tab only). */
export const OIDC_KEY = 'ferry.console.oidc';
export const POLL_MS = 3000;
/** The server's per-minute series (GET /api/throughput) is read again this often. */
export const SERIES_MS = 30_000;

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
export const el = <K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string | number,
  cls?: string,
): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

export let principal: Principal | undefined;
/** Set by sign-in and sign-out (an imported binding cannot be assigned where it is imported). */
export function setPrincipal(p: Principal | undefined): void {
  principal = p;
}

export function topRank(p: Principal | undefined): number {
  return p ? Math.max(-1, ...p.roles.map((r) => ROLES.indexOf(r))) : -1;
}
export const can = (role: Role) => topRank(principal) >= ROLES.indexOf(role);

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function api<T = unknown>(
  path: string,
  init: { method?: string; body?: unknown; text?: boolean } = {},
): Promise<T> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (init.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.body);
  }
  const res = await fetch(path, {
    method: init.method ?? 'GET',
    headers,
    body,
    credentials: 'omit',
    cache: 'no-store',
  });
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      /* not JSON */
    }
    if (res.status === 401 && path !== '/api/whoami') signOut('Signed out: the token is no longer accepted.');
    throw new ApiError(res.status, `${res.status}: ${msg}`);
  }
  return (init.text ? text : text ? JSON.parse(text) : undefined) as T;
}

export function showError(msg: string | undefined): void {
  const e = $('error');
  e.textContent = msg ?? '';
  e.hidden = !msg;
}

/** Local time, UTC on hover. */
export function timeCell(v: string | number | undefined): HTMLElement {
  const s = el('span');
  if (v === undefined || v === null || v === '') return s;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) {
    s.textContent = String(v);
    return s;
  }
  s.textContent = d.toLocaleString();
  s.title = d.toISOString();
  return s;
}
