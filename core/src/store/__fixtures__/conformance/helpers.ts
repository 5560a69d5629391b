/** What the parts of the store conformance suite share: the harness, sample messages, helpers. */
import type { Bundle } from '@medplum/fhirtypes';
import type { MessageStore, NewMessage } from '../../message-store';

export interface StoreHarness {
  /** A new, empty, unopened store. `groupCommit` as in the config; `now` its clock (a fake one in tests). */
  make(opts?: { groupCommit?: { maxBatch?: number }; now?: () => number }): MessageStore;
  /** A second store on the same database (another engine process). */
  sibling?(store: MessageStore): MessageStore;
  /** Number of insert transactions committed so far by the store (group-commit check). */
  commits?(store: MessageStore): number;
  /**
   * Runs one SQL statement on the store's database behind its back (table names unqualified):
   * rows as an earlier schema version left them. Tests that need it are skipped without it.
   */
  rawSql?(store: MessageStore, sql: string): Promise<void>;
  /** The store's own bookkeeping checked (an index of its own kept exact); throws when it is not. */
  checkInvariants?(store: MessageStore, when: string): Promise<void>;
}

export const bundleFor = (tag: string): Bundle => ({ resourceType: 'Bundle', type: 'collection', id: tag, entry: [] });

let counter = 0;
export function msg(over: Partial<NewMessage> = {}, controlId?: string): NewMessage {
  counter++;
  return {
    sourceId: 'src-a',
    contentType: 'application/hl7-v2',
    body: Buffer.from(`MSH|^~\\&|APP|FAC|||20250101||ADT^A01|${controlId ?? `C${counter}`}|P|2.5\r`),
    headers: {
      messageType: 'ADT^A01',
      controlId: controlId ?? `C${counter}`,
      sendingApplication: 'APP',
      sendingFacility: 'FAC',
    },
    ...over,
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Counts turns of the event loop while `work` runs: an operation done in one synchronous go (a
 * SQLite transaction) allows one or none; one done in steps with the loop free between, more.
 */
export async function loopTurnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let busy = true;
  const spin = () => {
    turns++;
    if (busy) setImmediate(spin);
  };
  setImmediate(spin);
  try {
    return { result: await work(), turns };
  } finally {
    busy = false;
  }
}

/** Insert, transform and route one message per key to one sink; returns the message ids. */
export async function routed(
  store: MessageStore,
  keys: string[],
  opts: { sink?: string; strict?: boolean; sinks?: string[] } = {},
): Promise<string[]> {
  const res = await store.insert(keys.map(() => msg()));
  const ids = res.map((r) => r.id);
  const claimed = await store.claimReceived('proc', ids.length, 60_000);
  expect(claimed.map((m) => m.id)).toEqual(ids);
  for (let i = 0; i < ids.length; i++) {
    await store.recordTransformed(ids[i], bundleFor(ids[i]), keys[i]);
    const sinks = opts.sinks ?? [opts.sink ?? 'sink-1'];
    await store.recordRouting(ids[i], {
      status: 'routed',
      deliveries: sinks.map((s) => ({
        routeId: 'route-1',
        sinkId: s,
        bundle: bundleFor(ids[i]),
        strictOrder: opts.strict ?? true,
      })),
    });
  }
  return ids;
}

/** One part of the suite: the harness, the store of the running test, stores to close after it. */
export interface ConformanceContext {
  name: string;
  h: StoreHarness;
  /** The running test's store (opened before it, closed after it). */
  store(): MessageStore;
  /** Other stores a test opened (siblings): closed after it. */
  extra: MessageStore[];
}
