import path from 'node:path';
// semver's three functions by their own modules: the package index loads all of semver (47 modules, ~25 of them
// never used here), which `ferry convert` pays at every call
import satisfies from 'semver/functions/satisfies';
import valid from 'semver/functions/valid';
import validRange from 'semver/ranges/valid';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import type { Logger } from './api';
import { FerryError } from '../errors';
import type {
  CliCommand,
  ConfigSchema,
  Ctor,
  FacadeProviderRegistration,
  MessageSink,
  MessageSource,
  MessageTransform,
  PluginDefinition,
  PluginManifest,
  PluginRegistrar,
} from './api';
import { coreTokens, type Token } from './tokens';

export interface SourceTypeRegistration {
  type: string;
  plugin: string;
  impl: Ctor<MessageSource>;
  schema: ConfigSchema;
  container: DependencyContainer;
}
export interface SinkTypeRegistration {
  type: string;
  plugin: string;
  impl: Ctor<MessageSink>;
  schema: ConfigSchema;
  container: DependencyContainer;
}
export interface TransformRegistration {
  plugin: string;
  impl: Ctor<MessageTransform>;
  container: DependencyContainer;
}
export interface FacadeProviderTypeRegistration {
  kind: string;
  plugin: string;
  registration: FacadeProviderRegistration;
}
export interface CommandRegistration {
  plugin: string;
  command: CliCommand;
}

const ID_RE = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

// eslint-disable-next-line @typescript-eslint/no-require-imports -- core's package.json, read at run time (outside tsc's rootDir)
export const CORE_VERSION: string = require('../../package.json').version;

const pluginError = (id: string, what: string, details?: Record<string, unknown>) =>
  new FerryError('CONFIG_PLUGIN_INVALID', `plugin "${id}": ${what}`, {
    kind: 'config',
    details: { plugin: id, ...details },
  });

/** Checks a manifest; returns every problem found. */
export function manifestProblems(m: unknown, coreVersion = CORE_VERSION): string[] {
  const problems: string[] = [];
  if (!m || typeof m !== 'object') return ['manifest missing'];
  const man = m as Partial<PluginManifest>;
  if (typeof man.id !== 'string' || !ID_RE.test(man.id))
    problems.push(`manifest.id must be kebab-case (got ${JSON.stringify(man.id)})`);
  if (typeof man.version !== 'string' || !valid(man.version))
    problems.push(`manifest.version must be a semver version (got ${JSON.stringify(man.version)})`);
  if (typeof man.engine !== 'string' || !validRange(man.engine))
    problems.push(`manifest.engine must be a semver range (got ${JSON.stringify(man.engine)})`);
  else if (!satisfies(coreVersion, man.engine, { includePrerelease: true }))
    problems.push(`needs @ferry/core ${man.engine}, this is ${coreVersion}`);
  if (
    man.dependsOn !== undefined &&
    (!Array.isArray(man.dependsOn) || man.dependsOn.some((d) => typeof d !== 'string'))
  )
    problems.push('manifest.dependsOn must be a list of plugin ids');
  return problems;
}

/**
 * Loads plugins into per-plugin child containers and collects what they register under the
 * shared tokens in the engine's container.
 */
export class PluginHost {
  readonly container: DependencyContainer;
  private readonly loaded = new Map<string, PluginDefinition>();
  /** The services plugins provide (`reg.provide`), to dispose when the engine stops. */
  private readonly services: { dispose(): Promise<void> }[] = [];

  constructor(
    private readonly logger: Logger,
    parent: DependencyContainer = rootContainer,
  ) {
    this.container = parent.createChildContainer();
  }

  /** Resolve a config reference (package name or path) to a plugin definition. */
  static resolveDefinition(ref: string, baseDir: string): PluginDefinition {
    const isPath = ref.startsWith('.') || ref.startsWith('/') || path.isAbsolute(ref);
    const target = isPath ? path.resolve(baseDir, ref) : ref;
    let mod: any;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a plugin is loaded by a path or name known only at run time
      mod = require(isPath ? target : require.resolve(ref, { paths: [baseDir, __dirname] }));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new FerryError(
        'CONFIG_PLUGIN_NOT_FOUND',
        code === 'MODULE_NOT_FOUND' && String((e as Error).message).includes(isPath ? target : ref)
          ? `plugin "${ref}" not found (${isPath ? `no module at ${target}` : 'is the package installed?'})`
          : `plugin "${ref}" failed to load: ${(e as Error).message}`,
        { kind: 'config', cause: e, details: { plugin: ref } },
      );
    }
    const def = mod?.default && typeof mod.default === 'object' && 'manifest' in mod.default ? mod.default : mod;
    if (!def || typeof def !== 'object' || !('manifest' in def) || typeof def.register !== 'function')
      throw new FerryError(
        'CONFIG_PLUGIN_INVALID',
        `plugin "${ref}": the module does not export a definePlugin(...) definition (default export)`,
        {
          kind: 'config',
          details: { plugin: ref },
        },
      );
    return def as PluginDefinition;
  }

  /**
   * Validate and register plugins. `configs` maps plugin id -> its validated config.
   * Throws one FerryError naming the plugin on the first bad plugin.
   */
  async load(defs: PluginDefinition[], configs: (def: PluginDefinition) => Record<string, unknown>): Promise<void> {
    const ids = new Set<string>();
    for (const def of defs) {
      const id = (def.manifest as PluginManifest | undefined)?.id ?? '(unnamed)';
      const problems = manifestProblems(def.manifest);
      if (typeof def.register !== 'function') problems.push('register must be a function');
      if (problems.length) throw pluginError(String(id), problems.join('; '), { problems });
      if (ids.has(id)) throw pluginError(id, 'loaded twice');
      ids.add(id);
    }
    for (const def of defs) {
      const missing = (def.manifest.dependsOn ?? []).filter((d) => !ids.has(d));
      if (missing.length)
        throw pluginError(
          def.manifest.id,
          `depends on ${missing.map((m) => `"${m}"`).join(', ')}, which is not loaded`,
        );
    }
    // Dependencies register first.
    for (const def of topoSort(defs)) await this.register(def, configs(def));
  }

  private async register(def: PluginDefinition, config: Record<string, unknown>): Promise<void> {
    const id = def.manifest.id;
    const child = this.container.createChildContainer();
    const logger = this.logger.child({ plugin: id });
    child.register(coreTokens.PluginConfig, { useValue: config });
    child.register(coreTokens.Logger, { useValue: logger });
    const taken = (token: Token<{ type: string; plugin: string }>, type: string) =>
      this.all(token).find((r) => r.type === type);
    const reg: PluginRegistrar = {
      manifest: def.manifest,
      config,
      logger,
      container: child,
      addSourceType: (type, impl, schema) => {
        const prev = taken(coreTokens.sources, type);
        if (prev) throw pluginError(id, `source type "${type}" is already registered by plugin "${prev.plugin}"`);
        this.container.register(coreTokens.sources, { useValue: { type, plugin: id, impl, schema, container: child } });
      },
      addSinkType: (type, impl, schema) => {
        const prev = taken(coreTokens.sinks, type);
        if (prev) throw pluginError(id, `sink type "${type}" is already registered by plugin "${prev.plugin}"`);
        this.container.register(coreTokens.sinks, { useValue: { type, plugin: id, impl, schema, container: child } });
      },
      addTransform: (impl) => {
        this.container.register(coreTokens.transforms, { useValue: { plugin: id, impl, container: child } });
      },
      registerFacadeProvider: (kind, registration) => {
        if (!ID_RE.test(kind)) throw pluginError(id, `connection kind "${kind}" must be kebab-case`);
        if (typeof registration?.create !== 'function')
          throw pluginError(id, `connection kind "${kind}": create must be a function`);
        const prev = this.facadeProviders().find((r) => r.kind === kind);
        if (prev) throw pluginError(id, `connection kind "${kind}" is already registered by plugin "${prev.plugin}"`);
        this.container.register(coreTokens.facadeProviders, { useValue: { kind, plugin: id, registration } });
      },
      provide: (token, create, opts) => {
        if (opts?.shared && this.container.isRegistered(token)) return;
        this.provide(opts?.shared ? this.container : child, token, create);
      },
      addCommand: (command) => {
        const name = command.name.split(' ')[0];
        const prev = this.commands().find((c) => c.command.name.split(' ')[0] === name);
        if (prev) throw pluginError(id, `command "${name}" is already registered by plugin "${prev.plugin}"`);
        this.container.register(coreTokens.commands, { useValue: { plugin: id, command } });
      },
    };
    try {
      await def.register(reg);
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw new FerryError(
        'CONFIG_PLUGIN_REGISTER_FAILED',
        `plugin "${id}": register() failed: ${(e as Error).message}`,
        {
          kind: 'config',
          cause: e,
          details: { plugin: id },
        },
      );
    }
    this.loaded.set(id, def);
    logger.debug('plugin registered', { version: def.manifest.version });
  }

  /** `token` resolves to one instance made by `create` when first asked for, until `dispose()`. */
  private provide<T>(container: DependencyContainer, token: Token<T>, create: () => T): void {
    let made: { instance: T } | undefined;
    container.register(token, { useFactory: () => (made ??= { instance: create() }).instance });
    this.services.push({
      dispose: async () => {
        const m = made;
        made = undefined;
        const d = (m?.instance as { dispose?: () => unknown } | undefined)?.dispose;
        if (typeof d === 'function') await d.call(m!.instance);
      },
    });
  }

  /** Disposes the services plugins provided (`reg.provide`), last provided first; the engine's stop calls it. */
  async dispose(): Promise<void> {
    for (const s of [...this.services].reverse())
      await s
        .dispose()
        .catch((e) => this.logger.warn('plugin service dispose failed', { error: (e as Error).message }));
  }

  plugins(): PluginDefinition[] {
    return [...this.loaded.values()];
  }
  private all<T>(token: Token<T>): T[] {
    return this.container.isRegistered(token) ? this.container.resolveAll(token) : [];
  }
  sourceTypes(): SourceTypeRegistration[] {
    return this.all(coreTokens.sources);
  }
  sinkTypes(): SinkTypeRegistration[] {
    return this.all(coreTokens.sinks);
  }
  transforms(): TransformRegistration[] {
    return this.all(coreTokens.transforms);
  }
  commands(): CommandRegistration[] {
    return this.all(coreTokens.commands);
  }
  /** Connection kinds (athena, epic, ...) and their facade providers. */
  facadeProviders(): FacadeProviderTypeRegistration[] {
    return this.all(coreTokens.facadeProviders);
  }
}

function topoSort(defs: PluginDefinition[]): PluginDefinition[] {
  const byId = new Map(defs.map((d) => [d.manifest.id, d]));
  const out: PluginDefinition[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (d: PluginDefinition, trail: string[]) => {
    const id = d.manifest.id;
    if (state.get(id) === 'done') return;
    if (state.get(id) === 'visiting') throw pluginError(id, `dependency cycle: ${[...trail, id].join(' -> ')}`);
    state.set(id, 'visiting');
    for (const dep of d.manifest.dependsOn ?? []) visit(byId.get(dep)!, [...trail, id]);
    state.set(id, 'done');
    out.push(d);
  };
  for (const d of defs) visit(d, []);
  return out;
}
