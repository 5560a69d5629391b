import { inject, injectable } from 'tsyringe';
import { configError, FerryError } from '../errors';
import type { Delivery, MessageSink, SinkContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import { SinkAuth, sinkAuthSchema, type SinkAuthConfig } from './auth';
import {
  deliveryPayloadJson,
  fhirToFormatCode,
  formatName,
  headerMap,
  httpUrl,
  networkDeliveryError,
  OWN_FORMATS,
  requestSignal,
  statusDeliveryError,
  writtenMessages,
} from './common';
import {
  defineSchema,
  schemaDefaults,
  withSchemaDefaults,
  type SchemaInput,
  type SchemaType,
} from '../config/schema-type';

/** `sinks.<id>` keys of a `type: http` sink. */
export const httpSinkSchema = defineSchema({
  url: { doc: 'Where bundles are sent (http or https URL)', format: httpUrl, default: '' },
  method: { doc: 'POST or PUT', format: ['POST', 'PUT'], default: 'POST' },
  headers: {
    doc: 'Extra request headers (values may use ${ENV})',
    format: headerMap,
    default: {} as Record<string, string>,
  },
  contentType: {
    doc: 'Content-Type of the body (default: application/fhir+json; format hl7v2: application/hl7-v2)',
    format: String,
    default: '',
  },
  format: {
    doc: 'fhir: the Bundle as JSON; hl7v2 (with the hl7v2-mllp plugin): the Bundle as one HL7 v2 message built with `profile` (FHIR-TO-V2.md)',
    format: formatName(OWN_FORMATS.http),
    default: 'fhir',
  },
  profile: {
    doc: 'format hl7v2 (or another plugin-written format): the receiver profile, checked by the plugin when the config loads',
    format: Object,
    default: {},
  },
  envelope: {
    doc: 'Send { messageId, deliveryId, routeId, sourceId, messageType, controlId, receivedAt, bundle } instead of the bare bundle',
    format: Boolean,
    default: false,
  },
  timeoutMs: { doc: 'Timeout of one request (connect + answer)', format: 'nat', default: 10_000 },
  auth: sinkAuthSchema,
});

export type HttpSinkConfig = SchemaType<typeof httpSinkSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type HttpSinkInput = SchemaInput<typeof httpSinkSchema>;

/**
 * POSTs each bundle as JSON. 2xx is success; 408/425/429/5xx, timeouts and network errors are
 * retryable (a Retry-After is passed on as `details.retryAfterMs`); any other answer (4xx, 3xx)
 * is not. Every request carries `X-Ferry-Message-Id`, `X-Ferry-Delivery-Id` and `Idempotency-Key`
 * (both the delivery id, stable across retries) and `X-Ferry-Attempt`.
 */
@injectable()
export class HttpSink implements MessageSink {
  private readonly cfg: HttpSinkConfig;
  private readonly auth: SinkAuth;

  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<HttpSinkInput>) {
    this.cfg = withSchemaDefaults(httpSinkSchema, ctx.config);
    if (!this.cfg.url) throw configError('SINK_URL', `sinks.${ctx.id}.url: required`);
    if (this.format !== 'fhir' && !ctx.fromFhir)
      throw configError('SINK_FORMAT', `sinks.${ctx.id}.format: ${this.format} needs a loaded plugin that writes it`);
    if (!this.cfg.contentType)
      this.cfg.contentType =
        this.format === 'fhir'
          ? 'application/fhir+json'
          : this.format === 'hl7v2'
            ? 'application/hl7-v2'
            : 'text/plain';
    this.auth = new SinkAuth(this.cfg.auth, `sinks.${ctx.id}`, this.cfg.timeoutMs);
  }

  async deliver(d: Delivery): Promise<void> {
    const body = this.format === 'fhir' ? deliveryPayloadJson(d, this.cfg.envelope) : await this.written(d);
    let res = await this.send(d, body);
    if (res.response.status === 401 && this.auth.invalidate(res.authorization)) res = await this.send(d, body);
    const { response } = res;
    // Drain the body so the connection can be reused; never put it in errors or logs (may echo PHI).
    await response.arrayBuffer().catch(() => undefined);
    if (response.status >= 200 && response.status < 300) {
      this.ctx.logger.debug('bundle posted', { sink: this.ctx.id, messageId: d.message.id, status: response.status });
      return;
    }
    const location = response.status >= 300 && response.status < 400 ? response.headers.get('location') : null;
    throw statusDeliveryError(
      `http sink ${this.ctx.id}`,
      `${this.cfg.method} ${redact(this.cfg.url)}`,
      response.status,
      response.headers,
      location ? { location } : {},
      location ? 'redirects are not followed; configure the final URL' : response.statusText,
    );
  }

  /** A plugin-written format (hl7v2): the one message the Bundle becomes (several: dead, with the reason, rather than part of it). */
  private get format(): string {
    return this.cfg.format;
  }

  private async written(d: Delivery): Promise<string> {
    const msgs = await writtenMessages(`http sink ${this.ctx.id}`, 'HTTP', this.ctx, d, this.format, this.cfg.profile);
    if (msgs.length !== 1)
      throw new FerryError(
        fhirToFormatCode('HTTP', this.format),
        `message ${d.message.id}: the Bundle gives ${msgs.length} ${this.format} messages; route one appointment per message`,
        { kind: 'input', retryable: false },
      );
    return msgs[0];
  }

  private async send(d: Delivery, body: string): Promise<{ response: Response; authorization?: string }> {
    const signal = requestSignal(this.cfg.timeoutMs, d);
    const what = `${this.cfg.method} ${redact(this.cfg.url)}`;
    let authorization: string | undefined;
    try {
      authorization = await this.auth.authorization(signal);
      const headers: Record<string, string> = {
        ...Object.fromEntries(Object.entries(this.cfg.headers).map(([k, v]) => [k, String(v)])),
        'content-type': this.cfg.contentType,
        accept: 'application/json, application/fhir+json;q=0.9, */*;q=0.1',
        'x-ferry-message-id': d.message.id,
        'x-ferry-delivery-id': d.deliveryId,
        'x-ferry-attempt': String(d.attempt),
        'idempotency-key': d.deliveryId,
        ...(authorization ? { authorization } : {}),
      };
      const response = await fetch(this.cfg.url, {
        method: this.cfg.method,
        headers,
        body,
        signal,
        redirect: 'manual',
      });
      return { response, authorization };
    } catch (e) {
      if (FerryError.is(e)) throw e; // token endpoint errors keep their own classification
      throw networkDeliveryError(`http sink ${this.ctx.id}`, what, e, this.cfg.timeoutMs);
    }
  }
}

/** A URL without credentials or query (which may carry tokens), for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

/** `auth:` with the schema's defaults (none). */
export function defaultAuth(): SinkAuthConfig {
  return schemaDefaults(sinkAuthSchema);
}
