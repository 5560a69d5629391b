import { MllpSource } from '../../sources/mllp.source';
import type { MllpSourceInput } from '../mllp.schema';
import { RawClient, storeCtx, type RecordingCtx } from './support';

/**
 * Sources on a real engine submit and SQLite store (see storeCtx), and raw clients, for the
 * mllp.source.*.test.ts files; `close()` (in afterAll) stops and removes everything started.
 */
export function sourceHarness() {
  const sources: MllpSource[] = [];
  const clients: RawClient[] = [];
  const ctxs: RecordingCtx[] = [];
  return {
    clients,
    async startSource(cfg: MllpSourceInput = {}): Promise<{ src: MllpSource; ctx: RecordingCtx; port: number }> {
      const ctx = await storeCtx(cfg);
      ctxs.push(ctx);
      const src = new MllpSource(ctx);
      await src.start();
      sources.push(src);
      return { src, ctx, port: src.address()!.port };
    },
    async connect(port: number, tlsOpts?: Parameters<typeof RawClient.connect>[1]): Promise<RawClient> {
      const c = await RawClient.connect(port, tlsOpts);
      clients.push(c);
      return c;
    },
    async close(): Promise<void> {
      for (const c of clients) c.close();
      for (const s of sources) await s.stop();
      for (const x of ctxs) await x.close();
    },
  };
}
