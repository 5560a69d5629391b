import type Database from 'better-sqlite3';
import { FerryError, type ErrorCode } from '../errors';
import type { Row } from './sql/sql.store';

/**
 * What the SQLite store's statements take and give back (split out of sqlite.store.ts): the row
 * builders, the binding of parameters, the classification of SQLite's errors.
 */

/**
 * Reads return raw rows (arrays) turned into objects by a function made once per statement, with
 * the column names written into it: better-sqlite3's own row objects look every column name up in
 * V8's string table and set it as a generic property, for every row: 3.3 -> 1.5 us per 21-column
 * row of a claim, measured alone (~2 % of the engine's thread end to end).
 */
const rowMakers = new WeakMap<Database.Statement, ((raw: unknown[]) => Row) | null>();

/** The statement's row builder (the statement switched to raw rows), or null: its own objects. */
export function rowMaker(s: Database.Statement): ((raw: unknown[]) => Row) | null {
  let make = rowMakers.get(s);
  if (make === undefined) {
    const names = s.columns().map((c) => c.name);
    // A literal `__proto__` key would set the prototype, not a property.
    make = names.includes('__proto__')
      ? null
      : // Column names quoted as JSON strings: any name is a valid key. A closure that sets the
        // names in a loop makes the same object 16x slower (2,735 vs 166 ns per 21-column row,
        // measured side by side, 2026-12-07): V8 builds a literal's shape once, keyed stores
        // one by one.
        // eslint-disable-next-line no-new-func -- measured: a literal per statement, see above
        (new Function('r', `return { ${names.map((n, i) => `${JSON.stringify(n)}: r[${i}]`).join(', ')} };`) as (
          raw: unknown[],
        ) => Row);
    if (make) s.raw(true);
    rowMakers.set(s, make);
  }
  return make;
}

/** Parameters as better-sqlite3 takes them: undefined as NULL, booleans as 0/1. */
export function bind(params: unknown[] | undefined): unknown[] {
  if (!params) return [];
  return params.map((p) => (p === undefined ? null : typeof p === 'boolean' ? (p ? 1 : 0) : p));
}

/**
 * SQLite errors the engine should treat as a store outage rather than a fault of the operation:
 * the disk (or the database's size limit) is full, the file cannot be written (an I/O error, a
 * filesystem remounted read-only), memory ran out. They are transient -- the same write succeeds
 * once the condition is gone -- so messages are refused (not acknowledged) and results in hand are
 * recorded again, as when PostgreSQL is unreachable. SQLite may roll the whole transaction back
 * on these (https://sqlite.org/lang_transaction.html, "Response To Errors Within A Transaction").
 */
export function classifySqliteError(e: unknown, file: string): unknown {
  if (e instanceof FerryError) return e;
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== 'string') return e;
  const what: [ErrorCode, string] | undefined =
    code === 'SQLITE_FULL'
      ? ['TRANSIENT_STORE_FULL' as const, 'the database or disk is full']
      : code.startsWith('SQLITE_IOERR')
        ? ['TRANSIENT_STORE_IO' as const, `an I/O error on the database (${code})`]
        : code.startsWith('SQLITE_READONLY')
          ? ['TRANSIENT_STORE_READONLY' as const, `the database cannot be written (${code})`]
          : code === 'SQLITE_NOMEM'
            ? ['TRANSIENT_STORE_NOMEM' as const, 'SQLite ran out of memory']
            : undefined;
  if (!what) return e;
  return new FerryError(what[0], `${what[1]}: ${file}`, {
    kind: 'transient',
    retryable: true,
    cause: e,
    details: { sqliteCode: code },
  });
}
