import { inputError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import type { AuditFilter } from '../../store/message-store';
import { openConfiguredStore } from './replay.command';

const out = (s: string) => process.stdout.write(`${s}\n`);

function time(v: unknown, name: string): Date | undefined {
  if (v === undefined || v === '') return undefined;
  const s = String(v);
  const d = /^\d+$/.test(s) ? new Date(Number(s)) : new Date(s);
  if (Number.isNaN(d.getTime()))
    throw inputError('AUDIT_FILTER', `--${name}: not a time (ISO 8601 or epoch ms): ${s}`, { field: name });
  return d;
}

/** `ferry audit`: the audit trail (who read or did what, when, from where, with what result), newest first. */
export const auditCommand: CliCommand = {
  name: 'audit',
  description: 'print the audit trail, newest first: PHI reads and operations of the admin API and of ferry commands',
  options: [
    { flags: '--since <time>', description: 'at or after (ISO 8601 or epoch ms)' },
    { flags: '--until <time>', description: 'before (ISO 8601 or epoch ms)' },
    {
      flags: '--principal <who>',
      description: 'e.g. "cli:alice", "token:abc123 (ci)", "oidc:<sub> (<name>)", anonymous',
    },
    {
      flags: '--action <action>',
      description: 'e.g. message.body.read, replay, prune, sink.hold, token.create, auth.failed',
    },
    { flags: '--message-id <id>', description: 'entries naming this message' },
    { flags: '--result <result>', description: 'ok, denied, invalid, failed' },
    { flags: '--limit <n>', description: 'at most this many (default 100)' },
    { flags: '--json', description: 'print one JSON entry per line' },
  ],
  async run(_args, o, ctx) {
    const f: AuditFilter = { newestFirst: true, limit: 100 };
    if (o.limit !== undefined) {
      const n = Number(o.limit);
      if (!Number.isInteger(n) || n <= 0)
        throw inputError('AUDIT_FILTER', `--limit: a positive integer: ${String(o.limit)}`, { field: 'limit' });
      f.limit = n;
    }
    f.since = time(o.since, 'since');
    f.until = time(o.until, 'until');
    if (o.principal) f.principal = String(o.principal);
    if (o.action) f.action = String(o.action);
    if (o.messageId) f.messageId = String(o.messageId);
    if (o.result) f.result = String(o.result);
    const { store, owned } = await openConfiguredStore(o.config as string | undefined, ctx.configFile, ctx.store);
    try {
      const list = await store.auditEntries(f);
      for (const e of list) {
        if (o.json) out(JSON.stringify(e));
        else
          out(
            [
              e.at.toISOString(),
              e.principal,
              e.role ?? '-',
              e.remote ?? '-',
              e.action,
              e.target ?? '-',
              e.result,
              e.messageIds
                ? `${e.messageIds.length} message(s): ${e.messageIds.slice(0, 5).join(',')}${e.messageIds.length > 5 ? ',…' : ''}`
                : '-',
              e.detail ?? '',
            ].join('\t'),
          );
      }
      if (!list.length && !o.json) out('no audit entries match');
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
