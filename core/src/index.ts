import 'reflect-metadata';

export * from './errors';
export * from './model/message';
export * from './plugin/api';
export * from './plugin/tokens';
export * from './store/message-store';
export * from './config/engine.schema';
export * from './engine/engine';
export { configure, type ConfigureOptions } from './engine/configure';
export { ConfigError, type ConfigProblem, validateWithSchema } from './config/load-config';


export { createLogger, silentLogger, errorFields } from './logging/logger';
export { PluginHost, manifestProblems, CORE_VERSION } from './plugin/plugin-host';
export { validateBundle, ensureFhirDefinitions } from './fhir/validate';
export { fhirpathTest, fhirpathEval } from './fhir/fhirpath';
export { globToRegExp } from './routing/router';
export * from './vendor';
export * from './store/sqlite.store';
export * from './store/postgres.store';
export * from './store/create-store';
