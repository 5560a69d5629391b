import net from 'node:net';
import tls from 'node:tls';
import { contentHash, FerryError, type InboundMessage, type InsertResult, type SourceContext } from '@ferry/core';
import { silentLogger } from '../../../../../core/src/logging/logger';
import { extractHeaders, splitHl7Batch } from '../../hl7v2';
import { MllpDeframer } from '../framing';
import type { MllpSourceConfig } from '../mllp.schema';

/** An independent raw MLLP client for tests: write bytes, collect ACK frames. */
export class RawClient {
  readonly acks: string[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];
  private readonly deframer = new MllpDeframer({ maxMessageSize: 16 * 1024 * 1024 });
  closed = false;
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d) => {
      for (const ev of this.deframer.push(d)) if (ev.kind === 'frame') this.acks.push(ev.payload.toString('latin1'));
      this.waiters = this.waiters.filter((w) => (this.acks.length >= w.n ? (w.resolve(), false) : true));
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.closeWaiters) w();
      for (const w of this.waiters) w.resolve();
      this.waiters = [];
    });
  }

  static connect(port: number, opts?: tls.ConnectionOptions): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = opts ? tls.connect({ port, host: '127.0.0.1', ...opts }) : net.connect(port, '127.0.0.1');
      const ev = opts ? 'secureConnect' : 'connect';
      s.once(ev, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  write(b: Buffer | string): void {
    this.socket.write(typeof b === 'string' ? Buffer.from(b, 'latin1') : b);
  }

  /** Resolves once `n` ACKs in total have arrived (or the socket closed), or rejects on timeout. */
  waitAcks(n: number, timeoutMs = 5000): Promise<string[]> {
    if (this.acks.length >= n || this.closed) return Promise.resolve(this.acks);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for ${n} ACKs (got ${this.acks.length})`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(t), resolve(this.acks)) });
    });
  }

  waitClose(timeoutMs = 5000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timeout waiting for close')), timeoutMs);
      this.closeWaiters.push(() => (clearTimeout(t), resolve()));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export function frame(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([Buffer.from([0x0b]), b, Buffer.from([0x1c, 0x0d])]);
}

export function adt(controlId: string, opts: { trigger?: string; version?: string; mrn?: string; msh15?: string; msh16?: string; sender?: string } = {}): string {
  const t = opts.trigger ?? 'A01';
  const ack = opts.msh15 !== undefined || opts.msh16 !== undefined ? `|||${opts.msh15 ?? ''}|${opts.msh16 ?? ''}` : '';
  return (
    [
      `MSH|^~\\&|${opts.sender ?? 'SENDAPP'}|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^${t}^ADT_A01|${controlId}|P|${opts.version ?? '2.5.1'}${ack}`,
      `EVN|${t}|20240101120000`,
      `PID|1||${opts.mrn ?? '12345'}^^^HOSP^MR||DOE^JOHN||19800101|M`,
      'PV1|1|I|WARD1^101^A',
    ].join('\r') + '\r'
  );
}

export function field(ack: string, seg: string, n: number): string {
  const line = ack.split('\r').find((l) => l.startsWith(seg));
  if (!line) return '';
  const fs = line[3];
  const parts = line.split(fs);
  return seg === 'MSH' ? (n === 1 ? fs : (parts[n - 1] ?? '')) : (parts[n] ?? '');
}

export interface RecordingCtx extends SourceContext<MllpSourceConfig> {
  submitted: InboundMessage[];
  /** Next submit calls fail with this error (consumed). */
  failNext: FerryError[];
  submitCalls: number;
}

/** A SourceContext whose submit records messages and applies duplicate detection like the store. */
export function recordingCtx(
  config: Partial<MllpSourceConfig>,
  opts: { delayMs?: number; /** how a refused duplicate is reported: thrown (default) or flagged `rejected` in its result */ rejectStyle?: 'throw' | 'flag' } = {},
): RecordingCtx {
  const seen = new Map<string, string>();
  let n = 0;
  const cfg: MllpSourceConfig = {
    host: '127.0.0.1',
    port: 0,
    maxConnections: 50,
    idleTimeoutMs: 0,
    maxMessageSize: 10 * 1024 * 1024,
    maxPendingFrames: 64,
    shutdownGraceMs: 2000,
    ackMode: 'auto',
    contentType: 'application/hl7-v2',
    tls: { enabled: false, cert: '', key: '', passphrase: '', ca: '', requestCert: false, rejectUnauthorized: true, servername: '' },
    duplicates: { policy: 'accept', windowMs: 60_000 },
    ...config,
  };
  // the store's policy, fixed at creation (a test may hide it from the source's config)
  const policy = cfg.duplicates?.policy ?? 'accept';
  const ctx: RecordingCtx = {
    id: 'mllp-test',
    config: cfg,
    logger: silentLogger(),
    submitted: [],
    failNext: [],
    submitCalls: 0,
    async submit(messages: InboundMessage[]): Promise<InsertResult[]> {
      ctx.submitCalls += 1;
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      const f = ctx.failNext.shift();
      if (f) throw f;
      // Identity and content (the store's rule): the same control id with other content is new.
      const keyOf = (m: InboundMessage) =>
        `${m.headers?.sendingApplication}|${m.headers?.sendingFacility}|${m.headers?.controlId}|${contentHash(m.contentType, m.body, cfg.duplicates?.ignoreFields ?? ['MSH-7'])}`;
      if (policy === 'reject' && opts.rejectStyle !== 'flag') {
        // all or nothing, like a store transaction
        const keys = messages.map(keyOf);
        if (keys.some((k, i) => seen.has(k) || keys.indexOf(k) !== i)) throw new FerryError('INPUT_DUPLICATE', 'duplicate', { kind: 'input' });
      }
      const out: InsertResult[] = [];
      for (const m of messages) {
        const key = keyOf(m);
        const prev = seen.get(key);
        if (prev && policy === 'reject' && opts.rejectStyle !== 'flag') throw new FerryError('INPUT_DUPLICATE', 'duplicate', { kind: 'input' });
        if (prev && policy === 'reject') {
          out.push({ id: prev, duplicate: true, duplicateOf: prev, stored: false, rejected: true } as InsertResult);
          continue;
        }
        if (prev && policy === 'ignore') {
          out.push({ id: prev, duplicate: true, duplicateOf: prev, stored: false });
          continue;
        }
        const id = `m${++n}`;
        if (!prev) seen.set(key, id);
        ctx.submitted.push(m);
        out.push({ id, duplicate: !!prev, duplicateOf: prev, stored: true });
      }
      return out;
    },
    async getCheckpoint() {
      return undefined;
    },
    async setCheckpoint() {},
    extractHeaders: (_ct: string, body: Buffer) => extractHeaders(body),
    split: (_ct: string, body: Buffer) => splitHl7Batch(body),
    signal: new AbortController().signal,
  };
  return ctx;
}
