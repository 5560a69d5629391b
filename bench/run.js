#!/usr/bin/env node
// `npm run bench -- <name> [args]` runs bench/<name>.js; with no name, lists them.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const names = fs
  .readdirSync(__dirname)
  .filter((f) => f.endsWith('.js') && f !== 'run.js' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));
const [name, ...rest] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  console.log(`usage: npm run bench -- <${names.join('|')}> [args]`);
  process.exit(name ? 2 : 0);
}
const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, `${name}.js`), ...rest], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
