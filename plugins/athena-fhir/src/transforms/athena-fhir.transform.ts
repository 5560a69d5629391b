/** Transform `athena-fhir`: an athena FHIR envelope (`application/vnd.athena.fhir+json`) to a canonical FHIR R4 Bundle. */
import type { MessageHeaders, MessageTransform, StoredMessage, TransformContext } from '@ferry/core';
import type { Bundle } from '@medplum/fhirtypes';
import {
  ATHENA_FHIR_CONTENT_TYPE,
  athenaFhirHeaders,
  athenaFhirToBundle,
  parseFhirEnvelope,
} from '../to-fhir/athena-fhir-canonical';

export class AthenaFhirTransform implements MessageTransform {
  readonly name = 'athena-fhir';
  canHandle(contentType: string): boolean {
    return contentType.split(';')[0].trim().toLowerCase() === ATHENA_FHIR_CONTENT_TYPE;
  }
  toFhir(message: StoredMessage & { body: Buffer }, _ctx: TransformContext): Bundle {
    return athenaFhirToBundle(parseFhirEnvelope(message.body));
  }
  extractHeaders(body: Buffer): MessageHeaders {
    return athenaFhirHeaders(parseFhirEnvelope(body));
  }
}
