import { isAscii } from 'node:buffer';
import { TextDecoder } from 'node:util';
/**
 * Bytes -> text for HL7 v2. MSH-18 names the character set; feeds often omit it or lie, so:
 *  - a UTF-8 BOM is stripped (and wins);
 *  - `UNICODE UTF-8` -> UTF-8; `8859/1`..`8859/15` -> the ISO-8859 part; `ASCII` -> ASCII when the
 *    bytes are 7-bit, otherwise treated like an absent MSH-18;
 *  - absent / unknown MSH-18 -> strict UTF-8, and when the bytes are not valid UTF-8 the configured
 *    fallback (default `latin1`, which never fails).
 */

export type CharsetFallback = 'latin1' | 'utf8' | 'windows-1252';

const BOM0 = 0xef;
const BOM1 = 0xbb;
const BOM2 = 0xbf;

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const decoders = new Map<string, TextDecoder>();
function decoder(label: string): TextDecoder {
  let d = decoders.get(label);
  if (!d) {
    d = new TextDecoder(label);
    decoders.set(label, d);
  }
  return d;
}

export function hasUtf8Bom(buf: Uint8Array): boolean {
  return buf.length >= 3 && buf[0] === BOM0 && buf[1] === BOM1 && buf[2] === BOM2;
}

/** Reads MSH-18 from the raw bytes (ASCII-safe: delimiters and MSH are 7-bit). */
export function sniffMsh18(buf: Uint8Array): string | undefined {
  let i = hasUtf8Bom(buf) ? 3 : 0;
  // skip leading whitespace / MLLP leftovers
  while (i < buf.length && (buf[i] === 0x0a || buf[i] === 0x0d || buf[i] === 0x20 || buf[i] === 0x0b)) i++;
  if (buf[i] !== 0x4d || buf[i + 1] !== 0x53 || buf[i + 2] !== 0x48) return undefined; // 'MSH'
  const fs = buf[i + 3];
  if (fs === undefined) return undefined;
  let field = 1; // buf[i+3] is MSH-1
  let start = i + 4;
  for (let j = i + 4; j < buf.length; j++) {
    const b = buf[j];
    if (b === 0x0d || b === 0x0a) {
      if (field === 17) return ascii(buf, start, j);
      return undefined;
    }
    if (b === fs) {
      field++;
      if (field === 18) start = j + 1;
      else if (field === 19) return ascii(buf, start, j);
    }
  }
  return field === 18 ? ascii(buf, start, buf.length) : undefined;
}

function ascii(buf: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let k = from; k < to; k++) s += String.fromCharCode(buf[k]);
  // first repetition, first component ('~' and '^' are the usual delimiters; good enough for a charset name)
  const cut = s.search(/[~^]/);
  return (cut >= 0 ? s.slice(0, cut) : s).trim();
}

/** node:buffer isAscii checks in native code, several times faster than a JS loop over every byte of every message. */
function isSevenBit(buf: Uint8Array, from: number): boolean {
  return isAscii(from === 0 ? buf : buf.subarray(from));
}

/** Maps an MSH-18 value to a WHATWG encoding label, or undefined when unknown. */
export function charsetLabel(msh18: string): string | undefined {
  const v = msh18.toUpperCase().replace(/\s+/g, ' ').trim();
  if (v === 'UNICODE UTF-8' || v === 'UTF-8' || v === 'UNICODE') return 'utf-8';
  const m = /^8859\/(\d{1,2})$/.exec(v);
  if (m) return m[1] === '1' ? 'latin1' : `iso-8859-${m[1]}`;
  if (v === 'ASCII') return 'ascii';
  return undefined;
}

export interface DecodedText {
  text: string;
  /** The encoding actually used. */
  encoding: string;
}

export function decodeHl7Bytes(buf: Uint8Array, fallback: CharsetFallback = 'latin1'): DecodedText {
  const bom = hasUtf8Bom(buf);
  const body = bom ? buf.subarray(3) : buf;
  if (bom) return { text: decoder('utf-8').decode(body), encoding: 'utf-8' };
  const msh18 = sniffMsh18(body);
  const label = msh18 ? charsetLabel(msh18) : undefined;
  if (label === 'utf-8') return { text: decoder('utf-8').decode(body), encoding: 'utf-8' };
  if (label && label !== 'ascii') {
    try {
      return { text: decoder(label).decode(body), encoding: label };
    } catch {
      /* unsupported label in this runtime: fall through */
    }
  }
  if (isSevenBit(body, 0)) return { text: latin1(body), encoding: 'ascii' };
  try {
    return { text: utf8Strict.decode(body), encoding: 'utf-8' };
  } catch {
    if (fallback === 'windows-1252') return { text: windows1252(body), encoding: 'windows-1252' };
    if (fallback === 'utf8') return { text: decoder('utf-8').decode(body), encoding: 'utf-8' };
    return { text: latin1(body), encoding: 'latin1' };
  }
}

function latin1(body: Uint8Array): string {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('latin1');
}

// Node's TextDecoder treats windows-1252 as ISO-8859-1; map 0x80-0x9F ourselves (WHATWG table).
const CP1252 =
  '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f' +
  '\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';
function windows1252(body: Uint8Array): string {
  const s = latin1(body);
  return s.replace(/[\x80-\x9f]/g, (c) => CP1252[c.charCodeAt(0) - 0x80]);
}
