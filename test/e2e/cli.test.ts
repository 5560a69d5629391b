/**
 * The built `ferry` CLI as a user runs it (npm test builds first): validate-config, convert,
 * start + SIGTERM.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
if (!built) console.warn(`skipped: ${cli} is not built (npm test builds it first)`);
const d = built ? describe : describe.skip;

function run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: opts.cwd ?? root, env: { ...process.env, ...opts.env }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

d('ferry CLI', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-cli-'));

  it('prints help listing its commands', () => {
    const r = run(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['start', 'validate-config', 'convert']) expect(r.stdout).toContain(c);
    expect(run(['validate-config', '--help']).stdout).toContain('<file>');
  });

  it("is `npx ferry` after the build (the README's commands; npm links a workspace's bin only when its file exists, so the build links it)", () => {
    const bin = path.join(root, 'node_modules/.bin/ferry');
    expect(existsSync(bin)).toBe(true);
    const r = spawnSync(bin, ['--help'], { cwd: root, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('validate-config');
  });

  it('validate-config says OK on a good file and exits 0', () => {
    const file = path.join(dir, 'good.yaml');
    writeFileSync(file, `store: { kind: sqlite, path: ${dir}/x.db }\nsinks:\n  out: { type: file, dir: ${dir}/out }\nroutes:\n  - { id: all, to: [out] }\n`);
    const r = run(['validate-config', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/OK \(0 sources, 1 sinks, 1 routes\)/);
  });

  it('validate-config prints every problem with its path and exits non-zero', () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(
      file,
      [
        'store: { kind: mysql }',
        'admin: { port: 99999 }',
        'sinks:',
        '  fhir: { type: fhir, baseUrl: "not a url", bogus: 1 }',
        '  out: { type: carrier-pigeon }',
        'routes:',
        '  - id: r1',
        '    from: [nowhere]',
        '    to: [fhir, fihr]',
        '    when: { fhirpath: "Bundle.entry.(" }',
        '',
      ].join('\n'),
    );
    const r = run(['validate-config', file]);
    expect(r.code).toBe(2);
    const expected = [
      'store.kind: ',
      'admin.port: ',
      'sinks.fhir.bogus: unknown key',
      'sinks.out.type: unknown sink type "carrier-pigeon"',
      'routes[0].from[0]: unknown source "nowhere"',
      'routes[0].to[1]: unknown sink "fihr"',
      'routes[0].when.fhirpath: invalid FHIRPath',
    ];
    for (const e of expected) expect(r.stderr).toContain(e);
  });

  it('validate-config names an unknown plugin and an unreadable file', () => {
    const file = path.join(dir, 'plugin.yaml');
    writeFileSync(file, "plugins: ['@acme/ferry-plugin-missing']\n");
    const r = run(['validate-config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('plugins[0]: plugin "@acme/ferry-plugin-missing" not found');
    const r2 = run(['validate-config', path.join(dir, 'nope.yaml')]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('config file not found');
  });

  it('convert refuses bad input with a clear message and a non-zero exit', () => {
    const empty = path.join(dir, 'empty.hl7');
    writeFileSync(empty, '');
    const r = run(['convert', empty]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/empty/);
    const r2 = run(['convert', path.join(dir, 'missing.hl7')]);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/cannot read/);
  });

  it('start runs the engine and stops cleanly on SIGTERM within 10 s', async () => {
    const file = path.join(dir, 'start.yaml');
    writeFileSync(file, `store: { kind: sqlite, path: ${dir}/start.db }\nsinks:\n  out: { type: file, dir: ${dir}/out }\nroutes:\n  - { id: all, to: [out] }\nadmin: { port: 0 }\n`);
    const child = spawn(process.execPath, [cli, 'start', '-c', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`engine did not start: ${stderr}`)), 20_000);
      child.stderr.on('data', () => {
        if (stderr.includes('engine started')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const url = /"admin":"([^"]+)"/.exec(stderr)?.[1];
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(stderr).toContain('engine stopped');
  });
});
