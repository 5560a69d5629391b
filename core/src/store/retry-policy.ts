import type { RetryPolicy } from '../config/engine.schema';

export type { RetryPolicy };

export interface AttemptInfo {
  /** Attempts made so far, including the one that just failed (1 after the first failure). */
  attempts: number;
  /** When the delivery was created or first attempted: the start of its max age. */
  firstAttemptAt: Date;
  /** False: the sink said the error is permanent -> dead at once. */
  retryable: boolean;
  /** A delay the remote asked for (HTTP Retry-After, 429): honoured when longer than the backoff. */
  retryAfterMs?: number;
}

export const defaultRetryPolicy: RetryPolicy = {
  maxAttempts: 10,
  initialDelayMs: 1000,
  maxDelayMs: 300_000,
  multiplier: 2,
  jitter: 0.2,
  maxAgeMs: 7 * 24 * 3600_000,
};

/**
 * The backoff delay before attempt `attempts + 1`: initialDelayMs * multiplier^(attempts-1),
 * capped at maxDelayMs, then spread by +-jitter (a fraction) so that many deliveries failing
 * together do not retry in lockstep. `random` in [0, 1).
 */
export function backoffDelay(policy: RetryPolicy, attempts: number, random: () => number = Math.random): number {
  const n = Math.max(1, attempts);
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * Math.pow(Math.max(1, policy.multiplier), n - 1));
  const j = Math.min(1, Math.max(0, policy.jitter));
  const spread = base * j * (2 * random() - 1);
  return Math.max(0, Math.min(policy.maxDelayMs, Math.round(base + spread)));
}

/**
 * When to try a failed delivery again, or `undefined` when it is dead: the error is not
 * retryable, `maxAttempts` attempts were made, or the next attempt would fall after
 * firstAttemptAt + maxAgeMs.
 */
export function nextAttempt(
  policy: RetryPolicy,
  info: AttemptInfo,
  now: Date = new Date(),
  random: () => number = Math.random,
): Date | undefined {
  if (!info.retryable) return undefined;
  if (policy.maxAttempts > 0 && info.attempts >= policy.maxAttempts) return undefined;
  let delay = backoffDelay(policy, info.attempts, random);
  if (info.retryAfterMs !== undefined && Number.isFinite(info.retryAfterMs) && info.retryAfterMs > delay)
    delay = info.retryAfterMs;
  const at = now.getTime() + delay;
  if (policy.maxAgeMs > 0 && at > info.firstAttemptAt.getTime() + policy.maxAgeMs) return undefined;
  return new Date(at);
}

/** Why `nextAttempt` gave up (for the dead-letter detail). */
export function deadReason(
  policy: RetryPolicy,
  info: AttemptInfo,
  now: Date = new Date(),
): 'not-retryable' | 'max-attempts' | 'max-age' | undefined {
  if (!info.retryable) return 'not-retryable';
  if (policy.maxAttempts > 0 && info.attempts >= policy.maxAttempts) return 'max-attempts';
  if (policy.maxAgeMs > 0 && now.getTime() >= info.firstAttemptAt.getTime() + policy.maxAgeMs) return 'max-age';
  return undefined;
}
