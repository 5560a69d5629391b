import { bundleFor, msg } from './conformance/helpers';
import type { ClaimedDelivery, MessageStore } from '../message-store';

/**
 * What the focused claim tests of both stores (sqlite.store.claims.test.ts, postgres.store.claims.test.ts)
 * build on: messages claimed and routed, the claimed deliveries by name, and the outcomes they record.
 */

/**
 * Inserts one message per key, claims and routes them (one delivery per sink, bundle tagged with
 * message and sink); returns the message ids. Claims the oldest unleased messages: messages a test
 * keeps unrouted must be leased to someone else first.
 */
export async function routed(
  store: MessageStore,
  keys: string[],
  opts: { sinks?: string[]; strict?: boolean } = {},
): Promise<string[]> {
  const ids = (await store.insert(keys.map(() => msg()))).map((r) => r.id);
  expect((await store.claimReceived('proc', ids.length, 60_000)).map((m) => m.id)).toEqual(ids);
  const r = await store.recordProcessed(
    ids.map((id, i) => ({
      id,
      transformed: { bundleJson: JSON.stringify(bundleFor(id)), orderingKey: keys[i] },
      outcome: {
        status: 'routed' as const,
        deliveries: (opts.sinks ?? ['s1']).map((sinkId) => ({
          routeId: 'r1',
          sinkId,
          bundleJson: JSON.stringify(bundleFor(`${id}:${sinkId}`)),
          strictOrder: opts.strict ?? true,
        })),
      },
    })),
  );
  expect(r.failed).toEqual([]);
  return ids;
}

/** "<index of its message in ids>:<sink>" per claimed delivery. */
export const names = (ds: ClaimedDelivery[], ids: string[]) => ds.map((d) => `${ids.indexOf(d.messageId)}:${d.sinkId}`);

/** A retryable failure whose next attempt is at `at`. */
export const retryAt = (at: number) => ({
  status: 'failed' as const,
  error: { code: 'FERRY_E_DELIVERY_HTTP_503', message: '503', retryable: true },
  nextAttemptAt: new Date(at),
});

export const dead = { status: 'dead' as const, error: { code: 'E', message: 'e', retryable: false } };
