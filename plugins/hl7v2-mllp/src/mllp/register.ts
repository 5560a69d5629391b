import type { PluginRegistrar } from '@ferry/core';
import { sendCommand } from '../cli/send.command';
import { mllpSinkSchema, mllpSourceSchema } from './mllp.schema';
import { MllpSink } from './mllp.sink';
import { MllpSource } from './mllp.source';

/** The MLLP parts of the plugin: `type: mllp` source and sink, `ferry send`. */
export function registerMllp(reg: PluginRegistrar): void {
  reg.addSourceType('mllp', MllpSource, mllpSourceSchema);
  reg.addSinkType('mllp', MllpSink, mllpSinkSchema);
  reg.addCommand(sendCommand());
}
