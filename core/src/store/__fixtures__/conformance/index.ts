/**
 * The behaviour every MessageStore must have, as a jest suite. `sqlite.store.test.ts` and
 * `postgres.store.test.ts` run it against a fresh store each; a third-party store can too.
 * One file per concern; each adds its describe blocks to the one suite.
 */
import type { MessageStore } from '../../message-store';
import { adminRecordsConformance } from './admin-records';
import { deliveriesConformance } from './deliveries';
import { messagesConformance } from './messages';
import { orderingModelConformance } from './ordering-model';
import { processingConformance } from './processing';
import { queriesConformance } from './queries';
import { replayConformance } from './replay';
import type { StoreHarness } from './helpers';

export { loopTurnsDuring, msg, type StoreHarness } from './helpers';
export { duplicatesConformance } from './messages';

export function storeConformance(name: string, h: StoreHarness): void {
  describe(`MessageStore conformance: ${name}`, () => {
    let store: MessageStore;
    const extra: MessageStore[] = [];

    beforeEach(async () => {
      store = h.make();
      await store.open();
    });
    afterEach(async () => {
      for (const s of extra.splice(0)) await s.close();
      await store.close();
    });

    const c = { name, h, extra, store: () => store };
    messagesConformance(c);
    processingConformance(c);
    deliveriesConformance(c);
    replayConformance(c);
    orderingModelConformance(c);
    adminRecordsConformance(c);
    queriesConformance(c);
  });
}
