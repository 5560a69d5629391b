import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildEngineConfig,
  parseConfigText,
  readPluginRefs,
  validateWithSchema,
  type ConfigProblem,
  type TypeCatalog,
} from './load-config';

const catalog: TypeCatalog = {
  sourceSchema: (t) => (t === 'http' ? { port: { doc: 'port', format: 'port', default: 8081 } } : undefined),
  sinkSchema: (t) => (t === 'file' ? { dir: { doc: 'dir', format: String, default: './out' } } : undefined),
  sourceTypes: () => ['http'],
  sinkTypes: () => ['file'],
};

describe('parseConfigText', () => {
  it('interpolates ${VAR}, ${VAR:-default} and VAR_FILE, and reads *_FILE keys', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-cfg-'));
    writeFileSync(path.join(dir, 'secret'), 's3cret\n');
    writeFileSync(path.join(dir, 'pw'), 'pw-from-file');
    const problems: ConfigProblem[] = [];
    const raw = parseConfigText(
      `a: \${HOST}\nb: \${MISSING:-fallback}\nc: \${PORT}\nd: \${TOKEN}\nsinks:\n  x:\n    password_FILE: ${path.join(dir, 'secret')}\n`,
      { HOST: 'h', PORT: '9000', TOKEN_FILE: path.join(dir, 'pw') },
      problems,
    );
    expect(problems).toEqual([]);
    expect(raw).toEqual({ a: 'h', b: 'fallback', c: 9000, d: 'pw-from-file', sinks: { x: { password: 's3cret' } } });
  });

  it('reports an unset variable and an unreadable secret file with their paths', () => {
    const problems: ConfigProblem[] = [];
    parseConfigText('sinks:\n  x:\n    url: ${NOPE}\n    key_FILE: /nonexistent/key\n', {}, problems);
    expect(problems).toEqual([
      { path: 'sinks.x.url', message: 'environment variable NOPE is not set (nor NOPE_FILE)' },
      { path: 'sinks.x.key_FILE', message: expect.stringContaining('cannot read secret file /nonexistent/key') },
    ]);
  });

  it('refuses YAML that does not parse', () => {
    const problems: ConfigProblem[] = [];
    parseConfigText('a: [1, 2\n', {}, problems);
    expect(problems[0].message).toMatch(/not valid YAML/);
  });
});

describe('validateWithSchema', () => {
  it('reports unknown keys and bad values with the full path', () => {
    const problems: ConfigProblem[] = [];
    validateWithSchema(
      { port: { doc: '', format: 'port', default: 1 }, nested: { x: { doc: '', format: 'nat', default: 1 } } },
      { port: 99999, bogus: 1, nested: { x: 'many' } },
      'sources.a',
      problems,
    );
    const paths = problems.map((p) => p.path).sort();
    expect(paths).toEqual(['sources.a.bogus', 'sources.a.nested.x', 'sources.a.port']);
  });

  it('loads a map of maps (a leaf with an object default and a validator) and still validates it', () => {
    const mapOfMaps = (v: unknown) => {
      for (const x of Object.values(v as object))
        if (x === null || typeof x !== 'object') throw new Error('must be a mapping of type -> { param: value }');
    };
    const schema = {
      searchParams: { doc: '', format: mapOfMaps, default: {} as Record<string, Record<string, string>> },
      n: { doc: '', format: 'nat', default: 1 },
    };
    const problems: ConfigProblem[] = [];
    const out = validateWithSchema<any>(
      schema,
      { searchParams: { Observation: { category: 'laboratory', patient: 'a-195900.E-1' } } },
      'sources.f',
      problems,
    );
    expect(problems).toEqual([]);
    expect(out.searchParams).toEqual({ Observation: { category: 'laboratory', patient: 'a-195900.E-1' } });
    validateWithSchema(schema, { searchParams: { Observation: 'laboratory' } }, 'sources.g', problems);
    expect(problems).toEqual([
      { path: 'sources.g.searchParams', message: 'must be a mapping of type -> { param: value }' },
    ]);
    // the default is not shared between loads
    expect(validateWithSchema<any>(schema, {}, 'sources.h', []).searchParams).toEqual({});
  });
});

describe('buildEngineConfig', () => {
  it('lists every problem, each with its path', () => {
    const problems: ConfigProblem[] = [];
    buildEngineConfig(
      {
        store: { kind: 'oracle', schema: 'ferry; DROP TABLE x' },
        admin: { port: 'eighty' },
        sources: { a: { type: 'http', port: 80, extra: true }, b: { type: 'smtp' }, c: {} },
        sinks: { out: { type: 'file' } },
        routes: [
          { id: 'r1', from: ['a', 'zz'], to: ['out', 'fihr'] },
          { id: 'r1', from: ['a'], to: [] },
          { from: ['a'], to: ['out'], steps: ['validate', { filter: 'Bundle.entry.(' }, { transmogrify: 1 }] },
        ],
      },
      catalog,
      {},
      problems,
      { env: {}, fhirpathCheck: (e) => (e.includes('(') && !e.includes(')') ? 'mismatched input' : undefined) },
    );
    const lines = problems.map((p) => `${p.path}: ${p.message}`);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^store\.kind: /),
        expect.stringMatching(/^store\.schema: must be a plain SQL identifier/),
        expect.stringMatching(/^admin\.port: /),
        'sources.a.extra: unknown key',
        expect.stringMatching(/^sources\.b\.type: unknown source type "smtp"/),
        expect.stringMatching(/^sources\.c\.type: missing/),
        expect.stringMatching(/^routes\[0\]\.from\[1\]: unknown source "zz"/),
        expect.stringMatching(/^routes\[0\]\.to\[1\]: unknown sink "fihr"/),
        'routes[1].id: duplicate route id "r1"',
        'routes[1].to: a route needs at least one sink',
        'routes[2].id: missing',
        'routes[2].steps[1].filter: invalid FHIRPath: mismatched input',
        expect.stringMatching(/^routes\[2\]\.steps\[2\]: a step is/),
      ]),
    );
    expect(problems.length).toBe(13);
  });

  it("checks a source's dataQuality policy strictly and defaults it to warn", () => {
    const problems: ConfigProblem[] = [];
    const cfg = buildEngineConfig(
      {
        sources: {
          a: { type: 'http', dataQuality: { policy: 'fail', fields: { 'PID-7': 'warn', 'OBX-5-2': 'fail' } } },
          b: { type: 'http' },
          c: { type: 'http', dataQuality: { policy: 'strict', fields: { 'PID-7': 'maybe' }, extra: 1 } },
        },
        sinks: { out: { type: 'file' } },
        routes: [{ id: 'r', from: ['a'], to: ['out'] }],
      },
      catalog,
      {},
      problems,
      { env: {} },
    );
    expect(cfg.sources.a.dataQuality).toEqual({ policy: 'fail', fields: { 'PID-7': 'warn', 'OBX-5-2': 'fail' } });
    expect(cfg.sources.b.dataQuality).toEqual({ policy: 'warn', fields: {} });
    expect(problems.map((p) => `${p.path}: ${p.message}`).sort()).toEqual([
      'sources.c.dataQuality.extra: unknown key',
      expect.stringMatching(/^sources\.c\.dataQuality\.fields: .*PID-7: must be warn or fail/),
      expect.stringMatching(/^sources\.c\.dataQuality\.policy: /),
    ]);
  });

  it('applies defaults and env overrides of engine keys', () => {
    const problems: ConfigProblem[] = [];
    const cfg = buildEngineConfig(
      { sinks: { out: { type: 'file' } }, routes: [{ id: 'r', to: ['out'] }] },
      catalog,
      {},
      problems,
      { env: { FERRY_ADMIN_PORT: '9191' } },
    );
    expect(problems).toEqual([]);
    expect(cfg.admin.port).toBe(9191);
    expect(cfg.store.kind).toBe('sqlite');
    expect(cfg.sinks.out).toMatchObject({ type: 'file', dir: './out', retry: { maxAttempts: 10 } });
    expect(cfg.routes[0]).toMatchObject({ id: 'r', from: [], to: ['out'], ordering: 'strict', steps: [] });
    expect(cfg.processing).toMatchObject({ leaseMs: 60_000, heartbeatMs: 2000, instanceTimeoutMs: 6000 });
  });

  it('processing.heapGrowthPercent: 50 by default, FERRY_HEAP_GROWTH_PERCENT overrides it, a negative one is refused by path', () => {
    const problems: ConfigProblem[] = [];
    expect(buildEngineConfig({}, catalog, {}, problems, { env: {} }).processing.heapGrowthPercent).toBe(50);
    const env = { FERRY_HEAP_GROWTH_PERCENT: '0' };
    expect(buildEngineConfig({}, catalog, {}, problems, { env }).processing.heapGrowthPercent).toBe(0);
    expect(problems).toEqual([]);
    buildEngineConfig({ processing: { heapGrowthPercent: -5 } }, catalog, {}, problems, { env: {} });
    expect(problems.map((p) => p.path)).toEqual(['processing.heapGrowthPercent']);
  });

  it("checks the duplicate rule's ignoreFields and an instance timeout of at least two heartbeats", () => {
    const problems: ConfigProblem[] = [];
    const cfg = buildEngineConfig({ sources: { a: { type: 'http', port: 0 } } }, catalog, {}, problems, { env: {} });
    expect(problems).toEqual([]);
    expect(cfg.sources.a.duplicates).toEqual({ policy: 'ignore', windowMs: 86_400_000, ignoreFields: ['MSH-7'] });
    buildEngineConfig(
      {
        processing: { heartbeatMs: 2000, instanceTimeoutMs: 3000 },
        sources: { a: { type: 'http', port: 0, duplicates: { ignoreFields: ['EVN-2', 'meta.lastUpdated', 'MSH 7'] } } },
      },
      catalog,
      {},
      problems,
      { env: {} },
    );
    expect(problems.map((p) => p.path).sort()).toEqual([
      'processing.instanceTimeoutMs',
      'sources.a.duplicates.ignoreFields',
    ]);
    expect(problems.find((p) => p.path === 'sources.a.duplicates.ignoreFields')!.message).toMatch(/"MSH 7" is neither/);
  });
});

describe('readPluginRefs', () => {
  it('accepts names and { package, config } and reports the rest by index', () => {
    const problems: ConfigProblem[] = [];
    const refs = readPluginRefs(
      { plugins: ['@ferry/plugin-epic', { package: './x', config: { a: 1 } }, 42, { package: 'y', other: 1 }] },
      problems,
    );
    expect(refs.map((r) => r.package)).toEqual(['@ferry/plugin-epic', './x', 'y']);
    expect(problems.map((p) => p.path)).toEqual(['plugins[2]', 'plugins[3].other']);
  });
});
