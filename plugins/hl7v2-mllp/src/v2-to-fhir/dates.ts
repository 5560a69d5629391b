/**
 * HL7 v2 DTM/TS/DT -> FHIR date / dateTime / instant, keeping the precision that was sent
 * (`1980`, `1980-05`, `1980-05-01`) and the UTC offset (`+0215` -> `+02:15`).
 * Source: v2-to-FHIR IG DTM[dateTime], TS[dateTime] datatype maps.
 *
 * FHIR requires an offset as soon as a time is present: a time sent without one takes the
 * default offset (the sender's, from MSH-7, else the configured one). FHIR has no hour-only
 * precision, so `YYYYMMDDHH` becomes `YYYY-MM-DDTHH:00:00`. The default is a fixed offset or, for an
 * IANA zone, a resolver giving the offset of that wall-clock time (timezone.ts).
 */
import { type DefaultTz, offsetFor } from './timezone';

export interface ParsedDtm {
  y: string;
  mo?: string;
  d?: string;
  h?: string;
  mi?: string;
  s?: string;
  frac?: string;
  /** `+hh:mm`, `-hh:mm` or `Z` */
  tz?: string;
}

function digits(v: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** Parses a DTM by hand (no regex: this runs for every date of every message). */
export function parseDtm(raw: string): ParsedDtm | undefined {
  let v = raw;
  if (v.length === 0) return undefined;
  if (v.charCodeAt(0) === 32 || v.charCodeAt(v.length - 1) === 32) v = v.trim();
  // offset
  let tzRaw: string | undefined;
  let body = v;
  const last = v.charCodeAt(v.length - 1);
  if (last === 90 /* Z */) {
    tzRaw = 'Z';
    body = v.slice(0, -1).trimEnd();
  } else {
    const sign = Math.max(v.lastIndexOf('+'), v.lastIndexOf('-'));
    if (sign > 0) {
      tzRaw = v.slice(sign);
      body = v.slice(0, sign).trimEnd();
      if (tzRaw.length !== 5 || !digits(tzRaw, 1, 5)) return undefined;
    }
  }
  let frac: string | undefined;
  const dot = body.indexOf('.');
  if (dot >= 0) {
    frac = body.slice(dot + 1);
    body = body.slice(0, dot);
    if (body.length !== 14 || frac.length < 1 || frac.length > 4 || !digits(frac, 0, frac.length)) return undefined;
  }
  const n = body.length;
  if (n < 4 || n > 14 || n % 2 !== 0 || !digits(body, 0, n)) return undefined;
  const y = body.slice(0, 4);
  const mo = n >= 6 ? body.slice(4, 6) : undefined;
  const d = n >= 8 ? body.slice(6, 8) : undefined;
  const h = n >= 10 ? body.slice(8, 10) : undefined;
  const mi = n >= 12 ? body.slice(10, 12) : undefined;
  const s = n >= 14 ? body.slice(12, 14) : undefined;
  if (y === '0000') return undefined;
  if (mo && (+mo < 1 || +mo > 12)) return undefined;
  if (d && (+d < 1 || +d > daysIn(+y, +mo!))) return undefined;
  if (h && +h > 23) return undefined;
  if (mi && +mi > 59) return undefined;
  if (s && +s > 59) return undefined;
  let tz: string | undefined;
  if (tzRaw) {
    if (tzRaw === 'Z') tz = 'Z';
    else {
      const hh = +tzRaw.slice(1, 3);
      const mm = +tzRaw.slice(3, 5);
      if (hh > 14 || mm > 59 || (hh === 14 && mm > 0)) return undefined;
      tz = `${tzRaw[0]}${tzRaw.slice(1, 3)}:${tzRaw.slice(3, 5)}`;
    }
  }
  return { y, mo, d, h, mi, s, frac, tz };
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
function daysIn(y: number, m: number): number {
  if (!m) return 31;
  if (m === 2 && ((y % 4 === 0 && y % 100 !== 0) || y % 400 === 0)) return 29;
  return DAYS[m - 1];
}

/** The offset of a DTM (`+hh:mm` / `Z`), if it has one. */
export function dtmOffset(v: string): string | undefined {
  return parseDtm(v)?.tz;
}

/** FHIR dateTime, keeping precision and offset; undefined when not a valid DTM. */
export function toDateTime(v: string | undefined, defaultTz: DefaultTz = 'Z'): string | undefined {
  if (!v) return undefined;
  const p = parseDtm(v);
  if (!p) return undefined;
  let out = p.y;
  if (!p.mo) return out;
  out += `-${p.mo}`;
  if (!p.d) return out;
  out += `-${p.d}`;
  if (!p.h) return out;
  out += `T${p.h}:${p.mi ?? '00'}:${p.s ?? '00'}`;
  if (p.frac) out += `.${p.frac}`;
  return out + offsetFor(p, defaultTz);
}

/** FHIR date (YYYY, YYYY-MM, YYYY-MM-DD): the date part, as sent. */
export function toDate(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const p = parseDtm(v);
  if (!p) return undefined;
  return p.mo ? (p.d ? `${p.y}-${p.mo}-${p.d}` : `${p.y}-${p.mo}`) : p.y;
}

/** FHIR instant (needs full seconds and an offset): missing parts are zero-filled. */
export function toInstant(v: string | undefined, defaultTz: DefaultTz = 'Z'): string | undefined {
  if (!v) return undefined;
  const p = parseDtm(v);
  if (!p) return undefined;
  return `${p.y}-${p.mo ?? '01'}-${p.d ?? '01'}T${p.h ?? '00'}:${p.mi ?? '00'}:${p.s ?? '00'}${p.frac ? `.${p.frac}` : ''}${offsetFor(p, defaultTz)}`;
}

/** FHIR time (TM -> hh:mm:ss). */
export function toTime(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const m = /^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?/.exec(v.trim());
  if (!m || +m[1] > 23 || +(m[2] ?? 0) > 59 || +(m[3] ?? 0) > 59) return undefined;
  return `${m[1]}:${m[2] ?? '00'}:${m[3] ?? '00'}${m[4] ? `.${m[4]}` : ''}`;
}
