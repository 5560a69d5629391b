/**
 * The built `ferry` CLI as a user runs it (npm test builds first): validate-config, convert,
 * start + SIGTERM, a sink held and released from another process beside a running engine.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '@ferry/core';
import { requires } from '../support/requires';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
const d = requires({ ok: built, reason: `${path.relative(root, cli)} is not built (run npm run build)` });

function run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd: opts.cwd ?? root,
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `run` without blocking this process's event loop (an engine may be running in it). */
function runAsync(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
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
    writeFileSync(
      file,
      `store: { kind: sqlite, path: ${dir}/x.db }\nsinks:\n  out: { type: file, dir: ${dir}/out }\nroutes:\n  - { id: all, to: [out] }\n`,
    );
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

  it('convert prints the data-quality issues on stderr: location, FHIR path, reason -- not the value; the Bundle on stdout', () => {
    const file = path.join(dir, 'dq.hl7');
    writeFileSync(
      file,
      'MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A01^ADT_A01|DQ1|P|2.5.1\rPID|1||MRN1^^^HOSP^MR||DOE^JANE||Quibblesworth-DOB|F\r',
    );
    const r = run(['convert', file]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).resourceType).toBe('Bundle');
    expect(r.stderr).toContain('message 1: 1 data-quality issue(s)');
    expect(r.stderr).toMatch(/warning PID-7 \(Patient\.birthDate\): invalid-date: not a valid HL7 date/);
    expect(r.stderr).not.toContain('Quibblesworth');
  });

  it('sink hold / holds / release from another process: the running engine stops and resumes that sink within a second or so', async () => {
    const file = path.join(dir, 'hold.yaml');
    const out = path.join(dir, 'hold-out');
    writeFileSync(
      file,
      `store: { kind: sqlite, path: ${dir}/hold.db }\nplugins: ['@ferry/plugin-hl7v2-mllp']\nsinks:\n  out: { type: file, dir: ${out}, format: ndjson }\nroutes:\n  - { id: all, to: [out] }\nadmin: { enabled: false }\nprocessing: { pollIntervalMs: 50 }\n`,
    );
    const engine = await Engine.create({ configFile: file });
    await engine.start();
    const lines = () =>
      existsSync(out)
        ? readdirSync(out)
            .map((f) => readFileSync(path.join(out, f), 'utf8').split('\n').filter(Boolean).length)
            .reduce((a, b) => a + b, 0)
        : 0;
    const adt = (n: number) => ({
      contentType: 'application/hl7-v2',
      body: Buffer.from(
        `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000||ADT^A08^ADT_A01|H${n}|P|2.5.1\rPID|1||MRN${n}^^^HOSP^MR||DOE^JANE||19800101|F\r`,
      ),
    });
    try {
      const held = await runAsync(['sink', 'hold', 'out', '-c', file, '--reason', 'EHR downtime', '--json']);
      expect(held.stderr).toBe('');
      expect(JSON.parse(held.stdout)).toMatchObject({ sinkId: 'out', reason: 'EHR downtime' });
      const bad = await runAsync(['sink', 'hold', 'nope', '-c', file]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/no sink "nope"/);
      // The engine reads the holds from the store every second.
      const t0 = Date.now();
      while (!engine.sinkViews()[0]?.hold && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 50));
      expect(engine.sinkViews()[0].hold).toMatchObject({ reason: 'EHR downtime' });
      await engine.submit('feed', [adt(1), adt(2)]);
      await new Promise((r) => setTimeout(r, 500));
      expect(lines()).toBe(0);
      expect((await runAsync(['sink', 'holds', '-c', file])).stdout).toMatch(
        /^out\tsince .*\tuntil released\tEHR downtime$/m,
      );
      expect((await runAsync(['sink', 'release', 'out', '-c', file])).stdout).toMatch(/sink out released/);
      await engine.waitForIdle(10_000);
      expect(lines()).toBe(2);
      expect((await runAsync(['sink', 'holds', '-c', file])).stdout).toMatch(/no sink is held/);
    } finally {
      await engine.stop();
    }
  }, 30_000);

  it('start runs the engine and stops cleanly on SIGTERM within 10 s', async () => {
    const file = path.join(dir, 'start.yaml');
    writeFileSync(
      file,
      `store: { kind: sqlite, path: ${dir}/start.db }\nsinks:\n  out: { type: file, dir: ${dir}/out }\nroutes:\n  - { id: all, to: [out] }\nadmin: { port: 0 }\n`,
    );
    const child = spawn(process.execPath, [cli, 'start', '-c', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
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
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toContain('engine stopped');
    } finally {
      // A failed start or check: the engine is not left running (it would keep the jest worker alive).
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  });
});
