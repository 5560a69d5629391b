/**
 * The built CLI as a user runs it: `ferry start` with an mllp source, then `ferry send` of files
 * (a batch file split), printing each ACK code and exiting non-zero unless every message was AA.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requires } from '../support/requires';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli) && existsSync(path.join(root, 'plugins/hl7v2-mllp/dist/sources/mllp.source.js'));
const d = requires({ ok: built, reason: 'the CLI or the hl7v2-mllp plugin is not built (run npm run build)' });

const adt = (ctl: string) =>
  `MSH|^~\\&|CLI|FAC|FERRY|HOSP|20240101120000||ADT^A04^ADT_A01|${ctl}|P|2.5.1\nPID|1||55^^^HOSP^MR||DOE^JO\n`;

d('ferry send against ferry start', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-mllp-cli-'));
  let engine: ChildProcess | undefined;
  let port = 0;

  beforeAll(async () => {
    const cfg = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      [
        `store: { kind: sqlite, path: ${dir}/ferry.db }`,
        "plugins: ['@ferry/plugin-hl7v2-mllp']",
        'admin: { enabled: false }',
        'sources:',
        '  feed: { type: mllp, host: 127.0.0.1, port: 0, duplicates: { policy: reject, windowMs: 60000 } }',
        'sinks:',
        `  out: { type: file, dir: ${dir}/out }`,
        'routes:',
        '  - { id: all, from: [feed], to: [out] }',
        '',
      ].join('\n'),
    );
    engine = spawn(process.execPath, [cli, 'start', '-c', cfg], {
      cwd: dir,
      env: { ...process.env, FERRY_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    port = await new Promise<number>((resolve, reject) => {
      let err = '';
      const t = setTimeout(() => reject(new Error(`engine did not start: ${err}`)), 20_000);
      engine!.stderr!.on('data', (b: Buffer) => {
        err += b.toString();
        const m =
          /"message":"mllp listener started"[^\n]*"port":(\d+)|"port":(\d+)[^\n]*"message":"mllp listener started"/.exec(
            err,
          );
        if (m) {
          clearTimeout(t);
          resolve(Number(m[1] ?? m[2]));
        }
      });
      engine!.once('exit', (code) => reject(new Error(`engine exited ${code}: ${err}`)));
    });
  }, 30_000);

  afterAll(async () => {
    if (engine && engine.exitCode === null) {
      const done = new Promise((r) => engine!.once('exit', r));
      engine.kill('SIGTERM');
      await done;
    }
  });

  const send = (...args: string[]) =>
    spawnSync(process.execPath, [cli, 'send', `127.0.0.1:${port}`, ...args], {
      cwd: root,
      encoding: 'utf8',
      timeout: 30_000,
    });

  it('sends a file and a batch file: prints AA for each, exits 0', () => {
    const one = path.join(dir, 'one.hl7');
    const batch = path.join(dir, 'batch.hl7');
    writeFileSync(one, adt('CLI-1'));
    writeFileSync(batch, `BHS|^~\\&|CLI|FAC\n${adt('CLI-2')}${adt('CLI-3')}BTS|2\n`);
    const r = send(one, batch);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const codes = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.includes('\t'))
      .map((l) => l.split('\t').slice(1, 3).join(':'));
    expect(codes).toEqual(['CLI-1:AA', 'CLI-2:AA', 'CLI-3:AA']);
  });

  it('exits non-zero when a message is not AA (malformed, or a rejected resend)', () => {
    const bad = path.join(dir, 'bad.hl7');
    writeFileSync(bad, 'MSH|^~\\&|CLI|FAC|FERRY|HOSP|2024|||NOTYPE|P|2.5.1\n');
    const r1 = send(bad);
    expect(r1.status).toBe(1);
    expect(r1.stdout).toMatch(/NOTYPE\tAR\t101/);
    const again = path.join(dir, 'again.hl7');
    writeFileSync(again, adt('CLI-1'));
    const r2 = send(again, '--json');
    const row = JSON.parse(r2.stdout.trim().split('\n')[0]);
    expect(row).toMatchObject({ controlId: 'CLI-1', code: 'AR', errCode: '205' });
    expect(r2.status).toBe(1);
  });
});
