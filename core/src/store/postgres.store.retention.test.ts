import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { silentLogger } from '../logging/logger';
import { at, pruneTests, retentionFixture, T0 } from './__fixtures__/retention';
import { PostgresMessageStore } from './postgres.store';

/**
 * Retention (`prune`) on PostgreSQL (the `retention` module's mutation run includes this file, beside
 * sqlite.store.retention.test.ts): the tests both SQL stores share (__fixtures__/retention.ts), here
 * on a store whose clock (the fake one, at 2026) differs from the database's by months -- every time
 * the store is given is local, the store compares on the database's clock --, and what only PostgreSQL
 * does: the row locks of a step (a message another session holds is skipped, not waited for), a step
 * that finds nothing sends no empty `IN ()` (which PostgreSQL refuses), and prune's transactions are
 * exempt from the per-query timeout (`long`). A schema per test; skipped visibly without PostgreSQL
 * (failed in CI).
 */
const URL = TEST_PG_URL;
const pgDescribe = requires(pgRequirement(URL));
const prefix = `ferry_retention_${randomBytes(4).toString('hex')}`;
const schemas = new Set<string>();
let n = 0;
/** The per-query timeout of the next store opened (the store's default: 30 s). */
let queryTimeoutMs: number | undefined;
beforeEach(() => {
  queryTimeoutMs = undefined;
});

const schemaOf = (s: PostgresMessageStore) => (s as unknown as { schema: string }).schema;

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  return c;
}

afterAll(async () => {
  if (!schemas.size) return;
  const c = await client();
  try {
    for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
});

const f = retentionFixture<PostgresMessageStore>({
  async open(now) {
    const schema = `${prefix}_${++n}`;
    schemas.add(schema);
    const s = new PostgresMessageStore({ url: URL, schema, logger: silentLogger(), poolSize: 3, now, queryTimeoutMs });
    await s.open();
    return s;
  },
  async deliveryBundles(store, id) {
    const c = await client();
    try {
      const r = await c.query(
        `SELECT COUNT(*)::int AS n FROM ${schemaOf(store)}.deliveries WHERE message_id = $1 AND bundle IS NOT NULL`,
        [id],
      );
      return r.rows[0].n as number;
    } finally {
      await c.end();
    }
  },
});
const { openStore, routed, complete, setClock, hasBody } = f;

pruneTests(pgDescribe, f);

/**
 * `fn` run while another session holds the row locks `lockSql` takes (in the store's schema, `$schema`):
 * whether a statement of the store waited for them, and what `fn` gave. The locks are given up once
 * `fn` settles, or `holdMs` after a statement of the store began to wait for them (0: at once).
 */
async function whileLocked<T>(
  store: PostgresMessageStore,
  lockSql: string,
  params: unknown[],
  fn: () => Promise<T>,
  holdMs = 0,
): Promise<{ waited: boolean; result: PromiseSettledResult<T> }> {
  const c = await client();
  try {
    await c.query('BEGIN');
    const locked = await c.query(lockSql.replaceAll('$schema', schemaOf(store)), params);
    expect(locked.rowCount).toBeGreaterThan(0);
    const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    let done = false;
    const settled = Promise.allSettled([fn()]).then(([r]) => ((done = true), r));
    let waited = false;
    while (!done) {
      const blocked = await c.query(
        'SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
        [pid],
      );
      if (blocked.rows[0].n > 0) {
        waited = true;
        if (holdMs) await new Promise((r) => setTimeout(r, holdMs));
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await c.query('ROLLBACK');
    return { waited, result: await settled };
  } finally {
    await c.end();
  }
}

pgDescribe('prune on PostgreSQL: row locks, the clock, long transactions', () => {
  it("the store's clock differs from the database's (the shared tests' times are then all offset)", async () => {
    const store = await openStore();
    expect(Math.abs(store.clockAheadMs())).toBeGreaterThan(86_400_000);
  });

  it("a message another session holds locked is skipped, not waited for, and left to that session's prune", async () => {
    const store = await openStore();
    const ids = await routed(store, ['A', 'B', 'C']);
    await complete(store, ids, { status: 'delivered' });
    setClock(T0 + 1);
    const bodies = { bodiesBefore: at(T0 + 1) };
    const r = await whileLocked(store, 'SELECT id FROM $schema.messages WHERE id = $1 FOR UPDATE', [ids[1]], () =>
      store.prune(bodies),
    );
    expect(r.waited).toBe(false);
    expect(r.result).toEqual({ status: 'fulfilled', value: { messages: 2, deleted: 0 } });
    expect(await hasBody(store, ids[1])).toBe(true);
    expect(await store.prune(bodies)).toEqual({ messages: 1, deleted: 0 });
    // Deleting skips it the same way.
    const del = { bodiesBefore: at(T0), deleteBefore: at(T0 + 1) };
    const d = await whileLocked(store, 'SELECT id FROM $schema.messages WHERE id = $1 FOR UPDATE', [ids[0]], () =>
      store.prune(del),
    );
    expect(d.waited).toBe(false);
    expect(d.result).toEqual({ status: 'fulfilled', value: { messages: 0, deleted: 2 } });
    expect(await store.listMessages({ ids })).toMatchObject([{ id: ids[0] }]);
    expect(await store.prune(del)).toEqual({ messages: 0, deleted: 1 });
  });

  it("a step that waits on a row lock longer than the store's query timeout still completes (prune is exempt)", async () => {
    queryTimeoutMs = 1000;
    const store = await openStore();
    const ids = await routed(store, ['A', 'B']);
    await complete(store, ids, { status: 'delivered' });
    setClock(T0 + 1);
    // The step's DELETE of the message's content waits for the other session (2.5 x the query timeout).
    const r = await whileLocked(
      store,
      'SELECT message_id FROM $schema.message_content WHERE message_id = $1 FOR UPDATE',
      [ids[0]],
      () => store.prune({ bodiesBefore: at(T0 + 1) }),
      2_500,
    );
    expect(r.waited).toBe(true);
    expect(r.result).toEqual({ status: 'fulfilled', value: { messages: 2, deleted: 0 } });
    for (const id of ids) expect(await hasBody(store, id)).toBe(false);
  });

  it("the audit trail's deletion that waits on a row lock longer than the query timeout still completes", async () => {
    queryTimeoutMs = 1000;
    const store = await openStore();
    await store.appendAudit([{ principal: 'cli:a', action: 'replay', result: 'ok', at: at(T0 - 1000) }]);
    const r = await whileLocked(
      store,
      'SELECT seq FROM $schema.audit_log FOR UPDATE',
      [],
      () => store.prune({ bodiesBefore: at(T0), auditBefore: at(T0) }),
      2_500,
    );
    expect(r.waited).toBe(true);
    expect(r.result).toEqual({ status: 'fulfilled', value: { messages: 0, deleted: 0, auditDeleted: 1 } });
    expect(await store.auditEntries()).toEqual([]);
  });
});
