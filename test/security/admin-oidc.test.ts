/**
 * OIDC / JWT bearer tokens on the admin API, checked against a JWKS this test serves itself on
 * port 0: signature, issuer, audience, expiry, algorithm; roles from a nested claim through
 * roleMap; the principal named in the audit trail.
 */
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Authenticator, configure, Engine, hasScope, silentLogger } from '@ferry/core';
import { defaultAuthConfig } from '../../core/src/admin/auth';
import { exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';

describe('admin API with OIDC bearer tokens', () => {
  let jwks: http.Server;
  let jwksUrl: string;
  let key: KeyLike;
  let otherKey: KeyLike;
  let jwksHits = 0;
  let engine: Engine;
  let base: string;
  const issuer = 'https://idp.hospital.example/realms/staff';
  const audience = 'ferry-admin';

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256');
    key = pair.privateKey;
    otherKey = (await generateKeyPair('RS256')).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    jwks = http.createServer((req, res) => {
      jwksHits++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/certs`;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-oidc-'));
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: {
            oidc: {
              issuer,
              audience,
              jwksUrl,
              rolesClaim: 'realm_access.roles',
              roleMap: { 'ferry-ops': 'operator', 'ferry-admins': 'admin', 'ward-viewers': 'viewer' },
            },
            failedAuth: { maxFailures: 0 },
          },
        },
      },
      showInitialToken: () => {
        throw new Error('OIDC is a configured principal: no initial token');
      },
    });
    await engine.start();
    base = engine.adminUrl!;
  });
  afterAll(async () => {
    await engine?.stop();
    await new Promise((r) => jwks.close(r));
  });

  const sign = (
    claims: Record<string, unknown>,
    opts: { key?: KeyLike; iss?: string; aud?: string; exp?: string | number; kid?: string } = {},
  ) =>
    new SignJWT({ preferred_username: 'dr.ops', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? 'k1' })
      .setSubject('user-123')
      .setIssuer(opts.iss ?? issuer)
      .setAudience(opts.aud ?? audience)
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? '5m')
      .sign(opts.key ?? key);
  const get = (p: string, token: string, scheme = 'Bearer') =>
    fetch(`${base}${p}`, { headers: { authorization: `${scheme} ${token}` } });

  it('accepts a valid token; its roles come from the mapped claim; the audit trail names the user', async () => {
    const ops = await sign({ realm_access: { roles: ['ferry-ops', 'unrelated'] } });
    expect(await (await get('/api/whoami', ops)).json()).toEqual({
      id: 'oidc:user-123',
      kind: 'oidc',
      name: 'dr.ops',
      roles: ['operator'],
    });
    expect((await get('/api/stats', ops, 'bearer')).status).toBe(200);
    expect((await get('/api/audit', ops)).status).toBe(403);
    const admin = await sign({ realm_access: { roles: ['ferry-admins'] } });
    expect((await get('/api/audit', admin)).status).toBe(200);
    const denied = await engine.store.auditEntries({ action: 'access.denied' });
    expect(denied.at(-1)).toMatchObject({ principal: 'oidc:user-123 (dr.ops)', role: 'operator', result: 'denied' });
    // The JWKS is fetched once and cached, not per request.
    expect(jwksHits).toBe(1);
  });

  it('reads the FHIR facade scopes from the scope claim (connection:<id>:read|write only)', async () => {
    const auth = new Authenticator(
      engine.store,
      { ...defaultAuthConfig(), oidc: { ...defaultAuthConfig().oidc, issuer, audience, jwksUrl } },
      silentLogger(),
    );
    const p = await auth.authenticate(
      `Bearer ${await sign({ roles: ['viewer'], scope: 'openid profile connection:athena-a:read connection:*:write system/Patient.read' })}`,
    );
    expect(p.scopes).toEqual(['connection:athena-a:read', 'connection:*:write']);
    expect(hasScope(p, 'athena-a', 'read')).toBe(true);
    expect(hasScope(p, 'epic', 'read')).toBe(false);
    expect(hasScope(p, 'epic', 'write')).toBe(true);
    expect((await auth.authenticate(`Bearer ${await sign({ roles: ['viewer'] })}`)).scopes).toBeUndefined();
  });

  it('refuses tokens that are expired, for another issuer or audience, signed by another key, unsigned, or without a Ferry role', async () => {
    const roles = { realm_access: { roles: ['ferry-admins'] } };
    const past = Math.floor(Date.now() / 1000) - 3600;
    const bad = [
      await sign(roles, { exp: past }),
      await sign(roles, { iss: 'https://evil.example' }),
      await sign(roles, { aud: 'another-app' }),
      await sign(roles, { key: otherKey }),
    ];
    for (const t of bad) expect((await get('/api/stats', t)).status).toBe(401);
    // alg "none": header {"alg":"none"}, the claims, no signature.
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none' })}.${b64({ ...roles, sub: 'x', iss: issuer, aud: audience, exp: Math.floor(Date.now() / 1000) + 300 })}.`;
    expect((await get('/api/stats', none)).status).toBe(401);
    // Valid, but no role that maps to a Ferry role: authenticated, allowed nothing.
    expect((await get('/api/stats', await sign({ realm_access: { roles: ['nurses'] } }))).status).toBe(403);
    const failed = await engine.store.auditEntries({ action: 'auth.failed' });
    expect(failed.map((e) => e.detail)).toEqual(
      expect.arrayContaining([
        'jwt:ERR_JWT_EXPIRED',
        'jwt:ERR_JWT_CLAIM_VALIDATION_FAILED',
        'jwt:ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
      ]),
    );
  });

  it("an identity provider that cannot be reached is the server's problem: 503, the caller not counted or locked out", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-oidc-down-'));
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/certs`;
    await new Promise((r) => closed.close(r));
    const e = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: { oidc: { issuer, audience, jwksUrl: deadUrl }, failedAuth: { maxFailures: 2 } },
        },
      },
    });
    await e.start();
    try {
      const t = await sign({ roles: ['admin'] });
      for (let i = 0; i < 4; i++)
        expect((await fetch(`${e.adminUrl}/api/stats`, { headers: { authorization: `Bearer ${t}` } })).status).toBe(
          503,
        );
      expect(await e.store.auditEntries({ action: 'auth.failed' })).toEqual([]);
    } finally {
      await e.stop();
    }
  });

  it('the config needs a JWKS URL (https unless localhost) and an audience with an issuer', async () => {
    await expect(configure({ config: { admin: { auth: { oidc: { issuer } } } } })).rejects.toThrow(
      /admin\.auth\.oidc\.jwksUrl[\s\S]*admin\.auth\.oidc\.audience/,
    );
    await expect(
      configure({ config: { admin: { auth: { oidc: { issuer, audience, jwksUrl: 'http://idp.example/certs' } } } } }),
    ).rejects.toThrow(/must be https/);
    await expect(
      configure({ config: { admin: { auth: { oidc: { issuer, audience, jwksUrl, roleMap: { x: 'root' } } } } } }),
    ).rejects.toThrow(/roleMap/);
  });
});
