import { configure } from '../../engine/configure';
import { engineSchema } from '../../config/engine.schema';
import { schemaDefaults } from '../../config/schema-type';
import { inputError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import { pruneByRetention } from '../../store/admin-ops';
import { openConfiguredStore } from './replay.command';
import { resolveConfigPath } from '../config-path';
import { audited } from '../audit-trail';

const out = (s: string) => process.stdout.write(`${s}\n`);

function days(v: unknown, name: string, fallback: number): number {
  if (v === undefined || v === null || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw inputError('PRUNE_DAYS', `--${name}: must be a number of days >= 0, not ${String(v)}`, { field: name });
  return n;
}

export const pruneCommand: CliCommand = {
  name: 'prune',
  description:
    "drop bodies of delivered/filtered messages and dead letters past their retention (metadata kept) and give the space back; defaults from the config's store.retention",
  options: [
    {
      flags: '--delivered-days <n>',
      description:
        'keep bodies of delivered/filtered/unrouted messages this many days (default: store.retention.deliveredDays)',
    },
    {
      flags: '--dead-days <n>',
      description: 'keep bodies of dead/failed messages this many days (default: store.retention.deadDays)',
    },
    {
      flags: '--delete-days <n>',
      description: 'also delete whole messages (metadata, events, deliveries) in a final status older than this',
    },
    { flags: '--json', description: 'print the result as JSON' },
  ],
  async run(_args, o, ctx) {
    const { store, owned, config } = await openConfiguredStore(
      o.config as string | undefined,
      ctx.configFile,
      ctx.store,
    );
    try {
      // The config the store was opened with; read here only when a store was handed in.
      const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
      const retention =
        config?.store.retention ??
        (file
          ? (await configure({ configFile: file })).config.store.retention
          : schemaDefaults(engineSchema.store.retention));
      const settings = {
        deliveredDays: days(o.deliveredDays, 'delivered-days', retention.deliveredDays),
        deadDays: days(o.deadDays, 'dead-days', retention.deadDays),
        deleteDays: days(o.deleteDays, 'delete-days', 0),
        // The audit trail keeps its own, longer retention (store.retention.auditDays).
        auditDays: retention.auditDays ?? 0,
      };
      const r = await audited(
        store,
        { action: 'prune' },
        () => pruneByRetention(store, settings),
        (x) => ({ detail: `bodies ${x.messages}, deleted ${x.deleted ?? 0}, audit ${x.auditDeleted ?? 0}` }),
      );
      if (o.json) out(JSON.stringify({ ...settings, ...r }));
      else
        out(
          `pruned bodies of ${r.messages} message(s)${r.deleted ? `, deleted ${r.deleted}` : ''} (delivered > ${settings.deliveredDays} d, dead > ${settings.deadDays} d${settings.deleteDays ? `, delete > ${settings.deleteDays} d` : ''})`,
        );
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
