/**
 * What a suite needs before it can run (a reachable PostgreSQL, the built CLI), decided when jest
 * collects the file -- synchronously, since jest collects synchronously -- so that a suite never
 * "passes" by returning early from its tests:
 *
 * - locally, a missing requirement skips the suite visibly: its title says why, and a warning says so;
 * - in CI (`CI=true`), it fails the suite: a CI run with PostgreSQL stopped or the build missing is red.
 *
 * Use `const d = requires(pgRequirement(), cliRequirement()); d('title', () => { ... });`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface Requirement {
  ok: boolean;
  /** Why it is not met (shown in the skipped suite's title and the CI failure). */
  reason: string;
}

export const repoRoot = path.resolve(__dirname, '../..');

/** The PostgreSQL the suites that need one use (CI has it at 127.0.0.1:5432, database test). */
export const TEST_PG_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const pgProbe = new Map<string, Requirement>();

/**
 * PostgreSQL at `url` accepts a connection (and `SELECT 1`): probed once per url and jest worker,
 * in a child node process (a real connection with the `pg` client, not a port check).
 */
export function pgRequirement(url = TEST_PG_URL): Requirement {
  const known = pgProbe.get(url);
  if (known) return known;
  const script =
    "const pg=require('pg');const c=new pg.Client({connectionString:process.argv[1],connectionTimeoutMillis:3000});" +
    "c.connect().then(()=>c.query('SELECT 1')).then(()=>c.end()).then(()=>process.exit(0),(e)=>{process.stderr.write(String(e&&e.message||e));process.exit(1);});";
  const r = spawnSync(process.execPath, ['-e', script, url], { cwd: repoRoot, encoding: 'utf8', timeout: 10_000 });
  const ok = r.status === 0;
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n')[0];
  const req = { ok, reason: ok ? '' : `PostgreSQL not reachable at ${url.replace(/\/\/[^@/]*@/, '//…@')} (${why})` };
  pgProbe.set(url, req);
  return req;
}

/** The built CLI (core/dist) and the given plugins' dist entry points exist (`npm run build`). */
export function cliRequirement(...plugins: string[]): Requirement {
  const files = [
    path.join(repoRoot, 'core/dist/cli/main.js'),
    ...plugins.map((p) => path.join(repoRoot, `plugins/${p}/dist/index.js`)),
  ];
  const missing = files.filter((f) => !existsSync(f));
  return {
    ok: missing.length === 0,
    reason: missing.length
      ? `not built: ${missing.map((f) => path.relative(repoRoot, f)).join(', ')} (run npm run build)`
      : '',
  };
}

/** True when running in CI, where an unmet requirement is a failure, not a skip. */
export const inCi = (): boolean => /^(1|true|yes)$/i.test(process.env.CI ?? '');

type Suite = (title: string, fn: () => void) => void;

/**
 * `describe` when every requirement is met; otherwise `describe.skip` with the reasons in the
 * title (locally), or -- in CI -- a suite whose single test fails with the reasons.
 */
export function requires(...reqs: Requirement[]): Suite {
  const unmet = reqs.filter((r) => !r.ok).map((r) => r.reason);
  if (!unmet.length) return describe;
  const why = unmet.join('; ');
  if (inCi()) {
    return (title) =>
      describe(title, () => {
        it(`cannot run in CI: ${why}`, () => {
          throw new Error(`CI=true and this suite's requirement is not met: ${why}`);
        });
      });
  }
  return (title, fn) => {
    console.warn(`skipped "${title}": ${why}`);
    describe.skip(`${title} [skipped: ${why}]`, fn);
  };
}

/** The same for one test: `it` when met, else `it.skip` with the reason (locally) or a failing test (CI). */
export function itRequires(...reqs: Requirement[]): (title: string, fn: () => Promise<void>, timeout?: number) => void {
  const unmet = reqs.filter((r) => !r.ok).map((r) => r.reason);
  if (!unmet.length) return it;
  const why = unmet.join('; ');
  if (inCi())
    return (title) =>
      it(`${title} [cannot run in CI: ${why}]`, () => {
        throw new Error(`CI=true and this test's requirement is not met: ${why}`);
      });
  return (title, fn, timeout) => {
    console.warn(`skipped "${title}": ${why}`);
    it.skip(`${title} [skipped: ${why}]`, fn, timeout);
  };
}
