#!/usr/bin/env node
/**
 * `npm run roundtrip`: every corpus message of a type the FHIR -> v2 conversion supports goes
 * v2 -> FHIR -> v2 -> FHIR; prints per message type the agreement of the regenerated v2 with the
 * original on the fields the outbound maps write, and of the second FHIR with the first on the core
 * fields (Patient, Encounter, DiagnosticReport, Observation, Appointment). `--diffs` lists every difference.
 * Uses the built package (dist/).
 */
const fs = require('node:fs');
const path = require('node:path');
const { Hl7v2Transform, roundTrip, ROUND_TRIP_TYPES } = require('../dist');

const corpus = process.env.CORPUS ?? path.resolve(__dirname, '../../../../shared/corpus/hl7v2-msft');
if (!fs.existsSync(corpus)) {
  console.log(`skipped: corpus absent (${corpus})`);
  process.exit(0);
}
const showDiffs = process.argv.includes('--diffs');
const t = new Hl7v2Transform({});
const byType = new Map();
for (const f of fs
  .readdirSync(corpus)
  .filter((x) => x.endsWith('.hl7'))
  .sort()) {
  for (const body of t.split(fs.readFileSync(path.join(corpus, f)))) {
    let type;
    try {
      type = t.extractHeaders(body).messageType;
    } catch {
      continue;
    }
    if (!type || !ROUND_TRIP_TYPES.test(type)) continue;
    const r = roundTrip(body, t);
    const s = byType.get(type) ?? { n: 0, errors: 0, v2Same: 0, v2All: 0, fSame: 0, fAll: 0, diffs: new Map() };
    s.n++;
    if (r.error) s.errors++;
    s.v2Same += r.v2Same;
    s.v2All += r.v2Compared;
    s.fSame += r.fhirCompared - r.fhirDiffs.length;
    s.fAll += r.fhirCompared;
    for (const d of r.v2Diffs) {
      const k = d.replace(/#\d+/, '').split(':')[0];
      s.diffs.set(k, (s.diffs.get(k) ?? 0) + 1);
      if (showDiffs) console.log(`${f}\t${d}`);
    }
    for (const d of r.fhirDiffs) if (showDiffs) console.log(`${f}\tFHIR ${d}`);
    if (showDiffs && r.error) console.log(`${f}\tERROR ${r.error}`);
    byType.set(type, s);
  }
}
const pct = (a, b) => (b ? `${((100 * a) / b).toFixed(1)} %` : '-');
console.log(`corpus: ${corpus}`);
console.log(
  '| type | messages | not expressible | v2 fields agreeing (v2 -> FHIR -> v2 vs original) | core FHIR fields agreeing (2nd vs 1st conversion) | v2 fields that differ most |',
);
console.log('|---|---:|---:|---:|---:|---|');
const tot = { n: 0, errors: 0, v2Same: 0, v2All: 0, fSame: 0, fAll: 0 };
for (const [type, s] of [...byType].sort()) {
  for (const k of Object.keys(tot)) tot[k] += s[k];
  const top = [...s.diffs]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([k, n]) => `${k} (${n})`)
    .join(', ');
  console.log(
    `| ${type} | ${s.n} | ${s.errors} | ${s.v2Same}/${s.v2All} = ${pct(s.v2Same, s.v2All)} | ${s.fSame}/${s.fAll} = ${pct(s.fSame, s.fAll)} | ${top || '-'} |`,
  );
}
console.log(
  `| **all** | ${tot.n} | ${tot.errors} | ${tot.v2Same}/${tot.v2All} = ${pct(tot.v2Same, tot.v2All)} | ${tot.fSame}/${tot.fAll} = ${pct(tot.fSame, tot.fAll)} | |`,
);
