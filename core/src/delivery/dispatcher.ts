import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import type { RetryPolicy } from '../config/engine.schema';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import type { MessageSink } from '../plugin/api';
import { retryTransient } from '../util/retry-transient';
import {
  whileStoreDown,
  type ClaimedDelivery,
  type DeliveryClaimFilter,
  type CompleteResult,
  type DeliveryOutcome,
  type MessageStore,
  type SinkHold,
} from '../store/message-store';
import { WakeableSleep } from '../util/wakeable-sleep';
import { SinkCircuit, type CircuitPolicy, type CircuitView } from './circuit';
import { deliveryOutcome } from './delivery-outcome';
import { toSinkDelivery } from './sink-delivery';

// Split out of this file; importers of './dispatcher' keep them.
export { deliveryOutcome, toSinkDelivery };

type StaleOutcome = CompleteResult['stale'][number];

/** A sink call in flight (see Dispatcher.inSink). */
interface InSink {
  since: number;
  /** When its lease was last set (claimed or renewed). */
  leasedAt: number;
  /** The sink's deliveryTimeoutMs (0 = none). */
  limit: number;
  lostLogged: boolean;
  log: () => Logger;
  /**
   * Gives up on the call: its attempt fails (retryable) with FERRY_E_DELIVERY_TIMEOUT, or
   * FERRY_E_DELIVERY_ENGINE_STOPPING when the engine stops and the call outlasts the stop grace.
   */
  expire: (why?: 'timeout' | 'stopping') => void;
}

export interface SinkRuntime {
  id: string;
  sink: MessageSink;
  retry: RetryPolicy;
  logger: Logger;
  /** Deliveries to this sink in flight at once. */
  concurrency: number;
  /** Longest one attempt may take before it counts as failed (0 = no limit). */
  deliveryTimeoutMs?: number;
  /** When to pause the sink's deliveries (absent or failureThreshold 0: never). */
  circuit?: CircuitPolicy;
}

/** A sink as the admin API shows it. */
export interface SinkView {
  id: string;
  concurrency: number;
  /** This instance's deliveries to it under way. */
  inFlight: number;
  circuit: CircuitView | { state: 'closed'; disabled: true };
  /** Held by an operator (as last read from the store). */
  hold?: Omit<SinkHold, 'sinkId'>;
}

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
/** How often the dispatcher reads the sink holds from the store (another instance or a `ferry` command may set them). */
const HOLDS_READ_MS = 1000;
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
  private outcomes: {
    deliveryId: string;
    outcome: DeliveryOutcome;
    resolve(stale?: StaleOutcome): void;
    reject(e: unknown): void;
  }[] = [];
  private outcomeTimer?: NodeJS.Immediate;
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
  private renewing = false;
  /**
   * Per sink (and GONE for removed sinks): no claim before this time. Set after a claim that took
   * long and found less than it asked for -- a sink that is down with a large backlog, every open
   * delivery of which the claim query walks past (held behind its key's failed delivery, or not
   * due yet) -- so such claims take at most a fifth of the engine's time and the other sinks and
   * intake keep theirs.
   */
  private readonly claimNotBefore = new Map<string, number>();
  /** Per sink with a circuit breaker: whether its deliveries are paused (see SinkCircuit). */
  private readonly circuits = new Map<string, SinkCircuit>();
  /** Sinks an operator holds (read from the store every HOLDS_READ_MS, and at once after a change through this engine). */
  private holds = new Map<string, SinkHold>();
  private holdsReadAt = 0;
  private holdsRead?: Promise<void>;

  constructor(
    private readonly store: MessageStore,
    private readonly sinks: Map<string, SinkRuntime>,
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    private readonly opts: DispatcherOptions,
  ) {
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
    while ((this.perSink.get(id) ?? 0) > 0) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * Reads the holds in force from the store, at most every HOLDS_READ_MS unless `now` (after a
   * hold or release through this engine). A failed read keeps the last known holds.
   */
  async refreshHolds(now = false): Promise<void> {
    // One read at a time: a forced one waits for the read under way (it may predate the change) and reads again.
    if (this.holdsRead) {
      await this.holdsRead;
      if (!now) return;
    }
    if (!now && Date.now() - this.holdsReadAt < HOLDS_READ_MS) return;
    this.holdsReadAt = Date.now();
    this.holdsRead = this.readHolds().finally(() => (this.holdsRead = undefined));
    return this.holdsRead;
  }

  private async readHolds(): Promise<void> {
    let list: SinkHold[];
    try {
      list = await this.store.sinkHolds();
    } catch (e) {
      this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'warn', 'reading sink holds failed', errorFields(e));
      return;
    }
    const next = new Map(list.filter((h) => this.sinks.has(h.sinkId)).map((h) => [h.sinkId, h]));
    for (const [id, h] of next)
      if (!this.holds.has(id)) {
        this.metrics.sinkHeld.set({ sink: id }, 1);
        (this.sinks.get(id)?.logger ?? this.logger).info('sink held: its deliveries wait until it is released', {
          until: h.until?.toISOString(),
          reason: h.reason,
        });
      }
    for (const id of this.holds.keys())
      if (!next.has(id)) {
        this.metrics.sinkHeld.set({ sink: id }, 0);
        (this.sinks.get(id)?.logger ?? this.logger).info('sink released: deliveries resume');
        this.kick();
      }
    this.holds = next;
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
    void this.renewLeases(now);
  }

  /**
   * A sink call may outlast the lease (a slow server, a vendor client's own retries): every third
   * of the lease, the leases of calls running that long are extended, so neither another
   * instance nor this one claims the delivery again and makes it twice while this call is still
   * under way. A lease found taken over meanwhile (this instance could not reach the store for
   * longer than the lease) is logged once: the other instance may make the delivery too.
   */
  private async renewLeases(now: number): Promise<void> {
    if (this.renewing || !this.inSink.size) return;
    const third = this.opts.leaseMs / 3;
    const due = [...this.inSink].filter(([, s]) => now - s.leasedAt >= third - this.sweepMs);
    if (!due.length) return;
    const ids = due.map(([id]) => id);
    this.renewing = true;
    try {
      const held = new Set(await this.store.renewDeliveryLeases(this.opts.owner, ids, this.opts.leaseMs));
      for (const [id, s] of due) if (held.has(id)) s.leasedAt = now;
      for (const id of ids) {
        const s = this.inSink.get(id);
        if (!s || held.has(id) || s.lostLogged) continue;
        s.lostLogged = true;
        s.log().warn('delivery lease lost while its sink call is still running: another instance may make it too', {
          inSinkMs: Date.now() - s.since,
          leaseMs: this.opts.leaseMs,
        });
      }
    } catch (e) {
      this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'warn', 'renewing delivery leases failed', {
        deliveries: ids.length,
        ...errorFields(e),
      });
    } finally {
      this.renewing = false;
    }
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.kicked = false;
      await this.refreshHolds();
      let claimedAny = false;
      let saturated = false;
      // One claim per sink with free slots, up to that many. Claim in batches: while a sink has
      // deliveries in flight, wait until half its slots are free (each finishing delivery kicks
      // the loop) -- one claim query for several deliveries instead of one per finished delivery.
      for (const rt of this.sinks.values()) {
        const busy = this.perSink.get(rt.id) ?? 0;
        const free = rt.concurrency - busy;
        if (free <= 0 || (busy > 0 && free < Math.ceil(rt.concurrency / 2))) {
          saturated = true;
          continue;
        }
        if ((this.claimNotBefore.get(rt.id) ?? 0) > Date.now() || this.isHeld(rt.id)) continue;
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
      }
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
            this.isHeld(id, now) ||
            !(this.circuits.get(id)?.claimable(now) ?? true),
        );
        const goneIdle = (this.claimNotBefore.get(GONE) ?? 0) > now;
        const filter: DeliveryClaimFilter = goneIdle
          ? { sinkIds: [...this.sinks.keys()].filter((id) => !idle.includes(id)) }
          : { excludeSinkIds: idle };
        const due = await this.store.nextDueAt(filter);
        if (due) wait = Math.max(0, Math.min(wait, due.getTime() - Date.now()));
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

  /** Held by an operator now (a hold whose end has passed is over, whether or not the store was read since). */
  private isHeld(sinkId: string, now = Date.now()): boolean {
    const h = this.holds.get(sinkId);
    return !!h && (!h.until || h.until.getTime() > now);
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

  /**
   * Outcomes of one event-loop turn are recorded together (one store operation; on PostgreSQL
   * one transaction instead of one per delivery). Each caller learns whether its batch committed.
   */
  private record(deliveryId: string, outcome: DeliveryOutcome): Promise<StaleOutcome | undefined> {
    return new Promise<StaleOutcome | undefined>((resolve, reject) => {
      this.outcomes.push({ deliveryId, outcome, resolve, reject });
      if (this.outcomeTimer) return;
      this.outcomeTimer = setImmediate(() => {
        this.outcomeTimer = undefined;
        const batch = this.outcomes.splice(0);
        const items = batch.map(({ deliveryId: id, outcome: o }) => ({ deliveryId: id, outcome: o }));
        // The deliveries happened: a store outage shorter than half the lease must not leave them
        // leased to be made again (they stay ours until then).
        // Fenced by our lease: a late outcome (the lease expired and another instance took the
        // delivery over) or one already recorded (a retry after a lost COMMIT answer) changes nothing.
        const owner = this.opts.owner;
        retryTransient(() => this.store.completeDeliveries(items, { owner }), {
          what: 'recording delivery outcomes',
          logger: this.logger,
          budgetMs: this.opts.leaseMs / 2,
        }).then(
          (r) => {
            const stale = new Map((r?.stale ?? []).map((x) => [x.deliveryId, x]));
            batch.forEach((b) => b.resolve(stale.get(b.deliveryId)));
          },
          (e) => {
            const details = (e as FerryError)?.details;
            const missing = new Set<string>((details?.deliveryIds as string[] | undefined) ?? []);
            const stale = new Map(((details?.stale as StaleOutcome[] | undefined) ?? []).map((x) => [x.deliveryId, x]));
            // Only the deliveries the store did not know failed; the others were recorded.
            if (missing.size)
              batch.forEach((b) => (missing.has(b.deliveryId) ? b.reject(e) : b.resolve(stale.get(b.deliveryId))));
            else batch.forEach((b) => b.reject(e));
          },
        );
      });
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

  /**
   * The sink's call, given at most `deliveryTimeoutMs`: a call that never returns (a plugin
   * without timeouts, a server that stops answering mid-response) would otherwise hold its slot
   * and -- its lease renewed while it runs -- the later deliveries of its ordering key for good.
   * Past the limit the attempt fails (retryable, retried later), the delivery's signal is aborted
   * for the sink to stop, and whatever the call does afterwards is ignored.
   */
  private deliverWithin(rt: SinkRuntime, d: ClaimedDelivery, entry: InSink): Promise<void> {
    const delivery = toSinkDelivery(d);
    const call = rt.sink.deliver(delivery);
    const limit = entry.limit;
    const expired = new Promise<never>((_, reject) => {
      entry.expire = (why = 'timeout') => {
        const e =
          why === 'stopping'
            ? new FerryError(
                'DELIVERY_ENGINE_STOPPING',
                `sink "${rt.id}" did not finish the delivery before the engine stopped`,
                { kind: 'transient', retryable: true },
              )
            : new FerryError(
                'DELIVERY_TIMEOUT',
                `sink "${rt.id}" did not finish the delivery within ${limit} ms (deliveryTimeoutMs)`,
                { kind: 'transient', retryable: true },
              );
        // Settled before the sink hears of it: a sink that rejects as soon as its signal aborts must
        // not have its own error recorded instead (the race takes whichever settled first).
        reject(e);
        delivery.abort(e);
      };
    });
    // A call abandoned at the limit may still settle: nobody is waiting for it then.
    call.catch(() => undefined);
    return Promise.race([call, expired]);
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
      await this.deliverWithin(rt, d, entry);
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
    // commit together (`record`), so this costs one commit round per group, not per delivery.
    try {
      const stale = await this.record(d.id, outcome);
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
