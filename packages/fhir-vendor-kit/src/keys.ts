/**
 * Keys for SMART Backend Services client assertions (private_key_jwt), with jose 5:
 * load a private key from a PEM (PKCS#8) or a JWK (file, inline text or environment), derive the
 * public JWKS the operator publishes (`ferry epic jwks`), and sign an assertion
 * (`iss` = `sub` = client id, `aud` = token URL, unique `jti`, `exp` <= 5 min, `kid` in the header).
 */
import { randomUUID, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { calculateJwkThumbprint, exportJWK, SignJWT, type JWK } from 'jose';
import { FerryError } from '@ferry/core';

export type AssertionAlg = 'RS384' | 'ES384';

export interface KeySource {
  /** PEM text or JWK JSON text. */
  privateKey?: string;
  /** Path to a PEM or JWK JSON file. */
  privateKeyFile?: string;
  /** Name of an environment variable holding PEM or JWK JSON text. */
  privateKeyEnv?: string;
  /** Key id placed in the JWT header and the JWKS; default: the key's JWK thumbprint (from the JWK's own kid when it has one). */
  kid?: string;
  /** Default RS384. */
  alg?: AssertionAlg;
}

export interface SigningKey {
  privateKey: KeyObject;
  publicJwk: JWK;
  kid: string;
  alg: AssertionAlg;
}

const keyError = (message: string, cause?: unknown) =>
  new FerryError('CONFIG_SIGNING_KEY', message, { kind: 'config', retryable: false, cause });

/** Load the signing key once (PEM or JWK from inline text, file or env). Throws a config FerryError. */
export async function loadSigningKey(src: KeySource, env: NodeJS.ProcessEnv = process.env): Promise<SigningKey> {
  let text: string | undefined;
  let where = '';
  if (src.privateKey) {
    text = src.privateKey;
    where = 'privateKey';
  } else if (src.privateKeyFile) {
    where = `privateKeyFile ${src.privateKeyFile}`;
    try {
      text = readFileSync(src.privateKeyFile, 'utf8');
    } catch (e) {
      throw keyError(`cannot read ${where}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, e);
    }
  } else if (src.privateKeyEnv) {
    where = `environment variable ${src.privateKeyEnv}`;
    text = env[src.privateKeyEnv];
    if (!text) throw keyError(`${where} is not set`);
  }
  if (!text) throw keyError('no private key configured (privateKey, privateKeyFile or privateKeyEnv)');
  let privateKey: KeyObject;
  let jwkKid: string | undefined;
  try {
    const trimmed = text.trim();
    if (trimmed.startsWith('{')) {
      const jwk = JSON.parse(trimmed) as JWK;
      jwkKid = jwk.kid;
      privateKey = createPrivateKey({ key: jwk as any, format: 'jwk' });
    } else {
      privateKey = createPrivateKey({ key: trimmed.replace(/\\n/g, '\n'), format: 'pem' });
    }
  } catch (e) {
    throw keyError(`${where} is not a readable PEM or JWK private key: ${(e as Error).message}`, e);
  }
  const alg: AssertionAlg = src.alg ?? 'RS384';
  if (alg === 'RS384' && privateKey.asymmetricKeyType !== 'rsa')
    throw keyError(`${where}: RS384 needs an RSA key, got ${privateKey.asymmetricKeyType}`);
  if (
    alg === 'ES384' &&
    (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'secp384r1')
  )
    throw keyError(`${where}: ES384 needs a P-384 EC key`);
  if (privateKey.asymmetricKeyType === 'rsa' && (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
    throw keyError(`${where}: RSA keys must be at least 2048 bits`);
  const pub = await exportJWK(createPublicKey(privateKey));
  const kid = src.kid || jwkKid || (await calculateJwkThumbprint(pub, 'sha256'));
  const publicJwk: JWK = { ...pub, kid, alg, use: 'sig' };
  return { privateKey, publicJwk, kid, alg };
}

/** The JWK Set to publish (JKU) or register with the vendor: public parts only. */
export function publicJwks(keys: SigningKey[]): { keys: JWK[] } {
  return { keys: keys.map((k) => ({ ...k.publicJwk })) };
}

export interface AssertionClaims {
  clientId: string;
  tokenUrl: string;
  /** Lifetime in seconds; capped at 300 (vendors refuse more). Default 240. */
  lifetimeSec?: number;
  /** Optional `jku` header (JWK Set URL registered with the vendor). */
  jku?: string;
  now?: number;
}

/** Sign a client assertion for the token endpoint. */
export async function signClientAssertion(key: SigningKey, c: AssertionClaims): Promise<string> {
  const nowSec = Math.floor((c.now ?? Date.now()) / 1000);
  const lifetime = Math.min(300, Math.max(10, c.lifetimeSec ?? 240));
  return new SignJWT({})
    .setProtectedHeader({ alg: key.alg, typ: 'JWT', kid: key.kid, ...(c.jku ? { jku: c.jku } : {}) })
    .setIssuer(c.clientId)
    .setSubject(c.clientId)
    .setAudience(c.tokenUrl)
    .setJti(randomUUID())
    .setIssuedAt(nowSec)
    .setNotBefore(nowSec)
    .setExpirationTime(nowSec + lifetime)
    .sign(key.privateKey);
}
