import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../logging/logger';
import { SqliteMessageStore } from '../store/sqlite.store';
import { adt, storeContext } from './__fixtures__/context';
import { HttpSource, type HttpSourceInput } from './http.source';

/** A self-signed certificate for 127.0.0.1, made with the openssl CLI for this test run. */
function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasOpenssl) console.warn('skipped: openssl CLI absent, cannot make test certificates');

(hasOpenssl ? describe : describe.skip)('HttpSource over TLS', () => {
  let tmp: string;
  let store: SqliteMessageStore;
  let server: { cert: string; key: string };
  let client: { cert: string; key: string };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-http-source-tls-'));
    server = selfSigned(tmp, 'server');
    client = selfSigned(tmp, 'client');
    store = new SqliteMessageStore({ path: path.join(tmp, 'ferry.db'), logger: silentLogger() });
    await store.open();
  });
  afterAll(async () => {
    await store.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const cfg = (tls: Partial<NonNullable<HttpSourceInput['tls']>>): HttpSourceInput => ({
    host: '127.0.0.1',
    port: 0,
    path: '/hl7',
    token: '',
    bodyLimit: 1 << 20,
    batch: true,
    tls: { cert: '', key: '', passphrase: '', ca: '', requestCert: false, ...tls },
  });
  const post = (url: string, opts: https.RequestOptions) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request(
        url,
        { method: 'POST', headers: { 'content-type': 'application/hl7-v2' }, agent: false, ...opts },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        },
      );
      req.on('error', reject);
      req.end(adt(`TLS-${Math.random()}`));
    });

  it('serves HTTPS with a cert and key given as paths (or PEM)', async () => {
    const src = new HttpSource(
      storeContext(store, cfg({ cert: server.cert, key: fs.readFileSync(server.key, 'utf8') })),
    );
    await src.start();
    try {
      expect(src.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/hl7$/);
      expect(await post(src.url, { ca: fs.readFileSync(server.cert) })).toBe(202);
      await expect(post(src.url, {})).rejects.toThrow(/self.signed|certificate/i);
    } finally {
      await src.stop();
    }
  });

  it('mutual TLS: a client without a certificate signed by ca is refused in the handshake', async () => {
    const src = new HttpSource(
      storeContext(store, cfg({ cert: server.cert, key: server.key, ca: client.cert, requestCert: true })),
    );
    await src.start();
    try {
      const ca = fs.readFileSync(server.cert);
      expect(await post(src.url, { ca, cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) })).toBe(
        202,
      );
      await expect(post(src.url, { ca })).rejects.toThrow();
      await expect(
        post(src.url, { ca, cert: fs.readFileSync(server.cert), key: fs.readFileSync(server.key) }),
      ).rejects.toThrow();
    } finally {
      await src.stop();
    }
  });

  it('mutual TLS with allowedClientNames: a trusted certificate with another CN gets 403; the CN is stored as tlsPeerCN', async () => {
    const other = selfSigned(tmp, 'other-system');
    const bundle = path.join(tmp, 'clients.pem');
    fs.writeFileSync(bundle, fs.readFileSync(client.cert, 'utf8') + fs.readFileSync(other.cert, 'utf8'));
    const src = new HttpSource(
      storeContext(
        store,
        cfg({ cert: server.cert, key: server.key, ca: bundle, requestCert: true, allowedClientNames: ['client'] }),
      ),
    );
    await src.start();
    try {
      const ca = fs.readFileSync(server.cert);
      expect(await post(src.url, { ca, cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) })).toBe(
        202,
      );
      expect(await post(src.url, { ca, cert: fs.readFileSync(other.cert), key: fs.readFileSync(other.key) })).toBe(403);
      const [m] = await store.listMessages({ sourceId: 'src', newestFirst: true, limit: 1 });
      expect(m.headers.tlsPeerCN).toBe('client');
    } finally {
      await src.stop();
    }
    await expect(
      new HttpSource(
        storeContext(store, cfg({ cert: server.cert, key: server.key, allowedClientNames: ['client'] })),
      ).start(),
    ).rejects.toThrow(/needs requestCert/);
  });

  it('refuses half a TLS config and unreadable files with a config error', async () => {
    await expect(new HttpSource(storeContext(store, cfg({ cert: server.cert }))).start()).rejects.toThrow(
      /both cert and key/,
    );
    await expect(
      new HttpSource(storeContext(store, cfg({ cert: server.cert, key: server.key, requestCert: true }))).start(),
    ).rejects.toThrow(/tls\.ca: required/);
    await expect(
      new HttpSource(storeContext(store, cfg({ cert: '/nonexistent.pem', key: server.key }))).start(),
    ).rejects.toThrow(/tls\.cert: cannot read/);
  });
  it('first-request timeout over TLS: a silent TLS connection is closed, a keep-alive one that sends stays; stop does not wait for either', async () => {
    const src = new HttpSource(
      storeContext(store, { ...cfg({ cert: server.cert, key: server.key }), firstRequestTimeoutMs: 300 }),
    );
    await src.start();
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: fs.readFileSync(server.cert) });
    let silent: tls.TLSSocket | undefined;
    try {
      silent = tls.connect({ host: '127.0.0.1', port: src.port, ca: fs.readFileSync(server.cert) });
      silent.on('error', () => undefined);
      await new Promise((r) => silent!.once('secureConnect', r));
      const closed = new Promise<void>((r) => silent!.once('close', () => r()));
      const ports = new Set<number>();
      for (let i = 0; i < 3; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = https.request(
            src.url,
            { method: 'POST', headers: { 'content-type': 'application/hl7-v2' }, agent },
            (res) => {
              ports.add(res.socket.localPort!);
              res.resume();
              res.on('end', () => resolve(res.statusCode!));
            },
          );
          req.on('error', reject);
          req.end(adt(`TLS-KA-${i}-${Math.random()}`));
        });
        expect(status).toBe(202);
        await new Promise((r) => setTimeout(r, 250));
      }
      // one connection for all three, kept past the 300 ms first-request limit
      expect(ports.size).toBe(1);
      await closed;
      expect(src.stats()!.connectionsClosedFirstDataTimeout).toBe(1);
      const t0 = Date.now();
      await src.stop();
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      agent.destroy();
      silent?.destroy();
      await src.stop();
    }
  });
});
