/**
 * The admin API's role matrix over real HTTP on port 0: every endpoint x (no token, viewer,
 * operator, phi-reader, admin). Below the role an endpoint needs: 401 without a token, 403 with
 * one; from it up: its answer. The table must name every route the server has.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine, ROLES, silentLogger, type Role } from '@ferry/core';
import pg from 'pg';
import { CSV_TYPE } from '../plugins/csv-patient';
import { roleTokens, type RoleTokens } from '../support';

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

type Need = Role | 'public';
interface Case {
  method: 'GET' | 'POST' | 'DELETE';
  /** `:id` is replaced by the stored message's id. */
  path: string;
  /** The route pattern it exercises. */
  route: string;
  body?: unknown;
  need: Need;
  ok: number;
}

const cases: Case[] = [
  { method: 'GET', path: '/health', route: '/health', need: 'public', ok: 200 },
  { method: 'GET', path: '/ready', route: '/ready', need: 'public', ok: 200 },
  // The console's page, stylesheet and script hold no data (the page's API calls carry the token).
  { method: 'GET', path: '/console', route: '/console', need: 'public', ok: 200 },
  { method: 'GET', path: '/console/console.css', route: '/console/console.css', need: 'public', ok: 200 },
  { method: 'GET', path: '/console/app.js', route: '/console/:script', need: 'public', ok: 200 },
  // The script's modules (core/console/*.ts), each a file of the built console folder; any other name is 404.
  { method: 'GET', path: '/console/common.js', route: '/console/:script', need: 'public', ok: 200 },
  // "Sign in with <provider>": public by design, like /health -- the user has no credential yet.
  // Whether the button shows (and its label); starting a sign-in and exchanging its code (state +
  // PKCE verifier checked, refusals counted by the FailureLimiter and audited: test/security/console-oidc.test.ts).
  // This engine has no admin.auth.oidc.console: 404 for the two POSTs.
  { method: 'GET', path: '/console/oidc', route: '/console/oidc', need: 'public', ok: 200 },
  {
    method: 'POST',
    path: '/console/oidc/start',
    route: '/console/oidc/start',
    body: { codeChallenge: 'x'.repeat(43) },
    need: 'public',
    ok: 404,
  },
  {
    method: 'POST',
    path: '/console/oidc/token',
    route: '/console/oidc/token',
    body: { code: 'c', state: 's', codeVerifier: 'v' },
    need: 'public',
    ok: 404,
  },
  { method: 'GET', path: '/metrics', route: '/metrics', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/whoami', route: '/api/whoami', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/stats', route: '/api/stats', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/sinks', route: '/api/sinks', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/sources', route: '/api/sources', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/throughput', route: '/api/throughput', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/routes', route: '/api/routes', need: 'viewer', ok: 200 },
  // This engine has no HL7 v2 transform (only the CSV plugin): 404 from viewer up, the definitions themselves in the console e2e.
  { method: 'GET', path: '/api/hl7/definitions', route: '/api/hl7/definitions', need: 'viewer', ok: 404 },
  {
    method: 'POST',
    path: '/api/routes/test',
    route: '/api/routes/test',
    body: { message: 'MRN-T-1,Tester,Tom,1970-01-01,male', contentType: CSV_TYPE },
    need: 'operator',
    ok: 200,
  },
  { method: 'GET', path: '/api/messages', route: '/api/messages', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/messages?patient=MRN-RM-1', route: '/api/messages', need: 'phi-reader', ok: 200 },
  { method: 'GET', path: '/api/messages/:id', route: '/api/messages/:id', need: 'viewer', ok: 200 },
  { method: 'GET', path: '/api/messages/:id?body=true', route: '/api/messages/:id', need: 'phi-reader', ok: 200 },
  { method: 'GET', path: '/api/messages/:id?bundle=true', route: '/api/messages/:id', need: 'phi-reader', ok: 200 },
  {
    method: 'POST',
    path: '/api/sinks/mem/hold',
    route: '/api/sinks/:id/hold',
    body: { minutes: 5, reason: 'matrix' },
    need: 'operator',
    ok: 200,
  },
  { method: 'DELETE', path: '/api/sinks/mem/hold', route: '/api/sinks/:id/hold', need: 'operator', ok: 200 },
  {
    method: 'POST',
    path: '/api/replay',
    route: '/api/replay',
    body: { ids: [':id'], dryRun: true },
    need: 'operator',
    ok: 200,
  },
  { method: 'POST', path: '/api/prune', route: '/api/prune', need: 'operator', ok: 200 },
  { method: 'GET', path: '/api/audit', route: '/api/audit', need: 'admin', ok: 200 },
  { method: 'GET', path: '/api/tokens', route: '/api/tokens', need: 'admin', ok: 200 },
  {
    method: 'POST',
    path: '/api/tokens',
    route: '/api/tokens',
    body: { name: 'matrix', roles: ['viewer'], expires: '1d' },
    need: 'admin',
    ok: 201,
  },
  { method: 'DELETE', path: '/api/tokens/zzzznotatoken', route: '/api/tokens/:id', need: 'admin', ok: 404 },
  { method: 'GET', path: '/api/config', route: '/api/config', need: 'admin', ok: 200 },
  // The same config again: nothing changes (the version stays).
  { method: 'POST', path: '/api/config/reload', route: '/api/config/reload', need: 'admin', ok: 200 },
  { method: 'GET', path: '/api/config/history', route: '/api/config/history', need: 'admin', ok: 200 },
  { method: 'GET', path: '/api/config/diff?a=1&b=1', route: '/api/config/diff', need: 'admin', ok: 200 },
];

const PG_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

describe.each(['sqlite', 'postgres'] as const)('admin API role matrix (%s store)', (kind) => {
  const schema = `ferry_roles_${randomBytes(4).toString('hex')}`;
  let roles: RoleTokens;
  let engine: Engine;
  let base: string;
  let id: string;

  beforeAll(async () => {
    roles = await roleTokens();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-roles-'));
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: kind === 'sqlite' ? { kind, path: path.join(dir, 'ferry.db') } : { kind, url: PG_URL, schema },
        plugins: [{ package: pluginPath, config: { system: 'urn:oid:1.2.3.4' } }],
        processing: { pollIntervalMs: 50, transformWorkers: 0 },
        sinks: { mem: { type: 'memory' } },
        routes: [{ id: 'r', to: ['mem'] }],
        // No failed-auth limit here: the matrix makes many refused calls on purpose (admin-probes tests the limit).
        admin: { enabled: true, port: 0, auth: { tokens: roles.tokens, failedAuth: { maxFailures: 0 } } },
      },
    });
    await engine.start();
    base = engine.adminUrl!;
    [{ id }] = await engine.submit('intake', [
      { contentType: CSV_TYPE, body: Buffer.from('MRN-RM-1,Matrix,Morgan,1970-01-01,female') },
    ]);
    await engine.waitForIdle();
  });
  afterAll(async () => {
    await engine?.stop();
    if (kind === 'postgres') {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).finally(() => c.end());
    }
  });

  const call = (c: Case, who: Role | undefined) => {
    const headers: Record<string, string> = who ? { ...roles.auth(who) } : {};
    let body: string | undefined;
    if (c.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(c.body).replace(/:id/g, id);
    } else if (c.method === 'POST') headers['content-type'] = 'application/json';
    return fetch(`${base}${c.path.replace(':id', id)}`, { method: c.method, headers, body });
  };

  it('the table covers every route the admin server has', () => {
    const served = engine.adminServer!.routes.map((r) => `${r.method} ${r.url}`).sort();
    expect([...new Set(cases.map((c) => `${c.method} ${c.route}`))].sort()).toEqual(served);
    // And what each route declares matches the table's loosest case for it.
    for (const r of engine.adminServer!.routes) {
      const loosest = cases.filter((c) => c.method === r.method && c.route === r.url).map((c) => c.need)[0];
      expect(`${r.method} ${r.url} ${r.access === 'metrics' ? 'viewer' : r.access}`).toBe(
        `${r.method} ${r.url} ${loosest}`,
      );
    }
  });

  const rank = (n: Need) => (n === 'public' ? -1 : ROLES.indexOf(n));
  for (const c of cases) {
    for (const who of [undefined, ...ROLES] as (Role | undefined)[]) {
      const expected = c.need === 'public' ? c.ok : !who ? 401 : ROLES.indexOf(who) >= rank(c.need) ? c.ok : 403;
      it(`${c.method} ${c.path} as ${who ?? 'nobody'} -> ${expected}`, async () => {
        const res = await call(c, who);
        const text = await res.text();
        expect(`${res.status} ${res.status !== expected ? text : ''}`.trim()).toBe(String(expected));
        // A 401 says how to authenticate.
        expect(expected === 401 ? res.headers.get('www-authenticate') : 'Bearer (no 401)').toMatch(/^Bearer/);
        // Below phi-reader, no answer carries the patient's identifier or ordering key.
        // (The console's static files hold no data, only the script's own field names; test/e2e/console.test.ts checks what its viewer receives.)
        const phiHidden = !!who && ROLES.indexOf(who) < ROLES.indexOf('phi-reader') && !c.path.startsWith('/console');
        expect(phiHidden ? text.match(/MRN-RM-1|orderingKey|Matrix|Morgan/g) : null).toBeNull();
      });
    }
  }

  it('a phi-reader sees identifiers and the body, and each such read is in the audit trail with the message id', async () => {
    const meta = (await (await fetch(`${base}/api/messages/${id}`, { headers: roles.auth('phi-reader') })).json()) as {
      orderingKey?: string;
    };
    expect(meta.orderingKey).toBe('urn:oid:1.2.3.4|MRN-RM-1');
    const found = (await (
      await fetch(`${base}/api/messages?patient=MRN-RM-1`, { headers: roles.auth('phi-reader') })
    ).json()) as { id: string }[];
    expect(found.map((m) => m.id)).toEqual([id]);
    expect(
      (await (
        await fetch(`${base}/api/messages?patient=MRN-OTHER`, { headers: roles.auth('phi-reader') })
      ).json()) as unknown[],
    ).toEqual([]);
    const trail = await engine.store.auditEntries({ messageId: id });
    expect(trail.map((e) => e.action)).toEqual(
      expect.arrayContaining(['message.read', 'message.body.read', 'message.bundle.read', 'message.search']),
    );
    expect(trail.find((e) => e.action === 'message.body.read')).toMatchObject({
      principal: expect.stringMatching(/^token:\w+ \(test-(phi-reader|admin)\)$/),
      role: expect.any(String),
      remote: '127.0.0.1',
      result: 'ok',
    });
    // A refused PHI read is audited too, and no entry holds the patient identifier (the route pattern, not the URL).
    const denied = await engine.store.auditEntries({ action: 'access.denied' });
    expect(denied.length).toBeGreaterThan(0);
    expect(JSON.stringify(await engine.store.auditEntries())).not.toContain('MRN-RM-1');
    // Operations are audited with their result.
    expect((await engine.store.auditEntries({ action: 'sink.hold' })).map((e) => e.result)).toContain('ok');
    expect((await engine.store.auditEntries({ action: 'auth.failed' })).length).toBeGreaterThan(0);
  });

  it('GET /api/audit answers the trail newest first with filters; limit is capped', async () => {
    const h = roles.auth('admin');
    const list = (await (await fetch(`${base}/api/audit?action=message.body.read&limit=5`, { headers: h })).json()) as {
      action: string;
      messageIds: string[];
    }[];
    expect(list.length).toBeGreaterThan(0);
    expect(list.every((e) => e.action === 'message.body.read' && e.messageIds.includes(id))).toBe(true);
    expect((await fetch(`${base}/api/audit?limit=100000`, { headers: h })).status).toBe(400);
    expect((await fetch(`${base}/api/messages?limit=100000`, { headers: h })).status).toBe(400);
    expect((await fetch(`${base}/api/audit?since=yesterday`, { headers: h })).status).toBe(400);
  });

  it('tokens made through the API work at once, are listed without their hash, and stop working when revoked', async () => {
    const h = { ...roles.auth('admin'), 'content-type': 'application/json' };
    const made = (await (
      await fetch(`${base}/api/tokens`, {
        method: 'POST',
        headers: h,
        body: JSON.stringify({ name: 'ci', roles: 'operator' }),
      })
    ).json()) as { id: string; token: string };
    expect(made.token).toMatch(/^ferry_/);
    const mine = { authorization: `bearer ${made.token}` }; // lower-case scheme (RFC 7235)
    expect(await (await fetch(`${base}/api/whoami`, { headers: mine })).json()).toMatchObject({
      id: `token:${made.id}`,
      name: 'ci',
      roles: ['operator'],
    });
    const listed = JSON.stringify(await (await fetch(`${base}/api/tokens`, { headers: h })).json());
    expect(listed).toContain(made.id);
    expect(listed).not.toMatch(/scrypt\$|ferry_[a-z0-9]+_/);
    expect(
      (
        await fetch(`${base}/api/tokens`, {
          method: 'POST',
          headers: h,
          body: JSON.stringify({ name: 'x', roles: ['root'] }),
        })
      ).status,
    ).toBe(400);
    expect(
      (await fetch(`${base}/api/tokens/${made.id}`, { method: 'DELETE', headers: roles.auth('admin') })).status,
    ).toBe(200);
    expect((await fetch(`${base}/api/whoami`, { headers: mine })).status).toBe(401);
    expect(
      (await fetch(`${base}/api/tokens/${roles.tokens[0].id}`, { method: 'DELETE', headers: roles.auth('admin') }))
        .status,
    ).toBe(409);
  });

  it('HEAD and OPTIONS (a CORS preflight) get no more than GET would', async () => {
    expect((await fetch(`${base}/api/stats`, { method: 'HEAD' })).status).toBe(401);
    expect(
      (await fetch(`${base}/api/messages/${id}?body=true`, { method: 'HEAD', headers: roles.auth('viewer') })).status,
    ).toBe(403);
    expect((await fetch(`${base}/health`, { method: 'HEAD' })).status).toBe(200);
    const pre = await fetch(`${base}/api/sinks/mem/hold`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(pre.status).toBe(403);
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('the console page has its own CSP: scripts and styles from this origin only, nothing inline, no other origin', async () => {
    const res = await fetch(`${base}/console`);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).toMatch(/style-src 'self'(;|$)/);
    expect(csp).toMatch(/connect-src 'self'(;|$)/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    const html = await res.text();
    expect(html).toContain('<script type="module" src="/console/app.js"></script>');
    expect(html).not.toMatch(/<script>|<style|\son[a-z]+=/i);
    // The API keeps the strict one.
    expect(
      (await fetch(`${base}/api/stats`, { headers: roles.auth('viewer') })).headers.get('content-security-policy'),
    ).toMatch(/^default-src 'none'; frame-ancestors 'none'$/);
    expect((await fetch(`${base}/console/app.js`)).headers.get('content-type')).toMatch(/^text\/javascript/);
  });

  it('GET /api/messages pages by keyset (before=<seq>) and filters by type and control id; bad values are 400', async () => {
    const h = roles.auth('viewer');
    const list = (await (await fetch(`${base}/api/messages?type=*&limit=5`, { headers: h })).json()) as {
      id: string;
      seq: number;
    }[];
    expect(list.map((m) => m.id)).toContain(id);
    const seq = list.find((m) => m.id === id)!.seq;
    expect(
      ((await (await fetch(`${base}/api/messages?before=${seq}`, { headers: h })).json()) as { id: string }[]).map(
        (m) => m.id,
      ),
    ).not.toContain(id);
    expect(
      ((await (await fetch(`${base}/api/messages?before=${seq + 1}`, { headers: h })).json()) as { id: string }[]).map(
        (m) => m.id,
      ),
    ).toContain(id);
    expect(await (await fetch(`${base}/api/messages?controlId=no-such-control-id`, { headers: h })).json()).toEqual([]);
    expect((await fetch(`${base}/api/messages?before=abc`, { headers: h })).status).toBe(400);
    expect((await fetch(`${base}/api/messages?type=${'x'.repeat(101)}`, { headers: h })).status).toBe(400);
  });

  it('an unknown path: 401 without a token, 404 for any principal', async () => {
    expect((await fetch(`${base}/api/nope`)).status).toBe(401);
    expect((await fetch(`${base}/api/nope`, { headers: roles.auth('viewer') })).status).toBe(404);
  });

  it('GET /api/config redacts secrets (token hashes)', async () => {
    const text = await (await fetch(`${base}/api/config`, { headers: roles.auth('admin') })).text();
    expect(text).toContain('"routes"');
    expect(text).not.toContain('scrypt$');
  });
});
