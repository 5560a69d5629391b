/** No plugin imports another (scripts/check-plugin-imports.js): shared code is in @ferry/core, @ferry/fhir-vendor-kit, @ferry/testkit. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the checker is a plain CommonJS script run by node
const { check } = require('../../scripts/check-plugin-imports.js') as { check(dir?: string): string[] };

describe('plugin import boundaries', () => {
  it('no plugin in plugins/ imports another plugin (package name, src/ or dist/)', () => {
    expect(check()).toEqual([]);
  });

  it('the check finds a package import, a relative import into src/ and one into dist/', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-imports-'));
    try {
      for (const [name, files] of Object.entries({
        a: { 'src/index.ts': 'export const a = 1;\n' },
        b: {
          'src/index.ts':
            "import { a } from '@ferry/plugin-a';\nimport { x } from '../../a/src/index';\nconst y = require('../../a/dist/index.js');\nimport { z } from './own';\nimport { FerryError } from '@ferry/core';\n",
          'src/own.ts': 'export const z = 1;\n',
        },
      })) {
        fs.mkdirSync(path.join(dir, name, 'src'), { recursive: true });
        fs.writeFileSync(path.join(dir, name, 'package.json'), JSON.stringify({ name: `@ferry/plugin-${name}` }));
        for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name, f), text);
      }
      const problems = check(dir);
      expect(problems).toHaveLength(3);
      expect(problems[0]).toMatch(/b\/src\/index\.ts:1: imports another plugin \(@ferry\/plugin-a\)/);
      expect(problems[1]).toMatch(/index\.ts:2: imports another plugin's files \(\.\.\/\.\.\/a\/src\/index\)/);
      expect(problems[2]).toMatch(/index\.ts:3: imports another plugin's files \(\.\.\/\.\.\/a\/dist\/index\.js\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
