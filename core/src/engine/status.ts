/**
 * What the engine reports about itself: each running source's view, readiness (store and sources), the
 * store's state for the metrics scrape, and whether work is left (`Engine.waitForIdle`). No PHI.
 */
import { FerryError } from '../errors';
import type { MessageStore } from '../store/message-store';
import type { SourceRuntime } from './references';

/** Each running source: type, readiness, its numeric stats and its own state view (`describe()`), no PHI. */
export function sourceViews(
  sources: readonly SourceRuntime[],
): { id: string; type: string; ready: boolean; stats?: object; state?: object }[] {
  return sources.map((s) => ({
    id: s.id,
    type: s.type,
    ready: s.source.isReady ? s.source.isReady() : true,
    stats: s.source.stats?.(),
    state: s.source.describe?.(),
  }));
}

/** Ready: engine running, store open and reachable, and every source accepting. */
export function readiness(
  running: boolean,
  store: MessageStore,
  sources: readonly SourceRuntime[],
): { ready: boolean; store: boolean; sources: Record<string, boolean> } {
  const bySource: Record<string, boolean> = {};
  for (const s of sources) bySource[s.id] = s.source.isReady ? s.source.isReady() : true;
  const storeReady = store.isOpen() && (store.reachable?.() ?? true);
  return {
    ready: running && storeReady && Object.values(bySource).every(Boolean),
    store: storeReady,
    sources: bySource,
  };
}

/** The store gauges' reading (`EngineMetrics.storeState`): backlog and message counts, when reachable. */
export async function storeState(store: MessageStore) {
  // Not while the store is known to be unreachable: a scrape must not wait out a query timeout.
  if (!store.isOpen() || store.reachable?.() === false) return { reachable: false };
  try {
    const [backlog, messages] = await Promise.all([
      store.backlog(),
      store.countMessages(['received', 'transformed', 'routed', 'failed', 'dead']),
    ]);
    return { reachable: true, backlog, messages };
  } catch {
    return { reachable: false };
  }
}

/**
 * Resolves when nothing is left to do now: no message waiting to be processed, no delivery pending or
 * due, nothing in flight (`inFlight`: the processor's and dispatcher's work under way). Deliveries
 * waiting for a later retry count only with `includeScheduled`.
 */
export async function waitForIdle(
  store: MessageStore,
  inFlight: () => number,
  timeoutMs: number,
  opts: { includeScheduled?: boolean },
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await store.backlog();
    const busy =
      b.unprocessedMessages +
        b.deliveriesDue +
        b.deliveriesLeased +
        (opts.includeScheduled ? b.deliveriesScheduled : 0) +
        inFlight() >
      0;
    if (!busy) return;
    if (Date.now() > deadline)
      throw new FerryError('INTERNAL_IDLE_TIMEOUT', `engine not idle after ${timeoutMs} ms: ${JSON.stringify(b)}`, {
        kind: 'internal',
      });
    await new Promise((r) => setTimeout(r, 20));
  }
}
