/**
 * `ferry convert` as a user runs it (the built CLI, npm test builds first): many files, a folder, stdin,
 * NDJSON streaming, one bad input among good ones, and start-up that loads only what one conversion needs
 * (checked by the modules loaded, not by a time: speed is measured in bench/, see CONVERSION.md).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
if (!built) console.warn(`skipped: ${cli} is not built (npm test builds it first)`);
const d = built ? describe : describe.skip;

const adt = (n: number) =>
  `MSH|^~\\&|APP|FAC|FERRY|DEST|20250101120000+0100||ADT^A08^ADT_A01|C${n}|P|2.5.1\rPID|1||MRN${n}^^^HOSP^MR||DOE^JANE||19800101|F\r`;

function run(args: string[], opts: { cwd?: string; input?: string; pre?: string[] } = {}) {
  const r = spawnSync(process.execPath, [...(opts.pre ?? []), cli, ...args], {
    cwd: opts.cwd,
    input: opts.input,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

d('ferry convert: many inputs, folders, stdin, NDJSON', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-convert-'));
  const folder = path.join(dir, 'inbox');
  mkdirSync(folder);
  for (const n of [1, 2, 3]) writeFileSync(path.join(folder, `m${n}.hl7`), adt(n));
  writeFileSync(path.join(folder, 'README'), 'not a message');
  writeFileSync(path.join(folder, '.hidden.hl7'), adt(9));
  const ids = (stdout: string) =>
    stdout
      .trim()
      .split('\n')
      .map(
        (l) =>
          (
            JSON.parse(l) as { entry: { resource: { resourceType: string; identifier?: { value: string }[] } }[] }
          ).entry.find((e) => e.resource.resourceType === 'Patient')!.resource.identifier![0].value,
      );

  it('one file: the Bundle as indented JSON, as before', () => {
    const r = run(['convert', path.join(folder, 'm1.hl7')], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith('{\n')).toBe(true);
    expect(JSON.parse(r.stdout).resourceType).toBe('Bundle');
  });

  it('several files: NDJSON, one Bundle per line, in argument order; --ndjson for one file', () => {
    const r = run(['convert', path.join(folder, 'm2.hl7'), path.join(folder, 'm1.hl7')], { cwd: dir });
    expect(r.code).toBe(0);
    expect(ids(r.stdout)).toEqual(['MRN2', 'MRN1']);
    expect(r.stderr).toContain('2 bundle(s) from 2 of 2 input(s)');
    const one = run(['convert', '--ndjson', path.join(folder, 'm3.hl7')], { cwd: dir });
    expect(one.stdout.split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('a folder: its files sorted, hidden files skipped, a non-message file said and skipped (exit 0)', () => {
    const r = run(['convert', folder], { cwd: dir });
    expect(r.code).toBe(0);
    expect(ids(r.stdout)).toEqual(['MRN1', 'MRN2', 'MRN3']);
    expect(r.stderr).toMatch(/README: skipped/);
    expect(r.stderr).toContain('3 bundle(s) from 3 of 4 input(s); 1 skipped');
  });

  it('stdin (no argument or -): a batch of two messages -> their Bundles', () => {
    const r = run(['convert', '--ndjson'], { cwd: dir, input: adt(4) + adt(5) });
    expect(r.code).toBe(0);
    expect(ids(r.stdout)).toEqual(['MRN4', 'MRN5']);
    const dash = run(['convert', '-'], { cwd: dir, input: adt(6) });
    expect(JSON.parse(dash.stdout).resourceType).toBe('Bundle');
  });

  it('one bad input among good ones: reported by name, the others converted, exit 1', () => {
    const bad = path.join(dir, 'bad.hl7');
    writeFileSync(bad, 'this is not HL7');
    const r = run(
      ['convert', path.join(folder, 'm1.hl7'), bad, path.join(dir, 'missing.hl7'), path.join(folder, 'm2.hl7')],
      { cwd: dir },
    );
    expect(r.code).toBe(1);
    expect(ids(r.stdout)).toEqual(['MRN1', 'MRN2']);
    expect(r.stderr).toContain(`${bad}: error FERRY_E_INPUT_HL7_NO_MSH`);
    expect(r.stderr).toMatch(/missing\.hl7: error FERRY_E_INPUT_FILE_UNREADABLE: cannot read/);
    expect(r.stderr).toContain('2 bundle(s) from 2 of 4 input(s); 2 failed');
  });

  it('--validate on several inputs: valid', () => {
    const r = run(['convert', '--validate', folder], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('valid: 3 bundle(s)');
  });

  it('start-up: an HL7 v2 conversion loads neither the engine nor the other plugins (fastify, pg, better-sqlite3, winston, FHIRPath, medplum), nor hl7-standard or all of semver', () => {
    const hook = path.join(dir, 'modules.js');
    writeFileSync(
      hook,
      "process.on('exit', () => process.stderr.write('MODULES ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));\n",
    );
    for (const cwd of [dir, root]) {
      // dir: no config (the bundled HL7 v2 plugin); root: ./config/ferry.yaml names the plugins
      const r = run(['convert', path.join(folder, 'm1.hl7')], { cwd, pre: ['-r', hook] });
      expect(r.code).toBe(0);
      const loaded: string[] = JSON.parse(/MODULES (.*)/.exec(r.stderr)![1]);
      for (const heavy of [
        '/fastify/',
        '/pg/',
        '/better-sqlite3/',
        '/winston/',
        '/fhirpath/',
        '/@medplum/core/',
        '/plugins/epic/',
        '/plugins/cerner/',
        '/plugins/athena-rest/',
        '/core/dist/engine/engine.js',
      ])
        expect(loaded.filter((m) => m.includes(heavy))).toEqual([]);
      // issue #22 round II: hl7-standard (scripts only) and semver's index (the plugin host needs three functions)
      expect(loaded.filter((m) => m.includes('/hl7-standard/'))).toEqual([]);
      expect(
        loaded.filter(
          (m) => /\/semver\/(index|preload)\.js$/.test(m) || /\/semver\/functions\/(inc|diff|coerce)\.js$/.test(m),
        ),
      ).toEqual([]);
    }
  });
});
