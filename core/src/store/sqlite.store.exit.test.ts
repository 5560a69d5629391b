/**
 * A SQLite store left open does not keep its process alive: its WAL checkpoint thread is unref'd
 * (a `message` listener added after `unref()` refs the thread's port again -- it did, and a test
 * failing before its store's close left jest's worker running: "A worker process has failed to
 * exit gracefully"). Run in a child process of the built package, which must end on its own.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cliRequirement, repoRoot, requires } from '../../../test/support/requires';

const d = requires(cliRequirement());

d('a SQLite store that is never closed', () => {
  const expectExitsByItself = (read: boolean) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-store-exit-'));
    try {
      const script = `
        const core = require(${JSON.stringify(path.join(repoRoot, 'core/dist/index.js'))});
        (async () => {
          const s = new core.SqliteMessageStore({ path: process.argv[1], logger: core.silentLogger() });
          await s.open();
          await s.insert([{ sourceId: 's', contentType: 'text/plain', body: Buffer.from('x') }]);
          // an admin read runs on the checkpoint thread's connection (the thread is held while it runs)
          const listed = process.argv[2] === 'read' ? (await s.listMessages({ limit: 5 })).length : 0;
          process.stdout.write('done ' + listed);
        })().catch((e) => { console.error(e); process.exit(3); });`;
      const r = spawnSync(process.execPath, ['-e', script, path.join(dir, 'ferry.db'), read ? 'read' : 'write'], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`done ${read ? 1 : 0}`);
      expect(r.signal).toBeNull(); // not killed by the timeout: it ended by itself
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('lets its process exit once the work is done', () => expectExitsByItself(false));
  it('lets its process exit after an admin read on its checkpoint thread', () => expectExitsByItself(true));
});
