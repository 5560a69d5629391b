import net from 'node:net';
import tls from 'node:tls';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FerryError } from '@ferry/core';
import { Engine, SqliteMessageStore, type InboundMessage, type SourceContext } from '@ferry/core';
import { silentLogger } from '../../../../../core/src/logging/logger';
import { extractHeaders, splitHl7Batch } from '../../hl7v2';
import { buildAck } from '../../ack/ack.builder';
import { readRawHeader } from '../../ack/msh';
import { encodeFrame, MllpDeframer } from '../framing';
import type { MllpSourceInput } from '../mllp.schema';

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
      const t = setTimeout(
        () => reject(new Error(`timeout waiting for ${n} ACKs (got ${this.acks.length})`)),
        timeoutMs,
      );
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

export function adt(
  controlId: string,
  opts: { trigger?: string; version?: string; mrn?: string; msh15?: string; msh16?: string; sender?: string } = {},
): string {
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

export interface RecordingCtx extends SourceContext<MllpSourceInput> {
  /** The messages the real store newly stored (its answer, not a copy of its policy), in commit order. */
  submitted: InboundMessage[];
  /** Next submit calls fail with this error before reaching the store (consumed): a store outage. */
  failNext: FerryError[];
  submitCalls: number;
  /** The real engine (its submit: the duplicate refusal) and SQLite store behind `submit`. */
  engine: Engine;
  store: SqliteMessageStore;
  /** The SQLite file (a second connection can hold its write lock). */
  file: string;
  close(): Promise<void>;
}

/**
 * A SourceContext as the engine gives a source, over a real engine's submit and a real SQLite
 * store in a temp folder: the store decides duplicates (policy and window), the engine refuses
 * them under `reject`. As the engine does, `duplicates` is taken out of the source's config and
 * passed with each submit (`keepDuplicatesInConfig` leaves it in, as a source may also be given it).
 */
export async function storeCtx(
  config: MllpSourceInput,
  opts: {
    keepDuplicatesInConfig?: boolean;
    /** an in-memory SQLite database (no fsync per commit: for fuzzing the framing) */ memory?: boolean;
  } = {},
): Promise<RecordingCtx> {
  const cfg: MllpSourceInput = {
    host: '127.0.0.1',
    port: 0,
    maxConnections: 50,
    idleTimeoutMs: 0,
    maxMessageSize: 10 * 1024 * 1024,
    maxPendingFrames: 64,
    shutdownGraceMs: 2000,
    ackMode: 'auto',
    contentType: 'application/hl7-v2',
    tls: {
      enabled: false,
      cert: '',
      key: '',
      passphrase: '',
      ca: '',
      requestCert: false,
      rejectUnauthorized: true,
      servername: '',
    },
    duplicates: { policy: 'accept', windowMs: 60_000 },
    ...config,
  };
  const duplicates = cfg.duplicates;
  if (!opts.keepDuplicatesInConfig) delete cfg.duplicates;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-mllp-src-'));
  const file = opts.memory ? ':memory:' : path.join(dir, 'ferry.db');
  const store = new SqliteMessageStore({ path: file, logger: silentLogger() });
  const engine = await Engine.create({
    logger: silentLogger(),
    store,
    config: { store: { kind: 'sqlite', path: file }, admin: { enabled: false } },
  });
  await store.open();
  const id = 'mllp-test';
  const ctx: RecordingCtx = {
    id,
    config: cfg,
    logger: silentLogger(),
    submitted: [],
    failNext: [],
    submitCalls: 0,
    engine,
    store,
    file,
    async submit(messages: InboundMessage[], o) {
      ctx.submitCalls += 1;
      const f = ctx.failNext.shift();
      if (f) throw f;
      const results = await engine.submit(id, messages, { ...o, duplicates: duplicates as never });
      results.forEach((r, i) => r.stored && ctx.submitted.push(messages[i]));
      return results;
    },
    getCheckpoint: (key) => store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => store.setCheckpoint(id, key, value),
    extractHeaders: (_ct: string, body: Buffer) => extractHeaders(body),
    split: (_ct: string, body: Buffer) => splitHl7Batch(body),
    signal: new AbortController().signal,
    async close() {
      if (store.isOpen()) await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return ctx;
}

/** A scripted MLLP receiver: answers each message per `reply(controlId)`. */
export class Receiver {
  received: string[] = [];
  connections = 0;
  reply: (msg: string) => string[] | 'silent' = (m) => [buildAck(readRawHeader(Buffer.from(m, 'latin1')), 'AA')];
  private server = net.createServer((s) => {
    this.connections += 1;
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    const d = new MllpDeframer({ maxMessageSize: 1e6 });
    s.on('data', (chunk) => {
      for (const ev of d.push(chunk)) {
        if (ev.kind !== 'frame') continue;
        const m = ev.payload.toString('latin1');
        this.received.push(m);
        const r = this.reply(m);
        if (r !== 'silent') for (const a of r) s.write(encodeFrame(a));
      }
    });
    s.on('error', () => undefined);
  });
  private sockets = new Set<net.Socket>();
  port = 0;
  async listen(port = 0) {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  async close() {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
