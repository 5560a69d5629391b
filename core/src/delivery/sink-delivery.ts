import type { Delivery } from '../plugin/api';
import type { ClaimedDelivery } from '../store/message-store';
import { lazyJson } from '../util/lazy-json';

/**
 * What a sink is handed. Its `signal` is made only when a sink reads it (an AbortController costs
 * ~5 us on Node 20: too much for every delivery of a sink that never looks).
 */
class SinkDelivery {
  declare bundle: Delivery['bundle'];
  bundleJson?: string;
  private controller?: AbortController;
  private reason?: unknown;
  constructor(
    readonly deliveryId: string,
    readonly attempt: number,
    readonly routeId: string,
    readonly message: Delivery['message'],
  ) {}

  get signal(): AbortSignal {
    if (this.reason !== undefined) return AbortSignal.abort(this.reason);
    return (this.controller ??= new AbortController()).signal;
  }

  /** The engine gave up on this attempt (deliveryTimeoutMs). */
  abort(reason: unknown): void {
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

/** What a sink is handed: the bundle stays JSON text until the sink reads `bundle`. */
export function toSinkDelivery(d: ClaimedDelivery): Delivery & { abort(reason: unknown): void } {
  const out = new SinkDelivery(d.id, d.attempts + 1, d.routeId, d.message);
  if (typeof d.bundleJson !== 'string') {
    out.bundle = d.bundle;
    return out;
  }
  out.bundleJson = d.bundleJson;
  return lazyJson(out, 'bundle', d.bundleJson);
}
