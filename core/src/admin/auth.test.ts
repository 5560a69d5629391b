import { FailureLimiter } from './auth';
import { defaultAllowedHosts, hostName } from './guard';
import { deliveryWithoutIdentifiers, redactConfig, withoutIdentifiers } from './redact';
import { hasRole, ROLES, topRole } from './roles';
import { tokenRequest } from './token-ops';
import { hashToken, isTokenHash, newTokenSecret, tokenIdOf, verifyToken } from './tokens';

describe('API token secrets and hashes', () => {
  it('a secret names its id; only its salted hash verifies it', async () => {
    const { id, secret } = newTokenSecret();
    expect(tokenIdOf(secret)).toBe(id);
    expect(secret).toMatch(/^ferry_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    const hash = await hashToken(secret);
    expect(isTokenHash(hash)).toBe(true);
    expect(hash).not.toContain(secret.slice(18));
    expect(await hashToken(secret)).not.toBe(hash); // salted
    expect(await verifyToken(secret, hash)).toBe(true);
    expect(await verifyToken(`${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`, hash)).toBe(false);
    expect(await verifyToken(secret, 'not a hash')).toBe(false);
    // A hand-written hash with absurd cost parameters is refused, not computed.
    expect(await verifyToken(secret, hash.replace(/^scrypt\$\d+\$/, 'scrypt$1073741824$'))).toBe(false);
    for (const bad of [
      '',
      'ferry_',
      'ferry_abc_short',
      `Ferry_${id}_${secret.slice(-43)}`,
      `ferry_${id.toUpperCase()}_${secret.slice(-43)}`,
    ])
      expect(tokenIdOf(bad)).toBeUndefined();
  });
});

describe('roles', () => {
  it('each role includes the ones before it; no role, nothing', () => {
    expect(ROLES).toEqual(['viewer', 'operator', 'phi-reader', 'admin']);
    expect(hasRole({ roles: ['operator'] }, 'viewer')).toBe(true);
    expect(hasRole({ roles: ['operator'] }, 'phi-reader')).toBe(false);
    expect(hasRole({ roles: ['viewer', 'phi-reader'] }, 'operator')).toBe(true);
    expect(hasRole({ roles: [] }, 'viewer')).toBe(false);
    expect(topRole({ roles: ['viewer', 'admin', 'operator'] })).toBe('admin');
  });

  it('token requests: name, known roles, a future expiry (time or duration)', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(tokenRequest({ name: ' ci ', roles: 'viewer,operator', expires: '90d' }, now)).toEqual({
      name: 'ci',
      roles: ['viewer', 'operator'],
      expiresAt: new Date(now + 90 * 86_400_000),
    });
    expect(tokenRequest({ name: 'x', role: ['admin'], expires: '2026-02-01T00:00:00Z' }, now).expiresAt).toEqual(
      new Date('2026-02-01T00:00:00Z'),
    );
    expect(() => tokenRequest({ name: '', roles: 'viewer' })).toThrow(/name/);
    // FHIR facade scopes: a list or comma-separated; anything else refused by name.
    expect(
      tokenRequest({ name: 'app', roles: 'viewer', scopes: 'connection:athena-a:read, connection:*:write' }, now)
        .scopes,
    ).toEqual(['connection:athena-a:read', 'connection:*:write']);
    expect(tokenRequest({ name: 'app', roles: 'viewer', scope: ['connection:x:read'] }, now).scopes).toEqual([
      'connection:x:read',
    ]);
    expect(() => tokenRequest({ name: 'app', roles: 'viewer', scopes: 'connection:x:delete' })).toThrow(
      /scopes: .*connection:x:delete/,
    );
    expect(tokenRequest({ name: 'app', roles: 'viewer' }, now).scopes).toBeUndefined();
    expect(() => tokenRequest({ name: 'x', roles: 'root' })).toThrow(/roles/);
    expect(() => tokenRequest({ name: 'x', roles: 'viewer', expires: '2000-01-01' }, now)).toThrow(/expires/);
    expect(() => tokenRequest({ name: 'x', roles: 'viewer', expires: 'soon' }, now)).toThrow(/expires/);
  });
});

describe('FailureLimiter', () => {
  it('blocks an address after maxFailures within the window, for the window; others unaffected', () => {
    let t = 0;
    const l = new FailureLimiter(3, 60_000, () => t);
    expect([l.fail('a'), l.fail('a')]).toEqual([false, false]);
    expect(l.blocked('a')).toBeUndefined();
    expect(l.fail('a')).toBe(true);
    expect(l.blocked('a')).toBe(60);
    expect(l.blocked('b')).toBeUndefined();
    t = 59_500;
    expect(l.blocked('a')).toBe(1);
    t = 60_001;
    expect(l.blocked('a')).toBeUndefined();
    // Failures spread wider than the window never block.
    const m = new FailureLimiter(2, 1000, () => t);
    m.fail('c');
    t += 2000;
    expect(m.fail('c')).toBe(false);
    // 0: no limit.
    expect(new FailureLimiter(0, 1000).fail('d')).toBe(false);
  });

  it('keeps a bounded number of addresses', () => {
    const l = new FailureLimiter(5, 60_000, () => 0, 100);
    for (let i = 0; i < 1000; i++) l.fail(`10.0.${i >> 8}.${i & 255}`);
    expect((l as unknown as { byAddress: Map<string, unknown> }).byAddress.size).toBeLessThanOrEqual(100);
  });
});

describe('Host names', () => {
  it('parses Host headers (port, IPv6 brackets); refuses malformed ones', () => {
    expect(hostName('LocalHost:8080')).toBe('localhost');
    expect(hostName('[::1]:8080')).toBe('::1');
    expect(hostName('127.0.0.1')).toBe('127.0.0.1');
    for (const bad of [undefined, '', 'a b', 'x:y', 'evil.example/path', 'user@host'])
      expect(hostName(bad)).toBeUndefined();
  });

  it("allows the bind address and loopback names; a wildcard bind adds this machine's names", () => {
    expect(defaultAllowedHosts('10.1.2.3').sort()).toEqual(['10.1.2.3', '127.0.0.1', '::1', 'localhost']);
    expect(defaultAllowedHosts('0.0.0.0')).toEqual(expect.arrayContaining(['localhost', '127.0.0.1']));
  });
});

describe('redaction', () => {
  it('a viewer sees routing metadata, not identifiers, ordering keys or error texts', () => {
    const m = {
      id: 'M1',
      seq: 1,
      sourceId: 's',
      contentType: 'application/hl7-v2',
      headers: { messageType: 'ADT^A01', controlId: 'C1', orderingKey: 'HOSP|MRN1', patientName: 'DOE^JANE' },
      receivedAt: new Date(0),
      status: 'failed' as const,
      orderingKey: 'HOSP|MRN1',
      body: Buffer.from('PID|||MRN1'),
      error: { code: 'FERRY_E_X', message: 'PID-5 DOE^JANE invalid', retryable: false },
    };
    const v = JSON.stringify(withoutIdentifiers(m));
    expect(v).toContain('ADT^A01');
    expect(v).toContain('FERRY_E_X');
    expect(v).not.toMatch(/MRN1|DOE|orderingKey|body/);
    const d = deliveryWithoutIdentifiers({
      id: 'D',
      messageId: 'M1',
      routeId: 'r',
      sinkId: 'k',
      status: 'dead',
      attempts: 1,
      orderingKey: 'HOSP|MRN1',
      strictOrder: true,
      createdAt: new Date(0),
      lastError: { code: 'E', message: 'MRN1 refused' },
    });
    expect(JSON.stringify(d)).not.toContain('MRN1');
  });

  it('config secrets are redacted, passwords in URLs masked', () => {
    const r = redactConfig({
      store: { url: 'postgres://ferry:s3cret@db:5432/x' },
      sinks: { a: { auth: { token: 'T', clientSecret: 'S' }, retry: { maxAttempts: 3 } } },
      admin: { auth: { tokens: [{ id: 'i', hash: 'scrypt$...' }], tokenCacheMs: 5 } },
    });
    const text = JSON.stringify(r);
    for (const s of ['s3cret', '"T"', '"S"', 'scrypt$']) expect(text).not.toContain(s);
    expect(text).toContain('"maxAttempts":3');
    expect(text).toContain('"tokenCacheMs":5');
  });
});
