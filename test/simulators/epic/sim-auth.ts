/** SMART backend services on the simulators: JWT client assertions verified against the registered JWKS, HTTP Basic, issued tokens. */
import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader, decodeJwt, type JSONWebKeySet } from 'jose';

export interface RegisteredJwtClient {
  clientId: string;
  /** Static public keys registered with the app. */
  jwks?: JSONWebKeySet;
  /** JWK Set URL registered instead (Epic requires JKU for backend apps since Feb 2026): the assertion's `jku` header must equal it and keys are fetched from it. */
  jku?: string;
  /** Registration not yet propagated before this instant (epoch ms): refused like a bad key. */
  activeFrom?: number;
}

export type AssertionCheck = { ok: true; clientId: string } | { ok: false; reason: string };

/**
 * Verify a client assertion as an authorization server does: RS384 (or ES384) signature against
 * the client's registered key set (selected by `kid`), `iss` == `sub` == a registered client id,
 * `aud` == the token endpoint URL exactly, `exp` present and at most 5 minutes after now,
 * `jti` present and never seen before.
 */
export async function verifyClientAssertion(
  assertion: string,
  opts: {
    clients: Map<string, RegisteredJwtClient>;
    tokenUrl: string;
    seenJti: Map<string, number>;
    now: number;
    maxExpSec?: number;
  },
): Promise<AssertionCheck> {
  let claims: ReturnType<typeof decodeJwt>;
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(assertion);
    claims = decodeJwt(assertion);
  } catch {
    return { ok: false, reason: 'malformed client_assertion' };
  }
  if (header.alg !== 'RS384' && header.alg !== 'ES384')
    return { ok: false, reason: `alg ${header.alg} not accepted (RS384/ES384)` };
  const clientId = claims.iss;
  if (!clientId || claims.sub !== clientId) return { ok: false, reason: 'iss and sub must both be the client id' };
  const client = opts.clients.get(clientId);
  if (!client) return { ok: false, reason: `unknown client ${clientId}` };
  const nowSec = Math.floor(opts.now / 1000);
  if (client.activeFrom !== undefined && opts.now < client.activeFrom)
    return { ok: false, reason: `client ${clientId} is not active yet (registration propagating)` };
  let jwks = client.jwks;
  if (client.jku) {
    if (header.jku !== client.jku)
      return { ok: false, reason: `jku header ${String(header.jku)} is not the registered JWK Set URL` };
    try {
      const res = await fetch(client.jku, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(5000),
      });
      if (!res.ok) return { ok: false, reason: `JWK Set URL answered ${res.status}` };
      jwks = (await res.json()) as JSONWebKeySet;
    } catch (e) {
      return { ok: false, reason: `JWK Set URL unreachable: ${(e as Error).message}` };
    }
  }
  if (!jwks) return { ok: false, reason: `no keys registered for ${clientId}` };
  try {
    await jwtVerify(assertion, createLocalJWKSet(jwks), {
      algorithms: ['RS384', 'ES384'],
      audience: opts.tokenUrl,
      issuer: clientId,
      subject: clientId,
      currentDate: new Date(opts.now),
      requiredClaims: ['exp', 'jti'],
    });
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && (e as { claim?: string }).claim === 'aud')
      return { ok: false, reason: `aud must be the token endpoint ${opts.tokenUrl}` };
    if (code === 'ERR_JWT_EXPIRED') return { ok: false, reason: 'assertion expired' };
    if (code === 'ERR_JWKS_NO_MATCHING_KEY')
      return { ok: false, reason: `no registered key matches kid ${String(header.kid)}` };
    return { ok: false, reason: `${code || 'verification failed'}: ${(e as Error).message}` };
  }
  if (typeof claims.exp !== 'number' || claims.exp - nowSec > (opts.maxExpSec ?? 300))
    return { ok: false, reason: 'exp is more than 5 minutes in the future' };
  const jti = String(claims.jti);
  for (const [j, exp] of opts.seenJti) if (exp < nowSec - 600) opts.seenJti.delete(j);
  if (opts.seenJti.has(jti)) return { ok: false, reason: `jti ${jti} was already used` };
  opts.seenJti.set(jti, claims.exp);
  return { ok: true, clientId };
}

export function parseForm(body: Buffer): URLSearchParams {
  return new URLSearchParams(body.toString('utf8'));
}

export function parseBasic(header: string | undefined): { user: string; pass: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const raw = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const i = raw.indexOf(':');
  return i < 0 ? undefined : { user: decodeURIComponent(raw.slice(0, i)), pass: decodeURIComponent(raw.slice(i + 1)) };
}

export interface IssuedToken {
  clientId: string;
  expiresAt: number;
  scopes: string[];
}

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

// ---------------------------------------------------------------------------------------------
// Bulk Data
