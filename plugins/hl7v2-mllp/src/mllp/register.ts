import type { PluginRegistrar } from '@ferry/core';
import { mllpSourceSchema } from './mllp.schema';
import { MllpSource } from './mllp.source';

/** The MLLP parts of the plugin: `type: mllp` source and sink, `ferry send`. */
export function registerMllp(reg: PluginRegistrar): void {
  reg.addSourceType('mllp', MllpSource, mllpSourceSchema);
}
