import { inject, injectable } from 'tsyringe';
import {
  coreTokens,
  FerryError,
  permanentDeliveryError,
  retryableDeliveryError,
  withSchemaDefaults,
} from '@ferry/core';
import type { Delivery, MessageSink, SinkContext } from '@ferry/core';
import { readRawHeader } from '../ack/msh';
import { decodeHl7Bytes, encodeSegment, parseHl7, STANDARD_DELIMITERS, type Hl7WriteField } from '../hl7v2';
import { MllpConnection } from '../mllp/mllp.client';
import { FhirToV2, unresolvedPatientReferences } from '../fhir-to-v2/fhir-to-v2';
import {
  clientTlsOptions,
  mllpSinkSchema,
  tlsEnabled,
  type MllpSinkConfig,
  type MllpSinkInput,
} from '../mllp/mllp.schema';

/**
 * Re-encode an HL7 v2 message: standard delimiters `|^~\&`, CR segment ends, UTF-8 without BOM
 * (MSH-18 set to `UNICODE UTF-8` when it named another character set), every leaf re-escaped.
 */
export function normalizeHl7(body: Buffer): Buffer {
  const msg = parseHl7(decodeHl7Bytes(body).text);
  const d = STANDARD_DELIMITERS;
  const lines = msg.segments.map((seg) => {
    const fields: Hl7WriteField[] = [];
    const first = seg.name === 'MSH' ? 3 : 1;
    for (let n = first; n <= seg.size; n++) {
      if (seg.name === 'MSH' && n === 18 && seg.has(18)) fields.push('UNICODE UTF-8');
      else fields.push({ reps: seg.reps(n) });
    }
    return encodeSegment(seg.name, fields, d);
  });
  return Buffer.from(lines.join('\r') + '\r', 'utf8');
}

/**
 * `type: mllp` sink: sends each delivery's HL7 v2 message to a receiver over persistent MLLP
 * connections and waits for its ACK. AA/CA -> delivered; AE/CE, timeouts and connection failures
 * -> retryable; AR/CR -> dead (or retried with `onReject: retry`).
 */
@injectable()
export class MllpSink implements MessageSink {
  private readonly cfg: MllpSinkConfig;
  private readonly pool: MllpConnection[] = [];
  private readonly free: MllpConnection[] = [];
  private readonly waiting: { resolve: (c: MllpConnection) => void; reject: (e: Error) => void }[] = [];
  /** Reconnect backoff: no new connection attempt before this time. */
  private retryAt = 0;
  private backoffMs = 0;
  private stopped = false;

  /** format hl7v2: the Bundle -> v2 conversion with this sink's receiver profile. */
  private readonly toV2?: FhirToV2;

  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<MllpSinkInput>) {
    this.cfg = withSchemaDefaults(mllpSinkSchema, ctx.config);
    if (this.cfg.format === 'hl7v2') this.toV2 = new FhirToV2(this.cfg.profile);
    const tlsOpts = tlsEnabled(this.cfg.tls) ? clientTlsOptions(this.cfg.tls, this.cfg.host) : undefined;
    const n = Math.max(1, this.cfg.connections);
    for (let i = 0; i < n; i++) {
      const c = new MllpConnection(
        {
          host: this.cfg.host,
          port: this.cfg.port,
          connectTimeoutMs: this.cfg.connectTimeoutMs,
          maxMessageSize: this.cfg.maxMessageSize,
          tls: tlsOpts,
        },
        ctx.logger,
      );
      this.pool.push(c);
      this.free.push(c);
    }
  }

  async start(): Promise<void> {
    // Connect lazily: a receiver that is down at start must not stop the engine; deliveries retry.
    this.ctx.logger.info('mllp sink ready', {
      sink: this.ctx.id,
      host: this.cfg.host,
      port: this.cfg.port,
      connections: this.pool.length,
      tls: tlsEnabled(this.cfg.tls),
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.waiting.splice(0))
      w.reject(retryableDeliveryError('MLLP_STOPPED', 'the mllp sink is stopping'));
    for (const c of this.pool) c.close();
  }

  async deliver(delivery: Delivery): Promise<void> {
    if (this.stopped) throw retryableDeliveryError('MLLP_STOPPED', 'the mllp sink is stopping');
    const payload = await this.payloadFor(delivery);
    const msh = readRawHeader(payload);
    const controlId = msh?.controlId;
    const conn = await this.acquire();
    try {
      if (!conn.connected) await this.connectWithBackoff(conn);
      let ack;
      try {
        ack = await untilAborted(conn.send(payload, controlId, this.cfg.ackTimeoutMs), delivery.signal, () =>
          conn.close(),
        );
        // Enhanced mode: after the commit accept, the message itself asks for an application ACK
        // on success (MSH-16 AL or SU): its AA / AE / AR is the real outcome.
        if (ack.code === 'CA' && msh && (msh.appAckType === 'AL' || msh.appAckType === 'SU'))
          ack = await untilAborted(conn.awaitAck(controlId, this.cfg.ackTimeoutMs), delivery.signal, () =>
            conn.close(),
          );
      } catch (e) {
        this.noteFailure();
        const err = FerryError.from(e);
        throw retryableDeliveryError('MLLP_SEND', err.message, { host: this.cfg.host, port: this.cfg.port }, err);
      }
      this.backoffMs = 0;
      const meta = {
        sink: this.ctx.id,
        deliveryId: delivery.deliveryId,
        controlId,
        ackCode: ack.code,
        ms: Math.round(ack.ms * 1000) / 1000,
      };
      switch (ack.code) {
        case 'AA':
        case 'CA':
          this.ctx.logger.debug('mllp delivered', meta);
          return;
        case 'AR':
        case 'CR':
          this.ctx.logger.warn('mllp receiver rejected the message', { ...meta, errCode: ack.errCode });
          if (this.cfg.onReject === 'retry')
            throw retryableDeliveryError(
              'MLLP_REJECTED',
              `receiver answered ${ack.code}${ack.errCode ? ` (${ack.errCode})` : ''}`,
              { ackCode: ack.code, errCode: ack.errCode },
            );
          throw permanentDeliveryError(
            'MLLP_REJECTED',
            `receiver answered ${ack.code}${ack.errCode ? ` (${ack.errCode})` : ''}`,
            { ackCode: ack.code, errCode: ack.errCode },
          );
        case 'AE':
        case 'CE':
          this.ctx.logger.warn('mllp receiver answered an error', { ...meta, errCode: ack.errCode });
          throw retryableDeliveryError(
            'MLLP_ERROR_ACK',
            `receiver answered ${ack.code}${ack.errCode ? ` (${ack.errCode})` : ''}`,
            { ackCode: ack.code, errCode: ack.errCode },
          );
        default:
          throw retryableDeliveryError(
            'MLLP_BAD_ACK',
            `receiver answered an unknown acknowledgment code "${ack.code}"`,
            { ackCode: ack.code },
          );
      }
    } finally {
      this.release(conn);
    }
  }

  private async payloadFor(delivery: Delivery): Promise<Buffer> {
    if (this.toV2) return this.fromBundle(delivery);
    const m = delivery.message;
    if (!m.body)
      throw permanentDeliveryError('MLLP_NO_BODY', `message ${m.id} has no stored body (pruned?); nothing to send`);
    if (!/hl7-v2|x-hl7|hl7v2/i.test(m.contentType))
      throw permanentDeliveryError(
        'MLLP_NOT_HL7',
        `message ${m.id} is ${m.contentType}, not HL7 v2; the mllp sink sends HL7 v2 messages`,
      );
    if (this.cfg.body === 'original') return m.body;
    try {
      return normalizeHl7(m.body);
    } catch (e) {
      throw permanentDeliveryError(
        'MLLP_REENCODE',
        `message ${m.id} cannot be re-encoded: ${(e as Error).message}`,
        undefined,
        e,
      );
    }
  }

  /**
   * format hl7v2: the delivery's Bundle as one HL7 v2 message. The control id is derived from the
   * stored message id and the sink id, so a retry or a replay sends the same control id. A Bundle that
   * cannot be expressed is dead (not retryable), with the reason (FHIR element and v2 field).
   */
  private async fromBundle(delivery: Delivery): Promise<Buffer> {
    const m = delivery.message;
    let bundle = delivery.bundle;
    // a Patient the Bundle only points at (an Epic Observation's subject Patient/<id>): the store's newest canonical one
    const refs = unresolvedPatientReferences(bundle);
    if (refs.length && this.ctx.resolveReferences) {
      const found = await this.ctx.resolveReferences(refs, { messageId: m.id });
      if (found.length)
        bundle = {
          ...bundle,
          entry: [
            ...(bundle.entry ?? []),
            ...found.map((r) => ({ fullUrl: `${r.resourceType}/${r.id}`, resource: r })),
          ],
        };
    }
    let msgs;
    try {
      msgs = this.toV2!.convert(bundle, { controlIdSeed: `${m.id}|${this.ctx.id}`, now: m.receivedAt });
    } catch (e) {
      const err = FerryError.from(e);
      this.ctx.logger.warn('mllp sink cannot express the bundle in HL7 v2', {
        sink: this.ctx.id,
        deliveryId: delivery.deliveryId,
        messageId: m.id,
        errorCode: err.code,
      });
      throw permanentDeliveryError('MLLP_FHIR_TO_V2', `message ${m.id}: ${err.message}`, err.details, e);
    }
    if (msgs.length !== 1)
      throw permanentDeliveryError(
        'MLLP_FHIR_TO_V2',
        `message ${m.id}: the Bundle gives ${msgs.length} HL7 v2 messages (${msgs.map((x) => x.messageType).join(', ')}); route one appointment per message`,
      );
    return Buffer.from(msgs[0].text, 'utf8');
  }

  private async connectWithBackoff(conn: MllpConnection): Promise<void> {
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      if (wait > this.cfg.connectTimeoutMs)
        throw retryableDeliveryError(
          'MLLP_BACKOFF',
          `receiver ${this.cfg.host}:${this.cfg.port} unreachable; next connect attempt in ${wait} ms`,
        );
      await new Promise((r) => setTimeout(r, wait));
    }
    try {
      await conn.connect();
    } catch (e) {
      this.noteFailure();
      const err = FerryError.from(e);
      this.ctx.logger.warn('mllp sink cannot connect', {
        sink: this.ctx.id,
        host: this.cfg.host,
        port: this.cfg.port,
        errorCode: err.code,
        retryInMs: this.backoffMs,
      });
      throw retryableDeliveryError('MLLP_CONNECT', err.message, { host: this.cfg.host, port: this.cfg.port }, err);
    }
  }

  private noteFailure(): void {
    const r = this.cfg.reconnect;
    this.backoffMs = this.backoffMs ? Math.min(r.maxDelayMs, this.backoffMs * 2) : r.initialDelayMs;
    this.retryAt = Date.now() + this.backoffMs;
  }

  private acquire(): Promise<MllpConnection> {
    const c = this.free.pop();
    if (c) return Promise.resolve(c);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private release(c: MllpConnection): void {
    const w = this.waiting.shift();
    if (w) w.resolve(c);
    else this.free.push(c);
  }
}

/**
 * `p`, or a rejection as soon as the engine aborts the delivery (its deliveryTimeoutMs passed):
 * the sink then stops waiting for the ACK at once instead of at ackTimeoutMs, and `onAbort`
 * closes the connection (an ACK arriving late would otherwise answer the next message on it).
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, onAbort: () => void): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      p.catch(() => undefined);
      onAbort();
      reject(
        new FerryError(
          'TRANSIENT_MLLP_ABORTED',
          'the delivery was abandoned (deliveryTimeoutMs) before the receiver acknowledged',
          { kind: 'transient' },
        ),
      );
    };
    if (signal.aborted) return abort();
    signal.addEventListener('abort', abort, { once: true });
    p.then(
      (v) => (signal.removeEventListener('abort', abort), resolve(v)),
      (e) => (signal.removeEventListener('abort', abort), reject(e)),
    );
  });
}
