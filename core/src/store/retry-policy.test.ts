import fc from 'fast-check';
import { backoffDelay, deadReason, defaultRetryPolicy, nextAttempt } from './retry-policy';

const policy = { ...defaultRetryPolicy, initialDelayMs: 1000, multiplier: 2, maxDelayMs: 60_000, jitter: 0, maxAttempts: 5, maxAgeMs: 3600_000 };

describe('retry policy', () => {
  it('grows exponentially from initialDelayMs and is capped at maxDelayMs', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(policy, a))).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
  });

  it('spreads each delay by at most +-jitter and never past maxDelayMs', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (attempts, jitter, r) => {
        const p = { ...policy, jitter };
        const base = backoffDelay({ ...p, jitter: 0 }, attempts);
        const d = backoffDelay(p, attempts, () => r);
        return d >= Math.floor(base * (1 - jitter)) - 1 && d <= Math.min(p.maxDelayMs, Math.ceil(base * (1 + jitter)) + 1);
      }),
    );
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay({ ...policy, jitter: 0.5 }, 3)));
    expect(spread.size).toBeGreaterThan(10);
  });

  it('schedules the next attempt, or gives up: not retryable, max attempts, max age', () => {
    const now = new Date('2025-01-01T00:00:00Z');
    const first = new Date(now.getTime() - 1000);
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: first, retryable: true }, now)!.getTime()).toBe(now.getTime() + 1000);
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: first, retryable: false }, now)).toBeUndefined();
    expect(deadReason(policy, { attempts: 1, firstAttemptAt: first, retryable: false }, now)).toBe('not-retryable');
    expect(nextAttempt(policy, { attempts: 4, firstAttemptAt: first, retryable: true }, now)).toBeDefined();
    expect(nextAttempt(policy, { attempts: 5, firstAttemptAt: first, retryable: true }, now)).toBeUndefined();
    expect(deadReason(policy, { attempts: 5, firstAttemptAt: first, retryable: true }, now)).toBe('max-attempts');
    const old = new Date(now.getTime() - 3600_000 + 500);
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: old, retryable: true }, now)).toBeUndefined();
  });

  it('honours a longer Retry-After', () => {
    const now = new Date();
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: now, retryable: true, retryAfterMs: 30_000 }, now)!.getTime()).toBe(now.getTime() + 30_000);
    expect(nextAttempt(policy, { attempts: 3, firstAttemptAt: now, retryable: true, retryAfterMs: 10 }, now)!.getTime()).toBe(now.getTime() + 4000);
  });
});
