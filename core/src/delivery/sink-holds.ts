import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import { errorFields } from '../logging/logger';
import { whileStoreDown, type MessageStore, type SinkHold } from '../store/message-store';
import type { SinkRuntime } from './sink-runtime';

/** How often the dispatcher reads the sink holds from the store (another instance or a `ferry` command may set them). */
const HOLDS_READ_MS = 1000;

/** The sinks an operator holds, as the dispatcher last read them from the store. */
export class SinkHolds {
  /** Sinks an operator holds (read from the store every HOLDS_READ_MS, and at once after a change through this engine). */
  private holds = new Map<string, SinkHold>();
  private holdsReadAt = 0;
  private holdsRead?: Promise<void>;

  constructor(
    private readonly store: MessageStore,
    private readonly sinks: Map<string, SinkRuntime>,
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    /** Wakes the dispatcher's loop (a sink released). */
    private readonly kick: () => void,
  ) {}

  has(sinkId: string): boolean {
    return this.holds.has(sinkId);
  }

  get(sinkId: string): SinkHold | undefined {
    return this.holds.get(sinkId);
  }

  values(): IterableIterator<SinkHold> {
    return this.holds.values();
  }

  /**
   * Reads the holds in force from the store, at most every HOLDS_READ_MS unless `now` (after a
   * hold or release through this engine). A failed read keeps the last known holds.
   */
  async refresh(now = false): Promise<void> {
    // One read at a time: a forced one waits for the read under way (it may predate the change) and reads again.
    if (this.holdsRead) {
      await this.holdsRead;
      if (!now) return;
    }
    if (!now && Date.now() - this.holdsReadAt < HOLDS_READ_MS) return;
    this.holdsReadAt = Date.now();
    this.holdsRead = this.readHolds().finally(() => (this.holdsRead = undefined));
    return this.holdsRead;
  }

  private async readHolds(): Promise<void> {
    let list: SinkHold[];
    try {
      list = await this.store.sinkHolds();
    } catch (e) {
      this.logger.log(whileStoreDown(this.store, e) ? 'debug' : 'warn', 'reading sink holds failed', errorFields(e));
      return;
    }
    const next = new Map(list.filter((h) => this.sinks.has(h.sinkId)).map((h) => [h.sinkId, h]));
    for (const [id, h] of next)
      if (!this.holds.has(id)) {
        this.metrics.sinkHeld.set({ sink: id }, 1);
        (this.sinks.get(id)?.logger ?? this.logger).info('sink held: its deliveries wait until it is released', {
          until: h.until?.toISOString(),
          reason: h.reason,
        });
      }
    for (const id of this.holds.keys())
      if (!next.has(id)) {
        this.metrics.sinkHeld.set({ sink: id }, 0);
        (this.sinks.get(id)?.logger ?? this.logger).info('sink released: deliveries resume');
        this.kick();
      }
    this.holds = next;
  }

  /** Held by an operator now (a hold whose end has passed is over, whether or not the store was read since). */
  isHeld(sinkId: string, now = Date.now()): boolean {
    const h = this.holds.get(sinkId);
    return !!h && (!h.until || h.until.getTime() > now);
  }
}
