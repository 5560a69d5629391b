import fc from 'fast-check';
import { backoffDelay, deadReason, defaultRetryPolicy, nextAttempt } from './retry-policy';

const policy = {
  ...defaultRetryPolicy,
  initialDelayMs: 1000,
  multiplier: 2,
  maxDelayMs: 60_000,
  jitter: 0,
  maxAttempts: 5,
  maxAgeMs: 3600_000,
};

describe('retry policy', () => {
  it('grows exponentially from initialDelayMs and is capped at maxDelayMs', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(policy, a))).toEqual([
      1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000,
    ]);
  });

  it('spreads each delay by at most +-jitter and never past maxDelayMs', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 0.999999, noNaN: true }),
        (attempts, jitter, r) => {
          const p = { ...policy, jitter };
          const base = backoffDelay({ ...p, jitter: 0 }, attempts);
          const d = backoffDelay(p, attempts, () => r);
          return (
            d >= Math.floor(base * (1 - jitter)) - 1 && d <= Math.min(p.maxDelayMs, Math.ceil(base * (1 + jitter)) + 1)
          );
        },
      ),
    );
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay({ ...policy, jitter: 0.5 }, 3)));
    expect(spread.size).toBeGreaterThan(10);
  });

  it('schedules the next attempt, or gives up: not retryable, max attempts, max age', () => {
    const now = new Date('2025-01-01T00:00:00Z');
    const first = new Date(now.getTime() - 1000);
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: first, retryable: true }, now)!.getTime()).toBe(
      now.getTime() + 1000,
    );
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
    expect(
      nextAttempt(policy, { attempts: 1, firstAttemptAt: now, retryable: true, retryAfterMs: 30_000 }, now)!.getTime(),
    ).toBe(now.getTime() + 30_000);
    expect(
      nextAttempt(policy, { attempts: 3, firstAttemptAt: now, retryable: true, retryAfterMs: 10 }, now)!.getTime(),
    ).toBe(now.getTime() + 4000);
  });

  it('backoff edges: attempts below 1 count as 1, a multiplier below 1 as 1, jitter clamped to [0, 1], exact spread', () => {
    expect(backoffDelay(policy, 0)).toBe(1000);
    expect(backoffDelay(policy, -3)).toBe(1000);
    expect([1, 2, 3].map((a) => backoffDelay({ ...policy, multiplier: 0.5 }, a))).toEqual([1000, 1000, 1000]);
    expect([1, 2, 3].map((a) => backoffDelay({ ...policy, multiplier: 3 }, a))).toEqual([1000, 3000, 9000]);
    // random 0 -> base * (1 - jitter); 0.75 -> base * (1 + jitter / 2); 0.5 -> base
    expect(backoffDelay({ ...policy, jitter: 0.2 }, 2, () => 0)).toBe(1600);
    expect(backoffDelay({ ...policy, jitter: 0.2 }, 2, () => 0.75)).toBe(2200);
    expect(backoffDelay({ ...policy, jitter: 0.2 }, 2, () => 0.5)).toBe(2000);
    expect(backoffDelay({ ...policy, jitter: 5 }, 2, () => 0)).toBe(0);
    expect(backoffDelay({ ...policy, jitter: 5 }, 2, () => 0.75)).toBe(3000);
    expect(backoffDelay({ ...policy, jitter: -1 }, 2, () => 0)).toBe(2000);
    // at the cap, jitter never goes past it
    expect(backoffDelay({ ...policy, jitter: 0.5 }, 10, () => 0.999)).toBe(60_000);
    expect(backoffDelay({ ...policy, jitter: 0.5 }, 10, () => 0)).toBe(30_000);
    expect(backoffDelay({ ...policy, initialDelayMs: 100, jitter: 0.25 }, 1, () => 0.999)).toBe(125);
  });

  it('maxAttempts 0 and maxAgeMs 0 mean no limit; the max age is inclusive at its end', () => {
    const now = new Date('2025-01-01T00:00:00Z');
    const first = new Date(now.getTime() - 1000);
    expect(
      nextAttempt(
        { ...policy, maxAttempts: 0 },
        { attempts: 1000, firstAttemptAt: first, retryable: true },
        now,
      )!.getTime(),
    ).toBe(now.getTime() + 60_000);
    expect(
      deadReason({ ...policy, maxAttempts: 0 }, { attempts: 1000, firstAttemptAt: first, retryable: true }, now),
    ).toBeUndefined();
    const ancient = new Date(now.getTime() - 365 * 24 * 3600_000);
    expect(
      nextAttempt({ ...policy, maxAgeMs: 0 }, { attempts: 1, firstAttemptAt: ancient, retryable: true }, now),
    ).toBeDefined();
    expect(
      deadReason({ ...policy, maxAgeMs: 0 }, { attempts: 1, firstAttemptAt: ancient, retryable: true }, now),
    ).toBeUndefined();
    // the next attempt exactly at firstAttemptAt + maxAgeMs is still made; 1 ms later it is not
    const atEdge = new Date(now.getTime() + 1000 - policy.maxAgeMs);
    expect(nextAttempt(policy, { attempts: 1, firstAttemptAt: atEdge, retryable: true }, now)!.getTime()).toBe(
      now.getTime() + 1000,
    );
    expect(
      nextAttempt(policy, { attempts: 1, firstAttemptAt: new Date(atEdge.getTime() - 1), retryable: true }, now),
    ).toBeUndefined();
    // deadReason: max-age from firstAttemptAt + maxAgeMs on
    expect(
      deadReason(
        policy,
        { attempts: 1, firstAttemptAt: new Date(now.getTime() - policy.maxAgeMs), retryable: true },
        now,
      ),
    ).toBe('max-age');
    expect(
      deadReason(
        policy,
        { attempts: 1, firstAttemptAt: new Date(now.getTime() - policy.maxAgeMs + 1), retryable: true },
        now,
      ),
    ).toBeUndefined();
    expect(deadReason(policy, { attempts: 4, firstAttemptAt: first, retryable: true }, now)).toBeUndefined();
  });

  it('Retry-After: not a finite number is ignored; an equal one changes nothing', () => {
    const now = new Date('2025-01-01T00:00:00Z');
    const info = { attempts: 2, firstAttemptAt: now, retryable: true };
    for (const retryAfterMs of [NaN, Infinity, -5, 2000])
      expect(nextAttempt(policy, { ...info, retryAfterMs }, now)!.getTime()).toBe(now.getTime() + 2000);
    expect(nextAttempt(policy, { ...info, retryAfterMs: 2001 }, now)!.getTime()).toBe(now.getTime() + 2001);
  });

  it('the default policy: 10 attempts, 1 s doubling to 5 min, +-20 %, for at most 7 days', () => {
    expect(defaultRetryPolicy).toEqual({
      maxAttempts: 10,
      initialDelayMs: 1000,
      maxDelayMs: 300_000,
      multiplier: 2,
      jitter: 0.2,
      maxAgeMs: 604_800_000,
    });
  });
});
