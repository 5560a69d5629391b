/**
 * The console's "Sign in with <provider>" over real HTTP: the engine's admin server against the
 * tiny OIDC provider of test/support (port 0). Authorization code + PKCE (S256), state and nonce;
 * the exchange endpoint refuses a missing, forged or reused state and a missing or wrong verifier,
 * counts refusals with the guard's FailureLimiter (429), audits, and never writes a token to the
 * audit trail or the log.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Transport from 'winston-transport';
import winston from 'winston';
import { configure, Engine } from '@ferry/core';
import { OidcProvider } from '../support';

const b64url = (b: Buffer) => b.toString('base64url');

class Capture extends Transport {
  readonly lines: string[] = [];
  override log(info: unknown, next: () => void): void {
    this.lines.push(JSON.stringify(info));
    next();
  }
}

describe('console sign-in with the OIDC provider (authorization code + PKCE)', () => {
  const provider = new OidcProvider({ clientId: 'ferry-console', clientSecret: 's3cret-client' });
  const logs = new Capture();
  let engine: Engine;
  let base: string;

  const startEngine = async (maxFailures: number, extra: Record<string, unknown> = {}) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-oidc-'));
    const e = await Engine.create({
      logger: winston.createLogger({ level: 'debug', transports: [logs] }),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: {
            oidc: {
              issuer: provider.issuer,
              audience: 'ferry-console',
              jwksUrl: provider.jwksUrl,
              rolesClaim: 'groups',
              roleMap: { 'ferry-viewers': 'viewer', 'ferry-phi': 'phi-reader', 'ferry-admins': 'admin' },
              console: {
                clientId: 'ferry-console',
                clientSecret: 's3cret-client',
                displayName: 'Hospital SSO',
                ...extra,
              },
            },
            failedAuth: { maxFailures, windowMs: 60_000 },
          },
        },
      },
    });
    await e.start();
    return e;
  };

  beforeAll(async () => {
    await provider.start();
    provider.user = { sub: 'u-viewer', claims: { preferred_username: 'val.viewer', groups: ['ferry-viewers'] } };
    engine = await startEngine(0);
    base = engine.adminUrl!;
  });
  afterAll(async () => {
    await engine?.stop();
    await provider.stop();
  });

  const post = (p: string, body: unknown, b = base) =>
    fetch(`${b}${p}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const pkce = () => {
    const verifier = b64url(randomBytes(32));
    return { verifier, challenge: b64url(createHash('sha256').update(verifier).digest()) };
  };
  /** What the browser does: start, follow the provider's redirect; the code and state it comes back with. */
  async function authorize(b = base) {
    const { verifier, challenge } = pkce();
    const res = await post('/console/oidc/start', { codeChallenge: challenge, codeChallengeMethod: 'S256' }, b);
    expect(res.status).toBe(200);
    const { authorizationUrl, state } = (await res.json()) as { authorizationUrl: string; state: string };
    const back = await fetch(authorizationUrl, { redirect: 'manual' });
    expect(back.status).toBe(302);
    const cb = new URL(back.headers.get('location')!);
    return { verifier, state, cb, authorizationUrl: new URL(authorizationUrl) };
  }

  it('GET /console/oidc says whether to show the button and its label (nothing secret)', async () => {
    const c = await (await fetch(`${base}/console/oidc`)).json();
    expect(c).toEqual({ enabled: true, displayName: 'Hospital SSO' });
  });

  it('start: the authorization URL from the discovery document, with S256 challenge, state, nonce, openid scope and /console as redirect', async () => {
    const { authorizationUrl: u, state, cb } = await authorize();
    expect(`${u.origin}${u.pathname}`).toBe(`${provider.issuer}/authorize`);
    const q = u.searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('client_id')).toBe('ferry-console');
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get('state')).toBe(state);
    expect(q.get('nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get('scope')!.split(' ')).toEqual(['openid', 'profile']);
    expect(q.get('redirect_uri')).toBe(`${base}/console`);
    expect(`${cb.origin}${cb.pathname}`).toBe(`${base}/console`);
    expect(cb.searchParams.get('state')).toBe(state);
    expect(cb.searchParams.get('code')).toBeTruthy();
    // No challenge, or not S256: refused.
    expect((await post('/console/oidc/start', {})).status).toBe(401);
    expect(
      (await post('/console/oidc/start', { codeChallenge: pkce().challenge, codeChallengeMethod: 'plain' })).status,
    ).toBe(401);
  });

  it('token: the code exchanged with the verifier (and the client secret); the bearer works on the API with the mapped role and expires when the provider says', async () => {
    const { verifier, state, cb } = await authorize();
    const res = await post('/console/oidc/token', { code: cb.searchParams.get('code'), state, codeVerifier: verifier });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const r = (await res.json()) as { token: string; tokenType: string; expiresAt: string; principal: unknown };
    expect(r.tokenType).toBe('id_token');
    expect(r.principal).toEqual({ id: 'oidc:u-viewer', kind: 'oidc', name: 'val.viewer', roles: ['viewer'] });
    expect(Date.parse(r.expiresAt) - Date.now()).toBeGreaterThan(200_000);
    expect(Date.parse(r.expiresAt) - Date.now()).toBeLessThanOrEqual(300_000);
    const h = { authorization: `Bearer ${r.token}` };
    expect(await (await fetch(`${base}/api/whoami`, { headers: h })).json()).toEqual(r.principal);
    expect((await fetch(`${base}/api/audit`, { headers: h })).status).toBe(403);
    const ok = await engine.store.auditEntries({ action: 'console.signin' });
    expect(ok.find((e) => e.result === 'ok')).toMatchObject({
      principal: 'oidc:u-viewer (val.viewer)',
      role: 'viewer',
      remote: '127.0.0.1',
    });
    // The same state again (a replayed callback): refused, the code is not exchanged twice.
    const before = provider.tokenRequests.length;
    expect(
      (await post('/console/oidc/token', { code: cb.searchParams.get('code'), state, codeVerifier: verifier })).status,
    ).toBe(401);
    expect(provider.tokenRequests.length).toBe(before);
  });

  it('refuses a missing or forged state and a missing or wrong verifier, before asking the provider; each audited, no token anywhere', async () => {
    const before = provider.tokenRequests.length;
    const a = await authorize();
    const code = a.cb.searchParams.get('code');
    const cases: [unknown, string][] = [
      [{ code, codeVerifier: a.verifier }, 'state-missing'],
      [{ code, state: b64url(randomBytes(32)), codeVerifier: a.verifier }, 'state-unknown'],
      [{ code, state: `${a.state}x`, codeVerifier: a.verifier }, 'state-unknown'],
    ];
    for (const [body, reason] of cases) {
      const res = await post('/console/oidc/token', body);
      expect(`${res.status} ${reason}`).toBe(`401 ${reason}`);
    }
    // The right state with a missing, then (a fresh sign-in) a wrong verifier: the state is spent either way.
    expect((await post('/console/oidc/token', { code, state: a.state })).status).toBe(401);
    expect((await post('/console/oidc/token', { code, state: a.state, codeVerifier: a.verifier })).status).toBe(401);
    const b = await authorize();
    expect(
      (
        await post('/console/oidc/token', {
          code: b.cb.searchParams.get('code'),
          state: b.state,
          codeVerifier: pkce().verifier,
        })
      ).status,
    ).toBe(401);
    expect(provider.tokenRequests.length).toBe(before);
    // A right state and verifier with a wrong code: the provider refuses it.
    const c = await authorize();
    const res = await post('/console/oidc/token', { code: 'not-the-code', state: c.state, codeVerifier: c.verifier });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: string }).error).toMatch(/invalid_grant/);
    const denied = (await engine.store.auditEntries({ action: 'console.signin' }))
      .filter((e) => e.result === 'denied')
      .map((e) => e.detail);
    expect(denied).toEqual(
      expect.arrayContaining([
        'state-missing',
        'state-unknown',
        'verifier-missing',
        'verifier-mismatch',
        'provider:invalid_grant',
      ]),
    );
    const all = JSON.stringify(await engine.store.auditEntries()) + logs.lines.join('\n');
    expect(all).not.toMatch(/eyJ[A-Za-z0-9_-]+\.eyJ/); // no JWT
    expect(all).not.toContain('s3cret-client');
    expect(all).not.toContain(code);
  });

  it('an ID token with another nonce than the sign-in (replayed from another sign-in) is refused', async () => {
    provider.rewriteNonce = (n) => `${n.slice(0, -2)}AA`;
    const a = await authorize();
    const res = await post('/console/oidc/token', {
      code: a.cb.searchParams.get('code'),
      state: a.state,
      codeVerifier: a.verifier,
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: string }).error).toMatch(/nonce/);
    expect((await engine.store.auditEntries({ action: 'console.signin' })).map((e) => e.detail)).toContain(
      'id-token:nonce',
    );
  });

  it('a provider that cannot be reached: 503 saying so, the caller not counted', async () => {
    const down = new OidcProvider({ clientId: 'ferry-console' });
    await down.start();
    const issuer = down.issuer;
    await down.stop();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-oidc-down-'));
    const e = await Engine.create({
      logger: winston.createLogger({ silent: true }),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: {
            oidc: {
              issuer,
              audience: 'ferry-console',
              jwksUrl: `${issuer}/jwks`,
              console: { clientId: 'ferry-console' },
            },
            failedAuth: { maxFailures: 2 },
          },
        },
      },
    });
    await e.start();
    try {
      for (let i = 0; i < 3; i++) {
        const res = await post('/console/oidc/start', { codeChallenge: pkce().challenge }, e.adminUrl!);
        expect(res.status).toBe(503);
        expect(((await res.json()) as { error: string }).error).toMatch(/identity provider cannot be reached/);
      }
    } finally {
      await e.stop();
    }
  });

  it('one address cannot push out the unfinished sign-ins of others: its own oldest go first', async () => {
    const first = await authorize();
    // 25 more from the same address (127.0.0.1): the first is pushed out by its own address's newer ones.
    for (let i = 0; i < 25; i++)
      expect((await post('/console/oidc/start', { codeChallenge: pkce().challenge })).status).toBe(200);
    expect(
      (
        await post('/console/oidc/token', {
          code: first.cb.searchParams.get('code'),
          state: first.state,
          codeVerifier: first.verifier,
        })
      ).status,
    ).toBe(401);
    const last = await authorize();
    expect(
      (
        await post('/console/oidc/token', {
          code: last.cb.searchParams.get('code'),
          state: last.state,
          codeVerifier: last.verifier,
        })
      ).status,
    ).toBe(200);
  });

  it('an admin signed in this way reads the config with the client secret masked', async () => {
    provider.user = { sub: 'u-admin', claims: { preferred_username: 'ada.admin', groups: ['ferry-admins'] } };
    try {
      const a = await authorize();
      const r = (await (
        await post('/console/oidc/token', {
          code: a.cb.searchParams.get('code'),
          state: a.state,
          codeVerifier: a.verifier,
        })
      ).json()) as { token: string };
      const res = await fetch(`${base}/api/config`, { headers: { authorization: `Bearer ${r.token}` } });
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain('"clientId":"ferry-console"');
      expect(text).not.toContain('s3cret-client');
    } finally {
      provider.user = { sub: 'u-viewer', claims: { preferred_username: 'val.viewer', groups: ['ferry-viewers'] } };
    }
  });

  it('a user without a Ferry role is signed in by the provider but refused here (403)', async () => {
    provider.user = { sub: 'u-nurse', claims: { preferred_username: 'nora.nurse', groups: ['nurses'] } };
    try {
      const a = await authorize();
      const res = await post('/console/oidc/token', {
        code: a.cb.searchParams.get('code'),
        state: a.state,
        codeVerifier: a.verifier,
      });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: string }).error).toMatch(/no Ferry role/);
    } finally {
      provider.user = { sub: 'u-viewer', claims: { preferred_username: 'val.viewer', groups: ['ferry-viewers'] } };
    }
  });

  it('refusals count against the address: after maxFailures, 429 with Retry-After, also for a right state', async () => {
    const e = await startEngine(3);
    try {
      for (let i = 0; i < 3; i++)
        expect(
          (
            await post(
              '/console/oidc/token',
              { state: b64url(randomBytes(32)), codeVerifier: pkce().verifier, code: 'x' },
              e.adminUrl!,
            )
          ).status,
        ).toBe(401);
      const res = await post('/console/oidc/token', { state: 'x'.repeat(43), code: 'x' }, e.adminUrl!);
      expect(res.status).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await post('/console/oidc/start', { codeChallenge: pkce().challenge }, e.adminUrl!)).status).toBe(429);
    } finally {
      await e.stop();
    }
  });

  it('the access token as the bearer when configured (bearer: access_token)', async () => {
    const e = await startEngine(0, { bearer: 'access_token' });
    try {
      const a = await authorize(e.adminUrl!);
      const r = (await (
        await post(
          '/console/oidc/token',
          { code: a.cb.searchParams.get('code'), state: a.state, codeVerifier: a.verifier },
          e.adminUrl!,
        )
      ).json()) as { token: string; tokenType: string };
      expect(r.tokenType).toBe('access_token');
      expect(JSON.parse(Buffer.from(r.token.split('.')[1], 'base64url').toString()).nonce).toBeUndefined();
      expect(
        (await fetch(`${e.adminUrl}/api/whoami`, { headers: { authorization: `Bearer ${r.token}` } })).status,
      ).toBe(200);
    } finally {
      await e.stop();
    }
  });

  it('without admin.auth.oidc.console: no button, the endpoints answer 404', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-console-oidc-off-'));
    const e = await Engine.create({
      logger: winston.createLogger({ silent: true }),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { transformWorkers: 0 },
        admin: {
          enabled: true,
          port: 0,
          auth: { oidc: { issuer: provider.issuer, audience: 'ferry-console', jwksUrl: provider.jwksUrl } },
        },
      },
    });
    await e.start();
    try {
      expect(await (await fetch(`${e.adminUrl}/console/oidc`)).json()).toEqual({ enabled: false });
      expect((await post('/console/oidc/start', { codeChallenge: pkce().challenge }, e.adminUrl!)).status).toBe(404);
      expect((await post('/console/oidc/token', {}, e.adminUrl!)).status).toBe(404);
    } finally {
      await e.stop();
    }
  });

  it('bad console config is refused with every problem by path', async () => {
    await expect(
      configure({
        config: {
          admin: {
            auth: {
              oidc: {
                issuer: 'http://idp.example',
                audience: 'other-app',
                jwksUrl: 'https://idp.example/jwks',
                console: {
                  clientId: 'ferry-console',
                  bearer: 'id_token',
                  redirectUri: 'https://ferry.example/elsewhere',
                  scopes: ['openid', 'bad scope'],
                },
              },
            },
          },
        },
      }),
    ).rejects.toThrow(
      /admin\.auth\.oidc\.console\.scopes[\s\S]*admin\.auth\.oidc\.issuer: must be https[\s\S]*admin\.auth\.oidc\.console\.bearer[\s\S]*admin\.auth\.oidc\.console\.redirectUri/,
    );
    await expect(
      configure({ config: { admin: { auth: { oidc: { console: { clientId: 'ferry-console' } } } } } }),
    ).rejects.toThrow(/admin\.auth\.oidc\.console\.clientId: needs admin\.auth\.oidc\.issuer/);
  });
});
