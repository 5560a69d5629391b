import type { ConfigSchema } from '../plugin/api';
import type { ConfigProblem } from './config-error';
import { facadeConnectionSchema, type EngineConfig, type FacadeConnectionConfig } from './engine.schema';
import type { TypeCatalog } from './load-config';
import { validateWithSchema } from './validate-schema';

const isMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** `a` with `b`'s keys on top, mappings merged key by key (a source's own keys win over its connection's). */
function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b))
    out[k] = isMap(out[k]) && isMap(v) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  return out;
}

/**
 * `connections:` -- each `{ kind, ...the kind's keys, facade? }`, validated against the kind's
 * schema; returns the entries and, for sources and sinks, the raw keys a `connection: <id>` brings.
 */
export function readConnections(
  raw: unknown,
  catalog: TypeCatalog,
  problems: ConfigProblem[],
): { entries: EngineConfig['connections']; rawKeys: Map<string, { kind: string; keys: Record<string, unknown> }> } {
  const entries: EngineConfig['connections'] = {};
  const rawKeys = new Map<string, { kind: string; keys: Record<string, unknown> }>();
  if (raw === undefined || raw === null) return { entries, rawKeys };
  if (!isMap(raw)) {
    problems.push({ path: 'connections', message: 'must be a mapping of connection id -> { kind, ... }' });
    return { entries, rawKeys };
  }
  const kinds = catalog.connectionKinds?.() ?? [];
  for (const [id, entry] of Object.entries(raw)) {
    const at = `connections.${id}`;
    if (!/^[a-z0-9][a-z0-9._-]*$/i.test(id))
      problems.push({
        path: at,
        message: 'a connection id is letters, digits, dot, dash or underscore (it is a URL segment: /fhir/{id}/...)',
      });
    if (!isMap(entry)) {
      problems.push({ path: at, message: 'must be a mapping { kind, ... }' });
      continue;
    }
    const { kind, facade, ...keys } = entry;
    const reg = typeof kind === 'string' ? kinds.find((k) => k.kind === kind) : undefined;
    if (typeof kind !== 'string') {
      problems.push({
        path: `${at}.kind`,
        message: `missing; one of: ${kinds.map((k) => k.kind).join(', ') || '(none registered: load a vendor plugin)'}`,
      });
      continue;
    }
    if (!reg) {
      problems.push({
        path: `${at}.kind`,
        message: `unknown connection kind "${kind}"; registered: ${kinds.map((k) => k.kind).join(', ') || '(none: load a vendor plugin)'}`,
      });
      continue;
    }
    const config = validateWithSchema<Record<string, unknown>>(reg.schema, keys, at, problems);
    // `paths` keys hold dots (Patient.read), which convict reads as nesting: checked here.
    const { paths, ...facadeRest } = isMap(facade) ? facade : ({} as Record<string, unknown>);
    const { paths: pathsSchema, ...facadeSchema } = facadeConnectionSchema;
    const fc = validateWithSchema<FacadeConnectionConfig>(
      facadeSchema,
      facade === undefined || isMap(facade) ? facadeRest : facade,
      `${at}.facade`,
      problems,
    );
    fc.paths = {};
    if (paths !== undefined)
      try {
        pathsSchema.format(paths);
        fc.paths = paths as Record<string, string>;
      } catch (e) {
        problems.push({ path: `${at}.facade.paths`, message: (e as Error).message });
      }
    entries[id] = { kind, config, facade: fc };
    rawKeys.set(id, { kind, keys });
  }
  return { entries, rawKeys };
}

/**
 * A source or sink entry with its `connection: <id>` resolved (the connection's keys under the
 * entry's own); or, without one, a deprecation warning when its type takes connection keys.
 */
export function withConnection(
  what: 'source' | 'sink',
  at: string,
  type: string,
  rest: Record<string, unknown>,
  conns: ReturnType<typeof readConnections>,
  catalog: TypeCatalog,
  schema: ConfigSchema,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): Record<string, unknown> | undefined {
  const kinds = catalog.connectionKinds?.() ?? [];
  const takes = kinds.filter((k) => (what === 'source' ? k.sourceTypes : k.sinkTypes).includes(type));
  const { connection, ...own } = rest;
  if (connection === undefined) {
    if (takes.length)
      warnings.push({
        path: at,
        message: `deprecated: connection keys inline in the ${what}; define them once under connections: (kind: ${takes.map((k) => k.kind).join(' or ')}) and write connection: <id> here`,
      });
    return own;
  }
  if (typeof connection !== 'string' || !connection) {
    problems.push({ path: `${at}.connection`, message: 'must be the id of an entry of connections:' });
    return undefined;
  }
  const c = conns.rawKeys.get(connection);
  if (!c) {
    const known = [...conns.rawKeys.keys()];
    problems.push({
      path: `${at}.connection`,
      message: `unknown connection "${connection}"${known.length ? `; defined: ${known.join(', ')}` : ' (connections: defines none)'}`,
    });
    return undefined;
  }
  if (!takes.some((k) => k.kind === c.kind)) {
    problems.push({
      path: `${at}.connection`,
      message: `connection "${connection}" is kind ${c.kind}; ${what} type ${type} takes ${takes.map((k) => k.kind).join(' or ') || 'no connection'}`,
    });
    return undefined;
  }
  // Only the keys this type takes: a connection may hold keys for the facade or for other types.
  const takesKey = new Set(Object.keys(schema));
  return deepMerge(Object.fromEntries(Object.entries(c.keys).filter(([k]) => takesKey.has(k))), own);
}
