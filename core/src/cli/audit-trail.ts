import os from 'node:os';
import { FerryError } from '../errors';
import type { AuditEntry, MessageStore } from '../store/message-store';

/** Who a `ferry` command acts as in the audit trail: `cli:<os user>`. */
export function cliPrincipal(): string {
  let user: string | undefined;
  try {
    user = os.userInfo().username;
  } catch {
    user = process.env.USER ?? process.env.LOGNAME;
  }
  return `cli:${user || `uid-${process.getuid?.() ?? 'unknown'}`}`;
}

/**
 * Runs a command's operation on the store and appends its audit entry (ok / invalid / failed),
 * as the admin API does for the same operation.
 */
export async function audited<T>(
  store: MessageStore,
  entry: Omit<AuditEntry, 'principal' | 'result'>,
  run: () => Promise<T>,
  after?: (r: T) => Pick<AuditEntry, 'messageIds' | 'detail' | 'target'>,
): Promise<T> {
  let r: T;
  try {
    r = await run();
  } catch (e) {
    const invalid = e instanceof FerryError && e.kind === 'input';
    await store
      .appendAudit([
        {
          ...entry,
          principal: cliPrincipal(),
          result: invalid ? 'invalid' : 'failed',
          detail: e instanceof FerryError ? e.code : 'error',
        },
      ])
      .catch(() => undefined);
    throw e;
  }
  await store.appendAudit([{ ...entry, principal: cliPrincipal(), result: 'ok', ...after?.(r) }]);
  return r;
}
