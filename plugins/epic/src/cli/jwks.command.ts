/**
 * `ferry epic jwks`: print the public JWK Set for the configured (or given) signing key(s), to
 * publish at the JKU URL registered with Epic or to paste into the app registration. Only public
 * parts are printed.
 */
import type { CliCommand } from '@ferry/core';
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { loadSigningKey, publicJwks, type AssertionAlg, type SigningKey } from '@ferry/fhir-vendor-kit';

interface KeyEntry {
  privateKey?: string;
  privateKeyFile?: string;
  privateKeyEnv?: string;
  kid?: string;
  alg?: AssertionAlg;
}

/** The `auth` blocks of every epic source / sink in a config file. */
export function keysFromConfig(file: string): KeyEntry[] {
  const doc = YAML.parse(readFileSync(file, 'utf8')) ?? {};
  const out: KeyEntry[] = [];
  for (const section of ['sources', 'sinks'])
    for (const entry of Object.values((doc[section] ?? {}) as Record<string, any>))
      if (String(entry?.type ?? '').startsWith('epic-') && entry.auth) out.push(entry.auth as KeyEntry);
  return out;
}

export const epicJwksCommand: CliCommand = {
  name: 'epic <action>',
  description: 'epic jwks: print the public JWK Set of the signing key(s) (from --key or the config file)',
  options: [
    {
      flags: '--key <file>',
      description: 'private key file (PEM or JWK); default: every epic source/sink auth in the config',
    },
    { flags: '--key-env <name>', description: 'environment variable holding the private key' },
    { flags: '--kid <kid>', description: 'key id (default: the JWK kid or its thumbprint)' },
    { flags: '--alg <alg>', description: 'RS384 (default) or ES384' },
  ],
  async run(args, options, ctx) {
    if (args[0] !== 'jwks') {
      process.stderr.write(`unknown epic action "${args[0] ?? ''}" (try: ferry epic jwks)\n`);
      return 2;
    }
    const entries: KeyEntry[] =
      options.key || options.keyEnv
        ? [
            {
              privateKeyFile: options.key as string | undefined,
              privateKeyEnv: options.keyEnv as string | undefined,
              kid: options.kid as string | undefined,
              alg: options.alg as AssertionAlg | undefined,
            },
          ]
        : ctx.configFile
          ? keysFromConfig(ctx.configFile)
          : [];
    if (!entries.length) {
      process.stderr.write('no key: pass --key <file> or -c <config> with epic sources/sinks\n');
      return 2;
    }
    const keys: SigningKey[] = [];
    const seen = new Set<string>();
    for (const e of entries) {
      const k = await loadSigningKey(e);
      if (seen.has(k.kid)) continue;
      seen.add(k.kid);
      keys.push(k);
    }
    process.stdout.write(JSON.stringify(publicJwks(keys), null, 2) + '\n');
    return 0;
  },
};
