import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'winston';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import type { MessageStore } from '../store/message-store';
import { SqliteMessageStore } from '../store/sqlite.store';
import { LeaseRenewal } from './lease-renewal';
import type { InSink } from './sink-call';
import { capture } from './__fixtures__/capture';
import { routed } from './__fixtures__/routed';
import { storeWith } from './__fixtures__/store-with';

/**
 * Lease renewal of the sink calls under way, on a real SQLite store, with the sweep's time given
 * (`renewLeases(now, sweepMs)`): which leases are renewed (a third of the lease since the last,
 * less one sweep), a lease found taken over logged once per call and not counted as renewed, one
 * renewal at a time, and a failed renewal logged (at debug while the store is down).
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lease-renewal-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const open: SqliteMessageStore[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

const flushed = () => new Promise((r) => setImmediate(r));

/** A store with `count` deliveries claimed by `me` (lease 300 ms), and a call under way for each, leased at `leasedAt`. */
async function calls(count: number, leasedAt: number[], logger: Logger) {
  const store = new SqliteMessageStore({ path: path.join(dir, `l${++n}.db`), logger: silentLogger() });
  await store.open();
  open.push(store);
  await routed(store, count);
  const ids = (await store.claimDeliveries('me', count, 300)).map((d) => d.id);
  const inSink = new Map<string, InSink>(
    ids.map((id, i) => [
      id,
      {
        since: Date.now() - 1000,
        leasedAt: leasedAt[i],
        limit: 0,
        lostLogged: false,
        log: () => logger.child({ deliveryId: id }),
        expire: () => undefined,
      },
    ]),
  );
  return { store, ids, inSink };
}

type Renewal = { ids: string[]; owner: string; leaseMs: number };
function watched(store: MessageStore, during?: () => void | Promise<void>) {
  const renewals: Renewal[] = [];
  const s = storeWith(store, {
    renewDeliveryLeases: async (owner, ids, leaseMs) => {
      renewals.push({ owner, ids, leaseMs });
      await during?.();
      return store.renewDeliveryLeases(owner, ids, leaseMs);
    },
  });
  return { s, renewals };
}

describe('LeaseRenewal', () => {
  it('renews the leases of the calls leased a third of the lease ago less one sweep (exactly then too), not the others', async () => {
    const { logs, logger } = capture();
    const now = 10_000;
    // Lease 300 ms, sweep 10 ms: due from 90 ms after the last lease.
    const { store, ids, inSink } = await calls(3, [now - 90, now - 89, now - 300], logger);
    const { s, renewals } = watched(store);
    const r = new LeaseRenewal(s, logger, { owner: 'me', leaseMs: 300 }, inSink);
    await r.renewLeases(now, 10);
    expect(renewals).toEqual([{ owner: 'me', ids: [ids[0], ids[2]], leaseMs: 300 }]);
    expect(ids.map((id) => inSink.get(id)!.leasedAt)).toEqual([now, now - 89, now]);
    // Nothing due (89 ms since the last lease, and just renewed): no renewal asked for.
    await r.renewLeases(now, 10);
    expect(renewals).toHaveLength(1);
    await r.renewLeases(now + 1, 10);
    expect(renewals.map((x) => x.ids)).toEqual([[ids[0], ids[2]], [ids[1]]]);
    // Renewed in the store: another owner cannot claim them.
    expect(await store.claimDeliveries('other', 10, 300)).toEqual([]);
    expect(logs.filter((l) => l.level !== 'debug')).toEqual([]);
    // No call under way: nothing asked.
    const none = new LeaseRenewal(s, logger, { owner: 'me', leaseMs: 300 }, new Map());
    await none.renewLeases(now + 1000, 10);
    expect(renewals).toHaveLength(2);
  });

  it('a lease taken over meanwhile is logged once per call (not renewed: its time is kept); a call that ended during the renewal, not at all', async () => {
    const { logs, logger } = capture();
    const { store, ids, inSink } = await calls(3, [0, 0, 0], logger);
    // The leases of ids[1] and ids[2] run out and another instance takes them over.
    expect(await store.releaseDeliveryLeases('me', [ids[0]])).toBe(2);
    expect((await store.claimDeliveries('other', 10, 60_000)).map((d) => d.id).sort()).toEqual([ids[1], ids[2]].sort());
    // The call of ids[2] ends while the renewal is under way.
    const { s, renewals } = watched(store, () => void inSink.delete(ids[2]));
    const r = new LeaseRenewal(s, logger, { owner: 'me', leaseMs: 300 }, inSink);
    const before = Date.now();
    await r.renewLeases(1000, 10);
    expect(renewals).toEqual([{ owner: 'me', ids, leaseMs: 300 }]);
    expect(inSink.get(ids[0])!.leasedAt).toBe(1000);
    expect(inSink.get(ids[1])!.leasedAt).toBe(0);
    const lost = () => logs.filter((l) => l.message.startsWith('delivery lease lost while its sink call'));
    expect(lost()).toEqual([
      expect.objectContaining({ level: 'warn', deliveryId: ids[1], leaseMs: 300, inSinkMs: expect.any(Number) }),
    ]);
    expect(lost()[0].inSinkMs).toBeGreaterThanOrEqual(before - inSink.get(ids[1])!.since);
    expect(lost()[0].inSinkMs).toBeLessThanOrEqual(Date.now() - inSink.get(ids[1])!.since);
    // Renewed again (its time kept, it is due at once): still logged once.
    await r.renewLeases(1001, 10);
    expect(renewals.map((x) => x.ids)).toEqual([ids, [ids[1]]]);
    expect(lost()).toHaveLength(1);
    expect(logs.filter((l) => l.message.startsWith('renewing delivery leases failed'))).toEqual([]);
  });

  it('one renewal at a time: a sweep while one is under way asks for none; the next sweep after it does', async () => {
    const { logger } = capture();
    const { store, ids, inSink } = await calls(1, [0], logger);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const { s, renewals } = watched(store, () => held);
    const r = new LeaseRenewal(s, logger, { owner: 'me', leaseMs: 300 }, inSink);
    const first = r.renewLeases(1000, 10);
    await flushed();
    await r.renewLeases(2000, 10);
    expect(renewals).toHaveLength(1);
    release();
    await first;
    expect(inSink.get(ids[0])!.leasedAt).toBe(1000);
    await r.renewLeases(2000, 10);
    expect(renewals).toHaveLength(2);
    expect(inSink.get(ids[0])!.leasedAt).toBe(2000);
  });

  it('a failed renewal is logged (a warning; debug while the store is down) and the next sweep tries again', async () => {
    const { logs, logger } = capture();
    const { store, inSink } = await calls(2, [0, 0], logger);
    let down = false;
    let tries = 0;
    const s = storeWith(store, {
      renewDeliveryLeases: () => {
        tries++;
        return Promise.reject(
          new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient', retryable: true }),
        );
      },
      reachable: () => !down,
    });
    const r = new LeaseRenewal(s, logger, { owner: 'me', leaseMs: 300 }, inSink);
    await r.renewLeases(1000, 10);
    down = true;
    await r.renewLeases(1000, 10);
    expect(tries).toBe(2);
    expect(logs.filter((l) => l.message === 'renewing delivery leases failed')).toEqual([
      expect.objectContaining({ level: 'warn', deliveries: 2, errorCode: 'FERRY_E_TRANSIENT_STORE_CONNECTION' }),
      expect.objectContaining({ level: 'debug', deliveries: 2, errorCode: 'FERRY_E_TRANSIENT_STORE_CONNECTION' }),
    ]);
    // Not renewed: their times are kept (due again at the next sweep).
    expect([...inSink.values()].map((x) => x.leasedAt)).toEqual([0, 0]);
  });
});
