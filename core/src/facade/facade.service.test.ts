/**
 * The facade core without a vendor: a small in-process provider (two paths, `fhir` and `rest`, whose
 * records are FHIR JSON for the core's own fhir+json transform, or a content type no transform
 * handles) against a real SQLite store. The decision rule (default order, fallback when a path's
 * transform is missing, per-connection override), the memory and store caches, signed cursors,
 * refusals of unknown search parameters, and the rate limiter.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Patient } from '@medplum/fhirtypes';
import { FhirJsonTransform } from '../fhir/fhir-json.transform';
import { silentLogger } from '../logging/logger';
import { SqliteMessageStore } from '../store/sqlite.store';
import type { ConnectionEntry } from '../config/engine.schema';
import { defineErrors, FerryError } from '../errors';

/** A vendor plugin's own code (as a plugin declares it). */
const testErrors = defineErrors({ VENDOR_HTTP: { kind: 'transient', description: 'test vendor: down' } });
import { CURSOR_KEY_CHECKPOINT, FacadeService } from './facade.service';
import { ClientRateLimiter, errorAnswer } from './facade.server';
import { facadeError, type FacadeCapability, type FacadeProvider, type FacadeRecord } from './provider';

const NO_TRANSFORM = 'application/x-nothing-handles-this';

class TestProvider implements FacadeProvider {
  readonly vendor = 'test';
  reads: string[] = [];
  constructor(private readonly fhirType = 'application/fhir+json') {}
  capabilities(): FacadeCapability[] {
    return [
      { type: 'Patient', interaction: 'read', path: 'fhir', contentType: this.fhirType },
      { type: 'Patient', interaction: 'read', path: 'rest', contentType: 'application/fhir+json' },
      {
        type: 'Patient',
        interaction: 'search',
        path: 'rest',
        contentType: 'application/fhir+json',
        searchParams: ['family'],
      },
    ];
  }
  defaultPaths() {
    return { '*': ['fhir', 'rest'] };
  }
  vendorId(_t: string, id: string) {
    return id.startsWith('t-') ? id.slice(2) : undefined;
  }
  private rec(id: string, path: string): FacadeRecord {
    const p: Patient = { resourceType: 'Patient', id: `t-${id}`, name: [{ family: `From-${path}` }] };
    return { contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(p)), vendorId: id };
  }
  async read(_t: string, id: string, ctx: { path: string }) {
    this.reads.push(`${ctx.path}:${id}`);
    if (id === 'gone') throw facadeError('not-found', 'gone');
    return this.rec(id, ctx.path);
  }
  async search(
    _t: string,
    _p: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: { path: string },
  ) {
    const start = Number(page.cursor ?? 0);
    const ids = Array.from({ length: 5 }, (_, i) => String(i)).slice(start, start + page.count);
    return {
      records: ids.map((i) => this.rec(i, ctx.path)),
      next: start + page.count < 5 ? String(start + page.count) : undefined,
      total: 5,
    };
  }
}

const api = {
  enabled: true,
  host: '127.0.0.1',
  port: 0,
  publicUrl: '',
  allowedHosts: [],
  cors: { origins: [] },
  bodyLimit: 1e6,
  requestTimeoutMs: 0,
  vendorTimeoutMs: 0,
  defaultCount: 2,
  maxCount: 3,
  rateLimit: { qps: 0, burst: 0 },
  idempotencyHours: 1,
  cursorSecret: '',
  tls: { cert: '', key: '', passphrase: '', ca: '', requestCert: false },
};
const entry = (over: Partial<ConnectionEntry['facade']> = {}): ConnectionEntry => ({
  kind: 'test',
  config: {},
  facade: {
    enabled: true,
    cache: { ttlSeconds: 0, storeMaxAgeSeconds: 0, maxEntries: 10 },
    paths: {},
    rateLimit: { qps: 0, burst: 0 },
    identity: { linkSystems: [], linkedIdentifiers: false },
    ...over,
  },
});

describe('FacadeService', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-svc-'));
  let now = Date.now();
  // One clock for the store's fetched-at times and the service's freshness checks.
  const store = new SqliteMessageStore({ path: path.join(dir, 'f.db'), logger: silentLogger(), now: () => now });
  const providers: Record<string, TestProvider> = {};
  const make = (
    connections: Record<string, ConnectionEntry>,
    fhirType?: Record<string, string>,
    o: { api?: Partial<typeof api>; store?: SqliteMessageStore } = {},
  ) => {
    const svc = new FacadeService({
      store: o.store ?? store,
      transforms: [new FhirJsonTransform()],
      logger: silentLogger(),
      api: { ...api, ...o.api },
      connections,
      providers: [
        {
          kind: 'test',
          plugin: 'test',
          registration: {
            connectionSchema: {},
            create: (ctx) => (providers[ctx.id] = new TestProvider(fhirType?.[ctx.id])),
          },
        },
      ],
      submit: async () => [],
      now: () => now,
    });
    svc.start();
    return svc;
  };
  beforeAll(() => store.open());
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves by the default order, falls back when a path has no transform, and obeys an override', async () => {
    const svc = make({ a: entry(), b: entry(), c: entry({ paths: { 'Patient.read': 'rest' } }) }, { b: NO_TRANSFORM });
    expect((await svc.read('a', 'Patient', 't-1')).path).toBe('fhir');
    expect((await svc.read('b', 'Patient', 't-1')).path).toBe('rest');
    expect((await svc.read('c', 'Patient', 't-1')).path).toBe('rest');
    expect(svc.capabilityStatement('b', 'http://x').rest?.[0].resource?.[0].documentation).toBe(
      'paths: read via rest, search via rest',
    );
  });

  it('refuses an override naming a path the provider has not', () => {
    expect(() => make({ a: entry({ paths: { 'Patient.read': 'soap' } }) })).toThrow(
      /connections\.a\.facade\.paths\.Patient\.read: unknown path "soap"/,
    );
  });

  it('caches reads in memory for ttlSeconds, and from the store when fresher than storeMaxAgeSeconds', async () => {
    const svc = make({
      m: entry({ cache: { ttlSeconds: 10, storeMaxAgeSeconds: 0, maxEntries: 10 } }),
      s: entry({ cache: { ttlSeconds: 0, storeMaxAgeSeconds: 30, maxEntries: 10 } }),
    });
    expect((await svc.read('m', 'Patient', 't-2')).from).toBe('vendor');
    expect((await svc.read('m', 'Patient', 't-2')).from).toBe('cache');
    now += 11_000;
    expect((await svc.read('m', 'Patient', 't-2')).from).toBe('vendor');
    expect(providers.m.reads).toEqual(['fhir:2', 'fhir:2']);
    expect((await svc.read('s', 'Patient', 't-3')).from).toBe('vendor');
    expect((await svc.read('s', 'Patient', 't-3')).from).toBe('store');
    now += 31_000;
    expect((await svc.read('s', 'Patient', 't-3')).from).toBe('vendor');
  });

  it('pages with signed cursors carrying the vendor position, and refuses tampered ones and unknown parameters', async () => {
    const svc = make({ a: entry(), b: entry() });
    const p1 = await svc.search('a', 'Patient', { family: ['x'], _count: ['99'] });
    expect(p1.count).toBe(3);
    expect(p1.resources.map((r) => r.id)).toEqual(['t-0', 't-1', 't-2']);
    const p2 = await svc.search('a', 'Patient', { _cursor: [p1.next!], _count: ['3'] });
    expect(p2.resources.map((r) => r.id)).toEqual(['t-3', 't-4']);
    expect(p2.next).toBeUndefined();
    const [body, mac] = p1.next!.split('.');
    const forged = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), v: '0' }),
    ).toString('base64url');
    await expect(svc.search('a', 'Patient', { _cursor: [`${forged}.${mac}`] })).rejects.toThrow(
      /_cursor: not a cursor this facade issued/,
    );
    await expect(svc.search('b', 'Patient', { _cursor: [p1.next!] })).rejects.toThrow(
      /not a cursor of this connection/,
    );
    await expect(svc.search('a', 'Patient', { birthdate: ['2000-01-01'] })).rejects.toMatchObject({
      details: { facadeIssue: 'invalid' },
    });
  });

  it('opens a cursor in another instance on the same store (a restart, a load balancer), and only there, without api.cursorSecret', async () => {
    const first = make({ a: entry() });
    const p1 = await first.search('a', 'Patient', { family: ['x'], _count: ['2'] });
    const second = make({ a: entry() });
    expect(
      (await second.search('a', 'Patient', { _cursor: [p1.next!], _count: ['2'] })).resources.map((r) => r.id),
    ).toEqual(['t-2', 't-3']);
    const { sourceId, key } = CURSOR_KEY_CHECKPOINT;
    expect(Buffer.from((await store.getCheckpoint(sourceId, key))!, 'base64')).toHaveLength(32);
    // Another store is another deployment: its own key.
    const other = new SqliteMessageStore({ path: path.join(dir, 'other.db'), logger: silentLogger() });
    await other.open();
    try {
      await expect(
        make({ a: entry() }, undefined, { store: other }).search('a', 'Patient', { _cursor: [p1.next!] }),
      ).rejects.toThrow(/not a cursor this facade issued/);
    } finally {
      await other.close();
    }
    // Two instances that wrote the key at the same first moment: the one holding the loser re-reads the store.
    await store.setCheckpoint(sourceId, key, Buffer.alloc(32, 7).toString('base64'));
    const p2 = await make({ a: entry() }).search('a', 'Patient', { family: ['x'], _count: ['2'] });
    expect(
      (await first.search('a', 'Patient', { _cursor: [p2.next!], _count: ['2'] })).resources.map((r) => r.id),
    ).toEqual(['t-2', 't-3']);
  });

  it('signs cursors with api.cursorSecret when set: the same secret opens them anywhere, another refuses them', async () => {
    const other = new SqliteMessageStore({ path: path.join(dir, 'secret.db'), logger: silentLogger() });
    await other.open();
    try {
      const p1 = await make({ a: entry() }, undefined, { api: { cursorSecret: 'shared-secret' } }).search(
        'a',
        'Patient',
        { family: ['x'], _count: ['2'] },
      );
      expect(
        (
          await make({ a: entry() }, undefined, { api: { cursorSecret: 'shared-secret' }, store: other }).search(
            'a',
            'Patient',
            { _cursor: [p1.next!] },
          )
        ).resources.length,
      ).toBeGreaterThan(0);
      await expect(
        make({ a: entry() }, undefined, { api: { cursorSecret: 'another' } }).search('a', 'Patient', {
          _cursor: [p1.next!],
        }),
      ).rejects.toThrow(/not a cursor this facade issued/);
      await expect(make({ a: entry() }).search('a', 'Patient', { _cursor: [p1.next!] })).rejects.toThrow(
        /not a cursor this facade issued/,
      );
      expect(await other.getCheckpoint(CURSOR_KEY_CHECKPOINT.sourceId, CURSOR_KEY_CHECKPOINT.key)).toBeUndefined();
    } finally {
      await other.close();
    }
  });

  it('maps refusals to OperationOutcomes and statuses', async () => {
    const svc = make({ a: entry() });
    const e = await svc.read('a', 'Patient', 't-gone').catch((x) => x);
    expect(errorAnswer(e)).toMatchObject({ status: 404, body: { issue: [{ code: 'not-found' }] } });
    expect(errorAnswer(await svc.read('a', 'Observation', 'x').catch((x) => x))).toMatchObject({
      status: 501,
      body: { issue: [{ code: 'not-supported' }] },
    });
    expect(errorAnswer(facadeError('conflict', 'slot taken'))).toMatchObject({
      status: 409,
      body: { issue: [{ code: 'conflict' }] },
    });
    expect(errorAnswer(facadeError('duplicate', 'dup'))).toMatchObject({
      status: 409,
      body: { issue: [{ code: 'duplicate' }] },
    });
    expect(errorAnswer(new FerryError(testErrors.codes.VENDOR_HTTP, 'down', { kind: 'transient' }))).toMatchObject({
      status: 502,
      body: { issue: [{ code: 'transient' }] },
    });
  });
});

describe('ClientRateLimiter', () => {
  it('lets a burst through, then refuses with the seconds to wait, per key', () => {
    let t = 0;
    const l = new ClientRateLimiter(() => t);
    expect([l.take('a', 1, 2), l.take('a', 1, 2)]).toEqual([0, 0]);
    expect(l.take('a', 1, 2)).toBeGreaterThan(0);
    expect(l.take('b', 1, 2)).toBe(0);
    t += 1000;
    expect(l.take('a', 1, 2)).toBe(0);
    expect(l.take('x', 0, 0)).toBe(0);
  });
});
