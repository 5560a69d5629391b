/** `ferry epic jwks` through the built CLI, as an operator runs it (npm test builds first). */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requires } from '../support/requires';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'core/dist/cli/main.js');
const built = existsSync(cli) && existsSync(path.join(root, 'plugins/epic/dist/index.js'));
const d = requires({ ok: built, reason: 'the CLI or the epic plugin is not built (run npm run build)' });

d('ferry epic jwks (built CLI)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-epic-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints the public JWKS of the keys configured for epic sources', () => {
    const keyFile = path.join(dir, 'k.pem');
    writeFileSync(
      keyFile,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
      { mode: 0o600 },
    );
    const cfg = path.join(dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      `store: { kind: sqlite, path: ${dir}/x.db }\nplugins: ['@ferry/plugin-epic']\nsources:\n  e:\n    type: epic-bulk-export\n    baseUrl: https://fhir.example.org/api/FHIR/R4\n    clientId: c\n    auth: { privateKeyFile: ${keyFile}, kid: ops-key-1 }\n    bulk: { groupId: g }\n`,
    );
    const r = spawnSync(process.execPath, [cli, 'epic', 'jwks', '-c', cfg], {
      cwd: root,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const jwks = JSON.parse(r.stdout);
    expect(jwks.keys).toEqual([
      expect.objectContaining({
        kty: 'RSA',
        kid: 'ops-key-1',
        alg: 'RS384',
        use: 'sig',
        n: expect.any(String),
        e: 'AQAB',
      }),
    ]);
    expect(r.stdout).not.toMatch(/"d"|"p"|"q"/);
  });
});
