/**
 * `ferry athena-subscriptions [-c file] [--subscribe]`: for every `athena-rest` source of the
 * config, the subscription state of each changed-data feed it polls (athena takes 5 min in
 * production, 10-15 in preview to activate one: check before go-live). With `--subscribe`,
 * subscribes the feeds that are not. Exit 0 when every feed is ACTIVE, 1 otherwise.
 */
import { configure, errorFields, type CliCommand } from '@ferry/core';
import { AthenaConnection, VendorConnections } from '@ferry/fhir-vendor-kit';
import type { AthenaRestSourceConfig } from '../sources/athena-rest.source';

export function athenaSubscriptionsCommand(
  out: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
): CliCommand {
  return {
    name: 'athena-subscriptions',
    description: 'Show (and with --subscribe create) the changed-data feed subscriptions of every athena-rest source',
    options: [{ flags: '--subscribe', description: 'subscribe the feeds that are not subscribed', default: false }],
    async run(_args, options, ctx) {
      if (!ctx.configFile) {
        out('no config file: pass -c <file>');
        return 2;
      }
      const { config } = await configure({ configFile: ctx.configFile, logger: ctx.logger, env: process.env });
      const entries = Object.entries(config.sources).filter(([, s]) => s.type === 'athena-rest');
      if (!entries.length) {
        out('no athena-rest source in the config');
        return 0;
      }
      let allActive = true;
      out(['source', 'feed', 'status', 'events'].join('\t'));
      // one token per client for the whole run, as in the engine
      const shared = new VendorConnections();
      for (const [id, entry] of entries) {
        const { type: _type, duplicates: _dup, ...cfg } = entry;
        void _type;
        void _dup;
        const conn = new AthenaConnection(cfg as unknown as AthenaRestSourceConfig, ctx.logger, shared);
        for (const feed of (cfg as unknown as AthenaRestSourceConfig).feeds ?? []) {
          try {
            let sub = await conn.get<{ status?: string; subscriptions?: { eventname: string }[] }>(
              `/${feed}/changed/subscription`,
            );
            if (options.subscribe && sub?.status !== 'ACTIVE') {
              await conn.write('POST', `/${feed}/changed/subscription`, {});
              sub = await conn.get(`/${feed}/changed/subscription`);
            }
            const status = sub?.status ?? 'UNKNOWN';
            if (status !== 'ACTIVE') allActive = false;
            out([id, feed, status, (sub?.subscriptions ?? []).map((s) => s.eventname).join(',')].join('\t'));
          } catch (e) {
            allActive = false;
            out([id, feed, 'ERROR', String(errorFields(e).errorCode ?? errorFields(e).error)].join('\t'));
          }
        }
      }
      return allActive ? 0 : 1;
    },
  };
}
