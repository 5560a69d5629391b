import type { CircuitPolicy } from '../config/engine.schema';

/** A sink's circuit breaker settings (`sinks.<id>.circuitBreaker`, derived from sinkCommonSchema). */
export type { CircuitPolicy };

/** closed: deliveries go; open: paused until `openUntil`; half-open: one probe may go (or is going). */
export type CircuitState = 'closed' | 'open' | 'half-open';

/** What a sink's circuit looks like from outside (admin API). */
export interface CircuitView {
  state: CircuitState;
  /** Retryable failures in a row while closed. */
  consecutiveFailures: number;
  /** While paused: since when, and when the next probe may go. */
  pausedSince?: Date;
  nextProbeAt?: Date;
  /** Probes that failed during this pause. */
  failedProbes: number;
  /** The error code of the failure that paused the sink or of the last failed probe. */
  lastErrorCode?: string;
  /** Closed, but the sink has not answered since the engine started: one delivery at a time until it does. */
  starting?: boolean;
}

/**
 * One sink's circuit breaker, on one engine instance. A sink that fails `failureThreshold`
 * attempts in a row with retryable errors (connection refused, timeouts, 5xx, 429, a full disk)
 * is taken to be down: its deliveries are paused -- not claimed, not attempted, so they do not
 * spend their `maxAttempts` on an outage -- for `openMs`, after which a single delivery is
 * attempted as a probe. The probe taken: deliveries resume at once. The probe failed: paused again
 * for twice as long (up to `maxOpenMs`; longer if the sink asked for it with Retry-After).
 * Any answer that is not a retryable failure (a delivery taken, or refused for good: the sink is
 * up, the message is the problem) resets the count and ends a pause.
 *
 * **Slow start** (`slowStart`, the dispatcher's choice): until the sink first answers after the
 * engine started, one delivery at a time, and each such attempt is a probe (stored, not counted
 * towards `maxAttempts`: the sink's health is not known yet), its failures counting towards
 * `failureThreshold` as usual. An engine that restarts while the sink is down then makes at most
 * `failureThreshold` attempts before pausing it again, none of them spent from a delivery's
 * `maxAttempts` -- where it made one on each of up to `concurrency` deliveries at once, counted,
 * at every start: a crash loop killed the oldest deliveries by `maxAttempts` as if the breaker
 * were off.
 *
 * Pure bookkeeping: the dispatcher asks `allowance` before claiming and reports every outcome.
 */
export class SinkCircuit {
  private state: CircuitState = 'closed';
  private failures = 0;
  private openFor = 0;
  private openUntil = 0;
  private pausedSince = 0;
  private failedProbes = 0;
  private lastErrorCode?: string;
  /** The probe's delivery id while it is out. */
  private probe?: string;
  /** Slow start: no answer from the sink yet. */
  private starting: boolean;
  /** Slow start: the one delivery out. */
  private first?: string;

  constructor(
    readonly policy: CircuitPolicy,
    opts: { slowStart?: boolean } = {},
  ) {
    this.starting = !!opts.slowStart && policy.failureThreshold > 0;
  }

  /**
   * How many of `free` slots may be claimed now: all of them while closed (one, with none out,
   * during slow start); none while paused; one once the pause is over and no probe is out (the
   * state turns half-open).
   */
  allowance(free: number, now: number): number {
    if (this.state === 'closed') return this.starting ? (this.first === undefined ? Math.min(free, 1) : 0) : free;
    if (this.probe !== undefined || now < this.openUntil) return 0;
    this.state = 'half-open';
    return Math.min(free, 1);
  }

  /** Whether a claim may be made now (closed, with nothing out during slow start; or the pause is over and no probe is out). */
  claimable(now: number): boolean {
    if (this.state === 'closed') return !this.starting || this.first === undefined;
    return this.probe === undefined && now >= this.openUntil;
  }

  /**
   * While paused: when the next probe may go (for the dispatcher's sleep). Not once it may go
   * (half-open, no probe out: the sink had nothing due to probe with): then the sink is claimed
   * for as its deliveries fall due, like any other, not in a loop.
   */
  wakeAt(): number | undefined {
    return this.state === 'open' ? this.openUntil : undefined;
  }

  /** The delivery claimed under a half-open allowance is the probe; under slow start, the one out. */
  probing(deliveryId: string): void {
    if (this.state === 'half-open' && this.probe === undefined) this.probe = deliveryId;
    else if (this.state === 'closed' && this.starting && this.first === undefined) this.first = deliveryId;
  }

  /** Slow start: the sink has not answered since the engine started. */
  isStarting(): boolean {
    return this.starting;
  }

  isProbe(deliveryId: string): boolean {
    return this.probe === deliveryId || (this.starting && this.first === deliveryId);
  }

  /**
   * The sink answered: the delivery was taken, or refused for good (the message's problem, not
   * the sink's). Returns how long the sink was paused when this ends a pause.
   */
  answered(now: number): { pausedMs: number; failedProbes: number } | undefined {
    this.failures = 0;
    this.starting = false;
    this.first = undefined;
    if (this.state === 'closed') return undefined;
    const ended = { pausedMs: now - this.pausedSince, failedProbes: this.failedProbes };
    this.state = 'closed';
    this.probe = undefined;
    this.failedProbes = 0;
    this.openFor = 0;
    return ended;
  }

  /**
   * A retryable failure. `opened`: this one paused the sink; `probe-failed`: the probe failed and
   * the sink is paused again for longer. Failures of calls that started before the pause change
   * nothing.
   */
  failed(
    deliveryId: string,
    now: number,
    errorCode: string,
    retryAfterMs?: number,
  ): { change: 'opened' | 'probe-failed'; pauseMs: number } | undefined {
    const asked = retryAfterMs !== undefined && Number.isFinite(retryAfterMs) ? retryAfterMs : 0;
    if (this.first === deliveryId) this.first = undefined; // slow start: the next may go
    if (this.state === 'closed') {
      if (this.policy.failureThreshold <= 0 || ++this.failures < this.policy.failureThreshold) return undefined;
      this.state = 'open';
      this.pausedSince = now;
      this.openFor = Math.max(1, this.policy.openMs);
      this.lastErrorCode = errorCode;
      return { change: 'opened', pauseMs: this.pause(now, asked) };
    }
    if (this.probe !== deliveryId) return undefined;
    this.probe = undefined;
    this.state = 'open';
    this.failedProbes++;
    this.lastErrorCode = errorCode;
    this.openFor = Math.min(Math.max(this.policy.maxOpenMs, this.policy.openMs), this.openFor * 2);
    return { change: 'probe-failed', pauseMs: this.pause(now, asked) };
  }

  /** The probe's call ended without an outcome to report (its outcome could not be recorded): another may go. */
  settled(deliveryId: string): void {
    if (this.probe === deliveryId) this.probe = undefined;
    if (this.first === deliveryId) this.first = undefined;
  }

  view(): CircuitView {
    const v: CircuitView = { state: this.state, consecutiveFailures: this.failures, failedProbes: this.failedProbes };
    if (this.starting) v.starting = true;
    if (this.state !== 'closed') {
      v.pausedSince = new Date(this.pausedSince);
      v.nextProbeAt = new Date(this.openUntil);
      if (this.lastErrorCode) v.lastErrorCode = this.lastErrorCode;
    }
    return v;
  }

  private pause(now: number, asked: number): number {
    const ms = Math.max(this.openFor, asked);
    this.openUntil = now + ms;
    return ms;
  }
}
