import type { RetryPolicy } from '../config/engine.schema';
import type { FerryError } from '../errors';
import type { StoredError } from '../model/message';
import type { ClaimedDelivery, DeliveryOutcome } from '../store/message-store';
import { nextAttempt } from '../store/retry-policy';

/**
 * Turns a sink's failure into the next state of the delivery: retry later, or dead.
 * `storeAheadMs`: how far the store's clock (the delivery's stored first attempt) is ahead of
 * `now`'s (`MessageStore.clockAheadMs`). `probe`: the attempt was a paused sink's probe -- like
 * the probes before it, it does not count towards `maxAttempts` (`maxAgeMs` still holds).
 */
export function deliveryOutcome(
  policy: RetryPolicy,
  d: ClaimedDelivery,
  err: FerryError,
  now = new Date(),
  storeAheadMs = 0,
  probe = false,
): DeliveryOutcome {
  const counted = d.attempts + 1 - (d.probeAttempts ?? 0) - (probe ? 1 : 0);
  // The sink's OperationOutcome (FHIR servers) is kept with the error for inspection.
  const error = {
    code: err.code,
    message: err.message,
    retryable: err.retryable,
    outcome: err.details?.outcome as StoredError['outcome'],
  };
  const firstAttemptAt = new Date((d.firstAttemptAt ?? d.createdAt).getTime() - storeAheadMs);
  const info = {
    attempts: Math.max(1, counted),
    firstAttemptAt,
    retryable: err.retryable,
    retryAfterMs: err.details?.retryAfterMs as number | undefined,
  };
  const next = nextAttempt(probe ? { ...policy, maxAttempts: 0 } : policy, info, now);
  const p = probe ? { probe: true } : {};
  return next ? { status: 'failed', error, nextAttemptAt: next, ...p } : { status: 'dead', error, ...p };
}
