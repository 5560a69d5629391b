import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '@ferry/core';
import { FerryError } from '@ferry/core';
import { readAck } from '../ack/ack.builder';
import { encodeFrame, MllpDeframer } from './framing';

export interface MllpClientOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Largest ACK frame accepted. */
  maxMessageSize: number;
  tls?: tls.ConnectionOptions;
}

export interface AckResult {
  /** MSA-1 (AA, AE, AR, CA, CE, CR). */
  code: string;
  /** MSA-2. */
  controlId: string;
  /** MSA-3 text. */
  text: string;
  /** ERR's table 0357 code, when present. */
  errCode?: string;
  /** The raw ACK. */
  raw: Buffer;
  /** Round trip, ms. */
  ms: number;
}

/**
 * One persistent MLLP connection to a receiver, one message in flight at a time. `send` writes a
 * frame and resolves with the first ACK whose MSA-2 names the message's control id (ACKs for other
 * control ids, e.g. a late application ACK, are skipped). On timeout the connection is closed, since
 * a late ACK would otherwise be taken for the next message's.
 */
export class MllpConnection {
  private socket?: net.Socket;
  private connecting?: Promise<net.Socket>;
  private deframer: MllpDeframer;
  private inbox: Buffer[] = [];
  private waiter?: (frame?: Buffer, err?: Error) => void;
  private busy = false;

  constructor(
    private readonly opts: MllpClientOptions,
    private readonly logger?: Logger,
  ) {
    this.deframer = new MllpDeframer({ maxMessageSize: opts.maxMessageSize });
  }

  get connected(): boolean {
    return !!this.socket && !this.socket.destroyed;
  }

  async connect(): Promise<void> {
    await this.ensureSocket();
  }

  private ensureSocket(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    const { host, port } = this.opts;
    this.connecting = new Promise<net.Socket>((resolve, reject) => {
      const s = this.opts.tls ? tls.connect({ host, port, ...this.opts.tls }) : net.connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(
          new FerryError(
            'TRANSIENT_MLLP_CONNECT_TIMEOUT',
            `connect to ${host}:${port} timed out after ${this.opts.connectTimeoutMs} ms`,
            { kind: 'transient' },
          ),
        );
      }, this.opts.connectTimeoutMs);
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        s.destroy();
        reject(
          new FerryError('TRANSIENT_MLLP_CONNECT', `cannot connect to ${host}:${port}: ${err.code ?? err.message}`, {
            kind: 'transient',
            cause: err,
          }),
        );
      };
      s.once('error', onError);
      s.once(this.opts.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.off('error', onError);
        s.setNoDelay(true);
        s.setKeepAlive(true, 30_000);
        this.deframer = new MllpDeframer({ maxMessageSize: this.opts.maxMessageSize });
        this.inbox = [];
        s.on('data', (d: Buffer) => {
          for (const ev of this.deframer.push(d)) {
            if (ev.kind !== 'frame') continue;
            if (this.waiter) this.waiter(ev.payload);
            else this.inbox.push(ev.payload);
          }
        });
        s.on('error', (err: NodeJS.ErrnoException) =>
          this.logger?.debug('mllp sender connection error', { host, port, error: err.code ?? err.message }),
        );
        s.on('close', () => {
          // A socket we already dropped (timeout) must not fail the next exchange on a new one.
          if (this.socket !== s) return;
          this.socket = undefined;
          this.waiter?.(
            undefined,
            new FerryError('TRANSIENT_MLLP_CLOSED', `connection to ${host}:${port} closed before the ACK`, {
              kind: 'transient',
            }),
          );
        });
        this.socket = s;
        resolve(s);
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Send one message; resolve with its ACK. Throws a transient FerryError on connect failure, close or timeout. */
  async send(payload: Buffer, controlId: string | undefined, ackTimeoutMs: number): Promise<AckResult> {
    if (this.busy)
      throw new FerryError('INTERNAL_MLLP_BUSY', 'one message at a time per connection', { kind: 'internal' });
    this.busy = true;
    try {
      const s = await this.ensureSocket();
      this.inbox = []; // anything unsolicited before our message is not its ACK
      const t0 = process.hrtime.bigint();
      s.write(encodeFrame(payload));
      return await this.awaitAckInner(controlId, ackTimeoutMs, t0);
    } catch (e) {
      // After a timeout or a protocol surprise the stream position is unknown: start afresh.
      this.socket?.destroy();
      this.socket = undefined;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Wait for a further ACK for `controlId` on this connection (e.g. the application ACK that
   * follows an enhanced-mode CA).
   */
  async awaitAck(controlId: string | undefined, ackTimeoutMs: number): Promise<AckResult> {
    try {
      return await this.awaitAckInner(controlId, ackTimeoutMs, process.hrtime.bigint());
    } catch (e) {
      this.socket?.destroy();
      this.socket = undefined;
      throw e;
    }
  }

  private async awaitAckInner(controlId: string | undefined, ackTimeoutMs: number, t0: bigint): Promise<AckResult> {
    {
      const deadline = Date.now() + ackTimeoutMs;
      for (;;) {
        const frame = await this.nextFrame(Math.max(1, deadline - Date.now()));
        const ack = readAck(frame);
        if (!ack) {
          this.logger?.warn('mllp sender: reply without MSA skipped', {
            host: this.opts.host,
            port: this.opts.port,
            bytes: frame.length,
          });
          continue;
        }
        if (controlId !== undefined && ack.controlId !== controlId) {
          this.logger?.debug('mllp sender: ACK for another control id skipped', {
            expected: controlId,
            got: ack.controlId,
            code: ack.code,
          });
          continue;
        }
        return { ...ack, raw: frame, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
      }
    }
  }

  private nextFrame(timeoutMs: number): Promise<Buffer> {
    const queued = this.inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (!this.connected)
      return Promise.reject(new FerryError('TRANSIENT_MLLP_CLOSED', 'connection closed', { kind: 'transient' }));
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(
          new FerryError(
            'TRANSIENT_MLLP_ACK_TIMEOUT',
            `no ACK from ${this.opts.host}:${this.opts.port} within ${timeoutMs} ms`,
            { kind: 'transient' },
          ),
        );
      }, timeoutMs);
      this.waiter = (frame, err) => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (frame) resolve(frame);
        else reject(err);
      };
    });
  }

  close(): void {
    this.socket?.end();
    const s = this.socket;
    setTimeout(() => s?.destroy(), 200).unref();
    this.socket = undefined;
  }
}
