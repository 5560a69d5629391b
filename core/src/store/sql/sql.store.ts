import type { FacadeStore, MessageStore } from '../message-store';
import { SqlAdminRecordsPart } from './admin-records';
import { facadeTables } from './facade-tables';

export type { GroupCommitOptions, Row, SqlExec, SqlStoreOptions } from './sql-exec';

/**
 * The store logic, written once in portable SQL for SQLite and PostgreSQL. A subclass supplies
 * the connection: `tx` (a transaction; `durable` ones must survive power loss before they
 * resolve), `read`, and the dialect bits (row locking for claims).
 *
 * One module per concern, stacked as a chain of abstract classes, each adding its part to the one
 * below (what mixins compile to, but named, so protected members survive declaration emit):
 *
 *   store-base.ts     SqlStoreBase         connection, lifecycle, clock, group commit of transitions
 *   messages.ts       SqlMessagesPart      insert + group commit, duplicates, checkpoints
 *   deliveries.ts     SqlDeliveriesPart    delivery rows and key heads, claims, leases, outcomes
 *   processing.ts     SqlProcessingPart    claims for processing, transform results, routing
 *   holds.ts          SqlHoldsPart         sink holds
 *   admin-queries.ts  SqlAdminQueriesPart  browse, search, backlog, throughput, stats
 *   retention.ts      SqlRetentionPart     replay, retry, prune (bulk, in steps)
 *   admin-records.ts  SqlAdminRecordsPart  config versions, audit trail, API tokens
 *   facade-tables.ts  facadeTables()       the FHIR facade's tables (composed: apart from the flow)
 *
 * The hot paths (insert, claim, the transitions) are methods of the one store object, as before
 * the split: no forwarding call, no extra object between the engine and the SQL.
 */
export abstract class SqlMessageStore extends SqlAdminRecordsPart implements MessageStore {
  private facadeOps?: FacadeStore;

  /** The FHIR facade's tables (migration 11). */
  get facade(): FacadeStore {
    return (this.facadeOps ??= facadeTables({
      assertOpen: () => this.assertOpen(),
      now: () => this.now(),
      clockOffsetMs: () => this.clockOffsetMs,
      lockClause: (table) => this.lockClause(table),
      tx: (fn, opts) => this.tx(fn, opts),
      read: (fn) => this.read(fn),
    }));
  }
}
