/**
 * Proof: a delivery's lease is renewed while its sink call runs, and when an instance loses it
 * anyway -- cut off from the database for longer than the lease, so it cannot renew -- the
 * instance that takes the delivery over keeps its outcome: the first instance's late report does
 * not overwrite it. Two engines in this process share one PostgreSQL schema; instance A reaches
 * it through a TCP proxy that is cut while A's slow sink call runs (it then refuses the message
 * permanently); instance B delivers the message at once once A's lease has run out. Before the
 * outcome was fenced by the lease, A's late "dead" turned B's delivered message into a dead letter.
 */
import path from 'node:path';
import { Writable } from 'node:stream';
import 'reflect-metadata';
import { createLogger, Engine } from '@ferry/core';
import { CSV_TYPE, memorySinkDeliveries } from '../plugins/csv-patient';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';
import { PG_URL, pgSuite, waitFor } from './support';
import { pgRequirement, requires } from '../support/requires';

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

requires(pgRequirement())('a delivery taken over by another instance after its lease ran out', () => {
  const { schema, engines } = pgSuite('ferry_lease');

  async function instance(url: string, sink: Record<string, unknown>, lines: string[]): Promise<Engine> {
    const logger = createLogger(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(...chunk.toString().split('\n').filter(Boolean));
          cb();
        },
      }),
    );
    const engine = await Engine.create({
      logger,
      config: {
        store: { kind: 'postgres', url, schema },
        plugins: [{ package: pluginPath, config: { system: 'urn:oid:1.2.3.4' } }],
        // One delivery at a time: A does not claim its own expired delivery a second time.
        sinks: { mem: { type: 'memory', concurrency: 1, ...sink } },
        routes: [{ id: 'all', to: ['mem'] }],
        processing: { pollIntervalMs: 50, leaseMs: 1000, transformWorkers: 0 },
        admin: { enabled: false },
      },
    });
    engines.push(engine);
    await engine.start();
    return engine;
  }

  it('while both instances are healthy, a sink call longer than the lease is not taken over', async () => {
    memorySinkDeliveries.delete('mem');
    const linesA: string[] = [];
    const linesB: string[] = [];
    try {
      const a = await instance(PG_URL, { delayMs: 2500 }, linesA);
      const [r] = await a.submit('intake', [
        { contentType: CSV_TYPE, body: Buffer.from('L200,Roe,Rita,1981-06-02,female') },
      ]);
      await waitFor('A to start delivering', async () => (await a.store.backlog()).deliveriesLeased === 1, 10_000, 10);
      const b = await instance(PG_URL, {}, linesB);
      await waitFor('the delivery', async () => (await b.store.getMessage(r.id))?.status === 'delivered', 10_000);
      expect(memorySinkDeliveries.get('mem')).toHaveLength(1);
      expect((await b.store.deliveries(r.id))[0]).toMatchObject({ status: 'delivered', attempts: 1 });
      const warned = [...linesA, ...linesB]
        .map((l) => JSON.parse(l))
        .filter((l) => l.level === 'warn' || l.level === 'error');
      expect(warned).toEqual([]);
    } finally {
      for (const e of engines.splice(0)) await e.stop().catch(() => undefined);
    }
  }, 30_000);

  it("keeps the taking-over instance's outcome; the late one is dropped and logged", async () => {
    memorySinkDeliveries.delete('mem');
    const upstream = new globalThis.URL(PG_URL);
    const proxy: TcpProxy = await startTcpProxy(upstream.hostname, Number(upstream.port || 5432));
    try {
      const linesA: string[] = [];
      const linesB: string[] = [];
      const said = (lines: string[], start: string) =>
        lines.map((l) => JSON.parse(l)).find((l) => l.message.startsWith(start));
      // A: through the proxy; takes 4 s over the delivery (the lease is 1 s), then refuses it permanently.
      const viaProxy = `postgres://${upstream.username || 'postgres'}@127.0.0.1:${proxy.port}${upstream.pathname}`;
      const a = await instance(viaProxy, { delayMs: 4000, failFirst: 1, failMode: 'permanent' }, linesA);
      const [r] = await a.submit('intake', [
        { contentType: CSV_TYPE, body: Buffer.from('L100,Doe,Jane,1980-05-01,female') },
      ]);
      await waitFor('A to start delivering', async () => (await a.store.backlog()).deliveriesLeased === 1, 10_000, 10);
      // A loses the database: it cannot renew its lease.
      await proxy.cut();
      // B: delivers at once, after A's lease has run out.
      const b = await instance(PG_URL, {}, linesB);
      await waitFor('B to deliver', async () => (await b.store.getMessage(r.id))?.status === 'delivered', 10_000);
      await proxy.restore();
      // A learns it lost the lease at its next renewal, and its late "dead" arrives after B's "delivered".
      await waitFor('A to report its late outcome', () => !!said(linesA, 'delivery outcome not recorded'), 15_000);
      expect(said(linesA, 'delivery lease lost')).toMatchObject({ level: 'warn', messageId: r.id });
      expect(said(linesA, 'delivery outcome not recorded')).toMatchObject({
        level: 'warn',
        outcome: 'dead',
        currentStatus: 'delivered',
        messageId: r.id,
      });

      const message = await b.store.getMessage(r.id);
      expect(message?.status).toBe('delivered');
      const [d] = await b.store.deliveries(r.id);
      expect(d).toMatchObject({ status: 'delivered', attempts: 1 });
      const events = (await b.store.events(r.id)).map((e) => e.status);
      expect(events).not.toContain('delivery:dead');
      expect(events).not.toContain('dead');
      expect(memorySinkDeliveries.get('mem')).toHaveLength(1);
    } finally {
      for (const e of engines.splice(0)) await e.stop().catch(() => undefined);
      await proxy.close();
    }
  }, 40_000);
});
