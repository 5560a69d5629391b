/**
 * The facade's tables (store migrations 11 and 13) on SQLite and PostgreSQL: identities by canonical
 * id and by MRN, the canonical copy kept for serve-from-store (one or a batch; an older copy never
 * replaces a newer one), idempotency keys (claim once, answer, release, expire; two concurrent
 * claims: one wins), API token scopes, explicit links between patients (stored once whichever end
 * names them, listed from either end, removed).
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

    it('keeps several canonical copies in one transaction (the pipeline feeding the store)', async () => {
      const f = store.facade!;
      await f.facadeResourcesPut([
        { connectionId: 'athena-a', resourceType: 'Patient', canonicalId: 'athena-1-patient-9', resource: '{"p":9}' },
        {
          connectionId: 'athena-a',
          resourceType: 'Appointment',
          canonicalId: 'athena-1-appointment-3',
          resource: '{"a":3}',
        },
      ]);
      await f.facadeResourcesPut([]);
      expect((await f.facadeResourceGet('athena-a', 'Patient', 'athena-1-patient-9'))?.resource).toBe('{"p":9}');
      expect((await f.facadeResourceGet('athena-a', 'Appointment', 'athena-1-appointment-3'))?.resource).toBe(
        '{"a":3}',
      );
      // A copy fetched earlier than the one kept (a replayed message) does not replace it; a later one does.
      const hourAgo = new Date(Date.now() - 3_600_000);
      await f.facadeResourcesPut([
        {
          connectionId: 'athena-a',
          resourceType: 'Patient',
          canonicalId: 'athena-1-patient-9',
          resource: '{"old":1}',
          fetchedAt: hourAgo,
        },
      ]);
      expect((await f.facadeResourceGet('athena-a', 'Patient', 'athena-1-patient-9'))?.resource).toBe('{"p":9}');
      await f.facadeResourcesPut([
        {
          connectionId: 'athena-a',
          resourceType: 'Patient',
          canonicalId: 'athena-1-patient-9',
          resource: '{"p":10}',
          fetchedAt: new Date(Date.now() + 1000),
        },
      ]);
      expect((await f.facadeResourceGet('athena-a', 'Patient', 'athena-1-patient-9'))?.resource).toBe('{"p":10}');
      // Kept with the time it was fetched, not the time it was written.
      await f.facadeResourcesPut([
        {
          connectionId: 'athena-a',
          resourceType: 'Patient',
          canonicalId: 'athena-1-patient-8',
          resource: '{"p":8}',
          fetchedAt: hourAgo,
        },
      ]);
      const got = await f.facadeResourceGet('athena-a', 'Patient', 'athena-1-patient-8');
      expect(Math.abs(got!.fetchedAt.getTime() - hourAgo.getTime())).toBeLessThan(1000);
    });

    it('records explicit links once whichever end names them, lists them from either end, removes them', async () => {
      const f = store.facade!;
      const epic = { connectionId: 'epic-a', canonicalId: 'epic-L1' };
      const athena = { connectionId: 'athena-a', canonicalId: 'athena-1-patient-L1' };
      const cerner = { connectionId: 'millennium', canonicalId: 'cerner-L1' };
      expect(await f.facadeLink('Patient', epic, athena, 'token:t1')).toBe(true);
      // The same link named from the other end: already there.
      expect(await f.facadeLink('Patient', athena, epic, 'token:t2')).toBe(false);
      expect(await f.facadeLink('Patient', athena, cerner)).toBe(true);
      const sorted = (l: { connectionId: string; canonicalId: string }[]) =>
        l.map((x) => `${x.connectionId}/${x.canonicalId}`).sort();
      expect(sorted(await f.facadeLinksOf('Patient', athena))).toEqual(['epic-a/epic-L1', 'millennium/cerner-L1']);
      expect(sorted(await f.facadeLinksOf('Patient', epic))).toEqual(['athena-a/athena-1-patient-L1']);
      // Links are per resource type.
      expect(await f.facadeLinksOf('Practitioner', athena)).toEqual([]);
      expect(await f.facadeUnlink('Patient', epic, athena)).toBe(true);
      expect(await f.facadeUnlink('Patient', athena, epic)).toBe(false);
      expect(sorted(await f.facadeLinksOf('Patient', athena))).toEqual(['millennium/cerner-L1']);
      expect(await f.facadeLinksOf('Patient', epic)).toEqual([]);
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
