import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { silentLogger } from '../logging/logger';
import type { NewMessage } from './message-store';
import { PostgresMessageStore } from './postgres.store';

/**
 * The duplicate decision where only PostgreSQL can go wrong (the store-dedupe module's mutation
 * run includes this file): several instances write at once, so each takes a lock per (source,
 * sender, control id) before looking for earlier copies; and its lookups must never be an empty
 * `IN ()`, which PostgreSQL refuses (SQLite accepts it).
 */
const URL = TEST_PG_URL;
// Without PostgreSQL: skipped visibly (locally) or failed (CI=true).
const pgDescribe = requires(pgRequirement(URL));
const prefix = `ferry_dup_${randomBytes(4).toString('hex')}`;
const schemas = new Set<string>();
const open: PostgresMessageStore[] = [];
let n = 0;

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});
afterAll(async () => {
  if (!schemas.size) return;
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
});

async function openStore(schema: string): Promise<PostgresMessageStore> {
  schemas.add(schema);
  const s = new PostgresMessageStore({ url: URL, schema, logger: silentLogger(), poolSize: 3 });
  await s.open();
  open.push(s);
  return s;
}
async function sql(schema: string, text: string): Promise<void> {
  const c = new pg.Client({ connectionString: URL, options: `-c search_path=${schema}` });
  await c.connect();
  try {
    await c.query(text);
  } finally {
    await c.end();
  }
}

const msg = (ctl: string, body = `body of ${ctl}`): NewMessage => ({
  sourceId: 'src-a',
  contentType: 'text/plain',
  body: Buffer.from(body),
  headers: { messageType: 'ADT^A01', controlId: ctl, sendingApplication: 'APP', sendingFacility: 'FAC' },
});
const ignore = { duplicates: { policy: 'ignore' as const, windowMs: 60_000 } };

pgDescribe('PostgresMessageStore duplicates', () => {
  it('two instances receiving the same message at the same moment: one stores it, the other is told it is a duplicate', async () => {
    const schema = `${prefix}_${++n}`;
    const a = await openStore(schema);
    const b = await openStore(schema);
    for (let round = 0; round < 15; round++) {
      const [[ra], [rb]] = await Promise.all([
        a.insert([msg(`R${round}`)], ignore),
        b.insert([msg(`R${round}`)], ignore),
      ]);
      expect([ra.stored, rb.stored].sort()).toEqual([false, true]);
      const kept = ra.stored ? ra : rb;
      expect((ra.stored ? rb : ra).duplicateOf).toBe(kept.id);
    }
    expect(await a.countMessages(['received'])).toEqual({ received: 15 });
  });

  it('200 control ids in one call (one full lookup), and 200 rows stored before content hashes: no empty lookup', async () => {
    const schema = `${prefix}_${++n}`;
    const s = await openStore(schema);
    const ctls = Array.from({ length: 200 }, (_, i) => `K${i}`);
    const first = await s.insert(
      ctls.map((c) => msg(c)),
      ignore,
    );
    expect(first.every((r) => r.stored)).toBe(true);
    await sql(schema, 'UPDATE messages SET content_hash = NULL');
    const again = await s.insert(
      ctls.map((c) => msg(c)),
      ignore,
    );
    expect(again.map((r, i) => r.duplicateOf === first[i].id && !r.stored)).toEqual(ctls.map(() => true));
  });
});
