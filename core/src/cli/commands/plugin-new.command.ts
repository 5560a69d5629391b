/**
 * `ferry plugin new <id> [--dir <path>]`: scaffold a plugin package -- manifest, config schemas,
 * a polling source, a sink, a transform, an HTTP simulator of the vendor API and tests that use
 * @ferry/testkit and its contract suites (PLUGINS.md). The package builds with `tsc`, its tests
 * run with `jest`, and `ferry start` loads it from its path in `plugins:` without edits.
 * It writes files only: no admin API, no store, no audit entry.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FerryError, inputError } from '../../errors';
import type { CliCommand } from '../../plugin/api';

const out = (s: string) => process.stdout.write(`${s}\n`);

/** `acme-labs` -> `AcmeLabs`. */
const pascal = (id: string) => id.replace(/(^|-)([a-z0-9])/g, (_m, _d, c: string) => c.toUpperCase());

/** The files of a new plugin package, by relative path. */
export function pluginFiles(id: string, coreVersion: string): Record<string, string> {
  const P = pascal(id);
  const ct = `application/vnd.${id}+json`;
  const engine = `^${coreVersion.split('.').slice(0, 2).join('.')}.0`;
  return {
    'package.json': `${JSON.stringify(
      {
        name: `ferry-plugin-${id}`,
        version: '0.1.0',
        description: `Ferry plugin: ${id} records API (source, transform, sink)`,
        license: 'Apache-2.0',
        main: 'dist/index.js',
        types: 'dist/index.d.ts',
        files: ['dist'],
        scripts: { build: 'tsc -p tsconfig.json', test: 'jest' },
        peerDependencies: { '@ferry/core': engine },
        dependencies: { tsyringe: '^4.10.0', 'reflect-metadata': '^0.2.2' },
        devDependencies: {
          '@ferry/core': coreVersion,
          '@ferry/testkit': coreVersion,
          '@medplum/fhirtypes': '^4.5.2',
          '@types/jest': '^30.0.0',
          '@types/node': '^20.19.0',
          jest: '^30.2.0',
          'ts-jest': '^29.4.5',
          typescript: '~6.0.3',
        },
      },
      null,
      2,
    )}\n`,
    'tsconfig.json': `${JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          lib: ['ES2023'],
          module: 'node16',
          moduleResolution: 'node16',
          types: ['node', 'jest'],
          strict: true,
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          declaration: true,
          esModuleInterop: true,
          skipLibCheck: true,
          isolatedModules: true,
          rootDir: 'src',
          outDir: 'dist',
        },
        include: ['src'],
        exclude: ['src/**/*.test.ts', 'src/__fixtures__'],
      },
      null,
      2,
    )}\n`,
    'jest.config.js': `/** ts-jest over src/; the tests start the simulator and a real SQLite store (@ferry/testkit). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\\\.ts$': ['ts-jest', { tsconfig: { isolatedModules: true, experimentalDecorators: true, emitDecoratorMetadata: true, esModuleInterop: true } }] },
  setupFiles: ['reflect-metadata'],
  testTimeout: 30000,
};
`,
    'README.md': `# ferry-plugin-${id}

A Ferry plugin for the ${id} records API, made by \`ferry plugin new ${id}\`. Read Ferry's PLUGINS.md
(plugin API, life cycle, config schemas, errors, logging rules, the testkit and contract suites).

| Registers | Type | What |
| --- | --- | --- |
| source | \`${id}\` | polls \`GET {baseUrl}/records?after=<cursor>\` (OAuth client credentials), one message per record, the cursor committed with the messages |
| transform | \`${ct}\` | a record -> a FHIR R4 Bundle with one Patient |
| sink | \`${id}\` | \`POST {baseUrl}/records\` with \`Idempotency-Key: <deliveryId>\` (a replay is not written twice) |

\`\`\`sh
npm install && npm run build && npm test
\`\`\`

Load it: \`plugins: ['./path/to/this/folder']\`, then

\`\`\`yaml
sources:
  ${id}-in: { type: ${id}, baseUrl: https://api.example.org, clientId: ..., clientSecret: \${${id.toUpperCase().replace(/-/g, '_')}_SECRET} }
sinks:
  ${id}-out: { type: ${id}, baseUrl: https://api.example.org, clientId: ..., clientSecret: \${${id.toUpperCase().replace(/-/g, '_')}_SECRET} }
\`\`\`

Layout (as in Ferry's own plugins, CONTRIBUTING.md): \`src/index.ts\` is the plugin definition;
\`src/sources/\`, \`src/sinks/\`, \`src/transforms/\` hold one registered component each; \`src/client/\`
the API connection they share; \`src/errors.ts\` the plugin's error codes.

Tests: \`src/${id}.contract.test.ts\` runs the testkit's contract suites (source, sink, transform) against the
simulator in \`src/__fixtures__/simulator.ts\` (a real HTTP server on port 0).
`,
    'src/index.ts': `import 'reflect-metadata';
import { definePlugin } from '@ferry/core';
import { ${P}Sink, ${id.replace(/-/g, '')}SinkSchema } from './sinks/${id}.sink';
import { ${P}Source, ${id.replace(/-/g, '')}SourceSchema } from './sources/${id}.source';
import { ${P}Transform } from './transforms/${id}.transform';

export * from './client/${id}.client';
export * from './errors';
export * from './sources/${id}.source';
export * from './sinks/${id}.sink';
export * from './transforms/${id}.transform';

export const ${id.replace(/-/g, '')}Plugin = definePlugin({
  manifest: { id: '${id}', version: '0.1.0', engine: '${engine}', description: '${id} records API: source, transform, sink' },
  configSchema: {},
  register(reg) {
    reg.addSourceType('${id}', ${P}Source, ${id.replace(/-/g, '')}SourceSchema);
    reg.addTransform(${P}Transform);
    reg.addSinkType('${id}', ${P}Sink, ${id.replace(/-/g, '')}SinkSchema);
  },
});
export default ${id.replace(/-/g, '')}Plugin;
`,
    'src/errors.ts': `/**
 * The plugin's own error codes, merged into Ferry's error catalogue (thrown as FERRY_E_<code>; see
 * Ferry's PLUGINS.md, "Errors"). Only codes declared here can be thrown through \`errors.error\`.
 */
import { defineErrors } from '@ferry/core';

export const errors = defineErrors({
  CONFIG_${id.toUpperCase().replace(/-/g, '_')}_BASE_URL: { kind: 'config', description: 'The ${id} connection has no baseUrl: set it.' },
  CONFIG_${id.toUpperCase().replace(/-/g, '_')}_TOKEN: { kind: 'config', description: 'The ${id} token endpoint refused the credentials: fix clientId and clientSecret.' },
  TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_TOKEN: { kind: 'transient', description: 'The ${id} token endpoint is unavailable: retried.' },
  TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_NETWORK: { kind: 'transient', description: 'A ${id} request failed on the network or timed out: retried.' },
  TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_HTTP: { kind: 'transient', description: 'The ${id} API answered 5xx, 429, 408 or 401: retried.' },
  INPUT_${id.toUpperCase().replace(/-/g, '_')}_REJECTED: { kind: 'input', description: 'The ${id} API refused the request (4xx): fix the data, then replay.' },
  DELIVERY_${id.toUpperCase().replace(/-/g, '_')}_WRITE: { kind: 'transient', description: 'Writing to ${id} failed: retried when the cause is retryable, dead otherwise.' },
  INPUT_${id.toUpperCase().replace(/-/g, '_')}_JSON: { kind: 'input', description: 'The ${id} record is not JSON: check the ${id} API.' },
  INPUT_${id.toUpperCase().replace(/-/g, '_')}_RECORD: { kind: 'input', description: 'The ${id} record has no id: check the ${id} API.' },
});
`,
    [`src/client/${id}.client.ts`]: `/** The ${id} API connection both the source and the sink use: OAuth client credentials, timeouts, errors. */
import { FerryError } from '@ferry/core';
import { errors } from '../errors';

export interface ConnectionConfig {
  baseUrl: string;
  clientId: string;
  clientSecret: string;
  timeoutMs: number;
}

/** Config schema entries (convict) shared by the source and the sink. */
export const connectionSchema = {
  baseUrl: { doc: 'API base URL', format: String, default: '' },
  clientId: { doc: 'OAuth client id', format: String, default: '' },
  clientSecret: { doc: 'OAuth client secret (use \${ENV})', format: String, default: '', sensitive: true },
  timeoutMs: { doc: 'Timeout of one HTTP call', format: 'nat', default: 10_000 },
};

export class ${P}Client {
  private token?: { value: string; until: number };
  constructor(private readonly cfg: ConnectionConfig) {
    if (!cfg.baseUrl) throw errors.error('CONFIG_${id.toUpperCase().replace(/-/g, '_')}_BASE_URL', 'baseUrl is required', { kind: 'config' });
  }

  /** One call; 5xx, 429, timeouts and network errors are retryable, other 4xx are not. The message names no content. */
  async call(method: string, p: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<any> {
    const s = AbortSignal.any([AbortSignal.timeout(this.cfg.timeoutMs), ...(signal ? [signal] : [])]);
    let res: Response;
    try {
      res = await fetch(this.cfg.baseUrl + p, {
        method,
        signal: s,
        headers: { authorization: \`Bearer \${await this.accessToken(s)}\`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (FerryError.is(e)) throw e;
      throw errors.error('TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_NETWORK', \`\${method} \${p}: \${(e as Error).name === 'TimeoutError' || s.aborted ? 'timed out or abandoned' : 'network error'}\`, { kind: 'transient', cause: e });
    }
    if (res.status === 401) this.token = undefined;
    if (!res.ok) {
      const retryable = res.status >= 500 || res.status === 429 || res.status === 408 || res.status === 401;
      throw errors.error(retryable ? 'TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_HTTP' : 'INPUT_${id.toUpperCase().replace(/-/g, '_')}_REJECTED', \`\${method} \${p} answered \${res.status}\`, { kind: retryable ? 'transient' : 'input', details: { status: res.status } });
    }
    return res.status === 204 ? undefined : res.json();
  }

  private async accessToken(signal: AbortSignal): Promise<string> {
    if (this.token && this.token.until > Date.now()) return this.token.value;
    const res = await fetch(\`\${this.cfg.baseUrl}/oauth2/token\`, {
      method: 'POST',
      signal,
      headers: { authorization: \`Basic \${Buffer.from(\`\${this.cfg.clientId}:\${this.cfg.clientSecret}\`).toString('base64')}\`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    if (!res.ok) throw errors.error(res.status >= 500 ? 'TRANSIENT_${id.toUpperCase().replace(/-/g, '_')}_TOKEN' : 'CONFIG_${id.toUpperCase().replace(/-/g, '_')}_TOKEN', \`token endpoint answered \${res.status}\`, { kind: res.status >= 500 ? 'transient' : 'config' });
    const t = (await res.json()) as { access_token: string; expires_in?: number };
    this.token = { value: t.access_token, until: Date.now() + ((t.expires_in ?? 300) - 30) * 1000 };
    return t.access_token;
  }
}
`,
    [`src/sources/${id}.source.ts`]: `/**
 * \`type: ${id}\` source: polls the records changed after its cursor. Each pass submits the page's
 * messages WITH the new cursor (one store transaction), so a crash before the commit re-reads the
 * page and nothing is lost or acknowledged early. Failed passes are logged once (OutageLog).
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, errorFields, FerryError, OutageLog, type MessageSource, type SourceContext } from '@ferry/core';
import { ${P}Client, connectionSchema, type ConnectionConfig } from '../client/${id}.client';
import { CONTENT_TYPE, headersOf } from '../transforms/${id}.transform';

export interface ${P}SourceConfig extends ConnectionConfig {
  pollIntervalMs: number;
  pageSize: number;
}

export const ${id.replace(/-/g, '')}SourceSchema = {
  ...connectionSchema,
  pollIntervalMs: { doc: 'Wait between polls', format: 'nat', default: 60_000 },
  pageSize: { doc: 'Records per request', format: 'nat', default: 100 },
};

const CURSOR = 'cursor';

@injectable()
export class ${P}Source implements MessageSource {
  private readonly client: ${P}Client;
  private readonly abort = new AbortController();
  private readonly signal: AbortSignal;
  private readonly failures: OutageLog;
  private loop?: Promise<void>;
  private wake?: () => void;
  private running = false;
  lastError?: FerryError;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<${P}SourceConfig>) {
    this.client = new ${P}Client(ctx.config);
    this.signal = AbortSignal.any([this.abort.signal, ctx.signal]);
    this.failures = new OutageLog(ctx.logger, '${id} poll failed', { source: ctx.id });
  }

  async start(): Promise<void> {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort();
    this.wake?.();
    await this.loop;
  }

  isReady(): boolean {
    return this.running && this.lastError?.kind !== 'config';
  }

  /** Poll now (tests, admin). */
  pollNow(): void {
    this.wake?.();
  }

  /** One pass: every page after the cursor. */
  async pollOnce(): Promise<number> {
    let stored = 0;
    for (;;) {
      const after = (await this.ctx.getCheckpoint(CURSOR)) ?? '0';
      const page = (await this.client.call('GET', \`/records?after=\${encodeURIComponent(after)}&limit=\${this.ctx.config.pageSize}\`, undefined, {}, this.signal)) as { items: { seq: number }[] };
      if (!page.items.length) return stored;
      const messages = page.items.map((r) => {
        const body = Buffer.from(JSON.stringify(r));
        return { contentType: CONTENT_TYPE, body, headers: headersOf(body) };
      });
      const cursor = String(page.items[page.items.length - 1].seq);
      await this.ctx.submit(messages, { checkpoint: { sourceId: this.ctx.id, key: CURSOR, value: cursor } });
      stored += messages.length;
      // ids and counts only at info: never a name or a body
      this.ctx.logger.info('${id} records stored', { source: this.ctx.id, records: messages.length, cursor });
    }
  }

  private async run(): Promise<void> {
    while (this.running && !this.signal.aborted) {
      try {
        await this.pollOnce();
        this.lastError = undefined;
        this.failures.ok();
      } catch (e) {
        if (this.signal.aborted) break;
        this.lastError = FerryError.from(e);
        this.failures.failed(errorFields(e));
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, this.ctx.config.pollIntervalMs);
        const self = this;
        function done() {
          clearTimeout(t);
          self.wake = undefined;
          resolve();
        }
        this.wake = done;
      });
    }
  }
}
`,
    [`src/sinks/${id}.sink.ts`]: `/**
 * \`type: ${id}\` sink: POSTs the Bundle's Patients to \`/records\` with \`Idempotency-Key: <deliveryId>\`,
 * so a retry or a replay is not written twice. 5xx/429/timeouts are retryable, other 4xx dead.
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, FerryError, type Delivery, type MessageSink, type SinkContext } from '@ferry/core';
import { ${P}Client, connectionSchema, type ConnectionConfig } from '../client/${id}.client';
import { errors } from '../errors';

export type ${P}SinkConfig = ConnectionConfig;
export const ${id.replace(/-/g, '')}SinkSchema = { ...connectionSchema };

@injectable()
export class ${P}Sink implements MessageSink {
  private readonly client: ${P}Client;
  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<${P}SinkConfig>) {
    this.client = new ${P}Client(ctx.config);
  }

  async deliver(d: Delivery): Promise<void> {
    const patients = (d.bundle.entry ?? []).map((e) => e.resource).filter((r) => r?.resourceType === 'Patient');
    for (const [i, p] of patients.entries()) {
      try {
        await this.client.call('POST', '/records', p, { 'idempotency-key': \`\${d.deliveryId}:\${i}\` }, d.signal);
      } catch (e) {
        const fe = FerryError.from(e);
        throw errors.error('DELIVERY_${id.toUpperCase().replace(/-/g, '_')}_WRITE', fe.message, fe.retryable ? { kind: 'transient', retryable: true, details: fe.details, cause: fe } : { kind: 'input', retryable: false, details: fe.details, cause: fe });
      }
    }
    this.ctx.logger.debug('${id} records written', { sink: this.ctx.id, deliveryId: d.deliveryId, records: patients.length });
  }
}
`,
    [`src/transforms/${id}.transform.ts`]: `/** \`${ct}\`: a ${id} record -> a FHIR R4 Bundle with one Patient. Deterministic: the same record, the same Bundle. */
import type { MessageHeaders, MessageTransform, StoredMessage } from '@ferry/core';
import type { Bundle } from '@medplum/fhirtypes';
import { errors } from '../errors';

export const CONTENT_TYPE = '${ct}';

export interface ${P}Record {
  seq: number;
  id: string;
  family?: string;
  given?: string;
  birthDate?: string;
}

function parse(body: Buffer): ${P}Record {
  let r: ${P}Record;
  try {
    r = JSON.parse(body.toString('utf8'));
  } catch {
    throw errors.error('INPUT_${id.toUpperCase().replace(/-/g, '_')}_JSON', 'the ${id} record is not JSON');
  }
  if (!r || typeof r.id !== 'string' || !r.id) throw errors.error('INPUT_${id.toUpperCase().replace(/-/g, '_')}_RECORD', 'the ${id} record has no id', { details: { path: 'id' } });
  return r;
}

/** Routing headers: ids only (never a name). */
export function headersOf(body: Buffer): MessageHeaders {
  const r = parse(body);
  return { messageType: 'Patient', controlId: \`${id}-\${r.id}-\${r.seq}\`, orderingKey: \`${id}:\${r.id}\` };
}

export class ${P}Transform implements MessageTransform {
  readonly name = '${id}';
  canHandle(contentType: string): boolean {
    return contentType.split(';')[0].trim() === CONTENT_TYPE;
  }
  extractHeaders(body: Buffer): MessageHeaders {
    return headersOf(body);
  }
  toFhir(message: StoredMessage & { body: Buffer }): Bundle {
    const r = parse(message.body);
    return {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          fullUrl: \`urn:${id}:patient:\${r.id}\`,
          resource: {
            resourceType: 'Patient',
            id: \`${id}-\${r.id}\`.replace(/[^A-Za-z0-9\\-.]/g, '-').slice(0, 64),
            identifier: [{ system: 'urn:${id}:patient', value: r.id }],
            ...(r.family || r.given ? { name: [{ family: r.family, given: r.given ? [r.given] : undefined }] } : {}),
            ...(r.birthDate ? { birthDate: r.birthDate } : {}),
          },
        },
      ],
    };
  }
}
`,
    'src/__fixtures__/simulator.ts': `/** A local ${id} API for the tests (not built): token endpoint, paged records, idempotent writes, faults. */
import { VendorSimulator } from '@ferry/testkit';
import type { ${P}Record } from '../transforms/${id}.transform';

export const CLIENT = { clientId: '${id}-client', clientSecret: '${id}-secret' };

export class ${P}Simulator {
  readonly sim = new VendorSimulator({ clients: [CLIENT] });
  readonly records: ${P}Record[] = [];
  /** Written records by Idempotency-Key. */
  readonly written = new Map<string, any>();
  private seq = 0;

  constructor() {
    this.sim.route('GET', '/records', (req) => {
      const after = Number(req.query.get('after') ?? '0');
      const limit = Number(req.query.get('limit') ?? '100');
      return { json: { items: this.records.filter((r) => r.seq > after).slice(0, limit) } };
    });
    this.sim.route('POST', '/records', (req) => {
      const key = String(req.headers['idempotency-key'] ?? '');
      if (!key) return { status: 400, json: { error: 'Idempotency-Key required' } };
      if (!this.written.has(key)) this.written.set(key, req.json);
      return { status: 201, json: { key } };
    });
  }

  add(r: Omit<${P}Record, 'seq'>): ${P}Record {
    const rec = { ...r, seq: ++this.seq };
    this.records.push(rec);
    return rec;
  }

  get url(): string {
    return this.sim.url;
  }
  start() {
    return this.sim.start();
  }
  stop() {
    return this.sim.stop();
  }
}
`,
    [`src/${id}.contract.test.ts`]: `/** The plugin against its simulator: the testkit's contract suites for the source, the sink and the transform. */
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import { CLIENT, ${P}Simulator } from './__fixtures__/simulator';
import { ${P}Sink, type ${P}SinkConfig } from './sinks/${id}.sink';
import { ${P}Source, type ${P}SourceConfig } from './sources/${id}.source';
import { CONTENT_TYPE, ${P}Transform } from './transforms/${id}.transform';

const api = new ${P}Simulator();
let n = 0;
beforeAll(() => api.start());
afterAll(() => api.stop());
const conn = () => ({ baseUrl: api.url, ...CLIENT, timeoutMs: 5000 });

runSourceContract<${P}SourceConfig>('${id}', {
  config: () => ({ ...conn(), pollIntervalMs: 50, pageSize: 10 }),
  create: (ctx) => new ${P}Source(ctx),
  async deliver(_source, marker, again) {
    if (!again) api.add({ id: \`p\${++n}\`, family: marker, given: 'Test', birthDate: '1980-01-01' });
  },
  poke: (s) => (s as ${P}Source).pollNow(),
});

runSinkContract<${P}SinkConfig>('${id}', {
  config: conn,
  create: (ctx) => new ${P}Sink(ctx),
  bundle: (marker) => ({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', name: [{ family: marker }] } }] }),
  fault(kind) {
    if (kind === 'hang') api.sim.route('POST', '/records', () => new Promise(() => undefined));
    else api.sim.fault('/records', { status: kind === 'retryable' ? 503 : 400 });
  },
  received: (marker) => [...api.written.values()].filter((p) => JSON.stringify(p).includes(marker)).length,
});

runTransformContract('${id}', {
  create: () => new ${P}Transform(),
  samples: (marker) => [{ contentType: CONTENT_TYPE, body: JSON.stringify({ seq: 1, id: 'p1', family: marker, given: 'Test', birthDate: '1980-01-01' }) }],
  invalid: [{ contentType: CONTENT_TYPE, body: 'not json' }, { contentType: CONTENT_TYPE, body: '{"seq": 1}' }],
});
`,
  };
}

export const pluginCommand: CliCommand = {
  name: 'plugin <action> <id>',
  description:
    'plugin new <id>: scaffold a plugin package (manifest, config schemas, source, sink, transform, simulator, tests on @ferry/testkit) in --dir (default ./<id>); writes files only',
  options: [
    { flags: '--dir <path>', description: 'folder to create (default: ./<id>); must not exist or be empty' },
    { flags: '--force', description: 'write into a folder that is not empty (files of the same name are replaced)' },
  ],
  async run(args, o) {
    const [action, id] = args;
    if (action !== 'new')
      throw inputError('PLUGIN_ACTION', `ferry plugin ${action}: unknown action (use: ferry plugin new <id>)`);
    if (!/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/.test(id ?? ''))
      throw inputError('PLUGIN_ID', `plugin id "${id}": kebab-case, starting with a letter (e.g. acme or acme-labs)`);
    const dir = path.resolve(String(o.dir ?? id));
    if (fs.existsSync(dir) && fs.readdirSync(dir).length && !o.force)
      throw new FerryError('INPUT_PLUGIN_DIR', `${dir} exists and is not empty (use --force to write into it)`, {
        kind: 'input',
      });
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- core's package.json, read at run time (outside tsc's rootDir)
    const coreVersion = (require('../../../package.json') as { version: string }).version;
    const files = pluginFiles(id, coreVersion);
    for (const [rel, text] of Object.entries(files)) {
      const file = path.join(dir, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, text);
    }
    out(`created plugin "${id}" in ${dir} (${Object.keys(files).length} files)`);
    out(
      `next: cd ${path.relative(process.cwd(), dir) || '.'} && npm install && npm run build && npm test; then list it in plugins: ['${dir}']`,
    );
    return 0;
  },
};
