/** DI tokens shared by the core and plugins. */
export const coreTokens = {
  /** Every registered source type (`SourceTypeRegistration`). */
  sources: Symbol.for('ferry.sources'),
  /** Every registered transform (`MessageTransform` ctor). */
  transforms: Symbol.for('ferry.transforms'),
  /** Every registered sink type (`SinkTypeRegistration`). */
  sinks: Symbol.for('ferry.sinks'),
  /** Every registered CLI command. */
  commands: Symbol.for('ferry.commands'),
  /** Per source instance. */
  SourceContext: Symbol.for('ferry.SourceContext'),
  /** Per sink instance. */
  SinkContext: Symbol.for('ferry.SinkContext'),
  /** The root logger. */
  Logger: Symbol.for('ferry.Logger'),
  /** The plugin's own config (`plugins.<id>`), in the plugin's container. */
  PluginConfig: Symbol.for('ferry.PluginConfig'),
  /** The message store, once opened. */
  MessageStore: Symbol.for('ferry.MessageStore'),
} as const;
