/** `ferry convert --to hl7v2 [--profile p.yaml] bundle.json` with the built CLI (npm test builds first). */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { adtBundle, oruBundle } from '../fhir-to-v2/__fixtures__/bundles';

const root = path.resolve(__dirname, '../../../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli);
if (!built) console.warn(`skipped: ${cli} is not built (npm test builds it first)`);

const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

(built ? describe : describe.skip)('ferry convert --to hl7v2', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-v2out-'));
  const bundleFile = path.join(dir, 'bundle.json');
  writeFileSync(bundleFile, JSON.stringify(oruBundle()));

  it('prints the v2 message, segments on their own lines; the profile applies', () => {
    const profile = path.join(dir, 'lab.yaml');
    writeFileSync(
      profile,
      "receivingApplication: LIS\ncodeTables:\n  OBX-3: { system: 99LAB, codes: { '718-7': HGB } }\n",
    );
    const r = run(['convert', '--to', 'hl7v2', '--profile', profile, bundleFile]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^MSH\|\^~\\&\|FERRY\|\|LIS\|\|\d{14}(\.\d+)?\+0000\|\|ORU\^R01\^ORU_R01\|[0-9A-F]{20}\|P\|2\.5\.1\|\|\|\|\|\|UNICODE UTF-8$/,
    );
    expect(lines.map((l) => l.slice(0, 3))).toEqual(['MSH', 'PID', 'OBR', 'OBX', 'OBX', 'OBX', 'OBX', 'NTE', 'SPM']);
    expect(lines[3]).toMatch(/^OBX\|1\|NM\|HGB\^Hemoglobin\^99LAB\|\|10\.2\|/);
  });

  it('a JSON array of Bundles prints one message per paragraph', () => {
    const file = path.join(dir, 'two.json');
    writeFileSync(file, JSON.stringify([adtBundle(), oruBundle()]));
    const r = run(['convert', '--to', 'hl7v2', file]);
    expect(r.code).toBe(0);
    expect(
      r.stdout
        .trimEnd()
        .split('\n\n')
        .map((m) => m.split('|')[8]),
    ).toEqual(['ADT^A01^ADT_A01', 'ORU^R01^ORU_R01']);
  });

  it('refuses with the reason: inexpressible Bundle, not a Bundle, bad profile, unknown format', () => {
    const b = adtBundle();
    b.entry = b.entry!.filter((e) => e.resource?.resourceType !== 'Patient');
    const file = path.join(dir, 'nopatient.json');
    writeFileSync(file, JSON.stringify(b));
    const r = run(['convert', '--to', 'hl7v2', file]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('cannot express the Bundle in HL7 v2: Patient is required for PID');
    const notBundle = path.join(dir, 'patient.json');
    writeFileSync(notBundle, JSON.stringify({ resourceType: 'Patient' }));
    expect(run(['convert', '--to', 'hl7v2', notBundle]).stderr).toContain('is not a FHIR Bundle');
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'version: 9\n');
    expect(run(['convert', '--to', 'hl7v2', '--profile', bad, bundleFile]).stderr).toContain(
      'profile.version: "9" is not an HL7 v2 version',
    );
    expect(run(['convert', '--to', 'csv', bundleFile]).stderr).toContain('no transform writes csv');
  });
});
