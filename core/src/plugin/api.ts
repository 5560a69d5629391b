import type { Bundle, Resource } from '@medplum/fhirtypes';
import type convict from 'convict';
import type { DependencyContainer } from 'tsyringe';
import type { DataQualityIssue, InboundMessage, MessageHeaders, StoredMessage } from '../model/message';
import type { AuditFilter, InsertOptions, InsertResult, MessageStore, StoredAuditEntry } from '../store/message-store';
import type { FileModes } from '../util/file-modes';
import type { FacadeProvider, FacadeProviderContext } from '../facade/provider';
import type { Token } from './tokens';

export type Ctor<T> = new (...args: any[]) => T;

/**
 * Ferry's logger, as plugins see it (winston is the implementation; a plugin does not depend on it).
 * Structured: a short constant message and the facts as fields (`{ source, messageId, ...errorFields(e) }`);
 * never PHI at info or above (message bodies, names, identifiers of patients). `child` adds fields to
 * every entry of the logger it returns.
 */
export interface Logger {
  error(message: string, meta?: LogFields): void;
  warn(message: string, meta?: LogFields): void;
  info(message: string, meta?: LogFields): void;
  debug(message: string, meta?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** The fields of a log entry. */
export type LogFields = Record<string, unknown>;

export interface PluginManifest {
  /** kebab-case, unique: 'hl7v2-mllp'. */
  id: string;
  /** The plugin's own semver. */
  version: string;
  /** Semver range of @ferry/core the plugin works with; checked at load. */
  engine: string;
  /** Ids of plugins that must be loaded too. */
  dependsOn?: string[];
  description?: string;
}

/** A convict schema object. */
export type ConfigSchema<C = any> = convict.Schema<C>;

export interface PluginDefinition<C extends object = any> {
  manifest: PluginManifest;
  /** Mounted at `plugins.<id>`; validated strictly with the rest of the config. */
  configSchema: ConfigSchema<C>;
  register(reg: PluginRegistrar<C>): void | Promise<void>;
}

export interface PluginRegistrar<C = any> {
  readonly manifest: PluginManifest;
  readonly config: Readonly<C>;
  /** root.child({ plugin: id }) */
  readonly logger: Logger;
  /** The plugin's own child container. */
  readonly container: DependencyContainer;
  /** A source type usable in `sources.<id>.type`; `schema` validates the rest of that entry. */
  addSourceType(type: string, impl: Ctor<MessageSource>, schema: ConfigSchema): void;
  /** A transform for one or more content types (`canHandle`). */
  addTransform(impl: Ctor<MessageTransform>): void;
  /** A sink type usable in `sinks.<id>.type`. */
  addSinkType(type: string, impl: Ctor<MessageSink>, schema: ConfigSchema): void;
  /** A sub-command of the `ferry` CLI (e.g. `ferry send`, `ferry epic jwks`). */
  addCommand(command: CliCommand): void;
  /**
   * A connection kind usable in `connections.<id>.kind` (credentials defined once, referenced by
   * sources, sinks and the FHIR facade with `connection: <id>`), with the facade provider that
   * serves reads, searches and writes on such a connection (see `core/src/facade/provider.ts`).
   */
  registerFacadeProvider(kind: string, registration: FacadeProviderRegistration): void;
  /**
   * A service of this engine under `token`: `create` runs when it is first resolved (a component's
   * `@inject(token)`, `container.resolve(token)`), one instance per engine, so two engines in one
   * process never share it; when the engine stops, its `dispose()` (if any) runs. In this plugin's
   * container; with `shared`, in the engine's, seen by every plugin (the first plugin to provide a
   * token wins: two plugins sharing a service provide it with the same factory). Runtime state lives
   * here, never in a module-level Map.
   */
  provide<T>(token: Token<T>, create: () => NoInfer<T>, opts?: { shared?: boolean }): void;
}

/** What a plugin registers for one connection kind (`athena`, `epic`, `cerner`). */
export interface FacadeProviderRegistration {
  /** The convict schema of the connection's keys (credentials, base URL...), shared by its sources and sinks. */
  connectionSchema: ConfigSchema;
  /** Source types that take these keys: such a source may say `connection: <id>` instead of repeating them. */
  sourceTypes?: string[];
  /** Sink types that take these keys. */
  sinkTypes?: string[];
  /**
   * The provider for one configured connection. Called once per connection when the facade
   * starts (`api.enabled`); `ctx.config` is the validated connection entry (without `kind`, `facade`).
   */
  create(ctx: FacadeProviderContext): FacadeProvider;
}

/** Identity function that types a plugin definition. */
export const definePlugin = <C extends object>(d: PluginDefinition<C>): PluginDefinition<C> => d;

// ---------------------------------------------------------------------------------------------
// Sources

/** What a source instance can see and do; injected as `coreTokens.SourceContext`. */
export interface SourceContext<C = any> {
  /** The source id (the key under `sources:`). */
  readonly id: string;
  /** This source's entry (minus `type`), validated against the type's schema. */
  readonly config: Readonly<C>;
  readonly logger: Logger;
  /**
   * Hand messages to the engine. Resolves once they are durably stored (group-committed): only
   * then may the source acknowledge them. Rejects with a FerryError when they cannot be stored
   * (kind `transient`) or are refused (kind `input`, e.g. a rejected duplicate).
   */
  submit(messages: InboundMessage[], opts?: Pick<InsertOptions, 'checkpoint'>): Promise<InsertResult[]>;
  /** A poller's durable cursor. Set it through `submit(..., { checkpoint })` when messages go with it. */
  getCheckpoint(key: string): Promise<string | undefined>;
  setCheckpoint(key: string, value: string): Promise<void>;
  /** Headers for a body, from the transform registered for its content type. */
  extractHeaders(contentType: string, body: Buffer): MessageHeaders;
  /** Split a batch body into messages, with the transform registered for its content type. */
  split(contentType: string, body: Buffer): Buffer[];
  /** Aborted when the engine stops. */
  readonly signal: AbortSignal;
  /** True when this source's `dataQuality` policy can fail a message (some entry says `fail`). */
  readonly dataQualityCanFail?: boolean;
  /**
   * The data-quality issues of a message under this source's policy (its transform run for
   * them alone), for a source whose acknowledgment names them: the MLLP source's enhanced-mode
   * application ACK is AE with ERR segments when some are `error`. Only worth calling when
   * `dataQualityCanFail`.
   */
  dataQualityIssues?(message: InboundMessage): Promise<DataQualityIssue[]>;
  /**
   * The acknowledgments sent for stored messages (HL7 v2 ACK text, ids from `submit`), kept as
   * each message's `ack` event: the console shows the ACK that was sent. Not awaited by the ACK
   * itself; failures are the engine's to log.
   */
  recordAcks?(acks: { messageId: string; ack: string }[]): void;
  /** The store's audit trail (read-only; the core `audit` source emits it as FHIR AuditEvents). */
  auditEntries?(filter: AuditFilter): Promise<StoredAuditEntry[]>;
  /** Modes for files and folders the source creates (from `files.umask`); absent = 0600 / 0700. */
  readonly files?: FileModes;
}

export interface MessageSource {
  /** Begin accepting (bind the port, start polling). Resolve once listening. */
  start(): Promise<void>;
  /** Stop accepting new messages and finish in-flight ones. */
  stop(): Promise<void>;
  /** For /ready: true while the source is accepting. */
  isReady?(): boolean;
  /**
   * Counters and gauges of the source's own (connections, frames, junk bytes...), exported on
   * /metrics as `ferry_source_stat{source, stat}`. Numbers only; never PHI.
   */
  stats?(): object | undefined;
  /** The source's own state for the admin API (`GET /api/sources`), e.g. per-resource-type health. JSON; never PHI. */
  describe?(): object | undefined;
  /**
   * A resource a delivery of this source's message needs and Ferry never stored (`Patient/epic-123`, a
   * canonical reference), read from the system the source polls: the raw message, as `submit` would
   * get it (not stored; the engine transforms it for the delivery). Undefined when the system does
   * not have it; throws a retryable FerryError when the system cannot be reached.
   */
  fetchReference?(reference: string, signal?: AbortSignal): Promise<InboundMessage | undefined>;
}

// ---------------------------------------------------------------------------------------------
// Transforms

/** An issue as a transform reports it: the source's `dataQuality` policy sets its severity. */
export type ReportedIssue = Omit<DataQualityIssue, 'severity'> & { severity?: DataQualityIssue['severity'] };

export interface TransformContext {
  readonly logger: Logger;
  /**
   * Report a value the conversion could not use (a bad date, a number that is not one, a code
   * outside a required binding...): where it is and why, never the value (it may be PHI). The
   * engine applies the source's `dataQuality` policy (warn: recorded, delivered; fail: the
   * message fails, replayable), stores the issues with the message and counts them. Absent
   * where nobody collects them (tools); call it as `ctx.reportIssue?.(...)`.
   */
  reportIssue?(issue: ReportedIssue): void;
}

export interface MessageTransform {
  /** Identifies the transform in logs and errors. */
  readonly name: string;
  canHandle(contentType: string): boolean;
  /**
   * The canonical FHIR R4 Bundle for a stored message. Throw a FerryError (kind input) for bad
   * input; report values it could not use through `ctx.reportIssue` (and convert the rest).
   */
  toFhir(message: StoredMessage & { body: Buffer }, ctx: TransformContext): Bundle | Promise<Bundle>;
  /** Headers for routing, ordering and duplicates (message type, control id, sender, ordering key). */
  extractHeaders?(body: Buffer): MessageHeaders;
  /** Split a batch into its messages; one-element array for a single message. */
  split?(body: Buffer): Buffer[];
  /** Formats this transform can also write from a canonical Bundle (`ferry convert --to <format>`). */
  readonly outputFormats?: readonly string[];
  /**
   * The messages (text) a canonical Bundle becomes in `format` (one of `outputFormats`), with an
   * optional receiver profile (already parsed YAML/JSON). Throw a FerryError (kind input) when the
   * Bundle cannot be expressed; `seed` makes control ids stable.
   */
  fromFhir?(bundle: Bundle, opts: FromFhirOptions): string[];
  /**
   * The problems of a receiver profile for `format` (one of `outputFormats`), each by its path inside
   * the profile; [] when it is good. The config loader calls it for the file and http sinks that write
   * `format`, so a bad profile is refused when the config loads.
   */
  outputProfileProblems?(format: string, profile: unknown): { path: string; message: string }[];
  /**
   * Literal references (`Patient/epic-123`) the Bundle needs written in `format` but does not hold
   * (an Epic Observation's subject): the engine looks them up in the store (the newest canonical
   * resource of that id) and adds what it finds to the Bundle before `fromFhir`.
   */
  missingReferences?(bundle: Bundle, format: string): string[];
  /**
   * Names and data types of the content's elements, for people reading a message (the console's
   * HL7 v2 tree, GET /api/hl7/definitions): segment -> field number -> [name, type], data type ->
   * component number -> [name, type]. No message data.
   */
  definitions?(): ContentDefinitions;
}

export interface FromFhirOptions {
  format: string;
  /** The receiver profile (already parsed YAML/JSON, unchecked). */
  profile?: unknown;
  /** Makes the control ids stable: the same seed gives the same ids (a retry, a replay). */
  seed: string;
  /** The message time (MSH-7 for hl7v2); default: the Bundle's timestamp, else now. */
  now?: Date | string;
  /** The stored message the Bundle belongs to (the audit entry of a reference looked up in the store names it). */
  messageId?: string;
}

export interface ContentDefinitions {
  segments: Record<string, Record<number, readonly [string, string]>>;
  types: Record<string, Record<number, readonly [string, string]>>;
}

// ---------------------------------------------------------------------------------------------
// Sinks

export interface SinkContext<C = any> {
  readonly id: string;
  readonly config: Readonly<C>;
  readonly logger: Logger;
  /** Modes for files and folders the sink creates (from `files.umask`); absent = 0600 / 0700. */
  readonly files?: FileModes;
  /**
   * A canonical Bundle written in another format by the loaded plugin transform that declares it
   * in `outputFormats` (`fromFhir`): how the core file and http sinks write `format: hl7v2` without
   * knowing HL7 v2. Throws a config FerryError when no loaded plugin writes `format`, or the
   * transform's input FerryError when the Bundle cannot be expressed.
   */
  fromFhir?(bundle: Bundle, opts: FromFhirOptions): Promise<string[]>;
  /**
   * Resources for literal references a Bundle does not hold (`Patient/epic-123`): the newest stored
   * canonical resource with that id (today: Patients, found by their ordering key), each read audited
   * (`message.bundle.read` by `engine`). What is not found is left out.
   */
  resolveReferences?(refs: string[], opts: { messageId: string }): Promise<Resource[]>;
}

export interface Delivery {
  deliveryId: string;
  /** 1 for the first attempt. */
  attempt: number;
  routeId: string;
  /** The bundle for this sink (built from `bundleJson` on first read). */
  bundle: Bundle;
  /**
   * The same bundle as JSON text, as stored, when the engine has it: a sink that sends or writes
   * JSON uses it as is instead of serialising `bundle` again (`bundleText(d)` does that).
   */
  bundleJson?: string;
  /** The stored message (with its raw body, unless pruned). */
  message: StoredMessage;
  /**
   * Aborted when the attempt runs past the sink's `deliveryTimeoutMs` (the engine has then counted
   * it failed and will retry): a sink passes it to its requests so they stop, rather than finish
   * a delivery the engine no longer waits for.
   */
  signal?: AbortSignal;
}

export interface MessageSink {
  /**
   * Deliveries this sink wants in flight at once when its config sets no `concurrency`
   * (default: processing.deliveryWorkers). A sink that writes concurrent deliveries as one group
   * (the NDJSON file sink: one write and one fsync) says more.
   */
  readonly preferredConcurrency?: number;
  start?(): Promise<void>;
  stop?(): Promise<void>;
  /**
   * Deliver one bundle. Resolve on success. Throw a FerryError with `retryable` set to say whether
   * the engine should retry; anything else thrown is treated as retryable.
   */
  deliver(delivery: Delivery): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// CLI extension

export interface CliCommandContext {
  /** Loaded config file path, when `-c` was given or the default exists. */
  configFile?: string;
  readonly logger: Logger;
  /** The loaded engine (plugins registered, store not opened). */
  readonly transforms: MessageTransform[];
  readonly store?: MessageStore;
}

export interface CliCommand {
  /** e.g. `send <target> <files...>` */
  name: string;
  description: string;
  options?: { flags: string; description: string; default?: string | boolean }[];
  run(args: string[], options: Record<string, unknown>, ctx: CliCommandContext): Promise<number>;
}
