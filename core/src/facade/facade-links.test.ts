/**
 * A patient's identity across connections in the facade core, against a real SQLite store and a small
 * in-process provider per connection: explicit links (`$link`: both patients read from their vendors
 * first, whatever is cached; refused for an unknown patient, the same connection, a connection not
 * served; idempotent; `$unlink`), followed transitively and together with link keys (MRN); and the
 * pipeline feeding the facade's store (what a source bound to a connection delivered is served from
 * the store without a vendor call, only where a facade read would answer the same; never replacing a
 * newer copy; a store that fails costs only the cache, logged without PHI); the `$link` body's forms.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { Bundle, Patient } from '@medplum/fhirtypes';
import type { ConnectionEntry } from '../config/engine.schema';
import { FhirJsonTransform } from '../fhir/fhir-json.transform';
import { createLogger, silentLogger } from '../logging/logger';
import { SqliteMessageStore } from '../store/sqlite.store';
import { linkTarget } from './facade-link-routes';
import { errorAnswer } from './facade-outcome';
import { FacadePipelineFeed } from './facade-pipeline-feed';
import { FacadeService, MRN_TYPE } from './facade.service';
import type { FacadeCapability, FacadeProvider, FacadeRecord } from './provider';

const FHIR = 'application/fhir+json';

/** A vendor holding the patients it was given; canonical ids `t-<vendor id>`. */
class PatientsProvider implements FacadeProvider {
  readonly vendor = 'test';
  readonly patients = new Map<string, Patient>();
  reads: string[] = [];
  capabilities(): FacadeCapability[] {
    return [{ type: 'Patient', interaction: 'read', path: 'fhir', contentType: FHIR }];
  }
  defaultPaths() {
    return { '*': ['fhir'] };
  }
  vendorId(_t: string, id: string) {
    return id.startsWith('t-') ? id.slice(2) : undefined;
  }
  async read(_t: string, id: string): Promise<FacadeRecord | undefined> {
    this.reads.push(id);
    const p = this.patients.get(id);
    return p ? { contentType: FHIR, body: Buffer.from(JSON.stringify(p)), vendorId: id } : undefined;
  }
  async search() {
    return { records: [] };
  }
}

const patient = (id: string, mrn?: string, family = 'Vendor'): Patient => ({
  resourceType: 'Patient',
  id: `t-${id}`,
  name: [{ family }],
  ...(mrn ? { identifier: [{ type: { coding: [MRN_TYPE] }, system: 'urn:mrn', value: mrn }] } : {}),
});

const entry = (storeMaxAgeSeconds = 0): ConnectionEntry => ({
  kind: 'test',
  config: {},
  facade: {
    enabled: true,
    cache: { ttlSeconds: 0, storeMaxAgeSeconds, maxEntries: 10 },
    paths: {},
    rateLimit: { qps: 0, burst: 0 },
    identity: { linkSystems: [], linkedIdentifiers: false },
  },
});

describe('facade identities: explicit links and the pipeline feed', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-links-'));
  let now = Date.now();
  const store = new SqliteMessageStore({ path: path.join(dir, 'f.db'), logger: silentLogger(), now: () => now });
  const providers: Record<string, PatientsProvider> = {};
  const make = (connections: Record<string, ConnectionEntry>) => {
    const svc = new FacadeService({
      store,
      transforms: [new FhirJsonTransform()],
      logger: silentLogger(),
      api: {} as never,
      connections,
      providers: [
        {
          kind: 'test',
          plugin: 'test',
          registration: { connectionSchema: {}, create: (ctx) => (providers[ctx.id] = new PatientsProvider()) },
        },
      ],
      submit: async () => [],
      now: () => now,
    });
    svc.start();
    return svc;
  };
  const ids = (l: { connection: string; id: string }[]) => l.map((i) => `${i.connection}:${i.id}`);
  beforeAll(() => store.open());
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('links two patients that share no identifier, after reading both from their vendors; idempotent; unlinks', async () => {
    const svc = make({ a: entry(30), b: entry(), c: entry(), d: entry() });
    providers.a.patients.set('1', patient('1'));
    providers.b.patients.set('2', patient('2'));
    providers.c.patients.set('3', patient('3', 'M-3'));
    providers.d.patients.set('4', patient('4', 'M-3'));
    // a's copy is in the store (storeMaxAgeSeconds): a link reads the vendor all the same.
    expect((await svc.read('a', 'Patient', 't-1')).from).toBe('vendor');
    expect((await svc.read('a', 'Patient', 't-1')).from).toBe('store');
    providers.a.reads = [];
    expect(await svc.link('a', 't-1', { connection: 'b', id: 't-2' }, 'token:x')).toBe(true);
    expect(providers.a.reads).toEqual(['1']);
    expect(providers.b.reads).toEqual(['2']);
    // Linking again, from either end, is fine.
    expect(await svc.link('b', 't-2', { connection: 'a', id: 't-1' }, 'token:x')).toBe(false);
    expect(ids(await svc.identities('a', 't-1'))).toEqual(['a:t-1', 'b:t-2']);
    expect(ids(await svc.identities('b', 't-2'))).toEqual(['a:t-1', 'b:t-2']);

    // Transitively, through explicit links and a shared MRN alike: a~b (link), b~c (link), c~d (MRN).
    await svc.read('d', 'Patient', 't-4');
    expect(await svc.link('b', 't-2', { connection: 'c', id: 't-3' }, 'token:x')).toBe(true);
    const all = ['a:t-1', 'b:t-2', 'c:t-3', 'd:t-4'];
    expect(ids(await svc.identities('a', 't-1'))).toEqual(all);
    expect(ids(await svc.identities('d', 't-4'))).toEqual(all);

    expect(await svc.unlink('a', 't-1', { connection: 'b', id: 't-2' })).toBe(true);
    expect(await svc.unlink('b', 't-2', { connection: 'a', id: 't-1' })).toBe(false);
    expect(ids(await svc.identities('a', 't-1'))).toEqual(['a:t-1']);
    expect(ids(await svc.identities('d', 't-4'))).toEqual(['b:t-2', 'c:t-3', 'd:t-4']);
  });

  it('refuses a link to a patient the vendor has not, to the same connection, and to a connection not served', async () => {
    const svc = make({ a: entry(), b: entry() });
    providers.a.patients.set('1', patient('1'));
    providers.b.patients.set('2', patient('2'));
    const fail = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e) => errorAnswer(e),
      );
    // The other patient: 422 not-found (the request names it); the URL's: 404.
    expect(await fail(svc.link('a', 't-1', { connection: 'b', id: 't-99' }, 'x'))).toMatchObject({
      status: 422,
      body: { issue: [{ code: 'not-found', diagnostics: 'Patient/t-99 not found at connection b: nothing linked' }] },
    });
    expect(await fail(svc.link('a', 't-98', { connection: 'b', id: 't-2' }, 'x'))).toMatchObject({ status: 404 });
    // Not one of the connection's ids at all.
    expect(await fail(svc.link('a', 't-1', { connection: 'b', id: 'zz' }, 'x'))).toMatchObject({ status: 422 });
    expect(await fail(svc.link('a', 't-1', { connection: 'a', id: 't-1' }, 'x'))).toMatchObject({ status: 400 });
    expect(await fail(svc.link('a', 't-1', { connection: 'nope', id: 't-2' }, 'x'))).toMatchObject({
      status: 422,
      body: { issue: [{ code: 'not-found' }] },
    });
    expect(ids(await svc.identities('a', 't-1'))).toEqual(['a:t-1']);
  });

  it('serves what the pipeline delivered from a source bound to the connection, without a vendor call', async () => {
    const svc = make({ s: entry(60), plain: entry() });
    const bound: Record<string, string> = { poll: 's', other: 'plain' };
    const feed = new FacadePipelineFeed(svc, store.facade, silentLogger(), (id) => bound[id]);
    const delivered = patient('7', 'M-7', 'FromThePipeline');
    const bundle = (...resources: Patient[]): string =>
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: resources.map((resource) => ({ resource })),
      } satisfies Bundle);
    feed.offer([
      // The second Patient of a Bundle is not what a read of its id would answer: not kept.
      {
        message: { sourceId: 'poll', contentType: FHIR, receivedAt: new Date(now) },
        bundleJson: bundle(delivered, patient('8')),
      },
      // Another content type than the read path's records: not kept either.
      {
        message: { sourceId: 'poll', contentType: 'application/x-other', receivedAt: new Date(now) },
        bundleJson: bundle(patient('9')),
      },
      // A source bound to no connection: nothing.
      {
        message: { sourceId: 'mllp', contentType: FHIR, receivedAt: new Date(now) },
        bundleJson: bundle(patient('10')),
      },
    ]);
    await feed.idle();
    const r = await svc.read('s', 'Patient', 't-7');
    expect(r.from).toBe('store');
    expect(r.resource).toEqual(delivered);
    expect(providers.s.reads).toEqual([]);
    // Its identity with the MRN: found by it, linked by it.
    expect((await store.facade!.facadeIdentitiesByMrn('Patient', 'urn:mrn|M-7')).map((i) => i.canonicalId)).toEqual([
      't-7',
    ]);
    expect(await store.facade!.facadeResourceGet('s', 'Patient', 't-8')).toBeUndefined();
    expect(await store.facade!.facadeResourceGet('s', 'Patient', 't-9')).toBeUndefined();
    expect(await store.facade!.facadeIdentityOf('s', 'Patient', 't-10')).toBeUndefined();
    // The connection not serving from the store: the identity only.
    feed.offer([
      {
        message: { sourceId: 'other', contentType: FHIR, receivedAt: new Date(now) },
        bundleJson: bundle(patient('11')),
      },
    ]);
    await feed.idle();
    expect((await store.facade!.facadeIdentityOf('plain', 'Patient', 't-11'))?.vendorId).toBe('11');
    expect(await store.facade!.facadeResourceGet('plain', 'Patient', 't-11')).toBeUndefined();

    // Older than the copy there (a replayed message, or a read that went to the vendor since): kept out.
    now += 120_000;
    providers.s.patients.set('7', patient('7', 'M-7', 'NewerAtTheVendor'));
    expect((await svc.read('s', 'Patient', 't-7')).resource).toMatchObject({ name: [{ family: 'NewerAtTheVendor' }] });
    feed.offer([
      {
        message: { sourceId: 'poll', contentType: FHIR, receivedAt: new Date(now - 60_000) },
        bundleJson: bundle(delivered),
      },
    ]);
    await feed.idle();
    const again = await svc.read('s', 'Patient', 't-7');
    expect(again.from).toBe('store');
    expect(again.resource).toMatchObject({ name: [{ family: 'NewerAtTheVendor' }] });
  });
});

describe('the pipeline feed when the store fails', () => {
  it('loses only the cache entries, logged by counts and error code, never a value of the resource', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-feed-down-'));
    const store = new SqliteMessageStore({ path: path.join(dir, 'f.db'), logger: silentLogger() });
    await store.open();
    const svc = new FacadeService({
      store,
      transforms: [new FhirJsonTransform()],
      logger: silentLogger(),
      api: {} as never,
      connections: { s: entry(60) },
      providers: [
        { kind: 'test', plugin: 'test', registration: { connectionSchema: {}, create: () => new PatientsProvider() } },
      ],
      submit: async () => [],
    });
    svc.start();
    const out: string[] = [];
    const logger = createLogger(
      { level: 'debug' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          out.push(chunk.toString('utf8'));
          cb();
        },
      }),
    );
    const feed = new FacadePipelineFeed(svc, store.facade, logger, () => 's');
    await store.close();
    const secret = patient('5', 'MRN-SECRET-55', 'Secretname');
    feed.offer([
      {
        message: { sourceId: 'poll', contentType: FHIR, receivedAt: new Date() },
        bundleJson: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ resource: secret }] }),
      },
    ]);
    await feed.idle();
    const text = out.join('');
    expect(text).toContain('not recorded for the facade');
    expect(text).toContain('"messages":1');
    expect(text).not.toMatch(/Secretname|MRN-SECRET-55|t-5/);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('linkTarget ($link / $unlink bodies)', () => {
  const params = (...parameter: object[]) => ({ resourceType: 'Parameters', parameter });
  it('takes the connection and patient, or the facade URL of the patient alone', () => {
    expect(
      linkTarget(
        params(
          { name: 'connection', valueString: 'epic-a' },
          { name: 'patient', valueReference: { reference: 'Patient/e1' } },
        ),
      ),
    ).toEqual({ connection: 'epic-a', id: 'e1' });
    expect(
      linkTarget(
        params({ name: 'patient', valueReference: { reference: 'https://api.example/fhir/mill/Patient/c-1' } }),
      ),
    ).toEqual({ connection: 'mill', id: 'c-1' });
  });
  it('refuses anything else (no connection, another type, two connections that differ, a bad id) with a 400', () => {
    for (const body of [
      null,
      { resourceType: 'Patient' },
      params({ name: 'patient', valueReference: { reference: 'Patient/e1' } }),
      params(
        { name: 'connection', valueString: 'a' },
        { name: 'patient', valueReference: { reference: 'Observation/o' } },
      ),
      params(
        { name: 'connection', valueString: 'a' },
        { name: 'patient', valueReference: { reference: 'https://x/fhir/b/Patient/p' } },
      ),
      params(
        { name: 'connection', valueString: 'a b\n' },
        { name: 'patient', valueReference: { reference: 'Patient/p' } },
      ),
    ])
      expect(errorAnswer(catchOf(() => linkTarget(body)))).toMatchObject({ status: 400 });
  });
});

function catchOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
}
