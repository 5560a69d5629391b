import type { ConfigToken } from '../admin/auth';
import { isFacadeScope, isRole, ROLES } from '../admin/roles';
import { isTokenHash, isTokenId } from '../admin/tokens';
import { isIgnoreField } from '../store/content-hash';
import { umaskFormat } from '../util/file-modes';
import { checkDataQualityFields } from '../pipeline/data-quality';
import { defineSchema, type SchemaType } from './schema-type';

/** A convict format: a list of strings each matching `re`. */
function stringList(name: string, re: RegExp): (v: unknown) => void {
  const f = (v: unknown): void => {
    if (!Array.isArray(v)) throw new Error('must be a list of strings');
    v.forEach((x, i) => {
      if (typeof x !== 'string' || !re.test(x)) throw new Error(`[${i}]: not a valid entry: ${JSON.stringify(x)}`);
    });
  };
  Object.defineProperty(f, 'name', { value: name });
  return f;
}

/** Keys shared by every sink entry, whatever its type: the delivery policy. */
export const sinkCommonSchema = defineSchema({
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
      doc: 'Retryable failures in a row (no delivery taken in between) that pause the sink: its deliveries wait, unattempted, so an outage does not spend their maxAttempts; after openMs one delivery is tried as a probe (not counted towards maxAttempts either), and the first one taken resumes them all (0 = never pause)',
      format: 'nat',
      default: 5,
    },
    openMs: {
      doc: 'The first pause before a probe; each failed probe doubles it (a longer Retry-After from the sink wins)',
      format: 'nat',
      default: 5_000,
    },
    maxOpenMs: { doc: 'The longest pause between probes', format: 'nat', default: 30_000 },
  },
  retry: {
    maxAttempts: {
      doc: 'Attempts before a delivery is dead (probes of a paused sink not counted)',
      format: 'nat',
      default: 10,
    },
    initialDelayMs: { doc: 'First retry delay', format: 'nat', default: 1000 },
    maxDelayMs: { doc: 'Upper bound of the backoff delay', format: 'nat', default: 300_000 },
    multiplier: { doc: 'Backoff multiplier', format: Number, default: 2 },
    jitter: { doc: 'Random fraction added/removed from each delay (0..1)', format: Number, default: 0.2 },
    maxAgeMs: {
      doc: 'A delivery older than this is dead instead of retried',
      format: 'nat',
      default: 7 * 24 * 3600_000,
    },
  },
});

/** Keys shared by every source entry. */
export const sourceCommonSchema = defineSchema({
  duplicates: {
    policy: {
      doc: 'What to do with a duplicate: a message whose (source, sender, control id) AND content (ignoreFields left out) match one stored within the window. The same control id with other content is not a duplicate: it is stored and processed, with a control-id-reused event',
      format: ['accept', 'ignore', 'reject'],
      default: 'ignore',
    },
    windowMs: { doc: 'Duplicate window', format: 'nat', default: 24 * 3600_000 },
    ignoreFields: {
      doc: 'What legitimately changes on a resend, left out of the content comparison: HL7 v2 fields (SEG-n, e.g. MSH-7) and JSON paths (e.g. meta.lastUpdated; arrays on the way are walked)',
      format: function ignoreFields(v: unknown): void {
        if (!Array.isArray(v))
          throw new Error('must be a list of HL7 v2 fields (MSH-7) or JSON paths (meta.lastUpdated)');
        for (const f of v)
          if (!isIgnoreField(f))
            throw new Error(
              `${JSON.stringify(f)} is neither an HL7 v2 field (SEG-n, e.g. MSH-7) nor a JSON path (e.g. meta.lastUpdated)`,
            );
      },
      default: ['MSH-7'] as string[],
    },
  },
  dataQuality: {
    policy: {
      doc: 'What a value the conversion cannot use does (a bad date, a number that is not one, a code outside a required binding, a truncated value, an unmapped segment): warn (recorded with the message, counted, the message delivered) or fail (the message fails as an input error, replayable after a fix; an enhanced-mode HL7 application ACK is AE naming the fields)',
      format: ['warn', 'fail'],
      default: 'warn',
    },
    fields: {
      doc: "Per-location overrides of the policy: { 'PID-7': fail, 'OBX-5': warn, 'PID-11-5': warn, ZPD: warn }; the most specific entry (SEG-n-c, SEG-n, SEG) wins",
      format: checkDataQualityFields,
      default: {} as Record<string, 'warn' | 'fail'>,
    },
  },
});

/** The engine's own keys. `plugins`, `sources`, `sinks` and `routes` are checked entry by entry. */
export const engineSchema = defineSchema({
  store: {
    kind: {
      doc: 'sqlite (embedded) or postgres',
      format: ['sqlite', 'postgres'],
      default: 'sqlite',
      env: 'FERRY_STORE_KIND',
    },
    path: { doc: 'SQLite file', format: String, default: './data/ferry.db', env: 'FERRY_STORE_PATH' },
    url: { doc: 'PostgreSQL connection URL', format: String, default: '', env: 'FERRY_STORE_URL', sensitive: true },
    schema: {
      doc: "PostgreSQL schema for Ferry's tables, created at start if missing (default: the connection's search_path); instances sharing the work use the same one",
      format: function storeSchema(v: unknown): void {
        if (v !== '' && !(typeof v === 'string' && /^[a-z_][a-z0-9_]*$/i.test(v)))
          throw new Error('must be a plain SQL identifier (letters, digits, _; not starting with a digit)');
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
      auditDays: {
        doc: 'Audit trail entries kept this many days (0 = for ever); the pruner deletes older ones',
        format: 'nat',
        default: 6 * 365,
      },
    },
  },
  plugins: {
    doc: 'Plugins to load: package name or path, or { package, config }',
    format: Array,
    default: [] as unknown[],
  },
  sources: { doc: 'Map of source id -> { type, ... }', format: Object, default: {} },
  sinks: { doc: 'Map of sink id -> { type, ... }', format: Object, default: {} },
  routes: { doc: 'List of { id, from, when, steps, to }', format: Array, default: [] as unknown[] },
  processing: {
    batchSize: {
      doc: 'Messages one instance claims for processing at a time (processed in arrival order)',
      format: 'nat',
      default: 64,
    },
    validate: {
      doc: "Validate every canonical Bundle against FHIR R4 (structure, cardinality, types, formats, required bindings, invariants) before routing, and again after a route's script changed it; an invalid one fails its message with the OperationOutcome (replayable). false only for trusted input",
      format: Boolean,
      default: true,
      env: 'FERRY_VALIDATE',
    },
    deliveryWorkers: {
      doc: "Deliveries in flight per sink, for sinks that set no concurrency of their own (the NDJSON file sink's is 256)",
      format: 'nat',
      default: 8,
      env: 'FERRY_DELIVERY_WORKERS',
    },
    pollIntervalMs: { doc: 'Idle poll of the store for due work', format: 'nat', default: 500 },
    lingerMs: {
      doc: "Under a light load (the last claim took less than a whole batch), how long the processor waits before claiming again, so messages arriving meanwhile are processed, recorded and delivered together: fewer store transactions per message, and a feed sending one message at a time has its next message's insert interrupted once per batch rather than after every message. The wait ends early once a whole batch (processing.batchSize) is stored. Adds at most this much to a message's time to delivery, nothing to its ACK. 0 = claim as soon as a message is stored",
      format: 'nat',
      default: 25,
      env: 'FERRY_LINGER_MS',
    },
    leaseMs: {
      doc: "How long a claimed message or delivery stays leased to this instance without being renewed (deliveries in flight are renewed every third of it; a dead instance's work goes to the others after it)",
      format: 'nat',
      default: 60_000,
    },
    heartbeatMs: {
      doc: 'PostgreSQL: how often each instance writes its heartbeat (from a thread of its own: a busy event loop does not stop it), and how often it looks for instances whose heartbeat stopped',
      format: 'nat',
      default: 2_000,
    },
    instanceTimeoutMs: {
      doc: "PostgreSQL: an instance whose last heartbeat is older than this is dead and the others take its leased work at once instead of after leaseMs (a dead instance's work moves within instanceTimeoutMs + heartbeatMs: 8 s by default). SQLite needs none: a starting engine holds the file's lock, so every earlier lease is a dead process's and is released at start",
      format: 'nat',
      default: 6_000,
    },
    maxAttempts: {
      doc: 'Times a message may be claimed for processing without its processing ever being recorded (the engine or its worker died each time) before it is failed instead (FERRY_E_INTERNAL_PROCESSING_ATTEMPTS; replayable); 0 = no limit',
      format: 'nat',
      default: 5,
    },
    transformWorkers: {
      doc: 'Worker threads that transform and route messages beside the engine thread (0 = on the engine thread; auto = one fewer than the CPUs, at most 4). Only transforms of plugins named in `plugins` run there',
      format: function transformWorkers(v: unknown): void {
        if (v === 'auto') return;
        if (!Number.isInteger(Number(v)) || Number(v) < 0 || String(v).trim() === '')
          throw new Error(`must be "auto" or a whole number >= 0, got ${JSON.stringify(v)}`);
      },
      coerce: (v: unknown) => (v === 'auto' ? v : Number(v)),
      default: 'auto' as number | 'auto',
      env: 'FERRY_TRANSFORM_WORKERS',
    },
    heapGrowthPercent: {
      doc: "How far each V8 heap of the engine's process (the engine thread's and every transform worker's) may grow past what it held live after its last full garbage collection before the next one starts, in percent. V8's own choice (0) lets a heap grow up to 4x under a steady load, so the process's memory swings by a quarter and more between collections; 50 keeps it within a few percent at no cost measurable beside the noise. Process-wide (a V8 flag), set when the engine starts",
      format: 'nat',
      default: 50,
      env: 'FERRY_HEAP_GROWTH_PERCENT',
    },
  },
  admin: {
    enabled: {
      doc: 'Serve /health, /ready, /metrics and the admin API',
      format: Boolean,
      default: true,
      env: 'FERRY_ADMIN_ENABLED',
    },
    host: { doc: 'Admin bind address', format: String, default: '127.0.0.1', env: 'FERRY_ADMIN_HOST' },
    port: { doc: 'Admin port', format: 'port', default: 8080, env: 'FERRY_ADMIN_PORT' },
    allowedHosts: {
      doc: "Host header names served besides the bind address and localhost / 127.0.0.1 / [::1] (DNS rebinding defence); bound to 0.0.0.0 or ::, also this machine's host name and addresses; '*' = any",
      format: stringList('allowedHosts', /^(\*|[A-Za-z0-9.:_[\]-]+)$/),
      default: [] as string[],
    },
    allowedOrigins: {
      doc: 'Browser origins (scheme://host[:port]) allowed to call the API besides the admin server itself; a request with any other Origin header is refused',
      format: stringList('allowedOrigins', /^https?:\/\/[A-Za-z0-9.:_[\]-]+$/),
      default: [] as string[],
    },
    trustProxy: {
      doc: "Addresses or CIDRs of reverse proxies in front of the admin API whose X-Forwarded-For is believed (the client's address then goes to the audit trail and the failed-auth limit); empty: none is",
      format: stringList('trustProxy', /^[0-9A-Fa-f.:]+(\/\d{1,3})?$/),
      default: [] as string[],
    },
    metricsPublic: {
      doc: 'Serve /metrics without authentication (Prometheus scrapers on a trusted network); off: a viewer token is needed',
      format: Boolean,
      default: false,
    },
    bodyLimit: { doc: 'Largest request body in bytes (413 above)', format: 'nat', default: 64 * 1024 },
    maxListLimit: {
      doc: 'Largest `limit` a list query (messages, audit) may ask for (400 above)',
      format: 'nat',
      default: 1000,
    },
    requestTimeoutMs: {
      doc: 'A request (headers and body) not received within this is answered 408 and closed (slow clients)',
      format: 'nat',
      default: 30_000,
    },
    auth: {
      tokens: {
        doc: 'API tokens kept in the config, as hashes only: [{ id, name, roles, hash, expires? }] (`ferry token create --config-entry` prints one); more are kept in the store (`ferry token create`)',
        format: function adminTokens(v: unknown): void {
          if (!Array.isArray(v)) throw new Error('must be a list of { id, name, roles, hash, expires? }');
          const seen = new Set<string>();
          v.forEach((t, i) => {
            const at = `[${i}]`;
            if (!t || typeof t !== 'object' || Array.isArray(t))
              throw new Error(`${at}: must be { id, name, roles, hash, expires? }`);
            const { id, name, roles, hash, expires, scopes, ...rest } = t as Record<string, unknown>;
            for (const k of Object.keys(rest))
              throw new Error(`${at}.${k}: unknown key (expected id, name, roles, hash, expires, scopes)`);
            if (scopes !== undefined && (!Array.isArray(scopes) || !scopes.every(isFacadeScope)))
              throw new Error(
                `${at}.scopes: a list of connection:<id>:read or connection:<id>:write (id * = every connection)`,
              );
            if (!isTokenId(id))
              throw new Error(`${at}.id: 4 to 40 lower-case letters and digits (the part after "ferry_" in the token)`);
            if (seen.has(id)) throw new Error(`${at}.id: duplicate token id ${id}`);
            seen.add(id);
            if (typeof name !== 'string' || !name.trim()) throw new Error(`${at}.name: required`);
            if (!Array.isArray(roles) || !roles.length || !roles.every(isRole))
              throw new Error(`${at}.roles: a list of ${ROLES.join(', ')}`);
            if (!isTokenHash(hash))
              throw new Error(
                `${at}.hash: must be a scrypt$N$r$p$salt$hash string (never the token itself; see ferry token create --config-entry)`,
              );
            if (expires !== undefined && (typeof expires !== 'string' || Number.isNaN(Date.parse(expires))))
              throw new Error(`${at}.expires: an ISO 8601 time`);
          });
        },
        default: [] as ConfigToken[],
      },
      oidc: {
        issuer: {
          doc: "OIDC/JWT bearer tokens: the identity provider's issuer (`iss`); '' = off",
          format: String,
          default: '',
        },
        audience: { doc: 'Required `aud` (the client id Ferry is registered as)', format: String, default: '' },
        jwksUrl: {
          doc: "The identity provider's JWKS URL (https; http only on localhost)",
          format: String,
          default: '',
        },
        rolesClaim: {
          doc: 'Claim with the roles or groups (dot path, e.g. realm_access.roles; a list or a space-separated string)',
          format: String,
          default: 'roles',
        },
        roleMap: {
          doc: 'Claim value -> Ferry role (viewer, operator, phi-reader, admin); empty: the claim holds Ferry role names',
          format: function roleMap(v: unknown): void {
            if (!v || typeof v !== 'object' || Array.isArray(v))
              throw new Error('must be a mapping of claim value -> role');
            for (const [k, r] of Object.entries(v))
              if (!isRole(r)) throw new Error(`${k}: must be one of ${ROLES.join(', ')}`);
          },
          default: {} as Record<string, string>,
        },
        nameClaim: { doc: 'Claim naming the user in the audit trail', format: String, default: 'preferred_username' },
        scopesClaim: {
          doc: 'Claim with the FHIR facade scopes (connection:<id>:read|write; a list or a space-separated string)',
          format: String,
          default: 'scope',
        },
        algorithms: {
          doc: 'Accepted JWS algorithms',
          format: stringList('algorithms', /^(RS|PS|ES)(256|384|512)$|^EdDSA$/),
          default: ['RS256', 'PS256', 'ES256', 'EdDSA'],
        },
        clockToleranceSec: { doc: 'Clock skew allowed on exp / nbf', format: 'nat', default: 30 },
        console: {
          clientId: {
            doc: "The console's \"Sign in with <provider>\" (authorization code + PKCE): its client id at the identity provider; '' = no such button",
            format: String,
            default: '',
          },
          clientSecret: {
            doc: 'Client secret, for a confidential client (or clientSecret_FILE); sent by the admin server to the token endpoint only, never to the page',
            format: String,
            default: '',
            sensitive: true,
          },
          scopes: {
            doc: 'Scopes requested (openid is always included)',
            format: stringList('scopes', /^[\x21\x23-\x5b\x5d-\x7e]+$/),
            default: ['openid', 'profile'],
          },
          bearer: {
            doc: 'Which token the page sends as its bearer: id_token (its aud is clientId, so admin.auth.oidc.audience must be clientId) or access_token (must be a JWT this admin API accepts)',
            format: ['id_token', 'access_token'],
            default: 'id_token',
          },
          displayName: {
            doc: 'The provider\'s name on the button ("Sign in with <displayName>")',
            format: String,
            default: 'single sign-on',
          },
          redirectUri: {
            doc: "Where the provider sends the browser back (registered at the provider); '' = <this admin server's origin>/console",
            format: String,
            default: '',
          },
        },
      },
      failedAuth: {
        maxFailures: {
          doc: 'Failed authentications from one address within windowMs before it is refused (429) for windowMs (0 = no limit)',
          format: 'nat',
          default: 10,
        },
        windowMs: {
          doc: 'The window of maxFailures, and how long an address is refused after it',
          format: 'nat',
          default: 60_000,
        },
      },
      tokenCacheMs: {
        doc: "How long a checked API token's secret is remembered (its scrypt check skipped; revocation and expiry still apply at once)",
        format: 'nat',
        default: 300_000,
      },
    },
    tls: {
      cert: {
        doc: 'PEM certificate chain, or a path to it: the admin API is served over HTTPS when cert and key are set',
        format: String,
        default: '',
      },
      key: { doc: 'PEM private key, or a path to it (or key_FILE)', format: String, default: '', sensitive: true },
      passphrase: { doc: 'Passphrase of the key (or passphrase_FILE)', format: String, default: '', sensitive: true },
      ca: {
        doc: 'PEM CA bundle, or a path: client certificates must be signed by it when requestCert is on',
        format: String,
        default: '',
      },
      requestCert: {
        doc: 'Mutual TLS: require a client certificate signed by `ca` (a bearer token is still required)',
        format: Boolean,
        default: false,
      },
    },
  },
  api: {
    enabled: {
      doc: 'Serve the FHIR R4 facade (`/fhir/{connection}/...`) on its own listener',
      format: Boolean,
      default: false,
      env: 'FERRY_API_ENABLED',
    },
    host: { doc: 'Facade bind address', format: String, default: '127.0.0.1', env: 'FERRY_API_HOST' },
    port: { doc: 'Facade port (0 = any free port)', format: 'port', default: 8090, env: 'FERRY_API_PORT' },
    publicUrl: {
      doc: "Base URL the facade's links (Bundle.link next, fullUrl) are built on, e.g. https://api.example.org; '' = from the request's Host",
      format: String,
      default: '',
    },
    allowedHosts: {
      doc: "Host header names the facade serves besides its bind address, localhost / 127.0.0.1 / [::1] and publicUrl's host (DNS rebinding defence, others 421); bound to 0.0.0.0 or ::, also this machine's names and addresses; '*' = any",
      format: stringList('api.allowedHosts', /^(\*|[A-Za-z0-9.:_[\]-]+)$/),
      default: [] as string[],
    },
    cors: {
      origins: {
        doc: 'Browser origins (scheme://host[:port]) allowed to call the facade cross-origin (CORS answers and preflights for them); a request with any other Origin header is refused 403',
        format: stringList('api.cors.origins', /^https?:\/\/[A-Za-z0-9.:_[\]-]+$/),
        default: [] as string[],
      },
    },
    bodyLimit: { doc: 'Largest request body in bytes (413 above)', format: 'nat', default: 1024 * 1024 },
    requestTimeoutMs: {
      doc: 'A request (headers and body) not received within this is answered 408 and closed',
      format: 'nat',
      default: 30_000,
    },
    vendorTimeoutMs: {
      doc: 'Longest one facade request may wait on the vendor (then 504 with an OperationOutcome)',
      format: 'nat',
      default: 60_000,
    },
    defaultCount: { doc: 'Search page size when _count is absent', format: 'nat', default: 20 },
    maxCount: { doc: 'Largest _count honoured', format: 'nat', default: 200 },
    rateLimit: {
      qps: {
        doc: "Requests per second one client (token or OIDC subject) may make per connection, so one application cannot spend a vendor's quota (0 = no limit); over it: 429 with Retry-After",
        format: Number,
        default: 10,
      },
      burst: { doc: 'Bucket size (0 = same as qps)', format: 'nat', default: 20 },
    },
    idempotencyHours: { doc: 'How long an Idempotency-Key and its answer are kept', format: 'nat', default: 24 },
    cursorSecret: {
      doc: "Key that signs paging cursors (so a client cannot forge a vendor URL), or cursorSecret_FILE; '' = a random key kept in the store, shared by every instance on it and kept across restarts",
      format: String,
      default: '',
      sensitive: true,
    },
    tls: {
      cert: {
        doc: 'PEM certificate chain, or a path to it: the facade is served over HTTPS when cert and key are set',
        format: String,
        default: '',
      },
      key: { doc: 'PEM private key, or a path to it (or key_FILE)', format: String, default: '', sensitive: true },
      passphrase: { doc: 'Passphrase of the key (or passphrase_FILE)', format: String, default: '', sensitive: true },
      ca: {
        doc: 'PEM CA bundle, or a path: client certificates must be signed by it when requestCert is on',
        format: String,
        default: '',
      },
      requestCert: {
        doc: 'Mutual TLS: require a client certificate signed by `ca` (a bearer token is still required)',
        format: Boolean,
        default: false,
      },
    },
  },
  log: {
    level: {
      doc: 'error | warn | info | debug',
      format: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'],
      default: 'info',
      env: 'FERRY_LOG_LEVEL',
    },
    format: { doc: 'json or pretty', format: ['json', 'pretty'], default: 'json', env: 'FERRY_LOG_FORMAT' },
  },
  files: {
    umask: {
      doc: 'Permission bits taken from every file and folder Ferry creates (the SQLite store and its WAL, file-sink output, file-source done/error files, the pid file), as octal: 0077 = files 0600, folders 0700 (only the engine account); 0027 = group may read. `ferry start` also sets it as the process umask',
      format: umaskFormat,
      default: '0077',
      env: 'FERRY_UMASK',
    },
  },
});

type EngineSchemaConfig = SchemaType<typeof engineSchema>;
/** The keys every sink entry has (sinkCommonSchema), whatever its type. */
export type SinkCommonConfig = SchemaType<typeof sinkCommonSchema>;
/** The keys every source entry has (sourceCommonSchema), whatever its type. */
export type SourceCommonConfig = SchemaType<typeof sourceCommonSchema>;
export type RetryPolicy = SinkCommonConfig['retry'];
/** A sink's circuit breaker (`sinks.<id>.circuitBreaker`). */
export type CircuitPolicy = SinkCommonConfig['circuitBreaker'];
/** `sources.<id>.dataQuality`: what a value the conversion cannot use does. */
export type DataQualityPolicy = SourceCommonConfig['dataQuality'];
export type StoreConfig = EngineSchemaConfig['store'];
export type ProcessingConfig = EngineSchemaConfig['processing'];
export type AdminConfig = EngineSchemaConfig['admin'];
export type AdminTlsConfig = AdminConfig['tls'];
export type AuthConfig = AdminConfig['auth'];
export type OidcConfig = AuthConfig['oidc'];
export type OidcConsoleConfig = OidcConfig['console'];
export type ApiConfig = EngineSchemaConfig['api'];
export type LogConfig = EngineSchemaConfig['log'];

export interface RouteConfig {
  id: string;
  from: string[];
  when: { messageType: string[]; fhirpath: string };
  steps: StepConfig[];
  to: string[];
  ordering: 'strict' | 'none';
}

export type StepConfig = { validate: true } | { filter: string } | { script: string; timeoutMs?: number };

/**
 * A route test (`tests:` in the config, run by `ferry validate-config --test`): a message file
 * (relative to the config's folder) run through the routes, touching no store or sink; what is
 * given in `expect` must hold -- exactly these routes match, exactly these sinks get a Bundle,
 * and each FHIRPath is true of every Bundle a sink gets (of the converted Bundle when none does).
 */
export interface RouteTest {
  name: string;
  message: string;
  source?: string;
  contentType?: string;
  expect: { routes?: string[]; sinks?: string[]; fhirpath?: string[] };
}

export interface PluginRef {
  package: string;
  config: Record<string, unknown>;
}

const PATH_KEY = /^([A-Z][A-Za-z]+|\*)\.(read|search|create|update|book|cancel|checkin|\*)$/;

/** `connections.<id>.facade`: the facade's policy for one connection. */
export const facadeConnectionSchema = defineSchema({
  enabled: {
    doc: 'Serve this connection through the FHIR facade (api.enabled must be on too)',
    format: Boolean,
    default: true,
  },
  cache: {
    ttlSeconds: {
      doc: 'Serve a read from memory when the copy is younger than this (0 = always ask the vendor)',
      format: 'nat',
      default: 0,
    },
    storeMaxAgeSeconds: {
      doc: 'Serve a read from the store (the last canonical copy the facade read or wrote, or a source bound to this connection delivered) when it is fresher than this (0 = off)',
      format: 'nat',
      default: 0,
    },
    maxEntries: { doc: 'Reads kept in memory for ttlSeconds', format: 'nat', default: 10_000 },
  },
  paths: {
    doc: 'Decision rule overrides: { "Patient.read": rest, "Appointment.*": rest } -- which vendor API (fhir, rest) serves a type and interaction (read, search, create, update, book, cancel, checkin); the default table is in the README',
    format: function facadePaths(v: unknown): void {
      if (!v || typeof v !== 'object' || Array.isArray(v))
        throw new Error('must be a mapping of "Type.interaction" -> path');
      for (const [k, path] of Object.entries(v)) {
        if (!PATH_KEY.test(k))
          throw new Error(
            `${k}: must be Type.interaction (interaction: read, search, create, update, book, cancel, checkin or *), e.g. Patient.read`,
          );
        if (typeof path !== 'string' || !/^[a-z][a-z0-9-]*$/.test(path))
          throw new Error(`${k}: must name a path such as fhir or rest`);
      }
    },
    default: {} as Record<string, string>,
  },
  identity: {
    linkSystems: {
      doc: 'Identifier systems that link a patient across connections: the first of them the patient has (system|value) must equal the one another connection recorded; [] = its MRN (the identifier typed v2-0203 MR)',
      format: function linkSystems(v: unknown): void {
        if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !x.trim()))
          throw new Error('must be a list of identifier systems (URIs)');
      },
      default: [] as string[],
    },
    linkedIdentifiers: {
      doc: "Patient reads add one identifier per linked patient at another connection the client may read (system urn:ferry:connection:<id>, value its id there); off: the vendor's identifiers only",
      format: Boolean,
      default: false,
    },
  },
  rateLimit: {
    qps: { doc: 'Requests per second per client on this connection (0 = api.rateLimit)', format: Number, default: 0 },
    burst: { doc: 'Bucket size (0 = same as qps)', format: 'nat', default: 0 },
  },
});

/** One entry of `routes:` (its steps are parsed one by one: see parseStep). */
export const routeSchema = defineSchema({
  id: { doc: 'Route id', format: String, default: '' },
  from: { doc: 'Source ids', format: Array, default: [] as string[] },
  when: {
    messageType: { doc: 'Message type globs (ADT^A0*)', format: Array, default: [] as string[] },
    fhirpath: { doc: 'FHIRPath predicate on the canonical Bundle', format: String, default: '' },
  },
  steps: { doc: 'validate | filter: <fhirpath> | script: <module>', format: Array, default: [] as unknown[] },
  to: { doc: 'Sink ids', format: Array, default: [] as string[] },
  ordering: {
    doc: 'strict: per ordering key, in arrival order; none: as fast as possible',
    format: ['strict', 'none'],
    default: 'strict',
  },
});

/** A connection's facade policy (`connections.<id>.facade`). */
export type FacadeConnectionConfig = SchemaType<typeof facadeConnectionSchema>;

/** One entry of `connections:`. */
export interface ConnectionEntry {
  kind: string;
  /** The kind's keys, validated against its connection schema (credentials, base URL...). */
  config: Record<string, unknown>;
  facade: FacadeConnectionConfig;
}

/**
 * A source entry: its type's keys (validated against its schema) and the common ones; `connection`:
 * the `connections:` entry it names (its keys are merged in already; the source itself does not see it).
 */
export type SourceEntryConfig = SourceCommonConfig & { type: string; connection?: string; [k: string]: unknown };
/** A sink entry: its type's keys (validated against its schema) and the delivery policy. */
export type SinkEntryConfig = SinkCommonConfig & { type: string; [k: string]: unknown };

/** The validated config: the engine schema's keys, and the entries checked one by one. */
export interface EngineConfig extends Omit<EngineSchemaConfig, 'plugins' | 'sources' | 'sinks' | 'routes'> {
  plugins: PluginRef[];
  sources: Record<string, SourceEntryConfig>;
  sinks: Record<string, SinkEntryConfig>;
  routes: RouteConfig[];
  /** Route tests (`ferry validate-config --test`). */
  tests: RouteTest[];
  /** Vendor connections (credentials defined once), by id. */
  connections: Record<string, ConnectionEntry>;
  /** Deprecations and other non-fatal remarks, by path (logged at start, printed by validate-config). */
  warnings: { path: string; message: string }[];
  /** Validated config of each loaded plugin, by plugin id. */
  pluginConfig: Record<string, Record<string, unknown>>;
  /** The file it came from, if any; relative paths in it resolve against its folder. */
  file?: string;
  baseDir: string;
}
