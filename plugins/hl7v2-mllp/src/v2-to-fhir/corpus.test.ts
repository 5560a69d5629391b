import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Bundle } from '@medplum/fhirtypes';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { validateBundle } from './validate';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus) console.warn(`skipped: ../shared absent (${CORPUS}) — corpus conversion/validation tests not run`);

(haveCorpus ? describe : describe.skip)('whole corpus: converts, 100% valid FHIR R4, deterministic', () => {
  const t = new Hl7v2Transform({});
  const files = haveCorpus
    ? fs
        .readdirSync(CORPUS)
        .filter((f) => f.endsWith('.hl7'))
        .sort()
    : [];
  const results: { file: string; type: string; bundle: Bundle; body: Buffer }[] = [];

  beforeAll(() => {
    for (const f of files) {
      for (const body of t.split(fs.readFileSync(path.join(CORPUS, f)))) {
        results.push({ file: f, type: t.extractHeaders(body).messageType!, bundle: t.convert(body), body });
      }
    }
  });

  test('all 57 message types convert without error', () => {
    expect(new Set(results.map((r) => r.type)).size).toBeGreaterThanOrEqual(57);
    expect(results.length).toBeGreaterThanOrEqual(139);
  });

  test('every resource passes the FHIR R4 validator (medplum verdicts + required bindings)', () => {
    const problems: string[] = [];
    let resources = 0;
    for (const r of results) {
      resources += r.bundle.entry?.filter((e) => e.resource).length ?? 0;
      for (const i of validateBundle(r.bundle))
        problems.push(
          `${r.file} entry ${i.entry} ${i.resourceType}: ${i.issue.details?.text ?? i.issue.diagnostics} @ ${i.issue.expression?.join(',')}`,
        );
    }
    if (problems.length) console.error(problems.slice(0, 40).join('\n'));
    expect(resources).toBeGreaterThan(2000);
    expect(problems).toEqual([]);
  });

  test('nothing silently dropped: every mapped segment yields its resource', () => {
    const seg = (body: Buffer, name: string) =>
      body
        .toString('latin1')
        .split(/\r\n|\n|\r/)
        .filter((l) => l.replace(/^\ufeff|^\xef\xbb\xbf/, '').startsWith(`${name}|`)).length;
    const count = (b: Bundle, type: string) =>
      (b.entry ?? []).filter(
        (e) =>
          e.resource?.resourceType === type ||
          e.request?.url.startsWith(`${type}/`) ||
          e.request?.url.startsWith(`${type}?`),
      ).length;
    const pairs: [string, string][] = [
      ['PV1', 'Encounter'],
      ['SCH', 'Appointment'],
      ['RXA', 'Immunization'],
      ['TXA', 'DocumentReference'],
      ['IN1', 'Coverage'],
      ['FT1', 'ChargeItem'],
      ['PR1', 'Procedure'],
      ['SPM', 'Specimen'],
    ];
    const missing: string[] = [];
    for (const r of results) {
      for (const [s, type] of pairs)
        if (count(r.bundle, type) < Math.min(1, seg(r.body, s))) missing.push(`${r.file}: ${s} -> ${type}`);
      if (!r.type.startsWith('MDM') && count(r.bundle, 'Observation') !== seg(r.body, 'OBX'))
        missing.push(`${r.file}: OBX ${seg(r.body, 'OBX')} -> Observation ${count(r.bundle, 'Observation')}`);
      if (count(r.bundle, 'Patient') < 1) missing.push(`${r.file}: no Patient`);
      if (count(r.bundle, 'MessageHeader') !== 1) missing.push(`${r.file}: MessageHeader`);
    }
    expect(missing).toEqual([]);
  });

  test('references resolve inside the Bundle', () => {
    const dangling: string[] = [];
    for (const r of results) {
      const urls = new Set((r.bundle.entry ?? []).map((e) => e.fullUrl));
      const walk = (v: unknown): void => {
        if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') {
          const ref = (v as { reference?: unknown }).reference;
          if (typeof ref === 'string' && !urls.has(ref)) dangling.push(`${r.file}: ${ref}`);
          Object.values(v).forEach(walk);
        }
      };
      for (const e of r.bundle.entry ?? []) walk(e.resource);
    }
    expect(dangling).toEqual([]);
  });

  test('the same input gives byte-identical output', () => {
    for (const r of results.slice(0, 40)) expect(JSON.stringify(t.convert(r.body))).toBe(JSON.stringify(r.bundle));
  });
});
