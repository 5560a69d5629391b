/**
 * The query plans SQLite chooses for the hot statements whose cost must not grow with the store:
 * checked with EXPLAIN QUERY PLAN on a real store file (the planner has no statistics: what it
 * picks from the schema alone is what a fresh install gets).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { silentLogger } from '../logging/logger';
import { duplicateLookupSql } from './sql/messages';
import { CHUNK } from './sql/sql-exec';
import { SqliteMessageStore } from './sqlite.store';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sqlite-plans-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('SQLite query plans', () => {
  it('the duplicate lookup reads the (source, dedup key, received at) index, not every message of the source', async () => {
    const file = path.join(dir, 'plans.db');
    const store = new SqliteMessageStore({ path: file, logger: silentLogger() });
    await store.open();
    try {
      await store.insert(
        Array.from({ length: 200 }, (_, i) => ({
          sourceId: 'feed',
          contentType: 'application/hl7-v2',
          body: Buffer.from(`MSH|${i}`),
          headers: { controlId: `C${i}`, sendingApplication: 'A', sendingFacility: 'F' },
        })),
        { duplicates: { policy: 'accept', windowMs: 86_400_000 } },
      );
    } finally {
      await store.close();
    }
    const db = new Database(file, { readonly: true });
    try {
      for (const n of [1, 3, CHUNK]) {
        const params = ['feed', ...Array.from({ length: n }, (_, i) => `A|F|C${i}`), 0];
        const plan = (db.prepare(`EXPLAIN QUERY PLAN ${duplicateLookupSql(n)}`).all(...params) as { detail: string }[])
          .map((r) => r.detail)
          .join('; ');
        expect(plan).toMatch(/USING INDEX messages_dedup \(source_id=\? AND dedup_key=\?/);
        expect(plan).not.toMatch(/messages_source_seq|SCAN messages/);
      }
    } finally {
      db.close();
    }
  });
});
