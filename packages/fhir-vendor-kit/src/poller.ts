/**
 * The checkpointed poller skeleton every polling vendor source shares (Epic, Cerner, athena-rest,
 * athena-fhir): one loop that runs `pollOnce()`, waits, and runs it again until stopped.
 *
 * - `pollOnce()` does one pass and commits its own checkpoints WITH the messages
 *   (`ctx.submit(messages, { checkpoint })`), so a crash between passes loses and repeats nothing.
 * - A failed pass is counted and told once through an {@link OutageLog} (then counted each minute),
 *   never thrown out of the loop; `lastError` holds it until a pass succeeds.
 * - `nextWaitMs(failure?)` chooses the wait: the subclass's interval, or a back-off after a failure
 *   ({@link retryBackoffMs} is the shared rule). `0` = a one-shot source: it idles until stopped.
 * - `stop()` aborts the signal the pass's HTTP calls use, wakes the wait and awaits the loop, so a
 *   stopped source holds no timer and makes no further call. `pollNow()` ends the current wait.
 */
import { errorFields, FerryError, OutageLog, type MessageSource, type SourceContext } from '@ferry/core';

export interface PassFailure {
  error: FerryError;
  /** Failed passes in a row (1 after the first). */
  failures: number;
}

/** Longest a single wait may be (setTimeout's limit); a one-shot source waits this long, repeatedly, until stopped. */
const MAX_WAIT_MS = 2 ** 31 - 1;

/**
 * The back-off after a failed pass: retryable errors wait 5 s, 10 s, 20 s … (at most 5 min, or the
 * interval if shorter), at least what the server asked (`details.retryAfterMs`) and 30 s when
 * throttled; a non-retryable error waits the interval (60 s for a one-shot source).
 */
export function retryBackoffMs(intervalMs: number, f: PassFailure): number {
  const backoff = Math.min(5000 * 2 ** (f.failures - 1), 300_000);
  const asked = Math.max(
    (f.error.details?.retryAfterMs as number | undefined) ?? 0,
    /THROTTLED|EXPORT_BUSY/.test(f.error.code) ? 30_000 : 0,
  );
  if (f.error.retryable) return Math.max(Math.min(intervalMs || backoff, backoff), asked);
  return intervalMs || 60_000;
}

export abstract class PollingSource<C> implements MessageSource {
  protected readonly abort = new AbortController();
  /** Aborted by stop() or by the engine: pass it to every call a pass makes. */
  protected readonly signal: AbortSignal;
  private loop?: Promise<void>;
  private running = false;
  private wake?: () => void;
  private failuresInARow = 0;
  /** A run of failed passes (the vendor down, credentials revoked): told once, counted each minute. */
  private readonly passFailures: OutageLog;
  /** Passes completed, failed or not (tests, metrics). */
  polls = 0;
  /** The last pass's error; cleared by the next successful pass. */
  lastError?: FerryError;

  constructor(
    protected readonly ctx: SourceContext<C>,
    outageMessage: string,
  ) {
    this.signal = AbortSignal.any([this.abort.signal, ctx.signal]);
    this.passFailures = new OutageLog(ctx.logger, outageMessage, { source: ctx.id });
  }

  /** One pass: read what is new, submit it with its checkpoint. */
  abstract pollOnce(): Promise<unknown>;
  /** How long to wait before the next pass; `failure` is set when this pass failed. 0 = one-shot. */
  protected abstract nextWaitMs(failure?: PassFailure): number;

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.loop = this.run().catch((e) => {
      this.ctx.logger.error('source loop ended', { source: this.ctx.id, ...errorFields(e) });
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort(new Error('source stopping'));
    this.wake?.();
    await this.loop;
  }

  /** Ready while running and the last pass did not fail on configuration (bad credentials, a refused scope). */
  isReady(): boolean {
    return this.running && !this.signal.aborted && !(this.lastError && this.lastError.kind === 'config');
  }

  /** End the current wait and poll now (tests, admin). */
  pollNow(): void {
    this.wake?.();
  }

  private async run(): Promise<void> {
    while (this.running && !this.signal.aborted) {
      let failure: PassFailure | undefined;
      try {
        await this.pollOnce();
        this.lastError = undefined;
        this.failuresInARow = 0;
        this.passFailures.ok();
      } catch (e) {
        if (this.signal.aborted) break;
        this.lastError = FerryError.from(e);
        failure = { error: this.lastError, failures: ++this.failuresInARow };
        this.passFailures.failed({ failures: failure.failures, ...errorFields(this.lastError) });
      }
      this.polls++;
      if (!this.running || this.signal.aborted) break;
      const wait = this.nextWaitMs(failure);
      await this.idle(wait === 0 ? MAX_WAIT_MS : Math.min(wait, MAX_WAIT_MS));
    }
  }

  private idle(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake = done;
      this.signal.addEventListener('abort', done, { once: true });
    });
  }
}
