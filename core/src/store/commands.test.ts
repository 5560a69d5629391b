import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pruneCommand } from '../cli/commands/prune.command';
import { replayCommand } from '../cli/commands/replay.command';
import { silentLogger } from '../logging/logger';
import { isEmptyFilter, replayFilter, replayMessages } from './admin-ops';
import { SqliteMessageStore } from './sqlite.store';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-store-cmd-'));
const dbFile = path.join(dir, 'ferry.db');
const configFile = path.join(dir, 'ferry.yaml');
fs.writeFileSync(
  configFile,
  `store:\n  kind: sqlite\n  path: ${dbFile}\n  retention: { deliveredDays: 7, deadDays: 30 }\nadmin: { enabled: false }\n`,
);

const bundle = { resourceType: 'Bundle' as const, type: 'collection' as const };
let out: string[] = [];
let spy: jest.SpyInstance;

beforeEach(() => {
  out = [];
  spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out.push(String(s));
    return true;
  });
});
afterEach(() => spy.mockRestore());
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Two messages: one dead on sink s1, one delivered (updated 10 days ago). */
async function seed(): Promise<{ dead: string; ok: string }> {
  let clock = Date.now() - 10 * 86_400_000;
  const s = new SqliteMessageStore({ path: dbFile, logger: silentLogger(), now: () => clock });
  await s.open();
  const [a, b] = await s.insert([
    { sourceId: 'feed', contentType: 'application/hl7-v2', body: Buffer.from('a'), headers: { controlId: 'A' } },
    { sourceId: 'feed', contentType: 'application/hl7-v2', body: Buffer.from('b'), headers: { controlId: 'B' } },
  ]);
  await s.claimReceived('p', 10, 60_000);
  for (const id of [a.id, b.id]) {
    await s.recordTransformed(id, bundle, id);
    await s.recordRouting(id, {
      status: 'routed',
      deliveries: [{ routeId: 'r', sinkId: 's1', bundle, strictOrder: true }],
    });
  }
  const ds = await s.claimDeliveries('w', 10, 60_000, new Date(clock));
  await s.completeDelivery(ds.find((d) => d.messageId === a.id)!.id, {
    status: 'dead',
    error: { code: 'X', message: 'x', retryable: false },
  });
  await s.completeDelivery(ds.find((d) => d.messageId === b.id)!.id, { status: 'delivered' });
  clock = Date.now();
  await s.close();
  return { dead: a.id, ok: b.id };
}

describe('replay filter', () => {
  it('parses lists, times and limits, and names the bad field', () => {
    expect(
      replayFilter({
        status: 'dead,failed',
        source: 'x',
        since: '2025-01-01T00:00:00Z',
        until: '1700000000000',
        limit: '5',
      }),
    ).toEqual({
      status: ['dead', 'failed'],
      sourceId: 'x',
      since: new Date('2025-01-01T00:00:00Z'),
      until: new Date(1700000000000),
      limit: 5,
    });
    expect(() => replayFilter({ status: 'deadd' })).toThrow(/status: unknown message status deadd/);
    expect(() => replayFilter({ deliveryStatus: ['nope'] })).toThrow(/deliveryStatus/);
    expect(() => replayFilter({ since: 'yesterday' })).toThrow(/since: not a time/);
    expect(() => replayFilter({ limit: '-1' })).toThrow(/limit/);
    expect(isEmptyFilter(replayFilter({}))).toBe(true);
    // The message browser's filters (the console's "replay all matching")
    expect(replayFilter({ type: ' ADT^A0* ', controlId: 'C1' })).toEqual({ messageType: 'ADT^A0*', controlId: 'C1' });
    expect(isEmptyFilter(replayFilter({ type: 'ADT^A0*' }))).toBe(false);
    expect(isEmptyFilter(replayFilter({ type: ' ' }))).toBe(true);
    expect(() => replayFilter({ controlId: 'x'.repeat(101) })).toThrow(/controlId: at most 100/);
  });

  it('replays and retries by control id and message type pattern, dry run first', async () => {
    const { dead, ok } = await seed();
    const s = new SqliteMessageStore({ path: dbFile, logger: silentLogger() });
    await s.open();
    try {
      expect(await replayMessages(s, { controlId: 'A', mode: 'redeliver', dryRun: true })).toMatchObject({
        count: 1,
        dryRun: true,
      });
      expect(await replayMessages(s, { controlId: 'A', dryRun: true })).toMatchObject({ ids: [dead], count: 1 });
      expect(await replayMessages(s, { type: 'ZZZ*', dryRun: true })).toMatchObject({ count: 0 });
      expect(await replayMessages(s, { type: 'ZZZ*' })).toMatchObject({ count: 0 });
      expect(await replayMessages(s, { controlId: 'A', mode: 'redeliver' })).toMatchObject({ count: 1, dryRun: false });
      expect((await s.deliveries(dead))[0].status).toBe('pending');
      expect((await s.deliveries(ok))[0].status).toBe('delivered');
    } finally {
      await s.close();
      fs.rmSync(dbFile, { force: true });
    }
  });

  it('refuses to replay everything without a filter', async () => {
    const s = new SqliteMessageStore({ path: ':memory:', logger: silentLogger() });
    await s.open();
    await expect(replayMessages(s, {})).rejects.toMatchObject({ kind: 'input', code: 'FERRY_E_INPUT_REPLAY_FILTER' });
    await expect(replayMessages(s, { status: 'dead', mode: 'bogus' })).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_REPLAY_MODE',
    });
    await s.close();
  });
});

describe('ferry replay / ferry prune', () => {
  const ctx = { configFile, logger: silentLogger(), transforms: [] };

  it('replay --dry-run lists, replay re-queues (reprocess), --mode redeliver retries deliveries', async () => {
    const { dead, ok } = await seed();
    expect(
      await replayCommand.run([], { config: configFile, deliveryStatus: 'dead', dryRun: true, mode: 'reprocess' }, ctx),
    ).toBe(0);
    expect(out.join('')).toBe(`would replay 1 message (reprocess)\n${dead}\n`);
    out = [];
    expect(
      await replayCommand.run(
        [],
        { config: configFile, sink: 's1', deliveryStatus: 'dead', mode: 'redeliver', json: true },
        ctx,
      ),
    ).toBe(0);
    const r = JSON.parse(out.join(''));
    expect(r).toMatchObject({ mode: 'redeliver', count: 1, dryRun: false });
    out = [];
    expect(await replayCommand.run([ok], { config: configFile, mode: 'reprocess' }, ctx)).toBe(0);
    expect(out.join('')).toBe(`replayed 1 message (reprocess)\n${ok}\n`);
    const s = new SqliteMessageStore({ path: dbFile, logger: silentLogger() });
    await s.open();
    expect((await s.getMessage(ok))!.status).toBe('received');
    expect((await s.getMessage(dead))!.status).toBe('routed');
    expect((await s.deliveries(dead))[0].status).toBe('pending');
    await s.close();
    fs.rmSync(dbFile, { force: true });
  });

  it('prune uses the config retention by default and options over it', async () => {
    const { dead, ok } = await seed();
    expect(await pruneCommand.run([], { config: configFile }, ctx)).toBe(0);
    expect(out.join('')).toMatch(/^pruned bodies of 1 message\(s\) \(delivered > 7 d, dead > 30 d\)/);
    out = [];
    expect(await pruneCommand.run([], { config: configFile, deadDays: '1', json: true }, ctx)).toBe(0);
    expect(JSON.parse(out.join(''))).toMatchObject({ messages: 1, deadDays: 1, deliveredDays: 7 });
    const s = new SqliteMessageStore({ path: dbFile, logger: silentLogger() });
    await s.open();
    expect((await s.getMessage(ok, { body: true }))!.body).toBeUndefined();
    expect((await s.getMessage(dead, { body: true }))!.body).toBeUndefined();
    await s.close();
  });
});
