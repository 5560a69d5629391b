import path from 'node:path';
import type { ConfigProblem } from '../config/load-config';
import { configure } from '../engine/configure';
import { validateWithSchema } from '../config/load-config';
import { sinkCommonSchema, sourceCommonSchema } from '../config/engine.schema';
import { fhirSinkSchema } from '../sinks/fhir.sink';
import { fileSinkSchema } from '../sinks/file.sink';
import { httpSinkSchema } from '../sinks/http.sink';
import { fileSourceSchema } from '../sources/file.source';
import { httpSourceSchema } from '../sources/http.source';
import { corePlugin } from './core.plugin';

const check = (schema: object, entry: unknown, common: object = sinkCommonSchema) => {
  const problems: ConfigProblem[] = [];
  const value = validateWithSchema<any>({ ...common, ...schema }, entry, 'sinks.x', problems);
  return { problems: problems.map((p) => `${p.path}: ${p.message}`), value };
};

describe('core plugin types and their config schemas', () => {
  it('registers the file/http/audit sources and file/http/fhir sinks', async () => {
    const sources: string[] = [];
    const sinks: string[] = [];
    await corePlugin.register({
      manifest: corePlugin.manifest,
      config: {},
      logger: undefined as never,
      container: undefined as never,
      addSourceType: (t) => sources.push(t),
      addSinkType: (t) => sinks.push(t),
      addTransform: () => undefined,
      addCommand: () => undefined,
      registerFacadeProvider: () => undefined,
      provide: () => undefined,
    });
    expect(sources.sort()).toEqual(['audit', 'file', 'http']);
    expect(sinks.sort()).toEqual(['fhir', 'file', 'http']);
  });

  it('file sink: defaults, and every problem with its path', () => {
    expect(check(fileSinkSchema, { dir: './out' })).toMatchObject({
      problems: [],
      value: { dir: './out', format: 'ndjson', file: 'bundles.ndjson', fsync: true },
    });
    // a format name that is not the sink's own (xml, hl7v2) passes the schema: the config loader asks the loaded plugins (fhir-to-hl7v2-sinks e2e)
    expect(check(fileSinkSchema, { format: 'x m l', nope: 1 }).problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sinks\.x\.dir: .*required/),
        expect.stringMatching(/^sinks\.x\.format: /),
        'sinks.x.nope: unknown key',
      ]),
    );
  });

  it('http sink: url required and checked; header map and auth keys validated', () => {
    const ok = check(httpSinkSchema, {
      url: 'https://example.org/in',
      headers: { 'X-A': 'b' },
      auth: { type: 'bearer', token: 't' },
    });
    expect(ok.problems).toEqual([]);
    expect(ok.value).toMatchObject({ method: 'POST', timeoutMs: 10000, auth: { type: 'bearer', token: 't' } });
    const bad = check(httpSinkSchema, {
      url: 'ftp://x',
      headers: { 'bad header': 'x' },
      auth: { type: 'kerberos' },
    }).problems;
    expect(bad).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sinks\.x\.url: .*http\(s\) URL/),
        expect.stringMatching(/^sinks\.x\.headers: .*not a valid header name/),
        expect.stringMatching(/^sinks\.x\.auth\.type: /),
      ]),
    );
    expect(check(httpSinkSchema, {}).problems).toEqual([expect.stringMatching(/^sinks\.x\.url: is required/)]);
  });

  it('fhir sink: baseUrl required; client_credentials keys accepted', () => {
    const ok = check(fhirSinkSchema, {
      baseUrl: 'http://127.0.0.1:8103/fhir/R4',
      auth: {
        type: 'client_credentials',
        tokenUrl: 'http://127.0.0.1:8103/token',
        clientId: 'c',
        clientSecret: 's',
        scope: 'system/*.write',
      },
    });
    expect(ok.problems).toEqual([]);
    expect(ok.value.timeoutMs).toBe(30000);
    expect(check(fhirSinkSchema, { baseUrl: 'nope' }).problems).toEqual([
      expect.stringMatching(/^sinks\.x\.baseUrl: /),
    ]);
  });

  it('file and http sources: defaults and problems', () => {
    expect(check(fileSourceSchema, { dir: './in' }, sourceCommonSchema)).toMatchObject({
      problems: [],
      value: { pattern: '*', batch: true, doneDir: 'done', errorDir: 'error' },
    });
    expect(check(httpSourceSchema, { port: 0 }, sourceCommonSchema)).toMatchObject({
      problems: [],
      value: { host: '127.0.0.1', path: '/messages', port: 0 },
    });
    expect(check(httpSourceSchema, { path: 'no-slash', port: 70000 }, sourceCommonSchema).problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/^sinks\.x\.path: /), expect.stringMatching(/^sinks\.x\.port: /)]),
    );
  });
});

describe('example configs using the core types', () => {
  it.each(['http-to-fhir.yaml', 'file-drop.yaml', 'secure-admin.yaml'])('config/examples/%s validates', async (f) => {
    const { config } = await configure({
      configFile: path.resolve(__dirname, '../../../config/examples', f),
      env: { INGEST_TOKEN: 'x', FHIR_TOKEN: 'y' },
    });
    expect(Object.keys(config.sinks).length).toBeGreaterThan(0);
  });
});
