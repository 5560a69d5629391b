/**
 * No value is dropped without an issue, corpus-wide: every typed field present in every corpus
 * message (DT / DTM / TS / NM / SI by the IG's segment maps, OBX-5 by OBX-2, and the codes of
 * required bindings) is set to garbage, one at a time; the conversion must report an issue at
 * exactly that field (segment occurrence and repetition included), and the garbage must not
 * appear in any issue. Converted in-process (no engine): a few thousand conversions in seconds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ReportedIssue } from '@ferry/core';
import { decodeHl7Bytes } from '../hl7v2/charset';
import { parseHl7, type Hl7Segment } from '../hl7v2/parser';
import { SEGMENT_FIELDS } from './maps/fields.generated';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus) console.warn(`skipped: ../shared absent (${CORPUS}) — corpus data-quality mutation test not run`);

const GARBAGE_VALUE = 'Quibblesworth-0x';
const GARBAGE_CODE = 'QUIBBLESWORTH';
const CHECKED = new Set(['DT', 'DTM', 'TS', 'NM', 'SI']);
const OBX5 = new Set(['NM', 'DT', 'DTM', 'TS', 'SN']);

/** The text of a message with one field's first repetition, component 1 (SN: component 2), replaced. */
function mutate(segments: Hl7Segment[], at: number, field: number, value: string, component = 1): string {
  return (
    segments
      .map((s, i) => {
        const fs_ = s.delimiters.field;
        const fields = [...s.fields];
        if (i === at) {
          const d = s.delimiters;
          const reps = fields[field].split(d.repetition);
          const comps = reps[0].split(d.component);
          while (comps.length < component) comps.push('');
          comps[component - 1] = value;
          reps[0] = comps.join(d.component);
          fields[field] = reps.join(d.repetition);
        }
        return s.name === 'MSH' ? 'MSH' + fs_ + fields.slice(2).join(fs_) : fields.join(fs_);
      })
      .join('\r') + '\r'
  );
}

(haveCorpus ? describe : describe.skip)('corpus: every typed field set to garbage is an issue at that field', () => {
  const t = new Hl7v2Transform({});
  const bodies = haveCorpus
    ? fs
        .readdirSync(CORPUS)
        .filter((f) => f.endsWith('.hl7'))
        .sort()
        .flatMap((f) =>
          t.split(fs.readFileSync(path.join(CORPUS, f))).map((body, i) => ({ name: `${f}#${i + 1}`, body })),
        )
    : [];

  test('the corpus as it is: issues counted, each a fixed reason (no value in any text)', () => {
    const counts = new Map<string, number>();
    const texts = new Set<string>();
    for (const { body } of bodies) {
      t.convert(body, (i) => {
        counts.set(`${i.location}:${i.code}`, (counts.get(`${i.location}:${i.code}`) ?? 0) + 1);
        texts.add(i.text.replace(/\(concept map [^)]*\)/, '(concept map M)'));
      });
    }
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    console.log(
      `corpus: ${bodies.length} messages, ${total} data-quality issues: ${[...counts]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 12)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')}`,
    );
    expect(bodies.length).toBeGreaterThanOrEqual(139);
    // Reasons come from a fixed set (texts are written by the checker, never built from values).
    expect(texts.size).toBeLessThanOrEqual(12);
  });

  test('each typed field, mutated alone, is named by an issue; the garbage appears in none', () => {
    let mutations = 0;
    let skipped = 0;
    const t0 = Date.now();
    // One mutation per (message type, field, first or later occurrence, repeating or not): the
    // corpus repeats the same layouts many times; this keeps the run in seconds.
    const done = new Set<string>();
    const missed: string[] = [];
    const leaked: string[] = [];
    const types = new Set<string>();
    for (const { name, body } of bodies) {
      const msg = parseHl7(decodeHl7Bytes(body, 'latin1').text);
      const messageType = `${msg.msh.get(9, 0, 1)}^${msg.msh.get(9, 0, 2)}`;
      const occ = new Map<string, number>();
      msg.segments.forEach((seg, si) => {
        const occurrence = (occ.get(seg.name) ?? 0) + 1;
        occ.set(seg.name, occurrence);
        for (let n = seg.name === 'MSH' ? 3 : 1; n < seg.fields.length; n++) {
          if (!seg.has(n) || !seg.get(n, 0, 1)) continue;
          let type: string;
          let component = 1;
          let coded = false;
          if (seg.name === 'OBX' && n === 5) {
            type = seg.get(2).trim().toUpperCase();
            if (!OBX5.has(type)) continue;
            if (type === 'SN') component = 2;
          } else {
            const ft = SEGMENT_FIELDS[seg.name]?.[n];
            if (!ft) continue;
            type = ft[0];
            coded = !!ft[2];
            if (!CHECKED.has(type) && !coded) continue;
          }
          if (seg.name === 'MSH' && (n === 9 || n === 10 || n === 12)) continue; // routing headers, read before the conversion
          const key = `${messageType} ${seg.name}-${n} ${occurrence > 1} ${seg.reps(n).length > 1}`;
          if (done.has(key)) {
            skipped++;
            continue;
          }
          done.add(key);
          types.add(coded ? 'code' : type);
          const garbage = coded ? GARBAGE_CODE : GARBAGE_VALUE;
          const mutated = mutate(msg.segments, si, n, garbage, component);
          const issues: ReportedIssue[] = [];
          try {
            t.convert(Buffer.from(mutated, 'utf8'), (i) => issues.push(i));
          } catch (e) {
            missed.push(`${name} ${seg.name}-${n}: conversion threw ${(e as Error).message}`);
            continue;
          }
          mutations++;
          const want = component > 1 ? `${seg.name}-${n}-${component}` : `${seg.name}-${n}`;
          const reps = seg.reps(n).length;
          const hit = issues.find(
            (i) =>
              i.location === want &&
              i.occurrence === occurrence &&
              (reps > 1 ? i.repetition === 1 : i.repetition === undefined),
          );
          if (!hit)
            missed.push(
              `${name} ${want} (${type}${coded ? ', coded' : ''}, occurrence ${occurrence}): issues at ${issues.map((i) => `${i.location}[${i.occurrence}]`).join(', ') || 'none'}`,
            );
          const json = JSON.stringify(issues);
          if (json.includes('Quibblesworth') || json.includes('QUIBBLESWORTH')) leaked.push(`${name} ${want}`);
        }
      });
    }
    if (missed.length) console.error(missed.slice(0, 30).join('\n'));
    expect(missed).toEqual([]);
    expect(leaked).toEqual([]);
    console.log(`corpus: ${mutations} mutations (${skipped} alike left out), ${Date.now() - t0} ms`);
    // (SN, OBX-5 when OBX-2 is SN, is checked too; the corpus has none: quality.test.ts covers it)
    for (const ty of ['DT', 'DTM', 'TS', 'NM', 'SI', 'code']) expect(types).toContain(ty);
    expect(mutations).toBeGreaterThan(500);
  });
});
