/**
 * What a reload compares: the config's settings and entries (as canonical JSON), the `plugins:` list,
 * and the config text stored as a version (secrets masked by fingerprint); `planReload` loads the new
 * config and says what to apply, if anything. `Engine.reload` applies what these say.
 */
import { createHash } from 'node:crypto';
import { redactConfig, secretFingerprints } from '../admin/redact';
import type { Logger } from 'winston';
import { ConfigError, type ConfigProblem } from '../config/load-config';
import type { EngineConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import type { DataQualityPolicy } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import type { PreparedRoutes } from '../pipeline/processor';
import type { PluginHost } from '../plugin/plugin-host';
import type { MessageStore } from '../store/message-store';
import { configure, type ConfigureOptions } from './configure';
import { dataQualityPolicies } from './runtimes';

/** What a reload did (`Engine.reload`): applied, refused as invalid, or refused as needing a restart. */
export interface ReloadResult {
  applied: boolean;
  /** The config version in force after the reload (the new one when applied). */
  version: number;
  /** Invalid: every problem, by path (the same report as validate-config); nothing was applied. */
  problems?: ConfigProblem[];
  /**
   * What only a restart applies, each named: settings (`store`, `processing`, `admin`, `log`,
   * `files`) and plugin changes (`plugins: <package> removed`, `... config changed`, `... adds
   * transforms ...` while transform workers run); nothing was applied.
   */
  restartRequired?: string[];
  /** Applied, and nothing differed from the config in force: the version stays. */
  unchanged?: boolean;
  /** Applied: what changed. */
  changes?: {
    sources: { added: string[]; restarted: string[]; removed: string[] };
    sinks: { added: string[]; restarted: string[]; removed: string[] };
    routes: { added: string[]; changed: string[]; removed: string[] };
    /** Plugins loaded by this reload (package names as the config lists them). */
    plugins: { added: string[] };
  };
}

/** Top-level settings a reload cannot apply to a running engine (plugins: see Engine.pluginChanges). */
export const RESTART_ONLY = ['store', 'processing', 'admin', 'api', 'connections', 'log', 'files'] as const;

/** Equal as configuration: the same JSON (key order aside). */
export function sameConfig(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) && !Buffer.isBuffer(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : x,
  );
}

/**
 * A config as stored in `config_versions`, canonical JSON: secrets masked as GET /api/config masks
 * them, but each by its fingerprint (`secretFingerprints`, never the value) -- so a rotated
 * password is a new version and `config diff` shows that secret changed.
 */
export async function maskedConfigText(config: EngineConfig): Promise<string> {
  const { file: _f, baseDir: _b, ...rest } = config;
  const fingerprints = await secretFingerprints(rest);
  return canonicalJson(redactConfig(rest, '', (_secret, at) => fingerprints.get(at) ?? '(redacted)'));
}

/**
 * Stores an applied config (secrets masked, its hash, who) and answers its version; the same
 * content as the latest stored version keeps that version. A store without config versions: `fallback`.
 */
export async function recordConfigVersion(
  store: MessageStore,
  config: EngineConfig,
  by: string,
  fallback: number,
): Promise<number> {
  if (!store.recordConfigVersion) return fallback;
  const text = await maskedConfigText(config);
  const { version } = await store.recordConfigVersion({
    hash: createHash('sha256').update(text).digest('hex'),
    appliedBy: by,
    config: text,
  });
  return version;
}

/** Ids added, changed and removed between two keyed sets of config entries. */
export function diffEntries(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
): { added: string[]; changed: string[]; removed: string[] } {
  const added = Object.keys(after).filter((k) => !(k in before));
  const removed = Object.keys(before).filter((k) => !(k in after));
  const changed = Object.keys(after).filter((k) => k in before && !sameConfig(before[k], after[k]));
  return { added, changed, removed };
}

/**
 * What a reload makes of the `plugins:` list. Added plugins are loaded (by `configure`, into
 * `freshHost`): their source and sink types serve at once; their transforms too -- unless
 * transform workers run, which load plugins only at start (a restart). A removed plugin, or a
 * plugin's changed config, needs a restart (what it registered is in use). Each named.
 */
export function pluginChanges(
  old: EngineConfig,
  fresh: EngineConfig,
  freshHost: PluginHost,
  running: { hosts: PluginHost[]; transformWorkers: boolean },
): { added: string[]; transforms: MessageTransform[]; restartRequired: string[] } {
  const restartRequired: string[] = [];
  const before = new Map(old.plugins.map((r) => [r.package, r]));
  const now = new Set(fresh.plugins.map((r) => r.package));
  for (const r of old.plugins)
    if (!now.has(r.package)) restartRequired.push(`plugins: ${r.package} removed (a loaded plugin is not unloaded)`);
  for (const r of fresh.plugins) {
    const o = before.get(r.package);
    if (o && !sameConfig(o.config, r.config)) restartRequired.push(`plugins: ${r.package} config changed`);
  }
  const added = fresh.plugins.filter((r) => !before.has(r.package)).map((r) => r.package);
  // The plugins the running engine has (by id): what the fresh host has beyond them was added.
  const runningIds = new Set(running.hosts.flatMap((h) => h.plugins().map((d) => d.manifest.id)));
  const newIds = new Set(
    freshHost
      .plugins()
      .map((d) => d.manifest.id)
      .filter((id) => !runningIds.has(id)),
  );
  const regs = freshHost.transforms().filter((t) => newIds.has(t.plugin));
  if (regs.length && running.transformWorkers) {
    const byPlugin = [...new Set(regs.map((t) => t.plugin))];
    restartRequired.push(
      `plugins: ${byPlugin.join(', ')} add${byPlugin.length > 1 ? '' : 's'} transforms, which the transform workers load only at start`,
    );
  }
  const transforms = restartRequired.length ? [] : regs.map((t) => t.container.resolve(t.impl));
  return { added: restartRequired.length ? [] : added, transforms, restartRequired };
}

/** A reload's plan: the answer when there is nothing to apply, else the new config and what differs. */
export type ReloadPlan =
  | { result: ReloadResult }
  | {
      result?: undefined;
      fresh: EngineConfig;
      freshHost: PluginHost;
      plugins: ReturnType<typeof pluginChanges>;
      sinks: ReturnType<typeof diffEntries>;
      sources: ReturnType<typeof diffEntries>;
      routes: ReturnType<typeof diffEntries>;
      /** The new routes, steps and data-quality policies, compiled (`Processor.prepareRoutes`). */
      compiled: PreparedRoutes;
    };

/**
 * Loads and validates the new config (`opts`) and compares it with the one in force: an invalid
 * config, or one changing what only a restart applies, is refused; one that changes nothing is
 * answered as unchanged (logged, by paths and setting names only); so is one whose route steps do
 * not compile. Else: what to apply, compiled. Nothing in force changes here.
 */
export async function planReload(
  running: {
    config: EngineConfig;
    version: number;
    hosts: PluginHost[];
    transformWorkers: boolean;
    logger: Logger;
    compile: (routes: EngineConfig['routes'], dataQuality: Record<string, DataQualityPolicy>) => PreparedRoutes;
  },
  opts: ConfigureOptions,
  by: string,
): Promise<ReloadPlan> {
  const { logger } = running;
  let fresh: EngineConfig;
  let freshHost: PluginHost;
  try {
    /* eslint-disable @typescript-eslint/no-require-imports -- lazy, like configure() itself */
    ({ config: fresh, host: freshHost } = await configure({
      ...opts,
      logger: (require('../logging/logger') as typeof import('../logging/logger')).silentLogger(),
    }));
    /* eslint-enable @typescript-eslint/no-require-imports */
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    // Paths and messages only: a config problem names settings, never message content.
    logger.error('config reload refused: the config is not valid; the running config stays', {
      by,
      problems: e.problems.length,
      details: e.problems.map((p) => `${p.path}: ${p.message}`),
    });
    return { result: { applied: false, version: running.version, problems: e.problems } };
  }
  const old = running.config;
  const plugins = pluginChanges(old, fresh, freshHost, {
    hosts: running.hosts,
    transformWorkers: running.transformWorkers,
  });
  const restartRequired = [...RESTART_ONLY.filter((k) => !sameConfig(old[k], fresh[k])), ...plugins.restartRequired];
  if (restartRequired.length) {
    logger.warn('config reload refused: changed settings need a restart; nothing applied', {
      by,
      settings: restartRequired,
    });
    return { result: { applied: false, version: running.version, restartRequired: [...restartRequired] } };
  }
  const sinks = diffEntries(old.sinks, fresh.sinks);
  const sources = diffEntries(old.sources, fresh.sources);
  const routes = diffEntries(
    Object.fromEntries(old.routes.map((r) => [r.id, r])),
    Object.fromEntries(fresh.routes.map((r) => [r.id, r])),
  );
  // With script steps a reload always reloads them (their files may have changed; the version stays when the config did not).
  const scripts = fresh.routes.some((r) => r.steps.some((st) => 'script' in st));
  if (
    !scripts &&
    !plugins.added.length &&
    sameConfig(old.sinks, fresh.sinks) &&
    sameConfig(old.sources, fresh.sources) &&
    sameConfig(old.routes, fresh.routes)
  ) {
    logger.info('config reloaded: no change', { by, version: running.version });
    return { result: { applied: true, version: running.version, unchanged: true } };
  }
  const dataQuality = dataQualityPolicies(fresh);
  // Compiled (scripts loaded afresh from their files) before anything changes: a step that does
  // not compile refuses the reload.
  let compiled: PreparedRoutes;
  try {
    compiled = running.compile(fresh.routes, dataQuality);
  } catch (e) {
    if (!(e instanceof FerryError) || e.kind !== 'config') throw e;
    const problems = [{ path: 'routes', message: e.message }];
    logger.error('config reload refused: a route step does not load; the running config stays', {
      by,
      problems: 1,
      details: problems.map((p) => `${p.path}: ${p.message}`),
    });
    return { result: { applied: false, version: running.version, problems } };
  }
  return { fresh, freshHost, plugins, sinks, sources, routes, compiled };
}
