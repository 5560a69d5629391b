import { FerryError } from '../../errors';
import { diffConfigs, formatConfigChanges } from '../../config/config-diff';
import type { CliCommand } from '../../plugin/api';
import type { MessageStore } from '../../store/message-store';
import { openConfiguredStore } from './replay.command';

const out = (s: string) => process.stdout.write(`${s}\n`);

/** Two stored config versions and the changes from `a` to `b` (the CLI's `config diff`, the admin API's `/api/config/diff`). */
export async function configVersionDiff(store: MessageStore, a: unknown, b: unknown) {
  const va = Number(a);
  const vb = Number(b);
  if (!Number.isInteger(va) || !Number.isInteger(vb) || va < 1 || vb < 1)
    throw new FerryError(
      'INPUT_CONFIG_VERSION',
      `config diff: two version numbers, e.g. 3 4 (got ${String(a)} ${String(b)})`,
      { kind: 'input' },
    );
  if (!store.configVersion)
    throw new FerryError('INPUT_CONFIG_VERSIONS', 'this store keeps no config versions', { kind: 'input' });
  const [x, y] = await Promise.all([store.configVersion(va), store.configVersion(vb)]);
  for (const [v, r] of [
    [va, x],
    [vb, y],
  ] as const)
    if (!r)
      throw new FerryError('INPUT_UNKNOWN_CONFIG_VERSION', `no config version ${v}`, {
        kind: 'input',
        details: { status: 404 },
      });
  return {
    a: { ...x!, config: undefined },
    b: { ...y!, config: undefined },
    changes: diffConfigs(JSON.parse(x!.config!), JSON.parse(y!.config!)),
  };
}

/** `ferry config history`, `ferry config diff <a> <b>`: the applied configs (secrets masked) and what changed between two. */
export const configCommand: CliCommand = {
  name: 'config <action> [a] [b]',
  description:
    'config versions: "history" lists every applied config (version, time, who, hash); "diff <a> <b>" prints what changed from version a to b',
  options: [
    { flags: '--limit <n>', description: 'history: at most this many (default 100)' },
    { flags: '--json', description: 'print JSON' },
  ],
  async run(args, o, ctx) {
    const [action, a, b] = args as [string, string | undefined, string | undefined];
    if (action !== 'history' && action !== 'diff')
      throw new FerryError('INPUT_CONFIG_ACTION', `config: unknown action "${action}" (history | diff <a> <b>)`, {
        kind: 'input',
      });
    const { store, owned } = await openConfiguredStore(o.config as string | undefined, ctx.configFile, ctx.store);
    try {
      if (action === 'history') {
        if (!store.configVersions)
          throw new FerryError('INPUT_CONFIG_VERSIONS', 'this store keeps no config versions', { kind: 'input' });
        const list = await store.configVersions(o.limit !== undefined ? Number(o.limit) : 100);
        for (const v of list)
          out(
            o.json ? JSON.stringify(v) : [v.version, v.at.toISOString(), v.appliedBy, v.hash.slice(0, 16)].join('\t'),
          );
        if (!list.length && !o.json)
          out('no config versions stored yet (the engine stores one when it starts and at each applied reload)');
        return 0;
      }
      const d = await configVersionDiff(store, a, b);
      if (o.json) out(JSON.stringify(d));
      else {
        out(
          `version ${d.a.version} (${d.a.at.toISOString()}, ${d.a.appliedBy}) -> version ${d.b.version} (${d.b.at.toISOString()}, ${d.b.appliedBy})`,
        );
        for (const l of formatConfigChanges(d.changes)) out(l);
        if (!d.changes.length) out('no differences');
      }
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
