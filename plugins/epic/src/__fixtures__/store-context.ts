/** A SourceContext over a real message store (what the engine gives a source), with a kill switch. */
import { silentLogger, type InboundMessage, type MessageStore, type SourceContext } from '@ferry/core';

export function storeContext<C>(store: MessageStore, id: string, config: C, opts: { killOnSubmit?: number; duplicates?: 'accept' | 'ignore' | 'off' } = {}) {
  const abort = new AbortController();
  let submits = 0;
  const ctx: SourceContext<C> = {
    id,
    config,
    logger: silentLogger(),
    signal: abort.signal,
    async submit(messages: InboundMessage[], o) {
      submits++;
      if (opts.killOnSubmit !== undefined && submits >= opts.killOnSubmit) {
        // The process dies: this batch is never committed and nothing after it runs.
        abort.abort();
        throw new Error('killed');
      }
      return store.insert(
        messages.map((m) => ({ ...m, sourceId: id })),
        { checkpoint: o?.checkpoint, duplicates: opts.duplicates === 'off' ? undefined : opts.duplicates === 'ignore' ? { policy: 'ignore', windowMs: 86_400_000 } : { policy: 'accept', windowMs: 0 } },
      );
    },
    getCheckpoint: (key) => store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => store.setCheckpoint(id, key, value),
    extractHeaders: () => ({}),
    split: (_ct, body) => [body],
  };
  return { ctx, abort, submits: () => submits };
}
