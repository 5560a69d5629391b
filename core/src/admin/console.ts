import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { inputError } from '../errors';
import type { MessageFilter } from '../store/message-store';
import { CONSOLE_CSS, CONSOLE_HTML } from './console-assets';

/**
 * The Ferry Console: one static page at /console on the admin server (README "Console"). The page,
 * its stylesheet and its script carry no data and are served without credentials; everything the
 * page shows comes from the JSON API with the API token the user pastes, or the OIDC token of "Sign in with <provider>" (console-oidc.ts) (kept in sessionStorage,
 * sent as `Authorization: Bearer`), so the server decides what each role receives.
 *
 * The script is core/console/app.ts and the modules it imports (core/console/*.ts), compiled by
 * `npm run build` (tsc -b) to core/dist/console/*.js and served at /console/<module>.js.
 */

/** The console's own CSP: its script and stylesheet from this origin only, API calls to this origin only. */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Where the built script is: beside the compiled server (dist/console), or, from sources (jest), in core/dist/console. */
export function consoleScriptPath(): string | undefined {
  const candidates = [
    path.join(__dirname, '..', 'console', 'app.js'),
    path.join(__dirname, '..', '..', 'dist', 'console', 'app.js'),
  ];
  return candidates.find((p) => existsSync(p));
}

/** The console script's modules (core/console/*.ts): `app.js` and the modules it imports, served as they are. */
const CONSOLE_MODULE = /^[a-z][a-z0-9-]*\.js$/;

export function registerConsole(app: FastifyInstance): void {
  const scripts = new Map<string, string>();
  const page = (_req: unknown, reply: import('fastify').FastifyReply) =>
    reply.header('content-security-policy', CONSOLE_CSP).type('text/html; charset=utf-8').send(CONSOLE_HTML);
  app.get('/console', { config: { role: 'public' } }, page);
  app.get('/console/console.css', { config: { role: 'public' } }, async (_req, reply) =>
    reply.type('text/css; charset=utf-8').send(CONSOLE_CSS),
  );
  app.get<{ Params: { script: string } }>('/console/:script', { config: { role: 'public' } }, async (req, reply) => {
    const name = req.params.script;
    if (!CONSOLE_MODULE.test(name)) return reply.code(404).type('text/plain').send('not found');
    let script = scripts.get(name);
    if (script === undefined) {
      const main = consoleScriptPath();
      if (!main) return reply.code(503).type('text/plain').send('the console script is not built: run npm run build');
      const file = path.join(path.dirname(main), name);
      if (!existsSync(file)) return reply.code(404).type('text/plain').send('not found');
      script = readFileSync(file, 'utf8');
      scripts.set(name, script);
    }
    return reply.type('text/javascript; charset=utf-8').send(script);
  });
}

/** The console's filters on GET /api/messages beyond `ferry replay`'s. */
export interface MessageListQuery {
  patient?: string;
  limit?: string | number;
  /** `ADT^A01`, `ADT^A0*`. */
  type?: string;
  controlId?: string;
  /** A seq: the page after the one that ended with it (newest first). */
  before?: string;
}

export function messageListFilter(q: Pick<MessageListQuery, 'type' | 'controlId' | 'before'>): Partial<MessageFilter> {
  const f: Partial<MessageFilter> = {};
  const text = (v: unknown, name: string) => {
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string' || v.length > 100)
      throw inputError('QUERY_FILTER', `${name}: at most 100 characters`, { field: name });
    return v.trim() || undefined;
  };
  f.messageType = text(q.type, 'type');
  f.controlId = text(q.controlId, 'controlId');
  if (q.before !== undefined && q.before !== '') {
    if (!/^\d{1,15}$/.test(String(q.before)))
      throw inputError('QUERY_FILTER', 'before: a seq number (the last seq of the previous page)', { field: 'before' });
    f.beforeSeq = Number(q.before);
  }
  for (const k of Object.keys(f) as (keyof MessageFilter)[]) if (f[k] === undefined) delete f[k];
  return f;
}
