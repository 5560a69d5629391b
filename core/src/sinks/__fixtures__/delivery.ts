import { randomUUID } from 'node:crypto';
import type { Bundle } from '@medplum/fhirtypes';
import { silentLogger } from '../../logging/logger';
import type { Delivery, SinkContext } from '../../plugin/api';
import type { StoredMessage } from '../../model/message';

export function sinkContext<C>(config: C, id = 'test-sink'): SinkContext<C> {
  return { id, config, logger: silentLogger() };
}

export function patientBundle(
  mrn: string,
  opts: { family?: string; withEncounter?: boolean; size?: number } = {},
): Bundle {
  const pid = `urn:uuid:${randomUUID()}`;
  const entry: NonNullable<Bundle['entry']> = [
    {
      fullUrl: pid,
      resource: {
        resourceType: 'Patient',
        identifier: [{ system: 'urn:oid:2.16.840.1.113883.3.1', value: mrn }],
        name: [{ family: opts.family ?? 'Doe', given: ['Jan'] }],
        gender: 'male',
        ...(opts.size
          ? {
              text: {
                status: 'generated',
                div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(opts.size)}</div>`,
              },
            }
          : {}),
      },
    },
  ];
  if (opts.withEncounter)
    entry.push({
      fullUrl: `urn:uuid:${randomUUID()}`,
      resource: {
        resourceType: 'Encounter',
        status: 'in-progress',
        class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
        identifier: [{ system: 'urn:visit', value: `V-${mrn}` }],
        subject: { reference: pid },
      },
    });
  return { resourceType: 'Bundle', type: 'collection', entry };
}

export function delivery(bundle: Bundle, over: Partial<StoredMessage> = {}, attempt = 1): Delivery {
  const message: StoredMessage = {
    id: over.id ?? randomUUID(),
    seq: 1,
    sourceId: 'src',
    contentType: 'application/hl7-v2',
    headers: { messageType: 'ADT^A01', controlId: 'CTRL1' },
    receivedAt: new Date('2026-11-29T10:00:00Z'),
    status: 'routed',
    ...over,
  };
  return { deliveryId: `dlv-${message.id}`, attempt, routeId: 'r1', bundle, message };
}
