import convict from 'convict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { FerryError } from '../errors';
import type { ConfigSchema } from '../plugin/api';
import { engineSchema, sinkCommonSchema, sourceCommonSchema, type EngineConfig, type FacadeConnectionConfig, type PluginRef, type RouteConfig, type RouteTest, type StepConfig } from './engine.schema';
import { OWN_FORMATS } from '../sinks/formats';

/** One problem found in a config, with the path it is at (`routes[0].to[1]`). */
export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends FerryError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[], file?: string) {
    super(
      'CONFIG_INVALID',
      `${file ? `${file}: ` : ''}${problems.length} problem${problems.length === 1 ? '' : 's'} in config:\n` +
        problems.map((p) => `  ${p.path ? `${p.path}: ` : ''}${p.message}`).join('\n'),
      { kind: 'config', details: { problems } },
    );
    this.problems = problems;
  }
}

/** Reads YAML text into a plain object, interpolating `${VAR}` and resolving `*_FILE` keys. */
export function parseConfigText(text: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): Record<string, unknown> {
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { prettyErrors: true });
  } catch (e) {
    problems.push({ path: '', message: `not valid YAML: ${(e as Error).message}` });
    return {};
  }
  if (doc.errors.length) {
    for (const err of doc.errors) problems.push({ path: '', message: `not valid YAML: ${err.message}` });
    return {};
  }
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    problems.push({ path: '', message: 'the config must be a YAML mapping' });
    return {};
  }
  return resolveValues(raw, '', env, problems) as Record<string, unknown>;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function readSecretFile(file: string, at: string, problems: ConfigProblem[]): string | undefined {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    problems.push({ path: at, message: `cannot read secret file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
    return undefined;
  }
}

function interpolate(s: string, at: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): string {
  return s.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
    if (env[name] !== undefined) return env[name] as string;
    const fileVar = env[`${name}_FILE`];
    if (fileVar) return readSecretFile(fileVar, at, problems) ?? '';
    if (fallback !== undefined) return fallback;
    problems.push({ path: at, message: `environment variable ${name} is not set (nor ${name}_FILE)` });
    return '';
  });
}

function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return base ? `${base}.${key}` : key;
}

/** `${VAR}` interpolation and `*_FILE` keys over an already-parsed config value. */
export function resolveValues(v: unknown, at: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (typeof v === 'string') {
    const s = interpolate(v, at, env, problems);
    // A whole-value reference to a number/boolean stays typed for convict's formats.
    if (s !== v && /^\$\{[^}]+\}$/.test(v)) {
      if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
      if (s === 'true' || s === 'false') return s === 'true';
    }
    return s;
  }
  if (Array.isArray(v)) return v.map((x, i) => resolveValues(x, joinPath(at, i), env, problems));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (k.endsWith('_FILE') && typeof val === 'string') {
        const target = k.slice(0, -'_FILE'.length);
        const file = interpolate(val, joinPath(at, k), env, problems);
        const content = readSecretFile(file, joinPath(at, k), problems);
        if (content !== undefined) out[target] = content;
        continue;
      }
      out[k] = resolveValues(val, joinPath(at, k), env, problems);
    }
    return out;
  }
  return v;
}

/**
 * Validate `value` against a convict schema strictly; every problem is pushed with `at` prefixed.
 * Returns the validated properties (defaults applied).
 */
export function validateWithSchema<T = Record<string, unknown>>(
  schema: ConfigSchema,
  value: unknown,
  at: string,
  problems: ConfigProblem[],
  opts: { env?: NodeJS.ProcessEnv } = {},
): T {
  if (value !== undefined && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    problems.push({ path: at, message: 'must be a mapping' });
    return {} as T;
  }
  let conf: convict.Config<any>;
  const mapLeaves: { path: string; check: (v: unknown) => void }[] = [];
  try {
    conf = convict(mapLeavesAsObjects(schema, '', mapLeaves) as ConfigSchema, { env: opts.env ?? {}, args: [] });
  } catch (e) {
    problems.push({ path: at, message: `invalid schema: ${(e as Error).message}` });
    return {} as T;
  }
  try {
    conf.load(value ?? {});
  } catch (e) {
    problems.push({ path: at, message: (e as Error).message });
    return {} as T;
  }
  try {
    conf.validate({ allowed: 'strict', output: () => undefined });
  } catch (e) {
    for (const line of (e as Error).message.split('\n')) {
      const p = convictLineToProblem(line);
      if (p) problems.push({ path: p.path ? joinPath(at, p.path) : at, message: p.message });
    }
  }
  const out = conf.getProperties() as T;
  for (const leaf of mapLeaves) {
    try {
      leaf.check(leaf.path.split('.').reduce<any>((o, k) => o?.[k], out));
    } catch (e) {
      // a validator that lists several problems (details.problems: [{ path, message }], paths relative to the leaf) gives each by its path
      const listed = (e as { details?: { problems?: unknown } }).details?.problems;
      if (Array.isArray(listed) && listed.length && listed.every((p) => typeof p?.message === 'string'))
        for (const p of listed as ConfigProblem[]) problems.push({ path: joinPath(at, p.path ? `${leaf.path}${p.path.startsWith('[') ? '' : '.'}${p.path}` : leaf.path), message: p.message });
      else problems.push({ path: joinPath(at, leaf.path), message: (e as Error).message });
    }
  }
  return out;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/**
 * convict merges a loaded mapping into a leaf whose default is an object key by key, and fails on
 * a nested mapping inside it (`Cannot read properties of undefined`), unless the leaf's format is
 * `Object`. So a leaf with an object default and a validator function (a map of maps, such as
 * athena-fhir `searchParams: { Observation: { category: laboratory } }`) is given to convict as
 * `Object` and its validator is run here on the loaded value, with the leaf's path.
 */
function mapLeavesAsObjects(schema: unknown, path: string, out: { path: string; check: (v: unknown) => void }[]): unknown {
  if (!isPlainObject(schema)) return schema;
  if ('default' in schema) {
    if (isPlainObject(schema.default) && typeof schema.format === 'function') {
      out.push({ path, check: schema.format as (v: unknown) => void });
      return { ...schema, format: Object };
    }
    return schema;
  }
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) copy[k] = mapLeavesAsObjects(v, path ? `${path}.${k}` : k, out);
  return copy;
}

function convictLineToProblem(line: string): ConfigProblem | undefined {
  const l = line.trim();
  if (!l) return undefined;
  const undeclared = /^configuration param '([^']+)' not declared in the schema$/.exec(l);
  if (undeclared) return { path: undeclared[1], message: 'unknown key' };
  const m = /^([\w.$-]+): (.*)$/.exec(l);
  if (m) return { path: m[1], message: m[2] };
  return { path: '', message: l };
}

/** What the config loader needs to know about registered types (from the loaded plugins). */
export interface TypeCatalog {
  sourceSchema(type: string): ConfigSchema | undefined;
  sinkSchema(type: string): ConfigSchema | undefined;
  sourceTypes(): string[];
  sinkTypes(): string[];
  /**
   * The problems of a receiver profile for a plugin-written output format (a file/http sink's
   * `format: hl7v2`), by path inside the profile; undefined when no loaded plugin writes `format`.
   */
  outputProfileProblems?(format: string, profile: unknown): ConfigProblem[] | undefined;
  /** Connection kinds registered by plugins (`registerFacadeProvider`); absent = none. */
  connectionKinds?(): { kind: string; schema: ConfigSchema; sourceTypes: string[]; sinkTypes: string[] }[];
}

const PATH_KEY = /^([A-Z][A-Za-z]+|\*)\.(read|search|create|update|book|cancel|checkin|\*)$/;

/** `connections.<id>.facade`: the facade's policy for one connection. */
export const facadeConnectionSchema = {
  enabled: { doc: 'Serve this connection through the FHIR facade (api.enabled must be on too)', format: Boolean, default: true },
  cache: {
    ttlSeconds: { doc: 'Serve a read from memory when the copy is younger than this (0 = always ask the vendor)', format: 'nat', default: 0 },
    storeMaxAgeSeconds: { doc: 'Serve a read from the store (the last canonical copy the facade read or wrote) when it is fresher than this (0 = off)', format: 'nat', default: 0 },
    maxEntries: { doc: 'Reads kept in memory for ttlSeconds', format: 'nat', default: 10_000 },
  },
  paths: {
    doc: 'Decision rule overrides: { "Patient.read": rest, "Appointment.*": rest } -- which vendor API (fhir, rest) serves a type and interaction (read, search, create, update, book, cancel, checkin); the default table is in the README',
    format: function facadePaths(v: unknown): void {
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('must be a mapping of "Type.interaction" -> path');
      for (const [k, path] of Object.entries(v)) {
        if (!PATH_KEY.test(k)) throw new Error(`${k}: must be Type.interaction (interaction: read, search, create, update, book, cancel, checkin or *), e.g. Patient.read`);
        if (typeof path !== 'string' || !/^[a-z][a-z0-9-]*$/.test(path)) throw new Error(`${k}: must name a path such as fhir or rest`);
      }
    },
    default: {} as Record<string, string>,
  },
  identity: {
    linkSystems: {
      doc: "Identifier systems that link a patient across connections: the first of them the patient has (system|value) must equal the one another connection recorded; [] = its MRN (the identifier typed v2-0203 MR)",
      format: function linkSystems(v: unknown): void {
        if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !x.trim())) throw new Error('must be a list of identifier systems (URIs)');
      },
      default: [] as string[],
    },
    linkedIdentifiers: {
      doc: "Patient reads add one identifier per linked patient at another connection the client may read (system urn:ferry:connection:<id>, value its id there); off: the vendor's identifiers only",
      format: Boolean,
      default: false,
    },
  },
  rateLimit: {
    qps: { doc: 'Requests per second per client on this connection (0 = api.rateLimit)', format: Number, default: 0 },
    burst: { doc: 'Bucket size (0 = same as qps)', format: 'nat', default: 0 },
  },
};

const isMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** `a` with `b`'s keys on top, mappings merged key by key (a source's own keys win over its connection's). */
function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = isMap(out[k]) && isMap(v) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  return out;
}

/**
 * `connections:` -- each `{ kind, ...the kind's keys, facade? }`, validated against the kind's
 * schema; returns the entries and, for sources and sinks, the raw keys a `connection: <id>` brings.
 */
function readConnections(raw: unknown, catalog: TypeCatalog, problems: ConfigProblem[]): { entries: EngineConfig['connections']; rawKeys: Map<string, { kind: string; keys: Record<string, unknown> }> } {
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
    if (!/^[a-z0-9][a-z0-9._-]*$/i.test(id)) problems.push({ path: at, message: 'a connection id is letters, digits, dot, dash or underscore (it is a URL segment: /fhir/{id}/...)' });
    if (!isMap(entry)) {
      problems.push({ path: at, message: 'must be a mapping { kind, ... }' });
      continue;
    }
    const { kind, facade, ...keys } = entry;
    const reg = typeof kind === 'string' ? kinds.find((k) => k.kind === kind) : undefined;
    if (typeof kind !== 'string') {
      problems.push({ path: `${at}.kind`, message: `missing; one of: ${kinds.map((k) => k.kind).join(', ') || '(none registered: load a vendor plugin)'}` });
      continue;
    }
    if (!reg) {
      problems.push({ path: `${at}.kind`, message: `unknown connection kind "${kind}"; registered: ${kinds.map((k) => k.kind).join(', ') || '(none: load a vendor plugin)'}` });
      continue;
    }
    const config = validateWithSchema<Record<string, unknown>>(reg.schema, keys, at, problems);
    // `paths` keys hold dots (Patient.read), which convict reads as nesting: checked here.
    const { paths, ...facadeRest } = isMap(facade) ? facade : ({} as Record<string, unknown>);
    const { paths: pathsSchema, ...facadeSchema } = facadeConnectionSchema;
    const fc = validateWithSchema<FacadeConnectionConfig>(facadeSchema, facade === undefined || isMap(facade) ? facadeRest : facade, `${at}.facade`, problems);
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
function withConnection(
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
      warnings.push({ path: at, message: `deprecated: connection keys inline in the ${what}; define them once under connections: (kind: ${takes.map((k) => k.kind).join(' or ')}) and write connection: <id> here` });
    return own;
  }
  if (typeof connection !== 'string' || !connection) {
    problems.push({ path: `${at}.connection`, message: 'must be the id of an entry of connections:' });
    return undefined;
  }
  const c = conns.rawKeys.get(connection);
  if (!c) {
    const known = [...conns.rawKeys.keys()];
    problems.push({ path: `${at}.connection`, message: `unknown connection "${connection}"${known.length ? `; defined: ${known.join(', ')}` : ' (connections: defines none)'}` });
    return undefined;
  }
  if (!takes.some((k) => k.kind === c.kind)) {
    problems.push({ path: `${at}.connection`, message: `connection "${connection}" is kind ${c.kind}; ${what} type ${type} takes ${takes.map((k) => k.kind).join(' or ') || 'no connection'}` });
    return undefined;
  }
  // Only the keys this type takes: a connection may hold keys for the facade or for other types.
  const takesKey = new Set(Object.keys(schema));
  return deepMerge(Object.fromEntries(Object.entries(c.keys).filter(([k]) => takesKey.has(k))), own);
}

/** Reads the `plugins:` entries (before the plugins are loaded). */
export function readPluginRefs(raw: Record<string, unknown>, problems: ConfigProblem[]): PluginRef[] {
  const list = raw.plugins ?? [];
  if (!Array.isArray(list)) {
    problems.push({ path: 'plugins', message: 'must be a list of package names or { package, config }' });
    return [];
  }
  const refs: PluginRef[] = [];
  list.forEach((p, i) => {
    if (typeof p === 'string' && p.trim()) refs.push({ package: p.trim(), config: {} });
    else if (p && typeof p === 'object' && typeof (p as PluginRef).package === 'string') {
      const { package: pkg, config, ...rest } = p as PluginRef & Record<string, unknown>;
      for (const k of Object.keys(rest)) problems.push({ path: `plugins[${i}].${k}`, message: 'unknown key (expected package, config)' });
      if (config !== undefined && (typeof config !== 'object' || Array.isArray(config) || config === null))
        problems.push({ path: `plugins[${i}].config`, message: 'must be a mapping' });
      refs.push({ package: pkg, config: (config as Record<string, unknown>) ?? {} });
    } else problems.push({ path: `plugins[${i}]`, message: 'must be a package name or path, or { package, config }' });
  });
  return refs;
}

const routeSchema = {
  id: { doc: 'Route id', format: String, default: '' },
  from: { doc: 'Source ids', format: Array, default: [] as string[] },
  when: {
    messageType: { doc: 'Message type globs (ADT^A0*)', format: Array, default: [] as string[] },
    fhirpath: { doc: 'FHIRPath predicate on the canonical Bundle', format: String, default: '' },
  },
  steps: { doc: 'validate | filter: <fhirpath> | script: <module>', format: Array, default: [] as unknown[] },
  to: { doc: 'Sink ids', format: Array, default: [] as string[] },
  ordering: { doc: 'strict: per ordering key, in arrival order; none: as fast as possible', format: ['strict', 'none'], default: 'strict' },
};

function parseStep(step: unknown, at: string, problems: ConfigProblem[]): StepConfig | undefined {
  if (step === 'validate') return { validate: true };
  if (step && typeof step === 'object' && !Array.isArray(step)) {
    const entries = Object.entries(step as Record<string, unknown>);
    if (entries.length === 1) {
      const [k, v] = entries[0];
      if (k === 'validate' && (v === true || v === null)) return { validate: true };
      if (k === 'filter' && typeof v === 'string' && v.trim()) return { filter: v };
      if (k === 'script' && typeof v === 'string' && v.trim()) return { script: v };
    }
    // { script, timeoutMs }: the script's time limit per message (ms, synchronous part).
    const o = step as Record<string, unknown>;
    if (entries.length === 2 && typeof o.script === 'string' && o.script.trim() && 'timeoutMs' in o) {
      if (typeof o.timeoutMs === 'number' && Number.isInteger(o.timeoutMs) && o.timeoutMs > 0) return { script: o.script, timeoutMs: o.timeoutMs };
      problems.push({ path: `${at}.timeoutMs`, message: 'a positive whole number of milliseconds' });
      return undefined;
    }
  }
  problems.push({ path: at, message: 'a step is `validate`, `{ filter: <fhirpath> }` or `{ script: <path to module>, timeoutMs?: <ms> }`' });
  return undefined;
}

/**
 * Validate the whole config against the engine schema and the registered types; collects every
 * problem (never stops at the first). Throws ConfigError listing all of them.
 */
export function buildEngineConfig(
  raw: Record<string, unknown>,
  catalog: TypeCatalog,
  pluginConfig: Record<string, Record<string, unknown>>,
  problems: ConfigProblem[],
  opts: { env?: NodeJS.ProcessEnv; file?: string; fhirpathCheck?: (expr: string) => string | undefined } = {},
): EngineConfig {
  const { sources: rawSources, sinks: rawSinks, routes: rawRoutes, plugins: _p, tests: rawTests, connections: rawConnections, ...engineRest } = raw;
  const warnings: ConfigProblem[] = [];
  const conns = readConnections(rawConnections, catalog, problems);
  const engine = validateWithSchema<any>(
    { ...engineSchema, sources: { doc: '', format: Object, default: {} }, sinks: { doc: '', format: Object, default: {} }, routes: { doc: '', format: Array, default: [] }, plugins: { doc: '', format: Array, default: [] } },
    engineRest,
    '',
    problems,
    { env: opts.env ?? process.env },
  );

  const oidc = engine.admin?.auth?.oidc;
  if (oidc?.issuer) {
    let url: URL | undefined;
    try {
      url = new URL(oidc.jwksUrl);
    } catch {
      problems.push({ path: 'admin.auth.oidc.jwksUrl', message: 'required with issuer: the identity provider\'s JWKS URL' });
    }
    if (url && url.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname))
      problems.push({ path: 'admin.auth.oidc.jwksUrl', message: 'must be https (http only on localhost)' });
    if (!oidc.audience) problems.push({ path: 'admin.auth.oidc.audience', message: 'required with issuer (the client id Ferry is registered as): a token for another application must not open the admin API' });
  }
  const oc = oidc?.console;
  if (oc?.clientId) {
    if (!oidc.issuer) problems.push({ path: 'admin.auth.oidc.console.clientId', message: 'needs admin.auth.oidc.issuer (the provider the console signs in with)' });
    else {
      let iss: URL | undefined;
      try {
        iss = new URL(oidc.issuer);
      } catch {
        problems.push({ path: 'admin.auth.oidc.issuer', message: 'must be a URL with console sign-in (its /.well-known/openid-configuration is read)' });
      }
      if (iss && iss.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(iss.hostname))
        problems.push({ path: 'admin.auth.oidc.issuer', message: 'must be https with console sign-in (http only on localhost)' });
    }
    if (oc.bearer === 'id_token' && oidc.audience && oidc.audience !== oc.clientId)
      problems.push({ path: 'admin.auth.oidc.console.bearer', message: `id_token: its aud is the client id (${oc.clientId}), so admin.auth.oidc.audience must be it too (got ${oidc.audience}); or use access_token` });
    if (oc.redirectUri) {
      let r: URL | undefined;
      try {
        r = new URL(oc.redirectUri);
      } catch {
        problems.push({ path: 'admin.auth.oidc.console.redirectUri', message: 'must be an absolute URL ending in /console' });
      }
      if (r && (r.pathname.replace(/\/$/, '') !== '/console' || r.search || r.hash)) problems.push({ path: 'admin.auth.oidc.console.redirectUri', message: 'must be the console page: <origin>/console' });
    }
  }
  // A heartbeat or two missed must not make a live instance dead.
  const proc = engine?.processing as { heartbeatMs?: number; instanceTimeoutMs?: number } | undefined;
  if (proc?.heartbeatMs && proc.instanceTimeoutMs !== undefined && proc.instanceTimeoutMs < 2 * proc.heartbeatMs)
    problems.push({ path: 'processing.instanceTimeoutMs', message: `must be at least twice processing.heartbeatMs (${proc.heartbeatMs}): got ${proc.instanceTimeoutMs}` });

  const sources: EngineConfig['sources'] = {};
  if (rawSources !== undefined && (typeof rawSources !== 'object' || Array.isArray(rawSources) || rawSources === null)) {
    problems.push({ path: 'sources', message: 'must be a mapping of source id -> { type, ... }' });
  } else {
    for (const [id, entry] of Object.entries((rawSources as Record<string, unknown>) ?? {})) {
      const at = `sources.${id}`;
      const type = (entry as { type?: unknown })?.type;
      if (typeof type !== 'string') {
        problems.push({ path: `${at}.type`, message: `missing; one of: ${catalog.sourceTypes().join(', ') || '(none registered)'}` });
        continue;
      }
      const schema = catalog.sourceSchema(type);
      if (!schema) {
        problems.push({ path: `${at}.type`, message: `unknown source type "${type}"; registered: ${catalog.sourceTypes().join(', ') || '(none)'}` });
        continue;
      }
      const { type: _t, ...rest } = entry as Record<string, unknown>;
      const merged = withConnection('source', at, type, rest, conns, catalog, { ...sourceCommonSchema, ...schema }, problems, warnings);
      if (!merged) continue;
      sources[id] = { type, ...validateWithSchema<any>({ ...sourceCommonSchema, ...schema }, merged, at, problems) };
    }
  }

  const sinks: EngineConfig['sinks'] = {};
  if (rawSinks !== undefined && (typeof rawSinks !== 'object' || Array.isArray(rawSinks) || rawSinks === null)) {
    problems.push({ path: 'sinks', message: 'must be a mapping of sink id -> { type, ... }' });
  } else {
    for (const [id, entry] of Object.entries((rawSinks as Record<string, unknown>) ?? {})) {
      const at = `sinks.${id}`;
      const type = (entry as { type?: unknown })?.type;
      if (typeof type !== 'string') {
        problems.push({ path: `${at}.type`, message: `missing; one of: ${catalog.sinkTypes().join(', ') || '(none registered)'}` });
        continue;
      }
      const schema = catalog.sinkSchema(type);
      if (!schema) {
        problems.push({ path: `${at}.type`, message: `unknown sink type "${type}"; registered: ${catalog.sinkTypes().join(', ') || '(none)'}` });
        continue;
      }
      const { type: _t, ...rest } = entry as Record<string, unknown>;
      const merged = withConnection('sink', at, type, rest, conns, catalog, { ...sinkCommonSchema, ...schema }, problems, warnings);
      if (!merged) continue;
      sinks[id] = { type, ...validateWithSchema<any>({ ...sinkCommonSchema, ...schema }, merged, at, problems) };
      // a core sink writing a plugin's format (file/http `format: hl7v2`): the plugin checks the profile now
      const own = OWN_FORMATS[type];
      const format = (sinks[id] as { format?: unknown }).format;
      if (own && typeof format === 'string' && /^[a-z][a-z0-9-]*$/.test(format) && !own.includes(format)) {
        const found = catalog.outputProfileProblems?.(format, (sinks[id] as { profile?: unknown }).profile);
        if (!found) problems.push({ path: `${at}.format`, message: `"${format}": not one of ${own.join(', ')}, and no loaded plugin writes it (hl7v2: load @ferry/plugin-hl7v2-mllp)` });
        else for (const p of found) problems.push({ path: p.path ? `${at}.profile${p.path.startsWith('[') ? '' : '.'}${p.path}` : `${at}.profile`, message: p.message });
      }
    }
  }

  const routes: RouteConfig[] = [];
  const knownSources = new Set(Object.keys((rawSources as object) ?? {}));
  const knownSinks = new Set(Object.keys((rawSinks as object) ?? {}));
  if (rawRoutes !== undefined && !Array.isArray(rawRoutes)) {
    problems.push({ path: 'routes', message: 'must be a list of { id, from, when, steps, to }' });
  } else {
    const seen = new Set<string>();
    ((rawRoutes as unknown[]) ?? []).forEach((r, i) => {
      const at = `routes[${i}]`;
      const before = problems.length;
      const v = validateWithSchema<any>(routeSchema, r, at, problems);
      if (problems.length > before && !v.id) return;
      if (!v.id) problems.push({ path: `${at}.id`, message: 'missing' });
      else if (seen.has(v.id)) problems.push({ path: `${at}.id`, message: `duplicate route id "${v.id}"` });
      seen.add(v.id);
      const strList = (key: 'from' | 'to', known: Set<string>, kind: string) =>
        (v[key] as unknown[]).filter((x, j) => {
          if (typeof x !== 'string') {
            problems.push({ path: `${at}.${key}[${j}]`, message: `must be a ${kind} id` });
            return false;
          }
          if (!known.has(x)) {
            problems.push({ path: `${at}.${key}[${j}]`, message: `unknown ${kind} "${x}"${known.size ? `; defined: ${[...known].join(', ')}` : ''}` });
            return false;
          }
          return true;
        }) as string[];
      const from = strList('from', knownSources, 'source');
      const to = strList('to', knownSinks, 'sink');
      if (!(v.to as unknown[]).length) problems.push({ path: `${at}.to`, message: 'a route needs at least one sink' });
      const messageType = (v.when?.messageType ?? []) as unknown[];
      messageType.forEach((g, j) => {
        if (typeof g !== 'string' || !g) problems.push({ path: `${at}.when.messageType[${j}]`, message: 'must be a glob string like ADT^A0*' });
      });
      if (v.when?.fhirpath && opts.fhirpathCheck) {
        const err = opts.fhirpathCheck(v.when.fhirpath);
        if (err) problems.push({ path: `${at}.when.fhirpath`, message: `invalid FHIRPath: ${err}` });
      }
      const steps = ((v.steps ?? []) as unknown[])
        .map((s, j) => {
          const step = parseStep(s, `${at}.steps[${j}]`, problems);
          if (step && 'filter' in step && opts.fhirpathCheck) {
            const err = opts.fhirpathCheck(step.filter);
            if (err) problems.push({ path: `${at}.steps[${j}].filter`, message: `invalid FHIRPath: ${err}` });
          }
          return step;
        })
        .filter((s): s is StepConfig => !!s);
      routes.push({ id: v.id, from, when: { messageType: messageType as string[], fhirpath: v.when?.fhirpath ?? '' }, steps, to, ordering: v.ordering });
    });
  }

  const tests = parseRouteTests(rawTests, new Set(routes.map((r) => r.id)), new Set(Object.keys(sinks)), problems, opts.fhirpathCheck);

  return {
    ...(engine as Omit<EngineConfig, 'sources' | 'sinks' | 'routes' | 'plugins' | 'pluginConfig' | 'baseDir' | 'tests' | 'connections' | 'warnings'>),
    plugins: [],
    sources,
    sinks,
    routes,
    tests,
    connections: conns.entries,
    warnings,
    pluginConfig,
    file: opts.file,
    baseDir: process.cwd(),
  };
}

/** `tests:` -- route tests run by `ferry validate-config --test` (see RouteTest). */
function parseRouteTests(raw: unknown, routeIds: Set<string>, sinkIds: Set<string>, problems: ConfigProblem[], fhirpathCheck?: (expr: string) => string | undefined): RouteTest[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    problems.push({ path: 'tests', message: 'must be a list of { message, source?, contentType?, expect: { routes?, sinks?, fhirpath? } }' });
    return [];
  }
  const out: RouteTest[] = [];
  raw.forEach((t: any, i) => {
    const at = `tests[${i}]`;
    if (!t || typeof t !== 'object' || typeof t.message !== 'string' || !t.message.trim()) {
      problems.push({ path: `${at}.message`, message: 'the message file to run through the routes' });
      return;
    }
    const e = t.expect ?? {};
    const list = (v: unknown, what: string, known?: Set<string>): string[] | undefined => {
      if (v === undefined) return undefined;
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
        problems.push({ path: `${at}.expect.${what}`, message: 'a list of strings' });
        return undefined;
      }
      if (known) for (const [j, x] of (v as string[]).entries()) if (!known.has(x)) problems.push({ path: `${at}.expect.${what}[${j}]`, message: `unknown ${what === 'routes' ? 'route' : 'sink'} "${x}"; defined: ${[...known].join(', ')}` });
      return v as string[];
    };
    const test: RouteTest = { name: typeof t.name === 'string' ? t.name : t.message, message: t.message, expect: {} };
    if (typeof t.source === 'string') test.source = t.source;
    if (typeof t.contentType === 'string') test.contentType = t.contentType;
    const routes = list(e.routes, 'routes', routeIds);
    const sinks = list(e.sinks, 'sinks', sinkIds);
    const fhirpath = list(e.fhirpath, 'fhirpath');
    for (const [j, x] of (fhirpath ?? []).entries()) {
      const err = fhirpathCheck?.(x);
      if (err) problems.push({ path: `${at}.expect.fhirpath[${j}]`, message: `invalid FHIRPath: ${err}` });
    }
    if (routes) test.expect.routes = routes;
    if (sinks) test.expect.sinks = sinks;
    if (fhirpath) test.expect.fhirpath = fhirpath;
    out.push(test);
  });
  return out;
}

/** Read a config file from disk (YAML), with interpolation. Problems are collected, not thrown. */
export function readConfigFile(file: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): Record<string, unknown> {
  const abs = path.resolve(file);
  if (!existsSync(abs)) {
    problems.push({ path: '', message: `config file not found: ${abs}` });
    return {};
  }
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    problems.push({ path: '', message: `cannot read config file ${abs}: ${(e as Error).message}` });
    return {};
  }
  return parseConfigText(text, env, problems);
}
