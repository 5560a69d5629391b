import { evalFhirPathTyped, OperationOutcomeError, validateResource } from '@medplum/core';
import { ensureFhirDefinitions, validateBundle } from '../validate';
import { fastCheckFhirResource, isFhirResourceType, validateFhirResource, walkFhirResource } from './index';
import type { Ctx } from './check-context';
import { compile } from './plan';

const paths = (r: unknown, o?: Parameters<typeof validateFhirResource>[1]) =>
  validateFhirResource(r, o).map((i) => `${i.expression?.[0]}: ${i.details?.text}`);

describe('compiled FHIR R4 validator', () => {
  beforeAll(() => ensureFhirDefinitions());

  it('refuses an unknown resource type and a data type posing as a resource', () => {
    expect(paths({ resourceType: 'NotAThing' })).toEqual(['Resource.resourceType: Unknown resource type "NotAThing"']);
    expect(paths({ resourceType: 'HumanName', family: 'x' })).toEqual([
      'Resource.resourceType: Unknown resource type "HumanName"',
    ]);
    expect(paths({ id: 'x' })).toEqual(['Resource: Missing resource type']);
    expect(paths([1])).toEqual(['Resource: A resource must be a JSON object']);
    expect(isFhirResourceType('Patient')).toBe(true);
    expect(isFhirResourceType('DomainResource')).toBe(false);
  });

  it('checks primitive formats, types, unknown properties, cardinality and invariants, with medplum paths', () => {
    expect(paths({ resourceType: 'Patient', birthDate: 'Quibblesworth' })).toEqual([
      'Patient.birthDate: Invalid date format',
    ]);
    expect(
      paths({
        resourceType: 'Patient',
        name: { family: 'x' },
        telecom: [{ system: 'phone', value: 5 }],
        foo: 1,
        contact: [{}],
        extension: [{ url: 'http://x' }],
      }).sort(),
    ).toEqual(
      [
        'Patient.name: Expected array of values for property',
        'Patient.telecom[0].value: Invalid JSON type: expected string, but got number',
        'Patient.foo: Invalid additional property "foo"',
        "Patient.contact[0]: Constraint pat-1 not met: SHALL at least contain a contact's details or a reference to an organization",
        'Patient.contact[0]: Invalid empty non-primitive value',
        'Patient.extension[0]: Constraint ext-1 not met: Must have either extensions or value[x], not both',
      ].sort(),
    );
    expect(paths({ resourceType: 'Observation', code: { text: 'x' }, valueQuantity: { value: '1' } }).sort()).toEqual(
      [
        'Observation.status: Missing required property',
        'Observation.value[x].value: Invalid JSON type: expected number, but got string',
      ].sort(),
    );
  });

  it('refuses calendar days that do not exist and integers beyond 32 bits (R4 requires both; medplum checks neither)', () => {
    const calendar = 'Invalid date: that day does not exist in its month';
    for (const birthDate of ['2023-02-29', '2024-04-31', '1900-02-29', '2024-02-30', '2024-06-31'])
      expect(paths({ resourceType: 'Patient', birthDate })).toEqual([`Patient.birthDate: ${calendar}`]);
    for (const birthDate of ['2024-02-29', '2000-02-29', '2024-01-31', '2024-04-30', '2024-12', '2024'])
      expect(paths({ resourceType: 'Patient', birthDate })).toEqual([]);
    expect(paths({ resourceType: 'Patient', deceasedDateTime: '2023-02-29T10:00:00Z' })).toEqual([
      `Patient.deceased[x]: ${calendar}`,
    ]);
    expect(paths({ resourceType: 'Patient', meta: { lastUpdated: '2023-09-31T10:00:00.000Z' } })).toEqual([
      `Patient.meta.lastUpdated: ${calendar}`,
    ]);
    // medplum accepts what the generated checks and the walk refuse here
    expect(validateResource({ resourceType: 'Patient', birthDate: '2023-02-29' } as any)).toEqual([]);

    const range = 'Expected number to be a 32-bit integer (-2147483648 to 2147483647)';
    const obs = (valueInteger: number) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      valueInteger,
    });
    expect(paths(obs(2147483647))).toEqual([]);
    expect(paths(obs(-2147483648))).toEqual([]);
    expect(paths(obs(2147483648))).toEqual([`Observation.value[x]: ${range}`]);
    expect(paths(obs(-2147483649))).toEqual([`Observation.value[x]: ${range}`]);
    expect(paths({ resourceType: 'Patient', multipleBirthInteger: 2 ** 40 })).toEqual([
      `Patient.multipleBirth[x]: ${range}`,
    ]);
    expect(
      paths({ resourceType: 'Patient', contact: [{ name: { family: 'x' } }], photo: [{ size: 2 ** 32 }] }),
    ).toEqual([`Patient.photo[0].size: ${range}`]);
    expect(validateResource(obs(2 ** 40) as any)).toEqual([]);
  });

  it('checks required bindings on code elements (medplum does not), and can be told not to', () => {
    const p = { resourceType: 'Patient', gender: 'bogus' };
    expect(paths(p)).toEqual(['Patient.gender: Value is not in the required value set']);
    expect(paths(p, { requiredBindings: false })).toEqual([]);
    expect(() => validateResource(p as any)).not.toThrow();
    expect(paths({ resourceType: 'Patient', gender: 'female', telecom: [{ system: 'mobile', value: '1' }] })).toEqual([
      'Patient.telecom[0].system: Value is not in the required value set',
    ]);
  });

  it('checks required bindings on Coding and CodeableConcept elements (the enumerable R4 value sets)', () => {
    const clinical = 'http://terminology.hl7.org/CodeSystem/condition-clinical';
    const cond = (clinicalStatus: unknown) => ({
      resourceType: 'Condition',
      subject: { reference: 'Patient/1' },
      clinicalStatus,
    });
    expect(paths(cond({ coding: [{ system: clinical, code: 'bogus' }] }))).toEqual([
      'Condition.clinicalStatus: None of the codings is in the required value set',
    ]);
    // the right code in another system is not the value set's
    expect(paths(cond({ coding: [{ system: 'http://example.org/cs', code: 'active' }] }))).toEqual([
      'Condition.clinicalStatus: None of the codings is in the required value set',
    ]);
    // one coding from the value set is enough; a code without a system is looked up in the value set's systems
    expect(
      paths(
        cond({
          coding: [
            { system: 'http://example.org/cs', code: 'x' },
            { system: clinical, code: 'active' },
          ],
        }),
      ),
    ).toEqual([]);
    expect(paths(cond({ coding: [{ code: 'resolved' }] }))).toEqual([]);
    // nothing coded: not judged by the binding
    expect(paths(cond({ text: 'active' }))).toEqual([]);
    expect(paths(cond({ coding: [{ system: clinical, code: 'bogus' }] }), { requiredBindings: false })).toEqual([]);
    expect(() => validateResource(cond({ coding: [{ system: clinical, code: 'bogus' }] }) as any)).not.toThrow();
    expect(
      paths({
        resourceType: 'AllergyIntolerance',
        patient: { reference: 'Patient/1' },
        clinicalStatus: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }],
        },
        verificationStatus: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification', code: 'nope' }],
        },
      }),
    ).toEqual(['AllergyIntolerance.verificationStatus: None of the codings is in the required value set']);
  });

  it('finds a null inside an array given for a single primitive (not walked: Location.mode [[null]]), as medplum does', () => {
    const r = { resourceType: 'Location', name: '22', mode: [[null]], identifier: [{ value: '22' }] };
    const mine = paths(r);
    expect(mine).toContain('Location.mode[0].0: Invalid null value');
    const theirs = (() => {
      try {
        validateResource(r as any);
        return [] as string[];
      } catch (e) {
        return (
          (e as { outcome?: { issue?: { expression?: string[]; details?: { text?: string } }[] } }).outcome?.issue ?? []
        ).map((i) => `${i.expression?.[0]}: ${i.details?.text}`);
      }
    })();
    expect(theirs).toContain('Location.mode[0].0: Invalid null value');
  });

  it('reports a null inside a Bundle entry once (the Bundle and its entry resource share one null check)', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          fullUrl: 'urn:uuid:6e6c3c36-3b0e-4b8e-9d4e-1d2b3c4d5e6f',
          resource: { resourceType: 'Patient', gender: null },
        },
      ],
    };
    expect(validateBundle(b as any)?.issue?.map((i) => `${i.expression?.[0]}: ${i.details?.text}`)).toEqual([
      'Bundle.entry[0].resource.gender: Invalid null value',
    ]);
  });

  it('accepts valid resources, primitive extensions and contained resources', () => {
    expect(
      paths({
        resourceType: 'Patient',
        birthDate: '1980-02-29',
        _birthDate: {
          extension: [
            { url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1980-02-29T10:00:00Z' },
          ],
        },
        name: [{ given: ['A', 'B'], _given: [null, { extension: [{ url: 'http://x', valueString: 'y' }] }] }],
      }),
    ).toEqual([]);
    expect(
      paths({
        resourceType: 'DiagnosticReport',
        status: 'final',
        code: { text: 'x' },
        result: [{ reference: '#o' }],
        contained: [{ resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'y' } }],
      }),
    ).toEqual([]);
  });

  it("holds every value of a data type to the type's own invariants (medplum: only the element's)", () => {
    const obs = (x: object) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, ...x });
    const cases: [unknown, string[]][] = [
      [obs({ valueQuantity: { value: 1, code: 'mg' } }), ['Observation.value[x]: Constraint qty-3 not met']],
      [obs({ valueQuantity: { value: 1, code: 'mg', system: 'http://unitsofmeasure.org' } }), []],
      [
        obs({ valueRange: { low: { value: 5 }, high: { value: 1 } } }),
        ['Observation.value[x]: Constraint rng-2 not met'],
      ],
      [obs({ valueRatio: { numerator: { value: 1 } } }), ['Observation.value[x]: Constraint rat-1 not met']],
      [obs({ subject: { reference: '#p1' } }), ['Observation.subject: Constraint ref-1 not met']],
      [obs({ contained: [{ resourceType: 'Patient', id: 'p1' }], subject: { reference: '#p1' } }), []],
      [obs({ subject: { display: 'x' }, performer: [{ identifier: { value: '1' } }] }), []],
      [{ resourceType: 'Patient', telecom: [{ value: '555' }] }, ['Patient.telecom[0]: Constraint cpt-2 not met']],
      [
        {
          resourceType: 'Patient',
          telecom: [{ value: '555', _system: { extension: [{ url: 'http://x', valueCode: 'unknown' }] } }],
        },
        [],
      ],
      [{ resourceType: 'Patient', photo: [{ data: 'YWJj' }] }, ['Patient.photo[0]: Constraint att-1 not met']],
      // an element typed Quantity with the SimpleQuantity profile: no comparator (sqty-1)
      [
        obs({ referenceRange: [{ low: { value: 1, comparator: '<' } }] }),
        ['Observation.referenceRange[0].low: Constraint sqty-1 not met'],
      ],
      [obs({ referenceRange: [{ low: { value: 1 } }], valueQuantity: { value: 1, comparator: '<' } }), []],
      [
        { resourceType: 'Patient', name: [{ family: 'x', period: { start: '2024-01-02', end: '2024-01-01' } }] },
        ['Patient.name[0].period: Constraint per-1 not met'],
      ],
      [{ resourceType: 'Patient', name: [{ family: 'x', period: { start: '2024-01-01', end: '2024-01-02' } }] }, []],
    ];
    for (const [r, want] of cases) {
      expect(paths(r).map((x) => x.replace(/(not met).*/, '$1'))).toEqual(want);
      // medplum evaluates none of these
      expect(validateResource(r as any).filter((i) => i.severity === 'error')).toEqual([]);
    }
    // a backbone element's own invariant is on its element already: reported once
    expect(paths({ resourceType: 'Patient', contact: [{ gender: 'male' }] }).map((x) => x.slice(0, 44))).toEqual([
      'Patient.contact[0]: Constraint pat-1 not met',
    ]);
  });

  it('dom-3: a contained resource is referenced from its container or refers to it (medplum skips dom-3)', () => {
    const obs = (x: object) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, ...x });
    const p1 = { resourceType: 'Patient', id: 'p1' };
    const dom3 = (r: unknown) => paths(r).filter((x) => x.includes('dom-3')).length;
    expect(paths(obs({ contained: [p1] })).map((x) => x.slice(0, 37))).toEqual([
      'Observation: Constraint dom-3 not met',
    ]);
    expect(dom3(obs({ contained: [p1], subject: { reference: '#p1' } }))).toBe(0);
    // from another contained resource, or the contained one refers to its container
    const org = { resourceType: 'Organization', id: 'o1' };
    expect(
      dom3(obs({ contained: [p1, { ...org, partOf: { reference: '#p1' } }], performer: [{ reference: '#o1' }] })),
    ).toBe(0);
    expect(dom3(obs({ contained: [{ ...p1, link: [{ other: { reference: '#' }, type: 'seealso' }] }] }))).toBe(0);
    expect(dom3(obs({ contained: [p1, org], subject: { reference: '#p1' } }))).toBe(1);
    // as FHIRPath reads it: a contained resource without an id is not "unmatched"
    expect(dom3(obs({ contained: [{ resourceType: 'Patient' }] }))).toBe(0);
    expect(fastCheckFhirResource(obs({ contained: [p1] }))).toBe(false);
    expect(fastCheckFhirResource(obs({ contained: [p1], subject: { reference: '#p1' } }))).toBe(true);
    expect(validateResource(obs({ contained: [p1] }) as any).filter((i) => i.severity === 'error')).toEqual([]);
  });

  it('decides per-1 and ref-1 directly where it can, with the FHIRPath verdicts', () => {
    const ctxOf = (root: object | undefined): Ctx => ({
      issues: [],
      resources: root ? [root] : [],
      root: root ? { type: (root as { resourceType: string }).resourceType, value: root } : undefined,
      bindings: true,
      entriesAsResources: false,
      nulls: false,
    });
    const per1 = compile('Period')!.invariants.find((i) => i.key === 'per-1')!;
    const periods: Record<string, unknown>[] = [
      {},
      { start: '2024-01-01' },
      { end: '2024-01-01' },
      { start: '2024-01-01', end: '2024-01-02' },
      { start: '2024-01-02', end: '2024-01-01' },
      { start: '2024-01-01', end: '2024-01-01' },
      { start: '2024-01-01T10:00:00Z', end: '2024-01-01T09:59:59Z' },
      { start: '2024-01-01T10:00:00Z', end: '2024-01-01T10:00:01Z' },
      { start: '2024-01-01T10:00:00+05:00', end: '2024-01-01T09:00:00+05:00' },
      { start: '2024-01-01T10:00:00+05:00', end: '2024-01-01T06:00:00Z' }, // zones differ: evaluated
      { start: '2024-01-01T10:00:00+05:00', end: '2024-01-01T04:00:00Z' },
      { start: '2024', end: '2024-01-01' }, // lengths differ: evaluated
      { start: '2024-03', end: '2024-02' },
    ];
    const verdicts = periods.map((v) => {
      const fhirpath = evalFhirPathTyped(per1.constraint.expression, [{ type: 'Period', value: v }]);
      const holds = fhirpath.length === 1 && fhirpath[0].value === true;
      const reported = paths({ resourceType: 'Patient', name: [{ family: 'x', period: v }] }).length > 0;
      return { v, direct: per1.direct!(v, ctxOf(undefined)), holds, reported };
    });
    // where the direct check decides, it decides as FHIRPath does; the validator reports exactly the failures
    expect(verdicts.filter((x) => x.direct !== undefined && x.direct !== x.holds)).toEqual([]);
    expect(verdicts.filter((x) => x.reported === x.holds)).toEqual([]);
    expect(verdicts.filter((x) => x.direct === undefined)).toHaveLength(3);
    const ref1 = compile('Reference')!.invariants.find((i) => i.key === 'ref-1')!;
    // no `reference`, a non-local one, '#' (the container): hold; a local one: evaluated against contained ids
    const none = ctxOf(undefined);
    expect(
      [{}, { display: 'x' }, { reference: 'Patient/1' }, { reference: '#' }, { reference: 5 }].map((v) =>
        ref1.direct!(v, none),
      ),
    ).toEqual([true, true, true, true, true]);
    const container = ctxOf({ resourceType: 'Observation', contained: [{ resourceType: 'Patient', id: 'p1' }] });
    expect([ref1.direct!({ reference: '#p1' }, container), ref1.direct!({ reference: '#p2' }, container)]).toEqual([
      true,
      false,
    ]);
    expect(ref1.direct!({ reference: '#p1' }, none)).toBe(false);
    // the generated checks decide ref-1 inside Reference's own check (onKey), where they meet `reference`
    const local = (reference: string) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      contained: [{ resourceType: 'Patient', id: 'p1' }],
      subject: { reference: '#p1' },
      performer: [{ reference }],
    });
    expect([fastCheckFhirResource(local('#p1')), fastCheckFhirResource(local('#p2'))]).toEqual([true, false]);
    expect(paths(local('#p2'))).toEqual([
      'Observation.performer[0]: Constraint ref-1 not met: SHALL have a contained resource if a local reference is provided',
    ]);
    // a Bundle validated with its entries as elements (medplum's reading, the default of validateFhirResource):
    // the entry resource's contained, not the Bundle's
    const entry = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      contained: [{ resourceType: 'Patient', id: 'p1' }],
      subject: { reference: '#p1' },
    };
    const bundle = { resourceType: 'Bundle', type: 'collection', entry: [{ fullUrl: 'urn:uuid:1', resource: entry }] };
    expect(validateFhirResource(bundle)).toEqual([]);
    expect(validateFhirResource(bundle, { entriesAsResources: true })).toEqual([]);
    expect(walkFhirResource(bundle)).toEqual([]);
  });

  it('decides the Bundle invariants, cpt-2 and qty-3 directly where it can, with the FHIRPath verdicts', () => {
    const ctx: Ctx = {
      issues: [],
      resources: [],
      root: undefined,
      bindings: true,
      entriesAsResources: false,
      nulls: false,
    };
    const dar = {
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'unknown' }],
    };
    const header = { resourceType: 'MessageHeader', eventCoding: { code: 'A01' }, source: { endpoint: 'x' } };
    const patient = { resourceType: 'Patient', id: 'p1' };
    const entry = (fullUrl: string, resource: object, extra: object = {}) => ({ fullUrl, resource, ...extra });
    const bundles: Record<string, unknown>[] = [
      { resourceType: 'Bundle', type: 'message', entry: [entry('urn:uuid:1', header), entry('urn:uuid:2', patient)] },
      { resourceType: 'Bundle', type: 'message', entry: [entry('urn:uuid:2', patient), entry('urn:uuid:1', header)] },
      { resourceType: 'Bundle', type: 'message', entry: [entry('urn:uuid:1', header), entry('urn:uuid:1', patient)] },
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [entry('urn:uuid:1', patient, { request: { method: 'PUT', url: 'Patient/p1' } })],
      },
      { resourceType: 'Bundle', type: 'transaction', entry: [entry('urn:uuid:1', patient)] },
      { resourceType: 'Bundle', type: 'transaction', total: 1, entry: [] },
      {
        resourceType: 'Bundle',
        type: 'searchset',
        total: 1,
        entry: [entry('urn:uuid:1', patient, { search: { mode: 'match' } })],
      },
      {
        resourceType: 'Bundle',
        type: 'collection',
        entry: [entry('urn:uuid:1', patient, { search: { mode: 'match' } })],
      },
      {
        resourceType: 'Bundle',
        type: 'collection',
        entry: [
          entry('urn:uuid:1', { ...patient, meta: { versionId: '1' } }),
          entry('urn:uuid:1', { ...patient, meta: { versionId: '2' } }),
        ],
      },
      {
        resourceType: 'Bundle',
        type: 'collection',
        entry: [
          entry('urn:uuid:1', { ...patient, meta: { versionId: '1' } }),
          entry('urn:uuid:1', { ...patient, meta: { versionId: '1' } }),
        ],
      },
      { resourceType: 'Bundle', type: 'document', entry: [entry('urn:uuid:1', patient)] },
      { resourceType: 'Bundle', type: 'message', entry: [] },
      { resourceType: 'Bundle', type: 'message' },
      { resourceType: 'Bundle', entry: [entry('urn:uuid:1', header)] },
      { resourceType: 'Bundle', type: 'message', _type: { id: 't' }, entry: [entry('urn:uuid:1', header)] },
    ];
    const cases: [string, string, unknown][] = [];
    for (const inv of compile('Bundle')!.invariants) for (const b of bundles) cases.push(['Bundle', inv.key, b]);
    const points: unknown[] = [
      { value: '555' },
      { value: '555', system: 'phone' },
      { value: '555', _system: dar },
      { value: '555', system: 'phone', _system: dar },
      { value: '555', _system: { id: 'a' } },
      { value: '555', _system: {} },
      { _value: dar, system: 'phone' },
      { _value: dar },
      { system: 'phone' },
    ];
    for (const v of points) cases.push(['ContactPoint', 'cpt-2', v]);
    for (const v of [
      { value: 1, code: 'mg' },
      { value: 1, code: 'mg', _system: dar },
      { value: 1, _code: dar },
      { code: 'mg', system: 'http://unitsofmeasure.org' },
    ])
      cases.push(['Quantity', 'qty-3', v]);
    const verdicts = cases.map(([type, key, v]) => {
      const inv = compile(type)!.invariants.find((i) => i.key === key)!;
      const resource = type === 'Bundle' ? [{ type, value: v }] : [];
      const out = evalFhirPathTyped(inv.constraint.expression, [{ type, value: v }], {
        '%resource': resource[0] ?? { type, value: v },
        '%rootResource': resource[0] ?? { type, value: v },
        '%ucum': { type: 'uri', value: 'http://unitsofmeasure.org' },
      });
      return { key, v, direct: inv.direct!(v, ctx), holds: out.length === 1 && out[0].value === true };
    });
    // where a direct check decides, it decides as FHIRPath does; and it decides the common shapes
    expect(verdicts.filter((x) => x.direct !== undefined && x.direct !== x.holds)).toEqual([]);
    const decided = (key: string) => verdicts.filter((x) => x.key === key && x.direct !== undefined).length;
    expect(['bdl-1', 'bdl-2', 'bdl-3', 'bdl-4', 'bdl-7', 'bdl-9', 'bdl-12', 'cpt-2', 'qty-3'].map(decided)).toEqual([
      12, 13, 14, 14, 14, 12, 11, 6, 4,
    ]);
    // both outcomes occur among the decided ones
    expect(new Set(verdicts.filter((x) => x.direct !== undefined).map((x) => x.holds))).toEqual(new Set([true, false]));
  });

  it("decides obs-7, ctm-1, app-4, tim-9 and txt-* directly where it can, with medplum's verdicts", () => {
    const medplumPaths = (r: unknown) => {
      let issues;
      try {
        issues = validateResource(r as any);
      } catch (e) {
        if (!(e instanceof OperationOutcomeError)) throw e;
        issues = e.outcome.issue ?? [];
      }
      return issues.filter((i) => i.severity === 'error').map((i) => `${i.expression?.[0]}: ${i.details?.text}`);
    };
    const obs = { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 's', code: 'c' }] } };
    const comp = { code: { coding: [{ system: 's', code: 'c' }] }, valueString: 'x' };
    const team = (member: unknown) => ({
      resourceType: 'CareTeam',
      participant: [{ member, onBehalfOf: { reference: 'Organization/1' } }],
    });
    const cases: unknown[] = [
      { ...obs, component: [comp] }, // no value: obs-7 holds
      { ...obs, valueString: 'v', component: [comp] }, // a value and components: medplum's intersect decides
      { ...obs, valueString: 'v', component: [{ ...comp, code: { text: 'other' } }] },
      { ...obs, _status: { id: 'x' }, component: [comp] },
      team({ reference: 'urn:uuid:6e6c3c36-3b0e-4b8e-9d4e-1d2b3c4d5e6f' }), // resolves to nothing: holds
      team({ reference: 'Patient/1' }), // not a Practitioner: ctm-1 fails
      team({ reference: 'Practitioner/1' }),
      team(undefined),
      {
        resourceType: 'Appointment',
        status: 'booked',
        start: '2024-01-01T10:00:00Z',
        end: '2024-01-01T11:00:00Z',
        participant: [{ status: 'accepted', actor: { display: 'x' } }],
      },
      {
        resourceType: 'Appointment',
        status: 'booked',
        start: '2024-01-01T10:00:00Z',
        end: '2024-01-01T11:00:00Z',
        cancelationReason: { text: 'x' },
        participant: [{ status: 'accepted', actor: { display: 'x' } }],
      },
      {
        resourceType: 'MedicationRequest',
        status: 'active',
        intent: 'order',
        medicationCodeableConcept: { text: 'x' },
        subject: { reference: 'Patient/1' },
        dosageInstruction: [
          { timing: { repeat: { when: ['MORN'] } } },
          { timing: { repeat: { when: ['C'], offset: 5 } } },
        ],
      },
      {
        resourceType: 'Patient',
        text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
      },
    ];
    for (const r of cases) {
      const mine = paths(structuredClone(r)).sort();
      expect({ r, issues: mine }).toEqual({ r, issues: medplumPaths(structuredClone(r)).sort() });
    }
    // the failing ones do fail (the cases are not all trivially valid)
    expect(paths(cases[5]).join()).toContain('ctm-1');
    expect(paths(cases[9]).join()).toContain('app-4');
    expect(paths(cases[10]).join()).toContain('tim-9');
  });

  it("the generated checks' string formats (short and long, ASCII or not) agree with the walk's regexes", () => {
    const pad = 'abcdefghijklmnopqrstuvwxyz'; // past the 16 characters scanned in JavaScript
    const samples = ['a', 'ok go', ' a', 'a ', 'a  b', 'a\tb', 'a\u0001b', 'é', 'a\u00a0b', 'a\u2028b', 'x\u3000'];
    const values = samples.flatMap((s) => [s, pad + s, s + pad, pad + s + pad]);
    for (const v of values) {
      const r = {
        resourceType: 'Patient',
        implicitRules: v, // uri
        language: v, // code (its value set is not enumerable: the format alone)
        name: [{ text: v }], // string
        meta: { versionId: v }, // id
      };
      expect({ v, issues: validateFhirResource(structuredClone(r)) }).toEqual({
        v,
        issues: walkFhirResource(structuredClone(r)),
      });
    }
  });

  it('validateBundle: entry resources as resources of their own, paths into the Bundle', () => {
    const b = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          fullUrl: 'urn:uuid:6e6c3c36-3b0e-4b8e-9d4e-1d2b3c4d5e6f',
          resource: { resourceType: 'Patient', birthDate: 'Quibblesworth' },
        },
        { resource: { resourceType: 'NotAThing' } },
      ],
    };
    const outcome = validateBundle(b as any);
    expect(outcome?.resourceType).toBe('OperationOutcome');
    expect(outcome?.issue?.map((i) => i.expression?.[0])).toEqual([
      'Bundle.entry[0].resource.birthDate',
      'Bundle.entry[1].resource.resourceType',
    ]);
    expect(
      validateBundle({
        resourceType: 'Bundle',
        type: 'collection',
        entry: [{ resource: { resourceType: 'Patient', gender: 'male' } }],
      } as any),
    ).toBeUndefined();
  });
});
