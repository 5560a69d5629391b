import { definePlugin } from '@ferry/core';

// HL7 v2 codec (conversion helper)
export * from './hl7v2';

// MLLP listener / sender, ACKs (MLLP helper)
export * from './mllp';
import { registerMllp } from './mllp/register';

export const hl7v2MllpPlugin = definePlugin({
  manifest: { id: 'hl7v2-mllp', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register(reg) {
    registerMllp(reg); // MLLP source/sink/command (MLLP helper)
    // filled in by the hl7v2-mllp issue
  },
});
export default hl7v2MllpPlugin;
