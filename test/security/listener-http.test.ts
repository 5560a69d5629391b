/**
 * The HTTP intake cannot be locked out, and bad input on its port does not stop it serving: a
 * real engine (SQLite store, 202 only after commit) with a `type: http` source, real sockets, a
 * "normal sender" on 127.0.0.2 next to a misbehaving client on 127.0.0.1.
 */
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Engine, type HttpSource } from '@ferry/core';
import { hashToken, newTokenSecret } from '../../core/src/admin/tokens';
import { countingLogger, sleep, waitFor } from '../reliability/support';

const adt = (ctl: string) =>
  [
    `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|${ctl}|P|2.5.1`,
    'EVN|A01|20240101120000',
    'PID|1||12345^^^HOSP^MR||DOE^JANE||19800101|F',
  ].join('\r') + '\r';

function open(port: number, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** One request on a fresh connection (no agent); status, body and the time it took, or an error code. */
function request(
  port: number,
  opts: {
    method?: string;
    path?: string;
    body?: string | Buffer;
    localAddress?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<{ status: number | string; body: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: opts.method ?? 'POST',
        path: opts.path ?? '/messages',
        localAddress: opts.localAddress,
        agent: false,
        headers: { 'content-type': 'application/hl7-v2', ...opts.headers },
        timeout: 5000,
      },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body, ms: performance.now() - t0 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      resolve({ status: e.code ?? e.message, body: '', ms: performance.now() - t0 }),
    );
    req.end(opts.body);
  });
}

/** Raw bytes on a new connection; what came back before the server closed it (or `waitMs` passed). */
async function raw(port: number, bytes: string | Buffer, waitMs = 2000): Promise<{ answer: string; closed: boolean }> {
  const s = await open(port);
  s.on('error', () => undefined);
  let answer = '';
  s.on('data', (d) => (answer += d.toString('latin1')));
  const closed = new Promise<boolean>((r) => {
    const t = setTimeout(() => r(false), waitMs);
    s.once('close', () => {
      clearTimeout(t);
      r(true);
    });
  });
  s.write(bytes);
  const c = await closed;
  s.destroy();
  return { answer, closed: c };
}

function config(dir: string, source: Record<string, unknown> = {}) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { pollIntervalMs: 50, transformWorkers: 0 },
    // /metrics opened to scrapers by the explicit setting (the rest of the admin API needs a token)
    admin: { enabled: true, host: '127.0.0.1', port: 0, metricsPublic: true },
    sources: { intake: { type: 'http', host: '127.0.0.1', port: 0, bodyLimit: 64 * 1024, ...source } },
    sinks: { archive: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
    routes: [{ id: 'all', from: ['intake'], to: ['archive'] }],
  };
}

describe('HTTP intake hardening (security)', () => {
  const engines: Engine[] = [];
  const sockets: net.Socket[] = [];
  const start = async (source: Record<string, unknown> = {}) => {
    const counting = countingLogger();
    const e = await Engine.create({
      config: config(mkdtempSync(path.join(os.tmpdir(), 'ferry-sec-http-')), source),
      logger: counting.logger,
    });
    engines.push(e);
    await e.start();
    const src = e.source<HttpSource>('intake')!;
    return { e, src, port: src.port, logs: counting.logs };
  };
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const e of engines.splice(0)) await e.stop();
  });

  it('500 idle connections from one address: a sender on another address gets 202 within 1 s while they are open', async () => {
    const { e, src, port, logs } = await start();
    const alive = new Set<net.Socket>();
    for (let i = 0; i < 500; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => open(port).catch(() => undefined)));
      for (const s of batch) {
        if (!s) continue;
        sockets.push(s);
        s.on('error', () => undefined);
        if (!s.destroyed) alive.add(s);
        s.once('close', () => alive.delete(s));
      }
    }
    await waitFor('480 refusals', () => src.stats()!.connectionsRefusedPerAddress === 480, 10_000);
    await waitFor('the refused sockets closed', () => alive.size === 20, 5000);
    const r = await request(port, { body: adt('H1'), localAddress: '127.0.0.2' });
    console.log(
      `202 for the sender on 127.0.0.2 with 500 idle connections from 127.0.0.1 tried (20 held open): ${r.ms.toFixed(1)} ms`,
    );
    expect(r.status).toBe(202);
    expect(r.ms).toBeLessThan(1000);
    expect(alive.size).toBe(20);
    expect(logs['warn http connection refused']).toBe(1);
    const metrics = await (await fetch(`${e.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/ferry_source_stat\{source="intake",stat="connectionsRefusedPerAddress"\} 480/);
  }, 60_000);

  it('closes a connection that sends no request, or its head too slowly (slowloris), after firstRequestTimeoutMs', async () => {
    const { src, port } = await start({ firstRequestTimeoutMs: 300 });
    const silent = await raw(port, Buffer.alloc(0), 3000);
    expect(silent.closed).toBe(true);
    const s = await open(port);
    sockets.push(s);
    s.on('error', () => undefined);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const head = `POST /messages HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(100)}\r\n`;
    for (let i = 0; i < head.length && !s.destroyed; i++) {
      s.write(head[i]);
      await sleep(20);
    }
    await closed;
    expect(src.stats()!.connectionsClosedFirstDataTimeout).toBe(2);
    expect((await request(port, { body: adt('H2'), localAddress: '127.0.0.2' })).status).toBe(202);
  }, 20_000);

  it('probes: malformed, oversized and path-traversal requests get 4xx; the normal sender keeps getting 202', async () => {
    const { port } = await start();
    const garbage = await raw(port, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage.answer).toMatch(/^HTTP\/1\.1 400/);
    const hugeHeader = await raw(port, `POST /messages HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(hugeHeader.answer).toMatch(/^HTTP\/1\.1 431/);
    expect((await request(port, { body: Buffer.alloc(100 * 1024, 0x41) })).status).toBe(413);
    const lying = await raw(
      port,
      `POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\nContent-Length: 999999999\r\n\r\nMSH|`,
    );
    expect(lying.answer).toMatch(/^HTTP\/1\.1 413/);
    const smuggle = await raw(
      port,
      'POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    );
    expect(smuggle.answer).toMatch(/^HTTP\/1\.1 400/);
    for (const p of [
      '/../../../../etc/passwd',
      '/messages/../../etc/passwd',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/..%2f..%2fetc%2fpasswd',
      '//etc/passwd',
      '/messages%00.txt',
    ]) {
      for (const method of ['GET', 'POST']) {
        const r = await request(port, { method, path: p, body: method === 'POST' ? adt('TRAV') : undefined });
        expect([400, 404, 405]).toContain(r.status);
        expect(r.body).not.toMatch(/root:/);
      }
    }
    for (let i = 0; i < 3; i++)
      expect((await request(port, { body: adt(`OK${i}`), localAddress: '127.0.0.2' })).status).toBe(202);
    const stored = await engines[0].store.listMessages({ sourceId: 'intake', limit: 100 });
    expect(stored.map((m) => m.headers.controlId).sort()).toEqual(['OK0', 'OK1', 'OK2']);
  }, 30_000);

  it('allowlist: a client outside the listed blocks is closed on accept', async () => {
    const { src, port } = await start({ allow: ['127.0.0.2'] });
    expect(typeof (await request(port, { body: adt('A1') })).status).toBe('string');
    expect((await request(port, { body: adt('A2'), localAddress: '127.0.0.2' })).status).toBe(202);
    expect(src.stats()!.connectionsRefusedNotAllowed).toBe(1);
  });

  it('tokens from the YAML-shaped config: only salted hashes configured; the secret as bearer gets 202, anything else 401', async () => {
    const lab = newTokenSecret();
    const { port, logs } = await start({
      tokens: [{ id: lab.id, name: 'lab-system', roles: ['operator'], hash: await hashToken(lab.secret) }],
    });
    expect((await request(port, { body: adt('TK1') })).status).toBe(401);
    expect((await request(port, { body: adt('TK2'), headers: { authorization: `bearer ${lab.secret}` } })).status).toBe(
      202,
    );
    expect(
      logs[
        'warn http source accepts messages from any client that can reach its port: set tokens, token or mutual TLS'
      ],
    ).toBeUndefined();
    await expect(
      Engine.create({ config: config(os.tmpdir(), { tokens: [{ id: lab.id, name: 'x', hash: lab.secret }] }) }),
    ).rejects.toThrow(/scrypt/);
  });

  it('an intake without tokens or mutual TLS says so at start (warn)', async () => {
    const { logs } = await start();
    expect(
      logs[
        'warn http source accepts messages from any client that can reach its port: set tokens, token or mutual TLS'
      ],
    ).toBe(1);
  });

  it('stop is not held up by idle, silent or half-sent connections', async () => {
    const { e, port } = await start();
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((r) =>
      http
        .request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/messages',
            agent,
            headers: { 'content-type': 'application/hl7-v2' },
          },
          (res) => res.resume().on('end', () => r()),
        )
        .end(adt('KA1')),
    );
    const silent = await open(port);
    const half = await open(port);
    half.write('POST /messages HTTP/1.1\r\nHost: x\r\n');
    for (const s of [silent, half]) {
      sockets.push(s);
      s.on('error', () => undefined);
    }
    const t0 = Date.now();
    await e.stop();
    engines.splice(0);
    agent.destroy();
    console.log(`engine stop with 3 idle connections on the HTTP intake: ${Date.now() - t0} ms`);
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});
