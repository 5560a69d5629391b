import type convict from 'convict';
import type { CircuitPolicy } from '../delivery/circuit';

/** Keys shared by every sink entry, whatever its type: the delivery policy. */
export const sinkCommonSchema = {
  concurrency: {
    doc: "Deliveries to this sink in flight at once (0 = the sink type's own default, else processing.deliveryWorkers); per ordering key they stay in order whatever this is",
    format: 'nat',
    default: 0,
  },
  deliveryTimeoutMs: {
    doc: "Longest one delivery attempt may take, the sink's own retries included: after it the attempt counts as failed (retried later) and the sink is told through the delivery's signal (0 = no limit)",
    format: 'nat',
    default: 300_000,
  },
  circuitBreaker: {
    failureThreshold: {
      doc: "Retryable failures in a row (no delivery taken in between) that pause the sink: its deliveries wait, unattempted, so an outage does not spend their maxAttempts; after openMs one delivery is tried as a probe (not counted towards maxAttempts either), and the first one taken resumes them all (0 = never pause)",
      format: 'nat',
      default: 5,
    },
    openMs: { doc: 'The first pause before a probe; each failed probe doubles it (a longer Retry-After from the sink wins)', format: 'nat', default: 5_000 },
    maxOpenMs: { doc: 'The longest pause between probes', format: 'nat', default: 30_000 },
  },
  retry: {
    maxAttempts: { doc: 'Attempts before a delivery is dead (probes of a paused sink not counted)', format: 'nat', default: 10 },
    initialDelayMs: { doc: 'First retry delay', format: 'nat', default: 1000 },
    maxDelayMs: { doc: 'Upper bound of the backoff delay', format: 'nat', default: 300_000 },
    multiplier: { doc: 'Backoff multiplier', format: Number, default: 2 },
    jitter: { doc: 'Random fraction added/removed from each delay (0..1)', format: Number, default: 0.2 },
    maxAgeMs: { doc: 'A delivery older than this is dead instead of retried', format: 'nat', default: 7 * 24 * 3600_000 },
  },
} satisfies convict.Schema<any>;

/** Keys shared by every source entry. */
export const sourceCommonSchema = {
  duplicates: {
    policy: {
      doc: 'What to do with a message whose (source, sender, control id) was seen within the window',
      format: ['accept', 'ignore', 'reject'],
      default: 'ignore',
    },
    windowMs: { doc: 'Duplicate window', format: 'nat', default: 24 * 3600_000 },
  },
} satisfies convict.Schema<any>;

/** The engine's own keys. `plugins`, `sources`, `sinks` and `routes` are checked entry by entry. */
export const engineSchema = {
  store: {
    kind: { doc: 'sqlite (embedded) or postgres', format: ['sqlite', 'postgres'], default: 'sqlite', env: 'FERRY_STORE_KIND' },
    path: { doc: 'SQLite file', format: String, default: './data/ferry.db', env: 'FERRY_STORE_PATH' },
    url: { doc: 'PostgreSQL connection URL', format: String, default: '', env: 'FERRY_STORE_URL', sensitive: true },
    schema: {
      doc: "PostgreSQL schema for Ferry's tables, created at start if missing (default: the connection's search_path); instances sharing the work use the same one",
      format: function storeSchema(v: unknown): void {
        if (v !== '' && !(typeof v === 'string' && /^[a-z_][a-z0-9_]*$/i.test(v))) throw new Error('must be a plain SQL identifier (letters, digits, _; not starting with a digit)');
      },
      default: '',
      env: 'FERRY_STORE_SCHEMA',
    },
    queryTimeoutMs: {
      doc: 'PostgreSQL: a statement unanswered this long fails as a lost connection (a network dropping packets would otherwise hang the engine for the TCP timeout); replay, prune and migrations are exempt; 0 = none',
      format: 'nat',
      default: 30_000,
      env: 'FERRY_STORE_QUERY_TIMEOUT_MS',
    },
    groupCommit: {
      maxBatch: { doc: 'Most messages committed in one transaction', format: 'nat', default: 256 },
    },
    retention: {
      deliveredDays: { doc: 'Bodies of delivered/filtered messages kept this many days', format: 'nat', default: 30 },
      deadDays: { doc: 'Bodies of dead/failed messages kept this many days', format: 'nat', default: 90 },
      pruneIntervalMinutes: { doc: 'How often the pruner runs (0 = never)', format: 'nat', default: 60 },
    },
  },
  plugins: { doc: 'Plugins to load: package name or path, or { package, config }', format: Array, default: [] as unknown[] },
  sources: { doc: 'Map of source id -> { type, ... }', format: Object, default: {} },
  sinks: { doc: 'Map of sink id -> { type, ... }', format: Object, default: {} },
  routes: { doc: 'List of { id, from, when, steps, to }', format: Array, default: [] as unknown[] },
  processing: {
    batchSize: { doc: 'Messages one instance claims for processing at a time (processed in arrival order)', format: 'nat', default: 64 },
    validate: {
      doc: "Validate every canonical Bundle against FHIR R4 (structure, cardinality, types, formats, required bindings, invariants) before routing, and again after a route's script changed it; an invalid one fails its message with the OperationOutcome (replayable). false only for trusted input",
      format: Boolean,
      default: true,
      env: 'FERRY_VALIDATE',
    },
    deliveryWorkers: { doc: "Deliveries in flight per sink, for sinks that set no concurrency of their own (the NDJSON file sink's is 256)", format: 'nat', default: 8, env: 'FERRY_DELIVERY_WORKERS' },
    pollIntervalMs: { doc: 'Idle poll of the store for due work', format: 'nat', default: 500 },
    leaseMs: { doc: "How long a claimed message or delivery stays leased to this instance without being renewed (deliveries in flight are renewed every third of it; a dead instance's work goes to the others after it)", format: 'nat', default: 60_000 },
    maxAttempts: {
      doc: 'Times a message may be claimed for processing without its processing ever being recorded (the engine or its worker died each time) before it is failed instead (FERRY_E_INTERNAL_PROCESSING_ATTEMPTS; replayable); 0 = no limit',
      format: 'nat',
      default: 5,
    },
    transformWorkers: {
      doc: 'Worker threads that transform and route messages beside the engine thread (0 = on the engine thread; auto = one fewer than the CPUs, at most 4). Only transforms of plugins named in `plugins` run there',
      format: function transformWorkers(v: unknown): void {
        if (v === 'auto') return;
        if (!Number.isInteger(Number(v)) || Number(v) < 0 || String(v).trim() === '') throw new Error(`must be "auto" or a whole number >= 0, got ${JSON.stringify(v)}`);
      },
      coerce: (v: unknown) => (v === 'auto' ? v : Number(v)),
      default: 'auto' as number | 'auto',
      env: 'FERRY_TRANSFORM_WORKERS',
    },
  },
  admin: {
    enabled: { doc: 'Serve /health, /ready, /metrics and the admin API', format: Boolean, default: true, env: 'FERRY_ADMIN_ENABLED' },
    host: { doc: 'Admin bind address', format: String, default: '127.0.0.1', env: 'FERRY_ADMIN_HOST' },
    port: { doc: 'Admin port', format: 'port', default: 8080, env: 'FERRY_ADMIN_PORT' },
  },
  log: {
    level: { doc: 'error | warn | info | debug', format: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'], default: 'info', env: 'FERRY_LOG_LEVEL' },
    format: { doc: 'json or pretty', format: ['json', 'pretty'], default: 'json', env: 'FERRY_LOG_FORMAT' },
  },
} satisfies convict.Schema<any>;

export interface RetryPolicy {
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
  jitter: number;
  maxAgeMs: number;
}

export interface RouteConfig {
  id: string;
  from: string[];
  when: { messageType: string[]; fhirpath: string };
  steps: StepConfig[];
  to: string[];
  ordering: 'strict' | 'none';
}

export type StepConfig = { validate: true } | { filter: string } | { script: string };

export interface PluginRef {
  package: string;
  config: Record<string, unknown>;
}

export interface EngineConfig {
  store: {
    kind: 'sqlite' | 'postgres';
    path: string;
    url: string;
    /** '' = the connection's search_path. */
    schema: string;
    queryTimeoutMs: number;
    groupCommit: { maxBatch: number };
    retention: { deliveredDays: number; deadDays: number; pruneIntervalMinutes: number };
  };
  plugins: PluginRef[];
  sources: Record<string, { type: string; duplicates: { policy: 'accept' | 'ignore' | 'reject'; windowMs: number }; [k: string]: unknown }>;
  sinks: Record<string, { type: string; retry: RetryPolicy; circuitBreaker: CircuitPolicy; concurrency: number; deliveryTimeoutMs: number; [k: string]: unknown }>;
  routes: RouteConfig[];
  processing: { batchSize: number; validate: boolean; deliveryWorkers: number; pollIntervalMs: number; leaseMs: number; maxAttempts: number; transformWorkers: number | 'auto' };
  admin: { enabled: boolean; host: string; port: number };
  log: { level: string; format: 'json' | 'pretty' };
  /** Validated config of each loaded plugin, by plugin id. */
  pluginConfig: Record<string, Record<string, unknown>>;
  /** The file it came from, if any; relative paths in it resolve against its folder. */
  file?: string;
  baseDir: string;
}
