import { inputError, type CodeSuffix } from '@ferry/core';
import type { Delimiters } from './delimiters';
import { escapeHl7, unescapeHl7 } from './escape';

/**
 * Ferry's fast HL7 v2 reader: splits segments and fields eagerly (cheap string splits) and
 * repetitions / components / subcomponents lazily, per field, on first access, with escape
 * sequences decoded at the leaves. Indexing follows the HL7 spec: field (sequence) numbers,
 * components and subcomponents are 1-based; repetitions are 0-based indexes into the list.
 */

/** One repetition: components, each a list of subcomponents (escape sequences decoded). */
export type Hl7Rep = string[][];

/** Where a problem is, ready for an ERR-2 (ERL) segment. */
export interface Hl7Location {
  segment: string;
  /** 1-based position of the segment in the message. */
  sequence: number;
  field?: number;
  repetition?: number;
  component?: number;
  subcomponent?: number;
}

export function hl7InputError(code: CodeSuffix<'INPUT_'>, message: string, location: Hl7Location, errCode = '207') {
  // HL7 table 0357: 100 segment sequence error, 101 required field missing, 102 data type error, 207 application internal error
  return inputError(code, message, { location, hl7ErrorCode: errCode });
}

const SEGMENT_NAME = /^[A-Z][A-Z0-9]{2}$/;
const EMPTY_REP = Object.freeze([]) as unknown as Hl7Rep;
const EMPTY_REPS = Object.freeze([]) as unknown as Hl7Rep[];

export class Hl7Segment {
  /** fields[n] is the raw (still escaped) text of field n; fields[0] is the segment name. */
  readonly fields: string[];
  private parsed: (Hl7Rep[] | undefined)[] | undefined;

  constructor(
    readonly name: string,
    fields: string[],
    /** 1-based position in the message. */
    readonly sequence: number,
    readonly delimiters: Delimiters,
  ) {
    this.fields = fields;
  }

  /** Number of the last field present. */
  get size(): number {
    return this.fields.length - 1;
  }

  /** The raw (escaped) text of field n. */
  raw(n: number): string {
    return this.fields[n] ?? '';
  }

  /** True when field n has any content. */
  has(n: number): boolean {
    const f = this.fields[n];
    return f !== undefined && f !== '' && f !== '""';
  }

  /** All repetitions of field n, parsed (components x subcomponents, unescaped). */
  reps(n: number): Hl7Rep[] {
    const raw = this.fields[n];
    if (raw === undefined || raw === '') return EMPTY_REPS;
    let cache = this.parsed;
    if (!cache) cache = this.parsed = [];
    let v = cache[n];
    if (v === undefined) {
      v = this.name === 'MSH' && (n === 1 || n === 2) ? [[[raw]]] : parseField(raw, this.delimiters);
      cache[n] = v;
    }
    return v;
  }

  /** One repetition of field n (0-based), [] when absent. */
  rep(n: number, r = 0): Hl7Rep {
    return this.reps(n)[r] ?? EMPTY_REP;
  }

  /** A leaf value, '' when absent: `get(3, 0, 4, 1)` = PID-3, first repetition, component 4, subcomponent 1. */
  get(n: number, r = 0, comp = 1, sub = 1): string {
    const raw = this.fields[n];
    if (raw === undefined || raw === '') return '';
    return this.reps(n)[r]?.[comp - 1]?.[sub - 1] ?? '';
  }

  /** Field n, first repetition, component 1.. as text (first subcomponents), shorthand for simple fields. */
  str(n: number, comp = 1): string {
    return this.get(n, 0, comp, 1);
  }
}

/** A leaf holding only blanks is empty (as receivers treat it); anything else is kept exactly as sent. */
function leaf(v: string): string {
  return v.length !== 0 && v.charCodeAt(0) <= 32 && v.trim() === '' ? '' : v;
}

function parseField(raw: string, d: Delimiters): Hl7Rep[] {
  const reps = raw.indexOf(d.repetition) >= 0 ? raw.split(d.repetition) : [raw];
  const out: Hl7Rep[] = new Array(reps.length);
  const hasSub = d.subcomponent !== '';
  // escapes are rare: decode leaves only when the field contains the escape character at all
  const esc = d.escape !== '' && raw.indexOf(d.escape) >= 0;
  for (let i = 0; i < reps.length; i++) {
    const r = reps[i];
    const comps = r.indexOf(d.component) >= 0 ? r.split(d.component) : [r];
    const rep: Hl7Rep = new Array(comps.length);
    for (let j = 0; j < comps.length; j++) {
      const c = comps[j];
      if (hasSub && c.indexOf(d.subcomponent) >= 0) {
        const subs = c.split(d.subcomponent);
        for (let k = 0; k < subs.length; k++) subs[k] = leaf(esc ? unescapeHl7(subs[k], d) : subs[k]);
        rep[j] = subs;
      } else rep[j] = [leaf(esc ? unescapeHl7(c, d) : c)];
    }
    out[i] = rep;
  }
  return out;
}

export class Hl7Message {
  private byName: Map<string, Hl7Segment[]> | undefined;
  constructor(
    readonly segments: Hl7Segment[],
    readonly delimiters: Delimiters,
  ) {}

  get msh(): Hl7Segment {
    return this.segments[0];
  }

  /** All segments with that name, in order. */
  all(name: string): Hl7Segment[] {
    if (!this.byName) {
      const m = new Map<string, Hl7Segment[]>();
      for (const s of this.segments) {
        const l = m.get(s.name);
        if (l) l.push(s);
        else m.set(s.name, [s]);
      }
      this.byName = m;
    }
    return this.byName.get(name) ?? [];
  }

  /** The first segment with that name. */
  segment(name: string): Hl7Segment | undefined {
    return this.all(name)[0];
  }

  /** A leaf of the first segment with that name: `msg.get('PID', 3, 0, 1)`. */
  get(segment: string, field: number, rep = 0, comp = 1, sub = 1): string {
    return this.segment(segment)?.get(field, rep, comp, sub) ?? '';
  }

  /** Serialises back to HL7 text with `\r` segment ends (fields kept as received). */
  toString(): string {
    return this.segments.map((s) => serializeRawSegment(s)).join('\r') + '\r';
  }
}

function serializeRawSegment(s: Hl7Segment): string {
  const fs = s.delimiters.field;
  if (s.name === 'MSH') return 'MSH' + fs + s.fields.slice(2).join(fs);
  return s.fields.join(fs);
}

/** Reads MSH-1/MSH-2 delimiters from the MSH line. */
export function readDelimiters(mshLine: string, sequence = 1): Delimiters {
  const fs = mshLine[3];
  if (fs === undefined || /[A-Za-z0-9\r\n ]/.test(fs))
    throw hl7InputError(
      'HL7_BAD_DELIMITERS',
      'MSH-1 (field separator) is missing or invalid',
      { segment: 'MSH', sequence, field: 1 },
      '102',
    );
  const end = mshLine.indexOf(fs, 4);
  const enc = end < 0 ? mshLine.slice(4) : mshLine.slice(4, end);
  if (enc.length < 1 || enc.length > 5)
    throw hl7InputError(
      'HL7_BAD_DELIMITERS',
      'MSH-2 (encoding characters) is missing or invalid',
      { segment: 'MSH', sequence, field: 2 },
      '102',
    );
  const chars = [fs, ...enc];
  if (new Set(chars).size !== chars.length || chars.some((c) => /[A-Za-z0-9\r\n]/.test(c)))
    throw hl7InputError(
      'HL7_BAD_DELIMITERS',
      'MSH-2 encoding characters are repeated or alphanumeric',
      { segment: 'MSH', sequence, field: 2 },
      '102',
    );
  return {
    field: fs,
    component: enc[0],
    repetition: enc[1] ?? '\u0000',
    escape: enc[2] ?? '',
    subcomponent: enc[3] ?? '',
    truncation: enc[4] ?? '',
  };
}

/** Splits text into segment lines on `\r`, `\n` or `\r\n`, dropping blank lines and a leading BOM. */
export function splitLines(text: string): string[] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.indexOf('\n') >= 0 ? text.split(/\r\n|\n|\r/) : text.split('\r');
  const out: string[] = [];
  for (const l of lines) {
    if (l.length === 0) continue;
    // whitespace / control-only lines (MLLP VT/FS leftovers, DOS EOF \x1a, trailing blanks) are not segments
    // eslint-disable-next-line no-control-regex -- control characters are what this looks for
    if (l.charCodeAt(0) <= 0x20 && /^[\s\x00-\x1f]*$/.test(l)) continue;
    out.push(l);
  }
  return out;
}

/**
 * Parses one HL7 v2 message (text). Throws a FerryError (kind input) with an ERR-ready location
 * for input that is not HL7 v2.
 */
export function parseHl7(text: string): Hl7Message {
  const lines = splitLines(text);
  if (lines.length === 0)
    throw hl7InputError('HL7_EMPTY', 'the message is empty', { segment: 'MSH', sequence: 1 }, '100');
  let first = lines[0];
  // tolerate stray leading characters before MSH (vertical tab, spaces)
  if (!first.startsWith('MSH')) {
    const at = first.indexOf('MSH');
    // eslint-disable-next-line no-control-regex -- VT (0x0b), the MLLP start byte, is what this looks for
    if (at >= 0 && at <= 4 && /^[\s\x0b]*$/.test(first.slice(0, at))) first = lines[0] = first.slice(at);
    else
      throw hl7InputError(
        'HL7_NO_MSH',
        'the message does not start with an MSH segment',
        { segment: 'MSH', sequence: 1 },
        '100',
      );
  }
  const d = readDelimiters(first);
  const segments: Hl7Segment[] = new Array(lines.length);
  const fs = d.field;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const name = line.slice(0, 3);
    if (!SEGMENT_NAME.test(name) || (line.length > 3 && line[3] !== fs))
      throw hl7InputError(
        'HL7_BAD_SEGMENT',
        `segment ${i + 1} does not start with a segment id followed by the field separator`,
        { segment: SEGMENT_NAME.test(name) ? name : '???', sequence: i + 1 },
        '100',
      );
    let fields: string[];
    if (name === 'MSH') {
      if (i > 0)
        throw hl7InputError(
          'HL7_UNEXPECTED_MSH',
          `a second MSH at segment ${i + 1} (a batch? split it first)`,
          { segment: 'MSH', sequence: i + 1 },
          '100',
        );
      const parts = line.split(fs);
      fields = ['MSH', fs, ...parts.slice(1)];
    } else fields = line.split(fs);
    segments[i] = new Hl7Segment(name, fields, i + 1, d);
  }
  return new Hl7Message(segments, d);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A field value to write: a string, components, or components of subcomponents; an array of those for repetitions. */
export type Hl7WriteComponent = string | string[];
export type Hl7WriteRep = string | Hl7WriteComponent[];
export type Hl7WriteField = Hl7WriteRep | { reps: Hl7WriteRep[] } | undefined | null;

/** Encodes one field, escaping every leaf. */
export function encodeField(value: Hl7WriteField, d: Delimiters): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'object' && !Array.isArray(value))
    return value.reps.map((r) => encodeRep(r, d)).join(d.repetition);
  return encodeRep(value, d);
}

function encodeRep(r: Hl7WriteRep, d: Delimiters): string {
  if (typeof r === 'string') return escapeHl7(r, d);
  let comps = r.map((c) =>
    typeof c === 'string' ? escapeHl7(c, d) : c.map((s) => escapeHl7(s, d)).join(d.subcomponent),
  );
  while (comps.length > 1 && comps[comps.length - 1] === '') comps = comps.slice(0, -1);
  return comps.join(d.component);
}

/**
 * Encodes a segment: `encodeSegment('MSA', ['AA', controlId], d)`. For MSH, pass fields from MSH-3
 * on; MSH-1/MSH-2 are written from the delimiters.
 */
export function encodeSegment(name: string, fields: Hl7WriteField[], d: Delimiters): string {
  const enc = fields.map((f) => encodeField(f, d));
  while (enc.length > 0 && enc[enc.length - 1] === '') enc.pop();
  if (name === 'MSH') {
    const encChars = d.component + d.repetition + d.escape + d.subcomponent + d.truncation;
    return ['MSH', encChars, ...enc].join(d.field);
  }
  return [name, ...enc].join(d.field);
}
