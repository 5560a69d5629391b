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
import { HAND_SEEDS, MUTATIONS, rng } from './__fixtures__/validator-mutations';

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
 * - calendar day: a `date`, `dateTime` or `instant` whose day does not exist (2023-02-29, 2024-04-31) —
 *   R4's regexes allow every day 01-31, but "Dates SHALL be valid dates"; medplum checks the regex only.
 * - contained resource not referenced (dom-3) — medplum skips dom-3; Ferry decides it directly.
 * - narrative: a Narrative.div that is not one well-formed XHTML div, or breaks txt-1 (elements and
 *   attributes outside R4's list, script URLs) or txt-2 (no content) — medplum's htmlChecks() is [true].
 * - 32-bit integer: an `integer`, `positiveInt` or `unsignedInt` beyond -2147483648..2147483647 — R4's
 *   range for them (larger values are `decimal`); medplum checks only that the number is whole.
 * - data type invariant: the invariants of a reused data type itself (Quantity's qty-3, Period's per-1,
 *   Reference's ref-1, ContactPoint's cpt-2, Attachment's att-1, Range's rng-2, Ratio's rat-1, the
 *   Quantity profiles' age-1 cnt-3 dis-1 drt-1 mqty-1 sqty-1, ...) — R4 holds every value of the type to
 *   them; medplum evaluates only the constraints listed on the element, where a reused type's are not.
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
  { name: 'calendar day', mine: (i) => i.details?.text === 'Invalid date: that day does not exist in its month' },
  {
    name: 'data type invariant',
    mine: (i) =>
      /^Constraint (age-1|att-1|cpt-2|cnt-3|dis-1|drt-1|exp-1|mqty-1|per-1|qty-3|rng-2|rat-1|ref-1|sqty-1|trd-[1-3]|eld-\d+) not met/.test(
        i.details?.text ?? '',
      ),
  },
  { name: 'dom-3', mine: (i) => /^Constraint dom-3 not met/.test(i.details?.text ?? '') },
  {
    name: 'narrative',
    mine: (i) => /^(Invalid xhtml: |Constraint txt-[12] not met)/.test(i.details?.text ?? ''),
  },
  {
    name: '32-bit integer',
    mine: (i) => i.details?.text === 'Expected number to be a 32-bit integer (-2147483648 to 2147483647)',
  },
];

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
