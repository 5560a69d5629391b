/**
 * The validator's generated checks of the valid path (core/src/fhir/validator/fast-check.ts) against its
 * walk (the exact verdicts, pinned to medplum's by validator.differential.test.ts): on the corpus and on
 * 10,000 seeded mutations of every element kind, whatever the generated checks accept, the walk must find
 * valid (they may only say "not sure", never hide an issue), with and without required bindings, for
 * resources and for whole Bundles validated as the engine does (entries as resources). And the corpus
 * must take the generated path (else validation would be walked, at twice the cost).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ensureFhirDefinitions } from '@ferry/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import {
  fastCheckFhirResource,
  walkFhirResource,
  type FhirValidateOptions,
} from '../../../../core/src/fhir/validator/index';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { HAND_SEEDS, MUTATIONS, rng } from './__fixtures__/validator-mutations';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus)
  console.warn(`skipped part: ../shared absent (${CORPUS}) — the fast-path test runs on its hand-written seeds only`);

const MUTATED = Number(process.env.FERRY_DIFF_MUTATIONS) || 10_000;

/** The walk's issues when the generated checks accepted `r` (each gets its own copy: the walk may merge `_x` keys). */
function hidden(r: unknown, options: FhirValidateOptions): string[] | undefined {
  if (!fastCheckFhirResource(structuredClone(r), options)) return undefined;
  return walkFhirResource(structuredClone(r), options).map((i) => `${i.expression?.join(',')} :: ${i.details?.text}`);
}

describe('generated checks of the valid path = the walk', () => {
  ensureFhirDefinitions();
  const seeds: Resource[] = [...HAND_SEEDS];
  const bundles: Bundle[] = [];
  if (haveCorpus) {
    const t = new Hl7v2Transform({});
    for (const f of fs
      .readdirSync(CORPUS)
      .filter((x) => x.endsWith('.hl7'))
      .sort())
      for (const body of t.split(fs.readFileSync(path.join(CORPUS, f)))) {
        const b: Bundle = t.convert(body);
        bundles.push(b);
        for (const e of b.entry ?? []) if (e.resource) seeds.push(e.resource);
      }
  }

  test('the corpus and the hand-written seeds: every valid one takes the generated path', () => {
    const problems: string[] = [];
    const all: [unknown, FhirValidateOptions][] = [
      ...seeds.map((r): [unknown, FhirValidateOptions] => [r, {}]),
      ...bundles.map((b): [unknown, FhirValidateOptions] => [b, { entriesAsResources: true }]),
    ];
    for (const [r, options] of all) {
      const walked = walkFhirResource(structuredClone(r), options);
      const fast = fastCheckFhirResource(structuredClone(r), options);
      const type = (r as Resource).resourceType;
      if (fast && walked.length) problems.push(`${type}: accepted, the walk finds ${walked.length} issues`);
      if (!fast && !walked.length) problems.push(`${type}: valid, but the generated checks are not sure`);
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(all.length).toBeGreaterThanOrEqual(haveCorpus ? 4000 : HAND_SEEDS.length);
  });

  test(`${MUTATED.toLocaleString('en-US')} seeded mutations (resources and Bundles): nothing the generated checks accept has an issue`, () => {
    const rand = rng(0xfa57);
    const kinds = Object.keys(MUTATIONS);
    const problems: string[] = [];
    let done = 0;
    let accepted = 0;
    let attempts = 0;
    while (done < MUTATED && attempts < MUTATED * 3) {
      attempts++;
      const u = rand();
      const seed: unknown =
        u < 0.3
          ? HAND_SEEDS[Math.floor(rand() * HAND_SEEDS.length)]
          : u < 0.4 && bundles.length
            ? bundles[Math.floor(rand() * bundles.length)]
            : seeds[Math.floor(rand() * seeds.length)];
      const r = structuredClone(seed);
      const applied: string[] = [];
      const count = 1 + Math.floor(rand() * 2);
      for (let i = 0; i < count; i++) {
        const kind = kinds[Math.floor(rand() * kinds.length)];
        if (MUTATIONS[kind](r, rand)) applied.push(kind);
      }
      if (!applied.length) continue;
      done++;
      const optionSets: FhirValidateOptions[] = [{}, { requiredBindings: false }, { entriesAsResources: true }];
      for (const options of optionSets) {
        const issues = hidden(r, options);
        if (issues === undefined) continue;
        accepted++;
        if (issues.length)
          problems.push(
            `${applied.join('+')} ${JSON.stringify(options)}: accepted, the walk finds ${JSON.stringify(issues.slice(0, 3))}\n  ` +
              JSON.stringify(r).slice(0, 1500),
          );
      }
    }
    console.log(`fast path: ${done} mutated resources x 3 option sets, ${accepted} accepted by the generated checks`);
    expect(problems.slice(0, 10)).toEqual([]);
    expect(done).toBeGreaterThanOrEqual(MUTATED);
    // the generated checks were exercised on valid mutations too (not a test that passes by refusing everything)
    expect(accepted).toBeGreaterThan(done / 4);
  });
});
