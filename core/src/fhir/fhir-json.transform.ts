import type { Bundle, BundleEntry, MessageHeader, Patient, Resource } from '@medplum/fhirtypes';
import { createHash } from 'node:crypto';
import { injectable } from 'tsyringe';
import { inputError } from '../errors';
import { isFhirResourceType } from './validator';
import { ContentType, type MessageHeaders, type StoredMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';

const HANDLED = new Set<string>([ContentType.fhirJson, ContentType.json]);

function parse(body: Buffer): Resource {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8').replace(/^\uFEFF/, ''));
  } catch (e) {
    throw inputError('FHIR_JSON_PARSE', `not JSON: ${(e as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw inputError('FHIR_JSON_SHAPE', 'a FHIR JSON message must be one resource or a Bundle');
  const rt = (value as { resourceType?: unknown }).resourceType;
  if (typeof rt !== 'string' || !/^[A-Z][A-Za-z]+$/.test(rt))
    throw inputError('FHIR_JSON_SHAPE', 'not a FHIR resource: resourceType missing');
  // refused at intake (HTTP 400), before anything is acknowledged; the content is validated when processed
  if (!isFhirResourceType(rt))
    throw inputError('FHIR_JSON_SHAPE', `not a FHIR R4 resource: unknown resourceType "${rt}"`);
  return value as Resource;
}

function resources(r: Resource): Resource[] {
  return r.resourceType === 'Bundle'
    ? ((r as Bundle).entry ?? []).map((e) => e.resource).filter((x): x is Resource => !!x)
    : [r];
}

/**
 * FHIR R4 JSON in (a resource or a Bundle) -> the canonical Bundle. A resource is wrapped in a
 * `collection` Bundle; a Bundle keeps its entries (a `message` Bundle's MessageHeader gives the
 * message type). Entries get `urn:uuid:` fullUrls derived from their content when they have none,
 * so the same input always gives the same output.
 */
@injectable()
export class FhirJsonTransform implements MessageTransform {
  readonly name = 'fhir-json';

  canHandle(contentType: string): boolean {
    return HANDLED.has(contentType);
  }

  extractHeaders(body: Buffer): MessageHeaders {
    const r = parse(body);
    const all = resources(r);
    const header = all.find((x): x is MessageHeader => x.resourceType === 'MessageHeader');
    const event = header?.eventCoding?.code ?? header?.eventUri;
    const patientId = all.find((x): x is Patient => x.resourceType === 'Patient')?.identifier?.find((i) => i.value);
    const bundle = r.resourceType === 'Bundle' ? (r as Bundle) : undefined;
    return {
      messageType: event
        ? `FHIR^${event}`
        : r.resourceType === 'Bundle'
          ? `Bundle^${bundle?.type ?? ''}`
          : r.resourceType,
      controlId: header?.id ?? bundle?.identifier?.value ?? r.id ?? undefined,
      sendingApplication: header?.source?.name ?? header?.source?.endpoint,
      orderingKey: patientId ? `${patientId.system ?? ''}|${patientId.value}` : undefined,
    };
  }

  toFhir(message: StoredMessage & { body: Buffer }): Bundle {
    const r = parse(message.body);
    const entries: BundleEntry[] =
      r.resourceType === 'Bundle'
        ? ((r as Bundle).entry ?? [])
            .filter((e) => e.resource)
            .map((e) => ({ fullUrl: e.fullUrl, resource: e.resource }))
        : [{ resource: r }];
    for (const e of entries) {
      if (!e.fullUrl) {
        const h = createHash('sha256').update(JSON.stringify(e.resource)).digest('hex');
        e.fullUrl = `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
      }
    }
    const src = r.resourceType === 'Bundle' ? (r as Bundle) : undefined;
    return {
      resourceType: 'Bundle',
      type: src?.type === 'message' || src?.type === 'transaction' || src?.type === 'batch' ? src.type : 'collection',
      ...(src?.identifier ? { identifier: src.identifier } : {}),
      ...(src?.timestamp ? { timestamp: src.timestamp } : {}),
      entry: entries,
    };
  }
}
