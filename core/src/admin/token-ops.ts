import { inputError } from '../errors';
import type { ApiTokenRecord, MessageStore } from '../store/message-store';
import { isFacadeScope, isRole, ROLES, type Role } from './roles';
import { hashToken, newTokenSecret } from './tokens';

/** A token request as `ferry token create` and `POST /api/tokens` accept it. */
export interface TokenRequest {
  name?: unknown;
  /** A role, a list, or comma-separated. */
  roles?: unknown;
  role?: unknown;
  /** ISO 8601 time, or a duration: `90d`, `12h`, `30m`. */
  expires?: unknown;
  /** FHIR facade scopes: `connection:<id>:read|write` (`*` for every connection); a list or comma-separated. */
  scopes?: unknown;
  scope?: unknown;
}

export interface ValidTokenRequest {
  name: string;
  roles: Role[];
  expiresAt?: Date;
  scopes?: string[];
}

/** Validates a token request; throws an input FerryError naming the field. */
export function tokenRequest(req: TokenRequest, now = Date.now()): ValidTokenRequest {
  const name = typeof req.name === 'string' ? req.name.trim() : '';
  // eslint-disable-next-line no-control-regex -- a token name must hold no control characters
  if (!name || name.length > 100 || /[\u0000-\u001f]/.test(name))
    throw inputError('TOKEN_REQUEST', 'name: required, at most 100 characters (who or what uses the token)', {
      field: 'name',
    });
  const raw = req.roles ?? req.role;
  const roles = (Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : [])
    .map((r) => String(r).trim())
    .filter(Boolean);
  if (!roles.length || !roles.every(isRole))
    throw inputError('TOKEN_REQUEST', `roles: one or more of ${ROLES.join(', ')}`, { field: 'roles' });
  const out: ValidTokenRequest = { name, roles: [...new Set(roles)] as Role[] };
  const rawScopes = req.scopes ?? req.scope;
  if (rawScopes !== undefined && rawScopes !== null && rawScopes !== '') {
    const scopes = (Array.isArray(rawScopes) ? rawScopes : String(rawScopes).split(/[\s,]+/))
      .map((x) => String(x).trim())
      .filter(Boolean);
    const bad = scopes.find((x) => !isFacadeScope(x));
    if (bad !== undefined)
      throw inputError(
        'TOKEN_REQUEST',
        `scopes: each is connection:<id>:read or connection:<id>:write (id * = every connection): ${String(bad).slice(0, 80)}`,
        { field: 'scopes' },
      );
    if (scopes.length) out.scopes = [...new Set(scopes)];
  }
  if (req.expires !== undefined && req.expires !== null && req.expires !== '') {
    const s = String(req.expires).trim();
    const d = /^(\d+)\s*([dhm])$/i.exec(s);
    const at = d
      ? now + Number(d[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[d[2].toLowerCase() as 'd' | 'h' | 'm']
      : Date.parse(s);
    if (!Number.isFinite(at) || at <= now)
      throw inputError('TOKEN_REQUEST', `expires: a future ISO 8601 time or a duration like 90d, 12h: ${s}`, {
        field: 'expires',
      });
    out.expiresAt = new Date(at);
  }
  return out;
}

/** Makes a token: the record (hash only) and the secret, to be shown once. */
export async function makeToken(
  req: ValidTokenRequest,
  createdBy: string,
): Promise<{ record: ApiTokenRecord; secret: string }> {
  const { id, secret } = newTokenSecret();
  const record: ApiTokenRecord = {
    id,
    name: req.name,
    roles: req.roles,
    hash: await hashToken(secret),
    createdAt: new Date(),
    createdBy,
  };
  if (req.expiresAt) record.expiresAt = req.expiresAt;
  if (req.scopes?.length) record.scopes = req.scopes;
  return { record, secret };
}

/** Creates and stores a token; returns the record and the secret. */
export async function issueToken(
  store: MessageStore,
  req: ValidTokenRequest,
  createdBy: string,
): Promise<{ record: ApiTokenRecord; secret: string }> {
  const t = await makeToken(req, createdBy);
  await store.createApiToken(t.record);
  return t;
}

/** A token as lists show it: never its hash. */
export function tokenView(t: ApiTokenRecord, now = Date.now()): Record<string, unknown> {
  const { hash: _h, ...rest } = t;
  const state = t.revokedAt ? 'revoked' : t.expiresAt && t.expiresAt.getTime() <= now ? 'expired' : 'active';
  return { ...rest, state };
}
