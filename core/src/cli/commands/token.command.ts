import { tokenRequest, issueToken, makeToken, tokenView } from '../../admin/token-ops';
import { FerryError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import { audited, cliPrincipal } from '../audit-trail';
import { openConfiguredStore } from './replay.command';

const out = (s: string) => process.stdout.write(`${s}\n`);

/**
 * `ferry token create|list|revoke`: API tokens for the admin API, kept in the store as salted
 * hashes. `create` prints the secret once; `--config-entry` makes one for `admin.auth.tokens`
 * instead (printed with its hash; nothing stored).
 */
export const tokenCommand: CliCommand = {
  name: 'token <action> [id]',
  description:
    'admin API tokens: create --name <who> --role <role[,role]> [--scope connection:<id>:read,...] [--expires 90d] | list | revoke <id>',
  options: [
    { flags: '--name <name>', description: 'create: who or what uses the token (shown in the audit trail)' },
    {
      flags: '--role <roles>',
      description: 'create: viewer, operator, phi-reader or admin (comma-separated for several)',
    },
    {
      flags: '--scope <scopes>',
      description:
        'create: FHIR facade scopes, comma-separated: connection:<id>:read, connection:<id>:write (id * = every connection)',
    },
    { flags: '--expires <when>', description: 'create: an ISO 8601 time or a duration (90d, 12h); default: no expiry' },
    {
      flags: '--config-entry',
      description: 'create: print an admin.auth.tokens entry (hash) and the secret; store nothing',
    },
    { flags: '--json', description: 'print the result as JSON' },
  ],
  async run(args, o, ctx) {
    const [action, id] = args as [string, string | undefined];
    if (!['create', 'list', 'revoke'].includes(action))
      throw new FerryError('INPUT_TOKEN_ACTION', `token: unknown action "${action}" (create | list | revoke <id>)`, {
        kind: 'input',
      });
    if (action === 'create' && o.configEntry) {
      const t = await makeToken(
        tokenRequest({ name: o.name, roles: o.role, expires: o.expires, scopes: o.scope }),
        cliPrincipal(),
      );
      const entry = {
        id: t.record.id,
        name: t.record.name,
        roles: t.record.roles,
        hash: t.record.hash,
        ...(t.record.expiresAt ? { expires: t.record.expiresAt.toISOString() } : {}),
        ...(t.record.scopes ? { scopes: t.record.scopes } : {}),
      };
      if (o.json) out(JSON.stringify({ entry, token: t.secret }));
      else {
        out('# add under admin.auth.tokens (the hash only; the token itself goes to whoever uses it):');
        out(`- ${JSON.stringify(entry)}`);
        out(`# the token, shown this once:\n${t.secret}`);
      }
      return 0;
    }
    if (action === 'revoke' && !id)
      throw new FerryError(
        'INPUT_TOKEN_ID',
        'token revoke: which token? (ferry token revoke <id>; ferry token list shows them)',
        { kind: 'input' },
      );
    const { store, owned, config } = await openConfiguredStore(
      o.config as string | undefined,
      ctx.configFile,
      ctx.store,
    );
    try {
      if (action === 'create') {
        const t = await audited(
          store,
          { action: 'token.create' },
          () =>
            issueToken(
              store,
              tokenRequest({ name: o.name, roles: o.role, expires: o.expires, scopes: o.scope }),
              cliPrincipal(),
            ),
          (r) => ({
            target: r.record.id,
            detail: `roles=${r.record.roles.join(',')}${r.record.scopes ? ` scopes=${r.record.scopes.join(',')}` : ''}`,
          }),
        );
        if (o.json) out(JSON.stringify({ ...tokenView(t.record), token: t.secret }));
        else {
          out(
            `created token ${t.record.id} (${t.record.name}; ${t.record.roles.join(', ')}${t.record.scopes ? `; scopes ${t.record.scopes.join(', ')}` : ''}${t.record.expiresAt ? `; expires ${t.record.expiresAt.toISOString()}` : ''}). It is shown this once; only its hash is kept:`,
          );
          out(t.secret);
        }
      } else if (action === 'list') {
        const list: Record<string, unknown>[] = (await store.apiTokens()).map((t) => ({
          ...tokenView(t),
          source: 'store',
        }));
        // Those of admin.auth.tokens too (revoked by removing them from the config); none without a config.
        for (const t of config ? config.admin.auth.tokens : [])
          list.push({
            id: t.id,
            name: t.name,
            roles: t.roles,
            createdAt: undefined,
            expiresAt: t.expires ? new Date(t.expires) : undefined,
            state: t.expires && Date.parse(t.expires) <= Date.now() ? 'expired' : 'active',
            source: 'config',
          });
        if (o.json) out(JSON.stringify(list));
        else if (!list.length) out('no tokens');
        else
          for (const t of list)
            out(
              [
                t.id,
                t.name,
                (t.roles as string[]).join(','),
                t.state,
                t.createdAt ? `created ${(t.createdAt as Date).toISOString()}` : `in the config`,
                t.expiresAt ? `expires ${(t.expiresAt as Date).toISOString()}` : 'no expiry',
              ].join('\t'),
            );
      } else {
        const revoked = await audited(
          store,
          { action: 'token.revoke', target: id },
          () => store.revokeApiToken(id!, cliPrincipal()),
          (r) => ({ detail: `revoked=${r}` }),
        );
        if (o.json) out(JSON.stringify({ id, revoked }));
        else out(revoked ? `token ${id} revoked` : `no active token ${id} in the store`);
        if (!revoked) return 1;
      }
      return 0;
    } finally {
      if (owned) await store.close();
    }
  },
};
