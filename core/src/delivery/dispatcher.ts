import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import type { RetryPolicy } from '../config/engine.schema';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import type { MessageSink } from '../plugin/api';
import type { StoredError } from '../model/message';
import type { ClaimedDelivery, DeliveryOutcome, MessageStore } from '../store/message-store';
import { nextAttempt } from '../store/retry-policy';
import { WakeableSleep } from '../util/wakeable-sleep';

export interface SinkRuntime {
  id: string;
  sink: MessageSink;
  retry: RetryPolicy;
  logger: Logger;
}

export interface DispatcherOptions {
  owner: string;
  workers: number;
  leaseMs: number;
  pollIntervalMs: number;
}

/** Turns a sink's failure into the next state of the delivery: retry later, or dead. */
export function deliveryOutcome(policy: RetryPolicy, d: ClaimedDelivery, err: FerryError, now = new Date()): DeliveryOutcome {
  const attempts = d.attempts + 1;
  // The sink's OperationOutcome (FHIR servers) is kept with the error for inspection.
  const error = { code: err.code, message: err.message, retryable: err.retryable, outcome: err.details?.outcome as StoredError['outcome'] };
  const next = nextAttempt(policy, { attempts, firstAttemptAt: d.firstAttemptAt ?? d.createdAt, retryable: err.retryable, retryAfterMs: err.details?.retryAfterMs as number | undefined }, now);
  return next ? { status: 'failed', error, nextAttemptAt: next } : { status: 'dead', error };
}

/**
 * Claims due deliveries from the store and hands each to its sink, with at most `workers` in
 * flight. The store decides what is due (strict per-key order, leases, backoff).
 */
export class Dispatcher {
  private running = false;
  private inFlight = 0;
  private completing = 0;
  private loopPromise?: Promise<void>;
  private readonly sleeper = new WakeableSleep();
  private kicked = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly store: MessageStore,
    private readonly sinks: Map<string, SinkRuntime>,
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    private readonly opts: DispatcherOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  kick(): void {
    this.kicked = true;
    this.sleeper.wake();
  }

  /** Deliveries at a sink, and outcomes not yet committed. */
  get busy(): number {
    return this.inFlight + this.completing;
  }

  /** Stop claiming and wait for in-flight deliveries. */
  async stop(): Promise<void> {
    this.running = false;
    this.sleeper.wake();
    await this.loopPromise;
    while (this.inFlight > 0 || this.completing > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.kicked = false;
      const free = this.opts.workers - this.inFlight;
      let claimed: ClaimedDelivery[] = [];
      // Claim in batches: while deliveries are in flight, wait until half the workers are free
      // (each finishing delivery kicks the loop) -- one claim query for several deliveries
      // instead of one per finished delivery.
      if (this.inFlight > 0 && free < Math.ceil(this.opts.workers / 2)) {
        await this.sleep(this.opts.pollIntervalMs);
        continue;
      }
      if (free > 0) {
        try {
          claimed = await this.store.claimDeliveries(this.opts.owner, free, this.opts.leaseMs);
        } catch (e) {
          this.logger.error('delivery claim failed', errorFields(e));
        }
        for (const d of claimed) void this.run(d);
      }
      if (!this.running) break;
      if (this.kicked) continue;
      if (claimed.length && claimed.length === free) {
        // Saturated: wait for a slot.
        await this.sleep(this.opts.pollIntervalMs);
        continue;
      }
      let wait = this.opts.pollIntervalMs;
      try {
        const due = await this.store.nextDueAt();
        if (due) wait = Math.max(0, Math.min(wait, due.getTime() - Date.now()));
      } catch {
        /* poll at the normal interval */
      }
      if (!claimed.length || wait > 0) await this.sleep(Math.max(wait, 5));
    }
  }

  private sleep(ms: number): Promise<void> {
    return this.sleeper.sleep(ms);
  }

  private async run(d: ClaimedDelivery): Promise<void> {
    this.inFlight++;
    this.metrics.inFlight.inc();
    const rt = this.sinks.get(d.sinkId);
    // The child logger only when something is logged (a delivery that just succeeds logs at debug).
    const base = rt?.logger ?? this.logger;
    let child: Logger | undefined;
    const log = (): Logger => (child ??= base.child({ messageId: d.messageId, deliveryId: d.id, route: d.routeId, controlId: d.message.headers.controlId }));
    const started = process.hrtime.bigint();
    let outcome: DeliveryOutcome;
    try {
      if (!rt) throw new FerryError('CONFIG_SINK_GONE', `sink "${d.sinkId}" is no longer configured`, { kind: 'config', retryable: true });
      await rt.sink.deliver({ deliveryId: d.id, attempt: d.attempts + 1, routeId: d.routeId, bundle: d.bundle, message: d.message });
      outcome = { status: 'delivered' };
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      this.metrics.deliveryLatency.observe({ sink: d.sinkId }, secs);
      this.metrics.endToEnd.observe({ sink: d.sinkId }, (Date.now() - d.message.receivedAt.getTime()) / 1000);
      this.metrics.deliveries.inc({ route: d.routeId, sink: d.sinkId, outcome: 'delivered' });
      if (base.isDebugEnabled()) log().debug('delivered', { attempt: d.attempts + 1 });
    } catch (e) {
      // Anything a sink throws that is not a FerryError counts as retryable (network, bugs in flight).
      const err = e instanceof FerryError ? e : new FerryError('DELIVERY_UNEXPECTED', (e as Error)?.message ?? String(e), { kind: 'transient', retryable: true, cause: e });
      outcome = rt ? deliveryOutcome(rt.retry, d, err) : { status: 'failed', error: { code: err.code, message: err.message, retryable: true }, nextAttemptAt: new Date(Date.now() + 60_000) };
      this.metrics.deliveries.inc({ route: d.routeId, sink: d.sinkId, outcome: outcome.status === 'dead' ? 'dead' : 'retry' });
      const fields = { attempt: d.attempts + 1, errorCode: err.code, retryable: err.retryable, next: outcome.status === 'failed' ? outcome.nextAttemptAt.toISOString() : undefined };
      if (outcome.status === 'dead') log().error('delivery dead', fields);
      else log().warn('delivery failed, will retry', fields);
    }
    // The outcome is queued first, then the worker is free: the claim this frees up is queued
    // behind it (SQLite: same shared transaction, so it sees the outcome; PostgreSQL: the delivery
    // stays leased until the outcome commits), and does not wait for this commit round.
    const recorded = this.store.completeDelivery(d.id, outcome);
    this.completing++;
    this.inFlight--;
    this.metrics.inFlight.dec();
    this.kick();
    try {
      await recorded;
    } catch (e) {
      // The lease expires and the delivery is attempted again: at-least-once.
      log().error('could not record delivery outcome', errorFields(e));
    } finally {
      this.completing--;
      if (this.inFlight === 0 && this.completing === 0) this.idleWaiters.splice(0).forEach((r) => r());
    }
  }
}
