import { FhirJsonTransform } from '../fhir/fhir-json.transform';
import { definePlugin } from './api';
import { FhirSink, fhirSinkSchema } from '../sinks/fhir.sink';
import { FileSink, fileSinkSchema, NdjsonWriters, ndjsonWritersToken } from '../sinks/file.sink';
import { HttpSink, httpSinkSchema } from '../sinks/http.sink';
import { AuditSource, auditSourceSchema } from '../sources/audit.source';
import { FileSource, fileSourceSchema } from '../sources/file.source';
import { HttpSource, httpSourceSchema } from '../sources/http.source';
import { CORE_VERSION } from './plugin-host';

/** The core's own source and sink types and the FHIR JSON transform; always loaded first. */
export const corePlugin = definePlugin({
  manifest: {
    id: 'core',
    version: CORE_VERSION,
    engine: `^${CORE_VERSION}`,
    description: 'file/http/audit sources; file/http/fhir sinks; FHIR JSON transform',
  },
  configSchema: {},
  register(reg) {
    reg.addTransform(FhirJsonTransform);
    reg.addSourceType('file', FileSource, fileSourceSchema);
    reg.addSourceType('http', HttpSource, httpSourceSchema);
    reg.addSourceType('audit', AuditSource, auditSourceSchema);
    reg.provide(ndjsonWritersToken, () => new NdjsonWriters());
    reg.addSinkType('file', FileSink, fileSinkSchema);
    reg.addSinkType('http', HttpSink, httpSinkSchema);
    reg.addSinkType('fhir', FhirSink, fhirSinkSchema);
  },
});
