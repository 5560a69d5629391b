/**
 * Proof: an operator's hold on a sink holds on every instance sharing the store, and across a
 * restart. Two engines in this process share one PostgreSQL schema; the sink is held through
 * one of them, messages arrive at both, nothing is delivered while it is held (no attempts
 * either), and everything is once it is released through the other. Then the hold is set with
 * no engine running, and an engine started afterwards delivers nothing until it is released.
 */
import path from 'node:path';
import 'reflect-metadata';
import { Engine, PostgresMessageStore, silentLogger } from '@ferry/core';
import { CSV_TYPE, memorySinkDeliveries } from '../plugins/csv-patient';
import { PG_URL, pgSuite, sleep, waitFor } from './support';
import { pgRequirement, requires } from '../support/requires';

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

requires(pgRequirement())('a sink held by an operator, on two instances sharing PostgreSQL', () => {
  const { schema, engines } = pgSuite('ferry_hold');

  async function instance(): Promise<Engine> {
    const engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'postgres', url: PG_URL, schema },
        plugins: [{ package: pluginPath, config: { system: 'urn:oid:1.2.3.4' } }],
        sinks: { mem: { type: 'memory' } },
        routes: [{ id: 'all', to: ['mem'] }],
        processing: { pollIntervalMs: 50, transformWorkers: 0 },
        admin: { enabled: false },
      },
    });
    engines.push(engine);
    await engine.start();
    return engine;
  }

  const csv = (i: number) => ({ contentType: CSV_TYPE, body: Buffer.from(`H${i},Hold,Hana${i},1980-01-01,female`) });
  const delivered = () => (memorySinkDeliveries.get('mem') ?? []).length;

  it('holds on every instance until released on any, and across a restart', async () => {
    memorySinkDeliveries.delete('mem');
    const a = await instance();
    const b = await instance();
    const held = await a.holdSink('mem', { reason: 'EHR downtime' });
    expect(held).toMatchObject({ sinkId: 'mem', reason: 'EHR downtime' });
    // A at once; B at its next read of the holds (every second).
    expect(a.sinkViews()[0].hold).toMatchObject({ reason: 'EHR downtime' });
    await waitFor('B to see the hold', () => !!b.sinkViews()[0].hold, 3_000, 20);
    for (let i = 0; i < 10; i++) await (i % 2 ? a : b).submit('intake', [csv(i)]);
    await sleep(800);
    expect(delivered()).toBe(0);
    expect(await a.store.backlog()).toMatchObject({ unprocessedMessages: 0, deliveriesDue: 10, deliveriesLeased: 0 });
    expect((await a.store.stats()).deliveries).toEqual({ pending: 10 });
    expect(await b.releaseSink('mem')).toBe(true);
    await waitFor('every delivery', () => delivered() === 10, 10_000);
    await waitFor('A to see the release', () => !a.sinkViews()[0].hold, 3_000, 20);
    for (const e of engines.splice(0)) await e.stop();

    // Held while no engine runs: an engine started afterwards reads it before its first claim.
    const store = new PostgresMessageStore({ url: PG_URL, schema, logger: silentLogger() });
    await store.open();
    await store.holdSink('mem', { reason: 'still down' });
    await store.close();
    const c = await instance();
    await c.submit('intake', [csv(10), csv(11)]);
    await sleep(800);
    expect(delivered()).toBe(10);
    expect(c.sinkViews()[0].hold).toMatchObject({ reason: 'still down' });
    await c.releaseSink('mem');
    await waitFor('the last two', () => delivered() === 12, 10_000);
    // The sink has been called; its outcome is recorded just after (a read at once can see it pending).
    await waitFor('the outcomes recorded', async () => (await c.store.stats()).deliveries.delivered === 12, 5_000, 20);
    expect((await c.store.stats()).deliveries).toEqual({ delivered: 12 });
  }, 60_000);
});
