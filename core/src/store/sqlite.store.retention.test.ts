import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { silentLogger } from '../logging/logger';
import { at, pruneTests, retentionFixture, T0 } from './__fixtures__/retention';
import { SqliteMessageStore } from './sqlite.store';

/**
 * Retention (`prune`) on a real SQLite file and a fake store clock: the tests both SQL stores share
 * (__fixtures__/retention.ts: each pass's time bound to the millisecond, what is deleted with what,
 * the steps, the audit trail), and what only SQLite does -- the file's free pages given back after a
 * prune that changed anything. Seconds: scripts/mutation.mjs runs this file for the `retention`
 * module (with postgres.store.retention.test.ts).
 */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-retention-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
const f = retentionFixture<SqliteMessageStore>({
  async open(now) {
    const s = new SqliteMessageStore({ path: path.join(dir, `r${++n}.db`), logger: silentLogger(), now });
    await s.open();
    return s;
  },
  async deliveryBundles(store, id) {
    const db = new Database(store.file, { readonly: true });
    try {
      const row = db
        .prepare('SELECT COUNT(*) AS n FROM deliveries WHERE message_id = ? AND bundle IS NOT NULL')
        .get(id);
      return (row as { n: number }).n;
    } finally {
      db.close();
    }
  },
});
const { openStore, routed, complete, setClock } = f;

pruneTests(describe, f);

describe('prune: compaction', () => {
  /** Free pages made behind the store's back (a table of blobs created and dropped). */
  function freePagesBehindItsBack(store: SqliteMessageStore): void {
    const db = new Database(store.file);
    try {
      db.exec('CREATE TABLE junk (b BLOB)');
      const ins = db.prepare('INSERT INTO junk (b) VALUES (?)');
      for (let i = 0; i < 20; i++) ins.run(Buffer.alloc(16_384, i));
      db.exec('DROP TABLE junk');
    } finally {
      db.close();
    }
  }

  it('gives the free pages back after a prune that changed anything (bodies, deletions or the audit trail), not after one that changed nothing', async () => {
    const store = await openStore();
    const free = async () => (await store.fileStats()).freePages;
    freePagesBehindItsBack(store);
    expect(await free()).toBeGreaterThan(0);
    // Nothing to prune: the file is left as it is.
    expect(await store.prune({ bodiesBefore: at(T0) })).toEqual({ messages: 0, deleted: 0 });
    expect(await free()).toBeGreaterThan(0);

    // Bodies only (messages, nothing deleted): compacted.
    const [a, b] = await routed(store, ['A', 'B']);
    setClock(T0 + 100);
    await complete(store, [a, b], { status: 'delivered' });
    expect(await store.prune({ bodiesBefore: at(T0 + 101) })).toEqual({ messages: 2, deleted: 0 });
    expect(await free()).toBe(0);

    // Deletions only (the bodies were gone already): compacted.
    freePagesBehindItsBack(store);
    expect(await store.prune({ bodiesBefore: at(T0), deleteBefore: at(T0 + 101) })).toEqual({
      messages: 0,
      deleted: 2,
    });
    expect(await free()).toBe(0);

    // The audit trail only: compacted.
    await store.appendAudit([{ principal: 'cli:a', action: 'replay', result: 'ok', at: at(T0 - 2000) }]);
    freePagesBehindItsBack(store);
    expect(await store.prune({ bodiesBefore: at(T0), auditBefore: at(T0) })).toEqual({
      messages: 0,
      deleted: 0,
      auditDeleted: 1,
    });
    expect(await free()).toBe(0);
  });
});
