/**
 * @ferry/plugin-hl7v2-mllp: the MLLP listener and sender (`type: mllp` source and sink), `ferry send`, and the
 * HL7 v2 -> FHIR R4 transform registered for `application/hl7-v2` (it also writes FHIR R4 -> HL7 v2).
 * Source layout: README.md.
 */
import { definePlugin } from '@ferry/core';
import { sendCommand } from './cli/send.command';
import { mllpSinkSchema, mllpSourceSchema } from './mllp/mllp.schema';
import { MllpSink } from './sinks/mllp.sink';
import { MllpSource } from './sources/mllp.source';
import { Hl7v2Transform } from './transforms/hl7v2-to-fhir.transform';
import { conversionConfigSchema } from './v2-to-fhir/conversion.schema';

// The package's API: the codec, both conversions, MLLP framing / server / client, ACKs and the components.
export * from './hl7v2';
export * from './v2-to-fhir';
export * from './fhir-to-v2';
export * from './mllp';
export * from './ack/ack.builder';
export * from './ack/msh';
export * from './sources/mllp.source';
export * from './sinks/mllp.sink';
export * from './transforms/hl7v2-to-fhir.transform';
export * from './cli/send.command';

export const hl7v2MllpPlugin = definePlugin({
  manifest: { id: 'hl7v2-mllp', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {
    ...conversionConfigSchema, // plugins.hl7v2-mllp.conversion
  },
  register(reg) {
    reg.addSourceType('mllp', MllpSource, mllpSourceSchema);
    reg.addSinkType('mllp', MllpSink, mllpSinkSchema);
    reg.addCommand(sendCommand());
    reg.addTransform(Hl7v2Transform); // application/hl7-v2 -> FHIR R4 (and FHIR R4 -> HL7 v2 for `format: hl7v2`)
  },
});
export default hl7v2MllpPlugin;
