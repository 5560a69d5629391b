#!/usr/bin/env node
// Run after `tsc -b` (npm's postbuild): makes the ferry CLI runnable as `npx ferry`.
// - tsc writes core/dist/cli/main.js without the execute bit (and rewrites it after a clean);
// - npm links a workspace's bin (node_modules/.bin/ferry) at install time only when its file
//   exists -- on a fresh clone it does not yet -- so the link is made here once it does.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
fs.chmodSync(path.join(root, 'core/dist/cli/main.js'), 0o755);
if (fs.existsSync(path.join(root, 'node_modules/.bin/ferry'))) process.exit(0);
// npm itself links it (a symlink here, a shim on Windows).
const npm = process.env.npm_execpath;
const r = npm
  ? spawnSync(process.execPath, [npm, 'rebuild', '@ferry/core', '--ignore-scripts', '--silent'], {
      cwd: root,
      stdio: 'inherit',
    })
  : spawnSync('npm', ['rebuild', '@ferry/core', '--ignore-scripts', '--silent'], {
      cwd: root,
      stdio: 'inherit',
      shell: process.platform === 'win32',
    });
process.exit(r.status ?? 1);
