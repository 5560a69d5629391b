/**
 * The engine's running parts, built from the config: the transform worker pool, each sink's runtime
 * and each source instance (resolved in its plugin's child container, with its context), and the FHIR
 * facade. `Engine` starts them in order at start-up and on a reload, and keeps them.
 */
import os from 'node:os';
import v8 from 'node:v8';
import type { Logger } from 'winston';
import type { EngineConfig } from '../config/engine.schema';
import type { SinkRuntime } from '../delivery/dispatcher';
import type { FacadeServer } from '../facade/facade.server';
import type { FacadeService } from '../facade/facade.service';
import type { FacadePipelineFeed } from '../facade/facade-pipeline-feed';
import type { DataQualityPolicy, InboundMessage } from '../model/message';
import type { PluginHost } from '../plugin/plugin-host';
import { coreTokens } from '../plugin/tokens';
import { DEFAULT_DATA_QUALITY } from '../pipeline/data-quality';
import { TransformPool } from '../pipeline/transform-pool';
import type { InsertResult } from '../store/message-store';
import { sinkContext, sourceContext, type ContextEngine } from './contexts';
import type { SourceRuntime } from './references';

/** The engine as its running parts are built from it. */
export interface RuntimeEngine extends ContextEngine {
  readonly logger: Logger;
}

/** `processing.transformWorkers`: auto = one fewer than the CPUs (the engine thread has one), at most 4. */
export function transformWorkerCount(setting: number | 'auto'): number {
  if (setting === 'auto') return Math.max(0, Math.min(4, (os.availableParallelism?.() ?? os.cpus().length) - 1));
  return setting;
}

/**
 * `processing.heapGrowthPercent`: V8's heap growing factor for the whole process (the flag is read at every
 * full collection's new limit, by every isolate: the engine thread's and each transform worker's). 0 gives
 * the choice back to V8 (its dynamic factor, up to 4x).
 */
export function applyHeapGrowth(percent: number): void {
  v8.setFlagsFromString(`--heap-growing-percent=${Math.max(0, Math.floor(percent))}`);
}

/** Each source's `dataQuality` policy, by source id (plain data: it goes to the transform workers too). */
export function dataQualityPolicies(config: EngineConfig): Record<string, DataQualityPolicy> {
  const out: Record<string, DataQualityPolicy> = {};
  for (const [id, src] of Object.entries(config.sources))
    if (src.dataQuality) out[id] = { policy: src.dataQuality.policy, fields: { ...src.dataQuality.fields } };
  return out;
}

/** The transform worker threads, when there are workers and plugins to load in them (else none). */
export async function startTransformPool(cfg: EngineConfig, logger: Logger): Promise<TransformPool | undefined> {
  const workers = transformWorkerCount(cfg.processing.transformWorkers);
  if (workers > 0 && cfg.plugins.length)
    return TransformPool.start(
      workers,
      {
        plugins: cfg.plugins.map((p) => p.package),
        pluginConfig: cfg.pluginConfig,
        pluginBaseDir: process.cwd(),
        routes: cfg.routes,
        dataQuality: dataQualityPolicies(cfg),
        validate: cfg.processing.validate !== false,
        baseDir: cfg.baseDir,
        log: cfg.log,
      },
      logger.child({ component: 'transform-pool' }),
    );
  return undefined;
}

/** A configured sink, resolved from the first of `hosts` registering its type, started. */
export async function startSink(
  engine: RuntimeEngine,
  hosts: PluginHost[],
  id: string,
  entry: EngineConfig['sinks'][string],
  cfg: EngineConfig,
): Promise<SinkRuntime> {
  const reg = hosts.map((h) => h.sinkTypes().find((s) => s.type === entry.type)).find(Boolean)!;
  const { type: _t, retry, circuitBreaker, concurrency, deliveryTimeoutMs, ...rest } = entry;
  const logger = engine.logger.child({ sink: id });
  const ctx = sinkContext(engine, { id, config: rest, logger });
  const child = reg.container.createChildContainer();
  child.register(coreTokens.SinkContext, { useValue: ctx });
  const sink = child.resolve(reg.impl);
  await sink.start?.();
  return {
    id,
    sink,
    retry,
    logger,
    concurrency: concurrency || sink.preferredConcurrency || cfg.processing.deliveryWorkers || 1,
    deliveryTimeoutMs,
    circuit: circuitBreaker,
  };
}

/** A configured source, resolved from the first of `hosts` registering its type; not started yet. */
export function createSource(
  engine: RuntimeEngine,
  hosts: PluginHost[],
  id: string,
  entry: EngineConfig['sources'][string],
): SourceRuntime {
  const reg = hosts.map((h) => h.sourceTypes().find((s) => s.type === entry.type)).find(Boolean)!;
  const { type, duplicates, dataQuality: dq, connection: _connection, ...rest } = entry;
  const dataQuality = dq ?? DEFAULT_DATA_QUALITY;
  const logger = engine.logger.child({ source: id });
  const abort = new AbortController();
  const ctx = sourceContext(engine, { id, config: rest, logger, signal: abort.signal, duplicates, dataQuality });
  const child = reg.container.createChildContainer();
  child.register(coreTokens.SourceContext, { useValue: ctx });
  const source = child.resolve(reg.impl);
  return { id, type, source, abort };
}

/** The FHIR facade (`api:`), running: its service, its listener, and the pipeline's feed of its store. */
export interface RunningFacade {
  service: FacadeService;
  server: FacadeServer;
  feed: FacadePipelineFeed;
}

/** The FHIR facade (`api:`): a provider per connection, on its own listener. */
export async function startFhirFacade(
  engine: RuntimeEngine & {
    readonly host: PluginHost;
    /** The config in force (a reload may bind sources to connections). */
    readonly config: EngineConfig;
    submit(sourceId: string, messages: InboundMessage[]): Promise<InsertResult[]>;
  },
  cfg: EngineConfig,
): Promise<RunningFacade> {
  // loaded only when the facade is on
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: the facade loads only when it is on
  const { FacadeService } = require('../facade/facade.service') as typeof import('../facade/facade.service');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: the facade loads only when it is on
  const { startFacade } = require('../facade/facade.server') as typeof import('../facade/facade.server');
  const { FacadePipelineFeed } =
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: the facade loads only when it is on
    require('../facade/facade-pipeline-feed') as typeof import('../facade/facade-pipeline-feed');
  const logger = engine.logger.child({ component: 'facade' });
  const service = new FacadeService({
    store: engine.store,
    transforms: engine.transforms,
    logger,
    api: cfg.api,
    connections: cfg.connections,
    providers: engine.host.facadeProviders(),
    submit: (sourceId, messages) => engine.submit(sourceId, messages),
  });
  service.start();
  try {
    const server = await startFacade({ api: cfg.api, auth: cfg.admin.auth, store: engine.store, logger, service });
    const feed = new FacadePipelineFeed(
      service,
      engine.store.facade,
      logger,
      (sourceId) => engine.config.sources[sourceId]?.connection,
    );
    return { service, server, feed };
  } catch (e) {
    await service.close();
    throw e;
  }
}
