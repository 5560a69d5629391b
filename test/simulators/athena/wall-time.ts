/** Wall-clock helpers for the simulator (independent of the plugin's own code on purpose). */

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function fmt(tz: string): Intl.DateTimeFormat {
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

export function wallParts(
  ms: number,
  tz: string,
): { y: number; mo: number; d: number; h: number; mi: number; s: number } {
  const p = Object.fromEntries(
    fmt(tz)
      .formatToParts(new Date(ms))
      .map((x) => [x.type, x.value]),
  );
  return { y: +p.year, mo: +p.month, d: +p.day, h: +p.hour % 24, mi: +p.minute, s: +p.second };
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** `MM/DD/YYYY HH:mm:ss` in `tz`. */
export function toAthenaDateTime(ms: number, tz: string): string {
  const p = wallParts(ms, tz);
  return `${pad(p.mo)}/${pad(p.d)}/${p.y} ${pad(p.h)}:${pad(p.mi)}:${pad(p.s)}`;
}

/** Parse `MM/DD/YYYY[ HH:mm[:ss]]` as wall time in `tz` -> epoch ms (first occurrence when ambiguous). */
export function fromAthenaDateTime(s: string, tz: string): number | undefined {
  const m = /^(\d{2})\/(\d{2})\/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(s.trim());
  if (!m) return undefined;
  const wall = Date.UTC(+m[3], +m[1] - 1, +m[2], +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0));
  const off = (t: number) => {
    const p = wallParts(t, tz);
    return Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s) - Math.floor(t / 1000) * 1000;
  };
  let t = wall - off(wall);
  t = wall - off(t);
  return t;
}
