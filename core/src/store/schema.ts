/** Versioned schema migrations shared by the SQLite and PostgreSQL stores. */
export type Dialect = 'sqlite' | 'postgres';

export interface Migration {
  version: number;
  name: string;
  /** DDL with `{AUTO}`, `{BIGINT}`, `{BLOB}` placeholders filled per dialect. */
  statements: string[];
  /** Run after `statements`, on that dialect only. */
  only?: Partial<Record<Dialect, string[]>>;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'messages, events, deliveries, checkpoints',
    statements: [
      `CREATE TABLE messages (
        seq {AUTO},
        id TEXT NOT NULL UNIQUE,
        source_id TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body {BLOB},
        headers TEXT NOT NULL,
        received_at {BIGINT} NOT NULL,
        status TEXT NOT NULL,
        bundle TEXT,
        error TEXT,
        duplicate_of TEXT,
        dedup_key TEXT,
        ordering_key TEXT,
        lease_owner TEXT,
        lease_expires {BIGINT},
        updated_at {BIGINT} NOT NULL,
        pruned_at {BIGINT}
      )`,
      `CREATE INDEX messages_status_seq ON messages (status, seq)`,
      `CREATE INDEX messages_dedup ON messages (source_id, dedup_key, received_at)`,
      `CREATE INDEX messages_received_at ON messages (received_at)`,
      `CREATE INDEX messages_updated_at ON messages (updated_at)`,
      `CREATE TABLE message_events (
        seq {AUTO},
        message_id TEXT NOT NULL,
        at {BIGINT} NOT NULL,
        status TEXT NOT NULL,
        sink_id TEXT,
        route_id TEXT,
        detail TEXT
      )`,
      `CREATE INDEX message_events_message ON message_events (message_id, seq)`,
      `CREATE TABLE deliveries (
        seq {AUTO},
        id TEXT NOT NULL UNIQUE,
        message_id TEXT NOT NULL,
        message_seq {BIGINT} NOT NULL,
        route_id TEXT NOT NULL,
        sink_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        ordering_key TEXT NOT NULL,
        strict_order INTEGER NOT NULL,
        created_at {BIGINT} NOT NULL,
        first_attempt_at {BIGINT},
        next_attempt_at {BIGINT},
        last_error TEXT,
        delivered_at {BIGINT},
        lease_owner TEXT,
        lease_expires {BIGINT},
        bundle TEXT,
        superseded INTEGER NOT NULL DEFAULT 0
      )`,
      `CREATE INDEX deliveries_open ON deliveries (message_seq, seq) WHERE superseded = 0 AND status IN ('pending', 'failed')`,
      `CREATE INDEX deliveries_key ON deliveries (sink_id, ordering_key, message_seq) WHERE superseded = 0 AND status IN ('pending', 'failed')`,
      `CREATE INDEX deliveries_message ON deliveries (message_id)`,
      `CREATE TABLE checkpoints (
        source_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at {BIGINT} NOT NULL,
        PRIMARY KEY (source_id, key)
      )`,
    ],
  },
  {
    version: 2,
    name: 'message bodies and bundles in their own table (status updates no longer rewrite them)',
    statements: [
      `CREATE TABLE message_content (
        message_id TEXT PRIMARY KEY,
        body {BLOB},
        bundle TEXT
      )`,
      `INSERT INTO message_content (message_id, body, bundle) SELECT id, body, bundle FROM messages`,
      `ALTER TABLE messages DROP COLUMN body`,
      `ALTER TABLE messages DROP COLUMN bundle`,
      // Rewritten by every status change; prune filters by status first and does without it.
      `DROP INDEX messages_updated_at`,
    ],
  },
  {
    version: 3,
    name: 'index of failed deliveries by next attempt (the dispatcher asks when the next retry is due)',
    statements: [
      `CREATE INDEX deliveries_retry ON deliveries (next_attempt_at) WHERE superseded = 0 AND status = 'failed'`,
    ],
  },
  {
    version: 4,
    name: 'processing attempts per message (a message whose processing keeps dying is failed, not retried for ever)',
    statements: [`ALTER TABLE messages ADD COLUMN process_attempts INTEGER NOT NULL DEFAULT 0`],
  },
  {
    version: 5,
    name: "heads of each sink's ordering keys (a claim visits the deliveries it may take, not a down sink's whole backlog)",
    // head = 0: an older open strict delivery of the same (sink, key) holds this one. Kept up to
    // date by the SQLite store (one writer); PostgreSQL leaves every row at 1 (see keyHeads).
    statements: [`ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 1`],
    only: {
      sqlite: [
        `UPDATE deliveries SET head = 0
         WHERE superseded = 0 AND status IN ('pending', 'failed') AND strict_order = 1
           AND EXISTS (SELECT 1 FROM deliveries e
                       WHERE e.sink_id = deliveries.sink_id AND e.ordering_key = deliveries.ordering_key AND e.superseded = 0
                         AND e.status IN ('pending', 'failed') AND e.strict_order = 1 AND e.message_seq < deliveries.message_seq)`,
        `CREATE INDEX deliveries_ready ON deliveries (sink_id, message_seq, seq) WHERE superseded = 0 AND status = 'pending' AND head = 1`,
        `CREATE INDEX deliveries_due ON deliveries (sink_id, next_attempt_at) WHERE superseded = 0 AND status = 'failed' AND head = 1`,
      ],
    },
  },
  {
    version: 6,
    name: "attempts made as the probe of a paused sink (counted in attempts, not towards the retry policy's maxAttempts)",
    statements: [`ALTER TABLE deliveries ADD COLUMN probe_attempts INTEGER NOT NULL DEFAULT 0`],
  },
  {
    version: 7,
    name: 'sinks held by an operator (deliveries wait, unattempted, until released or until a set time; every instance)',
    statements: [
      `CREATE TABLE sink_holds (
        sink_id TEXT PRIMARY KEY,
        held_at {BIGINT} NOT NULL,
        until_at {BIGINT},
        reason TEXT
      )`,
    ],
  },
  {
    version: 8,
    name: 'audit trail (append-only: who did or read what, from where, with what result) and API tokens (salted hashes only)',
    statements: [
      `CREATE TABLE audit_log (
        seq {AUTO},
        at {BIGINT} NOT NULL,
        principal TEXT NOT NULL,
        role TEXT,
        remote TEXT,
        action TEXT NOT NULL,
        target TEXT,
        message_ids TEXT,
        result TEXT NOT NULL,
        detail TEXT
      )`,
      `CREATE INDEX audit_log_at ON audit_log (at)`,
      `CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        roles TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at {BIGINT} NOT NULL,
        created_by TEXT,
        expires_at {BIGINT},
        revoked_at {BIGINT},
        revoked_by TEXT
      )`,
    ],
    // The engine never rewrites an audit entry; the database refuses it too (only its retention deletes rows).
    only: {
      sqlite: [
        `CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
      ],
      postgres: [
        `CREATE FUNCTION ferry_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$`,
        `CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION ferry_audit_log_append_only()`,
      ],
    },
  },
  {
    version: 9,
    name: "content hash of each message (a duplicate is the same sender, control id AND content); instances and their heartbeats (a dead instance's leases are taken over within seconds)",
    statements: [
      // Rows stored before this migration have none (NULL): a message compared with one of them
      // has the hash of the stored body computed on the fly; a pruned body counts as other content.
      `ALTER TABLE messages ADD COLUMN content_hash TEXT`,
      // One row per engine instance (its lease owner id); heartbeat_at on the database's clock.
      // released_at: when its leases were last released because its heartbeat had stopped.
      `CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT,
        pid INTEGER,
        started_at {BIGINT} NOT NULL,
        heartbeat_at {BIGINT} NOT NULL,
        released_at {BIGINT}
      )`,
    ],
  },
  {
    version: 10,
    name: 'config versions (every applied config, secrets masked, with its hash, time and who) and the config version that routed each message',
    statements: [
      // NULL for messages routed before this migration.
      `ALTER TABLE messages ADD COLUMN config_version INTEGER`,
      `CREATE TABLE config_versions (
        version INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        at {BIGINT} NOT NULL,
        applied_by TEXT NOT NULL,
        config TEXT NOT NULL
      )`,
    ],
  },
  {
    version: 11,
    name: 'FHIR facade: API token scopes, identities per (connection, vendor id), idempotency keys with their answers, the last canonical copy of each resource read or written',
    statements: [
      // JSON list of `connection:<id>:read|write`; NULL for tokens without facade access.
      `ALTER TABLE api_tokens ADD COLUMN scopes TEXT`,
      // One row per resource a connection answered: its stable canonical id, and the MRN linking
      // the same patient across connections.
      `CREATE TABLE facade_identities (
        connection_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        vendor_id TEXT NOT NULL,
        canonical_id TEXT NOT NULL,
        mrn TEXT,
        updated_at {BIGINT} NOT NULL,
        PRIMARY KEY (connection_id, resource_type, vendor_id)
      )`,
      `CREATE INDEX facade_identities_canonical ON facade_identities (connection_id, resource_type, canonical_id)`,
      `CREATE INDEX facade_identities_mrn ON facade_identities (resource_type, mrn)`,
      // scope: connection + principal; state pending while the vendor call runs, then done with the answer.
      `CREATE TABLE facade_idempotency (
        scope TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        created_at {BIGINT} NOT NULL,
        expires_at {BIGINT} NOT NULL,
        PRIMARY KEY (scope, idem_key)
      )`,
      `CREATE INDEX facade_idempotency_expires ON facade_idempotency (expires_at)`,
      `CREATE TABLE facade_resources (
        connection_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        canonical_id TEXT NOT NULL,
        resource TEXT NOT NULL,
        fetched_at {BIGINT} NOT NULL,
        PRIMARY KEY (connection_id, resource_type, canonical_id)
      )`,
    ],
  },
  {
    version: 12,
    name: 'message type and control id in their own indexed columns, messages by source in seq order (the console pages through millions of messages by them), deliveries by delivery time',
    // Filled on insert from the headers; the rows stored before this migration from their headers JSON.
    // deliveries_delivered_at: the deliveries of the last hour, per minute (the console's throughput series).
    statements: [`CREATE INDEX deliveries_delivered_at ON deliveries (delivered_at)`],
    only: {
      sqlite: [
        `ALTER TABLE messages ADD COLUMN message_type TEXT`,
        `ALTER TABLE messages ADD COLUMN control_id TEXT`,
        `UPDATE messages SET message_type = json_extract(headers, '$.messageType'), control_id = json_extract(headers, '$.controlId') WHERE json_valid(headers)`,
        `CREATE INDEX messages_type_seq ON messages (message_type, seq)`,
        `CREATE INDEX messages_control_seq ON messages (control_id, seq)`,
        // A page of one source, newest first (the duplicate index starts with source_id too, but the planner would sort all the source's rows with it).
        `CREATE INDEX messages_source_seq ON messages (source_id, seq)`,
      ],
      postgres: [
        // COLLATE "C": byte order (as SQLite's), so a type prefix (ADT^A0*) is a range scan of the index whatever the database's locale.
        `ALTER TABLE messages ADD COLUMN message_type TEXT COLLATE "C"`,
        `ALTER TABLE messages ADD COLUMN control_id TEXT COLLATE "C"`,
        `UPDATE messages SET message_type = headers::jsonb ->> 'messageType', control_id = headers::jsonb ->> 'controlId'`,
        `CREATE INDEX messages_type_seq ON messages (message_type, seq)`,
        `CREATE INDEX messages_control_seq ON messages (control_id, seq)`,
        // A page of one source, newest first (the duplicate index starts with source_id too, but the planner would sort all the source's rows with it).
        `CREATE INDEX messages_source_seq ON messages (source_id, seq)`,
      ],
    },
  },
  {
    version: 13,
    name: 'FHIR facade: explicit links between patients at two connections ($link / $unlink), honoured by $identities',
    statements: [
      // One row per link, its two ends ordered (a < b by connection, then id) so a link is stored
      // once whichever end named it; ends are canonical ids.
      `CREATE TABLE facade_links (
        resource_type TEXT NOT NULL,
        a_connection TEXT NOT NULL,
        a_id TEXT NOT NULL,
        b_connection TEXT NOT NULL,
        b_id TEXT NOT NULL,
        created_at {BIGINT} NOT NULL,
        created_by TEXT,
        PRIMARY KEY (resource_type, a_connection, a_id, b_connection, b_id)
      )`,
      `CREATE INDEX facade_links_b ON facade_links (resource_type, b_connection, b_id)`,
    ],
  },
];

export function ddl(sql: string, dialect: Dialect): string {
  return sql
    .replace(/\{AUTO\}/g, dialect === 'sqlite' ? 'INTEGER PRIMARY KEY AUTOINCREMENT' : 'BIGSERIAL PRIMARY KEY')
    .replace(/\{BIGINT\}/g, dialect === 'sqlite' ? 'INTEGER' : 'BIGINT')
    .replace(/\{BLOB\}/g, dialect === 'sqlite' ? 'BLOB' : 'BYTEA');
}

export const SCHEMA_VERSION = migrations[migrations.length - 1].version;
