import type { Bundle } from '@medplum/fhirtypes';
import type {
  DataQualityIssue,
  DeliveryStatus,
  InboundMessage,
  MessageEvent,
  MessageStatus,
  StoredDelivery,
  StoredError,
  StoredMessage,
} from '../model/message';

/**
 * What to do with a duplicate: a message whose identity (source, sending app/facility, control id)
 * AND content (its hash, the `ignoreFields` left out) match a message stored within the window.
 * The same identity with other content is not a duplicate: it is stored and processed, marked
 * with a `control-id-reused` event (`InsertResult.reusesControlIdOf`).
 */
export const DuplicatePolicy = {
  /** Store and process it again like any new message. */
  accept: 'accept',
  /** Acknowledge it again (same outcome as the first) without storing or reprocessing it. */
  ignore: 'ignore',
  /** Refuse it: the source answers with an error (HL7: AR). */
  reject: 'reject',
} as const;
export type DuplicatePolicy = (typeof DuplicatePolicy)[keyof typeof DuplicatePolicy];

export interface NewMessage extends InboundMessage {
  sourceId: string;
  /**
   * The content hash duplicate detection compares (see `contentHash`); computed by the store from
   * the body and `duplicates.ignoreFields` when absent.
   */
  contentHash?: string;
}

/** Duplicate detection of one insert call. */
export interface DuplicateOptions {
  policy: DuplicatePolicy;
  windowMs: number;
  /**
   * What legitimately changes on a resend, left out of the content hash: HL7 v2 fields (`MSH-7`)
   * and JSON paths (`meta.lastUpdated`). Default: none (the whole content counts).
   */
  ignoreFields?: readonly string[];
}

export interface InsertOptions {
  /** Duplicate detection; off when absent. */
  duplicates?: DuplicateOptions;
  /**
   * A source checkpoint committed in the same transaction as the messages: a poller's cursor
   * moves only once what it read is durable.
   */
  checkpoint?: { sourceId: string; key: string; value: string };
}

export interface InsertResult {
  id: string;
  /** True when the message was recognised as a duplicate. */
  duplicate: boolean;
  /** For duplicates: the original message id. */
  duplicateOf?: string;
  /** For duplicates under `reject`, or `ignore`: nothing new was stored. */
  stored: boolean;
  /** Set by the engine: a duplicate refused under policy `reject` (the source answers with an error, HL7 AR). */
  rejected?: boolean;
  /**
   * Not a duplicate although its identity (sender, control id) is that of this earlier message
   * within the window: its content differs. Stored and processed like any new message, with a
   * `control-id-reused` event.
   */
  reusesControlIdOf?: string;
}

/** `throughput`'s answer: bucket i covers [since + i*bucketMs, since + (i+1)*bucketMs). */
export interface ThroughputSeries {
  since: Date;
  bucketMs: number;
  buckets: number;
  /** Messages received, per source id. */
  received: Record<string, number[]>;
  /** Of those, the ones whose processing failed (status failed), per source id. */
  failed: Record<string, number[]>;
  /** Deliveries made (delivered_at in the bucket), per sink id. */
  delivered: Record<string, number[]>;
}

export interface MessageFilter {
  ids?: string[];
  status?: MessageStatus[];
  sourceId?: string;
  routeId?: string;
  sinkId?: string;
  /** Delivery status (joins deliveries). */
  deliveryStatus?: DeliveryStatus[];
  since?: Date;
  until?: Date;
  limit?: number;
  /** Newest first when true. */
  newestFirst?: boolean;
  /** HL7 v2 MSH-9 style message type (`ADT^A01`); `*` matches any characters (`ADT^A0*`). */
  messageType?: string;
  /** Control id (HL7 MSH-10, a vendor event id), exact. */
  controlId?: string;
  /** Keyset paging: only messages stored before this seq (the next page of a newest-first list). */
  beforeSeq?: number;
  /**
   * A patient's messages: those whose ordering key is this, or ends in `|<this>` (the HL7 v2
   * transform's key is `<assigning authority>|<MRN>`). PHI: only for the phi-reader role.
   */
  patient?: string;
}

export interface PlannedDelivery {
  routeId: string;
  sinkId: string;
  /** The bundle this sink receives (after the route's steps), as an object... */
  bundle?: Bundle;
  /** ...or as JSON text (from a transform worker). One of the two, unless `unchanged`. */
  bundleJson?: string;
  strictOrder: boolean;
  /**
   * The route changed nothing: the delivery gets the message's own bundle, referenced instead of
   * stored twice. With `bundle` set it must be the very object given to `recordTransformed`.
   */
  unchanged?: boolean;
}

export type RoutingOutcome =
  | { status: 'routed'; deliveries: PlannedDelivery[] }
  | { status: 'unrouted' }
  | { status: 'filtered'; detail?: string };

/** A message's processing in one piece: transform result and routing (or failure). */
export interface ProcessedMessage {
  id: string;
  /** The canonical bundle as JSON text and the ordering key; absent when the transform failed. */
  transformed?: { bundleJson: string; orderingKey?: string };
  outcome: RoutingOutcome | { status: 'failed'; error: StoredError };
  /** Values the transform could not use: stored with the message (one `data-quality` event each). */
  issues?: DataQualityIssue[];
  /** The config version that routed it (stored with the message). */
  configVersion?: number;
}

/** An applied configuration (`config_versions`): secrets masked. */
export interface StoredConfigVersion {
  version: number;
  /** sha256 of the masked config's canonical JSON. */
  hash: string;
  at: Date;
  /** An admin principal, `signal` (SIGHUP) or `start`. */
  appliedBy: string;
  /** The masked config as canonical JSON text (only from `configVersion`). */
  config?: string;
}

export interface ClaimedDelivery extends StoredDelivery {
  /** Parsed from `bundleJson` on first read. */
  bundle: Bundle;
  /** The bundle as stored: canonical JSON text. */
  bundleJson: string;
  /** With its body and canonical bundle. */
  message: StoredMessage;
  /**
   * When the first attempt of this delivery was claimed (for the retry policy's max age).
   * `attempts` counts the attempts completed before this one (0 on the first claim).
   */
  firstAttemptAt: Date;
}

/** Which sinks' deliveries a claim takes (the dispatcher claims per sink, up to that sink's free slots). */
export interface DeliveryClaimFilter {
  sinkIds?: string[];
  /** Deliveries to any sink but these (sinks no longer configured). */
  excludeSinkIds?: string[];
}

export type DeliveryOutcome =
  | { status: 'delivered' }
  | { status: 'failed'; error: StoredError; nextAttemptAt: Date; probe?: boolean }
  | { status: 'dead'; error: StoredError; probe?: boolean };

export interface CompleteOptions {
  /** The lease owner the outcomes come from (the `owner` of `claimDeliveries`). */
  owner?: string;
}

export interface CompleteResult {
  /**
   * Outcomes not recorded because the delivery is no longer this owner's: taken over by another
   * claim after the lease expired, or already final with another outcome. (An outcome found
   * already recorded exactly so is not reported.)
   */
  stale: { deliveryId: string; status: DeliveryStatus; leaseOwner?: string }[];
}

/** A sink an operator held: its deliveries wait, unattempted, until it is released or `until` passes. */
export interface SinkHold {
  sinkId: string;
  since: Date;
  /** Absent: until released. */
  until?: Date;
  /** The operator's note (e.g. "EHR maintenance"). */
  reason?: string;
}

export interface StoreStats {
  messages: Record<string, number>;
  deliveries: Record<string, number>;
}

/** One entry of the audit trail: who did or read what, when, from where, with what result. */
export interface AuditEntry {
  /** Set by the store when absent. */
  at?: Date;
  /** `token:<id>` (`<name>`), `oidc:<subject>`, `cli:<os user>`, `anonymous`. */
  principal: string;
  /** The role the action was allowed under (absent when refused before one was known). */
  role?: string;
  /** The client's address (admin API). */
  remote?: string;
  /** e.g. `message.read`, `message.body.read`, `replay`, `prune`, `sink.hold`, `token.create`, `auth.failed`. */
  action: string;
  /** What it was done to: a sink id, a token id, a request path. */
  target?: string;
  /** The messages read or changed (ids only). */
  messageIds?: string[];
  /** `ok`, `denied` (401/403/429), `failed` (the operation went wrong), `invalid` (bad input). */
  result: string;
  /** A short, PHI-free note (error code, counts, filter keys). */
  detail?: string;
}

export interface StoredAuditEntry extends AuditEntry {
  seq: number;
  at: Date;
}

export interface AuditFilter {
  since?: Date;
  until?: Date;
  principal?: string;
  action?: string;
  /** Entries naming this message id. */
  messageId?: string;
  result?: string;
  /** Entries after this seq (paging, oldest first), or before it newest first. */
  afterSeq?: number;
  limit?: number;
  newestFirst?: boolean;
}

/** An API token as the store keeps it: only a salted hash of the secret. */
export interface ApiTokenRecord {
  id: string;
  name: string;
  roles: string[];
  /** `scrypt$N$r$p$<salt>$<hash>` (see admin/tokens.ts). */
  hash: string;
  createdAt: Date;
  createdBy?: string;
  expiresAt?: Date;
  revokedAt?: Date;
  revokedBy?: string;
  /** FHIR facade scopes (`connection:<id>:read|write`). */
  scopes?: string[];
}

/** One resource a connection answered through the FHIR facade (store migration 11). */
export interface FacadeIdentity {
  connectionId: string;
  resourceType: string;
  vendorId: string;
  canonicalId: string;
  /** The patient's MRN (canonical system|value), linking the same patient across connections. */
  mrn?: string;
}

/** What `facadeIdempotencyBegin` found. */
export type IdempotencyState =
  | { state: 'new' }
  | { state: 'pending'; requestHash: string }
  | { state: 'done'; requestHash: string; status: number; response: string };

/** One end of an explicit facade link: a canonical id at a connection (store migration 13). */
export interface FacadeLinkEnd {
  connectionId: string;
  canonicalId: string;
}

/** A canonical copy of a resource for serve-from-store (`facadeResourcesPut`). */
export interface FacadeResourceCopy {
  connectionId: string;
  resourceType: string;
  canonicalId: string;
  /** The canonical resource as JSON text. */
  resource: string;
  /**
   * When it was read from the vendor, on the store's clock as a stored message's `receivedAt` is
   * (default now); a copy never replaces one fetched later.
   */
  fetchedAt?: Date;
}

/** The FHIR facade's tables (store migrations 11 and 13). */
export interface FacadeStore {
  /** Records (or refreshes) identities. */
  facadeIdentify(ids: FacadeIdentity[]): Promise<void>;
  /** The identity of a canonical id at a connection. */
  facadeIdentityOf(
    connectionId: string,
    resourceType: string,
    canonicalId: string,
  ): Promise<FacadeIdentity | undefined>;
  /** Every identity sharing an MRN (all connections). */
  facadeIdentitiesByMrn(resourceType: string, mrn: string): Promise<FacadeIdentity[]>;
  /** Keeps the canonical copy of a resource (serve-from-store cache). */
  facadeResourcePut(connectionId: string, resourceType: string, canonicalId: string, resource: string): Promise<void>;
  /** Keeps several canonical copies in one transaction (the pipeline's batches). */
  facadeResourcesPut(copies: FacadeResourceCopy[]): Promise<void>;
  facadeResourceGet(
    connectionId: string,
    resourceType: string,
    canonicalId: string,
  ): Promise<{ resource: string; fetchedAt: Date } | undefined>;
  /**
   * Claims an idempotency key (state `new`: the caller does the work and calls Finish or Release),
   * or answers what it holds. Expired keys count as absent.
   */
  facadeIdempotencyBegin(scope: string, key: string, requestHash: string, ttlMs: number): Promise<IdempotencyState>;
  facadeIdempotencyFinish(scope: string, key: string, status: number, response: string): Promise<void>;
  /** Forgets a claimed key (the work failed in a way a retry may redo). */
  facadeIdempotencyRelease(scope: string, key: string): Promise<void>;
  /** Records an explicit link between two resources (either order); false: it was there already. */
  facadeLink(resourceType: string, a: FacadeLinkEnd, b: FacadeLinkEnd, createdBy?: string): Promise<boolean>;
  /** Removes an explicit link (either order); false: there was none. */
  facadeUnlink(resourceType: string, a: FacadeLinkEnd, b: FacadeLinkEnd): Promise<boolean>;
  /** The resources explicitly linked to one (direct links only, either end). */
  facadeLinksOf(resourceType: string, end: FacadeLinkEnd): Promise<FacadeLinkEnd[]>;
}

export interface PruneOptions {
  /** Drop bodies and bundles of delivered/filtered messages older than this. */
  bodiesBefore: Date;
  /** Drop bodies of dead/failed messages older than this. */
  deadBefore?: Date;
  /** Delete whole messages (metadata, events, deliveries) in a final status older than this. */
  deleteBefore?: Date;
  /** Delete audit entries older than this (the audit trail's own, longer retention). */
  auditBefore?: Date;
}

export interface PruneResult {
  /** Messages whose body (and bundle) were dropped. */
  messages: number;
  /** Messages deleted entirely (`deleteBefore`). */
  deleted?: number;
  /** Audit entries deleted (`auditBefore`). */
  auditDeleted?: number;
}

/** Work the engine still has to do (`Engine.waitForIdle`, health, metrics). */
export interface BacklogInfo {
  /** Messages in `received` / `transformed`. */
  unprocessedMessages: number;
  /** Pending deliveries, or failed ones whose next attempt is due. */
  deliveriesDue: number;
  /** Failed deliveries waiting for a later retry. */
  deliveriesScheduled: number;
  /** Open deliveries currently leased by an instance (in flight). */
  deliveriesLeased: number;
}

/** How an instance tells the others sharing its store that it is alive (`MessageStore.startInstance`). */
export interface InstanceOptions {
  /** How often the instance's heartbeat is written (PostgreSQL). */
  heartbeatMs: number;
  /**
   * An instance whose last heartbeat is older than this is dead: the leases it holds are
   * released for the others to take at once, not after the lease (PostgreSQL).
   */
  instanceTimeoutMs: number;
}

/** An engine instance alive on a shared store (`MessageStore.liveInstances`). */
export interface LiveInstance {
  /** Its lease owner id (`host:pid:random`). */
  id: string;
  host: string;
  pid: number;
  startedAt: Date;
  /** How long ago its last heartbeat was written (database clock). */
  heartbeatAgoMs: number;
}

/** What `startInstance` found and gave back. */
export interface InstanceStart {
  /** Leases of instances found dead (SQLite: every earlier owner) released at start. */
  releasedMessages: number;
  releasedDeliveries: number;
}

/**
 * The engine's durable state. Every state transition is a stored row. Implementations: SQLite
 * (embedded) and PostgreSQL (several instances). All methods are async so one contract serves both.
 */
export interface MessageStore {
  readonly kind: string;
  open(): Promise<void>;
  close(): Promise<void>;
  /** True while open and usable. */
  isOpen(): boolean;
  /**
   * False while the store cannot be used: PostgreSQL cannot be reached (its last operation lost
   * the connection and none has succeeded since); SQLite cannot write its file (disk full, an
   * I/O error). Readiness uses it; the engine's loops log their failures at debug meanwhile.
   */
  reachable?(): boolean;
  /**
   * How far the store's clock -- the times it stores and returns (received, first attempt) -- is
   * ahead of this process's clock: PostgreSQL's server clock when this machine's differs by a
   * second or more, else 0. Ages computed from stored times (a sink's `maxAgeMs`, the end-to-end
   * latency) add it to `Date.now()`.
   */
  clockAheadMs?(): number;

  /**
   * The engine `owner` (the lease owner of its claims) starts working on this store. SQLite, when
   * this store holds the file's engine lock: every lease of an earlier owner is released (that
   * process is dead: it held the lock). PostgreSQL: the instance is registered and beats its
   * heartbeat from a thread of its own (a busy event loop does not stop it); the leases of
   * instances whose heartbeat stopped are released as soon as that is seen, checked every
   * heartbeat. Optional: a store without it leaves leases to expire.
   */
  startInstance?(owner: string, opts: InstanceOptions): Promise<InstanceStart>;
  /** The instance stops (its heartbeat ends, its registration is removed). */
  stopInstance?(owner: string): Promise<void>;

  /** Durably store messages; resolves only after commit. */
  insert(messages: NewMessage[], opts?: InsertOptions): Promise<InsertResult[]>;

  getMessage(id: string, opts?: { body?: boolean; bundle?: boolean }): Promise<StoredMessage | undefined>;
  listMessages(filter: MessageFilter): Promise<StoredMessage[]>;
  events(messageId: string): Promise<MessageEvent[]>;
  /** The message's deliveries, oldest first; those superseded by a replay only when asked. */
  deliveries(messageId: string, opts?: { includeSuperseded?: boolean }): Promise<StoredDelivery[]>;

  /**
   * Claim up to `limit` messages in status `received` for processing, oldest first, leased to
   * `owner` for `leaseMs`. A message whose lease expired can be claimed again (also one left in
   * `transformed` by a crashed instance). Returned with their bodies. Every claim counts an
   * attempt; with `maxAttempts` set, a message claimed more often than that (its processing
   * never finished: the process or its worker died each time) is failed instead
   * (`FERRY_E_INTERNAL_PROCESSING_ATTEMPTS`). A replay resets the count.
   */
  claimReceived(
    owner: string,
    limit: number,
    leaseMs: number,
    opts?: { maxAttempts?: number },
  ): Promise<StoredMessage[]>;
  /** Record the transform's result. */
  recordTransformed(id: string, bundle: Bundle, orderingKey: string | undefined): Promise<void>;
  /** Record a processing failure (transform, validate, script): status `failed`, error kept. */
  recordFailed(id: string, error: StoredError): Promise<void>;
  /** Record the routing decision and create one delivery row per (message, sink). */
  recordRouting(id: string, outcome: RoutingOutcome): Promise<void>;
  /**
   * Record whole processing results (transform + routing, or failure) for several messages at
   * once: one transaction where the store can, each message still all-or-nothing on its own.
   * The same as `recordTransformed` + `recordRouting` / `recordFailed` per message. Resolves
   * with the messages whose result could not be written (e.g. an unknown id), the others being
   * recorded; rejects only when nothing was (the store is closed or unreachable).
   */
  recordProcessed(results: ProcessedMessage[]): Promise<{ failed: { id: string; error: unknown }[] }>;

  /**
   * Claim due deliveries (pending, or failed with nextAttemptAt <= now), leased to `owner`.
   * For strict-order deliveries, only the oldest undelivered delivery per (orderingKey, sink)
   * is eligible: a failing one holds the later ones back. A strict delivery also waits while an
   * older message that may share its key (same key, or key not yet known) is not yet routed.
   * Dead deliveries do not hold later ones. `completeDelivery` counts the attempt (`attempts` + 1).
   * Among the eligible, new deliveries are taken oldest first; due retries oldest first or
   * earliest due first (the store's choice: SQLite takes them before new ones, by due time).
   */
  claimDeliveries(
    owner: string,
    limit: number,
    leaseMs: number,
    now?: Date,
    filter?: DeliveryClaimFilter,
  ): Promise<ClaimedDelivery[]>;
  /**
   * Extend the leases of deliveries `owner` is still making (a sink call that may outlast the
   * lease) to `now + leaseMs`. Returns the ids still held -- leased to `owner`, or superseded by
   * a replay while in flight; the others were taken over or made final meanwhile.
   */
  renewDeliveryLeases(owner: string, deliveryIds: string[], leaseMs: number): Promise<string[]>;
  /**
   * Give back the open deliveries leased to `owner` other than `keep` (those it is making): leases
   * it holds without knowing -- a claim committed whose answer was lost with the connection.
   * Returns how many were released.
   */
  releaseDeliveryLeases(owner: string, keep: string[]): Promise<number>;
  /** The same for messages leased for processing (`claimReceived`). */
  releaseMessageLeases(owner: string, keep: string[]): Promise<number>;
  /**
   * Extend the leases of messages `owner` is still processing (a batch that outlasts the lease) to
   * `now + leaseMs`. Returns the ids still held: leased to `owner` and not yet recorded; the others
   * were taken over (their lease had run out) or recorded meanwhile.
   */
  renewMessageLeases(owner: string, messageIds: string[], leaseMs: number): Promise<string[]>;
  completeDelivery(deliveryId: string, outcome: DeliveryOutcome, opts?: CompleteOptions): Promise<void>;
  /**
   * Several outcomes in one operation (the dispatcher records each event-loop turn's together).
   * With `owner`, an outcome is recorded only while the delivery is still leased to that owner
   * (its lease may have expired, as long as nobody claimed it since) or was superseded by a
   * replay while in flight: the late outcome of an instance whose lease was taken over, or one
   * recorded already (a retry after a lost COMMIT answer), changes nothing and comes back in
   * `stale` -- a delivered delivery is never turned back into a failed or dead one. Without
   * `owner` (tests, tools) every outcome is recorded.
   */
  completeDeliveries(
    items: { deliveryId: string; outcome: DeliveryOutcome }[],
    opts?: CompleteOptions,
  ): Promise<CompleteResult>;
  /**
   * The earliest time a failed delivery not leased is due, to sleep until then; with a filter,
   * of those sinks' deliveries only (the dispatcher leaves out the sinks it will not claim for
   * meanwhile: paused or spaced -- their due retries would wake it for nothing).
   */
  nextDueAt(filter?: DeliveryClaimFilter): Promise<Date | undefined>;
  /** Counts of work left (for waitForIdle, readiness and metrics). */
  backlog(now?: Date): Promise<BacklogInfo>;
  /**
   * Open deliveries (pending or failed, not superseded) per sink with the oldest one's creation
   * time: a sink's backlog and how long it has waited (GET /api/sinks, the console's dashboard).
   */
  sinkBacklog(): Promise<Record<string, { open: number; oldestAt?: Date }>>;
  /**
   * Per-bucket counts since `since` (the console's sparklines): messages received per source and
   * those of them failed, deliveries made per sink. Reads the rows of the window through the
   * received_at / delivered_at indexes: its cost grows with the traffic of the window.
   */
  throughput(since: Date, bucketMs: number, now?: Date): Promise<ThroughputSeries>;
  /**
   * Events a source records about messages it stored (e.g. `ack`: the acknowledgment it sent, in
   * `detail`). Written with the next state transitions (no commit of their own where the store
   * groups them); not durable before the promise resolves.
   */
  recordEvents?(events: { messageId: string; status: string; detail?: string }[]): Promise<void>;
  /** Per source: the time of its newest message and how many of its messages are failed (status index). */
  sourceActivity(sourceIds: string[]): Promise<Record<string, { lastMessageAt?: Date; failed: number }>>;
  /**
   * How many messages are in each of `statuses` (each absent one: 0). Cheap for the statuses that
   * stay few -- the open ones and dead / failed -- whatever the size of the store (an index
   * range per status); `stats()` counts everything.
   */
  countMessages(statuses: MessageStatus[]): Promise<Partial<Record<MessageStatus, number>>>;

  /**
   * Re-queue messages for processing from the start (transform again with the current config).
   * Returns the ids re-queued.
   */
  replay(filter: MessageFilter): Promise<string[]>;
  /**
   * Re-queue dead (or failed) deliveries with the bundle they already have, without transforming
   * again: status pending, attempts reset, due now. `deliveryStatus` defaults to dead + failed.
   * Returns the delivery ids re-queued.
   */
  retryDeliveries(filter: MessageFilter & { deliveryIds?: string[] }): Promise<string[]>;

  /**
   * Holds a sink (every instance sharing the store stops claiming its deliveries; calls under
   * way finish): until released, or until `until`. Holding a held sink again replaces its hold.
   */
  holdSink(sinkId: string, opts?: { until?: Date; reason?: string }): Promise<SinkHold>;
  /** Ends a sink's hold; false when it was not held. */
  releaseSink(sinkId: string): Promise<boolean>;
  /** The holds in force now (one whose `until` has passed is over). */
  sinkHolds(): Promise<SinkHold[]>;

  /**
   * Appends entries to the audit trail (durably, before it resolves). The store never updates
   * them; only `prune({ auditBefore })` deletes old ones.
   */
  appendAudit(entries: AuditEntry[]): Promise<void>;
  /**
   * Stores an applied config (already masked) as the next version -- or, when it is the same
   * content as the latest stored version, answers that one (`created: false`).
   */
  recordConfigVersion?(v: {
    hash: string;
    appliedBy: string;
    config: string;
  }): Promise<{ version: number; created: boolean }>;
  /**
   * The engine instances whose heartbeat is younger than `withinMs` (PostgreSQL: `ferry reload`
   * finds the engines to signal this way), oldest start first.
   */
  liveInstances?(withinMs: number): Promise<LiveInstance[]>;
  /** The applied configs, newest first (without their text). */
  configVersions?(limit?: number): Promise<StoredConfigVersion[]>;
  /** One applied config with its (masked) text. */
  configVersion?(version: number): Promise<StoredConfigVersion | undefined>;
  /** Audit entries, oldest first unless `newestFirst`. */
  auditEntries(filter?: AuditFilter): Promise<StoredAuditEntry[]>;

  /** Stores a new API token (its hash); an existing id is an input error. */
  createApiToken(token: ApiTokenRecord): Promise<void>;
  /** Every API token, revoked and expired ones included, oldest first. */
  apiTokens(): Promise<ApiTokenRecord[]>;
  apiToken(id: string): Promise<ApiTokenRecord | undefined>;
  /** Marks a token revoked (kept for the audit trail); false when unknown or already revoked. */
  revokeApiToken(id: string, by?: string): Promise<boolean>;
  /** The FHIR facade's tables; absent on stores without them. */
  readonly facade?: FacadeStore;

  getCheckpoint(sourceId: string, key: string): Promise<string | undefined>;
  setCheckpoint(sourceId: string, key: string, value: string): Promise<void>;

  prune(opts: PruneOptions): Promise<PruneResult>;
  stats(): Promise<StoreStats>;
}

/**
 * An error from a store that has reported itself unreachable (the store logged that once): the
 * engine's loops log it at debug rather than once per poll for as long as the outage lasts.
 */
export function whileStoreDown(store: MessageStore, e: unknown): boolean {
  return store.reachable?.() === false && (e as { retryable?: unknown })?.retryable === true;
}
