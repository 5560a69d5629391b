import { createHash, scrypt } from 'node:crypto';
import {
  ACK_EVENT,
  type MessageEvent,
  type MessageHeaders,
  type StoredDelivery,
  type StoredError,
  type StoredMessage,
} from '../model/message';

/**
 * What roles below phi-reader may see of a message: its routing metadata, never a patient's
 * identifiers. Headers are kept by name (a plugin may add its own, which could be identifiers);
 * ordering keys (by default `<authority>|<MRN>`) and error texts (which may quote the message)
 * are dropped, error codes kept.
 */
const SAFE_HEADERS = [
  'messageType',
  'trigger',
  'controlId',
  'sendingApplication',
  'sendingFacility',
  'receivingApplication',
  'receivingFacility',
  'version',
] as const;

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
  const {
    body: _b,
    bundle: _bu,
    headers,
    error,
    orderingKey: _k,
    ...meta
  } = m as StoredMessage & { orderingKey?: string };
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

/**
 * A config for display: values of secret-looking keys replaced, passwords in URLs masked.
 * `mask(secret, path)` gives the replacement (default `(redacted)`; the stored config versions use
 * `secretFingerprints` so that a rotated secret shows as changed).
 */
export function redactConfig(
  v: unknown,
  key = '',
  mask: (secret: string, path: string) => string = () => '(redacted)',
  at = '',
): unknown {
  if (typeof v === 'string') {
    if (SECRET_KEY.test(key) && v !== '') return mask(v, at);
    return v.replace(/(\/\/[^/:@\s]+:)([^@/\s]+)@/g, (_all, head: string, pw: string) => `${head}${mask(pw, at)}@`);
  }
  if (Array.isArray(v)) return v.map((x, i) => redactConfig(x, key, mask, `${at}[${i}]`));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = redactConfig(x, k, mask, at ? `${at}.${k}` : k);
    return out;
  }
  return v;
}

/** The secrets of a config by path (what `redactConfig` masks). */
export function configSecrets(v: unknown): { path: string; value: string }[] {
  const out: { path: string; value: string }[] = [];
  redactConfig(v, '', (value, path) => (out.push({ path, value }), ''));
  return out;
}

const fingerprintCache = new Map<string, string>();

/**
 * A fingerprint per secret, by path: `(redacted, fingerprint <12 hex>)` -- the first 48 bits of
 * scrypt(secret, salt = its path): the same secret gives the same text, a rotated one another, and
 * a guess costs a scrypt (N = 2^14) to check. Computed off the event loop; remembered per process.
 */
export async function secretFingerprints(config: unknown): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const { path, value } of configSecrets(config)) {
    const memo = createHash('sha256').update(path).update('\0').update(value).digest('hex');
    let fp = fingerprintCache.get(memo);
    if (!fp) {
      fp = await new Promise<string>((resolve, reject) =>
        scrypt(value, `ferry-config-version:${path}`, 6, { N: 1 << 14, r: 8, p: 1 }, (e, key) =>
          e ? reject(e) : resolve(key.toString('hex')),
        ),
      );
      if (fingerprintCache.size > 1000) fingerprintCache.clear();
      fingerprintCache.set(memo, fp);
    }
    out.set(path, `(redacted, fingerprint ${fp})`);
  }
  return out;
}
