import type { Logger } from 'winston';
import type { RetryPolicy } from '../config/engine.schema';
import type { MessageSink } from '../plugin/api';
import type { SinkHold } from '../store/message-store';
import type { CircuitPolicy, CircuitView } from './circuit';

export interface SinkRuntime {
  id: string;
  sink: MessageSink;
  retry: RetryPolicy;
  logger: Logger;
  /** Deliveries to this sink in flight at once. */
  concurrency: number;
  /** Longest one attempt may take before it counts as failed (0 = no limit). */
  deliveryTimeoutMs?: number;
  /** When to pause the sink's deliveries (absent or failureThreshold 0: never). */
  circuit?: CircuitPolicy;
}

/** A sink as the admin API shows it. */
export interface SinkView {
  id: string;
  concurrency: number;
  /** This instance's deliveries to it under way. */
  inFlight: number;
  circuit: CircuitView | { state: 'closed'; disabled: true };
  /** Held by an operator (as last read from the store). */
  hold?: Omit<SinkHold, 'sinkId'>;
}
