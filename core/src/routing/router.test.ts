import { compileRoute, globToRegExp, matchRoutes } from './router';

describe('router', () => {
  it('matches message type globs', () => {
    expect(globToRegExp('ADT^A0*').test('ADT^A01')).toBe(true);
    expect(globToRegExp('ADT^A0*').test('ADT^A11')).toBe(false);
    expect(globToRegExp('ORU^R0?').test('ORU^R01')).toBe(true);
    expect(globToRegExp('*').test('anything')).toBe(true);
    expect(globToRegExp('ADT^A01').test('ADT^A01^ADT_A01')).toBe(false);
  });

  it('matches several routes by source, type and FHIRPath', () => {
    const base = { steps: [], to: ['x'], ordering: 'strict' as const };
    const routes = [
      compileRoute({ ...base, id: 'adt', from: ['a'], when: { messageType: ['ADT^*'], fhirpath: '' } }),
      compileRoute({ ...base, id: 'pat', from: [], when: { messageType: [], fhirpath: "Bundle.entry.resource.ofType(Patient).exists()" } }),
      compileRoute({ ...base, id: 'other-src', from: ['b'], when: { messageType: [], fhirpath: '' } }),
    ];
    const msg = { id: '1', seq: 1, sourceId: 'a', contentType: 'x', headers: { messageType: 'ADT^A01' }, receivedAt: new Date(), status: 'received' as const };
    const withPatient = { resourceType: 'Bundle' as const, type: 'collection' as const, entry: [{ resource: { resourceType: 'Patient' as const } }] };
    expect(matchRoutes(routes, msg, withPatient).map((r) => r.config.id)).toEqual(['adt', 'pat']);
    expect(matchRoutes(routes, { ...msg, headers: { messageType: 'ORU^R01' } }, { resourceType: 'Bundle', type: 'collection' }).map((r) => r.config.id)).toEqual([]);
  });
});
