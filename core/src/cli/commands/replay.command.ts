import type { EngineConfig } from '../../config/engine.schema';
import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import { silentLogger } from '../../logging/logger';
import type { CliCommand } from '../../plugin/api';
import { replayMessages } from '../../store/admin-ops';
import { createStore } from '../../store/create-store';
import { fileModesOf } from '../../util/file-modes';
import type { MessageStore } from '../../store/message-store';
import { resolveConfigPath } from '../config-path';
import { audited } from '../audit-trail';

/**
 * Opens the store the config names (for commands that work on it while the engine may run), with
 * the config it read (absent when the caller handed a store in).
 */
export async function openConfiguredStore(
  configArg: string | undefined,
  ctxFile: string | undefined,
  ctxStore?: MessageStore,
): Promise<{ store: MessageStore; owned: boolean; config?: EngineConfig }> {
  if (ctxStore) {
    if (!ctxStore.isOpen()) await ctxStore.open();
    return { store: ctxStore, owned: false };
  }
  const file = resolveConfigPath(configArg) ?? ctxFile;
  if (!file)
    throw new FerryError(
      'CONFIG_NO_FILE',
      'no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml',
      { kind: 'config' },
    );
  const { config } = await configure({ configFile: file });
  // the same file modes as the engine's: a command must not change what the operator chose
  const store = createStore(config.store, silentLogger(), config.baseDir, { fileModes: fileModesOf(config) });
  await store.open();
  return { store, owned: true, config };
}

const out = (s: string) => process.stdout.write(`${s}\n`);

export const replayCommand: CliCommand = {
  name: 'replay [ids...]',
  description:
    're-queue messages by id or filter: reprocess (transform + route again with the current config; old deliveries superseded) or redeliver (retry dead/failed deliveries as they are)',
  options: [
    {
      flags: '--status <list>',
      description: 'message status(es), comma-separated: dead, failed, delivered, unrouted, filtered, routed',
    },
    { flags: '--delivery-status <list>', description: 'delivery status(es): dead, failed, pending, delivered' },
    { flags: '--source <id>', description: 'source id' },
    { flags: '--route <id>', description: 'route id (of a delivery)' },
    { flags: '--sink <id>', description: 'sink id (of a delivery)' },
    { flags: '--since <time>', description: 'received at or after (ISO 8601 or epoch ms)' },
    { flags: '--until <time>', description: 'received before (ISO 8601 or epoch ms)' },
    { flags: '--limit <n>', description: 'at most this many, oldest first' },
    { flags: '--mode <mode>', description: 'reprocess | redeliver', default: 'reprocess' },
    { flags: '--dry-run', description: 'list what would be replayed; change nothing' },
    { flags: '--json', description: 'print the result as JSON' },
  ],
  async run(args, o, ctx) {
    const { store, owned } = await openConfiguredStore(o.config as string | undefined, ctx.configFile, ctx.store);
    try {
      const r = await audited(
        store,
        { action: o.dryRun ? 'replay.dry-run' : 'replay' },
        () =>
          replayMessages(store, {
            ids: args.length ? args.flat() : undefined,
            status: o.status as string | undefined,
            deliveryStatus: o.deliveryStatus as string | undefined,
            source: o.source as string | undefined,
            route: o.route as string | undefined,
            sink: o.sink as string | undefined,
            since: o.since as string | undefined,
            until: o.until as string | undefined,
            limit: o.limit as string | undefined,
            mode: o.mode as string | undefined,
            dryRun: !!o.dryRun,
          }),
        (x) => ({
          messageIds: x.mode === 'reprocess' ? x.ids : undefined,
          detail: `${x.mode} ${x.count}${x.mode === 'redeliver' ? ` deliveries: ${x.ids.slice(0, 50).join(',')}` : ''}`,
        }),
      );
      if (o.json) out(JSON.stringify(r));
      else {
        const what = r.mode === 'reprocess' ? 'message' : 'deliver';
        const plural = r.count === 1 ? (r.mode === 'reprocess' ? '' : 'y') : r.mode === 'reprocess' ? 's' : 'ies';
        out(`${r.dryRun ? 'would replay' : 'replayed'} ${r.count} ${what}${plural} (${r.mode})`);
        for (const id of r.ids) out(id);
      }
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
