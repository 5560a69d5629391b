/** DI tokens shared by the core and plugins. */
export const coreTokens = {
  /** Every registered source type (`SourceTypeRegistration`). */
  sources: Symbol.for('ferry.sources'),
  /** Every registered transform (`TransformRegistration`). */
  transforms: Symbol.for('ferry.transforms'),
  /** Every registered sink type (`SinkTypeRegistration`). */
  sinks: Symbol.for('ferry.sinks'),
  /** Every registered CLI command (`CommandRegistration`). */
  commands: Symbol.for('ferry.commands'),
  /** Every registered connection kind with its facade provider (`FacadeProviderTypeRegistration`). */
  facadeProviders: Symbol.for('ferry.facadeProviders'),
  /** Per source instance. */
  SourceContext: Symbol.for('ferry.SourceContext'),
  /** Per sink instance. */
  SinkContext: Symbol.for('ferry.SinkContext'),
  /** The plugin's logger (root.child({ plugin })), in the plugin's container. */
  Logger: Symbol.for('ferry.Logger'),
  /** The plugin's own config (`plugins.<id>`), in the plugin's container. */
  PluginConfig: Symbol.for('ferry.PluginConfig'),
} as const;
