/**
 * Files at rest hold PHI: everything the engine creates -- the SQLite store, its WAL and shared
 * memory, the lock and pid files, file-sink output, file-source done/error files and .reason
 * files -- is 0600 in 0700 folders by default (`files.umask: '0077'`), and follows the setting
 * when it is changed. Checked with fs.stat on a real engine; the test process's own umask (usually
 * 0022) would give 0644 / 0755.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger, SqliteMessageStore, parseUmask, fileModes } from '@ferry/core';
import { waitFor } from '../reliability/support';
import { openConfiguredStore } from '../../core/src/cli/commands/replay.command';

const adt = (ctl: string) =>
  [
    `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|${ctl}|P|2.5.1`,
    'EVN|A01|20240101120000',
    'PID|1||12345^^^HOSP^MR||DOE^JANE||19800101|F',
  ].join('\r') + '\r';

const mode = (p: string) => (statSync(p).mode & 0o777).toString(8).padStart(4, '0');

function config(dir: string, extra: Record<string, unknown> = {}) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'data', 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { pollIntervalMs: 50, transformWorkers: 0 },
    admin: { enabled: false },
    sources: { drop: { type: 'file', dir: path.join(dir, 'in'), pollIntervalMs: 50, stableMs: 50 } },
    sinks: {
      lines: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' },
      files: { type: 'file', dir: path.join(dir, 'json'), format: 'json' },
    },
    routes: [{ id: 'all', from: ['drop'], to: ['lines', 'files'] }],
    ...extra,
  };
}

async function run(dir: string, extra: Record<string, unknown> = {}): Promise<Engine> {
  const e = await Engine.create({ config: config(dir, extra), logger: silentLogger() });
  await e.start();
  // files dropped by another account with its own (open) modes
  mkdirSync(path.join(dir, 'in'), { recursive: true });
  writeFileSync(path.join(dir, 'in', 'good.hl7'), adt('FM1'), { mode: 0o644 });
  writeFileSync(path.join(dir, 'in', 'bad.hl7'), 'this is not HL7', { mode: 0o644 });
  await waitFor(
    'both files handled',
    () => existsSync(path.join(dir, 'in', 'done', 'good.hl7')) && existsSync(path.join(dir, 'in', 'error', 'bad.hl7')),
    10_000,
  );
  await e.waitForIdle(10_000);
  return e;
}

describe('files at rest (security)', () => {
  it('default umask 0077: store, WAL, pid and lock files, sink output and done/error files are 0600 in 0700 folders', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-sec-files-'));
    const e = await run(dir);
    const db = path.join(dir, 'data', 'ferry.db');
    try {
      expect(existsSync(`${db}-wal`)).toBe(true);
      const files = [
        db,
        `${db}-wal`,
        `${db}-shm`,
        `${db}-engine.pid`,
        `${db}-engine.lock`,
        path.join(dir, 'out', 'bundles.ndjson'),
        path.join(dir, 'in', 'done', 'good.hl7'),
        path.join(dir, 'in', 'error', 'bad.hl7'),
        path.join(dir, 'in', 'error', 'bad.hl7.reason'),
      ];
      const json = readdirSync(path.join(dir, 'json')).map((f) => path.join(dir, 'json', f));
      expect(json).toHaveLength(1);
      for (const f of [...files, ...json])
        expect(`${path.relative(dir, f)} ${mode(f)}`).toBe(`${path.relative(dir, f)} 0600`);
      for (const d of ['data', 'out', 'json', 'in', 'in/done', 'in/error'])
        expect(`${d} ${mode(path.join(dir, d))}`).toBe(`${d} 0700`);
    } finally {
      await e.stop();
    }
    expect(existsSync(`${db}-engine.pid`)).toBe(false);
  });

  it('files.umask 0027: files 0640, folders 0750; an existing 0644 store is tightened at open', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-sec-files-'));
    const db = path.join(dir, 'data', 'ferry.db');
    // a store made by an older version, world-readable
    const old = new SqliteMessageStore({ path: db, logger: silentLogger(), fileModes: fileModes(0o022) });
    await old.open();
    await old.close();
    expect(mode(db)).toBe('0644');
    const e = await run(dir, { files: { umask: '0027' } });
    try {
      for (const f of [
        db,
        `${db}-wal`,
        path.join(dir, 'out', 'bundles.ndjson'),
        path.join(dir, 'in', 'error', 'bad.hl7.reason'),
      ])
        expect(`${path.relative(dir, f)} ${mode(f)}`).toBe(`${path.relative(dir, f)} 0640`);
      for (const d of ['out', 'in/done']) expect(`${d} ${mode(path.join(dir, d))}`).toBe(`${d} 0750`);
    } finally {
      await e.stop();
    }
    // a CLI command on the same config (ferry replay / prune / sink) keeps the configured modes
    const yaml = path.join(dir, 'ferry.yaml');
    writeFileSync(yaml, `store: { kind: sqlite, path: ${db} }\nfiles: { umask: '0027' }\n`);
    const { store } = await openConfiguredStore(yaml, undefined);
    await store.close();
    expect(mode(db)).toBe('0640');
  });

  it('files.umask must be octal', async () => {
    expect(parseUmask('0077')).toBe(0o077);
    expect(parseUmask('027')).toBe(0o027);
    expect(parseUmask('0o007')).toBe(0o007);
    expect(fileModes(0o077)).toEqual({ umask: 0o077, file: 0o600, dir: 0o700 });
    expect(() => parseUmask('0080')).toThrow(/octal umask/);
    await expect(
      Engine.create({ config: config(os.tmpdir(), { files: { umask: 'private' } }), logger: silentLogger() }),
    ).rejects.toThrow(/files\.umask/);
  });
});
