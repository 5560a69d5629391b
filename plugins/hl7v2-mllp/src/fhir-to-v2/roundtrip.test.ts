import * as fs from 'node:fs';
import * as path from 'node:path';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { roundTrip, ROUND_TRIP_TYPES as SUPPORTED, type RoundTrip } from './roundtrip';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus) console.warn(`skipped: ../shared absent (${CORPUS}) — FHIR -> v2 round-trip tests not run`);

(haveCorpus ? describe : describe.skip)('corpus round trip v2 -> FHIR -> v2 -> FHIR (supported types)', () => {
  const t = new Hl7v2Transform({});
  const results: (RoundTrip & { file: string })[] = [];

  beforeAll(() => {
    for (const f of fs
      .readdirSync(CORPUS)
      .filter((x) => x.endsWith('.hl7'))
      .sort()) {
      for (const body of t.split(fs.readFileSync(path.join(CORPUS, f)))) {
        let type: string | undefined;
        try {
          type = t.extractHeaders(body).messageType;
        } catch {
          continue; // not HL7 v2: the inbound corpus test covers it
        }
        if (type && SUPPORTED.test(type)) results.push({ file: f, ...roundTrip(body, t) });
      }
    }
  });

  test('every supported corpus message is expressed in v2', () => {
    expect(results.length).toBeGreaterThanOrEqual(30);
    expect(results.filter((r) => r.error).map((r) => `${r.file}: ${r.error}`)).toEqual([]);
  });

  test('the second conversion gives the same core FHIR fields (Patient, Encounter, DiagnosticReport, Observation, Appointment)', () => {
    const diffs = results.flatMap((r) => r.fhirDiffs.map((d) => `${r.file} ${d}`));
    expect(results.reduce((n, r) => n + r.fhirCompared, 0)).toBeGreaterThan(500);
    expect(diffs).toEqual([]);
  });

  test('the regenerated v2 agrees with the original on most mapped fields (the rest are the listed losses)', () => {
    const same = results.reduce((n, r) => n + r.v2Same, 0);
    const all = results.reduce((n, r) => n + r.v2Compared, 0);
    expect(same / all).toBeGreaterThan(0.85);
  });
});
