import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import {
  whileStoreDown,
  type ClaimedDelivery,
  type DeliveryClaimFilter,
  type DeliveryOutcome,
  type MessageStore,
} from '../store/message-store';
import { WakeableSleep } from '../util/wakeable-sleep';
import { SinkCircuit } from './circuit';
import { deliveryOutcome } from './delivery-outcome';
import { LeaseRenewal } from './lease-renewal';
import { OutcomeRecorder } from './outcome-recorder';
import { deliverWithin, type InSink } from './sink-call';
import { toSinkDelivery } from './sink-delivery';
import { SinkHolds } from './sink-holds';
import type { SinkRuntime, SinkView } from './sink-runtime';

// Split out of this file; importers of './dispatcher' keep them.
export { deliveryOutcome, toSinkDelivery };
export type { SinkRuntime, SinkView };

export interface DispatcherOptions {
  owner: string;
  leaseMs: number;
  pollIntervalMs: number;
  /**
   * On stop, how long sink calls under way get to finish (default 4000 ms): after it they are
   * given up on (failed, retryable: made again after the restart), so a sink that does not
   * answer cannot hold a SIGTERM past the process manager's kill timeout.
   */
  stopGraceMs?: number;
}

/** Deliveries to a sink that is no longer configured, claimed at a time (they fail and retry). */
const GONE_SINK_CLAIM = 8;
/** The claim-spacing key of removed sinks' deliveries. */
const GONE = '\u0000gone';
/** A claim this slow (ms) that finds less than it asked for spaces the sink's next claim (see `spacedClaim`). */
export const SLOW_CLAIM_MS = 20;
const MAX_CLAIM_SPACING_MS = 5_000;

/**
 * Claims due deliveries from the store and hands each to its sink, with at most the sink's
 * `concurrency` in flight per sink. The store decides what is due (strict per-key order,
 * leases, backoff).
 */
export class Dispatcher {
  private running = false;
  private inFlight = 0;
  private readonly perSink = new Map<string, number>();
  /** The outcomes' group commit (see OutcomeRecorder.record). */
  private readonly outcomes: OutcomeRecorder;
  private loopPromise?: Promise<void>;
  private readonly sleeper = new WakeableSleep();
  private kicked = false;
  private readonly idleWaiters: (() => void)[] = [];
  /**
   * Deliveries whose sink call is running, by id: their leases are renewed while it runs, and a
   * call past its sink's `deliveryTimeoutMs` is given up on (`expire`).
   */
  private readonly inSink = new Map<string, InSink>();
  /** Every delivery this dispatcher holds: claimed, until its outcome is recorded (or given up). */
  private readonly held = new Set<string>();
  private sweepTimer?: NodeJS.Timeout;
  private sweepMs = 0;
  /** Renews the leases of the calls in `inSink` (see LeaseRenewal.renewLeases). */
  private readonly leases: LeaseRenewal;
  /**
   * Per sink (and GONE for removed sinks): no claim before this time. Set after a claim that took
   * long and found less than it asked for -- a sink that is down with a large backlog, every open
   * delivery of which the claim query walks past (held behind its key's failed delivery, or not
   * due yet) -- so such claims take at most a fifth of the engine's time and the other sinks and
   * intake keep theirs.
   */
  private readonly claimNotBefore = new Map<string, number>();
  /**
   * The store's earliest due retry (`nextDueAt`) for a claim filter, and when it was read. Read
   * again after `pollIntervalMs`, for another filter, once that time has come, or once this instance scheduled a retry --
   * not on every idle turn (at one connection that was a query per message). A retry another
   * instance schedules is seen within `pollIntervalMs`, as before the first read.
   */
  private dueRead?: { at: number; filter: string; due: number | undefined };
  /** Per sink with a circuit breaker: whether its deliveries are paused (see SinkCircuit). */
  private readonly circuits = new Map<string, SinkCircuit>();
  /** Sinks an operator holds (read from the store every HOLDS_READ_MS, and at once after a change through this engine). */
  private readonly holds: SinkHolds;

  constructor(
    private readonly store: MessageStore,
    private readonly sinks: Map<string, SinkRuntime>,
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    private readonly opts: DispatcherOptions,
  ) {
    // A retry this instance scheduled: the next wait is computed from the store again.
    this.outcomes = new OutcomeRecorder(store, logger, opts, () => (this.dueRead = undefined));
    this.leases = new LeaseRenewal(store, logger, opts, this.inSink);
    this.holds = new SinkHolds(store, sinks, logger, metrics, () => this.kick());
    for (const rt of sinks.values()) {
      metrics.sinkHeld.set({ sink: rt.id }, 0);
      if (rt.circuit && rt.circuit.failureThreshold > 0) {
        // Slow start: one delivery at a time until the sink first answers (see SinkCircuit).
        this.circuits.set(rt.id, new SinkCircuit(rt.circuit, { slowStart: true }));
        metrics.sinkPaused.set({ sink: rt.id }, 0);
      }
    }
  }

  /** Starts claiming for a sink added by a reload (or a changed one, after `removeSink` of its old runtime). */
  setSink(rt: SinkRuntime): void {
    const isNew = !this.sinks.has(rt.id);
    this.sinks.set(rt.id, rt);
    if (isNew) this.metrics.sinkHeld.set({ sink: rt.id }, 0);
    if (rt.circuit && rt.circuit.failureThreshold > 0) {
      if (isNew || !this.circuits.has(rt.id)) {
        this.circuits.set(rt.id, new SinkCircuit(rt.circuit, { slowStart: true }));
        this.metrics.sinkPaused.set({ sink: rt.id }, 0);
      }
    } else this.circuits.delete(rt.id);
    this.kick();
  }

  /**
   * A sink removed by a reload: no more claims for it (its open deliveries are left to the
   * removed-sink path: failed and retried visibly, as after a restart without it); resolves when
   * the calls to it under way have finished.
   */
  async removeSink(id: string): Promise<void> {
    this.sinks.delete(id);
    this.circuits.delete(id);
    this.claimNotBefore.delete(GONE);
    this.kick();
    while ((this.perSink.get(id) ?? 0) > 0) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * Reads the holds in force from the store, at most every HOLDS_READ_MS unless `now` (after a
   * hold or release through this engine). A failed read keeps the last known holds.
   */
  refreshHolds(now = false): Promise<void> {
    return this.holds.refresh(now);
  }

  /** Each sink: its slots, this instance's deliveries under way, and whether it is paused. */
  sinkViews(): SinkView[] {
    return [...this.sinks.values()].map((rt) => ({
      id: rt.id,
      concurrency: rt.concurrency,
      inFlight: this.perSink.get(rt.id) ?? 0,
      circuit: this.circuits.get(rt.id)?.view() ?? { state: 'closed', disabled: true },
      ...(this.holds.has(rt.id) ? { hold: (({ sinkId: _s, ...h }) => h)(this.holds.get(rt.id)!) } : {}),
    }));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
    // One timer for every call in flight (not one per delivery): a tenth of the shortest
    // deliveryTimeoutMs, at most a third of the lease, at least 50 ms.
    const limits = [...this.sinks.values()].map((rt) => rt.deliveryTimeoutMs ?? 0).filter((t) => t > 0);
    this.sweepMs = Math.max(50, Math.floor(Math.min(this.opts.leaseMs / 3, ...limits.map((t) => t / 10))));
    this.sweepTimer ??= setInterval(() => this.sweep(), this.sweepMs);
    this.sweepTimer.unref();
  }

  kick(): void {
    this.kicked = true;
    this.sleeper.wake();
  }

  /** Deliveries at a sink, and outcomes not yet committed. */
  get busy(): number {
    return this.inFlight;
  }

  /** Stop claiming and wait for in-flight deliveries. */
  async stop(): Promise<void> {
    this.running = false;
    this.sleeper.wake();
    await this.loopPromise;
    if (this.inFlight > 0) {
      const graceMs = this.opts.stopGraceMs ?? 4000;
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        new Promise<boolean>((r) => this.idleWaiters.push(() => r(true))),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs))),
      ]);
      clearTimeout(timer);
      if (!finished && this.inSink.size) {
        this.logger.warn(
          'stopping: sink calls still under way are given up on; they are made again after the restart',
          { calls: this.inSink.size, stopGraceMs: graceMs },
        );
        for (const s of this.inSink.values()) s.expire('stopping');
      }
    }
    // what is left records its outcome (the store is still open)
    while (this.inFlight > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** Calls past their sink's deliveryTimeoutMs are given up on; leases running low are renewed. */
  private sweep(): void {
    const now = Date.now();
    for (const s of this.inSink.values())
      if (s.limit > 0 && now - s.since >= s.limit) {
        s.limit = 0; // once
        s.expire('timeout');
      }
    void this.leases.renewLeases(now, this.sweepMs);
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.kicked = false;
      await this.holds.refresh();
      let claimedAny = false;
      let saturated = false;
      // One claim per sink with free slots, up to that many. Claim in batches: while a sink has
      // deliveries in flight, wait until half its slots are free (each finishing delivery kicks
      // the loop) -- one claim query for several deliveries instead of one per finished delivery.
      // #region mutation: claim-loop
      for (const rt of this.sinks.values()) {
        const busy = this.perSink.get(rt.id) ?? 0;
        const free = rt.concurrency - busy;
        if (free <= 0 || (busy > 0 && free < Math.ceil(rt.concurrency / 2))) {
          saturated = true;
          continue;
        }
        if ((this.claimNotBefore.get(rt.id) ?? 0) > Date.now() || this.holds.isHeld(rt.id)) continue;
        // A paused sink: nothing, then one probe once the pause is over.
        const circuit = this.circuits.get(rt.id);
        const allowed = circuit ? circuit.allowance(free, Date.now()) : free;
        if (allowed <= 0) continue;
        const claimed = await this.spacedClaim(rt.id, allowed, { sinkIds: [rt.id] });
        if (circuit && claimed.length) circuit.probing(claimed[0].id); // half-open or slow start: the one claimed
        for (const d of claimed) void this.run(d);
        if (claimed.length) claimedAny = true;
        if (claimed.length === free) saturated = true;
        if (!this.running) break;
      }
      if (!this.running) break;
      if (!claimedAny && !saturated && (this.claimNotBefore.get(GONE) ?? 0) <= Date.now()) {
        // Deliveries to sinks removed from the config: claimed so they fail (and retry) visibly.
        const gone = await this.spacedClaim(GONE, GONE_SINK_CLAIM, { excludeSinkIds: [...this.sinks.keys()] });
        for (const d of gone) void this.run(d);
        if (gone.length) claimedAny = true;
        // None: looked for again after the idle poll, not on every turn (a query of its own after
        // each delivery at one connection); at once after a reload removes a sink (removeSink).
        else if (!this.claimNotBefore.has(GONE)) this.claimNotBefore.set(GONE, Date.now() + this.opts.pollIntervalMs);
      }
      // #endregion
      if (this.kicked) continue;
      if (saturated) {
        // Wait for a slot (a finishing delivery kicks the loop).
        await this.sleep(this.opts.pollIntervalMs);
        continue;
      }
      let wait = this.opts.pollIntervalMs;
      try {
        // The retries of sinks paused or spaced are left out: due or not, they are not claimed
        // before the times below, and would wake the loop every few milliseconds meanwhile.
        const now = Date.now();
        const idle = [...this.sinks.keys()].filter(
          (id) =>
            (this.claimNotBefore.get(id) ?? 0) > now ||
            this.holds.isHeld(id, now) ||
            !(this.circuits.get(id)?.claimable(now) ?? true),
        );
        const goneIdle = (this.claimNotBefore.get(GONE) ?? 0) > now;
        const filter: DeliveryClaimFilter = goneIdle
          ? { sinkIds: [...this.sinks.keys()].filter((id) => !idle.includes(id)) }
          : { excludeSinkIds: idle };
        const key = JSON.stringify(filter);
        const read = this.dueRead;
        let due = read?.due;
        // (A due time passed: what was due is claimed or leased now, so what is next is read.)
        if (!read || read.filter !== key || now - read.at >= this.opts.pollIntervalMs || (due ?? Infinity) <= now) {
          due = (await this.store.nextDueAt(filter))?.getTime();
          this.dueRead = { at: now, filter: key, due };
        }
        if (due !== undefined) wait = Math.max(0, Math.min(wait, due - Date.now()));
      } catch {
        /* poll at the normal interval */
      }
      // A sink whose claims are spaced is claimed for again when its time comes; a paused one is probed.
      for (const t of this.claimNotBefore.values()) wait = Math.max(0, Math.min(wait, t - Date.now()));
      for (const c of this.circuits.values()) {
        const t = c.wakeAt();
        if (t !== undefined) wait = Math.max(0, Math.min(wait, t - Date.now()));
      }
      // A hold that ends at a set time: claimed for again then (once it has ended, as any sink).
      for (const h of this.holds.values())
        if (h.until && h.until.getTime() > Date.now()) wait = Math.min(wait, h.until.getTime() - Date.now());
      // A kick while the reads above were awaited (new work routed, a delivery finished) is not lost
      // in a sleep of a whole poll interval: its wake() found no sleep to cut short.
      if (this.kicked) continue;
      if (!claimedAny || wait > 0) await this.sleep(Math.max(wait, 5));
    }
  }

  /**
   * A claim for one sink (or GONE), spaced from the next one when it was slow and unproductive:
   * it took `SLOW_CLAIM_MS` or more and found fewer deliveries than asked for, so asking again
   * soon would walk the same backlog for little. The next claim for it waits four times as long
   * as this one took (at most `MAX_CLAIM_SPACING_MS`); a claim that fills the slots, or is quick,
   * clears the spacing.
   */
  private async spacedClaim(key: string, limit: number, filter: DeliveryClaimFilter): Promise<ClaimedDelivery[]> {
    const started = performance.now();
    const claimed = await this.claim(limit, filter);
    const took = performance.now() - started;
    // Not after a failed claim (undefined: a store outage): its time says nothing of the backlog,
    // and the work must be picked up as soon as the store answers again.
    if (claimed && claimed.length < limit && took >= SLOW_CLAIM_MS)
      this.claimNotBefore.set(key, Date.now() + Math.min(MAX_CLAIM_SPACING_MS, took * 4));
    else this.claimNotBefore.delete(key);
    return claimed ?? [];
  }

  /** Undefined when the claim failed (logged). */
  private async claim(limit: number, filter: DeliveryClaimFilter): Promise<ClaimedDelivery[] | undefined> {
    try {
      if (this.orphansPossible) await this.releaseOrphans();
      return await this.store.claimDeliveries(this.opts.owner, limit, this.opts.leaseMs, undefined, filter);
    } catch (e) {
      // A claim that failed with the connection may have committed all the same (its answer was
      // lost): those deliveries are leased to us without our knowing, and would wait out the lease
      // -- holding the later deliveries of their ordering keys. Given back before the next claim.
      if ((e as FerryError)?.retryable) this.orphansPossible = true;
      this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'error', 'delivery claim failed', errorFields(e));
      return undefined;
    }
  }

  private orphansPossible = false;

  /** Gives back leases this instance holds but is not working on (see `claim`). */
  private async releaseOrphans(): Promise<void> {
    const released = await this.store.releaseDeliveryLeases(this.opts.owner, [...this.held]);
    this.orphansPossible = false;
    if (released)
      this.logger.info('released delivery leases a lost claim answer left with this instance', {
        deliveries: released,
      });
  }

  private sleep(ms: number): Promise<void> {
    return this.sleeper.sleep(ms);
  }

  /** The sink took a delivery or refused one for good: a pause it was in is over. */
  private sinkAnswered(rt: SinkRuntime, circuit: SinkCircuit): void {
    const starting = circuit.isStarting();
    const ended = circuit.answered(Date.now());
    if (!ended) {
      if (starting) this.kick(); // slow start over: the rest at full concurrency, now
      return;
    }
    this.metrics.sinkPaused.set({ sink: rt.id }, 0);
    rt.logger.info('sink answering again: deliveries resumed', {
      pausedMs: ended.pausedMs,
      failedProbes: ended.failedProbes,
    });
    this.kick();
  }

  /** A retryable failure: enough of them in a row pause the sink; a failed probe extends the pause. */
  private sinkFailed(rt: SinkRuntime, circuit: SinkCircuit, deliveryId: string, err: FerryError): void {
    const r = circuit.failed(deliveryId, Date.now(), err.code, err.details?.retryAfterMs as number | undefined);
    if (!r) return;
    if (r.change === 'opened') {
      this.metrics.sinkPaused.set({ sink: rt.id }, 1);
      this.metrics.sinkPauses.inc({ sink: rt.id });
      rt.logger.warn('sink failing: deliveries paused, one probe at a time until it takes one', {
        failures: circuit.policy.failureThreshold,
        errorCode: err.code,
        pauseMs: r.pauseMs,
      });
    } else
      rt.logger.info('sink probe failed: deliveries stay paused', {
        errorCode: err.code,
        pauseMs: r.pauseMs,
        failedProbes: circuit.view().failedProbes,
      });
  }

  private async run(d: ClaimedDelivery): Promise<void> {
    this.held.add(d.id);
    this.inFlight++;
    this.perSink.set(d.sinkId, (this.perSink.get(d.sinkId) ?? 0) + 1);
    this.metrics.inFlight.inc();
    const rt = this.sinks.get(d.sinkId);
    // The child logger only when something is logged (a delivery that just succeeds logs at debug).
    const base = rt?.logger ?? this.logger;
    let child: Logger | undefined;
    const log = (): Logger =>
      (child ??= base.child({
        messageId: d.messageId,
        deliveryId: d.id,
        route: d.routeId,
        controlId: d.message.headers.controlId,
      }));
    const started = process.hrtime.bigint();
    let outcome: DeliveryOutcome;
    const now = Date.now();
    const entry: InSink = {
      since: now,
      leasedAt: now,
      limit: rt?.deliveryTimeoutMs ?? 0,
      lostLogged: false,
      log,
      expire: () => undefined,
    };
    this.inSink.set(d.id, entry);
    const circuit = this.circuits.get(d.sinkId);
    const probe = circuit?.isProbe(d.id) ?? false;
    try {
      if (!rt)
        throw new FerryError('CONFIG_SINK_GONE', `sink "${d.sinkId}" is no longer configured`, {
          kind: 'config',
          retryable: true,
        });
      await deliverWithin(rt, d, entry);
      outcome = { status: 'delivered' };
      if (circuit) this.sinkAnswered(rt, circuit);
      const secs = Number(process.hrtime.bigint() - started) / 1e9;
      this.metrics.deliveryLatency.observe({ sink: d.sinkId }, secs);
      this.metrics.endToEnd.observe(
        { sink: d.sinkId },
        (Date.now() + (this.store.clockAheadMs?.() ?? 0) - d.message.receivedAt.getTime()) / 1000,
      );
      this.metrics.deliveries.inc({ route: d.routeId, sink: d.sinkId, outcome: 'delivered' });
      if (base.isDebugEnabled()) log().debug('delivered', { attempt: d.attempts + 1 });
    } catch (e) {
      // Anything a sink throws that is not a FerryError counts as retryable (network, bugs in flight).
      const err =
        e instanceof FerryError
          ? e
          : new FerryError('DELIVERY_UNEXPECTED', (e as Error)?.message ?? String(e), {
              kind: 'transient',
              retryable: true,
              cause: e,
            });
      outcome = rt
        ? deliveryOutcome(rt.retry, d, err, new Date(), this.store.clockAheadMs?.() ?? 0, probe)
        : {
            status: 'failed',
            error: { code: err.code, message: err.message, retryable: true },
            nextAttemptAt: new Date(Date.now() + 60_000),
          };
      if (circuit && rt) {
        if (err.retryable) this.sinkFailed(rt, circuit, d.id, err);
        else this.sinkAnswered(rt, circuit); // refused for good: the message's problem, the sink is up
      }
      this.metrics.deliveries.inc({
        route: d.routeId,
        sink: d.sinkId,
        outcome: outcome.status === 'dead' ? 'dead' : 'retry',
      });
      const fields = {
        attempt: d.attempts + 1,
        errorCode: err.code,
        retryable: err.retryable,
        next: outcome.status === 'failed' ? outcome.nextAttemptAt.toISOString() : undefined,
        ...(probe ? { probe: true } : {}),
      };
      if (outcome.status === 'dead') log().error('delivery dead', fields);
      else log().warn('delivery failed, will retry', fields);
    } finally {
      // The call is over: the outcome's commit (below) releases the lease.
      this.inSink.delete(d.id);
      circuit?.settled(d.id);
    }
    // The slot stays taken until the outcome is committed: what an instance holds leased (and
    // what another redelivers if it dies) is at most its sinks' concurrency. Outcomes of one turn
    // commit together (`OutcomeRecorder.record`), so this costs one commit round per group, not per delivery.
    try {
      const stale = await this.outcomes.record(d.id, outcome);
      if (stale)
        // Ours no longer: another instance claimed it after our lease ran out (and delivers it
        // too: at-least-once), or it was made final meanwhile. Its state is left as it is.
        log().warn('delivery outcome not recorded: the delivery is no longer leased to this instance', {
          outcome: outcome.status,
          currentStatus: stale.status,
          otherOwner: stale.leaseOwner !== undefined,
          leaseMs: this.opts.leaseMs,
        });
    } catch (e) {
      // The lease expires and the delivery is attempted again: at-least-once.
      log().error('could not record delivery outcome', errorFields(e));
    } finally {
      this.held.delete(d.id);
      this.inFlight--;
      this.perSink.set(d.sinkId, (this.perSink.get(d.sinkId) ?? 1) - 1);
      this.metrics.inFlight.dec();
      this.kick();
      if (this.inFlight === 0) this.idleWaiters.splice(0).forEach((r) => r());
    }
  }
}
