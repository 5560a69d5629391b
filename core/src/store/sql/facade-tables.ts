import type { FacadeIdentity, FacadeLinkEnd, FacadeStore } from '../message-store';
import type { Row, SqlExec } from './sql-exec';

/** What the facade's tables need of the store (given by SqlMessageStore; its protected parts). */
export interface FacadeTablesContext {
  assertOpen(): void;
  /** Now on the database's clock. */
  now(): number;
  /** The database's clock minus this process's. */
  clockOffsetMs(): number;
  lockClause(table: string): string;
  tx<T>(fn: (x: SqlExec) => Promise<T>, opts?: { durable?: boolean }): Promise<T>;
  read<T>(fn: (x: SqlExec) => Promise<T>): Promise<T>;
}

/**
 * The FHIR facade's tables (migrations 11 and 13): identities of vendor resources, cached resources,
 * idempotency keys and explicit links between patients. Apart from the message flow, so composed
 * rather than inherited: an object over the store's transactions (`SqlMessageStore.facade`).
 */
export function facadeTables(s: FacadeTablesContext): FacadeStore {
  const putResources: FacadeStore['facadeResourcesPut'] = async (copies) => {
    s.assertOpen();
    if (!copies.length) return;
    const now = s.now();
    await s.tx(async (x) => {
      for (const c of copies)
        await x.run(
          `INSERT INTO facade_resources (connection_id, resource_type, canonical_id, resource, fetched_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (connection_id, resource_type, canonical_id) DO UPDATE SET resource = excluded.resource, fetched_at = excluded.fetched_at
           WHERE facade_resources.fetched_at <= excluded.fetched_at`,
          [c.connectionId, c.resourceType, c.canonicalId, c.resource, c.fetchedAt ? c.fetchedAt.getTime() : now],
        );
    });
  };

  return {
    async facadeIdentify(ids) {
      s.assertOpen();
      if (!ids.length) return;
      const now = s.now();
      await s.tx(async (x) => {
        for (const i of ids)
          await x.run(
            `INSERT INTO facade_identities (connection_id, resource_type, vendor_id, canonical_id, mrn, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (connection_id, resource_type, vendor_id) DO UPDATE SET canonical_id = excluded.canonical_id, mrn = COALESCE(excluded.mrn, facade_identities.mrn), updated_at = excluded.updated_at`,
            [i.connectionId, i.resourceType, i.vendorId, i.canonicalId, i.mrn ?? null, now],
          );
      });
    },
    async facadeIdentityOf(connectionId, resourceType, canonicalId) {
      s.assertOpen();
      const rows = await s.read((x) =>
        x.all(
          'SELECT * FROM facade_identities WHERE connection_id = ? AND resource_type = ? AND canonical_id = ? ORDER BY updated_at DESC LIMIT 1',
          [connectionId, resourceType, canonicalId],
        ),
      );
      return rows[0] ? toIdentity(rows[0]) : undefined;
    },
    async facadeIdentitiesByMrn(resourceType, mrn) {
      s.assertOpen();
      return (
        await s.read((x) =>
          x.all(
            'SELECT * FROM facade_identities WHERE resource_type = ? AND mrn = ? ORDER BY connection_id, vendor_id',
            [resourceType, mrn],
          ),
        )
      ).map(toIdentity);
    },
    async facadeResourcePut(connectionId, resourceType, canonicalId, resource) {
      await putResources([{ connectionId, resourceType, canonicalId, resource }]);
    },
    facadeResourcesPut: putResources,
    async facadeResourceGet(connectionId, resourceType, canonicalId) {
      s.assertOpen();
      const rows = await s.read((x) =>
        x.all(
          'SELECT resource, fetched_at FROM facade_resources WHERE connection_id = ? AND resource_type = ? AND canonical_id = ?',
          [connectionId, resourceType, canonicalId],
        ),
      );
      return rows[0]
        ? { resource: String(rows[0].resource), fetchedAt: new Date(Number(rows[0].fetched_at) - s.clockOffsetMs()) }
        : undefined;
    },
    async facadeIdempotencyBegin(scope, key, requestHash, ttlMs) {
      s.assertOpen();
      const now = s.now();
      return s.tx(
        async (x) => {
          await x.run('DELETE FROM facade_idempotency WHERE scope = ? AND idem_key = ? AND expires_at <= ?', [
            scope,
            key,
            now,
          ]);
          const rows = await x.all(
            `SELECT * FROM facade_idempotency WHERE scope = ? AND idem_key = ?${s.lockClause('facade_idempotency')}`,
            [scope, key],
          );
          const r = rows[0];
          if (r)
            return r.state === 'done'
              ? {
                  state: 'done' as const,
                  requestHash: r.request_hash,
                  status: Number(r.status),
                  response: String(r.response),
                }
              : { state: 'pending' as const, requestHash: r.request_hash };
          // Another instance may insert the same key between the SELECT and here (PostgreSQL): the
          // primary key refuses the second insert, and that caller answers "in progress".
          const n = await x.run(
            'INSERT INTO facade_idempotency (scope, idem_key, request_hash, state, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, idem_key) DO NOTHING',
            [scope, key, requestHash, 'pending', now, now + ttlMs],
          );
          return n ? { state: 'new' as const } : { state: 'pending' as const, requestHash };
        },
        { durable: true },
      );
    },
    async facadeIdempotencyFinish(scope, key, status, response) {
      s.assertOpen();
      await s.tx(
        (x) =>
          x.run(
            "UPDATE facade_idempotency SET state = 'done', status = ?, response = ? WHERE scope = ? AND idem_key = ?",
            [status, response, scope, key],
          ),
        { durable: true },
      );
    },
    async facadeIdempotencyRelease(scope, key) {
      s.assertOpen();
      await s.tx(
        (x) =>
          x.run("DELETE FROM facade_idempotency WHERE scope = ? AND idem_key = ? AND state = 'pending'", [scope, key]),
        { durable: true },
      );
    },
    async facadeLink(resourceType, a, b, createdBy) {
      s.assertOpen();
      const [x, y] = ordered(a, b);
      const now = s.now();
      return s.tx(
        async (t) =>
          (await t.run(
            `INSERT INTO facade_links (resource_type, a_connection, a_id, b_connection, b_id, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (resource_type, a_connection, a_id, b_connection, b_id) DO NOTHING`,
            [resourceType, x.connectionId, x.canonicalId, y.connectionId, y.canonicalId, now, createdBy ?? null],
          )) > 0,
        { durable: true },
      );
    },
    async facadeUnlink(resourceType, a, b) {
      s.assertOpen();
      const [x, y] = ordered(a, b);
      return s.tx(
        async (t) =>
          (await t.run(
            'DELETE FROM facade_links WHERE resource_type = ? AND a_connection = ? AND a_id = ? AND b_connection = ? AND b_id = ?',
            [resourceType, x.connectionId, x.canonicalId, y.connectionId, y.canonicalId],
          )) > 0,
        { durable: true },
      );
    },
    async facadeLinksOf(resourceType, end) {
      s.assertOpen();
      const rows = await s.read((x) =>
        x.all(
          `SELECT b_connection AS connection_id, b_id AS canonical_id FROM facade_links WHERE resource_type = ? AND a_connection = ? AND a_id = ?
           UNION ALL
           SELECT a_connection AS connection_id, a_id AS canonical_id FROM facade_links WHERE resource_type = ? AND b_connection = ? AND b_id = ?`,
          [resourceType, end.connectionId, end.canonicalId, resourceType, end.connectionId, end.canonicalId],
        ),
      );
      return rows.map((r) => ({ connectionId: String(r.connection_id), canonicalId: String(r.canonical_id) }));
    },
  };
}

/** A link's two ends in their stored order (by connection, then id), so either order names the same row. */
function ordered(a: FacadeLinkEnd, b: FacadeLinkEnd): [FacadeLinkEnd, FacadeLinkEnd] {
  const ka = `${a.connectionId}\u0000${a.canonicalId}`;
  const kb = `${b.connectionId}\u0000${b.canonicalId}`;
  return ka <= kb ? [a, b] : [b, a];
}

function toIdentity(r: Row): FacadeIdentity {
  const i: FacadeIdentity = {
    connectionId: r.connection_id,
    resourceType: r.resource_type,
    vendorId: r.vendor_id,
    canonicalId: r.canonical_id,
  };
  if (r.mrn) i.mrn = r.mrn;
  return i;
}
