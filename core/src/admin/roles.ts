/**
 * Roles, each including the ones before it:
 * - `viewer`: counts, states, routes, sinks, message metadata without identifiers or ordering keys;
 * - `operator`: + replay, retry (replay mode redeliver), sink hold/release, prune;
 * - `phi-reader`: + message bodies, canonical bundles, identifiers and ordering keys, search by patient;
 * - `admin`: + API tokens, the (redacted) config, the audit trail.
 */
export const ROLES = ['viewer', 'operator', 'phi-reader', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(r: unknown): r is Role {
  return typeof r === 'string' && (ROLES as readonly string[]).includes(r);
}

/** Who a request (or a CLI command) acts as. */
export interface Principal {
  /** `token:<id>`, `oidc:<subject>`, `cli:<os user>`. */
  id: string;
  kind: 'token' | 'oidc' | 'cli' | 'system';
  /** A token's name, the identity provider's user name. */
  name: string;
  roles: Role[];
  /**
   * What the principal may do on the FHIR facade, apart from its role: `connection:<id>:read`,
   * `connection:<id>:write` (`connection:*:read` = every connection). None: the facade refuses it.
   */
  scopes?: string[];
}

/** A facade scope: `connection:<id|*>:read|write`. */
export function isFacadeScope(s: unknown): s is string {
  return typeof s === 'string' && /^connection:([A-Za-z0-9][A-Za-z0-9._-]*|\*):(read|write)$/.test(s);
}

/** True when the principal's scopes allow `access` on connection `id`. */
export function hasScope(p: Pick<Principal, 'scopes'>, id: string, access: 'read' | 'write'): boolean {
  return (p.scopes ?? []).some((s) => s === `connection:${id}:${access}` || s === `connection:*:${access}`);
}

/** The principal's highest role (undefined: it has none). */
export function topRole(p: Pick<Principal, 'roles'>): Role | undefined {
  let best = -1;
  for (const r of p.roles) best = Math.max(best, ROLES.indexOf(r));
  return best >= 0 ? ROLES[best] : undefined;
}

/** True when the principal holds `role` or a role above it. */
export function hasRole(p: Pick<Principal, 'roles'>, role: Role): boolean {
  const top = topRole(p);
  return top !== undefined && ROLES.indexOf(top) >= ROLES.indexOf(role);
}
