import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { inject, injectable } from 'tsyringe';
import { ackCodeOf, configError, FerryError, httpStatusOf } from '../errors';
import { OutageLog } from '../logging/outage-log';
import type { InboundMessage } from '../model/message';
import type { MessageSource, SourceContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import { canonicalContentType, checkBody, FHIR_CONTENT_TYPES, HL7_CONTENT_TYPES, mediaType } from './common';
import { buildAck, type AckCode } from './hl7-ack';
import { HttpConnections } from '../util/graceful-http';
import { tlsServerOptions } from '../util/tls-options';
import { cidrListFormat, ListenerGuard, normalizeAddress } from './listener-guard';
import { IntakeAuth, intakeTokensFormat, type IntakeTokenEntry } from './intake-auth';
import type { TLSSocket } from 'node:tls';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';

/** `sources.<id>` keys of a `type: http` source. */
export const httpSourceSchema = defineSchema({
  host: { doc: 'Bind address', format: String, default: '127.0.0.1' },
  port: { doc: 'TCP port (0 = any free port)', format: 'port', default: 8081 },
  path: {
    doc: 'Path messages are POSTed to',
    format: (v: unknown) => {
      if (typeof v !== 'string' || !v.startsWith('/')) throw new Error('must be a path starting with /');
    },
    default: '/messages',
  },
  token: {
    doc: 'When set, requests need `Authorization: Bearer <token>` (use ${ENV} or token_FILE); prefer `tokens`, which keep no secret in the config',
    format: String,
    default: '',
    sensitive: true,
  },
  tokens: {
    doc: 'Ferry API tokens allowed to POST, as { id, name, hash, expires? } entries holding only a salted hash (`ferry token create --config-entry` prints one; roles are ignored here). When set (or `token`), requests need `Authorization: Bearer <secret>`',
    format: intakeTokensFormat,
    default: [] as IntakeTokenEntry[],
  },
  failedAuth: {
    maxFailures: {
      doc: 'Failed authentications from one address within windowMs before it gets 429 for windowMs (0 = no limit)',
      format: 'nat',
      default: 10,
    },
    windowMs: { doc: 'The failed-authentication window', format: 'nat', default: 60_000 },
  },
  bodyLimit: { doc: 'Largest request body in bytes (413 above)', format: 'nat', default: 10 * 1024 * 1024 },
  batch: {
    doc: 'Split HL7 batches (FHS/BHS) into one message each; the answer then has `ids`',
    format: Boolean,
    default: true,
  },
  maxConnections: { doc: 'Concurrent connections accepted; more are closed on accept', format: 'nat', default: 200 },
  maxConnectionsPerAddress: {
    doc: 'Concurrent connections accepted from one remote address (0 = no cap)',
    format: 'nat',
    default: 20,
  },
  firstRequestTimeoutMs: {
    doc: 'A connection that has not sent a complete request head within this is closed (0 = never)',
    format: 'nat',
    default: 10_000,
  },
  idleTimeoutMs: {
    doc: 'A keep-alive connection with no request for this long is closed',
    format: 'nat',
    default: 60_000,
  },
  requestTimeoutMs: {
    doc: 'A request (head and body) not fully received within this is answered 408 and its connection closed (0 = no limit)',
    format: 'nat',
    default: 120_000,
  },
  shutdownGraceMs: {
    doc: 'On stop, how long requests in flight get to be stored and answered',
    format: 'nat',
    default: 5000,
  },
  allow: {
    doc: 'When not empty: only these IPv4/IPv6 addresses or CIDR blocks may connect (e.g. [10.20.0.0/16, "fd00::/8"]); others are closed on accept',
    format: cidrListFormat,
    default: [] as string[],
  },
  tls: {
    cert: {
      doc: 'PEM certificate chain, or a path to it: serve HTTPS when cert and key are set',
      format: String,
      default: '',
    },
    key: { doc: 'PEM private key, or a path to it (or key_FILE)', format: String, default: '', sensitive: true },
    passphrase: { doc: 'Passphrase of the key', format: String, default: '', sensitive: true },
    ca: {
      doc: 'PEM CA bundle, or a path: client certificates must be signed by it when requestCert is on',
      format: String,
      default: '',
    },
    requestCert: { doc: 'Mutual TLS: require a client certificate signed by `ca`', format: Boolean, default: false },
    allowedClientNames: {
      doc: 'Mutual TLS: when not empty, only client certificates whose subject CN is listed may POST (403 otherwise); the CN is kept as the tlsPeerCN header',
      format: (v: unknown) => {
        if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !x))
          throw new Error('must be a list of certificate subject common names');
      },
      default: [] as string[],
    },
  },
});

export type HttpSourceConfig = SchemaType<typeof httpSourceSchema>;
export type HttpSourceTlsConfig = HttpSourceConfig['tls'];
/** A config given in code: keys left out take the schema's defaults. */
export type HttpSourceInput = SchemaInput<typeof httpSourceSchema>;

export { pem } from '../util/tls-options';

const ACCEPTED = [...HL7_CONTENT_TYPES, ...FHIR_CONTENT_TYPES];

/**
 * Accepts HL7 v2 text or FHIR JSON over HTTP: `POST <path>`. Answers 202 with the stored message
 * id (or ids for a batch) only after the store has committed; 400 with a reason for bad input;
 * 401 without the configured bearer token; 413 for bodies over `bodyLimit`; 503 when the store
 * cannot take the message (the client should retry). An HL7 client sending
 * `Accept: application/hl7-v2` gets an HL7 ACK body instead of JSON (AA / AR / AE, same statuses).
 */
@injectable()
export class HttpSource implements MessageSource {
  private readonly cfg: HttpSourceConfig;
  private app: FastifyInstance | undefined;
  private listening = false;
  private boundPort = 0;
  private scheme: 'http' | 'https' = 'http';
  private guard?: ListenerGuard;
  private conns?: HttpConnections;
  private readonly auth: IntakeAuth;

  /** While the store refuses messages: told once (and counted each minute), not per request. */
  private readonly notStored: OutageLog;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<HttpSourceInput>) {
    this.cfg = withSchemaDefaults(httpSourceSchema, ctx.config);
    this.notStored = new OutageLog(ctx.logger, 'http message not stored', { source: ctx.id });
    this.auth = new IntakeAuth({
      token: this.cfg.token,
      tokens: this.cfg.tokens,
      maxFailures: this.cfg.failedAuth.maxFailures,
      windowMs: this.cfg.failedAuth.windowMs,
    });
  }

  /** `http(s)://host:port<path>` once listening. */
  get url(): string {
    const host = this.cfg.host === '0.0.0.0' || this.cfg.host === '::' ? '127.0.0.1' : this.cfg.host;
    return `${this.scheme}://${host.includes(':') ? `[${host}]` : host}:${this.boundPort}${this.cfg.path}`;
  }

  get port(): number {
    return this.boundPort;
  }

  isReady(): boolean {
    return this.listening;
  }

  async start(): Promise<void> {
    const where = `sources.${this.ctx.id}`;
    const tls = this.cfg.tls;
    if (tls?.allowedClientNames?.length && !tls.requestCert)
      throw configError('SOURCE_TLS', `${where}.tls.allowedClientNames: needs requestCert (mutual TLS)`);
    const https = tlsServerOptions(tls, where, 'SOURCE_TLS');
    this.scheme = https ? 'https' : 'http';
    const app = Fastify({
      logger: false,
      bodyLimit: this.cfg.bodyLimit,
      return503OnClosing: true,
      forceCloseConnections: 'idle',
      keepAliveTimeout: this.cfg.idleTimeoutMs,
      requestTimeout: this.cfg.requestTimeoutMs,
      ...(https ? { https } : {}),
    } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;
    const guard = new ListenerGuard(
      {
        kind: 'http',
        base: { source: this.ctx.id },
        maxConnections: this.cfg.maxConnections,
        maxConnectionsPerAddress: this.cfg.maxConnectionsPerAddress,
        firstDataTimeoutMs: this.cfg.firstRequestTimeoutMs,
        allow: this.cfg.allow,
      },
      this.ctx.logger,
    );
    this.guard = guard;
    // Admission first (prepended): a refused socket is destroyed before the HTTP parser reads a byte.
    app.server.prependListener('connection', (raw) => guard.admit(raw));
    app.server.on('request', (req) => guard.started(req.socket));
    this.conns = new HttpConnections(app.server);
    app.removeAllContentTypeParsers();
    // Every body arrives as raw bytes; the content type is checked in the handler so the answer can say why.
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500)
        this.ctx.logger.error('http source request failed', {
          source: this.ctx.id,
          errorCode: err.code,
          error: err.message,
        });
      void reply.code(status).send({
        error:
          status === 413
            ? `body larger than ${this.cfg.bodyLimit} bytes`
            : status >= 500
              ? 'internal error'
              : err.message,
        code: err.code,
      });
    });
    app.post(this.cfg.path, (req, reply) => this.handle(req, reply));
    app.setNotFoundHandler((req, reply) => {
      if (req.url.split('?')[0] === this.cfg.path)
        void reply
          .code(405)
          .header('allow', 'POST')
          .send({ error: `use POST ${this.cfg.path}` });
      else void reply.code(404).send({ error: 'not found' });
    });
    await app.listen({ host: this.cfg.host, port: this.cfg.port });
    this.app = app;
    this.boundPort = (app.server.address() as AddressInfo).port;
    this.listening = true;
    this.ctx.logger.info('http source listening', {
      source: this.ctx.id,
      host: this.cfg.host,
      port: this.boundPort,
      path: this.cfg.path,
      tls: this.scheme === 'https',
      mutualTls: !!https?.requestCert,
      tokens: this.auth.enabled,
    });
    if (!this.auth.enabled && !https?.requestCert)
      this.ctx.logger.warn(
        'http source accepts messages from any client that can reach its port: set tokens, token or mutual TLS',
        { source: this.ctx.id, host: this.cfg.host, port: this.boundPort },
      );
  }

  async stop(): Promise<void> {
    this.listening = false;
    const app = this.app;
    this.app = undefined;
    // fastify.close() stops accepting, answers 503 to requests arriving meanwhile, waits for in-flight
    // ones; connections with no request in flight are closed at once, the rest after shutdownGraceMs.
    if (app) await (this.conns ? this.conns.close(() => app.close(), this.cfg.shutdownGraceMs) : app.close());
    this.guard?.close();
  }

  /** Connection counters (refused by reason, closed for not sending), on /metrics as ferry_source_stat. */
  stats() {
    if (!this.guard) return undefined;
    return { connections: this.guard.connections, ...this.guard.stats(), ...this.auth.counts };
  }

  /** The client's name (token name, certificate CN) when it may POST; otherwise the answer has been sent. */
  private async authenticate(
    req: FastifyRequest,
    reply: FastifyReply,
  ): Promise<{ principal: string; peerCN?: string } | undefined> {
    const address = normalizeAddress(req.socket.remoteAddress);
    let peerCN: string | undefined;
    const sock = req.socket as TLSSocket;
    if (typeof sock.getPeerCertificate === 'function' && this.cfg.tls.requestCert) {
      const cn = sock.getPeerCertificate()?.subject?.CN;
      peerCN = Array.isArray(cn) ? cn[0] : cn;
      const allowed = this.cfg.tls.allowedClientNames;
      if (allowed.length && (!peerCN || !allowed.includes(peerCN))) {
        this.ctx.logger.warn('http client certificate not allowed', {
          source: this.ctx.id,
          remoteAddress: address,
          peerCN,
        });
        void reply.code(403).send({ error: 'client certificate not allowed' });
        return undefined;
      }
    }
    const r = await this.auth.check(req.headers.authorization, address);
    if (r.ok) return { principal: peerCN && r.principal === 'anonymous' ? `cn:${peerCN}` : r.principal, peerCN };
    if (r.status === 429) {
      void reply
        .code(429)
        .header('retry-after', String(r.retryAfterSec ?? 60))
        .send({ error: r.reason });
      return undefined;
    }
    if (r.blockedNow)
      this.ctx.logger.warn('http source: too many failed authentications; address refused for a while', {
        source: this.ctx.id,
        remoteAddress: address,
        windowMs: this.cfg.failedAuth.windowMs,
      });
    void reply.code(401).header('www-authenticate', 'Bearer').send({ error: r.reason });
    return undefined;
  }

  /** The client asked for an HL7 ACK (`Accept: application/hl7-v2` or `x-application/hl7-v2+er7`) for an HL7 body. */
  private wantsAck(req: FastifyRequest, contentType: string | undefined): boolean {
    if (contentType !== 'application/hl7-v2') return false;
    const accept = String(req.headers.accept ?? '').toLowerCase();
    return /(^|,)\s*(application\/hl7-v2|x-application\/hl7-v2\+er7)\s*(;|,|$)/.test(accept);
  }

  /** Answer with an HL7 ACK body when asked for and possible, else JSON. The HTTP status is the same either way. */
  private answer(
    reply: FastifyReply,
    status: number,
    json: Record<string, unknown>,
    ack?: { body: Buffer; code: AckCode; text?: string },
  ): FastifyReply {
    const text = ack ? buildAck(ack.body, ack.code, ack.text) : undefined;
    if (text) return reply.code(status).type('application/hl7-v2').send(text);
    return reply.code(status).send(json);
  }

  private async handle(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const who = await this.authenticate(req, reply);
    if (!who) return reply;
    const declared = req.headers['content-type'];
    const contentType = canonicalContentType(declared);
    if (!contentType) {
      return this.bad(
        reply,
        declared
          ? `unsupported content type "${mediaType(declared)}"; use one of ${ACCEPTED.join(', ')}`
          : `no Content-Type; use one of ${ACCEPTED.join(', ')}`,
      );
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const ackFor = this.wantsAck(req, contentType) && !isBatch(contentType, body) ? body : undefined;
    const reason = checkBody(contentType, body);
    if (reason) return this.bad(reply, reason, ackFor);

    let messages: InboundMessage[];
    try {
      const parts = (this.cfg.batch ? this.ctx.split(contentType, body) : [body]).filter((p) => p.length > 0);
      if (!parts.length) return this.bad(reply, 'the body holds no message', ackFor);
      const receivedAt = new Date();
      const extra = who.peerCN ? { tlsPeerCN: who.peerCN } : {};
      messages = parts.map((p) => ({
        contentType,
        body: p,
        headers: { ...this.ctx.extractHeaders(contentType, p), ...extra },
        receivedAt,
      }));
    } catch (e) {
      if (FerryError.is(e) && e.kind !== 'input') return this.fail(reply, e, ackFor);
      return this.bad(reply, `cannot read the message: ${(e as Error).message}`, ackFor);
    }

    try {
      const results = await this.ctx.submit(messages);
      const ids = results.map((r) => r.id);
      const dups = results.filter((r) => r.duplicate && !r.stored).length;
      this.notStored.ok();
      this.ctx.logger.info('http message stored', {
        source: this.ctx.id,
        contentType,
        count: results.length,
        ids: ids.slice(0, 20),
        client: who.principal,
        ...(dups ? { duplicates: dups } : {}),
      });
      const extra = dups ? { duplicates: results.filter((r) => r.duplicate).map((r) => r.duplicateOf ?? r.id) } : {};
      const json =
        messages.length === 1 && !(this.cfg.batch && isBatch(contentType, body))
          ? { id: ids[0], ...(dups ? { duplicate: true } : {}) }
          : { ids, ...extra };
      return this.answer(reply, 202, json, ackFor && { body: ackFor, code: 'AA' });
    } catch (e) {
      return this.fail(reply, e, ackFor);
    }
  }

  private bad(reply: FastifyReply, reason: string, ackFor?: Buffer): FastifyReply {
    this.ctx.logger.warn('http message refused', { source: this.ctx.id, reason });
    return this.answer(reply, 400, { error: reason }, ackFor && { body: ackFor, code: 'AR', text: reason });
  }

  private fail(reply: FastifyReply, e: unknown, ackFor?: Buffer): FastifyReply {
    const err = FerryError.from(e);
    if (err.kind === 'input') {
      this.ctx.logger.warn('http message refused', { source: this.ctx.id, errorCode: err.code, reason: err.message });
      // status and ACK from the error catalogue: 400 / AR, 409 for a refused duplicate
      return this.answer(
        reply,
        httpStatusOf(err),
        { error: err.message, code: err.code },
        ackFor && { body: ackFor, code: ackCodeOf(err), text: err.message },
      );
    }
    this.notStored.failed({ errorCode: err.code, error: err.message });
    reply.header('retry-after', '1');
    // not stored, whatever the cause: the sender resends (503 / AE)
    return this.answer(
      reply,
      503,
      { error: 'the message could not be stored; retry later', code: err.code },
      ackFor && { body: ackFor, code: 'AE', text: 'not stored; retry later' },
    );
  }
}

function isBatch(contentType: string, body: Buffer): boolean {
  if (contentType !== 'application/hl7-v2') return false;
  const head = body
    .toString('latin1', 0, 8)
    .replace(/^\uFEFF/, '')
    .trimStart();
  return head.startsWith('FHS') || head.startsWith('BHS');
}
