/** Test helpers for SMART backend-services plugins: a signing key on disk with its JWKS, and a connection config with test defaults. */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ConnectionConfig } from './connection';
import { loadSigningKey, publicJwks } from './keys';

export function rsaPem(): string {
  return generateKeyPairSync('rsa', { modulusLength: 2048 })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

/** A PEM key on disk plus its public JWKS (what an operator registers with the vendor). */
export async function testKey(kid = 'ferry-test-1') {
  const pem = rsaPem();
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-epic-key-'));
  const file = path.join(dir, 'private.pem');
  writeFileSync(file, pem, { mode: 0o600 });
  const key = await loadSigningKey({ privateKey: pem, kid });
  return { pem, file, dir, kid, key, jwks: publicJwks([key]) as any };
}

export function connConfig(
  over: Partial<ConnectionConfig> & { baseUrl: string; clientId: string },
  auth: Partial<ConnectionConfig['auth']> = {},
): ConnectionConfig {
  return {
    tokenUrl: '',
    idPrefix: '',
    ...over,
    auth: {
      method: 'private_key_jwt',
      privateKey: '',
      privateKeyFile: '',
      privateKeyEnv: '',
      kid: '',
      alg: 'RS384',
      jku: '',
      clientSecret: '',
      scopes: [],
      refreshSkewSec: 60,
      ...auth,
    },
    rateLimit: over.rateLimit ?? { qps: 200, burst: 50 },
    http: over.http ?? { timeoutMs: 5000, maxAttempts: 3, maxRetryAfterMs: 5000 },
  };
}
