import { inject, injectable } from 'tsyringe';
import { ackCodeOf, coreTokens, FerryError, OutageLog, withSchemaDefaults } from '@ferry/core';
import type {
  DataQualityIssue,
  InboundMessage,
  InsertResult,
  MessageHeaders,
  MessageSource,
  SourceContext,
} from '@ferry/core';
import { acksFor, buildBatchAck, HL7Error, isEnhanced, type AckError, type IntakeOutcome } from '../ack/ack.builder';
import { readRawHeader, type RawMsh } from '../ack/msh';
import type { DeframerEvent } from '../mllp/framing';
import { MllpServer, type ConnectionInfo } from '../mllp/mllp.server';
import {
  mllpSourceSchema,
  serverTlsOptions,
  tlsEnabled,
  type MllpSourceConfig,
  type MllpSourceInput,
} from '../mllp/mllp.schema';

/** One message waiting for its ACK. */
interface Pending {
  msh?: RawMsh;
  /** Set when the message was refused before reaching the store. */
  outcome?: IntakeOutcome;
  /** Message to store (when not refused). */
  message?: InboundMessage;
  /** Stored now (not a duplicate acknowledged again). */
  stored?: boolean;
  /** Its id in the store (when stored now). */
  id?: string;
}

/** One frame's work: a single message, or a batch of messages acknowledged as one batch. */
interface FrameWork {
  items: Pending[];
  batch?: { fhs?: RawMsh; bhs?: RawMsh };
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

function firstSegmentName(body: Buffer): string {
  let i = body.subarray(0, 3).equals(BOM) ? 3 : 0;
  while (i < body.length && (body[i] === 0x0d || body[i] === 0x0a || body[i] === 0x20)) i++;
  return body.toString('latin1', i, i + 3);
}

function rejected(condition: AckError['condition'], detail: string, location?: AckError['location']): IntakeOutcome {
  return { status: 'rejected', error: { condition, detail, location } };
}

/**
 * `type: mllp` source: an MLLP (TCP or TLS) listener. Every complete frame is answered: AA (or
 * CA/AA in enhanced mode) only after the message is committed to the store; AR for a message that
 * cannot be read or is refused; AE when the store fails. ACKs go back in the order the messages came.
 */
@injectable()
export class MllpSource implements MessageSource {
  private server?: MllpServer;
  private readonly cfg: MllpSourceConfig;
  /** While the store refuses messages: told once (and counted each minute), not per message. */
  private readonly notStored: OutageLog;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<MllpSourceInput>) {
    this.cfg = withSchemaDefaults(mllpSourceSchema, ctx.config);
    this.notStored = new OutageLog(ctx.logger, 'message not stored: answered AE', { source: ctx.id });
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    const tlsOpts = tlsEnabled(cfg.tls) ? serverTlsOptions(cfg.tls) : undefined;
    this.server = new MllpServer(
      {
        host: cfg.host,
        port: cfg.port,
        maxConnections: cfg.maxConnections,
        maxConnectionsPerAddress: cfg.maxConnectionsPerAddress,
        firstFrameTimeoutMs: cfg.firstFrameTimeoutMs,
        allow: cfg.allow,
        logFields: { source: this.ctx.id },
        idleTimeoutMs: cfg.idleTimeoutMs,
        maxMessageSize: cfg.maxMessageSize,
        frameTimeoutMs: cfg.frameTimeoutMs,
        maxPendingFrames: Math.max(1, cfg.maxPendingFrames),
        shutdownGraceMs: cfg.shutdownGraceMs,
        tls: tlsOpts,
        allowedClientNames: cfg.tls.allowedClientNames,
      },
      (events, conn) => this.handle(events, conn),
      this.ctx.logger,
    );
    await this.server.listen();
    const a = this.server.address();
    this.ctx.logger.info('mllp listener started', {
      source: this.ctx.id,
      host: a?.host,
      port: a?.port,
      tls: !!tlsOpts,
      mutualTls: !!tlsOpts?.requestCert,
    });
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    await s.close();
    this.server = undefined;
    this.ctx.logger.info('mllp listener stopped', { source: this.ctx.id });
  }

  isReady(): boolean {
    return !!this.server?.listening;
  }

  /** The bound address (useful with `port: 0`). */
  address(): { host: string; port: number } | undefined {
    return this.server?.address();
  }

  stats() {
    return this.server?.stats();
  }

  /** The duplicate policy this source was configured with, when the engine passes it in the context. */
  duplicatePolicy(): string | undefined {
    return this.cfg.duplicates?.policy;
  }

  /** Turn the frames of one connection into stored messages and their ACKs (one submit per call). */
  private async handle(events: DeframerEvent[], conn: ConnectionInfo): Promise<Buffer[][]> {
    const works = events.map((ev) => this.prepare(ev, conn));
    const toStore: Pending[] = [];
    for (const w of works) for (const p of w.items) if (!p.outcome && p.message) toStore.push(p);
    if (toStore.length) await this.store(toStore);
    // Enhanced mode: the application ACK of a message whose data the source's policy fails is AE naming the fields.
    if (this.ctx.dataQualityCanFail && this.ctx.dataQualityIssues) {
      for (const w of works) if (!w.batch) for (const p of w.items) await this.checkData(p);
    }

    // Each stored message keeps the ACK it got (its `ack` event: the console shows it).
    const sent: { messageId: string; ack: string }[] = [];
    const out = works.map((w) => {
      if (!w.batch) {
        const p = w.items[0];
        const acks = acksFor(p.msh, p.outcome!, this.cfg.ackMode);
        if (p.id && p.stored) sent.push({ messageId: p.id, ack: acks.join('\n') });
        return acks.map((a) => Buffer.from(a, 'latin1'));
      }
      // Batch protocol: one acknowledgment batch listing one ACK per message (original mode).
      const acks = w.items.map((p) => {
        const a = acksFor(p.msh, p.outcome!, 'original');
        if (p.id && p.stored) sent.push({ messageId: p.id, ack: a.join('\n') });
        return a;
      });
      return [Buffer.from(buildBatchAck(w.batch.fhs, w.batch.bhs, acks.flat()), 'latin1')];
    });
    if (sent.length) this.ctx.recordAcks?.(sent);
    return out;
  }

  private prepare(ev: DeframerEvent, conn: ConnectionInfo): FrameWork {
    if (ev.kind === 'oversized') {
      const msh = readRawHeader(ev.head);
      this.logger('warn', 'message over the size limit rejected', {
        connection: conn.id,
        controlId: msh?.controlId,
        bytes: ev.size,
      });
      return {
        items: [
          {
            msh,
            outcome: rejected(
              HL7Error.internal,
              `message of ${ev.size} bytes exceeds the maximum of ${this.cfg.maxMessageSize} bytes`,
            ),
          },
        ],
      };
    }
    const body = ev.payload;
    const first = firstSegmentName(body);
    if (first === 'FHS' || first === 'BHS') return this.prepareBatch(body, conn);
    return { items: [this.prepareOne(body, conn)] };
  }

  private prepareOne(body: Buffer, conn: ConnectionInfo): Pending {
    const msh = readRawHeader(body);
    if (!msh) {
      return {
        outcome: rejected(HL7Error.segmentSequence, 'the message does not start with a valid MSH segment', {
          segment: 'MSH',
          sequence: 1,
        }),
      };
    }
    if (!msh.messageCode)
      return {
        msh,
        outcome: rejected(HL7Error.requiredFieldMissing, 'MSH-9 (message type) is empty', {
          segment: 'MSH',
          sequence: 1,
          field: 9,
        }),
      };
    if (!msh.controlId)
      return {
        msh,
        outcome: rejected(HL7Error.requiredFieldMissing, 'MSH-10 (message control id) is empty', {
          segment: 'MSH',
          sequence: 1,
          field: 10,
        }),
      };
    let headers: MessageHeaders;
    try {
      headers = this.ctx.extractHeaders(this.cfg.contentType, body);
    } catch (e) {
      const err = FerryError.from(e);
      if (err.kind === 'input') {
        this.logger('info', 'message rejected: not readable HL7 v2', {
          connection: conn.id,
          controlId: msh.controlId,
          errorCode: err.code,
        });
        const d = err.details ?? {};
        const loc = d.location as AckError['location'] | undefined;
        return {
          msh,
          outcome: rejected(conditionByCode(d.hl7ErrorCode), err.message, loc ?? { segment: 'MSH', sequence: 1 }),
        };
      }
      // No codec for the content type (engine without the transform): the raw header still routes.
      headers = rawHeaders(msh);
    }
    // The raw MSH values underneath, so routing and duplicate detection work even when the
    // registered transform gives fewer headers; the codec's (decoded) values win.
    headers = { ...rawHeaders(msh), ...headers };
    const extra: MessageHeaders = { mllpConnection: String(conn.id) };
    if (conn.remoteAddress) extra.mllpPeer = conn.remoteAddress;
    if (conn.peerCN) extra.tlsPeerCN = conn.peerCN;
    return {
      msh,
      message: { contentType: this.cfg.contentType, body, headers: { ...headers, ...extra }, receivedAt: new Date() },
    };
  }

  private prepareBatch(body: Buffer, conn: ConnectionInfo): FrameWork {
    const fhs = readRawHeader(body, 'FHS');
    const bhsAt = findLine(body, 'BHS');
    const bhs = bhsAt >= 0 ? readRawHeader(body.subarray(bhsAt), 'BHS') : undefined;
    let parts: Buffer[];
    try {
      parts = this.ctx.split(this.cfg.contentType, body);
    } catch (e) {
      const err = FerryError.from(e);
      this.logger('info', 'batch rejected: cannot be split', { connection: conn.id, errorCode: err.code });
      return {
        batch: { fhs, bhs },
        items: [
          {
            outcome: rejected(HL7Error.segmentSequence, `batch cannot be split (${err.code})`, {
              segment: 'BHS',
              sequence: 1,
            }),
          },
        ],
      };
    }
    return { batch: { fhs, bhs }, items: parts.map((p) => this.prepareOne(p, conn)) };
  }

  /** Submit messages in order; sets each item's outcome. */
  private async store(items: Pending[]): Promise<void> {
    let results: InsertResult[];
    try {
      results = await this.ctx.submit(items.map((p) => p.message!));
    } catch (e) {
      const err = FerryError.from(e, 'INTERNAL_SUBMIT');
      if (err.kind === 'input' && items.length > 1) {
        // One of them was refused (e.g. a duplicate under `reject`): find which, one by one.
        for (const p of items) await this.store([p]);
        return;
      }
      for (const p of items) this.setFailure(p, err);
      return;
    }
    items.forEach((p, i) => {
      const r = results[i];
      if (!r) {
        // never acknowledge what the store did not report as kept
        this.setFailure(
          p,
          new FerryError('INTERNAL_SUBMIT_RESULT', 'the store returned fewer results than messages', {
            kind: 'internal',
          }),
        );
        return;
      }
      // A refused duplicate: the store marks it (`rejected`), or the engine passed the policy in our config.
      const refused =
        (r as InsertResult & { rejected?: boolean }).rejected === true || this.cfg.duplicates?.policy === 'reject';
      if (r.duplicate && !r.stored && refused) {
        p.outcome = rejected(HL7Error.duplicateKey, 'duplicate message control id', {
          segment: 'MSH',
          sequence: 1,
          field: 10,
        });
        this.logger('info', 'duplicate rejected', { controlId: p.msh?.controlId, duplicateOf: r.duplicateOf });
        return;
      }
      if (r?.duplicate)
        this.logger('debug', 'duplicate acknowledged', {
          controlId: p.msh?.controlId,
          stored: r.stored,
          duplicateOf: r.duplicateOf,
        });
      p.outcome = { status: 'accepted' };
      p.stored = r.stored;
      p.id = r.id;
      this.notStored.ok();
    });
  }

  /**
   * A message (stored now, or a duplicate acknowledged again) that asks for an enhanced-mode application ACK: its data-quality issues
   * under the source's policy (the transform run for them); those that fail it become the AE's
   * ERR segments (location and reason, never the value). The message itself fails in processing
   * with the same issues, replayable after a fix.
   */
  private async checkData(p: Pending): Promise<void> {
    // A duplicate acknowledged again (same sender, control id and content) is checked too: its content is the
    // original's, so its application ACK is the original's (AE naming the same fields), not a bare AA.
    if (
      p.outcome?.status !== 'accepted' ||
      !p.message ||
      !isEnhanced(p.msh, this.cfg.ackMode) ||
      p.msh!.appAckType === 'NE'
    )
      return;
    let issues: DataQualityIssue[];
    try {
      issues = await this.ctx.dataQualityIssues!(p.message);
    } catch (e) {
      this.logger('debug', 'data-quality check for the application ACK failed', {
        controlId: p.msh?.controlId,
        errorCode: FerryError.from(e).code,
      });
      return;
    }
    const errors = issues.filter((i) => i.severity === 'error');
    if (!errors.length) return;
    p.outcome = { status: 'accepted', dataErrors: errors.slice(0, MAX_ERR_SEGMENTS).map(ackErrorOf) };
    this.logger('info', 'application ACK AE: data-quality issues the source fails', {
      controlId: p.msh?.controlId,
      issues: errors.slice(0, 20).map((i) => `${i.location}:${i.code}`),
    });
  }

  private setFailure(p: Pending, err: FerryError): void {
    // AR (rejected, do not resend) or AE (not stored, resend), as the error catalogue gives it
    if (ackCodeOf(err) === 'AR') {
      const dup = /DUPLICATE/i.test(err.code);
      p.outcome = dup
        ? rejected(HL7Error.duplicateKey, 'duplicate message control id', { segment: 'MSH', sequence: 1, field: 10 })
        : rejected(HL7Error.internal, `message refused (${err.code})`);
      this.logger('info', dup ? 'duplicate rejected' : 'message refused by the store', {
        controlId: p.msh?.controlId,
        errorCode: err.code,
      });
    } else {
      p.outcome = {
        status: 'error',
        error: { condition: HL7Error.internal, detail: `message not stored, retry later (${err.code})` },
      };
      this.notStored.failed({ controlId: p.msh?.controlId, errorCode: err.code, errorKind: err.kind });
    }
  }

  private logger(level: 'debug' | 'info' | 'warn' | 'error', msg: string, meta: Record<string, unknown>): void {
    this.ctx.logger[level](msg, { source: this.ctx.id, ...meta });
  }
}

/** ERR segments in one application ACK at most (the message's stored issues list them all). */
const MAX_ERR_SEGMENTS = 20;

/** A data-quality issue as an ACK error: ERR-2 its location, ERR-3 its table 0357 code, ERR-8 its reason. */
function ackErrorOf(i: DataQualityIssue): AckError {
  const m = /^([A-Z][A-Z0-9]{2})(?:-(\d+)(?:-(\d+))?)?$/.exec(i.location);
  const location: AckError['location'] = m ? { segment: m[1], sequence: i.occurrence ?? 1 } : undefined;
  if (m && location) {
    if (m[2]) location.field = Number(m[2]);
    if (m[2] && i.repetition) location.repetition = i.repetition;
    if (m[3]) location.component = Number(m[3]);
  }
  return { condition: conditionByCode(i.hl7ErrorCode), location, detail: `${i.location}: ${i.text}` };
}

/** The table 0357 entry for a code the codec put in an error's details (207 when unknown). */
function conditionByCode(code: unknown): AckError['condition'] {
  for (const c of Object.values(HL7Error)) if (c.code === String(code)) return c;
  return HL7Error.internal;
}

/** Start of the first line named `name` (after CR or LF), or -1. */
function findLine(body: Buffer, name: string): number {
  const needle = Buffer.from(name, 'latin1');
  let i = 0;
  for (;;) {
    const at = body.indexOf(needle, i);
    if (at < 0) return -1;
    if (at === 0 || body[at - 1] === 0x0d || body[at - 1] === 0x0a || (at === 3 && body.subarray(0, 3).equals(BOM)))
      return at;
    i = at + 1;
  }
}

/** Routing headers straight from the raw MSH (used only when no codec is registered for the content type). */
function rawHeaders(msh: RawMsh): MessageHeaders {
  const h: MessageHeaders = {
    messageType: msh.trigger ? `${msh.messageCode}^${msh.trigger}` : msh.messageCode,
    trigger: msh.trigger || undefined,
    controlId: msh.controlId,
    sendingApplication: msh.sendingApplication.split(msh.componentSep)[0] || undefined,
    sendingFacility: msh.sendingFacility.split(msh.componentSep)[0] || undefined,
    receivingApplication: msh.receivingApplication.split(msh.componentSep)[0] || undefined,
    receivingFacility: msh.receivingFacility.split(msh.componentSep)[0] || undefined,
    version: msh.version || undefined,
  };
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k];
  return h;
}
