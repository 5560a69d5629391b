import 'reflect-metadata';
import type * as EngineModule from './engine/engine';
import type * as ConfigureModule from './engine/configure';
import type * as LoadConfigModule from './config/load-config';
import type * as LoggerModule from './logging/logger';
import type * as PluginHostModule from './plugin/plugin-host';
import type * as ValidateModule from './fhir/validate';
import type * as FhirpathModule from './fhir/fhirpath';
import type * as RouterModule from './routing/router';
import type * as SqliteModule from './store/sqlite.store';
import type * as PostgresModule from './store/postgres.store';
import type * as CreateStoreModule from './store/create-store';
import type * as FileSinkModule from './sinks/file.sink';
import type * as HttpSinkModule from './sinks/http.sink';
import type * as FhirSinkModule from './sinks/fhir.sink';
import type * as FileSourceModule from './sources/file.source';
import type * as HttpSourceModule from './sources/http.source';
import type * as FhirJsonModule from './fhir/fhir-json.transform';
import type * as CorePluginModule from './plugin/core.plugin';
import type * as AuthModule from './admin/auth';
import type * as GuardModule from './admin/guard';
import type * as AdminServerModule from './admin/admin.server';
import type * as AuditSourceModule from './sources/audit.source';

// Light modules (errors, the plugin API, tokens, message model, search helpers, vendor HTTP helpers): loaded eagerly.
export * from './errors';
export * from './model/message';
export * from './plugin/api';
export * from './plugin/tokens';
export * from './facade/provider';
export * from './store/message-store';
export { contentHash } from './store/content-hash';
export * from './config/engine.schema';
export {
  defineSchema,
  schemaDefaults,
  withSchemaDefaults,
  type SchemaInput,
  type SchemaType,
  type SchemaSpec,
  type SchemaLeaf,
  type LeafType,
} from './config/schema-type';
export { identifierParam } from './fhir/search';
export * from './vendor';
export { bundleText, deliveryPayload, deliveryPayloadJson, requestSignal } from './sinks/common';
export { OutageLog } from './logging/outage-log';
export { ROLES, hasRole, topRole, isRole, hasScope, isFacadeScope, type Principal, type Role } from './admin/roles';
export { hashToken, verifyToken, newTokenSecret, tokenIdOf } from './admin/tokens';
export { tokenRequest, issueToken, makeToken, tokenView } from './admin/token-ops';
export type { AuthConfig, ConfigToken, OidcConfig } from './admin/auth';
export type { RouteAccess } from './admin/guard';
export * from './sources/listener-guard';
export { HttpConnections } from './util/graceful-http';
export * from './util/file-modes';
export { escapeHl7, STANDARD_HL7_DELIMITERS, unescapeHl7, type Hl7Delimiters } from './util/hl7-escape';

/*
 * Heavy modules (the engine, configuration loading, stores, sinks, sources, FHIRPath, FHIR validation, winston):
 * loaded on first use of one of their exports. A plugin imports @ferry/core for its errors and tokens, and
 * `ferry convert` needs one transform: neither should pay for fastify, pg, better-sqlite3, fhirpath and the rest
 * at start-up (that was ~90 % of a `ferry convert` call). Same names, same values, same types as before.
 */
function lazy(load: () => object, names: string[]): void {
  let mod: Record<string, unknown> | undefined;
  for (const name of names)
    Object.defineProperty(exports, name, {
      enumerable: true,
      configurable: true,
      get: () => (mod ??= load() as Record<string, unknown>)[name],
    });
}
/* eslint-disable @typescript-eslint/no-require-imports -- lazy: the package's entry loads each module on first use */
lazy(() => require('./engine/engine'), ['Engine', 'transformWorkerCount']);
lazy(() => require('./engine/configure'), ['configure', 'configurePlugins']);
lazy(() => require('./config/load-config'), ['ConfigError', 'validateWithSchema']);
lazy(() => require('./logging/logger'), ['createLogger', 'silentLogger', 'errorFields']);
lazy(() => require('./plugin/plugin-host'), ['PluginHost', 'manifestProblems', 'CORE_VERSION']);
lazy(
  () => require('./fhir/validate'),
  [
    'validateBundle',
    'validateResourceOutcome',
    'warmFhirValidator',
    'ensureFhirDefinitions',
    'validateFhirResource',
    'precompileFhirTypes',
    'isFhirResourceType',
  ],
);
lazy(() => require('./fhir/fhirpath'), ['fhirpathTest', 'fhirpathEval', 'fhirpathError']);
lazy(() => require('./routing/router'), ['globToRegExp']);
lazy(() => require('./store/sqlite.store'), ['rowMaker', 'classifySqliteError', 'SqliteMessageStore']);
lazy(() => require('./store/postgres.store'), ['withSearchPath', 'PostgresMessageStore']);
lazy(() => require('./store/create-store'), ['createStore']);
lazy(() => require('./sinks/file.sink'), ['FileSink', 'fileSinkSchema']);
lazy(() => require('./sinks/http.sink'), ['HttpSink', 'httpSinkSchema']);
lazy(() => require('./sinks/fhir.sink'), ['FhirSink', 'fhirSinkSchema', 'toTransaction']);
lazy(() => require('./sources/file.source'), ['FileSource', 'fileSourceSchema']);
lazy(() => require('./sources/http.source'), ['HttpSource', 'httpSourceSchema']);
lazy(() => require('./fhir/fhir-json.transform'), ['FhirJsonTransform']);
lazy(() => require('./plugin/core.plugin'), ['corePlugin']);
lazy(() => require('./admin/auth'), ['AuthError', 'Authenticator', 'FailureLimiter', 'ensureInitialToken']);
lazy(() => require('./admin/guard'), ['AdminGuard', 'GuardError', 'requireRole', 'principalLabel']);
lazy(() => require('./admin/admin.server'), ['startAdmin']);
lazy(() => require('./sources/audit.source'), ['AuditSource', 'auditSourceSchema', 'toAuditEvent']);
/* eslint-enable @typescript-eslint/no-require-imports */

export declare const Engine: typeof EngineModule.Engine;
export type Engine = EngineModule.Engine;
export declare const transformWorkerCount: typeof EngineModule.transformWorkerCount;
export type EngineOptions = EngineModule.EngineOptions;
export declare const configure: typeof ConfigureModule.configure;
export declare const configurePlugins: typeof ConfigureModule.configurePlugins;
export type ConfigureOptions = ConfigureModule.ConfigureOptions;
export declare const ConfigError: typeof LoadConfigModule.ConfigError;
export type ConfigError = LoadConfigModule.ConfigError;
export type ConfigProblem = LoadConfigModule.ConfigProblem;
export declare const validateWithSchema: typeof LoadConfigModule.validateWithSchema;
export declare const createLogger: typeof LoggerModule.createLogger;
export declare const silentLogger: typeof LoggerModule.silentLogger;
export declare const errorFields: typeof LoggerModule.errorFields;
export declare const PluginHost: typeof PluginHostModule.PluginHost;
export type PluginHost = PluginHostModule.PluginHost;
export declare const manifestProblems: typeof PluginHostModule.manifestProblems;
export declare const CORE_VERSION: typeof PluginHostModule.CORE_VERSION;
export declare const validateBundle: typeof ValidateModule.validateBundle;
export declare const ensureFhirDefinitions: typeof ValidateModule.ensureFhirDefinitions;
export declare const validateResourceOutcome: typeof ValidateModule.validateResourceOutcome;
export declare const warmFhirValidator: typeof ValidateModule.warmFhirValidator;
export declare const validateFhirResource: typeof ValidateModule.validateFhirResource;
export declare const precompileFhirTypes: typeof ValidateModule.precompileFhirTypes;
export declare const isFhirResourceType: typeof ValidateModule.isFhirResourceType;
export type FhirValidateOptions = ValidateModule.FhirValidateOptions;
export declare const fhirpathTest: typeof FhirpathModule.fhirpathTest;
export declare const fhirpathEval: typeof FhirpathModule.fhirpathEval;
export declare const fhirpathError: typeof FhirpathModule.fhirpathError;
export declare const globToRegExp: typeof RouterModule.globToRegExp;
export type SqliteStoreOptions = SqliteModule.SqliteStoreOptions;
export declare const rowMaker: typeof SqliteModule.rowMaker;
export declare const classifySqliteError: typeof SqliteModule.classifySqliteError;
export declare const SqliteMessageStore: typeof SqliteModule.SqliteMessageStore;
export type SqliteMessageStore = SqliteModule.SqliteMessageStore;
export type PostgresStoreOptions = PostgresModule.PostgresStoreOptions;
export declare const withSearchPath: typeof PostgresModule.withSearchPath;
export declare const PostgresMessageStore: typeof PostgresModule.PostgresMessageStore;
export type PostgresMessageStore = PostgresModule.PostgresMessageStore;
export type StoreConfig = CreateStoreModule.StoreConfig;
export declare const createStore: typeof CreateStoreModule.createStore;
export declare const FileSink: typeof FileSinkModule.FileSink;
export type FileSink = FileSinkModule.FileSink;
export declare const fileSinkSchema: typeof FileSinkModule.fileSinkSchema;
export declare const HttpSink: typeof HttpSinkModule.HttpSink;
export type HttpSink = HttpSinkModule.HttpSink;
export declare const httpSinkSchema: typeof HttpSinkModule.httpSinkSchema;
export declare const FhirSink: typeof FhirSinkModule.FhirSink;
export type FhirSink = FhirSinkModule.FhirSink;
export declare const fhirSinkSchema: typeof FhirSinkModule.fhirSinkSchema;
export declare const toTransaction: typeof FhirSinkModule.toTransaction;
export declare const FileSource: typeof FileSourceModule.FileSource;
export type FileSource = FileSourceModule.FileSource;
export declare const fileSourceSchema: typeof FileSourceModule.fileSourceSchema;
export declare const HttpSource: typeof HttpSourceModule.HttpSource;
export type HttpSource = HttpSourceModule.HttpSource;
export declare const httpSourceSchema: typeof HttpSourceModule.httpSourceSchema;
export declare const FhirJsonTransform: typeof FhirJsonModule.FhirJsonTransform;
export type FhirJsonTransform = FhirJsonModule.FhirJsonTransform;
export declare const corePlugin: typeof CorePluginModule.corePlugin;
export declare const AuthError: typeof AuthModule.AuthError;
export type AuthError = AuthModule.AuthError;
export declare const Authenticator: typeof AuthModule.Authenticator;
export type Authenticator = AuthModule.Authenticator;
export declare const FailureLimiter: typeof AuthModule.FailureLimiter;
export type FailureLimiter = AuthModule.FailureLimiter;
export declare const ensureInitialToken: typeof AuthModule.ensureInitialToken;
export declare const AdminGuard: typeof GuardModule.AdminGuard;
export type AdminGuard = GuardModule.AdminGuard;
export declare const GuardError: typeof GuardModule.GuardError;
export type GuardError = GuardModule.GuardError;
export declare const requireRole: typeof GuardModule.requireRole;
export declare const principalLabel: typeof GuardModule.principalLabel;
export declare const startAdmin: typeof AdminServerModule.startAdmin;
export type AdminServer = AdminServerModule.AdminServer;
export declare const AuditSource: typeof AuditSourceModule.AuditSource;
export type AuditSource = AuditSourceModule.AuditSource;
export declare const auditSourceSchema: typeof AuditSourceModule.auditSourceSchema;
export declare const toAuditEvent: typeof AuditSourceModule.toAuditEvent;
