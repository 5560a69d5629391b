import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import { SqliteMessageStore } from './sqlite.store';
import { WalSync } from './wal-sync';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-wal-sync-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('WalSync (the durable commits’ fdatasync of the WAL)', () => {
  it('syncs once for a call alone; calls made while a sync runs share the next one', async () => {
    const file = path.join(dir, 'a-wal');
    fs.writeFileSync(file, 'frames');
    const w = new WalSync(file);
    expect(w.open()).toBe(true);
    await w.durable();
    expect(w.syncs).toBe(1);
    // The first starts a sync at once; the nine after it were "committed" while it ran: a sync
    // started before them does not cover them, so they wait for one more, shared.
    const first = w.durable();
    const rest = Array.from({ length: 9 }, () => w.durable());
    expect(new Set(rest).size).toBe(1);
    expect(rest[0]).not.toBe(first);
    await Promise.all([first, ...rest]);
    expect(w.syncs).toBe(3);
    // settled: nothing running or queued once it resolves (what the store waits for before closing)
    const pending = [w.durable(), w.durable()];
    await w.settled();
    await expect(Promise.all(pending)).resolves.toBeDefined();
    expect(w.syncs).toBe(5);
    w.close();
  });

  it('cannot open a WAL file that is not there yet; refuses to sync once closed', async () => {
    const w = new WalSync(path.join(dir, 'missing-wal'));
    expect(w.open()).toBe(false);
    await expect(w.durable()).rejects.toBeInstanceOf(FerryError);
    await expect(w.durable()).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CLOSED' });
  });
});

describe('the SQLite store’s durable commits', () => {
  it('resolve inserts after an fdatasync of the WAL, shared by the inserts committed meanwhile', async () => {
    const store = new SqliteMessageStore({ path: path.join(dir, 'store.db'), logger: silentLogger() });
    await store.open();
    try {
      const one = (i: number) => ({ sourceId: 'src', contentType: 'text/plain', body: Buffer.from(`m${i}`) });
      for (let i = 0; i < 5; i++) await store.insert([one(i)]);
      const before = store.walSyncs;
      // the first five: one sync each, or FULL commits until the WAL file could be opened
      expect(before).toBeGreaterThanOrEqual(4);
      await Promise.all(Array.from({ length: 200 }, (_, i) => store.insert([one(100 + i)])));
      // group commits of up to 256 calls: one or two commits, each waiting for a sync after it
      expect(store.walSyncs - before).toBeGreaterThanOrEqual(1);
      expect(store.walSyncs - before).toBeLessThanOrEqual(store.insertCommits);
    } finally {
      await store.close();
    }
    // closed with the store: the WAL file is gone (checkpointed and deleted by the last connection)
    expect(fs.existsSync(path.join(dir, 'store.db-wal'))).toBe(false);
  });
});
