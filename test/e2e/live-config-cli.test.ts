/**
 * Live configuration through the built CLI: `ferry start`, then `ferry reload` (a SIGHUP to the
 * engine holding the store) with a valid change and a raw SIGHUP with an invalid one; the
 * engine logs both outcomes; `ferry config history` and `ferry config diff` read the versions.
 * With PostgreSQL: `ferry reload` signals each live instance on this host (two engines).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { cliRequirement, pgRequirement, requires, TEST_PG_URL } from '../support/requires';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
if (!built) console.warn(`skipped: ${cli} is not built (npm test builds it first)`);
const d = built ? describe : describe.skip;

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

d('ferry reload / config history / config diff', () => {
  jest.setTimeout(60_000);

  it('reloads on `ferry reload`, refuses an invalid file on SIGHUP, and lists and diffs the versions', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-reload-cli-'));
    const file = path.join(dir, 'ferry.yaml');
    const head = `store: { kind: sqlite, path: ${dir}/ferry.db }\nadmin: { enabled: false }\n`;
    writeFileSync(file, `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\nroutes:\n  - { id: r1, to: [a] }\n`);
    const child = spawn(process.execPath, [cli, 'start', '-c', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const waitFor = (text: string, from = 0) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "${text}" in: ${stderr}`)), 20_000);
        const check = () => {
          if (stderr.indexOf(text, from) >= 0) {
            clearTimeout(t);
            resolve();
          }
        };
        child.stderr.on('data', check);
        check();
      });
    try {
      await waitFor('engine started');
      writeFileSync(
        file,
        `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\n  b: { type: file, dir: ${dir}/b }\nroutes:\n  - { id: r1, to: [a, b] }\n`,
      );
      let mark = stderr.length;
      const r = await runAsync(['reload', '-c', file]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/asked the engine \(pid \d+\) to reload/);
      await waitFor('"message":"config reloaded"', mark);
      expect(stderr.slice(mark)).toMatch(/"by":"signal".*"version":2/);

      writeFileSync(
        file,
        `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\nroutes:\n  - { id: r1, to: [nowhere] }\n`,
      );
      mark = stderr.length;
      child.kill('SIGHUP');
      await waitFor('config reload refused', mark);
      expect(stderr.slice(mark)).toContain('routes[0].to[0]: unknown sink');
      // The file fixed again (the commands below read the store it names).
      writeFileSync(
        file,
        `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\n  b: { type: file, dir: ${dir}/b }\nroutes:\n  - { id: r1, to: [a, b] }\n`,
      );

      const h = await runAsync(['config', 'history', '-c', file]);
      expect(h.code).toBe(0);
      expect(h.stdout).toMatch(/^2\t\S+\tsignal\t[0-9a-f]{16}\n1\t\S+\tstart\t[0-9a-f]{16}\n$/);
      const diff = await runAsync(['config', 'diff', '1', '2', '-c', file]);
      expect(diff.code).toBe(0);
      expect(diff.stdout).toContain('+ routes[0].to[1]: "b"');
      expect(diff.stdout).toMatch(/^\+ sinks\.b: \{.*"type":"file"\}$/m);
      expect((await runAsync(['config', 'diff', '1', '9', '-c', file])).stderr).toContain('no config version 9');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.on('exit', r));
    }
    // No engine now: ferry reload says so rather than signalling a stale pid.
    const none = await runAsync(['reload', '-c', file]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no engine is running/);
  });

  it("test-route shows each route's match or failed clause, the steps and the Bundle per sink, creating no store", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-test-route-'));
    const file = path.join(dir, 'ferry.yaml');
    writeFileSync(
      file,
      [
        `store: { kind: sqlite, path: ${dir}/ferry.db }`,
        'plugins: ["@ferry/plugin-hl7v2-mllp"]',
        'sources:',
        '  feed: { type: mllp, port: 0 }',
        'sinks:',
        `  a: { type: file, dir: ${dir}/a }`,
        `  b: { type: file, dir: ${dir}/b }`,
        'routes:',
        `  - { id: women, when: { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'female'" }, to: [a] }`,
        '  - { id: orders, when: { messageType: ["ORM^*"] }, to: [a] }',
        '  - { id: all, steps: [validate], to: [b] }',
        '',
      ].join('\n'),
    );
    const msg = path.join(dir, 'adt.hl7');
    writeFileSync(
      msg,
      [
        'MSH|^~\\&|APP|FAC|FERRY|HOSP|20240101120000||ADT^A01^ADT_A01|T1|P|2.5.1',
        'EVN|A01|20240101120000',
        'PID|1||MRN1^^^HOSP^MR||DOE^JOHN||19800101|M',
        'PV1|1|I|WARD1^101^A',
        '',
      ].join('\r'),
    );
    const r = await runAsync(['test-route', msg, '-c', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('type ADT^A01');
    expect(r.stdout).toMatch(/^route women: no match -- when\.fhirpath: .* is false$/m);
    expect(r.stdout).toMatch(
      /^route orders: no match -- when\.messageType: message type ADT\^A01 not in \[ORM\^\*\]$/m,
    );
    expect(r.stdout).toMatch(
      /^route all: matches\n {2}step validate: passed\n {2}-> sink b: \{"resourceType":"Bundle"/m,
    );
    expect(r.stdout).toMatch(/^delivered to: b$/m);
    expect(existsSync(path.join(dir, 'ferry.db'))).toBe(false);
    expect(existsSync(path.join(dir, 'b'))).toBe(false);

    // The same as `tests:` in the config, run by validate-config --test: one holds, one does not.
    const base = readFileSync(file, 'utf8');
    const withTests = (second: string) =>
      `${base}tests:\n  - { name: men go to b only, message: adt.hl7, expect: { routes: [all], sinks: [b], fhirpath: ["Bundle.entry.resource.ofType(Patient).gender = 'male'"] } }\n${second}`;
    writeFileSync(file, withTests(''));
    const ok = await runAsync(['validate-config', '--test', file]);
    expect(ok.stdout).toMatch(/^ok {2}men go to b only$/m);
    expect(ok.stdout).toContain('1 of 1 route tests passed');
    expect(ok.code).toBe(0);
    writeFileSync(
      file,
      withTests(
        `  - { name: wrong, message: adt.hl7, expect: { routes: [women], sinks: [a], fhirpath: ["Bundle.entry.resource.ofType(Patient).gender = 'female'"] } }\n`,
      ),
    );
    const bad = await runAsync(['validate-config', '--test', file]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(
      /^FAIL {2}wrong\n {6}routes: expected \[women\], got \[all\]\n {6}sinks: expected \[a\], got \[b\]\n {6}fhirpath .*: false for the Bundle of b$/m,
    );
    expect(bad.stdout).toContain('1 of 2 route tests passed');
    // A test naming a route or sink that does not exist is a config problem.
    writeFileSync(file, withTests('  - { message: adt.hl7, expect: { routes: [nope] } }\n'));
    const invalid = await runAsync(['validate-config', '--test', file]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('tests[1].expect.routes[0]: unknown route "nope"');
  });
});

requires(pgRequirement(), cliRequirement())('ferry reload with a PostgreSQL store', () => {
  jest.setTimeout(90_000);
  const schema = `ferry_reload_${Math.random().toString(16).slice(2, 10)}`;
  const sql = async (text: string, values: unknown[] = []) => {
    const c = new pg.Client({ connectionString: TEST_PG_URL });
    await c.connect();
    try {
      return await c.query(text, values);
    } finally {
      await c.end();
    }
  };
  afterAll(() => sql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));

  it('signals every live instance on this host (found by their heartbeats), names one on another host, and says when none runs', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-reload-pg-'));
    const file = path.join(dir, 'ferry.yaml');
    const head = `store: { kind: postgres, url: "${TEST_PG_URL}", schema: ${schema} }\nadmin: { enabled: false }\nprocessing: { transformWorkers: 0 }\n`;
    writeFileSync(file, `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\nroutes:\n  - { id: r1, to: [a] }\n`);
    // Two instances of one engine sharing the store.
    const engines = [0, 1].map(() => {
      const child = spawn(process.execPath, [cli, 'start', '-c', file], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const e = { child, stderr: '' };
      child.stderr.on('data', (c) => (e.stderr += c));
      return e;
    });
    const waitFor = (e: (typeof engines)[number], text: string, from = 0) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "${text}" in: ${e.stderr}`)), 30_000);
        const check = () => {
          if (e.stderr.indexOf(text, from) >= 0) {
            clearTimeout(t);
            resolve();
          }
        };
        e.child.stderr.on('data', check);
        check();
      });
    try {
      for (const e of engines) await waitFor(e, 'engine started');
      writeFileSync(
        file,
        `${head}sinks:\n  a: { type: file, dir: ${dir}/a }\n  b: { type: file, dir: ${dir}/b }\nroutes:\n  - { id: r1, to: [a, b] }\n`,
      );
      const marks = engines.map((e) => e.stderr.length);
      const r = await runAsync(['reload', '-c', file]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const pids = engines.map((e) => e.child.pid);
      for (const pid of pids) expect(r.stdout).toContain(`(pid ${pid}) to reload`);
      for (const [i, e] of engines.entries()) {
        await waitFor(e, '"message":"config reloaded"', marks[i]);
        expect(e.stderr.slice(marks[i])).toMatch(/"by":"signal".*"version":2/);
      }

      // An instance on another host (its heartbeat fresh): named, not signalled; exit 1.
      await sql(
        `INSERT INTO ${schema}.instances (id, host, pid, started_at, heartbeat_at) VALUES ('elsewhere:42:x', 'other-host', 42, 0, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint)`,
      );
      const partial = await runAsync(['reload', '-c', file]);
      expect(partial.code).toBe(1);
      expect(partial.stdout).toMatch(/instance elsewhere:42:x runs on other-host \(pid 42\): not signalled from here/);
      for (const pid of pids) expect(partial.stdout).toContain(`(pid ${pid}) to reload`);
      await sql(`DELETE FROM ${schema}.instances WHERE id = 'elsewhere:42:x'`);
    } finally {
      for (const e of engines) {
        e.child.kill('SIGTERM');
        await new Promise((res) => (e.child.exitCode !== null ? res(undefined) : e.child.on('exit', res)));
      }
    }
    // Stopped engines deregister: none is live now.
    const none = await runAsync(['reload', '-c', file]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no engine is running on this PostgreSQL store/);
  });
});
