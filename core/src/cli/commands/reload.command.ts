import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { EngineConfig } from '../../config/engine.schema';
import { silentLogger } from '../../logging/logger';
import { createStore } from '../../store/create-store';
import type { LiveInstance } from '../../store/message-store';
import { fileModesOf } from '../../util/file-modes';
import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import { resolveConfigPath } from '../config-path';

/** True when an engine holds the SQLite store's engine lock (an EXCLUSIVE transaction on the lock file). */
function engineLockHeld(lockFile: string): boolean {
  if (!existsSync(lockFile)) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: the native SQLite binding loads only when a lock file exists
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  const db = new Database(lockFile, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 0');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('ROLLBACK');
    return false;
  } catch (e) {
    return (e as { code?: string }).code === 'SQLITE_BUSY';
  } finally {
    db.close();
  }
}

const out = (s: string) => process.stdout.write(`${s}\n`);

/**
 * PostgreSQL: the engines sharing the store are its live instances (a heartbeat younger than
 * `processing.instanceTimeoutMs`, each row naming its host and pid). Those on this host get a
 * SIGHUP; those on other hosts are listed (run `ferry reload` there, or POST /api/config/reload).
 * Exit 0 when every live instance was signalled, 1 when some could not be (named), or none runs.
 */
async function reloadPostgresInstances(file: string, config: EngineConfig): Promise<number> {
  const store = createStore(config.store, silentLogger(), config.baseDir, { fileModes: fileModesOf(config) });
  await store.open();
  let live: LiveInstance[];
  try {
    live = (await store.liveInstances?.(config.processing.instanceTimeoutMs)) ?? [];
  } finally {
    await store.close();
  }
  if (!live.length)
    throw new FerryError(
      'INPUT_NO_ENGINE',
      `no engine is running on this PostgreSQL store (no instance heartbeat within ${config.processing.instanceTimeoutMs} ms)`,
      { kind: 'input' },
    );
  const here = os.hostname();
  let missed = 0;
  for (const i of live) {
    if (i.host !== here) {
      missed++;
      out(
        `instance ${i.id} runs on ${i.host || '(unknown host)'} (pid ${i.pid}): not signalled from here -- run ferry reload on that host, or POST /api/config/reload to it`,
      );
      continue;
    }
    try {
      if (!Number.isInteger(i.pid) || i.pid <= 0 || i.pid === process.pid) throw new Error('bad pid');
      process.kill(i.pid, 'SIGHUP');
      out(
        `asked the engine instance ${i.id} (pid ${i.pid}) to reload ${file}; the outcome ("config reloaded" or "config reload refused" with every problem) is in its log`,
      );
    } catch {
      missed++;
      out(`instance ${i.id} (pid ${i.pid}): no such process on this host (it stopped since its last heartbeat?)`);
    }
  }
  return missed ? 1 : 0;
}

/**
 * `ferry reload`: asks the engine(s) running with this config to reload their config file -- a
 * SIGHUP. SQLite store: the process named in the store's `<file>-engine.pid` (while it holds the
 * engine lock). PostgreSQL: every live instance on this host (`reloadPostgresInstances`). The
 * outcome (applied, or refused with every problem) is in each engine's log; `POST
 * /api/config/reload` answers it.
 */
export const reloadCommand: CliCommand = {
  name: 'reload',
  description:
    "make the running engine re-read, validate and apply its config file: a SIGHUP to the engine of the config's SQLite store, or to each live instance (on this host) of its PostgreSQL store; the outcome is in its log -- POST /api/config/reload answers it",
  async run(_args, o, ctx) {
    const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
    if (!file)
      throw new FerryError(
        'CONFIG_NO_FILE',
        'no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml',
        { kind: 'config' },
      );
    const { config } = await configure({ configFile: file });
    if (config.store.kind === 'postgres') return reloadPostgresInstances(file, config);
    if (!config.store.path || config.store.path === ':memory:')
      throw new FerryError(
        'INPUT_RELOAD_TARGET',
        'ferry reload finds the engine by its store; an in-memory SQLite store has no engine to find: call POST /api/config/reload',
        { kind: 'input' },
      );
    const dbFile = path.resolve(config.baseDir, config.store.path);
    const pidFile = `${dbFile}-engine.pid`;
    // A pid file left by an engine killed with -9 may name an unrelated process by now: signal only
    // while the store's engine lock is held (see SqliteMessageStore.lockForEngine).
    if (!engineLockHeld(`${dbFile}-engine.lock`))
      throw new FerryError('INPUT_NO_ENGINE', `no engine is running on the store ${dbFile}`, { kind: 'input' });
    let pid: number;
    try {
      pid = Number(readFileSync(pidFile, 'utf8').trim());
    } catch {
      throw new FerryError('INPUT_NO_ENGINE', `no running engine found for this config (no ${pidFile})`, {
        kind: 'input',
      });
    }
    try {
      if (!Number.isInteger(pid) || pid <= 0) throw new Error('bad pid');
      process.kill(pid, 'SIGHUP');
    } catch {
      throw new FerryError(
        'INPUT_NO_ENGINE',
        `no running engine found for this config (pid file ${pidFile} names no live process)`,
        { kind: 'input' },
      );
    }
    out(
      `asked the engine (pid ${pid}) to reload ${file}; the outcome ("config reloaded" or "config reload refused" with every problem) is in its log`,
    );
    return 0;
  },
};
