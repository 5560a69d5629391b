/** What the dispatcher's tests share: messages stored and routed to a sink, ready to be claimed. */
import type { MessageStore } from '../../store/message-store';

const bundleJson = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });

/** `count` messages routed to `sinkId`, each on its own ordering key unless `key` is given. */
export async function routed(store: MessageStore, count: number, sinkId = 's', key?: string): Promise<string[]> {
  const ids = (
    await store.insert(
      Array.from({ length: count }, (_, i) => ({
        sourceId: 'src',
        contentType: 'text/plain',
        body: Buffer.from(`m${i}`),
      })),
    )
  ).map((r) => r.id);
  await store.claimReceived('p', count, 60_000);
  await store.recordProcessed(
    ids.map((id) => ({
      id,
      transformed: { bundleJson, orderingKey: key ?? id },
      outcome: {
        status: 'routed' as const,
        deliveries: [{ routeId: 'r', sinkId, strictOrder: true, unchanged: true }],
      },
    })),
  );
  return ids;
}
