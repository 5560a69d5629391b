import type { Logger } from 'winston';
import type { MessageHeaders, StoredError } from '../../model/message';

/**
 * What every part of the SQL store shares: the connection's shape, the options, and the small
 * helpers and SQL fragments the concerns (messages, deliveries, processing, ...) all use.
 */

export type Row = Record<string, any>;

/** One connection (or transaction) the store's SQL runs on. Placeholders are `?`. */
export interface SqlExec {
  all(sql: string, params?: unknown[]): Promise<Row[]>;
  run(sql: string, params?: unknown[]): Promise<number>;
}

export type EventRow = {
  id: string;
  at: number;
  status: string;
  sinkId?: string;
  routeId?: string;
  detail?: string | null;
};

/** A shared transaction's connection that collects event rows, written together before the commit. */
export interface BufferedExec extends SqlExec {
  events: EventRow[];
}

export interface GroupCommitOptions {
  /**
   * Most messages committed in one transaction. There is no wait timer: a batch is every caller of
   * one event-loop turn plus those arriving while a commit is in flight.
   */
  maxBatch: number;
}

export interface SqlStoreOptions {
  logger: Logger;
  groupCommit?: Partial<GroupCommitOptions>;
  /** Clock, for tests. */
  now?: () => number;
}

/** A transform result held until the routing of its message is written (see the processing part). */
export interface PendingTransform {
  text: string;
  key: string | null;
  at: number;
}

export const OPEN_DELIVERY = `('pending', 'failed')`;
export const UNROUTED_MESSAGE = `('received', 'transformed')`;

/** Rows per multi-row INSERT (bound parameters stay far below both databases' limits). */
export const CHUNK = 200;

export const JOIN_CONTENT = 'LEFT JOIN message_content c ON c.message_id = m.id';

export function dedupKey(h: MessageHeaders | undefined): string | undefined {
  if (!h?.controlId) return undefined;
  return `${h.sendingApplication ?? ''}|${h.sendingFacility ?? ''}|${h.controlId}`;
}

export const num = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v));
export const date = (v: unknown): Date | undefined => (v === null || v === undefined ? undefined : new Date(Number(v)));
export const json = <T>(v: unknown): T | undefined =>
  v === null || v === undefined ? undefined : (JSON.parse(String(v)) as T);
export const errJson = (e: StoredError): string =>
  JSON.stringify({ code: e.code, message: e.message, retryable: e.retryable, outcome: e.outcome });

/**
 * Undoes an operation's savepoint after it failed with `error`. When the savepoint is gone --
 * SQLite rolled the whole transaction back itself (disk full, an I/O error) -- the transaction
 * as a whole has failed: `error` is thrown again, not "no such savepoint".
 */
export async function rollbackTo(x: SqlExec, savepoint: string, error: unknown): Promise<void> {
  try {
    await x.run(`ROLLBACK TO SAVEPOINT ${savepoint}`);
    await x.run(`RELEASE SAVEPOINT ${savepoint}`);
  } catch {
    throw error;
  }
}
