/**
 * The zone of v2 times sent without an offset (when MSH-7 has none either): `Z`, a fixed `±hh:mm`, or an
 * IANA zone (`America/New_York`) whose offset is resolved per timestamp from the wall-clock time, so a
 * July 10:00 is `-04:00` and a January 10:00 `-05:00`. Uses the runtime's Intl time-zone data (no dependency).
 *
 * Wall times that happen twice (the hour repeated when DST ends) take the first (the DST offset); wall times
 * that do not exist (the hour skipped when DST starts) take the offset before the change, which names the
 * instant one hour later in the new offset — the same choice as Temporal's `compatible` disambiguation.
 */
import type { ParsedDtm } from './dates';

/** A fixed offset string, or a resolver giving the offset of a parsed wall-clock time. */
export type DefaultTz = string | ((p: ParsedDtm) => string);

const FIXED = /^(Z|[+-](0\d|1[0-3]):[0-5]\d|[+-]14:00)$/;

/** True for `Z`, `±hh:mm` (up to ±14:00) and IANA zone names the runtime knows. */
export function isTimezone(v: unknown): v is string {
  if (typeof v !== 'string' || v === '') return false;
  if (FIXED.test(v)) return true;
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(v)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: v });
    return true;
  } catch {
    return false;
  }
}

const resolvers = new Map<string, DefaultTz>();

/** The DefaultTz for a configured zone: the string itself for `Z`/`±hh:mm`, a per-timestamp resolver for an IANA zone. */
export function zoneResolver(zone: string): DefaultTz {
  if (FIXED.test(zone)) return zone;
  let r = resolvers.get(zone);
  if (r) return r;
  if (!isTimezone(zone))
    throw new Error(
      `unknown time zone ${JSON.stringify(zone)}: use Z, ±hh:mm or an IANA zone such as America/New_York`,
    );
  const offsetAt = utcOffsetFn(zone);
  const memo = new Map<string, string>();
  r = (p: ParsedDtm) => {
    // offsets change on minute boundaries at most; cache per wall-clock minute
    const key = `${p.y}${p.mo ?? '01'}${p.d ?? '01'}${p.h ?? '00'}${p.mi ?? '00'}`;
    let off = memo.get(key);
    if (off === undefined) {
      off = formatOffset(
        wallOffset(offsetAt, Date.UTC(+p.y, +(p.mo ?? 1) - 1, +(p.d ?? 1), +(p.h ?? 0), +(p.mi ?? 0), +(p.s ?? 0))),
      );
      if (memo.size > 10000) memo.clear();
      memo.set(key, off);
    }
    return off;
  };
  resolvers.set(zone, r);
  return r;
}

/** Offset in minutes of `zone` at the UTC instant t (ms). */
function utcOffsetFn(zone: string): (t: number) => number {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
    era: 'short',
  });
  return (t) => {
    const parts: Record<string, string> = {};
    for (const x of f.formatToParts(new Date(t))) parts[x.type] = x.value;
    let y = +parts.year;
    if (parts.era === 'BC' || parts.era === 'B') y = 1 - y;
    const asUtc = Date.UTC(y, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    const whole = Math.floor(t / 1000) * 1000;
    return Math.round((asUtc - whole) / 60000);
  };
}

/** Offset (minutes) for a wall-clock time written as if it were UTC (ms), disambiguated as described above. */
function wallOffset(offsetAt: (t: number) => number, wall: number): number {
  const before = offsetAt(wall - 86_400_000);
  const after = offsetAt(wall + 86_400_000);
  if (offsetAt(wall - before * 60000) === before) return before;
  if (after !== before && offsetAt(wall - after * 60000) === after) return after;
  return before;
}

function formatOffset(min: number): string {
  const sign = min < 0 ? '-' : '+';
  const a = Math.abs(min);
  return `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

/** A `DefaultTz` applied to a parsed time: its own offset when sent, else the default's. */
export function offsetFor(p: ParsedDtm, tz: DefaultTz): string {
  return p.tz ?? (typeof tz === 'string' ? tz : tz(p));
}
