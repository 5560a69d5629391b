import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '@ferry/core';
import { FerryError, ListenerGuard, type ListenerGuardStats } from '@ferry/core';
import { encodeFrame, MllpDeframer, type DeframerEvent } from './framing';

export interface ConnectionInfo {
  /** Sequential id of the connection on this server (for logs). */
  id: number;
  remoteAddress?: string;
  remotePort?: number;
  /** TLS: the peer certificate's subject CN when a client certificate was presented and verified. */
  peerCN?: string;
}

/**
 * Handles the frames of one connection. Called with every frame received while the previous call
 * was running, in arrival order; never called concurrently for one connection. Returns, for each
 * frame, the payloads to send back (zero, one or more ACKs), in order.
 */
export type FrameHandler = (events: DeframerEvent[], conn: ConnectionInfo) => Promise<Buffer[][]>;

export interface MllpServerOptions {
  host: string;
  port: number;
  /** Connections beyond this are closed on accept. */
  maxConnections: number;
  /** Connections from one remote address beyond this are closed on accept (0 = no cap). */
  maxConnectionsPerAddress?: number;
  /** A connection that has not started a frame within this is closed (0 = never). */
  firstFrameTimeoutMs?: number;
  /** When not empty: only these addresses / CIDR blocks may connect. */
  allow?: readonly string[];
  /** Fields for the connection log lines (e.g. the source id). */
  logFields?: Record<string, unknown>;
  /** The refused/closed connection summary is logged at most this often (default one minute). */
  connectionLogEveryMs?: number;
  /** A connection with no traffic and nothing in flight for this long is closed (0 = never). */
  idleTimeoutMs: number;
  /** Largest message (frame payload) accepted, bytes. */
  maxMessageSize: number;
  /** A frame started but not finished within this time closes the connection (0 = never). */
  frameTimeoutMs?: number;
  /** Frames waiting for the handler before the socket stops being read (backpressure). */
  maxPendingFrames: number;
  /** How long stop() waits for in-flight frames before closing connections. */
  shutdownGraceMs: number;
  /** TLS options (with key/cert loaded); plain TCP when absent. */
  tls?: tls.TlsOptions;
  /** Mutual TLS: when not empty, a client certificate whose subject CN is not listed is closed after the handshake. */
  allowedClientNames?: readonly string[];
}

export interface MllpServerStats extends ListenerGuardStats {
  connections: number;
  connectionsTotal: number;
  tlsFailures: number;
  /** Mutual TLS: trusted certificates refused for a CN not in allowedClientNames. */
  clientNameRefused: number;
  frames: number;
  oversizedFrames: number;
  truncatedFrames: number;
  junkBytes: number;
  /** Bytes held right now for incomplete frames and frames waiting for the handler (memory bound check). */
  bufferedBytes: number;
  /** ACK bytes written but not yet taken by the peers' TCP stacks. */
  pendingWriteBytes: number;
}

interface Conn {
  info: ConnectionInfo;
  socket: net.Socket;
  deframer: MllpDeframer;
  queue: DeframerEvent[];
  busy: boolean;
  paused: boolean;
  closed: boolean;
  junkLogged: boolean;
  /** A first frame has started (the first-frame clock is stopped). */
  started: boolean;
  idle?: Promise<void>;
  idleResolve?: () => void;
  frameTimer?: NodeJS.Timeout;
}

/** An MLLP listener over TCP or TLS: framing, limits, backpressure, ordered responses. */
export class MllpServer {
  private server?: net.Server;
  private readonly conns = new Set<Conn>();
  private guard?: ListenerGuard;
  private nextId = 1;
  private stopping = false;
  private readonly counters = {
    connectionsTotal: 0,
    tlsFailures: 0,
    clientNameRefused: 0,
    frames: 0,
    oversizedFrames: 0,
    truncatedFrames: 0,
    junkBytes: 0,
  };

  constructor(
    private readonly opts: MllpServerOptions,
    private readonly handler: FrameHandler,
    private readonly logger: Logger,
  ) {}

  async listen(): Promise<void> {
    const onConn = (socket: net.Socket) => this.accept(socket);
    const server = this.opts.tls ? tls.createServer(this.opts.tls, onConn) : net.createServer(onConn);
    // Admission on the raw TCP connection (before a TLS handshake): allowlist, total and
    // per-address caps, and the first-frame clock; refusals are counted and logged in summary.
    const guard = new ListenerGuard(
      {
        kind: 'mllp',
        base: this.opts.logFields ?? {},
        maxConnections: this.opts.maxConnections,
        maxConnectionsPerAddress: this.opts.maxConnectionsPerAddress ?? 0,
        firstDataTimeoutMs: this.opts.firstFrameTimeoutMs ?? 0,
        allow: this.opts.allow,
        summaryEveryMs: this.opts.connectionLogEveryMs,
      },
      this.logger,
    );
    this.guard = guard;
    server.on('connection', (raw: net.Socket) => guard.admit(raw, this.stopping));
    if (this.opts.tls) {
      server.on('tlsClientError', (err: Error, sock: tls.TLSSocket) => {
        this.counters.tlsFailures += 1;
        // a scanner's handshakes must not flood the log: one line, then counts in the summary
        this.logger.debug('mllp TLS handshake failed', {
          remoteAddress: sock?.remoteAddress,
          error: (err as NodeJS.ErrnoException).code ?? err.message,
        });
        guard.report(sock?.remoteAddress, 'tlsHandshake');
      });
    }
    server.on('error', (err) => this.logger.error('mllp server error', { error: err.message }));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: NodeJS.ErrnoException) =>
        reject(
          new FerryError(
            'CONFIG_MLLP_LISTEN',
            `cannot listen on ${this.opts.host}:${this.opts.port}: ${err.code ?? err.message}`,
            {
              kind:
                err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL'
                  ? 'config'
                  : 'transient',
              cause: err,
            },
          ),
        );
      server.once('error', onErr);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', onErr);
        resolve();
      });
    });
  }

  address(): { host: string; port: number } | undefined {
    const a = this.server?.address();
    if (!a || typeof a === 'string') return undefined;
    return { host: a.address, port: a.port };
  }

  get listening(): boolean {
    return !!this.server?.listening && !this.stopping;
  }

  stats(): MllpServerStats {
    let bufferedBytes = 0;
    let pendingWriteBytes = 0;
    for (const c of this.conns) {
      pendingWriteBytes += c.socket.writableLength;
      bufferedBytes += c.deframer.buffered;
      for (const ev of c.queue) bufferedBytes += ev.kind === 'frame' ? ev.payload.length : ev.head.length;
    }
    const g: ListenerGuardStats = this.guard?.stats() ?? ListenerGuard.emptyStats();
    return { connections: this.conns.size, ...this.counters, ...g, bufferedBytes, pendingWriteBytes };
  }

  /** Stop accepting; let each connection finish the frames it has received; then close them. */
  async close(): Promise<void> {
    if (!this.server) return;
    this.stopping = true;
    const server = this.server;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const drains = [...this.conns].map(async (c) => {
      c.socket.pause();
      c.paused = true;
      if (c.busy || c.queue.length) {
        c.idle ??= new Promise<void>((r) => (c.idleResolve = r));
        await Promise.race([c.idle, delay(this.opts.shutdownGraceMs)]);
      }
      c.socket.end();
      await Promise.race([new Promise<void>((r) => (c.closed ? r() : c.socket.once('close', () => r()))), delay(500)]);
      c.socket.destroy();
    });
    await Promise.all(drains);
    await closed;
    this.guard?.close();
    this.server = undefined;
  }

  private accept(socket: net.Socket): void {
    const info: ConnectionInfo = {
      id: this.nextId++,
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
    };
    if (socket instanceof tls.TLSSocket) {
      const cert = socket.getPeerCertificate();
      if (cert && cert.subject) info.peerCN = Array.isArray(cert.subject.CN) ? cert.subject.CN[0] : cert.subject.CN;
    }
    const allowed = this.opts.allowedClientNames ?? [];
    if (socket instanceof tls.TLSSocket && allowed.length && (!info.peerCN || !allowed.includes(info.peerCN))) {
      this.counters.clientNameRefused += 1;
      this.logger.debug('mllp client certificate not allowed; connection closed', {
        connection: info.id,
        remoteAddress: info.remoteAddress,
        peerCN: info.peerCN,
      });
      this.guard?.report(info.remoteAddress, 'clientName');
      socket.destroy();
      return;
    }
    const c: Conn = {
      info,
      socket,
      deframer: new MllpDeframer({ maxMessageSize: this.opts.maxMessageSize }),
      queue: [],
      busy: false,
      paused: false,
      closed: false,
      junkLogged: false,
      started: false,
    };
    this.conns.add(c);
    this.counters.connectionsTotal += 1;
    this.logger.debug('mllp connection opened', {
      connection: info.id,
      remoteAddress: info.remoteAddress,
      peerCN: info.peerCN,
    });
    socket.setNoDelay(true);
    if (this.opts.idleTimeoutMs > 0) socket.setTimeout(this.opts.idleTimeoutMs);
    socket.on('timeout', () => {
      if (c.busy || c.queue.length) return; // still working: not idle
      this.logger.debug('mllp connection idle, closing', {
        connection: info.id,
        idleTimeoutMs: this.opts.idleTimeoutMs,
      });
      this.guard?.closed(socket, 'idle');
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    socket.on('data', (chunk: Buffer) => this.onData(c, chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.logger.debug('mllp connection error', { connection: info.id, error: err.code ?? err.message });
    });
    socket.on('close', () => {
      c.closed = true;
      if (c.frameTimer) clearTimeout(c.frameTimer);
      this.conns.delete(c);
      const d = c.deframer;
      const lost = d.reset();
      if (lost > 0)
        this.logger.warn('mllp connection closed mid-frame; partial frame dropped', {
          connection: info.id,
          bytes: lost,
        });
      if (d.junkBytes > 0)
        this.logger.info('mllp bytes outside frames discarded', { connection: info.id, junkBytes: d.junkBytes });
      this.logger.debug('mllp connection closed', {
        connection: info.id,
        frames: d.frames,
        oversized: d.oversizedFrames,
      });
      if (c.idleResolve) c.idleResolve();
    });
  }

  private onData(c: Conn, chunk: Buffer): void {
    const d = c.deframer;
    const junkBefore = d.junkBytes;
    const truncBefore = d.truncatedFrames;
    let events: DeframerEvent[];
    try {
      events = d.push(chunk);
    } catch (e) {
      this.logger.error('mllp deframer failure; closing connection', {
        connection: c.info.id,
        error: (e as Error).message,
      });
      c.socket.destroy();
      return;
    }
    this.watchFrame(c);
    if (!c.started && (d.midFrame || events.length)) {
      c.started = true;
      this.guard?.started(c.socket);
    }
    const junk = d.junkBytes - junkBefore;
    if (junk > 0) {
      this.counters.junkBytes += junk;
      if (!c.junkLogged) {
        c.junkLogged = true;
        this.logger.warn('mllp bytes outside a frame discarded', { connection: c.info.id, bytes: junk });
      }
    }
    if (d.truncatedFrames > truncBefore) {
      this.counters.truncatedFrames += d.truncatedFrames - truncBefore;
      this.logger.warn('mllp frame without end block dropped (new start block received)', { connection: c.info.id });
    }
    if (!events.length) return;
    for (const ev of events) {
      if (ev.kind === 'frame') this.counters.frames += 1;
      else {
        this.counters.oversizedFrames += 1;
        this.logger.warn('mllp frame over the size limit discarded', {
          connection: c.info.id,
          bytes: ev.size,
          maxMessageSize: this.opts.maxMessageSize,
        });
      }
      c.queue.push(ev);
    }
    if (c.queue.length >= this.opts.maxPendingFrames && !c.paused) {
      c.paused = true;
      c.socket.pause();
    }
    if (!c.busy) void this.drain(c);
  }

  /** Slow-sender guard: a frame must complete within frameTimeoutMs of its start block. */
  private watchFrame(c: Conn): void {
    const limit = this.opts.frameTimeoutMs ?? 0;
    if (!limit) return;
    if (!c.deframer.midFrame) {
      if (c.frameTimer) clearTimeout(c.frameTimer);
      c.frameTimer = undefined;
      return;
    }
    if (c.frameTimer) return;
    // a start block that abandons a partial frame does not restart the clock: only finished frames do
    const started = c.deframer.frames + c.deframer.oversizedFrames;
    c.frameTimer = setTimeout(() => {
      c.frameTimer = undefined;
      const now = c.deframer.frames + c.deframer.oversizedFrames;
      if (!c.deframer.midFrame) return;
      if (now !== started) {
        // that frame finished and another began: time the new one from here
        this.watchFrame(c);
        return;
      }
      this.logger.warn('mllp frame not completed in time; closing the connection', {
        connection: c.info.id,
        bytes: c.deframer.buffered,
        frameTimeoutMs: limit,
      });
      c.socket.destroy();
    }, limit);
    c.frameTimer.unref();
  }

  private async drain(c: Conn): Promise<void> {
    c.busy = true;
    try {
      while (c.queue.length && !c.closed) {
        // At most maxPendingFrames per call, so the ACKs written between two drain checks stay bounded.
        const batch = c.queue.splice(0, Math.max(1, this.opts.maxPendingFrames));
        let responses: Buffer[][];
        try {
          responses = await this.handler(batch, c.info);
        } catch (e) {
          // The handler turns every expected failure into an ACK; reaching here is a bug. Close the
          // connection clearly rather than leave the sender waiting.
          this.logger.error('mllp frame handler failed; closing connection', {
            connection: c.info.id,
            error: (e as Error).message,
          });
          c.socket.destroy();
          return;
        }
        if (c.closed || c.socket.destroyed) return;
        c.socket.cork();
        for (const list of responses) for (const r of list) c.socket.write(encodeFrame(r));
        c.socket.uncork();
        if (c.socket.writableNeedDrain) {
          // The peer is not reading its ACKs: stop reading its frames until it does (memory bound).
          c.paused = true;
          c.socket.pause();
          await new Promise<void>((r) => {
            const done = () => {
              c.socket.off('drain', done);
              c.socket.off('close', done);
              r();
            };
            c.socket.on('drain', done);
            c.socket.on('close', done);
          });
        }
        if (c.paused && !this.stopping && c.queue.length < this.opts.maxPendingFrames) {
          c.paused = false;
          c.socket.resume();
        }
      }
    } finally {
      c.busy = false;
      if (!c.queue.length && c.idleResolve) {
        c.idleResolve();
        c.idle = undefined;
        c.idleResolve = undefined;
      }
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
