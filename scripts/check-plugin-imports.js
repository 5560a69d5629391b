#!/usr/bin/env node
// A plugin imports no other plugin: not its package (`@ferry/plugin-<other>`), not its src/ or
// dist/ by a relative path. Shared code lives in @ferry/core, @ferry/fhir-vendor-kit and (for
// tests) @ferry/testkit or test/; a check that needs two plugins lives in test/.
// Run by `npm test` (test/security/plugin-imports.test.ts) and on its own: `node scripts/check-plugin-imports.js`.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/** Every `import ... from 'x'`, `export ... from 'x'`, `import('x')`, `require('x')` specifier, with its line. */
function specifiers(text) {
  const out = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)(['"])([^'"\n]+)\1/gm;
  let m;
  while ((m = re.exec(text))) out.push({ spec: m[2], line: text.slice(0, m.index).split('\n').length });
  return out;
}

function walk(dir, files = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'dist') continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, files);
    else if (/\.(c|m)?[jt]sx?$/.test(e.name) && !e.name.endsWith('.d.ts')) files.push(p);
  }
  return files;
}

/** Problems (file:line: message) in the plugins under `pluginsDir`. */
function check(pluginsDir = path.join(root, 'plugins')) {
  const problems = [];
  const plugins = fs
    .readdirSync(pluginsDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(pluginsDir, e.name, 'package.json')));
  const names = new Map(
    plugins.map((p) => [
      JSON.parse(fs.readFileSync(path.join(pluginsDir, p.name, 'package.json'), 'utf8')).name,
      p.name,
    ]),
  );
  for (const p of plugins) {
    const own = path.join(pluginsDir, p.name);
    for (const file of walk(own)) {
      const rel = path.relative(root, file);
      for (const { spec, line } of specifiers(fs.readFileSync(file, 'utf8'))) {
        const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        if (names.has(pkg) && names.get(pkg) !== p.name) {
          problems.push(
            `${rel}:${line}: imports another plugin (${spec}); use @ferry/core, @ferry/fhir-vendor-kit or @ferry/testkit, or move the check to test/`,
          );
          continue;
        }
        if (!spec.startsWith('.')) continue;
        const target = path.resolve(path.dirname(file), spec);
        const inPlugins = path.relative(pluginsDir, target);
        if (inPlugins.startsWith('..') || path.isAbsolute(inPlugins)) continue;
        const targetPlugin = inPlugins.split(path.sep)[0];
        if (targetPlugin !== p.name) problems.push(`${rel}:${line}: imports another plugin's files (${spec})`);
      }
    }
  }
  return problems;
}

module.exports = { check, specifiers };

if (require.main === module) {
  const problems = check(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  for (const p of problems) console.error(p);
  if (problems.length) {
    console.error(`${problems.length} cross-plugin import(s): a plugin must not import another plugin.`);
    process.exit(1);
  }
  console.log('plugin imports: ok (no plugin imports another)');
}
