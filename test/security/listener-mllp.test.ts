/**
 * The MLLP listener cannot be locked out, and bad input on its port does not stop it serving: a
 * real engine (SQLite store, AA only after commit) with the `mllp` source at its defaults, real
 * sockets, a "normal sender" on another loopback address (127.0.0.2) next to a misbehaving one
 * on 127.0.0.1.
 */
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '@ferry/core';
import { MllpDeframer, readAck, type MllpSource } from '@ferry/plugin-hl7v2-mllp';
import { countingLogger, sleep, waitFor } from '../reliability/support';

const VT = Buffer.from([0x0b]);
const END = Buffer.from([0x1c, 0x0d]);
const frame = (s: string | Buffer) => Buffer.concat([VT, Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1'), END]);
const adt = (ctl: string) =>
  [
    `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|${ctl}|P|2.5.1`,
    'EVN|A01|20240101120000',
    'PID|1||12345^^^HOSP^MR||DOE^JANE||19800101|F',
  ].join('\r') + '\r';

/** Connects (optionally from `localAddress`); resolves with the socket once connected. */
function open(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: opts.host ?? '127.0.0.1', localAddress: opts.localAddress });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends one message on a new connection from `localAddress`; resolves with the ACK code and the time it took, or 'closed'. */
async function sendOne(
  port: number,
  ctl: string,
  opts: { host?: string; localAddress?: string } = {},
): Promise<{ code: string; ms: number }> {
  const t0 = performance.now();
  let s: net.Socket;
  try {
    s = await open(port, opts);
  } catch {
    return { code: 'refused', ms: performance.now() - t0 };
  }
  s.on('error', () => undefined);
  const d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  try {
    return await new Promise((resolve) => {
      const t = setTimeout(() => resolve({ code: 'timeout', ms: performance.now() - t0 }), 5000);
      s.on('data', (b) => {
        for (const ev of d.push(b))
          if (ev.kind === 'frame') {
            clearTimeout(t);
            resolve({ code: readAck(ev.payload.toString('latin1'))?.code ?? 'unreadable', ms: performance.now() - t0 });
          }
      });
      s.once('close', () => {
        clearTimeout(t);
        resolve({ code: 'closed', ms: performance.now() - t0 });
      });
      s.write(frame(adt(ctl)));
    });
  } finally {
    s.destroy();
  }
}

function config(dir: string, source: Record<string, unknown> = {}) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { pollIntervalMs: 50, transformWorkers: 0 },
    // /metrics opened to scrapers by the explicit setting (the rest of the admin API needs a token)
    admin: { enabled: true, host: '127.0.0.1', port: 0, metricsPublic: true },
    sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0, ...source } },
    sinks: { archive: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
    routes: [{ id: 'adt', from: ['feed'], to: ['archive'] }],
  };
}

describe('MLLP listener hardening (security)', () => {
  const engines: Engine[] = [];
  const sockets: net.Socket[] = [];
  const start = async (source: Record<string, unknown> = {}) => {
    const counting = countingLogger();
    const e = await Engine.create({
      config: config(mkdtempSync(path.join(os.tmpdir(), 'ferry-sec-mllp-')), source),
      logger: counting.logger,
    });
    engines.push(e);
    await e.start();
    const src = e.source<MllpSource>('feed')!;
    return { e, src, port: src.address()!.port, logs: counting.logs };
  };
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const e of engines.splice(0)) await e.stop();
  });

  /** `n` connections from 127.0.0.1 that never send; those the listener keeps stay open. */
  async function flood(port: number, n: number): Promise<{ open: () => number }> {
    const alive = new Set<net.Socket>();
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, n - i) }, () =>
          open(port).then(
            (s) => s,
            () => undefined,
          ),
        ),
      );
      for (const s of batch) {
        if (!s) continue;
        sockets.push(s);
        s.on('error', () => undefined);
        if (!s.destroyed) alive.add(s);
        s.once('close', () => alive.delete(s));
      }
    }
    return { open: () => alive.size };
  }

  it('500 idle connections from one address: a sender on another address gets AA within 1 s while they are open', async () => {
    const { e, src, port, logs } = await start();
    const { open: stillOpen } = await flood(port, 500);
    // the listener keeps maxConnectionsPerAddress (20) of them and refuses the other 480 on accept
    await waitFor('480 refusals', () => src.stats()!.connectionsRefusedPerAddress === 480, 10_000);
    await waitFor('the refused sockets closed', () => stillOpen() === 20, 5000);

    const r = await sendOne(port, 'LOCK1', { localAddress: '127.0.0.2' });
    console.log(
      `AA for the sender on 127.0.0.2 with 500 idle connections from 127.0.0.1 tried (20 held open): ${r.ms.toFixed(1)} ms`,
    );
    expect(r.code).toBe('AA');
    expect(r.ms).toBeLessThan(1000);
    // logically: AA came while the 20 idle connections were still held
    expect(stillOpen()).toBe(20);
    await waitFor('the sender gone: one address connected', () => src.stats()!.connectionAddresses === 1, 2000);

    // 480 refusals: one warn line at the first, the rest counted for the summary (one a minute), not 480 lines
    expect(logs['warn mllp connection refused']).toBe(1);
    expect(logs['warn mllp connections refused or closed (summary)'] ?? 0).toBeLessThanOrEqual(1);
    const metrics = await (await fetch(`${e.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/ferry_source_stat\{source="feed",stat="connectionsRefusedPerAddress"\} 480/);
    expect(metrics).toMatch(/ferry_source_stat\{source="feed",stat="connectionsRefused"\} 480/);
  }, 60_000);

  it('without the per-address cap (0) the same flood locks the other sender out: what the cap prevents', async () => {
    const { src, port } = await start({ maxConnectionsPerAddress: 0 });
    await flood(port, 500);
    await waitFor('300 refusals', () => src.stats()!.connectionsRefusedLimit === 300, 10_000);
    const r = await sendOne(port, 'LOCK2', { localAddress: '127.0.0.2' });
    expect(r.code).toBe('closed');
  }, 60_000);

  it('closes a connection that never starts a frame after firstFrameTimeoutMs; a sending one stays', async () => {
    const { src, port, logs } = await start({ firstFrameTimeoutMs: 300, idleTimeoutMs: 0 });
    const silent = await open(port);
    sockets.push(silent);
    silent.on('error', () => undefined);
    const closed = new Promise<number>((r) => {
      const t0 = Date.now();
      silent.once('close', () => r(Date.now() - t0));
    });
    const talker = await open(port, { localAddress: '127.0.0.2' });
    sockets.push(talker);
    talker.write(frame(adt('FF1')));
    const ms = await closed;
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(3000);
    await sleep(400);
    expect(talker.destroyed).toBe(false);
    expect(src.stats()!.connectionsClosedFirstDataTimeout).toBe(1);
    expect(logs['info mllp connection closed']).toBe(1);
  });

  it('allowlist: only listed CIDR blocks connect (IPv4, IPv4-mapped on a dual-stack listener, IPv6)', async () => {
    const { src, port } = await start({ allow: ['127.0.0.2/32'] });
    expect((await sendOne(port, 'AL1')).code).toBe('closed');
    expect((await sendOne(port, 'AL2', { localAddress: '127.0.0.2' })).code).toBe('AA');
    expect(src.stats()!.connectionsRefusedNotAllowed).toBe(1);

    // a dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1: an IPv4 block still matches it
    const dual = await start({ host: '::', allow: ['127.0.0.0/8'] });
    expect((await sendOne(dual.port, 'AL3')).code).toBe('AA');
    expect((await sendOne(dual.port, 'AL4', { host: '::1' })).code).toBe('closed');
    const v6 = await start({ host: '::', allow: ['::1/128'] });
    expect((await sendOne(v6.port, 'AL5', { host: '::1' })).code).toBe('AA');
    expect((await sendOne(v6.port, 'AL6')).code).toBe('closed');
  });

  it('an allowlist entry that is not an address or CIDR block is a config error', async () => {
    await expect(Engine.create({ config: config(os.tmpdir(), { allow: ['10.0.0.0/33'] }) })).rejects.toThrow(
      /prefix length must be 0..32/,
    );
    await expect(Engine.create({ config: config(os.tmpdir(), { allow: ['intranet'] }) })).rejects.toThrow(
      /not an IP address or CIDR block/,
    );
  });

  it('probes: junk, unterminated, oversized and slowloris frames on 127.0.0.1 while 127.0.0.2 keeps getting AA', async () => {
    const { src, port } = await start({ maxMessageSize: 64 * 1024, frameTimeoutMs: 500 });
    const probes: Promise<unknown>[] = [];
    const probe = async (fn: (s: net.Socket) => Promise<void> | void) => {
      const s = await open(port);
      sockets.push(s);
      s.on('error', () => undefined);
      s.on('data', () => undefined);
      probes.push(Promise.resolve(fn(s)));
    };
    // bytes outside any frame, binary noise, a start block never ended, a frame over maxMessageSize,
    // an HTTP request on the MLLP port, a slowloris frame one byte every 50 ms
    await probe((s) => void s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')));
    await probe((s) => void s.write(Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))));
    await probe((s) => void s.write(Buffer.concat([VT, Buffer.from('MSH|^~\\&|A|B')])));
    await probe((s) => void s.write(frame(adt('BIG') + 'NTE|1||' + 'x'.repeat(200 * 1024) + '\r')));
    await probe((s) => void s.write(frame('NOT HL7 AT ALL')));
    await probe(async (s) => {
      const f = frame(adt('SLOW'));
      for (let i = 0; i < f.length && !s.destroyed; i++) {
        s.write(f.subarray(i, i + 1));
        await sleep(50);
      }
    });
    for (let i = 0; i < 5; i++) {
      const r = await sendOne(port, `OK${i}`, { localAddress: '127.0.0.2' });
      expect(r.code).toBe('AA');
      await sleep(150);
    }
    await Promise.all(probes);
    const st = src.stats()!;
    expect(st.oversizedFrames).toBe(1);
    expect(st.junkBytes).toBeGreaterThan(0);
    // the slowloris frame was cut off by frameTimeoutMs, never stored
    const stored = await engines[0].store.listMessages({ sourceId: 'feed', limit: 100 });
    expect(stored.map((m) => m.headers.controlId).sort()).toEqual(['OK0', 'OK1', 'OK2', 'OK3', 'OK4']);
  }, 30_000);
});
