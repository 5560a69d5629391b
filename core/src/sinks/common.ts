import { FerryError, permanentDeliveryError, retryableDeliveryError } from '../errors';
import type { Delivery, SinkContext } from '../plugin/api';
import { parseRetryAfter } from '../vendor/http-client';

/** convict format: a non-empty string. */
export const nonEmptyString = (what: string) =>
  function nonEmpty(v: unknown): void {
    if (typeof v !== 'string' || !v.trim()) throw new Error(`${what} is required`);
  };

/** convict format: an absolute http(s) URL. */
export function httpUrl(v: unknown): void {
  if (typeof v !== 'string' || !v) throw new Error('is required (an http:// or https:// URL)');
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new Error(`must be an absolute http(s) URL, got "${v}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new Error(`must be an http(s) URL, got protocol ${u.protocol}`);
}

/** convict format: an http(s) URL or empty. */
export function optionalHttpUrl(v: unknown): void {
  if (v === '' || v === undefined) return;
  httpUrl(v);
}

/** convict format: a map of header name -> string value. */
export function headerMap(v: unknown): void {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new Error('must be a mapping of header name -> value');
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) throw new Error(`"${k}" is not a valid header name`);
    if (typeof val !== 'string' && typeof val !== 'number') throw new Error(`header "${k}" must be a string`);
  }
}

/** HTTP statuses a delivery may be retried on. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** The network-level reason of a failed fetch (ECONNREFUSED, ETIMEDOUT, ...). */
export function networkCode(e: unknown): string {
  const err = e as {
    name?: string;
    code?: string;
    cause?: { code?: string; name?: string; cause?: { code?: string } };
  };
  if (err?.name === 'TimeoutError' || err?.cause?.name === 'TimeoutError') return 'TIMEOUT';
  if (err?.name === 'AbortError') return 'ABORTED';
  return err?.cause?.code ?? err?.cause?.cause?.code ?? err?.code ?? 'NETWORK';
}

/**
 * The signal of one request of a delivery: its own timeout, and the delivery's signal (aborted
 * when the engine gives the attempt up after `deliveryTimeoutMs`), whichever comes first.
 */
export function requestSignal(timeoutMs: number, d: Pick<Delivery, 'signal'>): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs);
  const given = d.signal;
  return given ? AbortSignal.any([given, timeout]) : timeout;
}

/** A failed request (no HTTP answer) as a retryable delivery error. */
export function networkDeliveryError(sink: string, what: string, e: unknown, timeoutMs: number): FerryError {
  const code = networkCode(e);
  if (code === 'TIMEOUT')
    return retryableDeliveryError('TIMEOUT', `${sink}: ${what} timed out after ${timeoutMs} ms`, { timeoutMs }, e);
  return retryableDeliveryError('NETWORK', `${sink}: ${what} failed: ${code}`, { networkCode: code }, e);
}

/** A non-2xx answer as a delivery error; retryable for 408/425/429/5xx, with `retryAfterMs` from Retry-After. */
export function statusDeliveryError(
  sink: string,
  what: string,
  status: number,
  headers: { get(name: string): string | null } | undefined,
  extra: Record<string, unknown> = {},
  reason = '',
): FerryError {
  const retryAfterMs = parseRetryAfter(headers?.get('retry-after') ?? null);
  const details = { status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}), ...extra };
  const msg = `${sink}: ${what} answered HTTP ${status}${reason ? ` (${reason})` : ''}`;
  if (isRetryableStatus(status))
    return retryableDeliveryError(status === 429 ? 'THROTTLED' : 'UNAVAILABLE', msg, details);
  if (status === 401 || status === 403) return permanentDeliveryError('UNAUTHORIZED', msg, details);
  return permanentDeliveryError('REJECTED', msg, details);
}

/** Make a string safe as a file name (message ids are uuids, but be strict). */
export function safeFileName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 200) || '_';
}

/**
 * convict format of a writing sink's `format`: one of the sink's own formats, or a format name a
 * plugin transform writes (`outputFormats`, e.g. hl7v2), checked by the config loader against the
 * loaded plugins (`pluginWrittenFormat`).
 */
export function formatName(own: readonly string[]): (v: unknown) => void {
  return (v: unknown) => {
    if (typeof v !== 'string' || !/^[a-z][a-z0-9-]*$/.test(v))
      throw new Error(`must be one of ${own.join(', ')} or a format a loaded plugin writes (e.g. hl7v2)`);
  };
}

export { OWN_FORMATS } from './formats';

/**
 * The delivery's Bundle in a plugin-written format (`format: hl7v2`): the messages, through the sink
 * context's `fromFhir` hook. The control ids are seeded with the stored message id and the sink id (the
 * same on a retry or replay). A Bundle that cannot be expressed is a dead delivery naming the reason.
 */
/** The dead-delivery codes of a core sink writing a plugin format (hl7v2 named; any other plugin format one code). */
export function fhirToFormatCode(kind: 'FILE' | 'HTTP', format: string) {
  if (format === 'hl7v2')
    return kind === 'FILE' ? ('DELIVERY_FILE_FHIR_TO_HL7V2' as const) : ('DELIVERY_HTTP_FHIR_TO_HL7V2' as const);
  return kind === 'FILE' ? ('DELIVERY_FILE_FHIR_TO_FORMAT' as const) : ('DELIVERY_HTTP_FHIR_TO_FORMAT' as const);
}

export async function writtenMessages(
  sink: string,
  kind: 'FILE' | 'HTTP',
  ctx: SinkContext,
  d: Delivery,
  format: string,
  profile: unknown,
): Promise<string[]> {
  if (!ctx.fromFhir)
    throw permanentDeliveryError(
      kind === 'FILE' ? 'FILE_NO_WRITER' : 'HTTP_NO_WRITER',
      `${sink}: format ${format} needs a plugin that writes it`,
    );
  const m = d.message;
  try {
    return await ctx.fromFhir(d.bundle, {
      format,
      profile,
      seed: `${m.id}|${ctx.id}`,
      now: m.receivedAt,
      messageId: m.id,
    });
  } catch (e) {
    const err = FerryError.from(e);
    ctx.logger.warn(`${sink} cannot write the bundle as ${format}`, {
      sink: ctx.id,
      deliveryId: d.deliveryId,
      messageId: m.id,
      errorCode: err.code,
    });
    throw new FerryError(fhirToFormatCode(kind, format), `message ${m.id}: ${err.message}`, {
      kind: 'input',
      retryable: false,
      details: err.details,
      cause: e,
    });
  }
}

/**
 * What a sink writes for a delivery: the bare bundle, or with `envelope` the ids a receiver needs
 * to de-duplicate and trace it ({ messageId, deliveryId, routeId, sourceId, messageType, controlId,
 * receivedAt, bundle }).
 */
export function deliveryPayload(d: Delivery, envelope: boolean): unknown {
  if (!envelope) return d.bundle;
  return { ...envelopeFields(d), bundle: d.bundle };
}

function envelopeFields(d: Delivery): Record<string, unknown> {
  return {
    messageId: d.message.id,
    deliveryId: d.deliveryId,
    routeId: d.routeId,
    sourceId: d.message.sourceId,
    messageType: d.message.headers.messageType,
    controlId: d.message.headers.controlId,
    receivedAt: d.message.receivedAt instanceof Date ? d.message.receivedAt.toISOString() : d.message.receivedAt,
  };
}

/** The delivery's bundle as compact JSON: the stored text when the engine passed it, else serialised. */
export function bundleText(d: Delivery): string {
  return typeof d.bundleJson === 'string' ? d.bundleJson : JSON.stringify(d.bundle);
}

/**
 * `deliveryPayload` as compact JSON text, built around the stored bundle text (no parse and
 * serialise of the bundle). Same bytes as `JSON.stringify(deliveryPayload(d, envelope))`.
 */
export function deliveryPayloadJson(d: Delivery, envelope: boolean): string {
  const bundle = bundleText(d);
  if (!envelope) return bundle;
  const head = JSON.stringify(envelopeFields(d));
  return `${head.slice(0, -1)}${head.length > 2 ? ',' : ''}"bundle":${bundle}}`;
}
