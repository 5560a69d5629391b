import type { Logger } from 'winston';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';

/**
 * Runs `fn` again while it fails with a transient error (FerryError with `retryable`: a store
 * connection lost, a server restarting), waiting 50, 100, 200 ... ms, at most `attempts` times.
 * For writing results already in hand (a delivery made, a batch transformed): a blip of the
 * store then costs a moment, not a lease period and the work done again. Other errors, and the
 * last transient one, are thrown.
 */
export async function retryTransient<T>(fn: () => Promise<T>, opts: { what: string; logger: Logger; attempts?: number; firstDelayMs?: number }): Promise<T> {
  const attempts = opts.attempts ?? 6;
  let delay = opts.firstDelayMs ?? 50;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !(e instanceof FerryError) || !e.retryable) throw e;
      opts.logger.warn(`${opts.what} failed; trying again`, { attempt: i, delayMs: delay, ...errorFields(e) });
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
  }
}
