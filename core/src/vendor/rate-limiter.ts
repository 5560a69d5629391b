export interface TokenBucketOptions {
  /** Sustained requests per second. */
  ratePerSec: number;
  /** Bucket size (requests allowed in a burst). Default: max(1, ratePerSec). */
  burst?: number;
  now?: () => number;
}

interface Bucket {
  /** Theoretical arrival time (GCRA): when the bucket would be empty again. */
  tat: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (ms <= 0) return resolve();
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
export { sleep as abortableSleep };

/**
 * Client-side token-bucket rate limiter (GCRA form), one bucket per key (vendor + tenant/practice).
 * `acquire` reserves a slot and waits until it is due, so callers are served in order and the
 * sustained rate never exceeds `ratePerSec` (plus the initial burst). `pause(key, ms)` holds the
 * whole key back (e.g. after a 429 with Retry-After): every later reservation starts after it, and
 * traffic resumes at the sustained rate rather than in a burst.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly intervalMs: number;
  private readonly burst: number;
  private readonly now: () => number;

  constructor(opts: TokenBucketOptions) {
    if (!(opts.ratePerSec > 0)) throw new RangeError('ratePerSec must be > 0');
    this.intervalMs = 1000 / opts.ratePerSec;
    this.burst = Math.max(1, opts.burst ?? Math.max(1, Math.floor(opts.ratePerSec)));
    this.now = opts.now ?? Date.now;
  }

  get ratePerSec(): number {
    return 1000 / this.intervalMs;
  }

  private bucket(key: string): Bucket {
    let b = this.buckets.get(key);
    if (!b) {
      b = { tat: 0 };
      this.buckets.set(key, b);
    }
    return b;
  }

  /** Reserve one request for `key`; resolves when it may be sent. Returns the ms waited. */
  async acquire(key: string, signal?: AbortSignal): Promise<number> {
    const b = this.bucket(key);
    const now = this.now();
    const tat = Math.max(b.tat, now);
    const sendAt = Math.max(now, tat - (this.burst - 1) * this.intervalMs);
    b.tat = tat + this.intervalMs;
    const wait = sendAt - now;
    if (wait > 0) await sleep(Math.ceil(wait), signal);
    return wait;
  }

  /** Hold back every caller of `key` for at least `ms` from now. */
  pause(key: string, ms: number): void {
    const b = this.bucket(key);
    b.tat = Math.max(b.tat, this.now() + ms + (this.burst - 1) * this.intervalMs);
  }
}
