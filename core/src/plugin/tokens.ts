/**
 * DI tokens shared by the core and plugins, typed: `createToken<T>(name)` makes a symbol that carries
 * the type of what is registered under it, so `container.resolve(token)` is a `T` without a cast, and
 * `reg.provide(token, create)` refuses a `create` of another type. `container.register(token, ...)` and
 * `@inject(token)` take it as they take any symbol: tsyringe's own overloads accept any value for a
 * symbol, and a parameter decorator cannot check the parameter's type (declare it as the token's type).
 */
import type {
  CommandRegistration,
  FacadeProviderTypeRegistration,
  SinkTypeRegistration,
  SourceTypeRegistration,
  TransformRegistration,
} from './plugin-host';
import type { Logger, SinkContext, SourceContext } from './api';

declare const tokenType: unique symbol;

/** A DI token for a `T`: a symbol (tsyringe takes it as is) branded with the type (no runtime field). */
export type Token<T> = symbol & { readonly [tokenType]?: T };

/** The type a token carries. */
export type TokenType<K> = K extends Token<infer T> ? T : never;

/**
 * A typed token. `Symbol.for`: the same name is the same token in every copy of @ferry/core a process
 * loads (a plugin with its own node_modules), as before.
 */
export const createToken = <T>(name: string): Token<T> => Symbol.for(name) as Token<T>;

// tsyringe's container methods take `InjectionToken<T>` (a class, a string or a symbol), from which a
// symbol gives no T: these overloads, tried first, give a typed token's T to what is resolved.
declare module 'tsyringe/dist/typings/types/dependency-container' {
  export default interface DependencyContainer {
    resolve<T>(token: Token<T>): T;
    resolveAll<T>(token: Token<T>): T[];
  }
}

export const coreTokens = {
  /** Every registered source type. */
  sources: createToken<SourceTypeRegistration>('ferry.sources'),
  /** Every registered transform. */
  transforms: createToken<TransformRegistration>('ferry.transforms'),
  /** Every registered sink type. */
  sinks: createToken<SinkTypeRegistration>('ferry.sinks'),
  /** Every registered CLI command. */
  commands: createToken<CommandRegistration>('ferry.commands'),
  /** Every registered connection kind with its facade provider. */
  facadeProviders: createToken<FacadeProviderTypeRegistration>('ferry.facadeProviders'),
  /** Per source instance. */
  SourceContext: createToken<SourceContext>('ferry.SourceContext'),
  /** Per sink instance. */
  SinkContext: createToken<SinkContext>('ferry.SinkContext'),
  /** The plugin's logger (root.child({ plugin })), in the plugin's container. */
  Logger: createToken<Logger>('ferry.Logger'),
  /** The plugin's own config (`plugins.<id>`), in the plugin's container. */
  PluginConfig: createToken<Record<string, unknown>>('ferry.PluginConfig'),
} as const;
