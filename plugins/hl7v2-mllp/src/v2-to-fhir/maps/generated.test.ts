/**
 * The generated tables are what their generators make from the IG CSVs in ../shared/v2-to-fhir today:
 * a hand edit, or a change to the tables without regenerating, fails here (the generators' `--check`).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const SCRIPTS = path.resolve(__dirname, '../../../scripts');
const MAPPINGS = path.resolve(__dirname, '../../../../../../shared/v2-to-fhir/mappings');
const haveShared = fs.existsSync(MAPPINGS);
if (!haveShared) console.warn(`skipped: ../shared absent (${MAPPINGS}) — generated IG tables not re-checked`);

(haveShared ? describe : describe.skip)('generated IG tables match their generators', () => {
  it.each(['gen-codesystems.js', 'gen-fieldtypes.js', 'gen-fieldnames.js'])('%s --check', (script) => {
    const r = spawnSync(process.execPath, [path.join(SCRIPTS, script), '--check'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/matches its generator/);
  });
});
