/**
 * The built `ferry` CLI and the admin surface: the first start with no principal prints an
 * initial admin token once on the terminal (never in the log) and keeps only its hash;
 * `ferry token create|list|revoke`; `ferry audit`; the CLI's operations in the audit trail as
 * `cli:<os user>`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configure } from '@ferry/core';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
if (!built) console.warn(`skipped: ${cli} is not built (npm test builds it first)`);
const d = built ? describe : describe.skip;

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const user = (() => {
  try {
    return os.userInfo().username;
  } catch {
    return process.env.USER ?? '';
  }
})();

/** `ferry start` until "engine started"; returns the admin URL, the output so far and a stop function. */
/** Engines started here, killed after the suite if a failed test left one running (it would keep the jest worker alive). */
const children = new Set<ReturnType<typeof spawn>>();
afterAll(async () => {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  }
});

async function start(
  file: string,
): Promise<{ url: string; out: () => { stdout: string; stderr: string }; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [cli, 'start', '-c', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`engine did not start: ${stderr}`)), 20_000);
    const check = () => {
      if (stderr.includes('engine started')) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stderr.on('data', check);
    child.on('exit', () => reject(new Error(`engine exited: ${stderr}`)));
  });
  const url = /"admin":"([^"]+)"/.exec(stderr)![1];
  return {
    url,
    out: () => ({ stdout, stderr }),
    stop: () =>
      new Promise((resolve) => {
        child.on('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

d('ferry CLI: initial token, tokens, audit', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-sec-cli-'));
  const file = path.join(dir, 'ferry.yaml');
  writeFileSync(
    file,
    `store: { kind: sqlite, path: ${dir}/ferry.db }\nsinks:\n  out: { type: file, dir: ${dir}/out }\nroutes:\n  - { id: all, to: [out] }\nadmin: { port: 0 }\nprocessing: { transformWorkers: 0 }\n`,
  );

  it('the first start with no principal prints an initial admin token once, on the terminal only; the next start does not', async () => {
    const e = await start(file);
    const { stderr } = e.out();
    const token = /^\s+(ferry_[a-z0-9]+_[A-Za-z0-9_-]{43})$/m.exec(stderr)?.[1];
    expect(token).toBeDefined();
    // Never inside a log line (JSON), and the log says only that it was made, with its id.
    for (const line of stderr.split('\n').filter((l) => l.startsWith('{'))) expect(line).not.toContain(token!);
    expect(stderr).toMatch(/"message":"no admin principal configured: created the initial admin API token/);
    expect((await fetch(`${e.url}/api/stats`)).status).toBe(401);
    expect((await fetch(`${e.url}/api/stats`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await fetch(`${e.url}/api/tokens`, { headers: { authorization: `bearer ${token}` } })).status).toBe(200);
    expect(await e.stop()).toBe(0);
    // Only its hash is in the store file.
    expect(readFileSync(path.join(dir, 'ferry.db')).includes(Buffer.from(token!))).toBe(false);
    const again = await start(file);
    // (ferry start installs its SIGTERM handler just after "engine started": one request first.)
    expect((await fetch(`${again.url}/health`)).status).toBe(200);
    expect(again.out().stderr).not.toMatch(/ferry_[a-z0-9]+_/);
    expect(await again.stop()).toBe(0);
    expect(run(['audit', '-c', file, '--action', 'token.create']).stdout).toMatch(
      /system:first-start\t-\t-\ttoken\.create\t[a-z0-9]+\tok/,
    );
  }, 60_000);

  it('token create prints the secret once; list shows it without; revoke ends it; each is audited as cli:<user>', () => {
    const made = run([
      'token',
      'create',
      '-c',
      file,
      '--name',
      'ci-bot',
      '--role',
      'operator',
      '--expires',
      '30d',
      '--json',
    ]);
    expect(made.stderr).toBe('');
    const t = JSON.parse(made.stdout) as {
      id: string;
      token: string;
      roles: string[];
      expiresAt: string;
      state: string;
    };
    expect(t).toMatchObject({ roles: ['operator'], state: 'active' });
    expect(t.token).toMatch(/^ferry_/);
    const list = run(['token', 'list', '-c', file]);
    expect(list.stdout).toMatch(new RegExp(`^${t.id}\\tci-bot\\toperator\\tactive\\t`, 'm'));
    expect(list.stdout).not.toContain(t.token);
    expect(list.stdout).not.toContain('scrypt$');
    const bad = run(['token', 'create', '-c', file, '--name', 'x', '--role', 'root']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/roles: one or more of viewer, operator, phi-reader, admin/);
    expect(run(['token', 'revoke', t.id, '-c', file]).stdout).toMatch(/revoked/);
    expect(run(['token', 'revoke', t.id, '-c', file]).code).toBe(1);
    expect(run(['token', 'list', '-c', file]).stdout).toMatch(
      new RegExp(`^${t.id}\\tci-bot\\toperator\\trevoked\\t`, 'm'),
    );
    const audit = run(['audit', '-c', file, '--principal', `cli:${user}`, '--json']);
    const entries = audit.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { action: string; target?: string; result: string });
    expect(entries.filter((e) => e.target === t.id).map((e) => `${e.action} ${e.result}`)).toEqual([
      'token.revoke ok',
      'token.revoke ok',
      'token.create ok',
    ]);
    expect(entries.some((e) => e.action === 'token.create' && e.result === 'invalid')).toBe(true);
  });

  it('sink hold / release, prune and replay from the CLI are in the audit trail', () => {
    expect(run(['sink', 'hold', 'out', '-c', file, '--minutes', '5']).code).toBe(0);
    expect(run(['sink', 'release', 'out', '-c', file]).code).toBe(0);
    expect(run(['prune', '-c', file]).code).toBe(0);
    expect(run(['replay', '-c', file, '--status', 'dead', '--dry-run']).code).toBe(0);
    const actions = run(['audit', '-c', file, '--principal', `cli:${user}`]).stdout;
    for (const a of ['sink.hold', 'sink.release', 'prune', 'replay.dry-run'])
      expect(actions).toMatch(new RegExp(`\\t${a.replace('.', '\\.')}\\t`));
    expect(run(['audit', '-c', file, '--since', 'soon']).code).not.toBe(0);
  });

  it('token create --config-entry prints an admin.auth.tokens entry the config accepts, storing nothing', async () => {
    const r = run(['token', 'create', '--name', 'prometheus', '--role', 'viewer', '--config-entry', '--json']);
    expect(r.code).toBe(0);
    const { entry, token } = JSON.parse(r.stdout) as { entry: { id: string; hash: string }; token: string };
    expect(entry.hash).toMatch(/^scrypt\$/);
    expect(token.startsWith(`ferry_${entry.id}_`)).toBe(true);
    const { config } = await configure({ config: { admin: { auth: { tokens: [entry] } } } });
    expect(config.admin.auth.tokens[0]).toMatchObject({ id: entry.id, roles: ['viewer'] });
    await expect(configure({ config: { admin: { auth: { tokens: [{ ...entry, hash: token }] } } } })).rejects.toThrow(
      /hash: must be a scrypt/,
    );
    expect(run(['token', 'list', '-c', file]).stdout).not.toContain(entry.id);
  });
});
