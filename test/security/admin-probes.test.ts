/**
 * Bad input against the admin port, on real sockets: DNS rebinding (Host), cross-site requests
 * (Origin, text/plain "simple" requests, no Authorization), malformed / oversized / slow
 * requests, token brute force (rate-limited and audited), path traversal.
 */
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, Engine, newTokenSecret, silentLogger, SqliteMessageStore } from '@ferry/core';
import Database from 'better-sqlite3';
import { roleTokens, type RoleTokens } from '../support';

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

/** A raw HTTP request (fetch would not let a test set Host). */
function raw(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('admin API probes', () => {
  let roles: RoleTokens;
  let engine: Engine;
  let base: string;
  let port: number;
  const chunks: Buffer[] = [];

  beforeAll(async () => {
    roles = await roleTokens();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-probes-'));
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => chunks.push(c));
    engine = await Engine.create({
      logger: createLogger({ level: 'info' }, stream),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: [{ package: pluginPath, config: { system: 'urn:oid:1.2.3.4' } }],
        processing: { pollIntervalMs: 50, transformWorkers: 0 },
        sinks: { mem: { type: 'memory' } },
        routes: [{ id: 'r', to: ['mem'] }],
        admin: {
          enabled: true,
          port: 0,
          bodyLimit: 4096,
          requestTimeoutMs: 1000,
          allowedOrigins: ['https://console.example.org'],
          trustProxy: ['127.0.0.1'], // as if a reverse proxy ran on this host
          // The failed-auth limit is probed on an engine of its own (below): these probes fail often on purpose.
          auth: { tokens: roles.tokens, failedAuth: { maxFailures: 0 } },
        },
      },
    });
    await engine.start();
    base = engine.adminUrl!;
    port = Number(new URL(base).port);
  });
  afterAll(async () => {
    await engine?.stop();
  });

  const admin = () => roles.auth('admin');
  const held = async () => (await engine.store.sinkHolds()).length > 0;

  it('sets the security headers on every answer', async () => {
    for (const [p, h] of [
      ['/health', {}],
      ['/api/stats', admin()],
      ['/api/stats', {}],
      ['/nope', admin()],
    ] as const) {
      const res = await fetch(`${base}${p}`, { headers: h });
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(res.headers.get('cache-control')).toBe('no-store');
    }
  });

  it('DNS rebinding: a Host that is not the bind address or localhost is refused, credentials or not', async () => {
    for (const host of [
      'attacker.example',
      `attacker.example:${port}`,
      '127.0.0.1.attacker.example',
      'localhost.',
      '[::2]',
      'a b',
    ]) {
      const res = await raw(`${base}/api/stats`, { headers: { host, ...admin() } });
      expect(`${host} ${res.status}`).toBe(`${host} 421`);
    }
    expect((await raw(`${base}/health`, { headers: { host: 'attacker.example' } })).status).toBe(421);
    expect((await raw(`${base}/api/stats`, { headers: { host: `localhost:${port}`, ...admin() } })).status).toBe(200);
    expect((await raw(`${base}/api/stats`, { headers: { host: `127.0.0.1:${port}`, ...admin() } })).status).toBe(200);
  });

  it('CSRF: a cross-site "simple" request cannot hold a sink; JSON and Authorization are required, the Origin checked', async () => {
    // What a page on another site can send without a preflight: text/plain, its own Origin, no Authorization.
    const simple = await raw(`${base}/api/sinks/mem/hold`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', origin: 'https://evil.example' },
      body: '{"reason":"x"}',
    });
    expect(simple.status).toBe(403);
    // Same without Origin (a form from a file: page, a proxy that strips it): no Authorization, 401.
    expect(
      (
        await raw(`${base}/api/sinks/mem/hold`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: '{}',
        })
      ).status,
    ).toBe(401);
    // Even with a token, not JSON: 415; a foreign Origin with a token: 403.
    expect(
      (
        await raw(`${base}/api/sinks/mem/hold`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain', ...admin() },
          body: '{}',
        })
      ).status,
    ).toBe(415);
    expect(
      (
        await raw(`${base}/api/sinks/mem/hold`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...admin() },
          body: 'a=1',
        })
      ).status,
    ).toBe(415);
    expect(
      (
        await raw(`${base}/api/sinks/mem/hold`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: 'https://evil.example', ...admin() },
          body: '{}',
        })
      ).status,
    ).toBe(403);
    expect((await raw(`${base}/api/stats`, { headers: { origin: 'null', ...admin() } })).status).toBe(403);
    expect(await held()).toBe(false);
    // The server's own origin and a configured one are allowed.
    expect(
      (await raw(`${base}/api/stats`, { headers: { origin: `http://127.0.0.1:${port}`, ...admin() } })).status,
    ).toBe(200);
    expect(
      (await raw(`${base}/api/stats`, { headers: { origin: 'https://console.example.org', ...admin() } })).status,
    ).toBe(200);
    const refused = await engine.store.auditEntries({ action: 'request.refused' });
    expect(refused.map((e) => e.detail)).toEqual(expect.arrayContaining(['origin', 'content-type']));
  });

  it('malformed and oversized requests get a clear 4xx and change nothing', async () => {
    const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
      raw(`${base}/api/sinks/mem/hold`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...admin(), ...headers },
        body,
      });
    const bad = await post('{"reason": "x"');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toBeTruthy();
    expect((await post('{"__proto__": {"admin": true}}')).status).toBe(400);
    expect((await post('{"constructor": {"prototype": {"admin": true}}}')).status).toBe(400);
    const big = await post(JSON.stringify({ reason: 'x'.repeat(10_000) }));
    expect(big.status).toBe(413);
    expect(JSON.parse(big.body).error).toMatch(/larger than 4096/);
    expect((await post(JSON.stringify({ minutes: 'soon' }))).status).toBe(400);
    expect((await raw(`${base}/api/stats`, { headers: { ...admin(), 'x-big': 'y'.repeat(20_000) } })).status).toBe(431);
    expect((await raw(`${base}/api/messages?limit=-1`, { headers: admin() })).status).toBe(400);
    expect((await raw(`${base}/api/messages?since=%ZZ`, { headers: admin() })).status).toBe(400);
    for (const a of [
      'Basic YWRtaW46YWRtaW4=',
      'Bearer',
      'Bearer a b',
      'Bearer ferry_x',
      'Bearer eyJhbGciOiJub25lIn0.e30.',
    ]) {
      expect((await raw(`${base}/api/stats`, { headers: { authorization: a } })).status).toBe(401);
    }
    expect(await held()).toBe(false);
  });

  it("behind a trusted proxy the client's address (X-Forwarded-For) is the one audited", async () => {
    expect(
      (
        await raw(`${base}/api/stats`, {
          headers: { authorization: 'Bearer ferry_abcd_nope', 'x-forwarded-for': '10.9.9.9' },
        })
      ).status,
    ).toBe(401);
    const [last] = await engine.store.auditEntries({ action: 'auth.failed', newestFirst: true, limit: 1 });
    expect(last.remote).toBe('10.9.9.9');
  });

  it('a slow client (headers never finished) is cut off after requestTimeoutMs', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(`GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Slow: `);
    const t0 = Date.now();
    const answer = await new Promise<string>((resolve) => {
      let got = '';
      sock.on('data', (c) => (got += c));
      sock.on('close', () => resolve(got));
    });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(answer === '' || /^HTTP\/1\.1 408/.test(answer)).toBe(true);
  });

  it('path traversal reaches no file and no other route', async () => {
    for (const p of [
      '/../../../../etc/passwd',
      '/api/messages/..%2F..%2F..%2Fetc%2Fpasswd',
      '/api/messages/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      '/api/sinks/..%2F..%2Fetc/hold',
      '/api/../api/tokens%00',
      '/%2e%2e/%2e%2e/etc/passwd',
    ]) {
      const res = await raw(`${base}${p}`, { headers: roles.auth('viewer') });
      expect([400, 403, 404]).toContain(res.status);
      expect(res.body).not.toMatch(/root:/);
    }
    // Unauthenticated, an unknown path says nothing beyond 401.
    expect((await raw(`${base}/etc/passwd`, {})).status).toBe(401);
  });
});

describe('admin API token brute force', () => {
  let roles: RoleTokens;
  let engine: Engine;
  let base: string;
  const chunks: Buffer[] = [];

  beforeAll(async () => {
    roles = await roleTokens();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-brute-'));
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => chunks.push(c));
    engine = await Engine.create({
      logger: createLogger({ level: 'info' }, stream),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: { tokens: roles.tokens, failedAuth: { maxFailures: 5, windowMs: 60_000 } },
        },
      },
    });
    await engine.start();
    base = engine.adminUrl!;
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('after maxFailures wrong tokens the address is refused (429, even with a good token), each failure audited, no secret logged', async () => {
    const guess = newTokenSecret(roles.tokens[3].id).secret; // a real id, a wrong secret
    const statuses: number[] = [];
    // A forged X-Forwarded-For changes nothing: no proxy is trusted here.
    for (let i = 0; i < 8; i++)
      statuses.push(
        (
          await raw(`${base}/api/stats`, {
            headers: { authorization: `Bearer ${guess}`, 'x-forwarded-for': `10.0.0.${i}` },
          })
        ).status,
      );
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    const res = await raw(`${base}/api/stats`, { headers: roles.auth('admin') });
    expect(res.status).toBe(429);
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
    const failed = await engine.store.auditEntries({ action: 'auth.failed' });
    expect(failed).toHaveLength(5);
    expect(
      failed.every(
        (e) =>
          e.detail === 'wrong-secret' &&
          e.principal === 'anonymous' &&
          e.remote === '127.0.0.1' &&
          e.result === 'denied',
      ),
    ).toBe(true);
    expect((await engine.store.auditEntries({ action: 'auth.rate-limited' })).length).toBe(1);
    // /health stays open (a load balancer's probe is not locked out).
    expect((await raw(`${base}/health`, {})).status).toBe(200);
    const log = Buffer.concat(chunks).toString('utf8');
    expect(log).toMatch(/failed authentications/);
    expect(log).not.toContain(guess);
    for (const sec of Object.values(roles.secret)) expect(log).not.toContain(sec);
  });

  it('a refused address cannot flood the audit trail (bad Host, bad Origin, more guesses: nothing more written)', async () => {
    const before = (await engine.store.auditEntries()).length;
    for (let i = 0; i < 30; i++) {
      expect((await raw(`${base}/health`, { headers: { host: 'attacker.example' } })).status).toBe(421);
      expect((await raw(`${base}/api/stats`, { headers: { origin: 'https://evil.example' } })).status).toBe(429);
      expect((await raw(`${base}/api/stats`, { headers: { authorization: 'Bearer ferry_abcd_x' } })).status).toBe(429);
    }
    expect((await engine.store.auditEntries()).length).toBe(before);
  });
});

describe('admin API fails closed on the audit trail', () => {
  it('a PHI read whose audit entry cannot be written is not answered', async () => {
    const roles = await roleTokens();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-failclosed-'));
    const file = path.join(dir, 'ferry.db');
    const store = new SqliteMessageStore({ path: file, logger: silentLogger(), busyTimeoutMs: 300 });
    const engine = await Engine.create({
      store,
      logger: silentLogger(),
      config: {
        processing: { transformWorkers: 0 },
        admin: { enabled: true, port: 0, auth: { tokens: roles.tokens } },
      },
    });
    await engine.start();
    const other = new Database(file);
    try {
      const patient = {
        resourceType: 'Patient',
        id: 'p1',
        identifier: [{ system: 'urn:mrn', value: 'MRN-FAILCLOSED-7' }],
        name: [{ family: 'Closed' }],
      };
      const [{ id }] = await engine.submit('api', [
        { contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(patient)) },
      ]);
      await engine.waitForIdle();
      const read = () =>
        fetch(`${engine.adminUrl}/api/messages/${id}?body=true`, { headers: roles.auth('phi-reader') });
      // Another process holds the store's write lock: the audit entry cannot be appended.
      other.prepare('BEGIN IMMEDIATE').run();
      const refused = await read();
      const text = await refused.text();
      expect(refused.status).toBe(503);
      expect(text).not.toContain('MRN-FAILCLOSED-7');
      other.prepare('ROLLBACK').run();
      const ok = await read();
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('MRN-FAILCLOSED-7');
      expect((await engine.store.auditEntries({ action: 'message.body.read' })).length).toBe(1);
    } finally {
      if (other.inTransaction) other.prepare('ROLLBACK').run();
      other.close();
      await engine.stop();
      await store.close();
    }
  });
});
