import { existsSync } from 'node:fs';
import path from 'node:path';

/** The config file a command uses: -c, then FERRY_CONFIG, then ./config/ferry.yaml if present. */
export function resolveConfigPath(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (explicit) return explicit;
  if (env.FERRY_CONFIG) return env.FERRY_CONFIG;
  const def = path.resolve('config/ferry.yaml');
  return existsSync(def) ? def : undefined;
}

/** Bundled plugins, loaded for CLI commands when no config names them. */
export const bundledPlugins = [
  '@ferry/plugin-hl7v2-mllp',
  '@ferry/plugin-athena-rest',
  '@ferry/plugin-athena-fhir',
  '@ferry/plugin-epic',
  '@ferry/plugin-cerner',
];
