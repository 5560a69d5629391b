import { hashToken, newTokenSecret, ROLES, type ConfigToken, type Role } from '@ferry/core';

/** One API token per role, for `admin.auth.tokens` (hashes) and the requests (secrets). */
export interface RoleTokens {
  /** `admin.auth.tokens` entries. */
  tokens: ConfigToken[];
  secret: Record<Role, string>;
  /** `{ authorization: 'Bearer <secret>' }` for a role. */
  auth(role: Role): { authorization: string };
}

export async function roleTokens(): Promise<RoleTokens> {
  const tokens: ConfigToken[] = [];
  const secret = {} as Record<Role, string>;
  for (const role of ROLES) {
    const t = newTokenSecret();
    secret[role] = t.secret;
    tokens.push({ id: t.id, name: `test-${role}`, roles: [role], hash: await hashToken(t.secret) });
  }
  return { tokens, secret, auth: (role) => ({ authorization: `Bearer ${secret[role]}` }) };
}
