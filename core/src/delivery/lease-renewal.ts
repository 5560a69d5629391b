import type { Logger } from 'winston';
import { errorFields } from '../logging/logger';
import { whileStoreDown, type MessageStore } from '../store/message-store';
import type { InSink } from './sink-call';

/** Renews the leases of the dispatcher's sink calls under way (see `renewLeases`). */
export class LeaseRenewal {
  private renewing = false;

  constructor(
    private readonly store: MessageStore,
    private readonly logger: Logger,
    private readonly opts: { readonly owner: string; readonly leaseMs: number },
    /** The dispatcher's sink calls in flight, by delivery id. */
    private readonly inSink: Map<string, InSink>,
  ) {}

  /**
   * A sink call may outlast the lease (a slow server, a vendor client's own retries): every third
   * of the lease, the leases of calls running that long are extended, so neither another
   * instance nor this one claims the delivery again and makes it twice while this call is still
   * under way. A lease found taken over meanwhile (this instance could not reach the store for
   * longer than the lease) is logged once: the other instance may make the delivery too.
   */
  async renewLeases(now: number, sweepMs: number): Promise<void> {
    if (this.renewing || !this.inSink.size) return;
    const third = this.opts.leaseMs / 3;
    const due = [...this.inSink].filter(([, s]) => now - s.leasedAt >= third - sweepMs);
    if (!due.length) return;
    const ids = due.map(([id]) => id);
    this.renewing = true;
    try {
      const held = new Set(await this.store.renewDeliveryLeases(this.opts.owner, ids, this.opts.leaseMs));
      for (const [id, s] of due) if (held.has(id)) s.leasedAt = now;
      for (const id of ids) {
        const s = this.inSink.get(id);
        if (!s || held.has(id) || s.lostLogged) continue;
        s.lostLogged = true;
        s.log().warn('delivery lease lost while its sink call is still running: another instance may make it too', {
          inSinkMs: Date.now() - s.since,
          leaseMs: this.opts.leaseMs,
        });
      }
    } catch (e) {
      this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'warn', 'renewing delivery leases failed', {
        deliveries: ids.length,
        ...errorFields(e),
      });
    } finally {
      this.renewing = false;
    }
  }
}
