/** Differences between two applied configs (`ferry config diff`, `GET /api/config/diff`). */

export interface ConfigChange {
  /** Where, as validate-config names it: `routes[0].when.fhirpath`, `sinks.b`. */
  path: string;
  change: 'added' | 'removed' | 'changed';
  before?: unknown;
  after?: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * Every leaf (or whole entry) that differs between `a` and `b`, in path order. Arrays are compared
 * by position; an entry present on one side only is one change (its whole value).
 */
export function diffConfigs(a: unknown, b: unknown, at = ''): ConfigChange[] {
  if (isObject(a) && isObject(b)) {
    const out: ConfigChange[] = [];
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      const p = at ? `${at}.${k}` : k;
      if (!(k in b)) out.push({ path: p, change: 'removed', before: a[k] });
      else if (!(k in a)) out.push({ path: p, change: 'added', after: b[k] });
      else out.push(...diffConfigs(a[k], b[k], p));
    }
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const out: ConfigChange[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const p = `${at}[${i}]`;
      if (i >= b.length) out.push({ path: p, change: 'removed', before: a[i] });
      else if (i >= a.length) out.push({ path: p, change: 'added', after: b[i] });
      else out.push(...diffConfigs(a[i], b[i], p));
    }
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path: at, change: 'changed', before: a, after: b }];
}

/** One line per change: `~ routes[0].when.fhirpath: "a" -> "b"`, `+ sinks.b: {...}`, `- routes[1]: {...}`. */
export function formatConfigChanges(changes: ConfigChange[]): string[] {
  const j = (v: unknown) => JSON.stringify(v);
  return changes.map((c) =>
    c.change === 'added'
      ? `+ ${c.path}: ${j(c.after)}`
      : c.change === 'removed'
        ? `- ${c.path}: ${j(c.before)}`
        : `~ ${c.path}: ${j(c.before)} -> ${j(c.after)}`,
  );
}
