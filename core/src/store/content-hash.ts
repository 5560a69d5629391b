import { createHash } from 'node:crypto';
import { ContentType } from '../model/message';

/**
 * The content hash of a message for duplicate detection: two messages with the same identity
 * (source, sender, control id) are duplicates only if their content hashes are equal too.
 *
 * `ignoreFields` names what legitimately changes on a resend and is left out of the hash:
 * - HL7 v2 fields as `SEG-n` (`MSH-7`, `EVN-2`): field n of every segment of that name is
 *   emptied (MSH-1 is the field separator, so `MSH-7` is the 6th value after `MSH`);
 * - JSON properties as dotted paths from the root (`meta.lastUpdated`,
 *   `entry.resource.meta.lastUpdated`): every array on the way is walked, element by element.
 * Entries of the other kind are ignored (one list serves a source whatever it receives).
 *
 * HL7 v2 is compared segment by segment: segment terminators (CR, LF, CRLF), blank lines and a
 * byte order mark do not count. JSON is compared as parsed (key order and white space do not
 * count); a body that does not parse is hashed as bytes. Anything else: its bytes.
 * The hash is a hex SHA-256 (64 characters); no part of the content is kept.
 */
export function contentHash(contentType: string, body: Buffer, ignoreFields: readonly string[] = []): string {
  const h = createHash('sha256');
  if (contentType === ContentType.hl7v2) h.update(hl7Canonical(body, ignoreFields));
  else if (contentType === ContentType.fhirJson || contentType === ContentType.json) {
    const text = jsonCanonical(body, ignoreFields);
    if (text === undefined) h.update(body);
    else h.update(text);
  } else h.update(body);
  return h.digest('hex');
}

const HL7_FIELD = /^([A-Z][A-Z0-9]{2})-([1-9][0-9]*)$/;
const JSON_PATH = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/** Whether `s` names an HL7 v2 field (`MSH-7`) or a JSON path (`meta.lastUpdated`). */
export function isIgnoreField(s: unknown): boolean {
  return typeof s === 'string' && (HL7_FIELD.test(s) || JSON_PATH.test(s));
}

function hl7Canonical(body: Buffer, ignoreFields: readonly string[]): string {
  // latin1: one character per byte, so any encoding hashes byte-exactly.
  let text = body.toString('latin1');
  if (text.startsWith('\xEF\xBB\xBF')) text = text.slice(3);
  const drop = new Map<string, number[]>();
  for (const f of ignoreFields) {
    const m = HL7_FIELD.exec(f);
    if (!m) continue;
    const list = drop.get(m[1]) ?? [];
    list.push(Number(m[2]));
    drop.set(m[1], list);
  }
  const lines = text.split(/\r\n|\r|\n/).filter((l) => l.trim() !== '');
  if (!drop.size) return lines.join('\r');
  // The field separator is MSH-1 (the 4th character of MSH, FHS or BHS); '|' otherwise.
  const header = lines.find((l) => /^(MSH|FHS|BHS)/.test(l));
  const fs = header && header.length > 3 ? header[3] : '|';
  return lines
    .map((line) => {
      const fields = drop.get(line.slice(0, 3));
      if (!fields || (line.length > 3 && line[3] !== fs)) return line;
      const parts = line.split(fs);
      // MSH-1 is the separator itself: MSH-n is parts[n - 1]; for other segments parts[n].
      const shift = line.startsWith('MSH') || line.startsWith('FHS') || line.startsWith('BHS') ? 1 : 0;
      for (const n of fields) {
        const i = n - shift;
        if (i >= 1 && i < parts.length) parts[i] = '';
      }
      return parts.join(fs);
    })
    .join('\r');
}

function jsonCanonical(body: Buffer, ignoreFields: readonly string[]): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8').replace(/^\uFEFF/, ''));
  } catch {
    return undefined;
  }
  for (const f of ignoreFields) if (!HL7_FIELD.test(f) && JSON_PATH.test(f)) dropPath(doc, f.split('.'));
  return stable(doc);
}

function dropPath(node: unknown, path: string[]): void {
  if (Array.isArray(node)) {
    for (const x of node) dropPath(x, path);
    return;
  }
  if (!node || typeof node !== 'object') return;
  const [head, ...rest] = path;
  const o = node as Record<string, unknown>;
  if (!Object.prototype.hasOwnProperty.call(o, head)) return;
  if (!rest.length) delete o[head];
  else dropPath(o[head], rest);
}

/** JSON text with object keys sorted (the same document always gives the same text). */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stable(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
