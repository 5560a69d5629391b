#!/usr/bin/env node
/**
 * Mutation testing (Stryker) of the modules whose mistakes lose or corrupt clinical data, one
 * module at a time, each against only the test files that cover it. Not part of `npm test` / CI:
 * it is slow (a nightly-style job). Incremental: each module keeps its last result in
 * reports/mutation/<module>.incremental.json and only mutants in changed code (or whose tests
 * changed) run again; `--force` runs everything. Concurrency 1 (a shared machine) unless
 * FERRY_MUTATION_CONCURRENCY says otherwise.
 *
 *   npm run mutation                 every module, smallest first
 *   npm run mutation -- router ack   the named modules
 *   npm run mutation -- --list       the modules and what they cover
 *   npm run mutation -- --recheck m  the last run's survivors of m, each applied by hand against today's tests
 *
 * Each module's score is printed and written to reports/mutation/<module>.json (Stryker's JSON
 * report) and reports/mutation/<module>.html; reports/mutation/summary.json (committed; the rest of
 * reports/ is not) collects the scores and lists each module's surviving mutants.
 */
import { Stryker } from '@stryker-mutator/core';
import ts from 'typescript';
import { execSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'reports/mutation');

/** Module -> the source files mutated and the tests that cover them. Smallest first. */
export const modules = {
  router: { mutate: ['core/src/routing/router.ts'], tests: ['core/src/routing/router.test.ts'] },
  'retry-policy': { mutate: ['core/src/store/retry-policy.ts'], tests: ['core/src/store/retry-policy.test.ts'] },
  escape: {
    mutate: [
      'core/src/util/hl7-escape.ts',
      'plugins/hl7v2-mllp/src/hl7v2/delimiters.ts',
      'plugins/hl7v2-mllp/src/hl7v2/batch.ts',
    ],
    tests: [
      'core/src/util/hl7-escape.test.ts',
      'plugins/hl7v2-mllp/src/hl7v2/codec.test.ts',
      'plugins/hl7v2-mllp/src/hl7v2/batch.test.ts',
    ],
  },
  framing: {
    mutate: ['plugins/hl7v2-mllp/src/mllp/framing.ts'],
    tests: ['plugins/hl7v2-mllp/src/mllp/framing.test.ts', 'plugins/hl7v2-mllp/src/mllp/mllp.fuzz.test.ts'],
  },
  ack: {
    mutate: ['plugins/hl7v2-mllp/src/ack/ack.builder.ts', 'plugins/hl7v2-mllp/src/ack/msh.ts'],
    tests: ['plugins/hl7v2-mllp/src/ack/ack.builder.test.ts', 'plugins/hl7v2-mllp/src/ack/msh.test.ts'],
  },
  // What is mutated is named, not numbered: `file#a,b` is the functions/methods a and b of file, and
  // `file#region:x` the lines between `// #region mutation: x` and the next `// #endregion` in it --
  // resolved to line ranges when the run starts, so reformatting or moving code does not shift them.
  // The submit/ACK decisions: handle (which ACK each frame gets), store (submit results -> AA / AR /
  // AE) and setFailure. (The whole of handle..rawHeaders is 344 mutants: ~3 h on a shared machine.)
  'mllp-source': {
    mutate: ['plugins/hl7v2-mllp/src/sources/mllp.source.ts#handle,store,setFailure'],
    tests: [
      'plugins/hl7v2-mllp/src/sources/mllp.source.test.ts',
      'plugins/hl7v2-mllp/src/sources/mllp.source.outcomes.test.ts',
    ],
  },
  // What each frame is before the store sees it: prepare (a frame, a batch or an error event), prepareOne (the
  // MSH read: which frames are refused -- AR -- or acknowledged in which mode, the headers and content hash
  // stored), prepareBatch (FHS/BHS batches split into their messages) and checkData (the data checks that
  // refuse a message -- AE -- before it is stored).
  'mllp-source-prepare': {
    mutate: ['plugins/hl7v2-mllp/src/sources/mllp.source.ts#prepare,prepareOne,prepareBatch,checkData'],
    tests: [
      'plugins/hl7v2-mllp/src/sources/mllp.source.test.ts',
      'plugins/hl7v2-mllp/src/sources/mllp.source.outcomes.test.ts',
      'plugins/hl7v2-mllp/src/sources/mllp.source.tls.test.ts',
    ],
  },
  // The delivery and retry path: toSinkDelivery/deliveryOutcome, the time limit and run() (the
  // outcome of each attempt). The claim loop, lease renewal and the outcomes' group commit: dispatcher-claims.
  dispatcher: {
    mutate: [
      'core/src/delivery/sink-delivery.ts#toSinkDelivery',
      'core/src/delivery/delivery-outcome.ts#deliveryOutcome',
      'core/src/delivery/sink-call.ts#deliverWithin',
      'core/src/delivery/dispatcher.ts#run',
    ],
    tests: ['core/src/delivery/dispatcher.test.ts', 'core/src/delivery/dispatcher.delivery.test.ts'],
  },
  // What decides whether a delivery is lost or made twice, beside run(): the claim loop (which sinks are
  // claimed for, how many, held and paused sinks left out, what is claimed handed to run, the removed
  // sinks' deliveries), the claim (a lost answer's leases given back first), lease renewal while a call
  // is under way, and the outcomes' group commit. Not the claim spacing (spacedClaim) nor the loop's
  // wake-up arithmetic after the region: timing only (when the next claim is made, not what it does);
  // dispatcher.wake.test.ts pins the one wake-up time inside it (removed sinks looked for once a poll).
  'dispatcher-claims': {
    mutate: [
      'core/src/delivery/dispatcher.ts#region:claim-loop,claim,releaseOrphans',
      'core/src/delivery/lease-renewal.ts#renewLeases',
      'core/src/delivery/outcome-recorder.ts#record',
    ],
    tests: [
      'core/src/delivery/dispatcher.test.ts',
      'core/src/delivery/dispatcher.delivery.test.ts',
      'core/src/delivery/dispatcher.wake.test.ts',
      'core/src/delivery/lease-renewal.test.ts',
      'core/src/delivery/outcome-recorder.test.ts',
    ],
  },
  // The duplicate decision (the lookup of earlier messages with the same sender + control id in the
  // window, and the content comparison). sqlite.store.duplicates.test.ts runs the conformance suite's
  // duplicate rules alone (every test of the whole suite inserts, so reaches this code: minutes a mutant).
  'store-dedupe': {
    mutate: ['core/src/store/sql/sql-exec.ts#dedupKey', 'core/src/store/sql/messages.ts#region:duplicate-decision'],
    tests: ['core/src/store/sqlite.store.duplicates.test.ts', 'core/src/store/postgres.store.duplicates.test.ts'],
  },
  // The SQL store's paths that must never be wrong: insert and the group commit (nothing resolved
  // before its transaction commits; a failed batch rejects every caller), the rows an insert writes
  // (insertCalls less the duplicate decision, which is store-dedupe's), claimReceived,
  // claimDeliveries and lease renewal. Against focused files on a real SQLite file and a fake
  // clock (seconds), not the conformance suite (two minutes, reached by every mutant); and
  // postgres.store.claims.test.ts for what only PostgreSQL reaches (its claim query, row locks,
  // no empty `IN ()`, the order UPDATE ... RETURNING gives back).
  store: {
    mutate: [
      'core/src/store/sql/messages.ts#insert,schedule,flush,commitBatch,validate,writeError',
      'core/src/store/sql/messages.ts#region:insert-items,region:insert-rows',
      'core/src/store/sql/processing.ts#claimReceived',
      'core/src/store/sql/deliveries.ts#claimDeliveries,renewDeliveryLeases',
    ],
    tests: [
      'core/src/store/sqlite.store.insert.test.ts',
      'core/src/store/sqlite.store.claims.test.ts',
      'core/src/store/postgres.store.claims.test.ts',
    ],
  },
  // Retention: prune's passes (bodies, dead bodies, deletion with the deliveries' heads promoted), its
  // steps over bounded seq ranges, and the audit trail's retention. Not replay / retryDeliveries.
  // Both stores run the same tests (__fixtures__/retention.ts); postgres.store.retention.test.ts adds
  // what only PostgreSQL reaches (row locks, no empty `IN ()`, the clock offset, `long` transactions).
  retention: {
    mutate: ['core/src/store/sql/retention.ts#prune'],
    tests: ['core/src/store/sqlite.store.retention.test.ts', 'core/src/store/postgres.store.retention.test.ts'],
  },
};

function commit() {
  try {
    return execSync('git rev-parse --short HEAD', { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/**
 * `file#a,b` -> Stryker's `file:start-end` for each function, method or function-valued const named
 * a or b; `file#region:x` -> the lines inside `// #region mutation: x` ... `// #endregion`. A name
 * that is not found is an error (the module map is out of step with the code), not a silent no-op.
 */
export function resolveMutate(spec) {
  const [file, names] = spec.split('#');
  if (!names) return [spec];
  const text = readFileSync(path.join(root, file), 'utf8');
  const lines = text.split('\n');
  const out = [];
  for (const name of names.split(',')) {
    if (name.startsWith('region:')) {
      const label = name.slice('region:'.length);
      const start = lines.findIndex((l) => l.trim().startsWith(`// #region mutation: ${label}`));
      const end = lines.findIndex((l, i) => i > start && l.trim().startsWith('// #endregion'));
      if (start < 0 || end < 0) throw new Error(`${file}: no "// #region mutation: ${label}" ... "// #endregion"`);
      out.push(`${file}:${start + 2}-${end}`);
      continue;
    }
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const found = [];
    const visit = (node) => {
      const named =
        (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node)) && node.name?.getText(sf) === name
          ? node
          : ts.isVariableDeclaration(node) && node.name.getText(sf) === name && node.initializer
            ? node.initializer
            : undefined;
      if (named) found.push(named);
      ts.forEachChild(node, visit);
    };
    visit(sf);
    if (!found.length) throw new Error(`${file}: no function or method named ${name}`);
    for (const n of found) {
      const a = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
      const b = sf.getLineAndCharacterOfPosition(n.getEnd()).line + 1;
      out.push(`${file}:${a}-${b}`);
    }
  }
  return out;
}

async function run(name, force) {
  const m = modules[name];
  // The commit the sandbox is copied from (taken now: commits made while it runs are not in it).
  const at = commit();
  const baseJest = (await import(path.join(root, 'jest.config.js'))).default;
  const options = {
    packageManager: 'npm',
    testRunner: 'jest',
    plugins: ['@stryker-mutator/jest-runner', '@stryker-mutator/typescript-checker'],
    checkers: ['typescript'],
    tsconfigFile: 'tsconfig.typecheck.json',
    typescriptChecker: { prioritizePerformanceOverAccuracy: true },
    coverageAnalysis: 'perTest',
    mutate: m.mutate.flatMap(resolveMutate),
    jest: {
      projectType: 'custom',
      // The repository's jest config, narrowed to the covering tests, one worker per Stryker runner.
      // rootDir stays the sandbox Stryker runs in (the mutated copy), not this checkout.
      config: { ...baseJest, testMatch: m.tests.map((t) => `<rootDir>/${t}`), maxWorkers: 1 },
      enableFindRelatedTests: false,
    },
    concurrency: Number(process.env.FERRY_MUTATION_CONCURRENCY ?? 1),
    // A mutant's time limit: its covering tests' time in the dry run x 1.5 + 5 s. (20 s made a module
    // with a few looping mutants take an hour; the slowest covering test here takes ~15 s loaded.)
    timeoutMS: Number(process.env.FERRY_MUTATION_TIMEOUT_MS ?? 5_000),
    timeoutFactor: 1.5,
    incremental: true,
    force,
    incrementalFile: path.relative(root, path.join(out, `${name}.incremental.json`)),
    reporters: ['clear-text', 'progress', 'json', 'html'],
    jsonReporter: { fileName: path.relative(root, path.join(out, `${name}.json`)) },
    htmlReporter: { fileName: path.relative(root, path.join(out, `${name}.html`)) },
    tempDirName: '.stryker-tmp',
    cleanTempDir: 'always',
    // The sandbox needs the sources, tests and fixtures; not build output or reports.
    ignorePatterns: ['dist', 'reports', 'coverage', '.bench-tmp', 'data', '*.tsbuildinfo'],
    thresholds: { high: 90, low: 80, break: null },
  };
  const results = await new Stryker(options).runMutationTest();
  const count = (s) => results.filter((r) => s.includes(r.status)).length;
  const killed = count(['Killed', 'Timeout']);
  const survived = count(['Survived', 'NoCoverage']);
  const score = killed + survived ? (100 * killed) / (killed + survived) : 100;
  // The survivors by place and change, so the committed summary says what is still unpinned (or equivalent).
  const survivors = results
    .filter((r) => r.status === 'Survived' || r.status === 'NoCoverage')
    .map((r) =>
      `${path.relative(root, r.fileName)}:${r.location.start.line}:${r.location.start.column + 1} ${r.mutatorName}${r.status === 'NoCoverage' ? ' (no test reaches it)' : ''}: ${JSON.stringify(r.replacement ?? '')}`.slice(
        0,
        240,
      ),
    )
    .sort();
  return {
    module: name,
    score: Math.round(score * 10) / 10,
    killed,
    survived,
    compileErrors: count(['CompileError']),
    total: results.length,
    date: new Date().toISOString().slice(0, 10),
    commit: at,
    survivors,
  };
}

/**
 * `--recheck <module>`: each survivor of the module's last run (reports/mutation/<module>.json) applied to the
 * source by hand, one at a time, and the module's tests run against it (then the file restored) -- to confirm
 * that new tests kill them without a whole new run. Writes the verdicts to summary.json (`recheck`).
 */
function recheck(name, match) {
  const m = modules[name];
  const jestBin = path.join(root, 'node_modules/jest/bin/jest.js');
  const recheckTimeoutMs = Number(process.env.FERRY_MUTATION_RECHECK_TIMEOUT_MS ?? 90_000);
  const report = JSON.parse(readFileSync(path.join(out, `${name}.json`), 'utf8'));
  const verdicts = [];
  for (const [file, f] of Object.entries(report.files)) {
    const abs = path.resolve(root, file);
    const original = readFileSync(abs, 'utf8');
    const lines = original.split('\n');
    const offset = (p) => lines.slice(0, p.line - 1).reduce((a, l) => a + l.length + 1, 0) + p.column - 1;
    // The source the run mutated (in the report): a mutant on a line changed since cannot be applied by position.
    const ran = typeof f.source === 'string' ? f.source.split('\n') : undefined;
    for (const mu of f.mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage')) {
      const where = `${path.relative(root, abs)}:${mu.location.start.line}:${mu.location.start.column}`;
      if (match && !match.test(`${where} ${mu.mutatorName}`)) continue;
      const span = (ls) => ls.slice(mu.location.start.line - 1, mu.location.end.line).join('\n');
      if (ran && span(ran) !== span(lines)) {
        const v =
          `${where} ${mu.mutatorName}: ${JSON.stringify(mu.replacement ?? '')}`.slice(0, 200) +
          ' -> line changed since the run, not rechecked';
        console.log(v);
        verdicts.push(v);
        continue;
      }
      const mutated =
        original.slice(0, offset(mu.location.start)) + mu.replacement + original.slice(offset(mu.location.end));
      writeFileSync(abs, mutated);
      let killed;
      let timedOut = false;
      let by;
      try {
        // jest itself as the child, in band: a mutant that loops for ever is killed with all of it at the
        // time limit (through npx, its workers outlived the kill and kept spinning), and counts as killed.
        const r = spawnSync(process.execPath, [jestBin, '-i', '--silent', '--forceExit', ...m.tests], {
          cwd: root,
          encoding: 'utf8',
          timeout: recheckTimeoutMs,
          killSignal: 'SIGKILL',
        });
        timedOut = r.error?.code === 'ETIMEDOUT' || r.signal === 'SIGKILL';
        killed = timedOut || r.status !== 0;
        // The first test that failed: a kill by a test unrelated to the mutant (a flaky one) shows.
        by = /^\s*● (.+)$/m.exec(r.stderr ?? '')?.[1]?.slice(0, 120);
      } finally {
        writeFileSync(abs, original);
      }
      const v =
        `${where} ${mu.mutatorName}: ${JSON.stringify(mu.replacement ?? '')}`.slice(0, 200) +
        (timedOut ? ' -> killed (time limit)' : killed ? ` -> killed${by ? ` (by: ${by})` : ''}` : ' -> survives');
      console.log(v);
      verdicts.push(v);
    }
  }
  return { date: new Date().toISOString().slice(0, 10), commit: commit(), verdicts };
}

const args = process.argv.slice(2);
if (args.includes('--recheck')) {
  const summaryFile = path.join(out, 'summary.json');
  // `--match <regex>`: only the survivors whose "file:line:column mutator" matches; their verdicts replace
  // those of the same mutants in the last recheck, the others are kept.
  const at = args.indexOf('--match');
  const match = at >= 0 ? new RegExp(args[at + 1]) : undefined;
  const names = args.filter((a, i) => !a.startsWith('--') && !(at >= 0 && i === at + 1));
  for (const n of names) {
    const r = recheck(n, match);
    // Read afresh: a run of another module may have written it meanwhile.
    const summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
    if (match && summary[n]?.recheck) {
      const key = (v) => v.split(' -> ')[0];
      const fresh = new Set(r.verdicts.map(key));
      r.verdicts = [...summary[n].recheck.verdicts.filter((v) => !fresh.has(key(v))), ...r.verdicts].sort();
    }
    summary[n] = { ...summary[n], recheck: r };
    writeFileSync(summaryFile, JSON.stringify(summary, null, 2) + '\n');
  }
  process.exit(0);
}
if (args.includes('--list')) {
  for (const [k, v] of Object.entries(modules))
    console.log(`${k}: ${v.mutate.flatMap(resolveMutate).join(', ')}  <-  ${v.tests.join(', ')}`);
  process.exit(0);
}
const force = args.includes('--force');
const names = args.filter((a) => !a.startsWith('--'));
for (const n of names)
  if (!modules[n]) throw new Error(`unknown module ${n}; one of ${Object.keys(modules).join(', ')}`);
mkdirSync(out, { recursive: true });
const summaryFile = path.join(out, 'summary.json');
for (const n of names.length ? names : Object.keys(modules)) {
  const r = await run(n, force);
  // Read afresh: a recheck (or an edit) may have written it during the run.
  const summary = existsSync(summaryFile) ? JSON.parse(readFileSync(summaryFile, 'utf8')) : {};
  summary[n] = r;
  writeFileSync(summaryFile, JSON.stringify(summary, null, 2) + '\n');
  console.log(
    `mutation score ${n}: ${r.score}% (${r.killed} killed, ${r.survived} survived, ${r.compileErrors} not compiling) at ${r.commit}`,
  );
}
