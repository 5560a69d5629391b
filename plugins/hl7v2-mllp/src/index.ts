import { definePlugin } from '@ferry/core';

// HL7 v2 codec and HL7 v2 -> FHIR R4 conversion (conversion helper)
export * from './hl7v2';
export * from './fhir';
// FHIR R4 -> HL7 v2 (outbound)
export * from './v2out';
import { Hl7v2Transform, conversionConfigSchema } from './fhir';

// MLLP listener / sender, ACKs (MLLP helper)
export * from './mllp';
import { registerMllp } from './mllp/register';

export const hl7v2MllpPlugin = definePlugin({
  manifest: { id: 'hl7v2-mllp', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {
    ...conversionConfigSchema, // plugins.hl7v2-mllp.conversion (conversion helper)
  },
  register(reg) {
    registerMllp(reg); // MLLP source/sink/command (MLLP helper)
    reg.addTransform(Hl7v2Transform); // application/hl7-v2 -> FHIR R4 (conversion helper)
  },
});
export default hl7v2MllpPlugin;
