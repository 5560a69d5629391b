import { randomUUID } from 'node:crypto';
import { warmFhirValidator } from '../fhir/validate';
import os from 'node:os';
import type { Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import { startAdmin, type AdminServer } from '../admin/admin.server';
import { ensureInitialToken, printInitialToken } from '../admin/auth';
import { EngineMetrics } from '../admin/metrics';
import type { EngineConfig } from '../config/engine.schema';
import { Dispatcher, type SinkRuntime, type SinkView } from '../delivery/dispatcher';
import { FerryError } from '../errors';
import { createLogger, errorFields } from '../logging/logger';
import type { InboundMessage, MessageHeaders } from '../model/message';
import type { MessageSource, MessageTransform } from '../plugin/api';
import type { PluginHost } from '../plugin/plugin-host';
import { findTransform } from '../pipeline/process-message';
import { Processor, type PreparedRoutes } from '../pipeline/processor';
import type { TransformPool } from '../pipeline/transform-pool';
import { pruneByRetention } from '../store/admin-ops';
import { createStore } from '../store/create-store';
import type { DuplicateOptions, InsertResult, MessageStore, PruneResult, SinkHold } from '../store/message-store';
import { configure, type ConfigureOptions } from './configure';
import { storeSubmitted } from './intake';
import { resolveReferences, type SourceRuntime } from './references';
import { planReload, recordConfigVersion, type ReloadResult } from './reload';
import {
  applyHeapGrowth,
  createSource,
  dataQualityPolicies,
  startFhirFacade,
  startSink,
  startTransformPool,
  type RunningFacade,
} from './runtimes';
import { readiness, sourceViews, storeState, waitForIdle } from './status';
import { fileModesOf, type FileModes } from '../util/file-modes';

export interface EngineOptions extends ConfigureOptions {
  /** The engine's logger (winston: the engine gives children of it to its store, loops and servers). */
  logger?: Logger;
  /** Use this store instead of the configured one (tests, embedding). Not closed by stop(). */
  store?: MessageStore;
  /**
   * Where the initial admin token's secret goes when the first start creates it (no principal
   * configured): by default written to the terminal (stderr), never to the log.
   */
  showInitialToken?: (secret: string, id: string) => void;
}

export type { ReloadResult } from './reload';
export { maskedConfigText } from './reload';
export { withResources, writeFormat } from './references';
export { transformWorkerCount } from './runtimes';

/**
 * The engine: sources -> store -> processor (transform, routes, steps) -> dispatcher -> sinks.
 * `Engine.create` validates the whole configuration; `start` opens the store and starts
 * everything; `stop` stops accepting, finishes in-flight work and closes the store.
 */
export class Engine {
  readonly metrics = new EngineMetrics();
  readonly owner = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly transforms: MessageTransform[];
  readonly store: MessageStore;
  /** Modes of the files and folders the engine, its store, sinks and sources create (`files.umask`). */
  readonly fileModes: FileModes;
  private readonly ownsStore: boolean;
  private sources: SourceRuntime[] = [];
  private sinks = new Map<string, SinkRuntime>();
  /** Hosts of the plugins loaded by reloads (after `host`: its registrations come first). */
  private addedHosts: PluginHost[] = [];
  private processor?: Processor;
  private pool?: TransformPool;
  private dispatcher?: Dispatcher;
  private admin?: AdminServer;
  private facade?: RunningFacade;
  private pruneTimer?: NodeJS.Timeout;
  private state: 'created' | 'starting' | 'running' | 'stopping' | 'stopped' = 'created';
  /** The store knows this instance (`MessageStore.startInstance`). */
  private instanceStarted = false;
  /** True until every source has stopped: a source may still store what it already received. */
  private accepting = true;

  /** The config in force (a reload replaces it). */
  private cfg: EngineConfig;
  /** The config's version: 1 at start, +1 per applied reload. */
  private version = 1;
  /** Reloads run one at a time. */
  private reloading: Promise<unknown> = Promise.resolve();
  private configureOptions: ConfigureOptions = {};

  private constructor(
    config: EngineConfig,
    readonly host: PluginHost,
    readonly logger: Logger,
    store: MessageStore | undefined,
    private readonly showInitialToken: (secret: string, id: string) => void = printInitialToken,
  ) {
    this.cfg = config;
    this.ownsStore = !store;
    this.fileModes = fileModesOf(config);
    this.store =
      store ??
      createStore(config.store, logger.child({ component: 'store' }), config.baseDir, {
        engine: true,
        fileModes: this.fileModes,
      });
    this.transforms = host.transforms().map((t) => t.container.resolve(t.impl));
    this.metrics.sourceStats = () => this.sources.map((s) => ({ source: s.id, stats: s.source.stats?.() }));
    this.metrics.storeState = () => storeState(this.store);
  }

  static async create(opts: EngineOptions): Promise<Engine> {
    const bootLogger = opts.logger ?? createLogger({ level: (opts.env ?? process.env).FERRY_LOG_LEVEL ?? 'info' });
    const { config, host } = await configure({ ...opts, logger: bootLogger });
    const logger = opts.logger ?? createLogger(config.log);
    const engine = new Engine(config, host, logger, opts.store, opts.showInitialToken);
    engine.configureOptions = {
      configFile: opts.configFile,
      config: opts.config,
      plugins: opts.plugins,
      env: opts.env,
    };
    return engine;
  }

  /** The config in force. */
  get config(): EngineConfig {
    return this.cfg;
  }

  /** The version of the config in force (1 at start; each applied reload adds one). */
  get configVersion(): number {
    return this.version;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Each running source: type, readiness, its numeric stats and its own state view (`describe()`), no PHI. */
  sourceViews(): { id: string; type: string; ready: boolean; stats?: object; state?: object }[] {
    return sourceViews(this.sources);
  }

  /** Each configured sink as this instance sees it (empty before start). */
  sinkViews(): SinkView[] {
    return this.dispatcher?.sinkViews() ?? [];
  }

  /**
   * Holds a configured sink: every instance sharing the store stops claiming its deliveries
   * (this one at once, the others within a second); calls under way finish. Until released, or
   * until `until`.
   */
  async holdSink(sinkId: string, opts: { until?: Date; reason?: string } = {}): Promise<SinkHold> {
    this.assertSink(sinkId);
    const h = await this.store.holdSink(sinkId, opts);
    await this.dispatcher?.refreshHolds(true);
    return h;
  }

  /** Ends a sink's hold (false: it was not held). */
  async releaseSink(sinkId: string): Promise<boolean> {
    this.assertSink(sinkId);
    const released = await this.store.releaseSink(sinkId);
    await this.dispatcher?.refreshHolds(true);
    return released;
  }

  hasSink(sinkId: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.config.sinks, sinkId);
  }

  private assertSink(sinkId: string): void {
    if (!this.hasSink(sinkId))
      throw new FerryError('INPUT_UNKNOWN_SINK', `no sink "${sinkId}" in the config`, { kind: 'input' });
  }

  /** Ready: store open and reachable, and every source accepting. */
  readiness(): { ready: boolean; store: boolean; sources: Record<string, boolean> } {
    return readiness(this.state === 'running', this.store, this.sources);
  }

  async start(): Promise<void> {
    if (this.state !== 'created')
      throw new FerryError('INTERNAL_ENGINE_STATE', `engine cannot start from state ${this.state}`, {
        kind: 'internal',
      });
    this.state = 'starting';
    this.starting = this.startAll();
    try {
      await this.starting;
    } finally {
      this.starting = undefined;
    }
  }

  /** Set while start() runs: a stop() meanwhile waits for it, then stops what it started. */
  private starting?: Promise<void>;

  private async startAll(): Promise<void> {
    const cfg = this.config;
    try {
      await this.store.open();
      // Before any claim: the leases of a dead predecessor (SQLite) or of dead instances
      // (PostgreSQL, from now on every heartbeat) are released, not waited out.
      if (this.store.startInstance) {
        await this.store.startInstance(this.owner, {
          heartbeatMs: cfg.processing.heartbeatMs,
          instanceTimeoutMs: cfg.processing.instanceTimeoutMs,
        });
        this.instanceStarted = true;
      }
      for (const w of cfg.warnings) this.logger.warn('config: deprecated form', { path: w.path, detail: w.message });
      this.version = await recordConfigVersion(this.store, cfg, 'start', 1);
      for (const [id, entry] of Object.entries(cfg.sinks))
        this.sinks.set(id, await startSink(this, this.hosts(), id, entry, cfg));
      // before the FHIR definitions and the workers' heaps grow: memory stays flat under a steady load
      applyHeapGrowth(cfg.processing.heapGrowthPercent);
      // the FHIR definitions load now (≈ 1 s CPU), not on the first message
      if (cfg.processing.validate !== false) warmFhirValidator();
      const common = {
        owner: this.owner,
        leaseMs: cfg.processing.leaseMs,
        pollIntervalMs: cfg.processing.pollIntervalMs,
      };
      this.pool = await startTransformPool(cfg, this.logger);
      this.processor = new Processor(
        this.store,
        this.transforms,
        cfg.routes,
        this.logger.child({ component: 'processor' }),
        this.metrics,
        {
          ...common,
          batchSize: cfg.processing.batchSize,
          lingerMs: cfg.processing.lingerMs,
          maxAttempts: cfg.processing.maxAttempts,
          baseDir: cfg.baseDir,
          validate: cfg.processing.validate !== false,
          pool: this.pool,
          dataQuality: dataQualityPolicies(cfg),
          configVersion: this.version,
        },
      );
      this.dispatcher = new Dispatcher(
        this.store,
        this.sinks,
        this.logger.child({ component: 'dispatcher' }),
        this.metrics,
        {
          ...common,
        },
      );
      this.processor.onRouted = () => this.dispatcher?.kick();
      this.processor.start();
      this.dispatcher.start();
      for (const [id, entry] of Object.entries(cfg.sources)) await this.startSource(id, entry);
      if (cfg.admin.enabled) {
        const id = await ensureInitialToken(this.store, cfg.admin.auth, this.showInitialToken);
        if (id)
          this.logger.warn(
            'no admin principal configured: created the initial admin API token (shown once on the terminal)',
            { tokenId: id },
          );
        this.admin = await startAdmin(this, cfg.admin);
      }
      if (cfg.api.enabled) {
        this.facade = await startFhirFacade(this, cfg);
        // What sources bound to a served connection deliver is recorded for the facade too (off the message path).
        const feed = this.facade.feed;
        this.processor.onConverted = (converted) => feed.offer(converted);
      }
      this.schedulePruner();
      this.state = 'running';
      this.logger.info('engine started', {
        sources: this.sources.map((s) => `${s.id}(${s.type})`),
        sinks: [...this.sinks.keys()],
        routes: cfg.routes.map((r) => r.id),
        store: cfg.store.kind,
        admin: this.admin?.url,
        ...(this.facade
          ? { api: this.facade.server.url, connections: [...this.facade.service.connections.keys()] }
          : {}),
      });
    } catch (e) {
      this.logger.error('engine failed to start', errorFields(e));
      await this.shutdown().catch(() => undefined);
      throw e;
    }
  }

  /**
   * The newest stored canonical resource for each literal reference a delivery's Bundle lacks, else the
   * resource read from the system the message's source polls (`resolveReferences` in references.ts); audited.
   */
  resolveReferences(refs: string[], opts: { messageId: string; sinkId: string }): Promise<Resource[]> {
    return resolveReferences(
      { store: this.store, transforms: this.transforms, logger: this.logger, sources: this.sources },
      refs,
      opts,
    );
  }

  /** The FHIR facade's URL, when `api.enabled`. */
  get apiUrl(): string | undefined {
    return this.facade?.server.url;
  }

  /** The plugin hosts whose registrations the engine uses: the one it started with, then those of plugins loaded by reloads. */
  private hosts(): PluginHost[] {
    return [this.host, ...this.addedHosts];
  }

  /**
   * Re-reads the configuration (the same file, or the same in-memory config with `next`), validates
   * all of it and, only if it is valid, applies it without a restart. `by`: who asked (an admin
   * principal, or `signal`). Reloads run one at a time.
   *
   * Applied in this order, so that no message is routed to a sink that is not there: new and
   * changed sinks start; the routes (and steps, and data-quality policies) are swapped as one
   * compiled object between batches -- each message is routed wholly by the old or the new config,
   * on the engine thread and on the transform workers alike; removed sinks stop claiming and stop
   * once their calls under way finish; then changed sources restart (gracefully: what they
   * received is stored first), removed ones stop and new ones start. Unchanged sources keep their
   * listeners and connections. A change to plugins, pluginConfig, store, processing, admin, log or
   * files needs a restart: such a reload applies nothing and says so.
   */
  reload(by: string, next?: Record<string, unknown>): Promise<ReloadResult> {
    const run = this.reloading.then(() => this.doReload(by, next));
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async doReload(by: string, next?: Record<string, unknown>): Promise<ReloadResult> {
    if (this.state !== 'running')
      throw new FerryError('TRANSIENT_ENGINE_STATE', `engine is ${this.state}; cannot reload now`, {
        kind: 'transient',
      });
    const opts = next ? { ...this.configureOptions, configFile: undefined, config: next } : this.configureOptions;
    const processor = this.processor!;
    const plan = await planReload(
      {
        config: this.cfg,
        version: this.version,
        hosts: this.hosts(),
        transformWorkers: !!this.pool,
        logger: this.logger,
        compile: (routes, dataQuality) => processor.prepareRoutes(0, routes, dataQuality),
      },
      opts,
      by,
    );
    if (plan.result) return plan.result;
    const { fresh, freshHost, plugins, sinks, sources, routes, compiled } = plan;
    // 1. Sinks the new routes may name: the new runtimes start first; one that cannot start
    //    refuses the reload with nothing changed (those started are stopped again).
    const started = new Map<string, SinkRuntime>();
    try {
      const hosts = plugins.added.length ? [...this.hosts(), freshHost] : this.hosts();
      for (const id of [...sinks.added, ...sinks.changed])
        started.set(id, await startSink(this, hosts, id, fresh.sinks[id], fresh));
    } catch (e) {
      for (const [id, rt] of started)
        await rt.sink.stop?.().catch((err) => this.logger.warn('sink stop failed', { sink: id, ...errorFields(err) }));
      const problems = [{ path: 'sinks', message: `a sink could not start: ${(e as Error).message}` }];
      this.logger.error('config reload refused: a sink could not start; the running config stays', {
        by,
        ...errorFields(e),
      });
      return { applied: false, version: this.version, problems };
    }
    const version = await recordConfigVersion(this.store, fresh, by, this.version + 1);
    const prepared: PreparedRoutes = { pipeline: compiled.pipeline, generation: { ...compiled.generation, version } };
    for (const id of sinks.changed) {
      // The old runtime stops claiming and finishes its calls under way; then the new one claims.
      await this.dispatcher!.removeSink(id);
      await this.sinks
        .get(id)
        ?.sink.stop?.()
        .catch((e) => this.logger.warn('sink stop failed', { sink: id, ...errorFields(e) }));
      this.sinks.delete(id);
    }
    for (const [id, rt] of started) {
      this.sinks.set(id, rt);
      this.dispatcher!.setSink(rt);
    }
    // 2. Plugins loaded by this reload (their source and sink types; their transforms after the
    //    ones in use, so a content type keeps its transform), then the routes, as one object between batches.
    if (plugins.added.length) {
      this.addedHosts.push(freshHost);
      for (const t of plugins.transforms) this.transforms.push(t);
    }
    processor.useRoutes(prepared);
    this.cfg = fresh;
    this.version = version;
    // 3. Removed sinks: no more claims; stopped when their calls under way are done.
    for (const id of sinks.removed) {
      const rt = this.sinks.get(id);
      await this.dispatcher!.removeSink(id);
      this.sinks.delete(id);
      await rt?.sink.stop?.().catch((e) => this.logger.warn('sink stop failed', { sink: id, ...errorFields(e) }));
    }
    // 4. Sources: changed ones restart, removed ones stop, new ones start; the others are not touched.
    for (const id of [...sources.changed, ...sources.removed]) {
      const s = this.sources.find((x) => x.id === id);
      if (!s) continue;
      s.abort.abort();
      await s.source.stop().catch((e) => this.logger.warn('source stop failed', { source: id, ...errorFields(e) }));
      this.sources = this.sources.filter((x) => x !== s);
    }
    for (const id of [...sources.changed, ...sources.added]) await this.startSource(id, fresh.sources[id]);
    const changes = {
      sources: { added: sources.added, restarted: sources.changed, removed: sources.removed },
      sinks: { added: sinks.added, restarted: sinks.changed, removed: sinks.removed },
      routes,
      plugins: { added: plugins.added },
    };
    this.logger.info('config reloaded', { by, version, ...changes });
    this.dispatcher?.kick();
    this.processor?.kick();
    return { applied: true, version, changes };
  }

  /** Transform worker threads ready (0: processing on the engine thread). */
  get transformWorkers(): number {
    return this.pool?.ready ?? 0;
  }

  /** The admin server's URL, when enabled. */
  get adminUrl(): string | undefined {
    return this.admin?.url;
  }

  /** The admin server, when enabled (its routes, its guard for new endpoints). */
  get adminServer(): AdminServer | undefined {
    return this.admin;
  }

  /** The running source instance with this id (tests use it to find a bound port). */
  source<T extends MessageSource = MessageSource>(id: string): T | undefined {
    return this.sources.find((s) => s.id === id)?.source as T | undefined;
  }

  private async startSource(id: string, entry: EngineConfig['sources'][string]): Promise<void> {
    const rt = createSource(this, this.hosts(), id, entry);
    this.sources.push(rt);
    await rt.source.start();
  }

  /** New work may be in the store (after a replay): process and deliver it now. */
  kick(): void {
    this.processor?.kick();
    this.dispatcher?.kick();
  }

  extractHeaders(contentType: string, body: Buffer): MessageHeaders {
    const t = findTransform(this.transforms, contentType);
    return t?.extractHeaders ? t.extractHeaders(body) : {};
  }

  /** Store messages for a source; resolves after the commit. */
  async submit(
    sourceId: string,
    messages: InboundMessage[],
    opts: { duplicates?: DuplicateOptions; checkpoint?: { sourceId: string; key: string; value: string } } = {},
  ): Promise<InsertResult[]> {
    // Sources finish what they already received while they stop (they are stopped first).
    if (!this.accepting)
      throw new FerryError('TRANSIENT_ENGINE_STOPPING', 'engine is stopping; not accepting messages', {
        kind: 'transient',
      });
    const results = await storeSubmitted(this, sourceId, messages, opts);
    const stored = results.filter((r) => r.stored).length;
    if (stored) {
      this.metrics.received.inc({ source: sourceId }, stored);
      this.processor?.kick(stored);
    }
    return results;
  }

  /**
   * Resolves when nothing is left to do now: no message waiting to be processed, no delivery
   * pending or due. Deliveries waiting for a later retry count only with `includeScheduled`.
   */
  waitForIdle(timeoutMs = 10_000, opts: { includeScheduled?: boolean } = {}): Promise<void> {
    return waitForIdle(this.store, () => (this.dispatcher?.busy ?? 0) + (this.processor?.busy ?? 0), timeoutMs, opts);
  }

  private schedulePruner(): void {
    const { retention } = this.config.store;
    if (!retention.pruneIntervalMinutes) return;
    this.pruneTimer = setInterval(
      () => void this.prune().catch((e) => this.logger.error('prune failed', errorFields(e))),
      retention.pruneIntervalMinutes * 60_000,
    );
    this.pruneTimer.unref();
  }

  /** Drop bodies past the configured retention (the scheduled pruner and POST /api/prune). */
  async prune(now = new Date()): Promise<PruneResult> {
    const r = await pruneByRetention(this.store, this.config.store.retention, now);
    this.logger.info('pruned', { messages: r.messages, deleted: r.deleted });
    return r;
  }

  /** Stop accepting, finish in-flight work, close the store. */
  async stop(): Promise<void> {
    // Stopped while starting (a SIGTERM during start-up, a test's clean-up after a timeout): let the
    // start finish, then stop everything it started. Stopping at once would close the store under
    // a start that goes on to open the listeners and the loops, left running against a closed store.
    if (this.starting) await this.starting.catch(() => undefined);
    return this.shutdown();
  }

  private async shutdown(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    const results = await Promise.allSettled(
      this.sources.map(async (s) => {
        s.abort.abort();
        await s.source.stop();
      }),
    );
    results.forEach(
      (r, i) =>
        r.status === 'rejected' &&
        this.logger.warn('source stop failed', { source: this.sources[i].id, ...errorFields(r.reason) }),
    );
    // The facade's writes are recorded as messages: it stops with the sources.
    await this.facade?.server.close().catch((e) => this.logger.warn('facade stop failed', errorFields(e)));
    await this.facade?.service.close();
    this.accepting = false;
    await this.processor?.stop();
    await this.facade?.feed.idle();
    await this.pool?.close();
    await this.dispatcher?.stop();
    for (const s of this.sinks.values())
      await s.sink.stop?.().catch((e) => this.logger.warn('sink stop failed', { sink: s.id, ...errorFields(e) }));
    // the services plugins provided for this engine (reg.provide): NDJSON writers, vendor token caches...
    for (const h of this.hosts()) await h.dispose();
    await this.admin?.close();
    if (this.instanceStarted && this.store.isOpen())
      await this.store
        .stopInstance?.(this.owner)
        .catch((e) => this.logger.warn('instance deregistration failed', errorFields(e)));
    if (this.ownsStore && this.store.isOpen()) await this.store.close();
    this.state = 'stopped';
    this.logger.info('engine stopped');
  }
}
