import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * API token secrets and their salted hashes. A secret is `ferry_<id>_<43 random base64url chars>`
 * (256 bits); the id part is public (it names the token in lists and the audit trail) and lets a
 * check hash once instead of against every token. Only `scrypt$N$r$p$<salt>$<hash>` is ever
 * kept -- in the store or in the config.
 */

export const TOKEN_PREFIX = 'ferry_';
const ID_RE = /^[a-z0-9]{4,40}$/;
const SECRET_RE = /^ferry_([a-z0-9]{4,40})_([A-Za-z0-9_-]{43})$/;
const HASH_RE = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/;

/** scrypt cost: N=2^15, r=8, p=1 (~30 ms and 32 MiB once per token per cache period). */
const N = 1 << 15;
const R = 8;
const P = 1;
const KEYLEN = 32;

function scrypt(secret: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(secret, salt, keylen, opts, (e, key) => (e ? reject(e) : resolve(key))),
  );
}

export function isTokenId(id: unknown): id is string {
  return typeof id === 'string' && ID_RE.test(id);
}

export function newTokenId(): string {
  // 12 chars of [a-z0-9] (~62 bits): unique enough for ids that are not secrets.
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return [...randomBytes(12)].map((b) => alphabet[b % alphabet.length]).join('');
}

/** A new token: its id and the secret to hand out once. */
export function newTokenSecret(id = newTokenId()): { id: string; secret: string } {
  return { id, secret: `${TOKEN_PREFIX}${id}_${randomBytes(32).toString('base64url')}` };
}

/** The id in a well-formed secret, else undefined (nothing to hash). */
export function tokenIdOf(secret: string): string | undefined {
  return SECRET_RE.exec(secret)?.[1];
}

export function isTokenHash(h: unknown): h is string {
  return typeof h === 'string' && HASH_RE.test(h);
}

/** The salted hash to keep for a secret. */
export async function hashToken(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, KEYLEN, { N, r: R, p: P, maxmem: 128 * N * R * 2 });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

/** True when `secret` hashes to `hash` (constant-time comparison). */
export async function verifyToken(secret: string, hash: string): Promise<boolean> {
  const m = HASH_RE.exec(hash);
  if (!m) return false;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // Bounds keep a hand-written hash from costing the server more than a few hundred MB or ms.
  if (n < 1024 || n > 1 << 20 || (n & (n - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return false;
  const want = Buffer.from(m[5], 'base64url');
  const got = await scrypt(secret, Buffer.from(m[4], 'base64url'), want.length, {
    N: n,
    r,
    p,
    maxmem: 256 * n * r + (1 << 20),
  });
  return got.length === want.length && timingSafeEqual(got, want);
}

/** A one-way digest of a secret for the in-memory cache of checked secrets (never stored). */
export function secretDigest(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}
