import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import { holdRequest } from '../../store/admin-ops';
import { resolveConfigPath } from '../config-path';
import { openConfiguredStore } from './replay.command';
import { audited } from '../audit-trail';

const out = (s: string) => process.stdout.write(`${s}\n`);

/**
 * `ferry sink hold <id>` / `ferry sink release <id>` / `ferry sink holds`: an operator's hold on a
 * sink, kept in the store, so every engine sharing it stops claiming the sink's deliveries
 * (within a second) until it is released or its time runs out -- a maintenance window of the
 * system behind the sink, without failed attempts or probes against it.
 */
export const sinkCommand: CliCommand = {
  name: 'sink <action> [id]',
  description:
    'hold a sink (its deliveries wait, unattempted, on every engine sharing the store), release it, or list the holds: hold <id> | release <id> | holds',
  options: [
    {
      flags: '--until <time>',
      description: 'hold: end the hold at this time (ISO 8601 or epoch ms); default: until released',
    },
    { flags: '--minutes <n>', description: 'hold: end the hold this many minutes from now' },
    {
      flags: '--reason <text>',
      description: 'hold: a note kept with the hold and logged (e.g. "EHR downtime"; no PHI)',
    },
    { flags: '--json', description: 'print the result as JSON' },
  ],
  async run(args, o, ctx) {
    const [action, id] = args as [string, string | undefined];
    if (!['hold', 'release', 'holds'].includes(action))
      throw new FerryError('INPUT_SINK_ACTION', `sink: unknown action "${action}" (hold <id> | release <id> | holds)`, {
        kind: 'input',
      });
    if (action !== 'holds' && !id)
      throw new FerryError('INPUT_SINK_ID', `sink ${action}: which sink? (ferry sink ${action} <id>)`, {
        kind: 'input',
      });
    const { store, owned, config } = await openConfiguredStore(
      o.config as string | undefined,
      ctx.configFile,
      ctx.store,
    );
    try {
      if (action !== 'holds') {
        const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
        const sinks = config?.sinks ?? (file ? (await configure({ configFile: file })).config.sinks : undefined);
        if (sinks && !Object.prototype.hasOwnProperty.call(sinks, id!))
          throw new FerryError('INPUT_UNKNOWN_SINK', `no sink "${id}" in ${file}`, { kind: 'input' });
      }
      if (action === 'hold') {
        const h = await audited(
          store,
          { action: 'sink.hold', target: id },
          () =>
            store.holdSink(
              id!,
              holdRequest({
                until: o.until as string | undefined,
                minutes: o.minutes as string | undefined,
                reason: o.reason as string | undefined,
              }),
            ),
          (x) => ({ detail: x.until ? `until ${x.until.toISOString()}` : 'until released' }),
        );
        if (o.json) out(JSON.stringify(h));
        else
          out(
            `sink ${h.sinkId} held ${h.until ? `until ${h.until.toISOString()}` : 'until released'}${h.reason ? ` (${h.reason})` : ''}`,
          );
      } else if (action === 'release') {
        const released = await audited(
          store,
          { action: 'sink.release', target: id },
          () => store.releaseSink(id!),
          (x) => ({ detail: `released=${x}` }),
        );
        if (o.json) out(JSON.stringify({ sinkId: id, released }));
        else out(released ? `sink ${id} released` : `sink ${id} was not held`);
      } else {
        const holds = await store.sinkHolds();
        if (o.json) out(JSON.stringify(holds));
        else if (!holds.length) out('no sink is held');
        else
          for (const h of holds)
            out(
              `${h.sinkId}\tsince ${h.since.toISOString()}\t${h.until ? `until ${h.until.toISOString()}` : 'until released'}${h.reason ? `\t${h.reason}` : ''}`,
            );
      }
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
