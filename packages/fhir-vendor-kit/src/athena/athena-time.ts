/**
 * athena dates and times (reference 1.7): dates `MM/DD/YYYY`, datetimes `MM/DD/YYYY HH:mm[:ss]`,
 * appointment `date` + `starttime` as department-local wall time with no offset, some newer feeds
 * ISO-8601 with an offset. Wall times are converted with the department's IANA zone through
 * `Intl` -- never the server's own zone.
 */
import { inputError } from '@ferry/core';

export interface WallTime {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  s: number;
}

const DATE = /^(\d{1,2})\/(\d{1,2})\/(\d{4})$/;
const DATETIME = /^(\d{1,2})\/(\d{1,2})\/(\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$/;
const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** `MM/DD/YYYY` -> `YYYY-MM-DD` (undefined when empty; throws on a malformed value). */
export function athenaDateToFhir(v: unknown, field = 'date'): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const s = String(v).trim().replace(/\\\//g, '/');
  const m = DATE.exec(s);
  if (!m) {
    if (/^\d{4}-\d{2}-\d{2}$/.test(s)) return s;
    throw inputError('ATHENA_BAD_DATE', `${field}: not an MM/DD/YYYY date`, { field });
  }
  const mo = +m[1];
  const d = +m[2];
  const y = +m[3];
  if (mo < 1 || mo > 12 || d < 1 || d > 31)
    throw inputError('ATHENA_BAD_DATE', `${field}: not a calendar date`, { field });
  return `${y}-${pad(mo)}-${pad(d)}`;
}

/** Parse `MM/DD/YYYY[ HH:mm[:ss]]` (or a date plus a separate `HH:mm`) into wall-clock parts. */
export function parseAthenaWallTime(date: unknown, time?: unknown, field = 'datetime'): WallTime {
  const ds = String(date ?? '')
    .trim()
    .replace(/\\\//g, '/');
  let m = DATETIME.exec(ds);
  if (!m) {
    const dm = DATE.exec(ds);
    const tm = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(String(time ?? '00:00').trim());
    if (!dm || !tm) throw inputError('ATHENA_BAD_DATETIME', `${field}: not an MM/DD/YYYY HH:mm datetime`, { field });
    m = [ds, dm[1], dm[2], dm[3], tm[1], tm[2], tm[3]] as unknown as RegExpExecArray;
  }
  const w = { mo: +m[1], d: +m[2], y: +m[3], h: +m[4], mi: +m[5], s: +(m[6] ?? 0) };
  if (w.mo < 1 || w.mo > 12 || w.d < 1 || w.d > 31 || w.h > 23 || w.mi > 59 || w.s > 59) {
    throw inputError('ATHENA_BAD_DATETIME', `${field}: out of range`, { field });
  }
  return w;
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function formatter(tz: string): Intl.DateTimeFormat {
  let f = fmtCache.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    fmtCache.set(tz, f);
  }
  return f;
}

/** True when `tz` is an IANA zone Intl knows (including links such as `US/Pacific`). */
export function isValidTimeZone(tz: string): boolean {
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

/** The wall-clock reading of instant `ms` in `tz`. */
export function wallTimeAt(ms: number, tz: string): WallTime {
  const p: Record<string, string> = {};
  for (const part of formatter(tz).formatToParts(new Date(ms))) p[part.type] = part.value;
  return { y: +p.year, mo: +p.month, d: +p.day, h: +p.hour % 24, mi: +p.minute, s: +p.second };
}

/** Offset of `tz` from UTC at instant `ms`, in ms (e.g. -7 h for PDT). */
export function zoneOffsetMs(ms: number, tz: string): number {
  const w = wallTimeAt(ms, tz);
  return Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi, w.s) - Math.floor(ms / 1000) * 1000;
}

/**
 * The instant at which clocks in `tz` read `w`. In the autumn overlap (01:30 happens twice) the
 * first (daylight) occurrence is chosen; a time skipped by the spring-forward gap (02:30) is
 * moved forward by the gap, as clocks would read it.
 */
export function wallTimeToInstant(w: WallTime, tz: string): Date {
  if (!isValidTimeZone(tz)) throw inputError('ATHENA_BAD_TIMEZONE', `unknown time zone ${tz}`, { tz });
  const asUtc = Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi, w.s);
  // Candidates from the offsets in force a day either side; keep those that read back as `w`.
  const offsets = new Set([
    zoneOffsetMs(asUtc - 86_400_000, tz),
    zoneOffsetMs(asUtc, tz),
    zoneOffsetMs(asUtc + 86_400_000, tz),
  ]);
  const hits = [...offsets]
    .map((o) => asUtc - o)
    .filter((t) => {
      const r = wallTimeAt(t, tz);
      return r.y === w.y && r.mo === w.mo && r.d === w.d && r.h === w.h && r.mi === w.mi && r.s === w.s;
    });
  if (hits.length) return new Date(Math.min(...hits));
  // In the gap: use the offset before the transition (02:30 PST-style reading -> 03:30 PDT).
  return new Date(asUtc - zoneOffsetMs(asUtc - 86_400_000, tz));
}

/** `MM/DD/YYYY HH:mm:ss` of instant `ms` in `tz` (for `showprocessed*datetime` params). */
export function formatAthenaDateTime(ms: number, tz: string): string {
  const w = wallTimeAt(ms, tz);
  return `${pad(w.mo)}/${pad(w.d)}/${w.y} ${pad(w.h)}:${pad(w.mi)}:${pad(w.s)}`;
}

/** `MM/DD/YYYY` of instant `ms` in `tz`. */
export function formatAthenaDate(ms: number, tz: string): string {
  const w = wallTimeAt(ms, tz);
  return `${pad(w.mo)}/${pad(w.d)}/${w.y}`;
}

/** An athena datetime that is ISO-8601 (kept, with its offset) or `MM/DD/YYYY HH:mm[:ss]` in `tz`. */
export function athenaDateTimeToFhir(v: unknown, tz: string | undefined, field = 'datetime'): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const s = String(v).trim();
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(s)) {
    const t = Date.parse(s);
    if (Number.isNaN(t)) throw inputError('ATHENA_BAD_DATETIME', `${field}: not a valid ISO-8601 datetime`, { field });
    // FHIR wants seconds and a colon in the offset.
    return s.replace(/T(\d{2}):(\d{2})(Z|[+-])/, 'T$1:$2:00$3').replace(/([+-]\d{2})(\d{2})$/, '$1:$2');
  }
  if (!tz)
    throw inputError('ATHENA_NO_TIMEZONE', `${field}: a local datetime needs the department's time zone`, { field });
  return wallTimeToInstant(parseAthenaWallTime(s, undefined, field), tz).toISOString();
}
