import { FhirJsonTransform } from './fhir-json.transform';
import { validateBundle } from './validate';

const t = new FhirJsonTransform();
const msg = (o: unknown) => ({
  id: 'm',
  seq: 1,
  sourceId: 's',
  contentType: 'application/fhir+json',
  headers: {},
  receivedAt: new Date(0),
  status: 'received' as const,
  body: Buffer.from(JSON.stringify(o)),
});

describe('FhirJsonTransform', () => {
  const patient = {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:oid:1.2.3', value: '42' }],
    name: [{ family: 'Doe' }],
  };

  it('wraps a resource into a canonical collection Bundle, deterministically', () => {
    const a = t.toFhir(msg(patient));
    expect(a).toMatchObject({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: patient }] });
    expect(a.entry?.[0].fullUrl).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
    expect(JSON.stringify(t.toFhir(msg(patient)))).toBe(JSON.stringify(a));
    expect(validateBundle(a)).toBeUndefined();
  });

  it('keeps a Bundle, and reads headers from a message Bundle', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'message',
      entry: [
        {
          fullUrl: 'urn:uuid:6e6c3c36-3b0e-4b8e-9d4e-1d2b3c4d5e6f',
          resource: {
            resourceType: 'MessageHeader',
            id: 'mh1',
            eventCoding: { code: 'admit' },
            source: { endpoint: 'http://x' },
          },
        },
        { resource: patient },
      ],
    };
    expect(t.extractHeaders(Buffer.from(JSON.stringify(bundle)))).toEqual({
      messageType: 'FHIR^admit',
      controlId: 'mh1',
      sendingApplication: 'http://x',
      orderingKey: 'urn:oid:1.2.3|42',
    });
    const out = t.toFhir(msg(bundle));
    expect(out.type).toBe('message');
    expect(out.entry).toHaveLength(2);
    expect(out.entry?.[0].fullUrl).toBe('urn:uuid:6e6c3c36-3b0e-4b8e-9d4e-1d2b3c4d5e6f');
  });

  it('refuses what is not FHIR JSON with a clear input error', () => {
    expect(() => t.extractHeaders(Buffer.from('{nope'))).toThrow(/not JSON/);
    expect(() => t.extractHeaders(Buffer.from('[1]'))).toThrow(/one resource or a Bundle/);
    expect(() => t.extractHeaders(Buffer.from('{"a":1}'))).toThrow(/resourceType missing/);
  });
});
