/**
 * The seeds and seeded mutations of the validator's differential test (validator.differential.test.ts) and
 * of the generated checks' test (validator.fast-path.test.ts): hand-written resources of the common types,
 * a seeded random generator, and mutations of every element kind.
 */
import type { Resource } from '@medplum/fhirtypes';

// ---------------------------------------------------------------------------------------------------
// seeds

export const HAND_SEEDS: Resource[] = [
  {
    resourceType: 'Patient',
    id: 'p1',
    meta: { lastUpdated: '2024-01-02T03:04:05Z', tag: [{ system: 'http://x', code: 't' }] },
    extension: [{ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'F' }],
    identifier: [
      {
        system: 'urn:oid:1.2.3',
        value: '123',
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
      },
    ],
    active: true,
    name: [{ family: 'Doe', given: ['Jane', 'Q'], use: 'official', period: { start: '2000-01-01' } }],
    telecom: [{ system: 'phone', value: '555-1234', use: 'home', rank: 1 }],
    gender: 'female',
    birthDate: '1980-02-29',
    _birthDate: {
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1980-02-29T10:00:00Z' },
      ],
    },
    deceasedBoolean: false,
    address: [{ line: ['1 Main St'], city: 'Town', state: 'ST', postalCode: '12345', country: 'US', use: 'home' }],
    maritalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'M' }] },
    multipleBirthInteger: 2,
    contact: [
      {
        relationship: [{ text: 'mother' }],
        name: { family: 'Doe' },
        telecom: [{ system: 'email', value: 'a@b.c' }],
        gender: 'female',
      },
    ],
    communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en' }] }, preferred: true }],
    generalPractitioner: [{ reference: 'Practitioner/1', display: 'Dr X' }],
    managingOrganization: { reference: 'Organization/1' },
    link: [{ other: { reference: 'Patient/2' }, type: 'seealso' }],
  } as Resource,
  {
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    category: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
    ],
    code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }], text: 'BP' },
    subject: { reference: 'Patient/p1' },
    effectiveDateTime: '2024-01-02T03:04:05+01:00',
    issued: '2024-01-02T03:04:05.123Z',
    performer: [{ reference: 'Practitioner/1' }],
    interpretation: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'N' }] },
    ],
    note: [{ text: 'note', time: '2024-01-02' }],
    referenceRange: [
      {
        low: { value: 1, unit: 'mm', system: 'http://unitsofmeasure.org', code: 'mm' },
        high: { value: 2.5 },
        text: 'normal',
      },
    ],
    component: [
      {
        code: { text: 'systolic' },
        valueQuantity: {
          value: 120,
          unit: 'mmHg',
          system: 'http://unitsofmeasure.org',
          code: 'mm[Hg]',
          comparator: '<',
        },
      },
      { code: { text: 'diastolic' }, valueQuantity: { value: 80 }, interpretation: [{ text: 'N' }] },
      { code: { text: 'flag' }, dataAbsentReason: { text: 'unknown' } },
    ],
  } as Resource,
  {
    resourceType: 'Encounter',
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    subject: { reference: 'Patient/p1' },
    participant: [
      {
        type: [{ text: 'attending' }],
        individual: { reference: 'Practitioner/1' },
        period: { start: '2024-01-01T00:00:00Z', end: '2024-01-02T00:00:00Z' },
      },
    ],
    period: { start: '2024-01-01T00:00:00Z' },
    length: { value: 1, unit: 'd', system: 'http://unitsofmeasure.org', code: 'd' },
    hospitalization: { admitSource: { text: 'ER' }, dischargeDisposition: { text: 'home' } },
    location: [{ location: { reference: 'Location/1', display: 'Ward 1' }, status: 'completed' }],
    statusHistory: [{ status: 'arrived', period: { start: '2024-01-01T00:00:00Z' } }],
  } as Resource,
  {
    resourceType: 'MedicationRequest',
    status: 'active',
    intent: 'order',
    medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '1049502' }] },
    subject: { reference: 'Patient/p1' },
    authoredOn: '2024-01-02',
    dosageInstruction: [
      {
        sequence: 1,
        text: '1 tab daily',
        timing: { repeat: { frequency: 1, period: 1, periodUnit: 'd', boundsPeriod: { start: '2024-01-02' } } },
        route: { text: 'oral' },
        doseAndRate: [{ doseQuantity: { value: 1, unit: 'tab' } }],
      },
    ],
    dispenseRequest: {
      numberOfRepeatsAllowed: 2,
      quantity: { value: 30 },
      expectedSupplyDuration: { value: 30, unit: 'd', system: 'http://unitsofmeasure.org', code: 'd' },
    },
    substitution: { allowedBoolean: true },
  } as Resource,
  {
    resourceType: 'DiagnosticReport',
    status: 'final',
    code: { text: 'CBC' },
    subject: { reference: 'Patient/p1' },
    effectivePeriod: { start: '2024-01-01T00:00:00Z' },
    result: [{ reference: '#o2' }],
    contained: [{ resourceType: 'Observation', id: 'o2', status: 'final', code: { text: 'Hb' }, valueString: 'ok' }],
    presentedForm: [{ contentType: 'text/plain', data: 'aGVsbG8=' }],
  } as Resource,
  {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:0b1c7a3e-0000-4000-8000-000000000001',
        resource: { resourceType: 'Patient', name: [{ family: 'X' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: 'urn:uuid:0b1c7a3e-0000-4000-8000-000000000002',
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueInteger: 3 },
        request: { method: 'PUT', url: 'Observation?identifier=1' },
      },
    ],
  } as Resource,
  {
    resourceType: 'Appointment',
    status: 'booked',
    start: '2024-01-02T09:00:00Z',
    end: '2024-01-02T09:30:00Z',
    minutesDuration: 30,
    participant: [{ actor: { reference: 'Patient/p1' }, status: 'accepted', required: 'required' }],
  } as Resource,
];

// ---------------------------------------------------------------------------------------------------
// seeded mutations

export function rng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Slot = { parent: any; key: string | number; depth: number };

/** Every (parent, key) in the tree, objects and array items included. */
function slots(root: unknown): Slot[] {
  const out: Slot[] = [];
  const visit = (v: any, depth: number) => {
    if (Array.isArray(v))
      v.forEach((x, i) => {
        out.push({ parent: v, key: i, depth });
        visit(x, depth + 1);
      });
    else if (v && typeof v === 'object')
      for (const k of Object.keys(v)) {
        if (k === 'resourceType' && depth === 0) continue;
        out.push({ parent: v, key: k, depth });
        visit(v[k], depth + 1);
      }
  };
  visit(root, 0);
  return out;
}

function objects(root: unknown): any[] {
  const out: any[] = [];
  const visit = (v: any) => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      out.push(v);
      for (const k of Object.keys(v)) visit(v[k]);
    }
  };
  visit(root);
  return out;
}

const BAD_STRINGS = [
  'Quibblesworth',
  '2020-13-45',
  '2020-02-30T25:00:00Z',
  ' ',
  '',
  'two  spaces',
  'a\u0001b',
  'urn:uuid:NOT-A-UUID',
  'x'.repeat(70),
  '12:60:00',
  '-1',
  '1e5',
];
/**
 * Boundary values of the primitive formats (edgeValue): dates and times just outside their grammar or their
 * calendar, time-zone offsets at and past their limits, fractional seconds past nine digits, numbers JSON
 * cannot carry or a 32-bit integer cannot hold, lone surrogates and other control or invisible characters,
 * ids one character too long, malformed OIDs, UUIDs and base64. Valid neighbours are mixed in, so a
 * validator stricter than the formats is caught as well as a laxer one.
 */
const EDGE_STRINGS = [
  '2024-02-29',
  '2023-02-29',
  '2024-04-31',
  '0000-01-01',
  '2024-1-01',
  '2024',
  '2024-13',
  ' 2024-01-01',
  '2024-01-01T10:00Z',
  '2024-01-01T10:00:00',
  '2024-01-01T24:00:00Z',
  '2024-01-01T10:00:60Z',
  '2024-01-01T10:00:00.123456789Z',
  '2024-01-01T10:00:00.1234567890Z',
  '2024-01-01T10:00:00.Z',
  '2024-01-01T10:00:00+14:00',
  '2024-01-01T10:00:00+15:00',
  '2024-01-01T10:00:00-00:00',
  '24:00:00',
  '23:59:60',
  '10:00',
  '10:00:00.5',
  '\uD800',
  'a\uDC00b',
  '\u007F',
  '\u0085',
  '\u00A0',
  '\uFEFF',
  '\u2028',
  '\u0000',
  'tab\there',
  'line\nbreak',
  'é',
  '\u{1F600}',
  'x'.repeat(64),
  'x'.repeat(65),
  'a_b',
  'A-Z.09',
  'urn:oid:1.2.03',
  'urn:oid:0.1',
  'urn:uuid:12345678-1234-1234-1234-1234567890AB',
  'urn:uuid:12345678-1234-1234-1234-1234567890ab',
  'http://x y',
  'http://x|1.0',
  'YQ==',
  'YQ',
  'Y Q==',
  '+1',
  '01',
  '1.',
  '.5',
  '1E3',
  '-0',
  '2147483648',
  'True',
  'Patient/',
  'Patient/1/_history/2',
  '#',
];
const EDGE_NUMBERS = [
  Number.NaN,
  Number.POSITIVE_INFINITY,
  -0,
  2147483647,
  2147483648,
  -2147483648,
  -2147483649,
  1e21,
  0.30000000000000004,
  2 ** 53 + 2,
  5e-324,
  1e-7,
];
const EDGE_OTHER: unknown[] = [true, null, [], {}, [null], 'true', 1, [1]];
const CODE_KEYS = [
  'status',
  'gender',
  'use',
  'system',
  'intent',
  'comparator',
  'type',
  'mode',
  'method',
  'priority',
  'language',
  'contentType',
];

export const MUTATIONS: Record<string, (r: any, rand: () => number) => boolean> = {
  wrongType(r, rand) {
    const s = pick(slots(r), rand);
    if (!s) return false;
    const v = s.parent[s.key];
    const choices = [42, 3.5, true, 'text', { a: 1 }, ['x'], -7];
    s.parent[s.key] = choices.filter((c) => typeof c !== typeof v)[Math.floor(rand() * 6)] ?? 0;
    return true;
  },
  badPrimitive(r, rand) {
    const s = pick(
      slots(r).filter((x) => typeof x.parent[x.key] === 'string' || typeof x.parent[x.key] === 'number'),
      rand,
    );
    if (!s) return false;
    const v = s.parent[s.key];
    s.parent[s.key] =
      typeof v === 'number'
        ? [0, -1, 1.5, 2 ** 40, 0.1][Math.floor(rand() * 5)]
        : BAD_STRINGS[Math.floor(rand() * BAD_STRINGS.length)];
    return true;
  },
  missing(r, rand) {
    const s = pick(
      slots(r).filter((x) => !Array.isArray(x.parent)),
      rand,
    );
    if (!s) return false;
    delete s.parent[s.key];
    return true;
  },
  extraProperty(r, rand) {
    const o = pick(objects(r), rand);
    if (!o) return false;
    const names = ['foo', 'fooBar', '_foo', 'valueFoo', 'Id', 'extensions', 'valueString', 'display2'];
    o[names[Math.floor(rand() * names.length)]] = rand() < 0.5 ? 'x' : { y: 1 };
    return true;
  },
  cardinality(r, rand) {
    const s = pick(
      slots(r).filter((x) => !Array.isArray(x.parent)),
      rand,
    );
    if (!s) return false;
    const v = s.parent[s.key];
    if (Array.isArray(v)) s.parent[s.key] = rand() < 0.7 ? v[0] : [];
    else s.parent[s.key] = rand() < 0.8 ? [v] : [v, v];
    return true;
  },
  badCode(r, rand) {
    const s = pick(
      slots(r).filter(
        (x) => typeof x.key === 'string' && CODE_KEYS.includes(x.key) && typeof x.parent[x.key] === 'string',
      ),
      rand,
    );
    if (!s) return false;
    s.parent[s.key] = ['bogus', 'FINAL', 'mobile', 'Male', 'unknown', 'other'][Math.floor(rand() * 6)];
    return true;
  },
  reference(r, rand) {
    const refs = objects(r).filter((o) => typeof o.reference === 'string');
    const o = pick(refs, rand);
    if (!o) return false;
    const k = Math.floor(rand() * 6);
    if (k === 0) o.reference = '#nope';
    else if (k === 1) o.reference = 'Patient/ 1';
    else if (k === 2) o.reference = 'NotAType/1';
    else if (k === 3) o.reference = '';
    else if (k === 4) o.type = 'NotAType';
    else o.identifier = { value: 'x', system: 'not a uri' };
    return true;
  },
  extension(r, rand) {
    const o = pick(objects(r), rand);
    if (!o) return false;
    const variants: unknown[] = [
      [{ url: 'http://x' }],
      [{ url: 'http://x', valueString: 'a', extension: [{ url: 'y', valueCode: 'c' }] }],
      [{ valueString: 'a' }],
      [{ url: 'has space', valueBoolean: true }],
      { url: 'http://x', valueString: 'a' },
      [{ url: 'http://x', valueQuantity: { value: 'NaN' } }],
      [{ url: 'http://x', valueFoo: 1 }],
      [{ url: 'http://x', valueString: 'a' }],
      [{ url: 'http://x', extension: [{ url: 'http://y', valueReference: { reference: 'Patient/1' } }] }],
    ];
    o[rand() < 0.8 ? 'extension' : 'modifierExtension'] = variants[Math.floor(rand() * variants.length)];
    return true;
  },
  nullOrEmpty(r, rand) {
    const s = pick(slots(r), rand);
    if (!s) return false;
    s.parent[s.key] = [null, {}, [], [null], [{}]][Math.floor(rand() * 5)];
    return true;
  },
  choice(r, rand) {
    const o = pick(
      objects(r).filter((x) =>
        Object.keys(x).some((k) =>
          /^(value|effective|onset|deceased|multipleBirth|medication|allowed|bounds)[A-Z]/.test(k),
        ),
      ),
      rand,
    );
    if (!o) return false;
    const k = Object.keys(o).find((x) =>
      /^(value|effective|onset|deceased|multipleBirth|medication|allowed|bounds)[A-Z]/.test(x),
    )!;
    const base = /^[a-z]+(?=[A-Z])/.exec(k)![0];
    const v = rand();
    if (v < 0.3) o[base + 'Foo'] = o[k];
    else if (v < 0.6) o[base + 'String'] = 'second';
    else o[base + ['Boolean', 'Integer', 'DateTime', 'Quantity', 'Period'][Math.floor(rand() * 5)]] = o[k];
    if (v >= 0.6 || v < 0.3) delete o[k];
    return true;
  },
  edgeValue(r, rand) {
    const s = pick(
      slots(r).filter((x) => x.parent[x.key] === null || typeof x.parent[x.key] !== 'object'),
      rand,
    );
    if (!s) return false;
    const v = s.parent[s.key];
    const u = rand();
    const from =
      typeof v === 'string'
        ? u < 0.8
          ? EDGE_STRINGS
          : u < 0.9
            ? EDGE_NUMBERS
            : EDGE_OTHER
        : typeof v === 'number'
          ? u < 0.7
            ? EDGE_NUMBERS
            : EDGE_STRINGS
          : u < 0.5
            ? EDGE_OTHER
            : EDGE_STRINGS;
    s.parent[s.key] = from[Math.floor(rand() * from.length)];
    return true;
  },
  primitiveExtension(r, rand) {
    const s = pick(
      slots(r).filter(
        (x) => typeof x.key === 'string' && ['string', 'boolean', 'number'].includes(typeof x.parent[x.key]),
      ),
      rand,
    );
    if (!s) return false;
    s.parent['_' + String(s.key)] = [
      { extension: [{ url: 'http://x', valueString: 'e' }] },
      { id: 'a' },
      { foo: 1 },
      { extension: [{ url: 'http://x' }] },
    ][Math.floor(rand() * 4)];
    return true;
  },
};

function pick<T>(list: T[], rand: () => number): T | undefined {
  return list.length ? list[Math.floor(rand() * list.length)] : undefined;
}
