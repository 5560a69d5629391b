import path from 'node:path';
import type { Logger } from 'winston';
import type { EngineConfig } from '../config/engine.schema';
import { configError } from '../errors';
import type { MessageStore } from './message-store';
import { PostgresMessageStore } from './postgres.store';
import { SqliteMessageStore } from './sqlite.store';
import type { FileModes } from '../util/file-modes';

export type StoreConfig = Pick<EngineConfig['store'], 'kind'> & Partial<Omit<EngineConfig['store'], 'kind'>>;

/**
 * The store named by the config (not opened yet: call `open()`). A relative SQLite path resolves
 * against `baseDir` (default: the current directory); its folder is created at open. `engine`:
 * the store of an engine (SQLite: refused while another engine has the file open). `fileModes`:
 * SQLite files and folder (default 0600 / 0700).
 */
export function createStore(
  cfg: StoreConfig,
  logger: Logger,
  baseDir: string = process.cwd(),
  opts: { engine?: boolean; fileModes?: FileModes } = {},
): MessageStore {
  const groupCommit = cfg.groupCommit;
  const kind = cfg.kind;
  switch (kind) {
    case 'sqlite': {
      const file = cfg.path || './data/ferry.db';
      return new SqliteMessageStore({
        path: file === ':memory:' ? file : path.resolve(baseDir, file),
        logger,
        groupCommit,
        engineLock: !!opts.engine,
        fileModes: opts.fileModes,
      });
    }
    case 'postgres':
      if (!cfg.url)
        throw configError('STORE_URL', 'store.url is required when store.kind is postgres', { path: 'store.url' });
      return new PostgresMessageStore({
        url: cfg.url,
        schema: cfg.schema || undefined,
        queryTimeoutMs: cfg.queryTimeoutMs,
        logger,
        groupCommit,
      });
    default:
      kind satisfies never;
      throw configError('STORE_KIND', `unknown store kind ${String(kind)}`, { path: 'store.kind' });
  }
}
