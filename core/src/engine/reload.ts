/**
 * What a reload compares: the config's settings and entries (as canonical JSON), the `plugins:` list,
 * and the config text stored as a version (secrets masked by fingerprint). `Engine.reload` applies
 * what these say.
 */
import { redactConfig, secretFingerprints } from '../admin/redact';
import type { ConfigProblem } from '../config/load-config';
import type { EngineConfig } from '../config/engine.schema';
import type { MessageTransform } from '../plugin/api';
import type { PluginHost } from '../plugin/plugin-host';

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
