/**
 * `ferry plugin new` end to end: the built CLI scaffolds a plugin into a temporary folder; the
 * package compiles with tsc, its own tests (the testkit's contract suites against its simulator)
 * pass under jest, and an engine loads it by path from `plugins:` and moves a record from its
 * source through its transform to its sink.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestEngine, waitFor, type TestEngine } from '@ferry/testkit';
import { requires } from '../support/requires';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const testkitBuilt = path.join(root, 'packages/testkit/dist/index.js');
const d = requires({
  ok: existsSync(cli) && existsSync(testkitBuilt),
  reason: 'core/dist and packages/testkit/dist are not built (run npm run build)',
});

d('ferry plugin new', () => {
  let tmp: string;
  let dir: string;
  let engine: TestEngine | undefined;
  let sim:
    | {
        start(): Promise<unknown>;
        stop(): Promise<void>;
        url: string;
        add(r: object): unknown;
        written: Map<string, any>;
      }
    | undefined;
  beforeAll(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'ferry-scaffold-'));
    dir = path.join(tmp, 'acme-labs');
  });
  afterAll(async () => {
    await engine?.stop();
    await sim?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('scaffolds a package that builds', () => {
    const r = spawnSync(process.execPath, [cli, 'plugin', 'new', 'acme-labs', '--dir', dir], {
      cwd: tmp,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/created plugin "acme-labs"/);
    // The layout of Ferry's own plugins (CONTRIBUTING.md): the definition in index.ts, one folder per role.
    expect(readdirSync(path.join(dir, 'src')).sort()).toEqual([
      '__fixtures__',
      'acme-labs.contract.test.ts',
      'client',
      'errors.ts',
      'index.ts',
      'sinks',
      'sources',
      'transforms',
    ]);
    expect(readdirSync(path.join(dir, 'src/sources'))).toEqual(['acme-labs.source.ts']);
    expect(readdirSync(path.join(dir, 'src/sinks'))).toEqual(['acme-labs.sink.ts']);
    expect(readdirSync(path.join(dir, 'src/transforms'))).toEqual(['acme-labs.transform.ts']);
    expect(readdirSync(path.join(dir, 'src/client'))).toEqual(['acme-labs.client.ts']);
    // A second run refuses to write over it.
    const again = spawnSync(process.execPath, [cli, 'plugin', 'new', 'acme-labs', '--dir', dir], {
      cwd: tmp,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/not empty/);
    // "npm install": this repository's packages stand in for the registry.
    symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    const tsc = spawnSync(
      process.execPath,
      [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(dir, 'tsconfig.json')],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);
    expect(existsSync(path.join(dir, 'dist/index.js'))).toBe(true);
  }, 180_000);

  it("passes its own tests (the testkit's contract suites against its simulator)", () => {
    const r = spawnSync(
      process.execPath,
      [
        path.join(root, 'node_modules/jest/bin/jest.js'),
        '--ci',
        '--rootDir',
        dir,
        '--config',
        path.join(dir, 'jest.config.js'),
      ],
      { cwd: dir, encoding: 'utf8', timeout: 240_000 },
    );
    expect(r.stderr).toMatch(/Tests:\s+\d+ passed, \d+ total/);
    expect(r.stderr).not.toMatch(/failed/);
    expect(r.status).toBe(0);
  }, 260_000);

  it('is loaded by the engine from its path in plugins: and carries a record source -> transform -> sink', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the scaffolded plugin is written by the test, at a path known only at run time
    const { AcmeLabsSimulator, CLIENT } = require(path.join(dir, 'src/__fixtures__/simulator.ts'));
    sim = new AcmeLabsSimulator();
    await sim!.start();
    sim!.add({ id: 'p1', family: 'Scaffold', given: 'Test', birthDate: '1980-01-01' });
    const conn = `baseUrl: '${sim!.url}', clientId: ${CLIENT.clientId}, clientSecret: '\${ACME_SECRET}'`;
    engine = await startTestEngine(
      `plugins: ['${dir}']
sources:
  acme-in: { type: acme-labs, ${conn}, pollIntervalMs: 100 }
sinks:
  acme-out: { type: acme-labs, ${conn} }
routes:
  - { id: acme, from: [acme-in], steps: [validate], to: [acme-out] }
processing: { pollIntervalMs: 50 }
`,
      { env: { ...process.env, ACME_SECRET: CLIENT.clientSecret } },
    );
    const written = await waitFor(
      () => (sim!.written.size ? [...sim!.written.values()] : undefined),
      15_000,
      'the sink to write the record',
    );
    expect(written).toEqual([
      expect.objectContaining({
        resourceType: 'Patient',
        identifier: [{ system: 'urn:acme-labs:patient', value: 'p1' }],
        name: [{ family: 'Scaffold', given: ['Test'] }],
      }),
    ]);
    const [msg] = await engine.engine.store.listMessages({ sourceId: 'acme-in', limit: 10 });
    expect(msg.headers).toMatchObject({ messageType: 'Patient', controlId: 'acme-labs-p1-1' });
  }, 60_000);
});
