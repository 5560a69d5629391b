/**
 * Loading a config: the YAML text (config-text.ts), convict validation by path (validate-schema.ts),
 * connections (connections.ts), routes and route tests (routes.ts); buildEngineConfig puts them together.
 */
import type { ConfigSchema } from '../plugin/api';
import { type ConfigProblem } from './config-error';
import { readConnections, withConnection } from './connections';
import { engineSchema, sinkCommonSchema, sourceCommonSchema, type EngineConfig, type PluginRef } from './engine.schema';
import { parseRouteTests, readRoutes } from './routes';
import { validateWithSchema } from './validate-schema';
import { OWN_FORMATS } from '../sinks/formats';

export { ConfigError, type ConfigProblem } from './config-error';
export { parseConfigText, readConfigFile, resolveValues } from './config-text';
export { validateWithSchema } from './validate-schema';
export { facadeConnectionSchema } from './engine.schema';

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
      for (const k of Object.keys(rest))
        problems.push({ path: `plugins[${i}].${k}`, message: 'unknown key (expected package, config)' });
      if (config !== undefined && (typeof config !== 'object' || Array.isArray(config) || config === null))
        problems.push({ path: `plugins[${i}].config`, message: 'must be a mapping' });
      refs.push({ package: pkg, config: (config as Record<string, unknown>) ?? {} });
    } else problems.push({ path: `plugins[${i}]`, message: 'must be a package name or path, or { package, config }' });
  });
  return refs;
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
  const {
    sources: rawSources,
    sinks: rawSinks,
    routes: rawRoutes,
    plugins: _p,
    tests: rawTests,
    connections: rawConnections,
    ...engineRest
  } = raw;
  const warnings: ConfigProblem[] = [];
  const conns = readConnections(rawConnections, catalog, problems);
  const engine = validateWithSchema<any>(
    {
      ...engineSchema,
      sources: { doc: '', format: Object, default: {} },
      sinks: { doc: '', format: Object, default: {} },
      routes: { doc: '', format: Array, default: [] },
      plugins: { doc: '', format: Array, default: [] },
    },
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
      problems.push({
        path: 'admin.auth.oidc.jwksUrl',
        message: "required with issuer: the identity provider's JWKS URL",
      });
    }
    if (url && url.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname))
      problems.push({ path: 'admin.auth.oidc.jwksUrl', message: 'must be https (http only on localhost)' });
    if (!oidc.audience)
      problems.push({
        path: 'admin.auth.oidc.audience',
        message:
          'required with issuer (the client id Ferry is registered as): a token for another application must not open the admin API',
      });
  }
  const oc = oidc?.console;
  if (oc?.clientId) {
    if (!oidc.issuer)
      problems.push({
        path: 'admin.auth.oidc.console.clientId',
        message: 'needs admin.auth.oidc.issuer (the provider the console signs in with)',
      });
    else {
      let iss: URL | undefined;
      try {
        iss = new URL(oidc.issuer);
      } catch {
        problems.push({
          path: 'admin.auth.oidc.issuer',
          message: 'must be a URL with console sign-in (its /.well-known/openid-configuration is read)',
        });
      }
      if (iss && iss.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(iss.hostname))
        problems.push({
          path: 'admin.auth.oidc.issuer',
          message: 'must be https with console sign-in (http only on localhost)',
        });
    }
    if (oc.bearer === 'id_token' && oidc.audience && oidc.audience !== oc.clientId)
      problems.push({
        path: 'admin.auth.oidc.console.bearer',
        message: `id_token: its aud is the client id (${oc.clientId}), so admin.auth.oidc.audience must be it too (got ${oidc.audience}); or use access_token`,
      });
    if (oc.redirectUri) {
      let r: URL | undefined;
      try {
        r = new URL(oc.redirectUri);
      } catch {
        problems.push({
          path: 'admin.auth.oidc.console.redirectUri',
          message: 'must be an absolute URL ending in /console',
        });
      }
      if (r && (r.pathname.replace(/\/$/, '') !== '/console' || r.search || r.hash))
        problems.push({
          path: 'admin.auth.oidc.console.redirectUri',
          message: 'must be the console page: <origin>/console',
        });
    }
  }
  // A heartbeat or two missed must not make a live instance dead.
  const proc = engine?.processing as { heartbeatMs?: number; instanceTimeoutMs?: number } | undefined;
  if (proc?.heartbeatMs && proc.instanceTimeoutMs !== undefined && proc.instanceTimeoutMs < 2 * proc.heartbeatMs)
    problems.push({
      path: 'processing.instanceTimeoutMs',
      message: `must be at least twice processing.heartbeatMs (${proc.heartbeatMs}): got ${proc.instanceTimeoutMs}`,
    });

  const sources: EngineConfig['sources'] = {};
  if (
    rawSources !== undefined &&
    (typeof rawSources !== 'object' || Array.isArray(rawSources) || rawSources === null)
  ) {
    problems.push({ path: 'sources', message: 'must be a mapping of source id -> { type, ... }' });
  } else {
    for (const [id, entry] of Object.entries((rawSources as Record<string, unknown>) ?? {})) {
      const at = `sources.${id}`;
      const type = (entry as { type?: unknown })?.type;
      if (typeof type !== 'string') {
        problems.push({
          path: `${at}.type`,
          message: `missing; one of: ${catalog.sourceTypes().join(', ') || '(none registered)'}`,
        });
        continue;
      }
      const schema = catalog.sourceSchema(type);
      if (!schema) {
        problems.push({
          path: `${at}.type`,
          message: `unknown source type "${type}"; registered: ${catalog.sourceTypes().join(', ') || '(none)'}`,
        });
        continue;
      }
      const { type: _t, ...rest } = entry as Record<string, unknown>;
      const merged = withConnection(
        'source',
        at,
        type,
        rest,
        conns,
        catalog,
        { ...sourceCommonSchema, ...schema },
        problems,
        warnings,
      );
      if (!merged) continue;
      sources[id] = {
        type,
        ...validateWithSchema<any>({ ...sourceCommonSchema, ...schema }, merged, at, problems),
        // Kept (not passed to the source): the pipeline records what such a source delivers for the facade.
        ...(typeof rest.connection === 'string' ? { connection: rest.connection } : {}),
      };
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
        problems.push({
          path: `${at}.type`,
          message: `missing; one of: ${catalog.sinkTypes().join(', ') || '(none registered)'}`,
        });
        continue;
      }
      const schema = catalog.sinkSchema(type);
      if (!schema) {
        problems.push({
          path: `${at}.type`,
          message: `unknown sink type "${type}"; registered: ${catalog.sinkTypes().join(', ') || '(none)'}`,
        });
        continue;
      }
      const { type: _t, ...rest } = entry as Record<string, unknown>;
      const merged = withConnection(
        'sink',
        at,
        type,
        rest,
        conns,
        catalog,
        { ...sinkCommonSchema, ...schema },
        problems,
        warnings,
      );
      if (!merged) continue;
      sinks[id] = { type, ...validateWithSchema<any>({ ...sinkCommonSchema, ...schema }, merged, at, problems) };
      // a core sink writing a plugin's format (file/http `format: hl7v2`): the plugin checks the profile now
      const own = OWN_FORMATS[type];
      const format = (sinks[id] as { format?: unknown }).format;
      if (own && typeof format === 'string' && /^[a-z][a-z0-9-]*$/.test(format) && !own.includes(format)) {
        const found = catalog.outputProfileProblems?.(format, (sinks[id] as { profile?: unknown }).profile);
        if (!found)
          problems.push({
            path: `${at}.format`,
            message: `"${format}": not one of ${own.join(', ')}, and no loaded plugin writes it (hl7v2: load @ferry/plugin-hl7v2-mllp)`,
          });
        else
          for (const p of found)
            problems.push({
              path: p.path ? `${at}.profile${p.path.startsWith('[') ? '' : '.'}${p.path}` : `${at}.profile`,
              message: p.message,
            });
      }
    }
  }

  const knownSources = new Set(Object.keys((rawSources as object) ?? {}));
  const knownSinks = new Set(Object.keys((rawSinks as object) ?? {}));
  const routes = readRoutes(rawRoutes, knownSources, knownSinks, problems, opts.fhirpathCheck);

  const tests = parseRouteTests(
    rawTests,
    new Set(routes.map((r) => r.id)),
    new Set(Object.keys(sinks)),
    problems,
    opts.fhirpathCheck,
  );

  return {
    ...(engine as Omit<
      EngineConfig,
      'sources' | 'sinks' | 'routes' | 'plugins' | 'pluginConfig' | 'baseDir' | 'tests' | 'connections' | 'warnings'
    >),
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
