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
      compileRoute({
        ...base,
        id: 'pat',
        from: [],
        when: { messageType: [], fhirpath: 'Bundle.entry.resource.ofType(Patient).exists()' },
      }),
      compileRoute({ ...base, id: 'other-src', from: ['b'], when: { messageType: [], fhirpath: '' } }),
    ];
    const msg = {
      id: '1',
      seq: 1,
      sourceId: 'a',
      contentType: 'x',
      headers: { messageType: 'ADT^A01' },
      receivedAt: new Date(),
      status: 'received' as const,
    };
    const withPatient = {
      resourceType: 'Bundle' as const,
      type: 'collection' as const,
      entry: [{ resource: { resourceType: 'Patient' as const } }],
    };
    expect(matchRoutes(routes, msg, withPatient).map((r) => r.config.id)).toEqual(['adt', 'pat']);
    expect(
      matchRoutes(
        routes,
        { ...msg, headers: { messageType: 'ORU^R01' } },
        { resourceType: 'Bundle', type: 'collection' },
      ).map((r) => r.config.id),
    ).toEqual([]);
  });

  it('glob: anchored at both ends, case-insensitive, ? exactly one character, regex characters literal', () => {
    expect(globToRegExp('DT^A01').test('ADT^A01')).toBe(false);
    expect(globToRegExp('ADT^A0').test('ADT^A01')).toBe(false);
    expect(globToRegExp('adt^a01').test('ADT^A01')).toBe(true);
    expect(globToRegExp('ORU^R0?').test('ORU^R0')).toBe(false);
    expect(globToRegExp('ORU^R0?').test('ORU^R012')).toBe(false);
    expect(globToRegExp('A*').test('A')).toBe(true);
    for (const [glob, notLiteral] of [
      ['A.B', 'AxB'],
      ['A+', 'AA'],
      ['A|B', 'A'],
      ['(A)', 'A'],
      ['[AB]', 'A'],
      ['A{2}', 'AA'],
      ['A$B', 'A'],
      ['A\\d', 'A1'],
    ]) {
      expect(globToRegExp(glob).test(glob)).toBe(true);
      expect(globToRegExp(glob).test(notLiteral)).toBe(false);
    }
  });

  it('from and messageType: empty matches everything (even no type); otherwise exactly the listed ones', () => {
    const base = { steps: [], to: ['x'], ordering: 'strict' as const };
    const any = compileRoute({ ...base, id: 'any', from: [], when: { messageType: [], fhirpath: '' } });
    const some = compileRoute({
      ...base,
      id: 'some',
      from: ['a', 'b'],
      when: { messageType: ['ADT^A01', 'ORU^*'], fhirpath: '' },
    });
    expect(any.matchesSource('zzz')).toBe(true);
    expect(any.matchesType(undefined)).toBe(true);
    expect(some.matchesSource('a')).toBe(true);
    expect(some.matchesSource('b')).toBe(true);
    expect(some.matchesSource('c')).toBe(false);
    expect(some.matchesType(undefined)).toBe(false);
    expect(some.matchesType('ORU^R01')).toBe(true);
    expect(some.matchesType('ADT^A01')).toBe(true);
    expect(some.matchesType('ADT^A02')).toBe(false);
  });

  it('every condition must hold: source, type and FHIRPath each exclude on their own', () => {
    const base = { steps: [], to: ['x'], ordering: 'strict' as const };
    const r = compileRoute({
      ...base,
      id: 'r',
      from: ['a'],
      when: { messageType: ['ADT^*'], fhirpath: 'Bundle.entry.resource.ofType(Patient).exists()' },
    });
    const msg = {
      id: '1',
      seq: 1,
      sourceId: 'a',
      contentType: 'x',
      headers: { messageType: 'ADT^A01' },
      receivedAt: new Date(),
      status: 'received' as const,
    };
    const patient = {
      resourceType: 'Bundle' as const,
      type: 'collection' as const,
      entry: [{ resource: { resourceType: 'Patient' as const } }],
    };
    const none = { resourceType: 'Bundle' as const, type: 'collection' as const, entry: [] };
    expect(matchRoutes([r], msg, patient)).toEqual([r]);
    expect(matchRoutes([r], { ...msg, sourceId: 'b' }, patient)).toEqual([]);
    expect(matchRoutes([r], { ...msg, headers: { messageType: 'ORU^R01' } }, patient)).toEqual([]);
    expect(matchRoutes([r], msg, none)).toEqual([]);
  });
});
