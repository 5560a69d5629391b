/**
 * The admin API over TLS, with mutual TLS, configured from a YAML file whose private key comes
 * through `key_FILE`; certificates made with openssl for this run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import { makePki, type TestPki } from '../../plugins/hl7v2-mllp/src/mllp/__fixtures__/certs';
import { roleTokens, type RoleTokens } from '../support';

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasOpenssl) console.warn('skipped: openssl CLI absent, cannot make test certificates');

function get(
  url: string,
  opts: https.RequestOptions,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { agent: false, ...opts }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

(hasOpenssl ? describe : describe.skip)('admin API over (mutual) TLS', () => {
  let pki: TestPki;
  let roles: RoleTokens;
  let engine: Engine;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    pki = makePki();
    roles = await roleTokens();
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-admin-tls-'));
    const file = path.join(dir, 'ferry.yaml');
    writeFileSync(
      file,
      [
        `store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }`,
        'processing: { transformWorkers: 0 }',
        'admin:',
        '  port: 0',
        `  tls: { cert: ${pki.serverCert}, key_FILE: ${pki.serverKey}, ca: ${pki.caCert}, requestCert: true }`,
        '  auth:',
        `    tokens: ${JSON.stringify(roles.tokens)}`,
        '',
      ].join('\n'),
    );
    engine = await Engine.create({ configFile: file, logger: silentLogger() });
    await engine.start();
    base = engine.adminUrl!;
  });
  afterAll(async () => {
    await engine?.stop();
  });

  const client = () => ({
    ca: readFileSync(pki.caCert),
    cert: readFileSync(pki.clientCert),
    key: readFileSync(pki.clientKey),
  });

  it('serves HTTPS (HSTS set); a client certificate signed by the CA and a token are both needed', async () => {
    expect(base).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ok = await get(`${base}/api/stats`, { ...client(), headers: roles.auth('viewer') });
    expect(ok.status).toBe(200);
    expect(ok.headers['strict-transport-security']).toMatch(/max-age=/);
    // mTLS is a layer more, not instead of the token.
    expect((await get(`${base}/api/stats`, client())).status).toBe(401);
    expect((await get(`${base}/health`, client())).status).toBe(200);
  });

  it('refuses in the handshake a client without a certificate, or with one from another CA', async () => {
    await expect(get(`${base}/health`, { ca: readFileSync(pki.caCert) })).rejects.toThrow();
    await expect(
      get(`${base}/health`, {
        ca: readFileSync(pki.caCert),
        cert: readFileSync(pki.rogueCert),
        key: readFileSync(pki.rogueKey),
      }),
    ).rejects.toThrow();
    // And a client that does not trust the server's CA refuses it.
    await expect(
      get(`${base}/health`, { cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) }),
    ).rejects.toThrow(/self.signed|certificate|issuer/i);
  });

  it('plain HTTP on the TLS port gets no answer', async () => {
    const plain = base.replace('https:', 'http:');
    const r = await fetch(`${plain}/health`).then(
      (res) => res.status,
      () => 'refused',
    );
    expect(r === 'refused' || r === 400).toBe(true);
  });

  it('a cert without a key is a startup error naming admin.tls', async () => {
    const e = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'other.db') },
        processing: { transformWorkers: 0 },
        admin: { port: 0, tls: { cert: pki.serverCert }, auth: { tokens: roles.tokens } },
      },
    });
    await expect(e.start()).rejects.toThrow(/admin\.tls/);
  });
});
