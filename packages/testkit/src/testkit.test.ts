/** The testkit's own parts: the vendor simulator (token, paging, faults), the fake clock, the source harness. */
import { FerryError } from '@ferry/core';
import { FakeClock } from './clock';
import { openSqliteStore, sourceHarness, validatedConfig } from './harness';
import { VendorSimulator } from './vendor-simulator';

describe('VendorSimulator', () => {
  const sim = new VendorSimulator({ clients: [{ clientId: 'c', clientSecret: 's' }], tokenTtlSec: 60 });
  beforeAll(() => sim.start());
  afterAll(() => sim.stop());
  const token = async () => {
    const r = await fetch(sim.tokenUrl, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from('c:s').toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    return { status: r.status, body: (await r.json()) as { access_token: string; expires_in: number } };
  };

  it('issues client-credentials tokens, refuses a bad secret, and checks the bearer', async () => {
    const t = await token();
    expect(t).toMatchObject({ status: 200, body: { expires_in: 60 } });
    const bad = await fetch(sim.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=c&client_secret=x',
    });
    expect(bad.status).toBe(401);
    sim.route('GET', '/ping', () => ({ json: { ok: true } }));
    expect((await fetch(`${sim.url}/ping`)).status).toBe(401);
    expect(
      (await fetch(`${sim.url}/ping`, { headers: { authorization: `Bearer ${t.body.access_token}` } })).status,
    ).toBe(200);
    sim.revokeTokens();
    expect(
      (await fetch(`${sim.url}/ping`, { headers: { authorization: `Bearer ${t.body.access_token}` } })).status,
    ).toBe(401);
  });

  it('pages a searchset by next links and injects 429 (Retry-After), 5xx and a hang once each', async () => {
    const auth = { authorization: `Bearer ${(await token()).body.access_token}` };
    sim.pages(
      '/fhir/Patient',
      Array.from({ length: 5 }, (_, i) => ({ resourceType: 'Patient', id: `p${i}` })),
      2,
    );
    const ids: string[] = [];
    for (let url: string | undefined = `${sim.url}/fhir/Patient`; url;) {
      const b = (await (await fetch(url, { headers: auth })).json()) as any;
      ids.push(...b.entry.map((e: any) => e.resource.id));
      url = b.link.find((l: any) => l.relation === 'next')?.url;
    }
    expect(ids).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
    sim.fault('/fhir/Patient', { status: 429, retryAfterSec: 3 }).fault('/fhir/Patient', { status: 503 });
    const r1 = await fetch(`${sim.url}/fhir/Patient`, { headers: auth });
    expect([r1.status, r1.headers.get('retry-after')]).toEqual([429, '3']);
    expect((await fetch(`${sim.url}/fhir/Patient`, { headers: auth })).status).toBe(503);
    expect((await fetch(`${sim.url}/fhir/Patient`, { headers: auth })).status).toBe(200);
    sim.fault('/fhir/Patient', { status: 'hang' });
    await expect(
      fetch(`${sim.url}/fhir/Patient`, { headers: auth, signal: AbortSignal.timeout(200) }),
    ).rejects.toThrow();
  });
});

describe('FakeClock', () => {
  it('moves only when advanced, running due timers in order', async () => {
    const clock = new FakeClock(1000);
    const ran: string[] = [];
    clock.setTimeout(() => ran.push('b'), 200);
    clock.setTimeout(() => ran.push('a'), 100);
    const cancel = clock.setTimeout(() => ran.push('never'), 150);
    cancel();
    await clock.advance(150);
    expect([clock.now(), ran]).toEqual([1150, ['a']]);
    await clock.advance(100);
    expect([clock.now(), ran, clock.pending()]).toEqual([1250, ['a', 'b'], 0]);
  });
});

describe('sourceHarness', () => {
  it('commits to the real store with the checkpoint, records commit times, and refuses while the store is down', async () => {
    const store = await openSqliteStore();
    try {
      const h = sourceHarness(store, 'src', {});
      const msg = { contentType: 'text/plain', body: Buffer.from('x'), headers: {} };
      await h.ctx.submit([msg], { checkpoint: { sourceId: 'src', key: 'k', value: '1' } });
      expect(await store.getCheckpoint('src', 'k')).toBe('1');
      expect(h.submits[0].committedAt).toBeGreaterThanOrEqual(h.submits[0].calledAt);
      h.storeDown = true;
      const err = await h.ctx.submit([msg], { checkpoint: { sourceId: 'src', key: 'k', value: '2' } }).catch((e) => e);
      expect(FerryError.is(err) && err.kind).toBe('transient');
      expect(await store.getCheckpoint('src', 'k')).toBe('1');
      expect(h.stored).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it('validatedConfig fills defaults and lists every problem by path', () => {
    const schema = { a: { doc: 'a', format: 'nat', default: 5 }, b: { doc: 'b', format: String, default: 'x' } };
    expect(validatedConfig(schema, { b: 'y' })).toEqual({ a: 5, b: 'y' });
    expect(() => validatedConfig(schema, { a: -1, c: 1 })).toThrow(/test\.a.*test\.c|test\.c.*test\.a/);
  });
});
