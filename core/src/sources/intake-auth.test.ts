import { hashToken, newTokenSecret } from '../admin/tokens';
import { IntakeAuth, intakeTokensFormat } from './intake-auth';

describe('IntakeAuth', () => {
  let lab: { id: string; secret: string };
  let labHash: string;
  beforeAll(async () => {
    lab = newTokenSecret();
    labHash = await hashToken(lab.secret);
  });

  it('hashed API tokens: the secret in any bearer-scheme case is accepted; wrong, unknown, expired or malformed ones are 401', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const other = newTokenSecret();
    const auth = new IntakeAuth({
      token: '',
      tokens: [
        { id: lab.id, name: 'lab-system', hash: labHash },
        { id: other.id, name: 'old', hash: await hashToken(other.secret), expires: '2025-12-31T00:00:00Z' },
      ],
      maxFailures: 0,
      windowMs: 60_000,
      now: () => now,
    });
    expect(auth.enabled).toBe(true);
    expect(await auth.check(`Bearer ${lab.secret}`, '10.0.0.1')).toEqual({ ok: true, principal: 'lab-system' });
    expect(await auth.check(`bearer ${lab.secret}`, '10.0.0.1')).toEqual({ ok: true, principal: 'lab-system' });
    expect(await auth.check(`BEARER   ${lab.secret} `, '10.0.0.1')).toEqual({ ok: true, principal: 'lab-system' });
    const wrong = lab.secret.slice(0, -1) + (lab.secret.endsWith('A') ? 'B' : 'A');
    expect(await auth.check(`Bearer ${wrong}`, '10.0.0.1')).toMatchObject({ ok: false, status: 401 });
    expect(await auth.check(`Bearer ${other.secret}`, '10.0.0.1')).toMatchObject({ ok: false, status: 401 }); // expired
    expect(await auth.check(`Bearer ${newTokenSecret().secret}`, '10.0.0.1')).toMatchObject({ ok: false, status: 401 }); // unknown id
    expect(await auth.check(`Basic ${lab.secret}`, '10.0.0.1')).toMatchObject({
      ok: false,
      status: 401,
      reason: 'missing bearer token',
    });
    expect(await auth.check(undefined, '10.0.0.1')).toMatchObject({ ok: false, status: 401 });
    expect(auth.counts.authFailures).toBe(5);
    now += 1000;
    expect(await auth.check(`Bearer ${lab.secret}`, '10.0.0.1')).toMatchObject({ ok: true });
  });

  it('a shared config token still works (constant-time compare, scheme in any case)', async () => {
    const auth = new IntakeAuth({ token: 's3cret-value', tokens: [], maxFailures: 0, windowMs: 60_000 });
    expect(await auth.check('bearer s3cret-value', 'a')).toEqual({ ok: true, principal: 'token' });
    expect(await auth.check('Bearer s3cret-valuE', 'a')).toMatchObject({ ok: false });
    expect(new IntakeAuth({ token: '', tokens: [], maxFailures: 0, windowMs: 1 }).enabled).toBe(false);
  });

  it('after maxFailures from one address: 429 for the window without checking secrets; other addresses unaffected', async () => {
    let now = 0;
    const auth = new IntakeAuth({
      token: '',
      tokens: [{ id: lab.id, name: 'lab', hash: labHash }],
      maxFailures: 3,
      windowMs: 10_000,
      now: () => now,
    });
    const r = [];
    for (let i = 0; i < 3; i++) r.push(await auth.check('Bearer nope', '10.0.0.9'));
    expect(r.map((x) => (x.ok ? 'ok' : x.status))).toEqual([401, 401, 401]);
    expect(r[2]).toMatchObject({ blockedNow: true });
    expect(await auth.check(`Bearer ${lab.secret}`, '10.0.0.9')).toMatchObject({
      ok: false,
      status: 429,
      retryAfterSec: 10,
    });
    expect(await auth.check(`Bearer ${lab.secret}`, '10.0.0.8')).toMatchObject({ ok: true });
    now = 10_001;
    expect(await auth.check(`Bearer ${lab.secret}`, '10.0.0.9')).toMatchObject({ ok: true });
    expect(auth.counts.authRateLimited).toBe(1);
  });

  it('config entries: the admin token entry shape, hashes only', () => {
    expect(() =>
      intakeTokensFormat([
        { id: lab.id, name: 'lab', roles: ['operator'], hash: labHash, expires: '2027-01-01T00:00:00Z' },
      ]),
    ).not.toThrow();
    expect(() => intakeTokensFormat([{ id: lab.id, name: 'lab', hash: lab.secret }])).toThrow(/scrypt/);
    expect(() => intakeTokensFormat([{ id: 'X', name: 'lab', hash: labHash }])).toThrow(/id must be/);
    expect(() => intakeTokensFormat([{ id: lab.id, name: 'lab', hash: labHash, secret: 'x' }])).toThrow(
      /unknown key "secret"/,
    );
    expect(() =>
      intakeTokensFormat([
        { id: lab.id, name: 'a', hash: labHash },
        { id: lab.id, name: 'b', hash: labHash },
      ]),
    ).toThrow(/twice/);
    expect(() => intakeTokensFormat([{ id: lab.id, name: 'a', hash: labHash, expires: 'soon' }])).toThrow(/ISO 8601/);
  });
});
