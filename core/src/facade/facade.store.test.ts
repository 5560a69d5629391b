/**
 * The facade's tables (store migration 11) on SQLite and PostgreSQL: identities by canonical id and
 * by MRN, the canonical copy kept for serve-from-store, idempotency keys (claim once, answer, release,
 * expire; two concurrent claims: one wins), API token scopes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgRequirement, requires, TEST_PG_URL } from '../../../test/support/requires';
import { silentLogger } from '../logging/logger';
import type { MessageStore } from '../store/message-store';
import { PostgresMessageStore } from '../store/postgres.store';
import { SqliteMessageStore } from '../store/sqlite.store';

const schema = `ferry_facade_${randomBytes(4).toString('hex')}`;
let pgUsed = false;

afterAll(async () => {
  if (!pgUsed) return;
  const c = new pg.Client({ connectionString: TEST_PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await c.end();
  }
});

function suite(name: string, make: () => MessageStore, describeFn: (t: string, fn: () => void) => void = describe) {
  describeFn(`facade tables on ${name}`, () => {
    let store: MessageStore;
    beforeAll(async () => {
      store = make();
      await store.open();
    });
    afterAll(async () => store?.close());

    it('records identities, finds them by canonical id and by MRN across connections', async () => {
      const f = store.facade!;
      await f.facadeIdentify([
        {
          connectionId: 'epic-a',
          resourceType: 'Patient',
          vendorId: 'e1',
          canonicalId: 'epic-e1',
          mrn: 'urn:ferry:id:mrn|7',
        },
        {
          connectionId: 'epic-b',
          resourceType: 'Patient',
          vendorId: 'e1',
          canonicalId: 'epicb-e1',
          mrn: 'urn:ferry:id:mrn|7',
        },
        { connectionId: 'athena-a', resourceType: 'Patient', vendorId: '9', canonicalId: 'athena-1-patient-9' },
      ]);
      // A later answer without an MRN keeps the one known.
      await f.facadeIdentify([
        { connectionId: 'epic-a', resourceType: 'Patient', vendorId: 'e1', canonicalId: 'epic-e1' },
      ]);
      expect((await f.facadeIdentityOf('epic-a', 'Patient', 'epic-e1'))?.vendorId).toBe('e1');
      expect(await f.facadeIdentityOf('epic-a', 'Patient', 'nope')).toBeUndefined();
      expect((await f.facadeIdentitiesByMrn('Patient', 'urn:ferry:id:mrn|7')).map((i) => i.canonicalId).sort()).toEqual(
        ['epic-e1', 'epicb-e1'],
      );
    });

    it('keeps the canonical copy of a resource with the time it was fetched', async () => {
      const f = store.facade!;
      await f.facadeResourcePut('epic-a', 'Patient', 'epic-e1', '{"a":1}');
      await f.facadeResourcePut('epic-a', 'Patient', 'epic-e1', '{"a":2}');
      const got = await f.facadeResourceGet('epic-a', 'Patient', 'epic-e1');
      expect(got?.resource).toBe('{"a":2}');
      expect(Math.abs(got!.fetchedAt.getTime() - Date.now())).toBeLessThan(60_000);
    });

    it('claims an idempotency key once; answers the stored response; releases and expires', async () => {
      const f = store.facade!;
      const [a, b] = await Promise.all([
        f.facadeIdempotencyBegin('c|p', 'k1', 'h1', 60_000),
        f.facadeIdempotencyBegin('c|p', 'k1', 'h1', 60_000),
      ]);
      expect([a.state, b.state].sort()).toEqual(['new', 'pending']);
      await f.facadeIdempotencyFinish('c|p', 'k1', 201, '{"x":1}');
      expect(await f.facadeIdempotencyBegin('c|p', 'k1', 'h1', 60_000)).toEqual({
        state: 'done',
        requestHash: 'h1',
        status: 201,
        response: '{"x":1}',
      });
      expect((await f.facadeIdempotencyBegin('other|p', 'k1', 'h1', 60_000)).state).toBe('new');
      expect((await f.facadeIdempotencyBegin('c|p', 'k2', 'h2', 60_000)).state).toBe('new');
      await f.facadeIdempotencyRelease('c|p', 'k2');
      expect((await f.facadeIdempotencyBegin('c|p', 'k2', 'h2', 60_000)).state).toBe('new');
      // Expired: as if absent.
      expect((await f.facadeIdempotencyBegin('c|p', 'k3', 'h3', -1)).state).toBe('new');
      expect((await f.facadeIdempotencyBegin('c|p', 'k3', 'h3', 60_000)).state).toBe('new');
    });

    it('stores API token scopes', async () => {
      await store.createApiToken({
        id: 'scoped1',
        name: 'app',
        roles: ['viewer'],
        hash: 'scrypt$1$1$1$x$y',
        createdAt: new Date(),
        scopes: ['connection:a:read'],
      });
      await store.createApiToken({
        id: 'plain1',
        name: 'ops',
        roles: ['viewer'],
        hash: 'scrypt$1$1$1$x$y',
        createdAt: new Date(),
      });
      expect((await store.apiToken('scoped1'))?.scopes).toEqual(['connection:a:read']);
      expect((await store.apiToken('plain1'))?.scopes).toBeUndefined();
    });
  });
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
suite('SQLite', () => new SqliteMessageStore({ path: path.join(dir, 'f.db'), logger: silentLogger() }));
suite(
  'PostgreSQL',
  () => {
    pgUsed = true;
    return new PostgresMessageStore({ url: TEST_PG_URL, schema, logger: silentLogger(), poolSize: 3 });
  },
  requires(pgRequirement(TEST_PG_URL)),
);
