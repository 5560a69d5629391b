import type { Logger } from '../plugin/api';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import { backoffDelay } from '../vendor/http-client';

export interface RetryTransientOptions {
  /** What is being retried, for the log. */
  what: string;
  logger: Logger;
  /** Keep trying this long in all (ms); the last failure is thrown once the next wait would pass it. */
  budgetMs: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
}

/**
 * Runs `fn` again while it fails with a transient error (FerryError with `retryable`: the store's
 * connection lost, its server restarting), waiting 50, 100, 200 ... ms (at most `maxDelayMs`,
 * default 2 s) for up to `budgetMs` in all. For writing results already in hand (a batch
 * transformed, deliveries made): an outage of the store shorter than the budget costs its own
 * length, not a lease period and the work done again. Other errors, and the last transient one,
 * are thrown. One warning when it starts retrying, one when it succeeds after retrying.
 */
export async function retryTransient<T>(fn: () => Promise<T>, opts: RetryTransientOptions): Promise<T> {
  const start = Date.now();
  const backoff = {
    initialDelayMs: opts.firstDelayMs ?? 50,
    maxDelayMs: opts.maxDelayMs ?? 2000,
    multiplier: 2,
    jitter: 0,
  };
  let tries = 0;
  for (;;) {
    tries++;
    try {
      const r = await fn();
      if (tries > 1)
        opts.logger.info(`${opts.what} succeeded after retrying`, { attempts: tries, waitedMs: Date.now() - start });
      return r;
    } catch (e) {
      const delay = backoffDelay(tries, backoff);
      if (!(e instanceof FerryError) || !e.retryable || Date.now() - start + delay > opts.budgetMs) throw e;
      if (tries === 1)
        opts.logger.warn(`${opts.what} failed; trying again`, { budgetMs: opts.budgetMs, ...errorFields(e) });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
