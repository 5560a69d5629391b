'use strict';
/**
 * Where a generator's output goes: written to its committed file, or -- with `--check` -- compared
 * with it, so a test can tell when the committed file no longer matches the IG tables it came from
 * (or was edited by hand). Exits 1 on a difference, naming the first line that differs.
 */
const fs = require('node:fs');
const path = require('node:path');

function emit(out, text, summary) {
  const rel = path.relative(process.cwd(), out);
  if (!process.argv.includes('--check')) {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
    console.log(`wrote ${rel}: ${summary}`);
    return;
  }
  const committed = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null;
  if (committed === text) {
    console.log(`${rel} matches its generator (${summary})`);
    return;
  }
  if (committed === null) {
    console.error(`${rel} is missing: run node ${path.relative(process.cwd(), process.argv[1])}`);
  } else {
    const a = committed.split('\n');
    const b = text.split('\n');
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    // the column where they part (a generated line can be one long JSON string), shown with some context
    let col = 0;
    while (a[i] !== undefined && b[i] !== undefined && col < a[i].length && a[i][col] === b[i][col]) col++;
    const from = Math.max(0, col - 60);
    const clip = (s) =>
      s === undefined
        ? '(end of file)'
        : `${from ? '…' : ''}${s.slice(from, from + 160)}${s.length > from + 160 ? '…' : ''}`;
    console.error(
      `${rel} differs from what its generator makes from ../shared/v2-to-fhir, first at line ${i + 1}, column ${col + 1}:\n` +
        `  committed: ${clip(a[i])}\n  generated: ${clip(b[i])}\n` +
        `regenerate it with: node ${path.relative(process.cwd(), process.argv[1])}`,
    );
  }
  process.exitCode = 1;
}

module.exports = { emit };
