/**
 * `connections:` -- vendor credentials defined once, validated against the kind's schema (every
 * problem by path), referenced by sources and sinks with `connection: <id>`; the old inline form
 * still accepted with a deprecation warning. Driven through `configure` with a small real plugin
 * that registers a source type, a sink type and a connection kind.
 */
import { configure } from '../engine/configure';
import { definePlugin, type MessageSink, type MessageSource } from '../plugin/api';
import { ConfigError } from './load-config';

class NoopSource implements MessageSource {
  async start() {}
  async stop() {}
}
class NoopSink implements MessageSink {
  async deliver() {}
}
const connSchema = {
  baseUrl: {
    doc: 'base',
    format: (v: unknown) => {
      if (typeof v !== 'string' || !/^https?:\/\//.test(v)) throw new Error('required: an http(s) URL');
    },
    default: '',
  },
  clientId: { doc: 'client', format: String, default: '' },
  auth: { scopes: { doc: 'scopes', format: Array, default: [] as string[] } },
  writeDepartment: { doc: 'facade-only key', format: String, default: '' },
};
const { writeDepartment: _w, ...sourceConn } = connSchema;
const plugin = definePlugin({
  manifest: { id: 'acme', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register(reg) {
    reg.addSourceType('acme-poll', NoopSource, {
      ...sourceConn,
      intervalMs: { doc: 'i', format: 'nat', default: 1000 },
    });
    reg.addSinkType('acme-write', NoopSink, sourceConn);
    reg.registerFacadeProvider('acme', {
      connectionSchema: connSchema,
      sourceTypes: ['acme-poll'],
      sinkTypes: ['acme-write'],
      create: () => {
        throw new Error('not started in this test');
      },
    });
  },
});

const routes = [{ id: 'r', to: ['w'] }];

describe('connections:', () => {
  it('gives a source and a sink the keys of their connection (their own keys win), without the keys their type does not take', async () => {
    const { config } = await configure({
      plugins: [plugin],
      config: {
        connections: {
          'acme-1': {
            kind: 'acme',
            baseUrl: 'https://acme.example/r4',
            clientId: 'c1',
            auth: { scopes: ['system/Patient.read'] },
            writeDepartment: '7',
            facade: { cache: { ttlSeconds: 30 }, paths: { 'Patient.read': 'fhir' } },
          },
        },
        sources: { p: { type: 'acme-poll', connection: 'acme-1', clientId: 'override', intervalMs: 5 } },
        sinks: { w: { type: 'acme-write', connection: 'acme-1' } },
        routes,
      },
    });
    expect(config.sources.p).toMatchObject({
      baseUrl: 'https://acme.example/r4',
      clientId: 'override',
      auth: { scopes: ['system/Patient.read'] },
      intervalMs: 5,
    });
    expect(config.sources.p).not.toHaveProperty('writeDepartment');
    expect(config.sinks.w).toMatchObject({ baseUrl: 'https://acme.example/r4', clientId: 'c1' });
    expect(config.connections['acme-1']).toEqual({
      kind: 'acme',
      config: {
        baseUrl: 'https://acme.example/r4',
        clientId: 'c1',
        auth: { scopes: ['system/Patient.read'] },
        writeDepartment: '7',
      },
      facade: {
        enabled: true,
        cache: { ttlSeconds: 30, storeMaxAgeSeconds: 0, maxEntries: 10_000 },
        paths: { 'Patient.read': 'fhir' },
        identity: { linkSystems: [], linkedIdentifiers: false },
        rateLimit: { qps: 0, burst: 0 },
      },
    });
    expect(config.warnings).toEqual([]);
  });

  it('keeps the inline form working, with a deprecation warning naming the entry', async () => {
    const { config } = await configure({
      plugins: [plugin],
      config: {
        sources: { p: { type: 'acme-poll', baseUrl: 'https://acme.example/r4' } },
        sinks: { w: { type: 'acme-write', baseUrl: 'https://acme.example/r4' } },
        routes,
      },
    });
    expect(config.sources.p.baseUrl).toBe('https://acme.example/r4');
    expect(config.warnings.map((w) => w.path)).toEqual(['sources.p', 'sinks.w']);
    expect(config.warnings[0].message).toMatch(/deprecated.*connections:.*connection: <id>/);
  });

  it('lists every problem by path', async () => {
    const err = await configure({
      plugins: [plugin],
      config: {
        connections: {
          good: { kind: 'acme', baseUrl: 'https://acme.example' },
          nokind: { baseUrl: 'https://x' },
          badkind: { kind: 'zeta' },
          badkeys: {
            kind: 'acme',
            baseUrl: 'ftp://x',
            colour: 'red',
            facade: { cache: { ttlSeconds: -1 }, paths: { 'patient-read': 'fhir' } },
          },
        },
        sources: { p: { type: 'acme-poll', connection: 'missing' }, q: { type: 'acme-poll', connection: 7 } },
        sinks: { w: { type: 'acme-write', connection: 'good' } },
        routes,
      },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const paths = (err as ConfigError).problems.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'connections.nokind.kind',
        'connections.badkind.kind',
        'connections.badkeys.baseUrl',
        'connections.badkeys.colour',
        'connections.badkeys.facade.cache.ttlSeconds',
        'connections.badkeys.facade.paths',
        'sources.p.connection',
        'sources.q.connection',
      ]),
    );
    expect((err as ConfigError).problems.find((p) => p.path === 'sources.p.connection')?.message).toMatch(
      /unknown connection "missing"; defined: good, nokind, badkind, badkeys|unknown connection "missing"/,
    );
    expect((err as ConfigError).problems.find((p) => p.path === 'connections.badkind.kind')?.message).toMatch(
      /unknown connection kind "zeta"; registered: acme/,
    );
  });
});
