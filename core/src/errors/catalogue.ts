/**
 * The error catalogue: every Ferry error code, declared once, with what decides how it is handled
 * at the edges and what a user can do about it. `new FerryError(code, …)` and the helpers
 * (`configError`, `inputError`, …) take only codes listed here (a misspelt or unlisted code does
 * not compile), and take their kind and retryable flag from the entry unless the call says
 * otherwise. Codes are written without the `FERRY_E_` prefix every thrown code carries.
 *
 * - kind: config (fix the config), input (the input is unusable; retrying fails the same way),
 *   transient (try again later), internal (a bug).
 * - retryable: whether the engine retries (a delivery, a claim) or a sender should resend.
 * - http: the status an HTTP edge (the HTTP source, the admin API, the FHIR facade) answers with.
 * - ack: the HL7 v2 acknowledgment code a receiving source answers with (AR reject, AE error).
 *
 * docs/errors.md is generated from this file (`npm run errors:doc`) with the files each code is
 * thrown in; `catalogue.test.ts` fails when it is stale or a source throws an unlisted code.
 * Plugins declare their own codes with `defineErrors` (see PLUGINS.md).
 */

export const ErrorKind = {
  config: 'config',
  input: 'input',
  transient: 'transient',
  internal: 'internal',
} as const;
export type ErrorKind = (typeof ErrorKind)[keyof typeof ErrorKind];

/** The HL7 v2 acknowledgment code for an error: AR (rejected; do not resend) or AE (error; resend). */
export type ErrorAck = 'AR' | 'AE';

export interface ErrorSpec {
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  /** HTTP status an HTTP edge answers with when this error ends a request. */
  readonly http: number;
  /** HL7 v2 ACK code a receiving source answers with. */
  readonly ack: ErrorAck;
  /** One line: what happened and what to do. */
  readonly description: string;
}

/** Defaults by kind; an entry overrides them where the code needs another status. */
export const KIND_DEFAULTS: Readonly<Record<ErrorKind, Omit<ErrorSpec, 'kind' | 'description'>>> = {
  config: { retryable: false, http: 500, ack: 'AE' },
  input: { retryable: false, http: 400, ack: 'AR' },
  transient: { retryable: true, http: 503, ack: 'AE' },
  internal: { retryable: false, http: 500, ack: 'AE' },
};

type SpecOptions = Partial<Pick<ErrorSpec, 'retryable' | 'http' | 'ack'>>;

/** An entry of kind `kind` (defaults from KIND_DEFAULTS). */
export function errorSpec(kind: ErrorKind, description: string, o: SpecOptions = {}): ErrorSpec {
  const given = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return Object.freeze({ kind, ...KIND_DEFAULTS[kind], ...given, description });
}
const config = (d: string, o?: SpecOptions) => errorSpec('config', d, o);
const input = (d: string, o?: SpecOptions) => errorSpec('input', d, o);
const transient = (d: string, o?: SpecOptions) => errorSpec('transient', d, o);
const internal = (d: string, o?: SpecOptions) => errorSpec('internal', d, o);

/** Every code of the core, the bundled plugins and packages (keep each group sorted). */
export const ERROR_CATALOGUE = {
  // CONFIG_*: A setting is wrong or missing: the engine, or the part named, does not start until the config is fixed.
  CONFIG_ADMIN_OIDC: config(
    'admin.auth.oidc is unusable (jwksUrl must be https, http only on localhost): fix the OIDC settings.',
  ),
  CONFIG_ADMIN_TLS: config(
    'admin.tls is incomplete or a PEM file cannot be read: give both cert and key (and ca with requestCert), readable by Ferry.',
  ),
  CONFIG_API_TLS: config(
    'api.tls (the FHIR facade) is incomplete or a PEM file cannot be read: give both cert and key (and ca with requestCert).',
  ),
  CONFIG_ATHENA_NOT_SUBSCRIBED: config(
    'The athena event feed is not subscribed and autoSubscribe is off: subscribe it in athena or set autoSubscribe: true.',
  ),
  CONFIG_ATHENA_NO_CREDENTIALS: config(
    'athena clientId/clientSecret are missing: set them in the connection, as *_FILE paths, or ATHENA_CLIENT_ID/ATHENA_CLIENT_SECRET.',
  ),
  CONFIG_ATHENA_PRACTICE: config("athena practiceId is not a number (e.g. 195900): fix the connection's practiceId."),
  CONFIG_ATHENA_SECRET_FILE: config(
    'A *_FILE secret of the athena connection cannot be read: check the path and its permissions.',
  ),
  CONFIG_BASE_URL: config('A vendor connection has no baseUrl: set the FHIR base URL of the connection.'),
  CONFIG_BULK_GROUP: config('A Group bulk export has no groupId: set groupId on the bulk source.'),
  CONFIG_BULK_SCOPES: config(
    'A bulk export source lacks the system/<Type>.read scopes it exports: add them to auth.scopes.',
  ),
  CONFIG_CLIENT_ID: config('A vendor connection has no clientId: set auth.clientId.'),
  CONFIG_CLIENT_SECRET: config('client_secret_basic needs auth.clientSecret (or its *_FILE / env form): set it.'),
  CONFIG_FACADE_CONFIG: config(
    'The FHIR facade (api:) config has problems, listed in the message: fix each path named.',
  ),
  CONFIG_HL7V2_PROFILE: config(
    'An HL7 v2 output profile is invalid (the message names the field): fix the profile file.',
  ),
  CONFIG_INVALID: config(
    'The config file has problems, each listed with its path: fix them and start or reload again.',
  ),
  CONFIG_MLLP_LISTEN: config(
    'The MLLP source cannot listen on its host:port (in use, or not allowed): change listen or free the port.',
  ),
  CONFIG_MLLP_TLS: config(
    'MLLP tls needs both cert and key (PEM text, a path, or cert_FILE / key_FILE): complete the tls block.',
  ),
  CONFIG_MLLP_TLS_FILE: config(
    'A TLS file of the MLLP source or sink cannot be read: check the path and its permissions.',
  ),
  CONFIG_NO_FILE: config('No config found: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml.'),
  CONFIG_PLUGIN_INVALID: config(
    'A plugin module does not export a valid Ferry plugin (id, apiVersion, register): fix or update the plugin.',
  ),
  CONFIG_PLUGIN_NOT_FOUND: config('A configured plugin cannot be found: install it (npm) or fix its path in plugins:.'),
  CONFIG_PLUGIN_REGISTER_FAILED: config(
    "A plugin's register() threw: read the message, fix the plugin's config or the plugin.",
  ),
  CONFIG_POLL_RESOURCES: config(
    'A vendor poll source lists resource types it cannot poll (listed by path): fix sources.<id>.resources.',
  ),
  CONFIG_SCOPE_WILDCARD: config('A vendor connection asks for wildcard scopes: list every scope explicitly.'),
  CONFIG_SCRIPT_EXPORT: config(
    'A script step does not export a function (bundle, message, ferry) => bundle | null: fix the script.',
  ),
  CONFIG_SCRIPT_LOAD: config("A script step's file failed to load (syntax error, missing file): fix the script file."),
  CONFIG_SIGNING_KEY: config(
    'private_key_jwt needs auth.privateKeyFile, auth.privateKey or auth.privateKeyEnv: set one.',
  ),
  CONFIG_SINK_AUTH: config(
    "A sink's auth block is incomplete (e.g. basic auth without username): complete sinks.<id>.auth.",
  ),
  CONFIG_SINK_CONFIG: config('A sink setting is invalid (the message names it): fix sinks.<id>.'),
  CONFIG_SINK_FORMAT: config(
    "A sink's format is written by no loaded plugin: load the plugin that writes it or change format.",
  ),
  CONFIG_SINK_GONE: config(
    "A delivery's sink was removed from the config: it is retried and succeeds if the sink comes back; otherwise cancel or replay it.",
    { retryable: true },
  ),
  CONFIG_SINK_URL: config('A sink has no usable URL (baseUrl/url required): set it.'),
  CONFIG_SOURCE_AUDIT: config(
    'This engine gives sources no access to the audit trail: remove the audit source or run it where the store allows.',
  ),
  CONFIG_SOURCE_DIR: config(
    'A file source has no dir (or it cannot be used): set sources.<id>.dir to a readable directory.',
  ),
  CONFIG_SOURCE_TLS: config(
    "An HTTP source's tls block is incomplete or unreadable (cert+key, ca with requestCert): fix sources.<id>.tls.",
  ),
  CONFIG_STORE_IN_USE: config(
    'Another Ferry engine holds this SQLite store: run one engine per SQLite file, or use PostgreSQL for several.',
  ),
  CONFIG_STORE_KIND: config('store.kind is not sqlite or postgres: fix it.'),
  CONFIG_STORE_OPEN: config(
    'The SQLite store cannot be opened (path, permissions): check store.path and its directory.',
  ),
  CONFIG_STORE_SCHEMA: config(
    'store.schema is not a valid PostgreSQL schema name: use letters, digits and underscores.',
  ),
  CONFIG_STORE_SCHEMA_NEWER: config(
    'The store was migrated by a newer Ferry: upgrade Ferry (never downgrade over a migrated store).',
  ),
  CONFIG_STORE_URL: config('store.url is required when store.kind is postgres: set it.'),
  CONFIG_TOKEN_URL_NOT_FOUND: config(
    "No token endpoint in the server's .well-known/smart-configuration nor CapabilityStatement: set auth.tokenUrl.",
  ),
  CONFIG_WRITEBACK_TYPES: config(
    'A write-back sink lists resource types the vendor does not accept: fix sinks.<id>.resourceTypes.',
  ),

  // INPUT_*: The input (a message, a request, a command line) cannot be used: retrying the same input fails the same way (HL7 AR, HTTP 4xx).
  INPUT_ARGUMENTS: input("The command's arguments are wrong (the message says which): see ferry <command> --help."),
  INPUT_ATHENA_BAD_DATE: input('An athena date is not MM/DD/YYYY: check the athena record.'),
  INPUT_ATHENA_BAD_DATETIME: input('An athena datetime is not MM/DD/YYYY HH:mm: check the athena record.'),
  INPUT_ATHENA_BAD_ENVELOPE: input(
    'An athena message must be { practiceid, kind, record, department? }: check what produced it.',
  ),
  INPUT_ATHENA_BAD_TIMEZONE: input("Unknown time zone on the athena department: fix the department's time zone."),
  INPUT_ATHENA_FHIR_BAD_ENVELOPE: input(
    'An athena FHIR message must be { practiceid, resource }: check what produced it.',
  ),
  INPUT_ATHENA_FHIR_INVALID: input(
    'The canonical resource from athena FHIR fails FHIR validation (issues in details): check the athena record.',
  ),
  INPUT_ATHENA_FHIR_NOT_JSON: input('The athena FHIR message body is not JSON: check what produced it.'),
  INPUT_ATHENA_FHIR_NO_ID: input('An athena FHIR resource has no resourceType or id: check the athena record.'),
  INPUT_ATHENA_NO_VACCINE: input(
    'An athena chart vaccine has neither a description nor a CVX code: check the athena record.',
  ),
  INPUT_ATHENA_NOT_JSON: input('The athena message body is not JSON: check what produced it.'),
  INPUT_ATHENA_NO_ID: input('An athena record lacks its id: check the athena record.'),
  INPUT_ATHENA_NO_MEDICATION: input('An athena medication has neither a name nor an RxNorm code: fix it in athena.'),
  INPUT_ATHENA_NO_PATIENT: input('An athena chart record has no patientid: check the athena record.'),
  INPUT_ATHENA_NO_TIMEZONE: input(
    "A local athena datetime needs the department's time zone: include department in the message or configure it.",
  ),
  INPUT_ATHENA_UNKNOWN_KIND: input('Unknown athena record kind: only the kinds the plugin documents can be converted.'),
  INPUT_AUDIT_ENTRY: input('An audit entry needs principal, action and result: a caller bug; report it.'),
  INPUT_AUDIT_FILTER: input('An audit query filter is not a time (ISO 8601 or epoch ms): fix the query.'),
  INPUT_AUTH_RATE_LIMITED: input(
    'Too many failed sign-ins from this client: wait Retry-After seconds, then use valid credentials.',
    { http: 429 },
  ),
  INPUT_BAD_BATCH: input(
    'The file cannot be split into messages (bad batch envelope): fix the file; it is moved to the error directory.',
  ),
  INPUT_BAD_JSON: input('The file given is not JSON: fix the file.'),
  INPUT_BAD_MESSAGE: input(
    'The file holds a message Ferry cannot read (reason in the message): fix it; the file is moved to the error directory.',
  ),
  INPUT_BAD_PROFILE: input('The profile file is not YAML/JSON: fix the file.'),
  INPUT_BODY_MISSING: input('The stored message body is gone (pruned): it cannot be processed or replayed.'),
  INPUT_CONFIG_ACTION: input('Unknown ferry config action: use history or diff <a> <b>.'),
  INPUT_CONFIG_VERSION: input('ferry config diff needs two version numbers (e.g. 3 4): see ferry config history.'),
  INPUT_CONFIG_VERSIONS: input(
    'This store keeps no config versions: use a store that records them (SQLite file or PostgreSQL).',
  ),
  INPUT_DATA_QUALITY: input(
    "Values the conversion cannot use, failed by the source's dataQuality policy: fix the sender, or relax dataQuality.",
  ),
  INPUT_DUPLICATE_REJECTED: input(
    'A duplicate message was refused (duplicates: reject): the first copy is stored; nothing to do unless it is not a real duplicate.',
    { http: 409 },
  ),
  INPUT_EMPTY_BATCH: input('The file holds no message: nothing stored; check the sender.'),
  INPUT_EMPTY_MESSAGE: input('The input file is empty: give a file with a message.'),
  INPUT_FACADE_BODY: input(
    "The request body must be a FHIR resource of the URL's type (application/fhir+json): fix the request.",
  ),
  INPUT_FACADE_CONFLICT: input(
    'The vendor reports a conflict (slot taken, version conflict): read again and retry with current data.',
    { http: 409 },
  ),
  INPUT_FACADE_CURSOR: input(
    '_cursor is not a cursor of this connection and type: page with the links the facade returned.',
  ),
  INPUT_FACADE_DUPLICATE: input('The vendor already has this patient: search for it instead of creating it.', {
    http: 409,
  }),
  INPUT_FACADE_ID: input('The id in the URL is not a FHIR id: fix the request.'),
  INPUT_FACADE_IDEMPOTENCY_KEY: input('Idempotency-Key must be 1 to 200 visible ASCII characters: fix the header.'),
  INPUT_FACADE_INVALID: input('The vendor refused the content or parameters (missing or bad field): fix the request.', {
    http: 422,
  }),
  INPUT_FACADE_NOT_FOUND: input('Not found at the vendor, or not an id of this connection: check the id.', {
    http: 404,
  }),
  INPUT_FACADE_NOT_SUPPORTED: input(
    'The interaction is not supported on this connection: see GET /fhir/<connection>/metadata.',
    { http: 501 },
  ),
  INPUT_FACADE_OPERATION: input("Unknown facade operation: see the connection's CapabilityStatement."),
  INPUT_FACADE_TIMEOUT: input('The vendor did not answer within the facade timeout: retry later.', { http: 504 }),
  INPUT_FACADE_TYPE: input('The URL names no FHIR resource type: fix the request.'),
  INPUT_FACADE_UNRESOLVED: input(
    'A resource the request names (the patient to link) is not found at its connection, or the connection is not served: check the connection and id.',
    { http: 422 },
  ),
  INPUT_FHIR_INVALID: input(
    "The converted Bundle is not valid FHIR R4 (issues in details): fix the sender or the route's steps, then replay.",
  ),
  INPUT_FHIR_JSON_PARSE: input('The message is not JSON: fix the sender.'),
  INPUT_FHIR_JSON_SHAPE: input('A FHIR JSON message must be one resource or a Bundle: fix the sender.'),
  INPUT_FHIR_TO_V2_MISSING: input(
    'The Bundle lacks an element the HL7 v2 message requires (message names both): complete the data or the profile.',
  ),
  INPUT_FHIR_TO_V2_NOT_BUNDLE: input('Only a FHIR Bundle can be written as HL7 v2: route Bundles to the v2 writer.'),
  INPUT_FHIR_TO_V2_RULE: input('A messageTypeRules FHIRPath failed on the Bundle: fix the rule in the profile.'),
  INPUT_FHIR_TO_V2_UNSUPPORTED: input(
    'The Bundle holds nothing HL7 v2 output supports (Patient, Encounter, DiagnosticReport, Observation, Appointment): fix the route.',
  ),
  INPUT_FHIR_TO_V2_ZSEGMENT: input("A Z-segment FHIRPath failed on the Bundle: fix the profile's zSegments rule."),
  INPUT_FILE_TOO_LARGE: input(
    'The file is larger than maxFileBytes: split it or raise the limit; it is moved to the error directory.',
  ),
  INPUT_FILE_UNREADABLE: input('The input file cannot be read: check the path and permissions.'),
  INPUT_FORBIDDEN: input(
    'The credentials are valid but their role is too weak for this request: use a token or user with the role named.',
    { http: 403 },
  ),
  INPUT_FORMAT: input('The transform is asked for a format it does not write: use the format the transform names.'),
  INPUT_HL7_BAD_DELIMITERS: input('MSH-1/MSH-2 (separators) are missing or invalid: fix the sender.'),
  INPUT_HL7_BAD_SEGMENT: input(
    'A segment does not start with a segment id and the field separator: fix the sender (line endings?).',
  ),
  INPUT_HL7_EMPTY: input('The HL7 v2 message is empty: check the sender.'),
  INPUT_HL7_NO_MSH: input('The message does not start with MSH: fix the sender.'),
  INPUT_HL7_STANDARD_PARSE: input(
    'hl7-standard could not parse the message: check its structure against the HL7 version.',
  ),
  INPUT_HL7_UNEXPECTED_MSH: input(
    'A second MSH inside one message (a batch?): send messages one by one or as a proper batch.',
  ),
  INPUT_HOLD_REQUEST: input(
    'A sink hold request is invalid (until in the future or minutes > 0, not both; reason at most 500 characters): fix the field named.',
  ),
  INPUT_HOLD_UNTIL: input('The end of a hold must be a valid time: fix the request.'),
  INPUT_MESSAGE_BODY: input('A stored message body must be a Buffer: a caller bug; report it.'),
  INPUT_MESSAGE_CONTENT_TYPE: input('A stored message needs a content type: set contentType on the source.'),
  INPUT_MESSAGE_FILE: input('The message file cannot be read: check the path and permissions.'),
  INPUT_MESSAGE_NO_SOURCE: input('A stored message needs a sourceId: a caller bug; report it.'),
  INPUT_NOT_BUNDLE: input('The input is not a FHIR Bundle: give a Bundle (or a JSON array of Bundles).'),
  INPUT_NO_CONTENT_TYPE: input('The message has no content type: set contentType on the source.'),
  INPUT_NO_ENGINE: input('No engine runs on this store (no heartbeat): start one, or check store.url.'),
  INPUT_NO_TRANSFORM: input('No transform reads this content type: load the plugin that does.'),
  INPUT_NO_WRITER: input('No transform writes the requested format: load the plugin that does.'),
  INPUT_PLUGIN_ACTION: input('Unknown ferry plugin action: use ferry plugin new <id>.'),
  INPUT_PLUGIN_DIR: input('The target directory exists and is not empty: choose another or pass --force.'),
  INPUT_PLUGIN_ID: input(
    'A plugin id is kebab-case starting with a letter (e.g. acme or acme-labs): choose another id.',
  ),
  INPUT_PRUNE_DAYS: input('A prune age must be a number of days >= 0: fix the option.'),
  INPUT_QUERY_FILTER: input('A query filter is too long (at most 100 characters): shorten it.'),
  INPUT_QUERY_LIMIT: input('limit must be a positive integer: fix the query.'),
  INPUT_QUERY_MINUTES: input('minutes must be a whole number from 1 to 1440: fix the query.'),
  INPUT_QUERY_PATIENT: input('patient must be an ordering key or MRN of at most 200 characters: fix the query.'),
  INPUT_RELOAD_TARGET: input(
    'ferry reload finds the engine by its store; an in-memory SQLite store has none: reload through the admin API.',
  ),
  INPUT_REPLAY_FILTER: input('A replay/query filter is invalid (unknown status, not a time): fix the filter named.'),
  INPUT_REPLAY_MODE: input('Replay mode must be reprocess or redeliver: fix the request.'),
  INPUT_ROUTE_TEST: input(
    'The route test request is invalid or the message cannot be processed: read the message and fix the request.',
  ),
  INPUT_SCRIPT_FAILED: input('A script step threw on this message: fix the script or the data, then replay.'),
  INPUT_SCRIPT_RESULT: input('A script step must return a Bundle or null: fix the script.'),
  INPUT_SCRIPT_TIMEOUT: input(
    'A script step did not finish within its time limit (stopped; only this message fails): fix the script or raise timeoutMs.',
  ),
  INPUT_SCRIPT_V2_PATH: input(
    'Not an HL7 v2 path (expected SEG[n]-field[rep].component.subcomponent, e.g. PID-3[2].1): fix the script.',
  ),
  INPUT_SEND_TARGET: input('The send target must be host:port: fix the argument.'),
  INPUT_SINK_ACTION: input('Unknown ferry sink action: use hold <id>, release <id> or holds.'),
  INPUT_SINK_ID: input('ferry sink needs a sink id: see ferry sink holds.'),
  INPUT_STEP_FAILED: input(
    'A route step failed on this message (the message says which and why): fix the step or the data, then replay.',
  ),
  INPUT_TOKEN: input('A token needs id, name, roles and hash: a caller bug; report it.'),
  INPUT_TOKEN_ACTION: input('Unknown ferry token action: use create, list or revoke <id>.'),
  INPUT_TOKEN_EXISTS: input('A token with that id exists: choose another id or revoke the old one.'),
  INPUT_TOKEN_ID: input('ferry token revoke needs a token id: see ferry token list.'),
  INPUT_TOKEN_REQUEST: input(
    'A token request is invalid (name, roles, scopes or expires; the message names the field and what it takes): fix it.',
  ),
  INPUT_TRANSFORM_FAILED: input(
    'The transform could not convert this message (the message says why): fix the sender or the mapping, then replay.',
  ),
  INPUT_UNAUTHENTICATED: input('No or bad credentials: send a valid bearer token (API token or OIDC).', { http: 401 }),
  INPUT_UNKNOWN_CONFIG_VERSION: input('No config version with that number: see ferry config history.'),
  INPUT_UNKNOWN_CONTENT: input("Cannot tell the file's content type: pass --content-type."),
  INPUT_UNKNOWN_CONTENT_TYPE: input(
    'No content type for the file extension: set contentType on the source or use .hl7/.er7/.txt/.json.',
  ),
  INPUT_UNKNOWN_SINK: input('No sink with that id in the config: check the id.'),
  INPUT_VENDOR_JSON: input('The vendor message body is not JSON: check what produced it.'),
  INPUT_VENDOR_RESOURCE: input('The vendor message is not a FHIR resource: check what produced it.'),
  INPUT_VENDOR_RESOURCE_INVALID: input(
    'The vendor resource does not validate as FHIR R4 after normalisation (issues in the message): check the vendor record.',
  ),

  // DELIVERY_*: A sink could not deliver: retried when the destination may accept later, dead (replayable) when it refused.
  DELIVERY_ATHENA: transient(
    'athena refused or failed the delivery (the cause code is in details): retried when the cause is retryable, dead otherwise.',
  ),
  DELIVERY_ATHENA_FHIR: transient(
    'athena FHIR refused or failed the delivery (the cause code is in details): retried when the cause is retryable.',
  ),
  DELIVERY_ATHENA_FHIR_NOT_WRITABLE: input(
    'athena FHIR does not accept writes of that resource type: route only writable types to the sink.',
  ),
  DELIVERY_ATHENA_FHIR_NO_PATIENT: input(
    "The resource's subject is not an athena patient: route only resources of patients athena knows.",
  ),
  DELIVERY_ATHENA_FHIR_OUTCOME_UNKNOWN: input(
    'An earlier attempt was abandoned before athena answered; the create may have happened: check athena, then replay or cancel.',
  ),
  DELIVERY_ATHENA_NO_DEPARTMENT: input("Creating an athena patient needs the sink's departmentId: set it."),
  DELIVERY_ATHENA_NO_PATIENT: input(
    "The appointment's patient has no athena patient id: send the patient to athena first.",
  ),
  DELIVERY_ATHENA_NO_PATIENTID: input(
    'athena answered a patient create without a patientid: check athena, then replay.',
  ),
  DELIVERY_ATHENA_NO_SLOT: input(
    'Booking on athena needs the athena appointment (open slot) id as identifier: map it in the route.',
  ),
  DELIVERY_ATHENA_PATIENT_AMBIGUOUS: input(
    'Several athena patients match name and birth date; nothing written: resolve the duplicates in athena, then replay.',
  ),
  DELIVERY_ATHENA_PATIENT_INCOMPLETE: input(
    'A new athena patient needs given name, family name and birth date: complete the source data.',
  ),
  DELIVERY_ATHENA_SLOT_TAKEN: input('The athena appointment slot is not open any more: book another slot.'),
  DELIVERY_ENGINE_STOPPING: transient(
    'The engine stopped before the sink finished: the delivery is retried after restart.',
  ),
  DELIVERY_FHIR_BAD_RESPONSE: transient(
    'The FHIR server answered something that is not a Bundle: retried; check the server if it persists.',
  ),
  DELIVERY_FHIR_ENTRY_FAILED: input(
    'Entries of the transaction failed on the FHIR server (details list them): fix the data or server profile, then replay.',
  ),
  DELIVERY_FHIR_REFERENCE_AMBIGUOUS: input(
    'Conditional references match several resources on the server: clean the duplicates on the server, then replay.',
  ),
  DELIVERY_FHIR_REFERENCE_UNRESOLVED: transient(
    'Referenced resources are not on the server yet: retried until the message that creates them is delivered.',
  ),
  DELIVERY_FHIR_REJECTED: input(
    'The FHIR server refused the Bundle (4xx, the OperationOutcome is in details): fix the data, then replay.',
  ),
  DELIVERY_FHIR_UNAVAILABLE: transient('The FHIR server is unavailable (5xx, timeout): retried with backoff.'),
  DELIVERY_FILE_FHIR_TO_FORMAT: input(
    'The file sink cannot write the Bundle in its plugin format: the message names the reason; fix the route or data.',
  ),
  DELIVERY_FILE_FHIR_TO_HL7V2: input(
    'The file sink cannot express the Bundle in HL7 v2 (the message names the FHIR element and v2 field): fix the route or data.',
  ),
  DELIVERY_FILE_NO_WRITER: input("The file sink's format needs a plugin that writes it: load that plugin."),
  DELIVERY_FILE_WRITE: transient('The file sink cannot write (disk full, permissions): retried; fix the directory.'),
  DELIVERY_HTTP_FHIR_TO_FORMAT: input(
    'The http sink cannot write the Bundle in its plugin format (or it gives several messages): fix the route or data.',
  ),
  DELIVERY_HTTP_FHIR_TO_HL7V2: input(
    'The http sink cannot express the Bundle as one HL7 v2 message: fix the route (one appointment per message) or data.',
  ),
  DELIVERY_HTTP_NO_WRITER: input("The http sink's format needs a plugin that writes it: load that plugin."),
  DELIVERY_MLLP_BACKOFF: transient(
    'The MLLP receiver is unreachable and the sink waits before reconnecting: retried; check the receiver.',
  ),
  DELIVERY_MLLP_BAD_ACK: transient(
    'The MLLP receiver answered an unknown acknowledgment code: retried; check the receiver.',
  ),
  DELIVERY_MLLP_CONNECT: transient(
    'The MLLP sink cannot connect to the receiver: retried; check host, port, TLS and the receiver.',
  ),
  DELIVERY_MLLP_ERROR_ACK: transient("The MLLP receiver answered AE/CE (error): retried; check the receiver's log."),
  DELIVERY_MLLP_FHIR_TO_V2: input(
    'The MLLP sink cannot express the Bundle as one HL7 v2 message: fix the route or data, then replay.',
  ),
  DELIVERY_MLLP_NOT_HL7: input(
    'The mllp sink sends HL7 v2 only and the stored message is not: route only HL7 v2 (or a Bundle with format) to it.',
  ),
  DELIVERY_MLLP_NO_BODY: input('The stored message body is gone (pruned): nothing to send; cancel the delivery.'),
  DELIVERY_MLLP_REENCODE: input(
    "The message cannot be re-encoded for the receiver: fix the message or the sink's encoding.",
  ),
  DELIVERY_MLLP_REJECTED: input(
    "The MLLP receiver answered AR/CR (reject): dead, or retried with onReject: retry; read the receiver's ERR.",
  ),
  DELIVERY_MLLP_SEND: transient('Sending over MLLP failed (connection lost, no ACK): retried.'),
  DELIVERY_MLLP_STOPPED: transient('The mllp sink is stopping: the delivery is retried after restart.'),
  DELIVERY_NETWORK: transient(
    "The sink's request failed on the network (refused, reset, DNS): retried; check the destination.",
  ),
  DELIVERY_REJECTED: input(
    'The destination refused the delivery (4xx): dead; fix the data or the destination, then replay.',
  ),
  DELIVERY_THROTTLED: transient('The destination answered 429: retried after backoff (Retry-After honoured).'),
  DELIVERY_TIMEOUT: transient(
    'The sink did not finish within deliveryTimeoutMs: retried; raise the timeout or check the destination.',
  ),
  DELIVERY_UNAUTHORIZED: input(
    "The destination refused the credentials (401/403): dead; fix the sink's auth, then replay.",
  ),
  DELIVERY_UNAVAILABLE: transient('The destination is unavailable (5xx): retried with backoff.'),
  DELIVERY_UNEXPECTED: transient('The sink failed in an unexpected way: retried; report it with the message and logs.'),
  DELIVERY_WRITEBACK_FAILED: transient('The vendor write-back failed for a reason that may pass: retried.'),
  DELIVERY_WRITEBACK_REJECTED: input('The vendor refused the write-back (4xx): dead; fix the data, then replay.'),
  DELIVERY_WRITEBACK_UNMAPPED_REFERENCE: input(
    'A Patient reference does not point to a patient of the vendor: deliver the patient first, or fix the mapping.',
  ),

  // TRANSIENT_*: A condition that passes (store busy or full, connection lost, engine stopping): retried; senders are told to resend (HL7 AE, HTTP 503).
  TRANSIENT_ENGINE_STATE: transient('The engine is starting, stopping or reloading: retry the reload shortly.'),
  TRANSIENT_ENGINE_STOPPING: transient(
    'The engine is stopping and accepts no messages: the sender retries after restart.',
  ),
  TRANSIENT_KILLED: transient('Killed before the commit (testkit crash simulation): retried.'),
  TRANSIENT_MLLP_ABORTED: transient(
    'The delivery was abandoned (deliveryTimeoutMs) before the receiver acknowledged: retried.',
  ),
  TRANSIENT_MLLP_ACK_TIMEOUT: transient(
    'No ACK from the MLLP receiver in time: retried; check the receiver or raise ackTimeoutMs.',
  ),
  TRANSIENT_MLLP_CLOSED: transient('The MLLP connection closed before the ACK: retried.'),
  TRANSIENT_MLLP_CONNECT: transient('Cannot connect to the MLLP receiver: retried; check host, port and the receiver.'),
  TRANSIENT_MLLP_CONNECT_TIMEOUT: transient('Connecting to the MLLP receiver timed out: retried; check the network.'),
  TRANSIENT_OIDC_DISCOVERY: transient(
    "Console sign-in: the identity provider's discovery document cannot be read or does not fit (issuer, https endpoints): retry; check admin.auth.oidc.issuer.",
    { http: 503 },
  ),
  TRANSIENT_OIDC_TOKEN: transient(
    "Console sign-in: the identity provider's token endpoint cannot be reached: retry; the sign-in starts again.",
    { http: 503 },
  ),
  TRANSIENT_OIDC_JWKS: transient(
    "The identity provider's keys cannot be fetched, so bearer tokens cannot be checked: retry; check admin.auth.oidc.jwksUrl.",
  ),
  TRANSIENT_STORE_BUSY: transient(
    'The SQLite store is locked by another process: retried; make sure one engine uses the file.',
  ),
  TRANSIENT_STORE_CLOSED: transient('The store is closed (the engine is stopping): retry after restart.'),
  TRANSIENT_STORE_CONFLICT: transient('PostgreSQL serialization failure or deadlock: retried.'),
  TRANSIENT_STORE_CONNECT: transient(
    'Cannot connect to the PostgreSQL store: retried; check store.url and the server.',
  ),
  TRANSIENT_STORE_CONNECTION: transient('The PostgreSQL connection was lost: retried once the server is back.'),
  TRANSIENT_STORE_FULL: transient(
    'The database or disk is full: messages are refused (not acknowledged) until space is freed; prune or grow the disk.',
  ),
  TRANSIENT_STORE_IO: transient('An I/O error on the SQLite database: retried; check the disk.'),
  TRANSIENT_STORE_NOMEM: transient("The database ran out of memory: retried; check the host's memory."),
  TRANSIENT_STORE_READONLY: transient(
    'The SQLite database cannot be written (read-only file system or file): fix permissions or the mount.',
  ),
  TRANSIENT_STORE_WRITE: transient('The message could not be stored: the sender is told to retry; check the store.'),

  // INTERNAL_*: A bug or an impossible state: report it with the logs.
  INTERNAL_ENGINE_STATE: internal(
    'The engine cannot start from its current state: a bug or a double start; restart the process.',
  ),
  INTERNAL_FACADE_STORE: internal('The store has no facade tables: run the engine once to migrate the store.'),
  INTERNAL_FACADE_TRANSFORM: internal('No transform is loaded for a facade connection: load the vendor plugin.'),
  INTERNAL_HL7_CONVERSION: internal('HL7 v2 to FHIR conversion failed unexpectedly: report it with the message id.'),
  INTERNAL_IDLE_TIMEOUT: internal(
    'The engine did not become idle in time (stop/reload): check for stuck sinks; report it if it repeats.',
  ),
  INTERNAL_MLLP_BUSY: internal('An MLLP client connection was given two messages at once: a bug; report it.'),
  INTERNAL_PROCESSING_ATTEMPTS: internal(
    'The message was claimed for processing too many times without a result (the engine or worker died each time): replay it once fixed.',
  ),
  INTERNAL_STORE_INSERT: internal('The store inserted fewer messages than given: a bug; report it.'),
  INTERNAL_STORE_NO_DELIVERY: internal('No delivery with that id in the store: a bug or a pruned row; report it.'),
  INTERNAL_STORE_NO_MESSAGE: internal('No stored message with that id: a bug or a pruned row; report it.'),
  INTERNAL_STORE_READ_ONLY: internal('A write on the read-only side connection: a bug; report it.'),
  INTERNAL_STORE_TYPES: internal('A message type pattern was not resolved to types: a bug; report it.'),
  INTERNAL_SUBMIT: internal(
    'Submitting received messages failed unexpectedly: the sender gets AE and resends; report it.',
  ),
  INTERNAL_SUBMIT_RESULT: internal('The store returned fewer results than messages: a bug; report it.'),
  INTERNAL_TRANSFORM_RESULT: internal('A transform did not return a Bundle: fix the plugin.'),
  INTERNAL_TRANSFORM_TIMEOUT: internal(
    'A transform worker did not answer in time (stopped): replay the message; raise transform.timeoutMs if it is large.',
  ),
  INTERNAL_UNEXPECTED: internal('Something failed that Ferry does not classify: report it with the logs.'),

  // VENDOR_*: A vendor API (FHIR or athena) answered with an error.
  VENDOR_ABORTED: transient('The vendor request was aborted (timeout or stop): retried.', { http: 502 }),
  VENDOR_BAD_RESPONSE: input(
    'The vendor answered something that is not the JSON/FHIR expected (an HTML page, a wrong shape; a non-JSON 2xx is retried): check the base URL and routing.',
    { http: 422 },
  ),
  VENDOR_CONFLICT: input('The vendor answered 409 (conflict): read again and retry with current data.', { http: 409 }),
  VENDOR_EXPORT_BUSY: transient('Another bulk export is in progress for this client: retried after it ends.', {
    http: 502,
  }),
  VENDOR_EXPORT_TIMEOUT: transient(
    'The bulk export did not complete in time: retried; raise the export timeout if the data set is large.',
    { http: 502 },
  ),
  VENDOR_FORBIDDEN: input('The vendor answered 403: grant the app the scopes or access it needs.', { http: 422 }),
  VENDOR_NETWORK: transient('The vendor request failed on the network: retried; check the connection.', { http: 502 }),
  VENDOR_NOT_ACCEPTABLE: input('The vendor refused the Accept header (406): check the base URL (FHIR R4 endpoint).', {
    http: 422,
  }),
  VENDOR_NOT_FOUND: input('The vendor answered 404: check the id or the base URL.', { http: 404 }),
  VENDOR_NO_BASE_URL: internal('A relative vendor URL without a base URL: set baseUrl on the connection.'),
  VENDOR_PAGING_EXPIRED: transient("The vendor's paging session expired (Epic 4113): the poll restarts.", {
    http: 502,
  }),
  VENDOR_POLICY_DENIED: input(
    'The vendor denied the request by policy (Epic): not retried; ask the vendor to allow it.',
    { http: 422 },
  ),
  VENDOR_REJECTED: input('The vendor refused the request (4xx): fix the data or parameters.', { http: 422 }),
  VENDOR_THROTTLED: transient('The vendor answered 429: retried after backoff.', { http: 502 }),
  VENDOR_TIMEOUT: transient('The vendor did not answer in time: retried.', { http: 502 }),
  VENDOR_TOKEN_FAILED: transient('Getting a vendor access token failed: retried; check the token endpoint.', {
    http: 502,
  }),
  VENDOR_TOKEN_INVALID: transient(
    'The vendor token endpoint answered a body that is not JSON: retried; check auth.tokenUrl.',
    { http: 502 },
  ),
  VENDOR_TOKEN_NETWORK: transient('The token request failed on the network: retried.', { http: 502 }),
  VENDOR_TOKEN_REJECTED: config(
    'The token endpoint refused the credentials: fix clientId, secret or key, and the registered scopes.',
    { http: 502 },
  ),
  VENDOR_TOKEN_UNAVAILABLE: transient('The token endpoint answered 5xx: retried.', { http: 502 }),
  VENDOR_UNAUTHORIZED: config("The vendor answered 401: fix the connection's credentials.", { http: 502 }),
  VENDOR_UNAVAILABLE: transient('The vendor is unavailable (5xx): retried with backoff.', { http: 502 }),

  // ATHENA_*: athena-specific answers.
  ATHENA_WRITE_REFUSED: input(
    "athena answered success=false to a write; read the message for athena's reason and fix the data or the athena setup.",
    { http: 422 },
  ),
} as const satisfies Record<string, ErrorSpec>;

/** A catalogue code, without the FERRY_E_ prefix. */
export type ErrorCode = keyof typeof ERROR_CATALOGUE;
/** A code as thrown (`FerryError.code`): FERRY_E_ and a catalogue code. */
export type FerryErrorCode = `FERRY_E_${ErrorCode}`;

/** The codes under a prefix, without it: `CodeSuffix<'CONFIG_'>` is what `configError` takes. */
export type CodeSuffix<P extends string> = ErrorCode extends infer C ? (C extends `${P}${infer S}` ? S : never) : never;
