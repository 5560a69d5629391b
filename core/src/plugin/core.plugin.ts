import { FhirJsonTransform } from '../fhir/fhir-json.transform';
import { definePlugin } from './api';
import { FhirSink, fhirSinkSchema } from '../sinks/fhir.sink';
import { FileSink, fileSinkSchema } from '../sinks/file.sink';
import { HttpSink, httpSinkSchema } from '../sinks/http.sink';
import { CORE_VERSION } from './plugin-host';

/** The core's own source and sink types and the FHIR JSON transform; always loaded first. */
export const corePlugin = definePlugin({
  manifest: { id: 'core', version: CORE_VERSION, engine: `^${CORE_VERSION}` },
  configSchema: {},
  register(reg) {
    reg.addTransform(FhirJsonTransform);
    reg.addSinkType('file', FileSink, fileSinkSchema);
    reg.addSinkType('http', HttpSink, httpSinkSchema);
    reg.addSinkType('fhir', FhirSink, fhirSinkSchema);
  },
});
