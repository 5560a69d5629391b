import { ACK_EVENT, type MessageEvent, type MessageHeaders, type StoredDelivery, type StoredError, type StoredMessage } from '../model/message';

/**
 * What roles below phi-reader may see of a message: its routing metadata, never a patient's
 * identifiers. Headers are kept by name (a plugin may add its own, which could be identifiers);
 * ordering keys (by default `<authority>|<MRN>`) and error texts (which may quote the message)
 * are dropped, error codes kept.
 */
const SAFE_HEADERS = ['messageType', 'trigger', 'controlId', 'sendingApplication', 'sendingFacility', 'receivingApplication', 'receivingFacility', 'version'] as const;

function safeHeaders(h: MessageHeaders): MessageHeaders {
  const out: MessageHeaders = {};
  for (const k of SAFE_HEADERS) if (h[k] !== undefined) out[k] = h[k];
  return out;
}

function safeError(e: StoredError | undefined): Pick<StoredError, 'code' | 'retryable'> | undefined {
  if (!e) return undefined;
  return e.retryable === undefined ? { code: e.code } : { code: e.code, retryable: e.retryable };
}

/** A message's metadata without identifiers (no body, bundle, ordering key, other headers, error text). */
export function withoutIdentifiers(m: StoredMessage): Record<string, unknown> {
  const { body: _b, bundle: _bu, headers, error, orderingKey: _k, ...meta } = m as StoredMessage & { orderingKey?: string };
  const out: Record<string, unknown> = { ...meta, headers: safeHeaders(headers ?? {}) };
  if (error) out.error = safeError(error);
  return out;
}

export function deliveryWithoutIdentifiers(d: StoredDelivery): Record<string, unknown> {
  const { orderingKey: _k, lastError, ...rest } = d;
  const out: Record<string, unknown> = { ...rest };
  if (lastError) out.lastError = safeError(lastError);
  return out;
}

/**
 * An event for roles below phi-reader: an `ack` event's detail (the ACK sent) reduced to its MSA
 * acknowledgment code and control id (`MSA|AE|CTL1`): its ERR texts and other fields stay out.
 */
export function eventWithoutIdentifiers(e: MessageEvent): MessageEvent {
  if (e.status !== ACK_EVENT || !e.detail) return e;
  const msa = e.detail
    .split(/\r\n|\r|\n/)
    .filter((l) => l.startsWith('MSA'))
    .map((l) => {
      const f = l.split(l[3] ?? '|');
      return [f[0], f[1], f[2]].map((v) => v ?? '').join('|');
    });
  return { ...e, detail: msa.join('\n') };
}

const SECRET_KEY = /(secret|password|passphrase|token|credential|private|apikey|api_key|^key$|hash|authorization)/i;

/** A config for display: values of secret-looking keys replaced, passwords in URLs masked. */
export function redactConfig(v: unknown, key = ''): unknown {
  if (typeof v === 'string') {
    if (SECRET_KEY.test(key) && v !== '') return '(redacted)';
    return v.replace(/(\/\/[^/:@\s]+:)[^@/\s]+@/g, '$1(redacted)@');
  }
  if (Array.isArray(v)) return v.map((x) => redactConfig(x, key));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = redactConfig(x, k);
    return out;
  }
  return v;
}
