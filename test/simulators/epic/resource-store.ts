/** The Epic and Cerner simulators' resources: the store (stamped from the simulator clock), search matching and filters, paging sessions. */
import { randomBytes } from 'node:crypto';

export type Res = Record<string, any> & { resourceType: string; id: string };
/**
 * A resource to store, `id` assigned when absent. (Not `Omit<Res, 'id'>`: Omit over an index
 * signature keeps only the index signature and so loses `resourceType`.)
 */
export type NewRes = Record<string, any> & { resourceType: string; id?: string };

/** Resources by type and id, stamped with meta.versionId / meta.lastUpdated from the simulator clock. */
export class ResourceStore {
  private readonly byType = new Map<string, Map<string, Res>>();
  constructor(private readonly now: () => number) {}

  /**
   * `unversioned`: stored without `meta.versionId`/`meta.lastUpdated`, as Epic often serves
   * resources (the reference's Epic examples, vendor-apis.md 3.6, carry no `meta`); the server still
   * knows when it changed (`changedAt`, not serialised), which `_lastUpdated` and bulk `_since` use.
   */
  put(resource: NewRes, opts: { keepMeta?: boolean; unversioned?: boolean } = {}): Res {
    const id = resource.id ?? randomBytes(9).toString('base64url');
    const map = this.byType.get(resource.resourceType) ?? new Map<string, Res>();
    this.byType.set(resource.resourceType, map);
    const prev = map.get(id);
    const version = prev ? Number(prev.meta?.versionId ?? '1') + 1 : 1;
    let stored: Res;
    if (opts.unversioned) {
      const { meta, ...rest } = resource;
      const m = { ...(meta ?? {}) };
      delete m.versionId;
      delete m.lastUpdated;
      stored = { ...rest, id, ...(Object.keys(m).length ? { meta: m } : {}) };
    } else
      stored =
        opts.keepMeta && resource.meta?.lastUpdated
          ? { ...resource, id }
          : {
              ...resource,
              id,
              meta: {
                ...(resource.meta ?? {}),
                versionId: String(version),
                lastUpdated: new Date(this.now()).toISOString(),
              },
            };
    Object.defineProperty(stored, 'changedAt', { value: new Date(this.now()).toISOString(), enumerable: false });
    map.set(id, stored);
    return stored;
  }

  get(type: string, id: string): Res | undefined {
    return this.byType.get(type)?.get(id);
  }

  all(type: string): Res[] {
    return [...(this.byType.get(type)?.values() ?? [])];
  }

  types(): string[] {
    return [...this.byType.keys()];
  }
}

/** When the server last changed a resource (its `meta.lastUpdated`, or the hidden stamp of an unversioned one). */
export function changedAt(r: Res): string | undefined {
  return r.meta?.lastUpdated ?? (r as { changedAt?: string }).changedAt;
}

/** The patient a resource belongs to (Patient itself, or subject / patient reference). */
export function patientOf(r: Res): string | undefined {
  if (r.resourceType === 'Patient') return r.id;
  const ref: string | undefined =
    r.subject?.reference ??
    r.patient?.reference ??
    r.participant?.find((p: any) => p.actor?.reference?.startsWith('Patient/'))?.actor?.reference;
  return ref?.startsWith('Patient/') ? ref.slice('Patient/'.length) : undefined;
}

/** FHIR date-prefix comparison (eq/ne/gt/ge/lt/le) of an instant against a search value. */
export function matchDate(actual: string | undefined, expr: string): boolean | 'invalid' {
  const m = /^(eq|ne|gt|ge|lt|le|sa|eb|ap)?(\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$/.exec(expr);
  if (!m) return 'invalid';
  if (!actual) return false;
  const a = Date.parse(actual);
  const v = Date.parse(m[2]);
  if (Number.isNaN(v)) return 'invalid';
  switch (m[1] ?? 'eq') {
    case 'eq':
      return m[2].length <= 10 ? actual.startsWith(m[2]) : a === v;
    case 'ne':
      return a !== v;
    case 'gt':
    case 'sa':
      return a > v;
    case 'ge':
      return a >= v;
    case 'lt':
    case 'eb':
      return a < v;
    case 'le':
      return a <= v;
    default:
      return 'invalid';
  }
}

export function hasCoding(concepts: any, wanted: string): boolean {
  const list: any[] = Array.isArray(concepts) ? concepts : concepts ? [concepts] : [];
  const alternatives = wanted.split(',');
  return list.some((cc) =>
    (cc?.coding ?? []).some((c: any) =>
      alternatives.some((w) => {
        const bar = w.indexOf('|');
        return bar >= 0 ? c.system === w.slice(0, bar) && c.code === w.slice(bar + 1) : c.code === w;
      }),
    ),
  );
}

export function hasIdentifier(r: Res, wanted: string): boolean {
  const bar = wanted.indexOf('|');
  return (r.identifier ?? []).some((i: any) =>
    bar >= 0
      ? i.system === wanted.slice(0, bar) && String(i.value).trim() === wanted.slice(bar + 1)
      : String(i.value).trim() === wanted,
  );
}

// ---------------------------------------------------------------------------------------------
// Paging sessions

interface PagingSession {
  results: Res[];
  createdAt: number;
  pageSize: number;
}

/** Search results held server-side behind an opaque cursor; a session older than `ttlMs` is gone. */
export class PagingSessions {
  private readonly sessions = new Map<string, PagingSession>();
  ttlMs: number;
  constructor(
    private readonly now: () => number,
    ttlMs = 10 * 60_000,
  ) {
    this.ttlMs = ttlMs;
  }
  create(results: Res[], pageSize: number): string {
    const token = randomBytes(18).toString('base64url');
    this.sessions.set(token, { results, createdAt: this.now(), pageSize });
    return token;
  }
  /** `undefined` when unknown or expired. */
  get(token: string): PagingSession | undefined {
    const s = this.sessions.get(token);
    if (!s) return undefined;
    if (this.now() - s.createdAt > this.ttlMs) {
      this.sessions.delete(token);
      return undefined;
    }
    return s;
  }
  /** Expire every open session now (the "expired paging session" knob). */
  expireAll(): void {
    this.sessions.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// SMART backend services: JWT client assertion verification

/** Keep the resources every filter accepts; `undefined` when a filter found an invalid value (the caller answers 400). */
export function applyFilters(results: Res[], filters: ((r: Res) => boolean | 'invalid')[]): Res[] | undefined {
  const kept: Res[] = [];
  for (const r of results) {
    let ok = true;
    for (const f of filters) {
      const m = f(r);
      if (m === 'invalid') return undefined;
      if (!m) {
        ok = false;
        break;
      }
    }
    if (ok) kept.push(r);
  }
  return kept;
}

/** The search filters every vendor shares: the patient compartment, `_id` (comma list) and `identifier` (system|value). */
export function commonFilters(q: URLSearchParams, patient: string | undefined): ((r: Res) => boolean | 'invalid')[] {
  const filters: ((r: Res) => boolean | 'invalid')[] = [];
  if (patient) filters.push((r) => patientOf(r) === patient);
  const ids = q.get('_id');
  if (ids) {
    const set = new Set(ids.split(','));
    filters.push((r) => set.has(r.id));
  }
  const ident = q.get('identifier');
  if (ident) filters.push((r) => hasIdentifier(r, ident));
  return filters;
}
