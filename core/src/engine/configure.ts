import path from 'node:path';
import type { Logger } from '../plugin/api';
import type { EngineConfig } from '../config/engine.schema';
import {
  ConfigError,
  buildEngineConfig,
  readConfigFile,
  readPluginRefs,
  resolveValues,
  validateWithSchema,
  type ConfigProblem,
} from '../config/load-config';
import type { FerryError } from '../errors';
import type { PluginDefinition } from '../plugin/api';
import { PluginHost } from '../plugin/plugin-host';

export interface ConfigureOptions {
  /** A YAML file. */
  configFile?: string;
  /** The same shape as the YAML, already parsed (tests, embedding); `${VAR}` and `*_FILE` are resolved too. */
  config?: Record<string, unknown>;
  /** Extra in-memory plugins, loaded after the ones the config lists. */
  plugins?: PluginDefinition[];
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
}

export interface Configured {
  config: EngineConfig;
  host: PluginHost;
}

/**
 * Reads and validates a whole configuration: loads the plugins it names (each checked and
 * registered), validates every plugin's, source's, sink's and route's entry, and throws one
 * ConfigError listing every problem by path.
 */
export async function configure(opts: ConfigureOptions): Promise<Configured> {
  // loaded here, not at import: configurePlugins (ferry convert) needs neither the core sinks/sources nor FHIRPath
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: configurePlugins (ferry convert) needs neither
  const { corePlugin } = require('../plugin/core.plugin') as typeof import('../plugin/core.plugin');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: configurePlugins (ferry convert) needs neither
  const { fhirpathError } = require('../fhir/fhirpath') as typeof import('../fhir/fhirpath');
  const { raw, refs, host, pluginConfig, problems } = await loadPlugins(opts, [corePlugin]);
  const env = opts.env ?? process.env;
  const catalog = {
    sourceSchema: (t: string) => host.sourceTypes().find((s) => s.type === t)?.schema,
    sinkSchema: (t: string) => host.sinkTypes().find((s) => s.type === t)?.schema,
    sourceTypes: () => host.sourceTypes().map((s) => s.type),
    sinkTypes: () => host.sinkTypes().map((s) => s.type),
    outputProfileProblems: (format: string, profile: unknown) => {
      const t = host
        .transforms()
        .map((x) => x.container.resolve(x.impl))
        .find((x) => x.outputFormats?.includes(format) && x.fromFhir);
      if (!t) return undefined;
      return t.outputProfileProblems?.(format, profile) ?? [];
    },
    connectionKinds: () =>
      host.facadeProviders().map((f) => ({
        kind: f.kind,
        schema: f.registration.connectionSchema,
        sourceTypes: f.registration.sourceTypes ?? [],
        sinkTypes: f.registration.sinkTypes ?? [],
      })),
  };
  const config = buildEngineConfig(raw, catalog, pluginConfig, problems, {
    env,
    file: opts.configFile && path.resolve(opts.configFile),
    fhirpathCheck: fhirpathError,
  });
  config.plugins = refs;
  if (problems.length) throw new ConfigError(problems, opts.configFile);
  return { config, host };
}

/**
 * Only the plugins a configuration names (and `opts.plugins`), each config validated against its schema and
 * registered — not the core plugin, sources, sinks or routes. For commands that need a plugin's transforms
 * (`ferry convert`) without an engine; throws one ConfigError listing every problem.
 */
export async function configurePlugins(opts: ConfigureOptions): Promise<PluginHost> {
  const { host, problems } = await loadPlugins(opts, []);
  if (problems.length) throw new ConfigError(problems, opts.configFile);
  return host;
}

async function loadPlugins(opts: ConfigureOptions, first: PluginDefinition[]) {
  const env = opts.env ?? process.env;
  const problems: ConfigProblem[] = [];
  const raw = opts.configFile
    ? readConfigFile(opts.configFile, env, problems)
    : (resolveValues(structuredClone(opts.config ?? {}), '', env, problems) as Record<string, unknown>);
  if (problems.length) throw new ConfigError(problems, opts.configFile);
  const baseDir = process.cwd();

  const refs = readPluginRefs(raw, problems);
  const defs: { def: PluginDefinition; config: Record<string, unknown>; at: string }[] = first.map((def) => ({
    def,
    config: {},
    at: '',
  }));
  refs.forEach((ref, i) => {
    try {
      defs.push({ def: PluginHost.resolveDefinition(ref.package, baseDir), config: ref.config, at: `plugins[${i}]` });
    } catch (e) {
      problems.push({ path: `plugins[${i}]`, message: (e as Error).message });
    }
  });
  for (const def of opts.plugins ?? []) defs.push({ def, config: {}, at: `(plugin ${def.manifest?.id})` });

  const pluginConfig: Record<string, Record<string, unknown>> = {};
  /* eslint-disable @typescript-eslint/no-require-imports -- lazy: the logger module loads only when no logger is given */
  const host = new PluginHost(
    opts.logger ?? (require('../logging/logger') as typeof import('../logging/logger')).silentLogger(),
  );
  /* eslint-enable @typescript-eslint/no-require-imports */
  {
    for (const d of defs) {
      const id = d.def.manifest?.id;
      if (typeof id === 'string')
        pluginConfig[id] = validateWithSchema(d.def.configSchema ?? {}, d.config, `${d.at}.config`, problems);
    }
    try {
      await host.load(
        defs.map((d) => d.def),
        (def) => pluginConfig[def.manifest.id] ?? {},
      );
    } catch (e) {
      const id = (e as FerryError).details?.plugin;
      const at = defs.find((d) => d.def.manifest?.id === id)?.at ?? 'plugins';
      problems.push({ path: at, message: (e as Error).message });
    }
  }
  return { raw, refs, host, pluginConfig, problems };
}
