import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import type { RouteConfig } from '../config/engine.schema';
import { errorFields } from '../logging/logger';
import type { DataQualityPolicy, StoredMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import { whileStoreDown, type MessageStore } from '../store/message-store';
import { retryTransient } from '../util/retry-transient';
import { WakeableSleep } from '../util/wakeable-sleep';
import { MessagePipeline, type ProcessingReport } from './process-message';
import { TransformTimeoutError, type RouteGeneration, type TransformPool } from './transform-pool';

/** The report of a message whose transform did not finish on a worker (a transform that hangs). */
function timedOut(id: string, ms: number): ProcessingReport {
  const message = `transform did not finish within ${ms} ms on a transform worker (the worker was replaced)`;
  return {
    id,
    outcome: {
      status: 'failed',
      error: {
        code: 'FERRY_E_INTERNAL_TRANSFORM_TIMEOUT',
        message,
        retryable: false,
        outcome: {
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'timeout', details: { text: message } }],
        },
      },
    },
    routes: [],
    errorKind: 'internal',
  };
}

/** Compiled routes and steps with the config version they belong to (swapped as one). */
export interface PreparedRoutes {
  readonly pipeline: MessagePipeline;
  readonly generation: RouteGeneration;
}

export interface ProcessorOptions {
  owner: string;
  batchSize: number;
  leaseMs: number;
  pollIntervalMs: number;
  /**
   * processing.lingerMs: after a claim of less than a batch, wait this long before the next one, so
   * messages arriving meanwhile share its transactions (0 = claim at once).
   */
  lingerMs?: number;
  /** Claims of one message before it is failed as never finishing (0 = no limit). */
  maxAttempts?: number;
  baseDir: string;
  /** processing.validate: canonical Bundles are validated (default true). */
  validate?: boolean;
  /** Transform worker threads; without them processing runs on this thread. */
  pool?: TransformPool;
  /** Each source's `dataQuality` policy, by source id. */
  dataQuality?: Record<string, DataQualityPolicy>;
  /** The config version of `routes` (see Engine.reload). */
  configVersion?: number;
}

/**
 * Claims stored messages in arrival order, batch by batch, runs each batch through transform ->
 * routes -> steps (`MessagePipeline`, on transform worker threads when there are) and records
 * the results in the store together. With workers, several batches are in flight: while one is
 * being converted, the engine's thread claims the next and records the last. Delivery order per
 * ordering key is the store's job (claimDeliveries), so batches may finish in any order.
 */
export class Processor {
  /** The compiled routes and steps, swapped as one by `setRoutes` (a reload): a batch takes the pair in force when it starts. */
  private current: PreparedRoutes;
  /** Route compilations made by reloads (each a new RouteGeneration key). */
  private compilations = 0;
  private running = false;
  private loopPromise?: Promise<void>;
  private readonly sleeper = new WakeableSleep();
  private kicked = false;
  /** The linger's own sleep: cut short by stopping, or once a whole batch is waiting. */
  private readonly lingering = new WakeableSleep();
  /** Messages stored since the last claim began (as the engine reports them with `kick`). */
  private arrived = 0;
  private readonly inFlight = new Set<Promise<void>>();
  /** Ids of the messages this processor holds (claimed, until their batch is finished). */
  private readonly held = new Set<string>();
  private orphansPossible = false;
  /** The loop waits for a batch to finish (all `maxInFlight` in flight): a finishing batch wakes it. */
  private waitingForSlot = false;
  /** The last claim took a whole batch: more is waiting, claim again at once. */
  private fullClaim = false;
  onRouted?: () => void;
  /**
   * Each recorded batch's messages that have a canonical Bundle and did not fail, after the batch is
   * stored (the FHIR facade's store is fed from them). Must return at once: it runs on the claim loop.
   */
  onConverted?: (converted: { message: StoredMessage; bundleJson: string }[]) => void;

  constructor(
    private readonly store: MessageStore,
    private readonly transforms: MessageTransform[],
    routes: RouteConfig[],
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    private readonly opts: ProcessorOptions,
  ) {
    this.current = {
      pipeline: new MessagePipeline(transforms, routes, opts.baseDir, {
        validate: opts.validate,
        dataQuality: opts.dataQuality,
      }),
      generation: { version: opts.configVersion ?? 0, key: 0, routes, dataQuality: opts.dataQuality },
    };
  }

  /**
   * Compiles routes for a reload (a step that does not compile throws, and nothing changes);
   * `useRoutes` then swaps them in as one object. Batches under way finish with the routes they
   * started with; each message is routed wholly by one config or the other.
   */
  prepareRoutes(
    version: number,
    routes: RouteConfig[],
    dataQuality: Record<string, DataQualityPolicy> | undefined,
  ): PreparedRoutes {
    return {
      pipeline: new MessagePipeline(this.transforms, routes, this.opts.baseDir, {
        validate: this.opts.validate,
        dataQuality,
      }),
      generation: { version, key: ++this.compilations, routes, dataQuality },
    };
  }

  /** Swaps in routes compiled by `prepareRoutes`. */
  useRoutes(prepared: PreparedRoutes): void {
    this.current = prepared;
  }

  /** The config version new batches are routed by. */
  get configVersion(): number {
    return this.current.generation.version;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  /**
   * New work is in the store: run now rather than at the next poll. `stored`: messages just
   * stored; a linger ends as soon as a whole batch of them is waiting.
   */
  kick(stored = 0): void {
    this.kicked = true;
    this.arrived += stored;
    this.sleeper.wake();
    if (this.arrived >= this.opts.batchSize) this.lingering.wake();
  }

  /** Batches claimed and not yet recorded. */
  get busy(): number {
    return this.inFlight.size;
  }

  /** Stop claiming; resolves when the batches in hand are recorded. */
  async stop(): Promise<void> {
    this.running = false;
    this.sleeper.wake();
    this.lingering.wake();
    await this.loopPromise;
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  /** Batches in flight at once: one on this thread; with workers, two per worker (one converting, one queued). */
  private get maxInFlight(): number {
    return this.opts.pool ? this.opts.pool.size * 2 : 1;
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.kicked = false;
      if (this.inFlight.size >= this.maxInFlight) {
        // A batch finishing kicks the loop.
        this.waitingForSlot = true;
        await this.sleeper.sleep(this.opts.pollIntervalMs);
        this.waitingForSlot = false;
        continue;
      }
      let claimed: StoredMessage[] = [];
      try {
        // A claim that failed with the connection may have committed all the same (its answer was
        // lost): those messages are leased to us without our knowing -- unprocessed for a whole
        // lease, and holding the strict deliveries of later messages meanwhile. Given back first.
        if (this.orphansPossible) {
          const released = await this.store.releaseMessageLeases(this.opts.owner, [...this.held]);
          this.orphansPossible = false;
          if (released)
            this.logger.info('released message leases a lost claim answer left with this instance', {
              messages: released,
            });
        }
        // A light load (the last claim was not a full batch): messages arriving in the next moment
        // are claimed with this one, not one claim, one record and one delivery round each -- until
        // a whole batch is waiting (as a producer's linger ends at a full batch).
        if (this.opts.lingerMs && !this.fullClaim && this.arrived < this.opts.batchSize) {
          await this.lingering.sleep(this.opts.lingerMs);
          if (!this.running) break;
        }
        this.arrived = 0;
        claimed = await this.store.claimReceived(this.opts.owner, this.opts.batchSize, this.opts.leaseMs, {
          maxAttempts: this.opts.maxAttempts,
        });
      } catch (e) {
        if ((e as { retryable?: unknown })?.retryable) this.orphansPossible = true;
        this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'error', 'processing loop error', errorFields(e));
      }
      this.fullClaim = claimed.length === this.opts.batchSize;
      if (claimed.length) {
        // A claimed batch is always finished (it is leased to us), even when stopping.
        for (const m of claimed) this.held.add(m.id);
        this.metrics.processingBatch.observe(claimed.length);
        const p: Promise<void> = this.runBatch(claimed).finally(() => {
          for (const m of claimed) this.held.delete(m.id);
          this.inFlight.delete(p);
          // Only a loop waiting for a free slot needs waking: recording a batch makes no other
          // message claimable, and new ones kick the loop as they are stored. (Woken after every
          // batch, it made an empty claim -- a query and a transaction -- for nearly every message
          // at one connection.)
          if (this.waitingForSlot) this.kick();
        });
        this.inFlight.add(p);
        if (claimed.length === this.opts.batchSize) continue;
      }
      if (this.running && !this.kicked) await this.sleeper.sleep(this.opts.pollIntervalMs);
    }
  }

  private async runBatch(claimed: StoredMessage[]): Promise<void> {
    let reports: ProcessingReport[];
    // The batch's leases are renewed while it is processed and recorded: a large batch on a loaded
    // machine (every Bundle validated) may take longer than one lease, and must not be claimed by
    // another instance meanwhile. A third of the lease apart, so a renewal late by a busy event loop
    // or a slow store still lands in time.
    const every = Math.max(50, Math.floor(this.opts.leaseMs / 3));
    let renewedAt = Date.now();
    const renew = (): Promise<void> => {
      renewedAt = Date.now();
      return this.store
        .renewMessageLeases(
          this.opts.owner,
          claimed.map((m) => m.id),
          this.opts.leaseMs,
        )
        .then(
          (held) => {
            if (held.length < claimed.length)
              this.logger.warn(
                'processing batch outlasted its lease: messages another instance claimed meanwhile are processed there too',
                { messages: claimed.length, held: held.length },
              );
          },
          (e) => {
            this.logger.debug('lease renewal failed', errorFields(e));
          },
        );
    };
    const renewal = setInterval(() => void renew(), every);
    renewal.unref();
    // On this thread a batch's transforms block the timer: renewed between its messages instead.
    const due = (): Promise<void> | undefined => (Date.now() - renewedAt >= every ? renew() : undefined);
    try {
      const { version, reports: r } = await this.processBatch(claimed, due);
      reports = r;
      // Stored with each message: the config version its batch was routed by.
      for (const x of reports) x.configVersion = version;
      // Messages without a report (see processBatch) stay leased, to be claimed again.
      const byId = new Map(claimed.map((m) => [m.id, m]));
      await this.record(
        reports,
        reports.map((r) => byId.get(r.id)!),
      );
    } catch (e) {
      // The messages stay leased and are claimed again when the lease runs out.
      this.logger.error('processing batch failed', { messages: claimed.length, ...errorFields(e) });
      return;
    } finally {
      clearInterval(renewal);
    }
    this.onRouted?.();
  }

  /**
   * Reports in claim order, from the workers where they have the message's transform. A message
   * of a batch that timed out on a worker and could not be retried there alone gets no report:
   * it is not run on this thread (its transform may never return) but left leased.
   */
  private async processBatch(
    messages: StoredMessage[],
    renewDue: () => Promise<void> | undefined,
  ): Promise<{ version: number; reports: ProcessingReport[] }> {
    const pool = this.opts.pool;
    // One routes generation for the whole batch (a reload swaps `current` between batches).
    const { pipeline, generation } = this.current;
    const remote = pool ? messages.filter((m) => m.body && pool.handles(pipeline.transformFor(m.contentType))) : [];
    const reports = new Map<string, ProcessingReport>();
    const deferred = new Set<string>();
    if (remote.length) {
      // A transform that never returns: its worker, silent (no message finished) for a quarter of
      // the lease, is replaced. A batch that keeps making progress may take longer than the lease
      // (its leases are renewed, see runBatch).
      const timeout = Math.max(500, Math.floor(this.opts.leaseMs / 4));
      try {
        for (const r of await pool!.process(remote, timeout, generation)) reports.set(r.id, r);
      } catch (e) {
        if (e instanceof TransformTimeoutError) {
          // A transform that never returns would hang this thread too: find the message one by
          // one on the workers and record it as failed; the others go on.
          for (const m of remote) {
            try {
              const [r] = await pool!.process([m], timeout, generation);
              reports.set(r.id, r);
            } catch (e2) {
              if (e2 instanceof TransformTimeoutError) reports.set(m.id, timedOut(m.id, timeout));
              else {
                deferred.add(m.id);
                this.logger.warn(
                  'transform worker unavailable for a message of a timed-out batch; left for a later claim',
                  { messageId: m.id, ...errorFields(e2) },
                );
              }
            }
          }
        } else
          this.logger.warn('transform worker failed a batch; processing it on the engine thread', {
            messages: remote.length,
            ...errorFields(e),
          });
      }
    }
    for (const m of messages) {
      if (reports.has(m.id) || deferred.has(m.id)) continue;
      await renewDue();
      reports.set(m.id, await pipeline.process(m, this.messageLogger(m)));
    }
    return {
      version: generation.version,
      reports: messages.filter((m) => reports.has(m.id)).map((m) => reports.get(m.id)!),
    };
  }

  private messageLogger(m: StoredMessage): Logger {
    return this.logger.child({
      messageId: m.id,
      source: m.sourceId,
      controlId: m.headers.controlId,
      messageType: m.headers.messageType,
    });
  }

  /**
   * Stores the batch's results together, then counts and logs them (ids, types, counts only). A
   * message whose result could not be stored is logged and left leased, to be claimed again; the
   * rest of its batch is counted as usual.
   */
  private async record(reports: ProcessingReport[], messages: StoredMessage[]): Promise<void> {
    // The batch is transformed: a store outage shorter than half the lease must not leave it
    // leased to be transformed again (it stays ours until then).
    const { failed } = await retryTransient(() => this.store.recordProcessed(reports), {
      what: 'recording a processed batch',
      logger: this.logger,
      budgetMs: this.opts.leaseMs / 2,
    });
    const notStored = new Set<string>();
    for (const { id, error } of failed) {
      notStored.add(id);
      this.logger.error('processing result not stored; the message is processed again when its lease runs out', {
        messageId: id,
        ...errorFields(error),
      });
    }
    if (this.onConverted) {
      const converted: { message: StoredMessage; bundleJson: string }[] = [];
      reports.forEach((r, i) => {
        if (!notStored.has(r.id) && r.transformed && r.outcome.status !== 'failed')
          converted.push({ message: messages[i], bundleJson: r.transformed.bundleJson });
      });
      try {
        if (converted.length) this.onConverted(converted);
      } catch (e) {
        this.logger.warn('converted-batch observer failed', { messages: converted.length, ...errorFields(e) });
      }
    }
    const info = this.logger.isInfoEnabled();
    reports.forEach((r, i) => {
      if (notStored.has(r.id)) return;
      const m = messages[i];
      const source = m.sourceId;
      const ids = { messageId: r.id, source, controlId: m.headers.controlId, messageType: m.headers.messageType };
      for (const route of r.routes) this.metrics.routed.inc({ route });
      for (const route of r.filteredRoutes ?? []) this.metrics.routeFiltered.inc({ route });
      const outcome = r.outcome.status;
      this.metrics.processed.inc({ source, outcome });
      if (r.issues?.length) {
        const type = m.headers.messageType ?? '';
        for (const i of r.issues)
          this.metrics.dataQualityIssues.inc({
            source,
            type,
            location: i.location,
            reason: i.code,
            severity: i.severity,
          });
        // Where and why only: never the values (PHI).
        this.logger.log(outcome === 'failed' ? 'debug' : 'warn', 'data quality issues', {
          ...ids,
          issues: r.issues.length,
          locations: [...new Set(r.issues.map((i) => `${i.location}:${i.code}`))].slice(0, 20),
        });
      }
      if (outcome === 'failed') {
        this.metrics.failed.inc({ source });
        const err = r.outcome.status === 'failed' ? r.outcome.error : undefined;
        const dq = r.issues?.filter((i) => i.severity === 'error').map((i) => `${i.location}:${i.code}`);
        this.logger.warn('message failed', {
          ...ids,
          errorCode: err?.code,
          errorKind: r.errorKind,
          route: r.failedRoute,
          ...(dq?.length ? { issues: dq.slice(0, 20) } : {}),
        });
      } else if (info) {
        if (r.outcome.status === 'routed')
          this.logger.info('message routed', { ...ids, routes: r.routes, deliveries: r.outcome.deliveries.length });
        else this.logger.info(`message ${outcome}`, { ...ids, routes: r.routes.length ? r.routes : undefined });
      }
    });
  }
}
