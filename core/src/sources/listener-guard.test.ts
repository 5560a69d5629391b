import net from 'node:net';
import { Writable } from 'node:stream';
import { createLogger } from '../logging/logger';
import { addressAllowed, allowList, cidrListFormat, ListenerGuard, normalizeAddress } from './listener-guard';

/** A logger whose JSON lines are kept. */
function recordingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    }),
  );
  return { logger, lines };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('allowlist parsing and matching', () => {
  it('accepts addresses and CIDR blocks, IPv4 and IPv6; refuses anything else', () => {
    expect(() =>
      cidrListFormat(['10.0.0.0/8', '192.0.2.7', '::1', 'fd00::/8', '::ffff:10.0.0.0/104', '0.0.0.0/0']),
    ).not.toThrow();
    expect(() => cidrListFormat('10.0.0.0/8')).toThrow(/list/);
    expect(() => cidrListFormat(['10.0.0.0/33'])).toThrow(/0..32/);
    expect(() => cidrListFormat(['fd00::/129'])).toThrow(/0..128/);
    expect(() => cidrListFormat(['10.0.0.0/x'])).toThrow(/prefix/);
    expect(() => cidrListFormat(['host.example'])).toThrow(/not an IP address/);
    expect(() => cidrListFormat(['10.0.0.1/8/2'])).toThrow(/not an IP address/);
  });

  it('matches IPv4, IPv6 and IPv4-mapped IPv6 client addresses', () => {
    const l = allowList(['10.20.0.0/16', 'fd00::/8']);
    expect(addressAllowed(l, '10.20.3.4')).toBe(true);
    expect(addressAllowed(l, '::ffff:10.20.3.4')).toBe(true);
    expect(addressAllowed(l, '10.21.0.1')).toBe(false);
    expect(addressAllowed(l, 'fd12::1')).toBe(true);
    expect(addressAllowed(l, 'fe80::1')).toBe(false);
    expect(addressAllowed(l, undefined)).toBe(false);
    // a mapped rule matches a plain IPv4 client too
    expect(addressAllowed(allowList(['::ffff:10.0.0.0/104']), '10.9.9.9')).toBe(true);
    expect(addressAllowed(undefined, '203.0.113.9')).toBe(true);
    expect(normalizeAddress('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeAddress('::1')).toBe('::1');
  });
});

describe('ListenerGuard on real sockets', () => {
  const servers: net.Server[] = [];
  const clients: net.Socket[] = [];
  afterAll(async () => {
    for (const c of clients) c.destroy();
    for (const s of servers) await new Promise((r) => s.close(r));
  });

  async function serve(guard: ListenerGuard): Promise<number> {
    const server = net.createServer((s) => {
      s.on('error', () => undefined);
      s.on('data', () => guard.started(s));
    });
    server.on('connection', (raw) => guard.admit(raw));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return (server.address() as net.AddressInfo).port;
  }
  const connect = (port: number, localAddress?: string) =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(s));
      s.on('error', () => undefined);
      s.once('error', reject);
      clients.push(s);
    });
  const closedSoon = (s: net.Socket, ms = 2000) =>
    new Promise<boolean>((r) => {
      if (s.destroyed) return r(true);
      const t = setTimeout(() => r(false), ms);
      s.once('close', () => {
        clearTimeout(t);
        r(true);
      });
    });

  it('caps per address and in total, times out silent connections, and logs refusals once per interval with counts', async () => {
    const { logger, lines } = recordingLogger();
    const guard = new ListenerGuard(
      {
        kind: 'test',
        base: { source: 'g' },
        maxConnections: 5,
        maxConnectionsPerAddress: 2,
        firstDataTimeoutMs: 400,
        summaryEveryMs: 300,
      },
      logger,
    );
    const port = await serve(guard);
    const a = await Promise.all([connect(port), connect(port), connect(port), connect(port)]);
    const closed = await Promise.all(a.map((s) => closedSoon(s, 200)));
    expect(closed.filter(Boolean)).toHaveLength(2); // two of 127.0.0.1's four refused
    const b = await Promise.all([connect(port, '127.0.0.2'), connect(port, '127.0.0.3'), connect(port, '127.0.0.3')]);
    await sleep(50);
    expect(guard.connections).toBe(5);
    const over = await connect(port, '127.0.0.4');
    expect(await closedSoon(over)).toBe(true); // total limit
    expect(guard.stats()).toMatchObject({
      connectionsRefused: 3,
      connectionsRefusedPerAddress: 2,
      connectionsRefusedLimit: 1,
      connectionAddresses: 3,
    });

    // one of them sends: it outlives the first-data timeout; the silent ones do not
    b[0].write('hello');
    await sleep(600);
    expect(b[0].destroyed).toBe(false);

    const refusedLines = lines.filter((l) => l.message === 'test connection refused');
    expect(refusedLines).toHaveLength(1);
    expect(refusedLines[0]).toMatchObject({
      level: 'warn',
      source: 'g',
      reason: 'perAddress',
      remoteAddress: '127.0.0.1',
    });
    const summaries = () => lines.filter((l) => l.message === 'test connections refused or closed (summary)');
    const sum = (k: string) => summaries().reduce((n, l) => n + ((l.byReason as Record<string, number>)[k] ?? 0), 0);
    // the last events reach the log with the next summary (every 300 ms): wait for it, not for a fixed time
    for (let waited = 0; sum('firstDataTimeout') < 4 && waited < 5000; waited += 50) await sleep(50);
    expect(guard.stats().connectionsClosedFirstDataTimeout).toBe(4);
    expect(summaries().length).toBeGreaterThanOrEqual(1);
    // every event after the first is in a summary: 1 more perAddress, 1 limit, 4 timeouts
    expect(sum('perAddress')).toBe(1);
    expect(sum('limit')).toBe(1);
    expect(sum('firstDataTimeout')).toBe(4);

    // after a quiet interval the next refusal is logged at once again
    await sleep(700);
    const before = lines.length;
    guard.close();
    const again = new ListenerGuard(
      {
        kind: 'test',
        base: {},
        maxConnections: 0,
        maxConnectionsPerAddress: 0,
        firstDataTimeoutMs: 0,
        summaryEveryMs: 300,
      },
      logger,
    );
    const port2 = await serve(again);
    expect(await closedSoon(await connect(port2))).toBe(true);
    expect(lines.slice(before).filter((l) => l.message === 'test connection refused')).toHaveLength(1);
    again.close();
  });
});
