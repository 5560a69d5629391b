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
 * HL7 v2 is compared segment by segment: segment terminators (CR, LF, CRLF), empty lines and a
 * byte order mark do not count. JSON is compared as parsed (key order and white space do not
 * count); a body that does not parse is hashed as bytes. Anything else: its bytes.
 * The hash is a hex SHA-256 (64 characters); no part of the content is kept.
 */
export function contentHash(contentType: string, body: Buffer, ignoreFields: readonly string[] = []): string {
  const h = createHash('sha256');
  if (contentType === ContentType.hl7v2) {
    if (!hl7Direct(h, body, ignoreFields)) h.update(hl7Canonical(body, ignoreFields), 'latin1');
  } else if (contentType === ContentType.fhirJson || contentType === ContentType.json) {
    const text = jsonCanonical(body, ignoreFields);
    if (text === undefined) h.update(body);
    else h.update(text);
  } else h.update(body);
  return h.digest('hex');
}

const HL7_FIELD = /^([A-Z][A-Z0-9]{2})-([1-9][0-9]*)$/;
const JSON_PATH = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/** Parsed once per list (a source's config keeps its array). */
const dropsOf = new WeakMap<readonly string[], Map<string, number[]>>();

/** The ignored HL7 v2 fields by segment name. */
function hl7Drops(ignoreFields: readonly string[]): Map<string, number[]> {
  const known = dropsOf.get(ignoreFields);
  if (known) return known;
  const drop = new Map<string, number[]>();
  for (const f of ignoreFields) {
    const m = HL7_FIELD.exec(f);
    if (!m) continue;
    const list = drop.get(m[1]) ?? [];
    list.push(Number(m[2]));
    drop.set(m[1], list);
  }
  dropsOf.set(ignoreFields, drop);
  return drop;
}

const CR = 0x0d;
const LF = 0x0a;

/**
 * The common case hashed straight from the bytes (no string made, one pass of the hash): a message
 * starting with MSH, segments ended by CR only, no empty segment but at its end. The same hash as
 * `hl7Canonical` gives (a test checks it over the corpus); false when the body is not of that kind.
 */
function hl7Direct(h: ReturnType<typeof createHash>, body: Buffer, ignoreFields: readonly string[]): boolean {
  let end = body.length;
  while (end > 0 && body[end - 1] === CR) end--;
  if (end < 4 || body[0] !== 0x4d || body[1] !== 0x53 || body[2] !== 0x48) return false; // MSH
  if (body.indexOf(LF) >= 0) return false;
  const crcr = body.indexOf('\r\r', 0, 'latin1');
  if (crcr >= 0 && crcr < end) return false;
  const fs = body[3];
  const cuts: [number, number][] = [];
  for (const [seg, fields] of hl7Drops(ignoreFields)) {
    const head = `\r${seg}`;
    const shift = seg === 'MSH' || seg === 'FHS' || seg === 'BHS' ? 1 : 0;
    // Every segment of that name whose 4th byte is the field separator.
    const starts: number[] = seg === 'MSH' ? [0] : [];
    for (let at = body.indexOf(head, 0, 'latin1'); at >= 0 && at < end; at = body.indexOf(head, at + 1, 'latin1'))
      starts.push(at + 1);
    for (const s of starts) {
      if (body[s + 3] !== fs) continue;
      let segEnd = body.indexOf(CR, s);
      if (segEnd < 0 || segEnd > end) segEnd = end;
      for (const n of fields) {
        const k = n - shift;
        if (k < 1) continue;
        let pos = s;
        let found = true;
        for (let j = 0; j < k; j++) {
          const next = body.indexOf(fs, pos);
          if (next < 0 || next >= segEnd) {
            found = false;
            break;
          }
          pos = next + 1;
        }
        if (!found) continue;
        let stop = body.indexOf(fs, pos);
        if (stop < 0 || stop > segEnd) stop = segEnd;
        if (stop > pos) cuts.push([pos, stop]);
      }
    }
  }
  cuts.sort((a, b) => a[0] - b[0]);
  let from = 0;
  for (const [a, b] of cuts) {
    if (a < from) continue;
    if (a > from) h.update(body.subarray(from, a));
    from = b;
  }
  if (end > from) h.update(body.subarray(from, end));
  return true;
}

/** Whether `s` names an HL7 v2 field (`MSH-7`) or a JSON path (`meta.lastUpdated`). */
export function isIgnoreField(s: unknown): boolean {
  return typeof s === 'string' && (HL7_FIELD.test(s) || JSON_PATH.test(s));
}

function hl7Canonical(body: Buffer, ignoreFields: readonly string[]): string {
  // latin1: one character per byte, so any encoding hashes byte-exactly.
  let text = body.toString('latin1');
  if (text.startsWith('\xEF\xBB\xBF')) text = text.slice(3);
  const drop = hl7Drops(ignoreFields);
  const lines = text.split(/\r\n|\r|\n/).filter((l) => l !== '');
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
