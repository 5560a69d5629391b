/** Transform `athena-rest`: one transform for every athena REST content type (`application/vnd.athena.*+json`). */
import type { MessageHeaders, MessageTransform, StoredMessage, TransformContext } from '@ferry/core';
import type { Bundle } from '@medplum/fhirtypes';
import {
  AthenaContentType,
  athenaEnvelopeToBundle,
  athenaHeaders,
  parseEnvelope,
  type AthenaKind,
} from '../to-fhir/athena-records';

const KIND_BY_TYPE = new Map<string, AthenaKind>(
  Object.entries(AthenaContentType).map(([k, v]) => [v, k as AthenaKind]),
);

export class AthenaRestTransform implements MessageTransform {
  readonly name = 'athena-rest';

  canHandle(contentType: string): boolean {
    return KIND_BY_TYPE.has(contentType.split(';')[0].trim().toLowerCase());
  }

  toFhir(message: StoredMessage & { body: Buffer }, _ctx: TransformContext): Bundle {
    const kind = KIND_BY_TYPE.get(message.contentType.split(';')[0].trim().toLowerCase());
    return athenaEnvelopeToBundle(parseEnvelope(message.body, kind));
  }

  extractHeaders(body: Buffer): MessageHeaders {
    return athenaHeaders(parseEnvelope(body));
  }
}
