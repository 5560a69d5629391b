import type { Logger } from 'winston';
import { FerryError } from '../errors';
import type { ClaimedDelivery } from '../store/message-store';
import { toSinkDelivery } from './sink-delivery';
import type { SinkRuntime } from './sink-runtime';

/** A sink call in flight (see Dispatcher.inSink). */
export interface InSink {
  since: number;
  /** When its lease was last set (claimed or renewed). */
  leasedAt: number;
  /** The sink's deliveryTimeoutMs (0 = none). */
  limit: number;
  lostLogged: boolean;
  log: () => Logger;
  /**
   * Gives up on the call: its attempt fails (retryable) with FERRY_E_DELIVERY_TIMEOUT, or
   * FERRY_E_DELIVERY_ENGINE_STOPPING when the engine stops and the call outlasts the stop grace.
   */
  expire: (why?: 'timeout' | 'stopping') => void;
}

/**
 * The sink's call, given at most `deliveryTimeoutMs`: a call that never returns (a plugin
 * without timeouts, a server that stops answering mid-response) would otherwise hold its slot
 * and -- its lease renewed while it runs -- the later deliveries of its ordering key for good.
 * Past the limit the attempt fails (retryable, retried later), the delivery's signal is aborted
 * for the sink to stop, and whatever the call does afterwards is ignored.
 */
export function deliverWithin(rt: SinkRuntime, d: ClaimedDelivery, entry: InSink): Promise<void> {
  const delivery = toSinkDelivery(d);
  const call = rt.sink.deliver(delivery);
  const limit = entry.limit;
  const expired = new Promise<never>((_, reject) => {
    entry.expire = (why = 'timeout') => {
      const e =
        why === 'stopping'
          ? new FerryError(
              'DELIVERY_ENGINE_STOPPING',
              `sink "${rt.id}" did not finish the delivery before the engine stopped`,
              { kind: 'transient', retryable: true },
            )
          : new FerryError(
              'DELIVERY_TIMEOUT',
              `sink "${rt.id}" did not finish the delivery within ${limit} ms (deliveryTimeoutMs)`,
              { kind: 'transient', retryable: true },
            );
      // Settled before the sink hears of it: a sink that rejects as soon as its signal aborts must
      // not have its own error recorded instead (the race takes whichever settled first).
      reject(e);
      delivery.abort(e);
    };
  });
  // A call abandoned at the limit may still settle: nobody is waiting for it then.
  call.catch(() => undefined);
  return Promise.race([call, expired]);
}
