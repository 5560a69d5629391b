import { definePlugin } from './api';
import { FhirSink, fhirSinkSchema } from '../sinks/fhir.sink';
import { FileSink, fileSinkSchema } from '../sinks/file.sink';
import { HttpSink, httpSinkSchema } from '../sinks/http.sink';
import { CORE_VERSION } from './plugin-host';

/** The core's own source and sink types; always loaded first. */
export const corePlugin = definePlugin({
  manifest: { id: 'core', version: CORE_VERSION, engine: `^${CORE_VERSION}` },
  configSchema: {},
  register(reg) {
    reg.addSinkType('file', FileSink, fileSinkSchema);
    reg.addSinkType('http', HttpSink, httpSinkSchema);
    reg.addSinkType('fhir', FhirSink, fhirSinkSchema);
  },
});
