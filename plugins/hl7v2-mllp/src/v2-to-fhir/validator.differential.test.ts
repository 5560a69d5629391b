/**
 * Differential test: Ferry's compiled FHIR validator (@ferry/core validateFhirResource) against
 * @medplum/core's validateResource on the corpus's converted resources and on >= 10,000 seeded mutations of
 * them (and of hand-written seeds of other types): every resource medplum rejects must be rejected with the
 * same error paths and messages, and the reverse, except for the deliberate differences listed in
 * JUSTIFIED below.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ensureFhirDefinitions, validateFhirResource } from '@ferry/core';
import { OperationOutcomeError, validateResource } from '@medplum/core';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus)
  console.warn(
    `skipped part: ../shared absent (${CORPUS}) — the differential test runs on its hand-written seeds only`,
  );

const MUTATED = Number(process.env.FERRY_DIFF_MUTATIONS) || 10_000;

/**
 * Deliberate disagreements with @medplum/core 4.5.2, each a case where medplum accepts what a FHIR R4
 * server must refuse (Ferry is stricter; never the reverse):
 * - required binding: a `code` outside its element's required value set (Patient.gender "bogus") — medplum
 *   checks no terminology; Ferry checks every enumerable required value set of the R4 base spec.
 * - resource type: `resourceType` naming a data type or an abstract type (`HumanName`, `DomainResource`)
 *   or missing on a contained/entry resource — medplum validates such objects against that data type.
 * - prototype keys: properties named like Object.prototype members (`constructor`, `toString`) — medplum's
 *   `key in elements` finds them on the prototype and lets them through.
 * - resourceType inside a non-resource element — medplum skips the key `resourceType` everywhere.
 * And one where paths differ but both reject: medplum throws "Unknown data type" (no path) for an unknown
 * resourceType; Ferry reports `<path>.resourceType`.
 */
const JUSTIFIED: { name: string; mine: (i: OperationOutcomeIssue) => boolean }[] = [
  { name: 'required binding', mine: (i) => i.code === 'code-invalid' },
  { name: 'resource type', mine: (i) => /^(Unknown resource type|Missing resource type)/.test(i.details?.text ?? '') },
  {
    name: 'prototype key',
    mine: (i) =>
      /^Invalid additional property "(constructor|toString|valueOf|hasOwnProperty|__proto__)"/.test(
        i.details?.text ?? '',
      ),
  },
  { name: 'resourceType in element', mine: (i) => i.details?.text === 'Invalid additional property "resourceType"' },
];

// ---------------------------------------------------------------------------------------------------
// seeds

const HAND_SEEDS: Resource[] = [
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

function rng(seed: number): () => number {
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

const MUTATIONS: Record<string, (r: any, rand: () => number) => boolean> = {
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

// ---------------------------------------------------------------------------------------------------
// comparison

const key = (i: OperationOutcomeIssue) => `${(i.expression ?? []).join(',')} :: ${i.details?.text}`;

function medplumErrors(r: unknown): { issues: OperationOutcomeIssue[]; thrown?: string } {
  try {
    return { issues: validateResource(r as Resource).filter((i) => i.severity === 'error' || i.severity === 'fatal') };
  } catch (e) {
    if (e instanceof OperationOutcomeError) {
      const issues = (e.outcome.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
      // an abort (unknown data type, malformed primitive extension): one issue without the paths of the rest
      if (issues.length === 1 && !issues[0].expression?.length) return { issues, thrown: issues[0].details?.text };
      return { issues };
    }
    return {
      issues: [{ severity: 'error', code: 'exception', details: { text: (e as Error).message } }],
      thrown: (e as Error).message,
    };
  }
}

interface Verdict {
  rejects: boolean;
  agree: boolean;
  justified?: string;
  detail?: string;
}

function compare(resource: unknown): Verdict {
  // both may write to their input (medplum merges `_x` primitive extensions into the values)
  const forMine = structuredClone(resource);
  const forMedplum = structuredClone(resource);
  const mine = validateFhirResource(forMine);
  const med = medplumErrors(forMedplum);
  const rejects = mine.length > 0;
  if (med.thrown) {
    // both must reject; medplum's abort carries no path to compare
    if (mine.length) return { rejects, agree: true };
    return { rejects, agree: false, detail: `medplum threw "${med.thrown}", Ferry accepted` };
  }
  const a = new Set(med.issues.map(key));
  const b = new Set(mine.map(key));
  const onlyMedplum = [...a].filter((k) => !b.has(k));
  const onlyMine = mine.filter((i) => !a.has(key(i)));
  if (!onlyMedplum.length && !onlyMine.length) return { rejects, agree: true };
  if (!onlyMedplum.length) {
    const why = onlyMine.map((i) => JUSTIFIED.find((j) => j.mine(i))?.name);
    if (why.every(Boolean)) return { rejects, agree: false, justified: why[0] };
  }
  // medplum also lists paths below a resource whose type Ferry refuses; Ferry's refusal justifies them
  if (onlyMine.some((i) => JUSTIFIED[1].mine(i)) && mine.length)
    return { rejects, agree: false, justified: 'resource type' };
  return {
    rejects,
    agree: false,
    detail: `medplum only: ${JSON.stringify(onlyMedplum)}\n  Ferry only: ${JSON.stringify(onlyMine.map(key))}`,
  };
}

describe('compiled validator = @medplum/core validateResource (differential)', () => {
  ensureFhirDefinitions();
  const seeds: Resource[] = [...HAND_SEEDS];
  if (haveCorpus) {
    const t = new Hl7v2Transform({});
    for (const f of fs
      .readdirSync(CORPUS)
      .filter((x) => x.endsWith('.hl7'))
      .sort())
      for (const body of t.split(fs.readFileSync(path.join(CORPUS, f)))) {
        const b: Bundle = t.convert(body);
        for (const e of b.entry ?? []) if (e.resource) seeds.push(e.resource);
      }
  }

  test('the unmutated seeds (the corpus converted, hand-written resources): identical verdicts and paths', () => {
    const problems: string[] = [];
    for (const r of seeds) {
      const v = compare(r);
      if (!v.agree && !v.justified) problems.push(`${r.resourceType}: ${v.detail}`);
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(seeds.length).toBeGreaterThanOrEqual(haveCorpus ? 4000 : HAND_SEEDS.length);
  });

  test(`${MUTATED.toLocaleString('en-US')} seeded mutations of every element kind: same verdicts and paths, disagreements only the justified ones`, () => {
    const rand = rng(0x5eed);
    const kinds = Object.keys(MUTATIONS);
    const stats: Record<string, { n: number; rejected: number }> = Object.fromEntries(
      kinds.map((k) => [k, { n: 0, rejected: 0 }]),
    );
    const justified: Record<string, number> = {};
    const problems: string[] = [];
    let rejected = 0;
    let done = 0;
    let attempts = 0;
    while (done < MUTATED && attempts < MUTATED * 3) {
      attempts++;
      // hand-written seeds get a fixed share so every type and element kind is exercised
      const seed =
        rand() < 0.3 ? HAND_SEEDS[Math.floor(rand() * HAND_SEEDS.length)] : seeds[Math.floor(rand() * seeds.length)];
      const r = structuredClone(seed);
      const applied: string[] = [];
      const count = 1 + Math.floor(rand() * 2);
      for (let i = 0; i < count; i++) {
        const kind = kinds[Math.floor(rand() * kinds.length)];
        if (MUTATIONS[kind](r, rand)) applied.push(kind);
      }
      if (!applied.length) continue;
      done++;
      const v = compare(r);
      const mineRejects = v.rejects;
      if (mineRejects) rejected++;
      for (const k of applied) {
        stats[k].n++;
        if (mineRejects) stats[k].rejected++;
      }
      if (v.justified) justified[v.justified] = (justified[v.justified] ?? 0) + 1;
      else if (!v.agree)
        problems.push(
          `${seed.resourceType} after ${applied.join('+')}: ${v.detail}\n  resource: ${JSON.stringify(r).slice(0, 1500)}`,
        );
    }
    console.log(
      `differential: ${done} mutated resources, ${rejected} rejected; justified disagreements ${JSON.stringify(justified)}; per kind (mutated/rejected) ${JSON.stringify(
        Object.fromEntries(Object.entries(stats).map(([k, s]) => [k, `${s.n}/${s.rejected}`])),
      )}`,
    );
    expect(problems.slice(0, 10)).toEqual([]);
    expect(done).toBeGreaterThanOrEqual(MUTATED);
    // every kind of mutation was exercised, and both verdicts occur
    for (const k of kinds) expect(stats[k].n).toBeGreaterThan(MUTATED / kinds.length / 4);
    expect(rejected).toBeGreaterThan(done / 3);
    expect(rejected).toBeLessThan(done);
  });
});
