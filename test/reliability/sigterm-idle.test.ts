/**
 * Proof: SIGTERM always stops the engine cleanly, whatever clients hold open. A real `ferry start`
 * (the built CLI) with the admin API, an HTTP intake and an MLLP listener; idle keep-alive
 * connections, connections that never sent a request and a half-sent request on the admin and
 * intake ports, idle MLLP connections; a message in flight when the signal comes. The engine must
 * exit 0 well within 10 s, log "engine stopped", close the store (no -wal left) and remove its pid
 * file -- and whatever it acknowledged is in the store.
 *
 * Only /health (always open) and raw TCP are used on the admin port, so this holds once the admin
 * API needs authentication.
 */
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { requires } from '../support/requires';
import { adt, cliBuilt, freePort, killHard, startEngine, type EngineProcess } from './support';

// A visible skip locally, a failure in CI, when the build is missing.
const d = requires(cliBuilt);

function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function get(port: number, p: string, agent: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      })
      .on('error', reject);
  });
}

function post(port: number, body: string, agent: http.Agent | false): Promise<number | string> {
  return new Promise((resolve) => {
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
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        },
      )
      .on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
      .end(body);
  });
}

d('SIGTERM with idle connections on every port', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-sigterm-'));
  const db = path.join(dir, 'ferry.db');
  let engine: EngineProcess | undefined;
  const sockets: net.Socket[] = [];

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    if (engine) await killHard(engine);
    rmSync(dir, { recursive: true, force: true });
  });

  it('exits 0 well within 10 s, logs "engine stopped", closes the store and removes the pid file', async () => {
    const [adminPort, httpPort, mllpPort] = [await freePort(), await freePort(), await freePort()];
    const cfg = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      [
        `store: { kind: sqlite, path: ${db} }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        `admin: { enabled: true, host: 127.0.0.1, port: ${adminPort} }`,
        'processing: { pollIntervalMs: 100, transformWorkers: 0 }',
        'sources:',
        `  mllp: { type: mllp, host: 127.0.0.1, port: ${mllpPort} }`,
        `  intake: { type: http, host: 127.0.0.1, port: ${httpPort} }`,
        'sinks:',
        `  out: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson }`,
        'routes:',
        '  - { id: all, to: [out] }',
        '',
      ].join('\n'),
    );
    engine = await startEngine(cfg, dir, /engine started/, 30_000);
    expect(existsSync(`${db}-engine.pid`)).toBe(true);

    // admin: a keep-alive connection after GET /health, one that never sent a request, one half-sent
    const adminAgent = new http.Agent({ keepAlive: true });
    expect(await get(adminPort, '/health', adminAgent)).toBe(200);
    // intake: a keep-alive connection after a stored message, the same two kinds
    const intakeAgent = new http.Agent({ keepAlive: true });
    expect(await post(httpPort, adt('SIG-1', 'M1', 1), intakeAgent)).toBe(202);
    for (const port of [adminPort, httpPort]) {
      sockets.push(await open(port));
      const half = await open(port);
      half.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      sockets.push(half);
    }
    // MLLP: one connection that never sent, one idle after an AA
    sockets.push(await open(mllpPort));
    const mllp = await open(mllpPort);
    sockets.push(mllp);
    const acked = new Promise<string>((r) => mllp.once('data', (b) => r(b.toString('latin1'))));
    mllp.write(
      Buffer.concat([Buffer.from([0x0b]), Buffer.from(adt('SIG-2', 'M2', 2), 'latin1'), Buffer.from([0x1c, 0x0d])]),
    );
    expect(await acked).toMatch(/MSA\|AA\|SIG-2/);
    for (const s of sockets) s.on('error', () => undefined);

    // a message in flight when the signal comes: whatever it is answered, a 202 means stored
    const inFlight = post(httpPort, adt('SIG-3', 'M3', 3), false);
    const t0 = Date.now();
    engine.child.kill('SIGTERM');
    const code = await engine.exited;
    const ms = Date.now() - t0;
    console.log(`ferry start exited ${code} ${ms} ms after SIGTERM with 7 idle or half-open connections on 3 ports`);
    const last = await inFlight;
    adminAgent.destroy();
    intakeAgent.destroy();

    expect(code).toBe(0);
    expect(ms).toBeLessThan(5000);
    const log = engine.log();
    expect(log).toMatch(/"message":"engine stopped"/);
    expect(log).not.toMatch(/shutdown took longer/);
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(existsSync(`${db}-engine.pid`)).toBe(false);

    const conn = new Database(db, { readonly: true });
    try {
      const ids = (conn.prepare(`SELECT headers FROM messages`).all() as { headers: string }[]).map(
        (r) => JSON.parse(r.headers).controlId as string,
      );
      expect(ids).toEqual(expect.arrayContaining(['SIG-1', 'SIG-2']));
      // The in-flight message: whatever else it was answered (refused, connection closed), a 202 means stored.
      expect({ answered202: last === 202, stored: ids.includes('SIG-3') }).not.toEqual({
        answered202: true,
        stored: false,
      });
    } finally {
      conn.close();
    }
  }, 60_000);
  it('a sink that never answers does not hold the stop: its call is given up on after 4 s, recorded failed (made again later), exit 0', async () => {
    const hungDir = mkdtempSync(path.join(os.tmpdir(), 'ferry-sigterm-hung-'));
    const hungDb = path.join(hungDir, 'ferry.db');
    // a receiver that takes the request and never answers
    let got = 0;
    const held: http.ServerResponse[] = [];
    const receiver = http.createServer((_req, res) => {
      got++;
      held.push(res);
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const mllpPort = await freePort();
    const cfg = path.join(hungDir, 'ferry.yaml');
    writeFileSync(
      cfg,
      [
        `store: { kind: sqlite, path: ${hungDb} }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        'admin: { enabled: false }',
        'processing: { pollIntervalMs: 100, transformWorkers: 0 }',
        'sources:',
        `  mllp: { type: mllp, host: 127.0.0.1, port: ${mllpPort} }`,
        'sinks:',
        `  slow: { type: http, url: 'http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}/in', timeoutMs: 600000 }`,
        'routes:',
        '  - { id: all, to: [slow] }',
        '',
      ].join('\n'),
    );
    const p = await startEngine(cfg, hungDir, /engine started/, 30_000);
    try {
      const s = await open(mllpPort);
      sockets.push(s);
      s.on('error', () => undefined);
      const acked = new Promise<string>((r) => s.once('data', (b) => r(b.toString('latin1'))));
      s.write(
        Buffer.concat([Buffer.from([0x0b]), Buffer.from(adt('HUNG-1', 'M9', 9), 'latin1'), Buffer.from([0x1c, 0x0d])]),
      );
      expect(await acked).toMatch(/MSA\|AA\|HUNG-1/);
      const deadline = Date.now() + 20_000;
      while (!got && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(got).toBe(1);
      const t0 = Date.now();
      p.child.kill('SIGTERM');
      const code = await p.exited;
      const ms = Date.now() - t0;
      console.log(`ferry start exited ${code} ${ms} ms after SIGTERM with a sink call that never returns`);
      expect(code).toBe(0);
      expect(ms).toBeLessThan(9000);
      expect(p.log()).toMatch(/sink calls still under way are given up on/);
      expect(p.log()).toMatch(/"message":"engine stopped"/);
      expect(existsSync(`${hungDb}-wal`)).toBe(false);
      const conn = new Database(hungDb, { readonly: true });
      try {
        const rows = conn.prepare(`SELECT status, attempts FROM deliveries`).all() as {
          status: string;
          attempts: number;
        }[];
        expect(rows).toEqual([{ status: 'failed', attempts: 1 }]);
      } finally {
        conn.close();
      }
    } finally {
      await killHard(p);
      for (const r of held) r.destroy();
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
      rmSync(hungDir, { recursive: true, force: true });
    }
  }, 60_000);
});
