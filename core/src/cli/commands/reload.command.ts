import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import type { CliCommand } from '../../plugin/api';
import { resolveConfigPath } from '../config-path';

/** True when an engine holds the SQLite store's engine lock (an EXCLUSIVE transaction on the lock file). */
function engineLockHeld(lockFile: string): boolean {
  if (!existsSync(lockFile)) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
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
 * `ferry reload`: asks the engine running with this config (SQLite store: the process named in
 * the store's `<file>-engine.pid`) to reload its config file -- a SIGHUP. The outcome (applied,
 * or refused with every problem) is in the engine's log; `POST /api/config/reload` answers it.
 */
export const reloadCommand: CliCommand = {
  name: 'reload',
  description: "make the running engine re-read, validate and apply its config file (SIGHUP to the engine of the config's SQLite store; the outcome is in its log -- POST /api/config/reload answers it)",
  async run(_args, o, ctx) {
    const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
    if (!file) throw new FerryError('CONFIG_NO_FILE', 'no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml', { kind: 'config' });
    const { config } = await configure({ configFile: file });
    if (config.store.kind !== 'sqlite' || !config.store.path || config.store.path === ':memory:')
      throw new FerryError('INPUT_RELOAD_TARGET', 'ferry reload finds the engine by its SQLite store; with PostgreSQL (several instances) call POST /api/config/reload on each instance, or send each SIGHUP', { kind: 'input' });
    const dbFile = path.resolve(config.baseDir, config.store.path);
    const pidFile = `${dbFile}-engine.pid`;
    // A pid file left by an engine killed with -9 may name an unrelated process by now: signal only
    // while the store's engine lock is held (see SqliteMessageStore.lockForEngine).
    if (!engineLockHeld(`${dbFile}-engine.lock`)) throw new FerryError('INPUT_NO_ENGINE', `no engine is running on the store ${dbFile}`, { kind: 'input' });
    let pid: number;
    try {
      pid = Number(readFileSync(pidFile, 'utf8').trim());
    } catch {
      throw new FerryError('INPUT_NO_ENGINE', `no running engine found for this config (no ${pidFile})`, { kind: 'input' });
    }
    try {
      if (!Number.isInteger(pid) || pid <= 0) throw new Error('bad pid');
      process.kill(pid, 'SIGHUP');
    } catch {
      throw new FerryError('INPUT_NO_ENGINE', `no running engine found for this config (pid file ${pidFile} names no live process)`, { kind: 'input' });
    }
    out(`asked the engine (pid ${pid}) to reload ${file}; the outcome ("config reloaded" or "config reload refused" with every problem) is in its log`);
    return 0;
  },
};
