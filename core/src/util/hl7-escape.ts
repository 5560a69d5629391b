import { TextDecoder } from 'node:util';

/**
 * HL7 v2 delimiters as MSH-1 / MSH-2 declare them. The HL7 v2 escape codec lives in core (not in
 * the HL7 v2 plugin) because core reads v2 too: route scripts' `ferry.v2.get()` decodes values
 * exactly as the plugin's parser does.
 */
export interface Hl7Delimiters {
  field: string;
  component: string;
  repetition: string;
  /** '' when MSH-2 declares no escape character. */
  escape: string;
  /** '' when MSH-2 declares no subcomponent separator. */
  subcomponent: string;
  /** v2.7+ truncation character (MSH-2.5), '' when absent. */
  truncation: string;
}

/** `|^~\\&`, no truncation character. */
export const STANDARD_HL7_DELIMITERS: Readonly<Hl7Delimiters> = Object.freeze({
  field: '|',
  component: '^',
  repetition: '~',
  escape: '\\',
  subcomponent: '&',
  truncation: '',
});

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Decodes `\Xhhhh..\` bytes: UTF-8 when valid, else ISO-8859-1. */
function hexBytes(hex: string): string | undefined {
  if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9A-Fa-f]+$/.test(hex)) return undefined;
  const bytes = Buffer.from(hex, 'hex');
  try {
    return utf8Strict.decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

/**
 * Decodes HL7 escape sequences in one leaf value (a subcomponent or an unsplit string):
 * `\F\ \S\ \T\ \R\ \E\ \P\` -> delimiters, `\Xhh..\` -> characters, `\.br\` and `\.sp\` -> newline,
 * highlighting and other formatting (`\H\ \N\ \.in\ \.ti\ \.sk\ \.ce\ \.fi\ \.nf\`), charset
 * switches (`\Cxxyy\ \Mxxyyzz\`) and locally defined `\Z..\` are dropped. An unterminated escape is kept literally.
 */
export function unescapeHl7(value: string, d: Hl7Delimiters): string {
  const esc = d.escape;
  if (!esc || value.indexOf(esc) < 0) return value;
  let out = '';
  let i = 0;
  const n = value.length;
  while (i < n) {
    const start = value.indexOf(esc, i);
    if (start < 0) {
      out += value.slice(i);
      break;
    }
    out += value.slice(i, start);
    const end = value.indexOf(esc, start + 1);
    if (end < 0) {
      out += value.slice(start);
      break;
    }
    const seq = value.slice(start + 1, end);
    const rep = decodeSequence(seq, d);
    if (rep === undefined) {
      // not a known sequence: keep the escape character literally and continue after it
      out += esc;
      i = start + 1;
      continue;
    }
    out += rep;
    i = end + 1;
  }
  return out;
}

function decodeSequence(seq: string, d: Hl7Delimiters): string | undefined {
  switch (seq) {
    case 'F':
      return d.field;
    case 'S':
      return d.component;
    case 'T':
      return d.subcomponent;
    case 'R':
      return d.repetition;
    case 'E':
      return d.escape;
    case 'P':
      return d.truncation || undefined;
    case 'H':
    case 'N':
      return '';
    case '.br':
      return '\n';
    case '.fi':
    case '.nf':
      return '';
    case '':
      return undefined;
  }
  const c = seq[0];
  if (c === 'X') return hexBytes(seq.slice(1));
  if (c === '.') {
    if (seq.startsWith('.sp')) {
      const k = Number(seq.slice(3).trim() || '1');
      return Number.isFinite(k) && k >= 0 && k < 100 ? '\n'.repeat(k) : '\n';
    }
    if (/^\.(in|ti|sk|ce)/.test(seq)) return seq.startsWith('.sk') ? ' ' : '';
    return undefined;
  }
  if ((c === 'C' || c === 'M') && /^[CM][0-9A-Fa-f]+$/.test(seq)) return '';
  if (c === 'Z') return '';
  return undefined;
}

/** Escapes a leaf value for writing: delimiters, the escape character and line breaks. */
export function escapeHl7(value: string, d: Hl7Delimiters): string {
  let out = '';
  const esc = d.escape || '\\';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === esc) out += `${esc}E${esc}`;
    else if (ch === d.field) out += `${esc}F${esc}`;
    else if (ch === d.component) out += `${esc}S${esc}`;
    else if (ch === d.subcomponent && d.subcomponent) out += `${esc}T${esc}`;
    else if (ch === d.repetition) out += `${esc}R${esc}`;
    else if (ch === d.truncation && d.truncation) out += `${esc}P${esc}`;
    else if (ch === '\r') {
      if (value[i + 1] === '\n') i++;
      out += `${esc}.br${esc}`;
    } else if (ch === '\n') out += `${esc}.br${esc}`;
    else out += ch;
  }
  return out;
}
