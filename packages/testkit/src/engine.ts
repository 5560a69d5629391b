/** A real engine from YAML over a temporary SQLite store: `ferry start` in a test. */
import fs from 'node:fs';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import type { Logger } from 'winston';
import { tempDir } from './harness';

export interface TestEngine {
  engine: Engine;
  dir: string;
  stop(): Promise<void>;
}

/**
 * Start an engine from `yaml` (sources, sinks, routes, plugins...). The store is a SQLite file in a
 * temporary folder and the admin API is off unless the YAML says otherwise (a `store:` or `admin:`
 * key in `yaml` replaces the default). `stop()` stops it and removes the folder.
 */
export async function startTestEngine(
  yaml: string,
  opts: { env?: NodeJS.ProcessEnv; logger?: Logger; dir?: string } = {},
): Promise<TestEngine> {
  const dir = opts.dir ?? tempDir('ferry-testkit-engine-');
  const head = [
    /^store:/m.test(yaml) ? '' : `store: { kind: sqlite, path: ${JSON.stringify(path.join(dir, 'ferry.db'))} }`,
    /^admin:/m.test(yaml) ? '' : 'admin: { enabled: false }',
  ].filter(Boolean);
  const file = path.join(dir, 'ferry.yaml');
  fs.writeFileSync(file, [...head, yaml].join('\n'), { mode: 0o600 });
  const engine = await Engine.create({
    configFile: file,
    env: opts.env ?? process.env,
    logger: opts.logger ?? silentLogger(),
  });
  await engine.start();
  return {
    engine,
    dir,
    async stop() {
      await engine.stop();
      if (!opts.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
