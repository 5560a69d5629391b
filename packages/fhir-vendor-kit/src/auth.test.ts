import { FerryError } from '@ferry/core';
import { SignJWT, exportJWK } from 'jose';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { EpicSimulator } from '../../../test/simulators/epic/epic-simulator';
import { connConfig, testKey } from './testing';
import { VendorConnection, exchangeAssertion, discoverTokenUrl } from './connection';
import { signClientAssertion } from './keys';

describe('epic SMART backend services auth against the simulator', () => {
  const sim = new EpicSimulator();
  let key: Awaited<ReturnType<typeof testKey>>;
  beforeAll(async () => {
    key = await testKey('kid-a');
    sim.registerClient('client-1', key.jwks);
    await sim.start();
  });
  afterAll(() => sim.stop());

  const lastTokenReason = () => [...sim.requests].reverse().find((r) => r.path.endsWith('/oauth2/token'))?.reason;

  it('discovers the token URL from .well-known/smart-configuration, else from the CapabilityStatement', async () => {
    expect(await discoverTokenUrl('epic', sim.baseUrl)).toBe(sim.tokenUrl);
    sim.server.inject({
      match: '/.well-known/smart-configuration',
      status: 200,
      body: '<html>portal</html>',
      contentType: 'text/html',
    });
    expect(await discoverTokenUrl('epic', sim.baseUrl)).toBe(sim.tokenUrl);
    sim.server.inject({
      match: '/.well-known/smart-configuration',
      status: 404,
      body: '<html>404</html>',
      contentType: 'text/html',
    });
    expect(await discoverTokenUrl('epic', sim.baseUrl)).toBe(sim.tokenUrl);
    expect(sim.requests.filter((r) => r.path.endsWith('/metadata'))).toHaveLength(2);
  });

  it('gets a token with an RS384 assertion (kid, iss=sub, aud, jti, exp <= 5 min) from a PEM file and caches it', async () => {
    const conn = new VendorConnection(
      'epic',
      connConfig({ baseUrl: sim.baseUrl, clientId: 'client-1' }, { privateKeyFile: key.file, kid: 'kid-a' }),
    );
    const before = sim.requests.filter((r) => r.path.endsWith('/oauth2/token')).length;
    const t1 = await conn.accessToken();
    const t2 = await conn.accessToken();
    expect(t1).toBe(t2);
    expect(sim.requests.filter((r) => r.path.endsWith('/oauth2/token')).length).toBe(before + 1);
    expect(sim.tokens.get(t1)?.clientId).toBe('client-1');
  });

  it('a bad aud is refused with invalid_client and reported with what to check', async () => {
    const assertion = await signClientAssertion(key.key, {
      clientId: 'client-1',
      tokenUrl: sim.tokenUrl.replace('127.0.0.1', 'localhost'),
    });
    const err = await exchangeAssertion({
      vendor: 'epic',
      tokenUrl: sim.tokenUrl,
      assertion,
      clientId: 'client-1',
    }).catch((e) => e);
    expect(FerryError.is(err) && err.code).toBe('FERRY_E_VENDOR_TOKEN_REJECTED');
    expect(err.message).toMatch(/invalid_client.*aud is exactly the token URL/);
    expect(err.retryable).toBe(false);
    expect(lastTokenReason()).toMatch(/aud must be the token endpoint/);
  });

  it('a reused jti is refused with invalid_client', async () => {
    const assertion = await signClientAssertion(key.key, { clientId: 'client-1', tokenUrl: sim.tokenUrl });
    await expect(
      exchangeAssertion({ vendor: 'epic', tokenUrl: sim.tokenUrl, assertion, clientId: 'client-1' }),
    ).resolves.toHaveProperty('access_token');
    const err = await exchangeAssertion({
      vendor: 'epic',
      tokenUrl: sim.tokenUrl,
      assertion,
      clientId: 'client-1',
    }).catch((e) => e);
    expect(err.message).toMatch(/invalid_client.*jti is not reused/);
    expect(lastTokenReason()).toMatch(/already used/);
  });

  it('an exp 10 minutes out is refused with invalid_client', async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS384', typ: 'JWT', kid: 'kid-a' })
      .setIssuer('client-1')
      .setSubject('client-1')
      .setAudience(sim.tokenUrl)
      .setJti(randomUUID())
      .setExpirationTime(now + 600)
      .sign(key.key.privateKey);
    const err = await exchangeAssertion({
      vendor: 'epic',
      tokenUrl: sim.tokenUrl,
      assertion,
      clientId: 'client-1',
    }).catch((e) => e);
    expect(err.message).toMatch(/invalid_client.*exp is at most 5 minutes/);
    expect(lastTokenReason()).toMatch(/more than 5 minutes/);
  });

  it('an unregistered key (wrong kid / signature) is refused', async () => {
    const other = await testKey('kid-a');
    sim.registerClient('client-2', key.jwks);
    const conn = new VendorConnection(
      'epic',
      connConfig({ baseUrl: sim.baseUrl, clientId: 'client-2' }, { privateKey: other.pem, kid: 'kid-a' }),
    );
    const err = await conn.accessToken().catch((e) => e);
    expect(err.code).toBe('FERRY_E_VENDOR_TOKEN_REJECTED');
    expect(err.kind).toBe('config');
    expect(lastTokenReason()).toMatch(/signature/i);
  });

  it('reads the key from an environment variable as a JWK', async () => {
    const jwk = JSON.stringify({ ...(await exportJWK(key.key.privateKey)), kid: 'kid-a' });
    process.env.FERRY_TEST_EPIC_KEY = jwk;
    try {
      const conn = new VendorConnection(
        'epic',
        connConfig(
          { baseUrl: sim.baseUrl, clientId: 'client-1', tokenUrl: sim.tokenUrl },
          { privateKeyEnv: 'FERRY_TEST_EPIC_KEY', refreshSkewSec: 61 },
        ),
      );
      await expect(conn.accessToken()).resolves.toEqual(expect.any(String));
    } finally {
      delete process.env.FERRY_TEST_EPIC_KEY;
    }
  });

  it('re-authenticates once after a 401 on a resource call and replays it', async () => {
    sim.store.put({ resourceType: 'Patient', id: 'p401', name: [{ family: 'X' }] });
    const conn = new VendorConnection(
      'epic',
      connConfig(
        { baseUrl: sim.baseUrl, clientId: 'client-1' },
        { privateKey: key.pem, kid: 'kid-a', refreshSkewSec: 62 },
      ),
    );
    await conn.accessToken();
    sim.tokens.clear(); // the server forgot every token (revoked / restarted)
    const res = await conn.http.request({ url: 'Patient/p401' });
    expect(res.json().id).toBe('p401');
  });

  it('a forced 401 on the 3rd call is replayed once with a new token; a 401 on the replay too is a hard error', async () => {
    sim.store.put({ resourceType: 'Patient', id: 'p3rd', name: [{ family: 'Y' }] });
    const conn = new VendorConnection(
      'epic',
      connConfig(
        { baseUrl: sim.baseUrl, clientId: 'client-1' },
        { privateKey: key.pem, kid: 'kid-a', refreshSkewSec: 63 },
      ),
    );
    const tokenCalls = () => sim.requests.filter((r) => r.path.endsWith('/oauth2/token')).length;
    sim.server.inject({ match: '/Patient/p3rd', status: 401, skip: 2, times: 1 });
    for (let i = 0; i < 2; i++) await conn.http.request({ url: 'Patient/p3rd' });
    const before = tokenCalls();
    expect((await conn.http.request({ url: 'Patient/p3rd' })).json().id).toBe('p3rd');
    expect(tokenCalls()).toBe(before + 1);
    sim.server.clearFaults();
    sim.server.inject({ match: '/Patient/p3rd', status: 401, times: 2 });
    const err = await conn.http.request({ url: 'Patient/p3rd' }).catch((e) => e);
    expect(err.code).toBe('FERRY_E_VENDOR_UNAUTHORIZED');
    expect(err.retryable).toBe(false);
    sim.server.clearFaults();
  });

  it('signs with a jku header when configured; the server fetches the registered JWK Set URL (key rotation)', async () => {
    const next = await testKey('kid-2026-b');
    const jwksDoc = { keys: [...key.jwks.keys, ...next.jwks.keys] };
    const srv = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwksDoc)),
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const jku = `http://127.0.0.1:${(srv.address() as { port: number }).port}/.well-known/jwks.json`;
    try {
      sim.registerClient('jku-client', undefined, { jku });
      const ok = new VendorConnection(
        'epic',
        connConfig({ baseUrl: sim.baseUrl, clientId: 'jku-client' }, { privateKey: next.pem, kid: 'kid-2026-b', jku }),
      );
      await expect(ok.accessToken()).resolves.toEqual(expect.any(String));
      const noJku = new VendorConnection(
        'epic',
        connConfig(
          { baseUrl: sim.baseUrl, clientId: 'jku-client' },
          { privateKey: next.pem, kid: 'kid-2026-b', refreshSkewSec: 64 },
        ),
      );
      const err = await noJku.accessToken().catch((e) => e);
      expect(err.message).toMatch(/invalid_client/);
      expect(lastTokenReason()).toMatch(/jku header undefined is not the registered/);
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  it('a client whose registration has not propagated yet is refused with invalid_client', async () => {
    sim.registerClient('new-client', key.jwks, { activeFrom: Date.now() + 3600_000 });
    const conn = new VendorConnection(
      'epic',
      connConfig({ baseUrl: sim.baseUrl, clientId: 'new-client' }, { privateKey: key.pem, kid: 'kid-a' }),
    );
    const err = await conn.accessToken().catch((e) => e);
    expect(err.message).toMatch(/invalid_client.*propagate/);
    expect(lastTokenReason()).toMatch(/not active yet/);
  });

  it('a token the server expired early (simulator clock moved past its TTL) is replaced after the 401', async () => {
    sim.store.put({ resourceType: 'Patient', id: 'pclock', name: [{ family: 'Z' }] });
    const conn = new VendorConnection(
      'epic',
      connConfig(
        { baseUrl: sim.baseUrl, clientId: 'client-1' },
        { privateKey: key.pem, kid: 'kid-a', refreshSkewSec: 65 },
      ),
    );
    sim.opts.tokenTtlSec = 5; // TTL override knob
    const t1 = await conn.accessToken();
    sim.opts.tokenTtlSec = 3600;
    sim.server.advance(10_000); // deterministic clock: the 5 s token is expired server-side, the client still holds it
    try {
      expect((await conn.http.request({ url: 'Patient/pclock' })).json().id).toBe('pclock');
      expect(await conn.accessToken()).not.toBe(t1);
      expect(sim.requests.some((r) => r.reason === 'token expired')).toBe(true);
    } finally {
      sim.server.advance(-10_000);
    }
  });
});
