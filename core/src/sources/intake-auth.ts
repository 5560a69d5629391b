import { timingSafeEqual } from 'node:crypto';
import { FailureLimiter } from '../admin/failure-limiter';
import { isTokenHash, isTokenId, secretDigest, tokenIdOf, verifyToken } from '../admin/tokens';

/**
 * Who may POST to an HTTP intake source. The source accepts PHI from anyone who can reach its
 * port unless one of these is set:
 *  - `tokens`: Ferry API tokens kept only as salted scrypt hashes -- the same secrets
 *    (`ferry_<id>_<secret>`), hashes and entries as the admin API's (`ferry token create
 *    --config-entry` prints one; its `roles` are ignored here);
 *  - `token`: one shared secret in the config (compared in constant time; kept for existing
 *    configs -- prefer `tokens`, which keep no secret in the file);
 *  - mutual TLS (`tls.requestCert`), optionally narrowed to `tls.allowedClientNames`.
 * `Authorization: Bearer <secret>`, the scheme in any case (RFC 7235). Failed attempts are
 * counted per remote address: after `maxFailures` within `windowMs` the address gets 429 until
 * the window has passed, without its secrets being checked (scrypt costs ~30 ms of CPU a check).
 */

/** An entry of `sources.<id>.tokens` (the shape of an `admin.auth.tokens` entry). */
export interface IntakeTokenEntry {
  id: string;
  name: string;
  hash: string;
  /** ISO 8601; absent = no expiry. */
  expires?: string;
  /** Accepted (an admin entry pasted as is) and ignored: the intake has one permission. */
  roles?: string[];
}

/** A convict `format` for `tokens`. */
export function intakeTokensFormat(v: unknown): void {
  if (!Array.isArray(v))
    throw new Error('must be a list of { id, name, hash, expires? } (ferry token create --config-entry prints one)');
  const ids = new Set<string>();
  v.forEach((e, i) => {
    const at = `entry ${i + 1}`;
    if (!e || typeof e !== 'object') throw new Error(`${at}: must be { id, name, hash, expires? }`);
    const t = e as Record<string, unknown>;
    for (const k of Object.keys(t))
      if (!['id', 'name', 'hash', 'expires', 'roles'].includes(k)) throw new Error(`${at}: unknown key "${k}"`);
    if (!isTokenId(t.id)) throw new Error(`${at}: id must be 4-40 lower-case letters and digits`);
    if (ids.has(t.id)) throw new Error(`${at}: id "${t.id}" appears twice`);
    ids.add(t.id);
    if (typeof t.name !== 'string' || !t.name.trim()) throw new Error(`${at}: name is required`);
    if (!isTokenHash(t.hash))
      throw new Error(
        `${at}: hash must be a scrypt$N$r$p$salt$hash value (the secret itself never goes in the config)`,
      );
    if (t.expires !== undefined && (typeof t.expires !== 'string' || Number.isNaN(Date.parse(t.expires))))
      throw new Error(`${at}: expires must be an ISO 8601 time`);
  });
}

export type IntakeAuthResult =
  | { ok: true; principal: string }
  /** `blockedNow`: this failure is the one that blocked the address (worth one log line). */
  | { ok: false; status: 401 | 429; reason: string; retryAfterSec?: number; blockedNow?: boolean };

export interface IntakeAuthOptions {
  token: string;
  tokens: readonly IntakeTokenEntry[];
  /** Failed attempts from one address within `windowMs` before it is refused (0 = no limit). */
  maxFailures: number;
  windowMs: number;
  /** How long a checked secret is remembered (its scrypt check skipped; expiry still applies). */
  cacheMs?: number;
  now?: () => number;
}

export class IntakeAuth {
  private readonly byId = new Map<string, IntakeTokenEntry>();
  private readonly checked = new Map<string, { id: string; at: number }>();
  private readonly failures: FailureLimiter;
  private readonly now: () => number;
  readonly counts = { authFailures: 0, authRateLimited: 0 };

  constructor(private readonly opts: IntakeAuthOptions) {
    for (const t of opts.tokens) this.byId.set(t.id, t);
    this.now = opts.now ?? Date.now;
    // the admin API's limiter: the same rule (maxFailures within windowMs, then refused for windowMs; 0 = off)
    this.failures = new FailureLimiter(opts.maxFailures, opts.windowMs, this.now);
  }

  /** Whether requests need credentials at all. */
  get enabled(): boolean {
    return !!this.opts.token || this.byId.size > 0;
  }

  async check(authorization: string | undefined, address: string): Promise<IntakeAuthResult> {
    if (!this.enabled) return { ok: true, principal: 'anonymous' };
    const blocked = this.failures.blocked(address);
    if (blocked) {
      this.counts.authRateLimited++;
      return {
        ok: false,
        status: 429,
        reason: 'too many failed authentications from this address',
        retryAfterSec: blocked,
      };
    }
    const secret = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    const principal = secret ? await this.verify(secret) : undefined;
    if (principal) return { ok: true, principal };
    this.counts.authFailures++;
    const blockedNow = this.failures.fail(address);
    return {
      ok: false,
      status: 401,
      reason: secret ? 'unknown, expired or wrong bearer token' : 'missing bearer token',
      blockedNow,
    };
  }

  private async verify(secret: string): Promise<string | undefined> {
    if (this.opts.token) {
      const got = Buffer.from(secret);
      const want = Buffer.from(this.opts.token);
      if (got.length === want.length && timingSafeEqual(got, want)) return 'token';
    }
    const id = tokenIdOf(secret);
    const entry = id ? this.byId.get(id) : undefined;
    if (!entry) return undefined;
    const now = this.now();
    if (entry.expires && Date.parse(entry.expires) <= now) return undefined;
    const digest = secretDigest(secret);
    const hit = this.checked.get(digest);
    if (hit && hit.id === entry.id && now - hit.at < (this.opts.cacheMs ?? 300_000)) return entry.name;
    if (!(await verifyToken(secret, entry.hash))) return undefined;
    if (this.checked.size > 1000) this.checked.clear();
    this.checked.set(digest, { id: entry.id, at: now });
    return entry.name;
  }
}
