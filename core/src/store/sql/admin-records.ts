import { FerryError } from '../../errors';
import type { ApiTokenRecord, AuditEntry, AuditFilter, StoredAuditEntry, StoredConfigVersion } from '../message-store';
import { SqlRetentionPart } from './retention';
import type { Row } from './sql-exec';

/** What operators' actions leave behind: the versions of the configuration, the audit trail, API tokens. */
export abstract class SqlAdminRecordsPart extends SqlRetentionPart {
  async recordConfigVersion(v: {
    hash: string;
    appliedBy: string;
    config: string;
  }): Promise<{ version: number; created: boolean }> {
    this.assertOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.tx(
          async (x) => {
            const [latest] = await x.all('SELECT version, hash FROM config_versions ORDER BY version DESC LIMIT 1', []);
            if (latest && latest.hash === v.hash) return { version: Number(latest.version), created: false };
            const version = latest ? Number(latest.version) + 1 : 1;
            await x.run('INSERT INTO config_versions (version, hash, at, applied_by, config) VALUES (?, ?, ?, ?, ?)', [
              version,
              v.hash,
              this.now(),
              v.appliedBy,
              v.config,
            ]);
            return { version, created: true };
          },
          { durable: true },
        );
      } catch (e) {
        // Another instance took the same number (PostgreSQL): read again.
        if (attempt < 3 && /unique|duplicate key|constraint/i.test((e as Error).message)) continue;
        throw e;
      }
    }
  }

  async configVersions(limit = 100): Promise<StoredConfigVersion[]> {
    this.assertOpen();
    const rows = await this.readAside((x) =>
      x.all(
        `SELECT version, hash, at, applied_by FROM config_versions ORDER BY version DESC LIMIT ${Math.max(1, Math.floor(limit))}`,
        [],
      ),
    );
    return rows.map((r) => ({
      version: Number(r.version),
      hash: r.hash,
      at: new Date(Number(r.at) - this.clockOffsetMs),
      appliedBy: r.applied_by,
    }));
  }

  async configVersion(version: number): Promise<StoredConfigVersion | undefined> {
    this.assertOpen();
    const [r] = await this.readAside((x) =>
      x.all('SELECT version, hash, at, applied_by, config FROM config_versions WHERE version = ?', [version]),
    );
    return r
      ? {
          version: Number(r.version),
          hash: r.hash,
          at: new Date(Number(r.at) - this.clockOffsetMs),
          appliedBy: r.applied_by,
          config: r.config,
        }
      : undefined;
  }

  async appendAudit(entries: AuditEntry[]): Promise<void> {
    this.assertOpen();
    if (!entries.length) return;
    const now = this.now();
    await this.tx(
      async (x) => {
        for (const e of entries) {
          if (!e.principal || !e.action || !e.result)
            throw new FerryError('INPUT_AUDIT_ENTRY', 'an audit entry needs principal, action and result', {
              kind: 'input',
            });
          await x.run(
            'INSERT INTO audit_log (at, principal, role, remote, action, target, message_ids, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            [
              e.at ? e.at.getTime() + this.clockOffsetMs : now,
              e.principal,
              e.role ?? null,
              e.remote ?? null,
              e.action,
              e.target ?? null,
              e.messageIds?.length ? JSON.stringify(e.messageIds) : null,
              e.result,
              e.detail ?? null,
            ],
          );
        }
      },
      { durable: true },
    );
  }

  async auditEntries(f: AuditFilter = {}): Promise<StoredAuditEntry[]> {
    this.assertOpen();
    const c: string[] = [];
    const p: unknown[] = [];
    const add = (sql: string, v: unknown) => {
      c.push(sql);
      p.push(v);
    };
    if (f.since) add('at >= ?', f.since.getTime() + this.clockOffsetMs);
    if (f.until) add('at < ?', f.until.getTime() + this.clockOffsetMs);
    if (f.principal) add('principal = ?', f.principal);
    if (f.action) add('action = ?', f.action);
    if (f.result) add('result = ?', f.result);
    if (f.messageId) add('message_ids LIKE ?', `%${JSON.stringify(f.messageId)}%`);
    if (f.afterSeq !== undefined) add(f.newestFirst ? 'seq < ?' : 'seq > ?', f.afterSeq);
    const limit = f.limit && f.limit > 0 ? ` LIMIT ${Math.floor(f.limit)}` : '';
    const rows = await this.readAside((x) =>
      x.all(
        `SELECT * FROM audit_log ${c.length ? `WHERE ${c.join(' AND ')}` : ''} ORDER BY seq ${f.newestFirst ? 'DESC' : 'ASC'}${limit}`,
        p,
      ),
    );
    return rows.map((r) => {
      const e: StoredAuditEntry = {
        seq: Number(r.seq),
        at: new Date(Number(r.at) - this.clockOffsetMs),
        principal: r.principal,
        action: r.action,
        result: r.result,
      };
      if (r.role) e.role = r.role;
      if (r.remote) e.remote = r.remote;
      if (r.target) e.target = r.target;
      if (r.message_ids) e.messageIds = JSON.parse(r.message_ids);
      if (r.detail) e.detail = r.detail;
      return e;
    });
  }

  async createApiToken(t: ApiTokenRecord): Promise<void> {
    this.assertOpen();
    if (!t.id || !t.name || !t.hash || !t.roles?.length)
      throw new FerryError('INPUT_TOKEN', 'a token needs id, name, roles and hash', { kind: 'input' });
    await this.tx(
      async (x) => {
        if ((await x.all('SELECT id FROM api_tokens WHERE id = ?', [t.id])).length)
          throw new FerryError('INPUT_TOKEN_EXISTS', `a token with id ${t.id} exists`, { kind: 'input' });
        await x.run(
          'INSERT INTO api_tokens (id, name, roles, hash, created_at, created_by, expires_at, revoked_at, revoked_by, scopes) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)',
          [
            t.id,
            t.name,
            JSON.stringify(t.roles),
            t.hash,
            t.createdAt.getTime(),
            t.createdBy ?? null,
            t.expiresAt ? t.expiresAt.getTime() : null,
            t.scopes?.length ? JSON.stringify(t.scopes) : null,
          ],
        );
      },
      { durable: true },
    );
  }

  private toToken(r: Row): ApiTokenRecord {
    const t: ApiTokenRecord = {
      id: r.id,
      name: r.name,
      roles: JSON.parse(r.roles),
      hash: r.hash,
      createdAt: new Date(Number(r.created_at)),
    };
    if (r.created_by) t.createdBy = r.created_by;
    if (r.expires_at !== null && r.expires_at !== undefined) t.expiresAt = new Date(Number(r.expires_at));
    if (r.revoked_at !== null && r.revoked_at !== undefined) t.revokedAt = new Date(Number(r.revoked_at));
    if (r.revoked_by) t.revokedBy = r.revoked_by;
    if (r.scopes) t.scopes = JSON.parse(r.scopes);
    return t;
  }

  async apiTokens(): Promise<ApiTokenRecord[]> {
    this.assertOpen();
    return (await this.read((x) => x.all('SELECT * FROM api_tokens ORDER BY created_at, id'))).map((r) =>
      this.toToken(r),
    );
  }

  async apiToken(id: string): Promise<ApiTokenRecord | undefined> {
    this.assertOpen();
    const rows = await this.read((x) => x.all('SELECT * FROM api_tokens WHERE id = ?', [id]));
    return rows[0] ? this.toToken(rows[0]) : undefined;
  }

  async revokeApiToken(id: string, by?: string): Promise<boolean> {
    this.assertOpen();
    const now = this.now();
    return (
      (await this.tx(
        (x) =>
          x.run('UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL', [
            now,
            by ?? null,
            id,
          ]),
        { durable: true },
      )) > 0
    );
  }
}
