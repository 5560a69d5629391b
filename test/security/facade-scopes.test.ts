/**
 * The FHIR facade's scope matrix over real HTTP on port 0, against the athena simulator: every
 * facade route (and Patient `$link`/`$unlink`) x (no token, a token without facade scopes, read
 * scope, read+write scope, a scope for another connection, an admin token without scopes). Below the scope a route needs: 401
 * without a token, 403 with one; with it: the route's answer. The table must name every route
 * the facade serves (FACADE_ROUTES), and every refusal is in the audit trail.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Engine, makeToken, silentLogger } from '@ferry/core';
import { FACADE_ROUTES } from '../../core/src/facade/facade.server';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';
import { makePki } from '../../plugins/hl7v2-mllp/src/mllp/__fixtures__/certs';

type Who = 'anonymous' | 'noscope' | 'admin' | 'other' | 'read' | 'write';
const rank: Record<Who, number> = { anonymous: 0, noscope: 1, admin: 1, other: 1, read: 2, write: 3 };
interface Case {
  method: 'GET' | 'POST' | 'PUT';
  path: string;
  route: string;
  need: 'public' | 'read' | 'write';
  body?: unknown;
  ok: number;
}

describe('FHIR facade scope matrix (every route x principal)', () => {
  let sim: AthenaSimulator;
  let engine: Engine;
  let dir: string;
  const secrets = {} as Record<Exclude<Who, 'anonymous'>, string>;
  let slot = '';
  let slot2 = '';
  let booked = '';
  const day = new Date().toISOString().slice(0, 10);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-scopes-'));
    sim = await AthenaSimulator.start();
    seedPractice(sim);
    sim.upsertPatient(PRACTICE, samplePatient(1));
    const athenaDay = `${day.slice(5, 7)}/${day.slice(8, 10)}/${day.slice(0, 4)}`;
    slot = String(
      sim.upsertAppointment(PRACTICE, {
        date: athenaDay,
        starttime: '10:00',
        duration: 15,
        departmentid: '1',
        appointmentstatus: 'o',
      }).appointmentid,
    );
    slot2 = String(
      sim.upsertAppointment(PRACTICE, {
        date: athenaDay,
        starttime: '11:00',
        duration: 15,
        departmentid: '1',
        appointmentstatus: 'o',
      }).appointmentid,
    );
    booked = String(
      sim.upsertAppointment(PRACTICE, {
        date: athenaDay,
        starttime: '12:00',
        duration: 15,
        departmentid: '1',
        appointmentstatus: 'f',
        patientid: '1000',
      }).appointmentid,
    );
    const entries = [];
    const scopes: Record<Exclude<Who, 'anonymous'>, { roles: ('viewer' | 'admin')[]; scopes: string[] }> = {
      noscope: { roles: ['viewer'], scopes: [] },
      admin: { roles: ['admin'], scopes: [] },
      other: { roles: ['viewer'], scopes: ['connection:elsewhere:read', 'connection:elsewhere:write'] },
      read: { roles: ['viewer'], scopes: ['connection:clinic:read'] },
      write: {
        roles: ['viewer'],
        scopes: ['connection:*:read', 'connection:clinic:write', 'connection:clinic2:write'],
      },
    };
    for (const [who, s] of Object.entries(scopes)) {
      const t = await makeToken({ name: who, roles: s.roles, scopes: s.scopes }, 'test');
      secrets[who as keyof typeof secrets] = t.secret;
      entries.push({
        id: t.record.id,
        name: who,
        roles: s.roles,
        hash: t.record.hash,
        ...(s.scopes.length ? { scopes: s.scopes } : {}),
      });
    }
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest']
connections:
  clinic: { kind: athena, baseUrl: ${sim.url}, clientId: ferry-client, clientSecret: ferry-secret, practiceId: ${PRACTICE} }
  clinic2: { kind: athena, baseUrl: ${sim.url}, clientId: ferry-client, clientSecret: ferry-secret, practiceId: ${PRACTICE} }
admin:
  enabled: false
  auth:
    tokens: ${JSON.stringify(entries)}
    failedAuth: { maxFailures: 50 }   # one anonymous 401 per route: more routes than the default 10
api: { enabled: true, port: 0, rateLimit: { qps: 0 } }
processing: { transformWorkers: 0 }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await sim?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const patient = `athena-${PRACTICE}-patient-1000`;
  const cases = (): Case[] => [
    { method: 'GET', path: '/health', route: '/health', need: 'public', ok: 200 },
    { method: 'GET', path: '/fhir/clinic/metadata', route: '/fhir/:conn/metadata', need: 'read', ok: 200 },
    { method: 'GET', path: `/fhir/clinic/Patient?family=Patient1`, route: '/fhir/:conn/:type', need: 'read', ok: 200 },
    { method: 'GET', path: `/fhir/clinic/Patient/${patient}`, route: '/fhir/:conn/:type/:id', need: 'read', ok: 200 },
    {
      method: 'GET',
      path: `/fhir/clinic/Patient/${patient}/$identities`,
      route: '/fhir/:conn/:type/:id/:op',
      need: 'read',
      ok: 200,
    },
    {
      method: 'PUT',
      path: `/fhir/clinic/Patient/${patient}`,
      route: '/fhir/:conn/:type/:id',
      need: 'write',
      ok: 200,
      body: { resourceType: 'Patient', name: [{ family: 'Patient1', given: ['Test1'] }], birthDate: '1985-01-15' },
    },
    {
      method: 'POST',
      path: '/fhir/clinic/Patient',
      route: '/fhir/:conn/:type',
      need: 'write',
      ok: 201,
      body: { resourceType: 'Patient', name: [{ family: 'Scoped', given: ['Sam'] }], birthDate: '1970-02-03' },
    },
    {
      method: 'POST',
      path: `/fhir/clinic/Appointment/athena-${PRACTICE}-appointment-${slot}/$book`,
      route: '/fhir/:conn/:type/:id/:op',
      need: 'write',
      ok: 200,
      body: {
        resourceType: 'Parameters',
        parameter: [{ name: 'patient', valueReference: { reference: `Patient/${patient}` } }],
      },
    },
    {
      method: 'POST',
      path: `/fhir/clinic/Appointment/athena-${PRACTICE}-appointment-${booked}/$checkin`,
      route: '/fhir/:conn/:type/:id/:op',
      need: 'write',
      ok: 200,
    },
    // Write on both connections (the other's is checked by the operation: test/e2e/facade-links.test.ts).
    ...(['$link', '$unlink'] as const).map((op): Case => ({
      method: 'POST',
      path: `/fhir/clinic/Patient/${patient}/${op}`,
      route: '/fhir/:conn/:type/:id/:op',
      need: 'write',
      ok: 200,
      body: {
        resourceType: 'Parameters',
        parameter: [
          { name: 'connection', valueString: 'clinic2' },
          { name: 'patient', valueReference: { reference: `Patient/${patient}` } },
        ],
      },
    })),
    {
      method: 'GET',
      path: `/fhir/clinic/DocumentReference?patient=Patient/${patient}`,
      route: '/fhir/:conn/:type',
      need: 'read',
      ok: 200,
    },
    {
      method: 'POST',
      path: '/fhir/clinic/DocumentReference',
      route: '/fhir/:conn/:type',
      need: 'write',
      ok: 201,
      body: {
        resourceType: 'DocumentReference',
        status: 'current',
        type: { coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: 'LETTER' }] },
        subject: { reference: `Patient/${patient}` },
        content: [{ attachment: { contentType: 'text/plain', data: 'aGk=' } }],
      },
    },
  ];

  it('names every route the facade serves', () => {
    const covered = new Set(cases().map((c) => `${c.method} ${c.route}`));
    expect(FACADE_ROUTES.map((r) => `${r.method} ${r.url}`).filter((r) => !covered.has(r))).toEqual([]);
    for (const c of cases())
      expect(FACADE_ROUTES.find((r) => r.method === c.method && r.url === c.route)?.access).toBe(c.need);
  });

  it('answers 401 / 403 below the scope a route needs and the route from it up', async () => {
    const results: string[] = [];
    const expected: string[] = [];
    const order: Who[] = ['anonymous', 'noscope', 'admin', 'other', 'read', 'write'];
    for (const c of cases())
      for (const who of order) {
        const need = c.need === 'public' ? 0 : c.need === 'read' ? 2 : 3;
        // The first writer books the slot; later ones would meet a taken slot: give each its own.
        const url = who === 'write' || c.need !== 'write' ? c.path : c.path.replace(slot, slot2);
        const res = await fetch(`${engine.apiUrl}${url}`, {
          method: c.method,
          headers: {
            ...(who !== 'anonymous' ? { authorization: `Bearer ${secrets[who]}` } : {}),
            ...(c.body ? { 'content-type': 'application/fhir+json' } : {}),
          },
          body: c.body ? JSON.stringify(c.body) : undefined,
        });
        await res.arrayBuffer();
        results.push(`${c.method} ${c.path} as ${who}: ${res.status}`);
        expected.push(`${c.method} ${c.path} as ${who}: ${rank[who] >= need ? c.ok : who === 'anonymous' ? 401 : 403}`);
      }
    expect(results).toEqual(expected);
    // No such route: 401 without a credential, 404 with any valid one (scoped or not).
    expect((await fetch(`${engine.apiUrl}/nope`)).status).toBe(401);
    expect(
      (await fetch(`${engine.apiUrl}/nope`, { headers: { authorization: `Bearer ${secrets.noscope}` } })).status,
    ).toBe(404);
    const denied = await engine.store.auditEntries({ action: 'access.denied' });
    expect(denied.length).toBe(expected.filter((e) => e.endsWith(': 403')).length);
    expect(
      denied.every(
        (d) =>
          d.target?.startsWith('GET /fhir/clinic') ||
          d.target?.startsWith('POST /fhir/clinic') ||
          d.target?.startsWith('PUT /fhir/clinic'),
      ),
    ).toBe(true);
  });
});

describe('FHIR facade browser checks: Host (DNS rebinding), Origin, CORS', () => {
  let engine: Engine;
  let dir: string;
  let token = '';
  let port = 0;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-browser-'));
    const t = await makeToken({ name: 'app', roles: ['viewer'], scopes: ['connection:clinic:read'] }, 'test');
    token = t.secret;
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest']
connections:
  clinic: { kind: athena, baseUrl: http://127.0.0.1:9, clientId: c, clientSecret: s, practiceId: ${PRACTICE} }
admin: { enabled: false, auth: { tokens: [${JSON.stringify({ id: t.record.id, name: 'app', roles: ['viewer'], hash: t.record.hash, scopes: ['connection:clinic:read'] })}] } }
api: { enabled: true, port: 0, publicUrl: 'https://fhir.example.org', allowedHosts: [fhir-internal.example.org], cors: { origins: ['https://app.example.org'] } }
processing: { transformWorkers: 0 }
`,
    );
    engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
    port = Number(new URL(engine.apiUrl!).port);
  });
  afterAll(async () => {
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request with exactly these headers (fetch cannot set Host). */
  const raw = (method: string, headers: Record<string, string>, p = '/fhir/clinic/metadata') =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: any }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: p, method, headers, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : undefined }),
        );
      });
      req.on('error', reject);
      req.end();
    });
  const auth = () => ({ authorization: `Bearer ${token}` });

  it('serves its own names (bind address, loopback, publicUrl, api.allowedHosts) and refuses any other Host with 421', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'fhir.example.org', 'FHIR-internal.example.org:443'])
      expect(`${host}: ${(await raw('GET', { ...auth(), host })).status}`).toBe(`${host}: 200`);
    const evil = await raw('GET', { ...auth(), host: 'rebind.attacker.example' });
    expect(evil.status).toBe(421);
    expect(evil.body.issue[0]).toMatchObject({
      code: 'security',
      diagnostics: expect.stringContaining('api.allowedHosts'),
    });
    // Refused before the credential is looked at.
    expect((await raw('GET', { host: 'rebind.attacker.example' })).status).toBe(421);
    expect(
      (await engine.store.auditEntries({ action: 'access.denied' })).some(
        (a) => a.detail === 'host not allowed (api.allowedHosts)',
      ),
    ).toBe(true);
  });

  it('refuses a cross-origin browser request (403) unless api.cors.origins lists the origin, which gets CORS headers', async () => {
    const evil = await raw('GET', { ...auth(), host: `127.0.0.1:${port}`, origin: 'https://evil.example' });
    expect(evil.status).toBe(403);
    expect(evil.body.issue[0].code).toBe('forbidden');
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
    expect(
      (await engine.store.auditEntries({ action: 'access.denied' })).some(
        (a) => a.detail === 'origin not allowed (api.cors.origins)',
      ),
    ).toBe(true);
    const app = await raw('GET', { ...auth(), host: 'fhir.example.org', origin: 'https://app.example.org' });
    expect(app.status).toBe(200);
    expect(app.headers['access-control-allow-origin']).toBe('https://app.example.org');
    expect(app.headers.vary).toContain('Origin');
    expect(app.headers['access-control-expose-headers']).toContain('location');
    // The facade's own origin (its publicUrl, or the address called) is not cross-site.
    expect((await raw('GET', { ...auth(), host: 'fhir.example.org', origin: 'https://fhir.example.org' })).status).toBe(
      200,
    );
    expect(
      (await raw('GET', { ...auth(), host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` })).status,
    ).toBe(200);
    // Still a credential and a scope: CORS opens nothing else.
    expect((await raw('GET', { host: 'fhir.example.org', origin: 'https://app.example.org' })).status).toBe(401);
  });

  it('answers a CORS preflight for a listed origin without a credential, and refuses one from another origin', async () => {
    const pre = {
      host: 'fhir.example.org',
      'access-control-request-method': 'PUT',
      'access-control-request-headers': 'authorization, content-type, idempotency-key',
    };
    const ok = await raw('OPTIONS', { ...pre, origin: 'https://app.example.org' }, '/fhir/clinic/Patient/x');
    expect(ok.status).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe('https://app.example.org');
    expect(ok.headers['access-control-allow-methods']).toBe('GET, POST, PUT');
    expect(ok.headers['access-control-allow-headers']).toBe('authorization, content-type, idempotency-key');
    expect((await raw('OPTIONS', { ...pre, origin: 'https://evil.example' }, '/fhir/clinic/Patient/x')).status).toBe(
      403,
    );
  });
});

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasOpenssl)
  console.warn('skipped "FHIR facade over mutual TLS": openssl CLI absent, cannot make test certificates');

(hasOpenssl ? describe : describe.skip)('FHIR facade over mutual TLS', () => {
  it('serves HTTPS with HSTS; needs a client certificate and still a scoped token', async () => {
    const pki = makePki();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-facade-tls-'));
    const t = await makeToken({ name: 'app', roles: ['viewer'], scopes: ['connection:clinic:read'] }, 'test');
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest']
connections:
  clinic: { kind: athena, baseUrl: http://127.0.0.1:9, clientId: c, clientSecret: s, practiceId: ${PRACTICE} }
admin: { enabled: false, auth: { tokens: [${JSON.stringify({ id: t.record.id, name: 'app', roles: ['viewer'], hash: t.record.hash, scopes: ['connection:clinic:read'] })}] } }
api: { enabled: true, port: 0, tls: { cert: ${pki.serverCert}, key_FILE: ${pki.serverKey}, ca: ${pki.caCert}, requestCert: true } }
processing: { transformWorkers: 0 }
`,
    );
    const engine = await Engine.create({ configFile: path.join(dir, 'ferry.yaml'), logger: silentLogger() });
    await engine.start();
    try {
      expect(engine.apiUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const client = {
        ca: readFileSync(pki.caCert),
        cert: readFileSync(pki.clientCert),
        key: readFileSync(pki.clientKey),
      };
      const ok = await httpsGet(`${engine.apiUrl}/fhir/clinic/metadata`, {
        ...client,
        headers: { authorization: `Bearer ${t.secret}` },
      });
      expect(ok.status).toBe(200);
      expect(ok.headers['strict-transport-security']).toMatch(/max-age=/);
      expect((await httpsGet(`${engine.apiUrl}/fhir/clinic/metadata`, client)).status).toBe(401);
      await expect(
        httpsGet(`${engine.apiUrl}/fhir/clinic/metadata`, {
          ca: client.ca,
          headers: { authorization: `Bearer ${t.secret}` },
        }),
      ).rejects.toThrow();
    } finally {
      await engine.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function httpsGet(
  url: string,
  opts: https.RequestOptions,
): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { agent: false, ...opts }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}
