import type { Logger } from 'winston';
import type { FerryError } from '../errors';
import type { CompleteResult, DeliveryOutcome, MessageStore } from '../store/message-store';
import { retryTransient } from '../util/retry-transient';

export type StaleOutcome = CompleteResult['stale'][number];

/** The dispatcher's outcomes, committed in groups (see `record`). */
export class OutcomeRecorder {
  private outcomes: {
    deliveryId: string;
    outcome: DeliveryOutcome;
    resolve(stale?: StaleOutcome): void;
    reject(e: unknown): void;
  }[] = [];
  private outcomeTimer?: NodeJS.Immediate;

  constructor(
    private readonly store: MessageStore,
    private readonly logger: Logger,
    private readonly opts: { readonly owner: string; readonly leaseMs: number },
    /** Called once a group with a retry scheduled (a `failed` outcome) has committed. */
    private readonly onRetryScheduled?: () => void,
  ) {}

  /**
   * Outcomes of one event-loop turn are recorded together (one store operation; on PostgreSQL
   * one transaction instead of one per delivery). Each caller learns whether its batch committed.
   */
  record(deliveryId: string, outcome: DeliveryOutcome): Promise<StaleOutcome | undefined> {
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
            if (batch.some((b) => b.outcome.status === 'failed')) this.onRetryScheduled?.();
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
}
