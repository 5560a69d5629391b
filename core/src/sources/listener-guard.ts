import net from 'node:net';
import type { Logger } from '../plugin/api';

/**
 * Connection admission for a listening source (MLLP, HTTP): an optional CIDR allowlist, a total
 * and a per-remote-address connection cap, and a first-data timeout for connections that never
 * send. Refusals and timeouts are counted (the source's stats, on /metrics as ferry_source_stat)
 * and logged at most once per `summaryEveryMs` as one summary line with counts -- a client
 * opening thousands of connections must not flood the log.
 */

/** A convict `format` for an allowlist: IPv4 / IPv6 addresses or CIDR blocks (`10.0.0.0/8`, `fd00::/8`). */
export function cidrListFormat(v: unknown): void {
  if (!Array.isArray(v)) throw new Error('must be a list of IP addresses or CIDR blocks, e.g. [10.0.0.0/8, "::1"]');
  for (const item of v) parseCidr(item);
}

function parseCidr(item: unknown): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } {
  if (typeof item !== 'string') throw new Error(`${JSON.stringify(item)} is not an IP address or CIDR block`);
  const [address, bits, ...extra] = item.trim().split('/');
  const v = net.isIP(address);
  if (!v || extra.length) throw new Error(`"${item}" is not an IP address or CIDR block`);
  const max = v === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!/^\d+$/.test(bits ?? String(max)) || prefix > max) throw new Error(`"${item}": prefix length must be 0..${max}`);
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** The allowlist as a BlockList (matched, not blocked); undefined = every address allowed. */
export function allowList(list: readonly string[] | undefined): net.BlockList | undefined {
  if (!list?.length) return undefined;
  const b = new net.BlockList();
  for (const item of list) {
    const c = parseCidr(item);
    b.addSubnet(c.address, c.prefix, c.family);
  }
  return b;
}

/** `::ffff:10.1.2.3` (an IPv4 client on a dual-stack socket) as `10.1.2.3`; other addresses as they are. */
export function normalizeAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1] : address;
}

export function addressAllowed(list: net.BlockList | undefined, address: string | undefined): boolean {
  if (!list) return true;
  if (!address) return false;
  const a = normalizeAddress(address);
  const family = net.isIPv4(a) ? 'ipv4' : 'ipv6';
  if (list.check(a, family)) return true;
  // an IPv4 client may also be matched by an IPv4-mapped IPv6 rule (::ffff:10.0.0.0/104)
  return family === 'ipv4' && list.check(`::ffff:${a}`, 'ipv6');
}

export type RefusalReason = 'limit' | 'perAddress' | 'notAllowed' | 'stopping';
export type CloseReason = 'firstDataTimeout' | 'idle';

export interface ListenerGuardOptions {
  /** For log lines: `mllp` or `http`. */
  kind: string;
  /** Fields added to every log line (e.g. the source id). */
  base: Record<string, unknown>;
  maxConnections: number;
  /** 0 = no per-address cap. */
  maxConnectionsPerAddress: number;
  /** A connection that has not started sending within this is closed (0 = never). */
  firstDataTimeoutMs: number;
  allow?: readonly string[];
  /** One summary log line at most this often (default one minute). */
  summaryEveryMs?: number;
}

export interface ListenerGuardStats {
  connectionsRefused: number;
  connectionsRefusedLimit: number;
  connectionsRefusedPerAddress: number;
  connectionsRefusedNotAllowed: number;
  connectionsClosedFirstDataTimeout: number;
  connectionsClosedIdle: number;
  /** Distinct remote addresses connected now. */
  connectionAddresses: number;
}

interface Tracked {
  address: string;
  timer?: NodeJS.Timeout;
}

export class ListenerGuard {
  private readonly allow?: net.BlockList;
  private readonly perAddress = new Map<string, number>();
  private readonly open = new Map<string, Tracked>();
  private total = 0;
  private readonly counts = { limit: 0, perAddress: 0, notAllowed: 0, stopping: 0, firstDataTimeout: 0, idle: 0 };
  /** Events since the last log line, by reason and by address. */
  private window?: { since: number; reasons: Record<string, number>; addresses: Map<string, number> };
  private summaryTimer?: NodeJS.Timeout;
  private readonly summaryEveryMs: number;

  constructor(
    private readonly opts: ListenerGuardOptions,
    private readonly logger: Logger,
  ) {
    this.allow = allowList(opts.allow);
    this.summaryEveryMs = opts.summaryEveryMs ?? 60_000;
  }

  /** Connections admitted and not yet closed. */
  get connections(): number {
    return this.total;
  }

  /**
   * For the server's `connection` event (the raw TCP socket, before any TLS handshake). Returns
   * false after destroying a refused socket; otherwise counts it until it closes.
   */
  admit(raw: net.Socket, stopping = false): boolean {
    const address = normalizeAddress(raw.remoteAddress);
    const reason: RefusalReason | undefined = stopping
      ? 'stopping'
      : !addressAllowed(this.allow, raw.remoteAddress)
        ? 'notAllowed'
        : this.total >= this.opts.maxConnections
          ? 'limit'
          : this.opts.maxConnectionsPerAddress > 0 &&
              (this.perAddress.get(address) ?? 0) >= this.opts.maxConnectionsPerAddress
            ? 'perAddress'
            : undefined;
    if (reason) {
      this.counts[reason] += 1;
      this.note(reason, address);
      raw.on('error', () => undefined);
      raw.destroy();
      return false;
    }
    const key = connKey(raw);
    const t: Tracked = { address };
    this.open.set(key, t);
    this.total += 1;
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    if (this.opts.firstDataTimeoutMs > 0) {
      t.timer = setTimeout(() => {
        t.timer = undefined;
        this.counts.firstDataTimeout += 1;
        this.note('firstDataTimeout', address);
        raw.destroy();
      }, this.opts.firstDataTimeoutMs);
      t.timer.unref();
    }
    raw.once('close', () => {
      if (t.timer) clearTimeout(t.timer);
      this.open.delete(key);
      this.total -= 1;
      const n = (this.perAddress.get(address) ?? 1) - 1;
      if (n > 0) this.perAddress.set(address, n);
      else this.perAddress.delete(address);
    });
    return true;
  }

  /** The connection (raw socket or the TLS socket over it) started sending: its first-data clock stops. */
  started(socket: net.Socket): void {
    const t = this.open.get(connKey(socket));
    if (t?.timer) {
      clearTimeout(t.timer);
      t.timer = undefined;
    }
  }

  /** The source closed a connection for a reason of its own (idle): counted and summarised like refusals. */
  closed(socket: net.Socket, reason: CloseReason): void {
    this.counts[reason] += 1;
    this.note(reason, normalizeAddress(socket.remoteAddress));
  }

  /**
   * Another refusal the source counts itself (a failed TLS handshake, a client certificate not
   * allowed): logged through the same summary, so it cannot flood the log either.
   */
  report(remoteAddress: string | undefined, reason: string): void {
    this.note(reason, normalizeAddress(remoteAddress));
  }

  static emptyStats(): ListenerGuardStats {
    return {
      connectionsRefused: 0,
      connectionsRefusedLimit: 0,
      connectionsRefusedPerAddress: 0,
      connectionsRefusedNotAllowed: 0,
      connectionsClosedFirstDataTimeout: 0,
      connectionsClosedIdle: 0,
      connectionAddresses: 0,
    };
  }

  stats(): ListenerGuardStats {
    const c = this.counts;
    return {
      connectionsRefused: c.limit + c.perAddress + c.notAllowed + c.stopping,
      connectionsRefusedLimit: c.limit,
      connectionsRefusedPerAddress: c.perAddress,
      connectionsRefusedNotAllowed: c.notAllowed,
      connectionsClosedFirstDataTimeout: c.firstDataTimeout,
      connectionsClosedIdle: c.idle,
      connectionAddresses: this.perAddress.size,
    };
  }

  /** Logs what is still unreported and stops the summary timer (on stop). */
  close(): void {
    if (this.summaryTimer) clearInterval(this.summaryTimer);
    this.summaryTimer = undefined;
    this.flush();
  }

  /**
   * The first event of a quiet period is logged at once (warn for a refusal, info for a timeout);
   * the ones after it are counted and told in one line per `summaryEveryMs` while they go on.
   */
  private note(reason: RefusalReason | CloseReason | string, address: string): void {
    const refused = reason !== 'firstDataTimeout' && reason !== 'idle';
    if (!this.window) {
      this.window = { since: Date.now(), reasons: {}, addresses: new Map() };
      this.logger[refused ? 'warn' : 'info'](
        refused ? `${this.opts.kind} connection refused` : `${this.opts.kind} connection closed`,
        {
          ...this.opts.base,
          reason,
          remoteAddress: address,
          ...(reason === 'limit' ? { maxConnections: this.opts.maxConnections } : {}),
          ...(reason === 'perAddress' ? { maxConnectionsPerAddress: this.opts.maxConnectionsPerAddress } : {}),
          ...(reason === 'firstDataTimeout' ? { firstDataTimeoutMs: this.opts.firstDataTimeoutMs } : {}),
          note: `further refusals and closes are counted and logged once per ${Math.round(this.summaryEveryMs / 1000)} s`,
        },
      );
      this.summaryTimer ??= setInterval(() => this.flush(), this.summaryEveryMs);
      this.summaryTimer.unref();
      return;
    }
    const w = this.window;
    w.reasons[reason] = (w.reasons[reason] ?? 0) + 1;
    w.addresses.set(address, (w.addresses.get(address) ?? 0) + 1);
  }

  private flush(): void {
    const w = this.window;
    if (!w) return;
    const n = Object.values(w.reasons).reduce((a, b) => a + b, 0);
    if (n === 0) {
      // a quiet interval: the next event is logged at once again
      this.window = undefined;
      if (this.summaryTimer) clearInterval(this.summaryTimer);
      this.summaryTimer = undefined;
      return;
    }
    const top = [...w.addresses.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
    const refusedAny = Object.keys(w.reasons).some((r) => r !== 'firstDataTimeout' && r !== 'idle');
    this.logger[refusedAny ? 'warn' : 'info'](`${this.opts.kind} connections refused or closed (summary)`, {
      ...this.opts.base,
      events: n,
      byReason: w.reasons,
      topAddresses: Object.fromEntries(top),
      addresses: w.addresses.size,
      inLastMs: Date.now() - w.since,
    });
    this.window = { since: Date.now(), reasons: {}, addresses: new Map() };
  }
}

function connKey(s: net.Socket): string {
  return `${s.remoteAddress}|${s.remotePort}`;
}
