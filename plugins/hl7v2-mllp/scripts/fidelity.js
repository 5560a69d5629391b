#!/usr/bin/env node
/**
 * Fidelity report: per message type of the corpus, the v2-to-FHIR IG segment-map rows the corpus exercises
 * and how many of them Ferry fills.
 *
 *   npm run fidelity                  # the table
 *   npm run fidelity -- --missing     # plus every exercised row Ferry does not fill (CSV file:line, field, FHIR attribute)
 *   npm run fidelity -- --json        # machine-readable
 *
 * A row of `segments/HL7 Segment - FHIR R4_ <SEG>[<Resource>]*.csv` (row = CSV record number, header rows included,
 * as cited in the code) is EXERCISED by a message when the segment map applies to the message (listed in the IG's
 * message map for its structure when there is one — ADT_A01, ORU_R01, ORM_O01, OML_O21, MDM_T02, SIU_S12, VXU_V04…;
 * otherwise every map of the segment, except OBR[DiagnosticReport] in order messages and OBX[DocumentReference]
 * outside MDM; OBX[Observation-Component] only for a repeating OBX-5, as the message maps say), the row names a
 * v2 field (PID-21) and a FHIR attribute, its condition holds (`IF OBX-2 EQUALS "NM"`, `IF ORC-5 NOT VALUED`…; rows
 * whose condition this script cannot evaluate are left out and counted) and the field is valued. It is
 * FILLED when the message's Bundle has a <Resource> (the part of the bracket before any "-") whose top-level
 * attribute (the row's FHIR attribute up to the first "." "[" "(") is present; for an `extension…url` row with an
 * assigned URL, that extension URL must be present; for a `$this` row mapped with a datatype map naming a
 * resource (`CX[RelatedPerson-Mother]`), a resource of that type must exist. This is a presence check, not a
 * value check (guide.test.ts and fidelity.test.ts check values); rows counted per message type once (a row is
 * filled for the type when it is filled in a message where it is exercised).
 *
 * Reads ../shared (the corpus and the IG CSVs) and the built plugin (dist/); run `npm run build` first.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '../../..');
const SHARED = path.resolve(ROOT, '../shared');
const CORPUS = path.join(SHARED, 'corpus/hl7v2-msft');
const SEGMAPS = path.join(SHARED, 'v2-to-fhir/mappings/segments');
const MSGMAPS = path.join(SHARED, 'v2-to-fhir/mappings/messages');
const args = process.argv.slice(2);

if (!fs.existsSync(CORPUS) || !fs.existsSync(SEGMAPS)) {
  console.error(`skipped: ../shared absent (${CORPUS} / ${SEGMAPS}) — nothing to report`);
  process.exit(0);
}
// FIDELITY_PLUGIN: another build of the plugin (e.g. an older commit's dist/index.js) to compare coverage
const { Hl7v2Transform, parseHl7, decodeHl7Bytes, ORDER_MESSAGES } = require(
  process.env.FIDELITY_PLUGIN ?? path.join(ROOT, 'plugins/hl7v2-mllp/dist/index.js'),
);

// The message types whose OBR is the order only (no DiagnosticReport): the converter's own list.
if (!ORDER_MESSAGES) throw new Error('the plugin build does not export ORDER_MESSAGES (build it: npm run build)');
const { parseCsv } = require('./csv');

/** Segment maps: SEG -> [{ file, resource, rows: [{ line, field, attr, dtMap, assign }] }] */
const maps = new Map();
for (const file of fs.readdirSync(SEGMAPS).sort()) {
  const m = /FHIR R4_ ([A-Z0-9]{3})\[([^\]]+)\]/.exec(file);
  if (!m) continue;
  const [, seg, target] = m;
  const text = fs.readFileSync(path.join(SEGMAPS, file), 'utf8');
  // physical line numbers of each CSV record (cells may hold newlines)
  const records = parseCsv(text);
  const rows = [];
  for (const [i, r] of records.entries()) {
    const field = (r[1] ?? '').trim();
    const attr = (r[9] ?? '').trim().split('\n')[0].trim();
    const fm = new RegExp(`^${seg}-(\\d+)$`).exec(field);
    if (!fm || !attr) continue;
    rows.push({
      line: i + 1,
      field,
      n: Number(fm[1]),
      attr,
      cond: condition((r[6] ?? '').trim(), seg),
      dtMap: (r[14] ?? '').trim(),
      assign: (r[16] ?? '').trim(),
    });
  }
  if (!rows.length) continue;
  if (!maps.has(seg)) maps.set(seg, []);
  maps.get(seg).push({ file, name: `${seg}[${target}]`, resource: target.split('-')[0], rows });
}

/** Message maps: structure (ADT_A01) -> the segment maps it applies ("PID[Patient]"). */
const messageMaps = new Map();
for (const file of fs.existsSync(MSGMAPS) ? fs.readdirSync(MSGMAPS) : []) {
  const m = /FHIR R4_ ([A-Z0-9]{3}_[A-Z0-9]{3})/.exec(file);
  if (!m) continue;
  const set = new Set();
  for (const r of parseCsv(fs.readFileSync(path.join(MSGMAPS, file), 'utf8'))) {
    const sm = (r[10] ?? '').trim();
    if (/^[A-Z0-9]{3}\[[^\]]+\]$/.test(sm)) set.add(sm);
  }
  messageMaps.set(m[1], set);
}
/** A structure without its own message map takes its family's (ADT_A03 -> ADT_A01...). */
const FAMILY = {
  ADT: 'ADT_A01',
  ORM: 'ORM_O01',
  OML: 'OML_O21',
  ORU: 'ORU_R01',
  SIU: 'SIU_S12',
  VXU: 'VXU_V04',
  MDM: 'MDM_T02',
};

/**
 * A row condition on the same segment -> (segment) => boolean; null when there is none; 'unsupported' when it
 * names something this script does not evaluate (another segment, counts, FHIR-side tests...).
 */
function condition(text, seg) {
  if (!text) return null;
  let t = text
    .replace(/\s+/g, ' ')
    .replace(/^IF /, '')
    .replace(/ AND IF /g, ' AND ')
    .replace(/^\((.*)\)$/, '$1')
    .trim();
  if (t.startsWith('(') && !t.endsWith(')')) t = t.slice(1);
  const ors = t.split(/ OR /).map((o) => o.split(/ AND /));
  const fns = [];
  for (const ands of ors) {
    const fa = [];
    for (const a of ands) {
      const m = new RegExp(`^\\(?(${seg})-(\\d+)(?:\\.(\\d+))? (.*?)\\)?$`).exec(a.trim());
      if (!m) return 'unsupported';
      const [, , f, comp, rest] = m;
      const get = (s) => (comp ? s.get(Number(f), 0, Number(comp)) : s.get(Number(f), 0, 1)).trim();
      const valued = (s) =>
        s
          .reps(Number(f))
          .some((rep) =>
            (comp ? [rep[Number(comp) - 1] ?? []] : rep).some((c) => c.some((x) => x && x.trim() && x !== '""')),
          );
      const list = (l) => [...l.matchAll(/"([^"]*)"/g)].map((x) => x[1]);
      let fn;
      if (/^(IS )?VALUED$/.test(rest)) fn = valued;
      else if (/^(IS )?NOT VALUED$|^ARE NOT VALUED$/.test(rest)) fn = (s) => !valued(s);
      else if (/^(IS )?(NOT IN|IS NOT IN) \(/.test(rest)) fn = (s) => !list(rest).includes(get(s));
      else if (/^(IS )?IN \(/.test(rest)) fn = (s) => list(rest).includes(get(s));
      else if (/^(NOT EQUALS|IS NOT|NOT) "/.test(rest)) fn = (s) => get(s) !== list(rest)[0];
      else if (/^(EQUALS|IS) "/.test(rest)) fn = (s) => get(s) === list(rest)[0];
      else return 'unsupported';
      fa.push(fn);
    }
    fns.push((s) => fa.every((f) => f(s)));
  }
  return (s) => fns.some((f) => f(s));
}

const RESULT_MESSAGES = new Set(['ORU', 'OUL', 'OPL', 'ORL', 'PPR']);
/** Only these message codes make the resource of these maps (the IG's message maps put them there). */
const ONLY = {
  'ORC[Immunization]': ['VXU'],
  'ORC[MedicationAdministration]': ['RAS'],
  'ORC[DiagnosticReport]': [...RESULT_MESSAGES],
  'OBR[DiagnosticReport]': [...RESULT_MESSAGES],
  'OBX[DocumentReference]': ['MDM'],
  'NTE[DocumentReference]': ['MDM'],
  'NTE[Appointment-Comment]': ['SIU', 'SRM', 'SRR'],
};
/** NTE: the map of the resource the segment above it made. */
const NTE_AFTER = {
  OBX: 'NTE[Observation]',
  OBR: 'NTE[ServiceRequest]',
  ORC: 'NTE[ServiceRequest]',
  TQ1: 'NTE[ServiceRequest]',
  SCH: 'NTE[Appointment-Comment]',
  AIS: 'NTE[Appointment-Comment]',
  AIG: 'NTE[Appointment-Comment]',
  AIL: 'NTE[Appointment-Comment]',
  AIP: 'NTE[Appointment-Comment]',
  TXA: 'NTE[DocumentReference]',
};

/** The segment maps that apply to a segment of a message of this type/structure (IG message map, else the family's). */
function applies(map, code, structure, msgSeg, prev) {
  const listed = messageMaps.get(structure) ?? messageMaps.get(FAMILY[code]);
  if (ONLY[map.name] && !ONLY[map.name].includes(code)) return false;
  if (map.name.startsWith('NTE[')) return NTE_AFTER[prev] === map.name;
  if (map.name === 'OBX[Observation-Component]' || map.name === 'OBX[Observation]') {
    if (code === 'MDM') return false;
    const multi = msgSeg.reps(5).length > 1 && msgSeg.get(2).trim() !== 'NA';
    return map.name === 'OBX[Observation-Component]' ? multi : !multi;
  }
  if (listed) return listed.has(map.name);
  if (map.name === 'OBR[DiagnosticReport]' && ORDER_MESSAGES.has(code)) return false;
  if (map.name === 'OBX[DocumentReference]') return code === 'MDM';
  return true;
}

/**
 * The message maps' context conditions on ROL and DG1 (ADT_A01 rows 13, 19 and 25, and their family):
 * ROL after PID/PD1 is ROL[Patient-GeneralPractitioner] when ROL-3.1 is PP and ROL[CareTeam] otherwise; ROL after
 * PV1/PV2 is ROL[Encounter-PractitionerRole]; a procedure's or an insurance's ROL has no map (rows 27.2, 29.4);
 * DG1[Encounter] "if in context of an encounter" (a PV1 before it),
 * DG1[EpisodeOfCare] "if in context of an episode of care" (that PV1 names one: PV1-54, or PV1-53).
 */
function inContext(map, seg, segments, i) {
  // the group a ROL is in: the nearest segment before it that is not a ROL, ARV or NTE (PID/PD1: the patient's)
  let j = i - 1;
  while (j >= 0 && ['ROL', 'ARV', 'NTE'].includes(segments[j].name)) j--;
  const group = j >= 0 ? segments[j].name : '';
  const patientLevel = group === 'PID' || group === 'PD1';
  const pv1 = segments
    .slice(0, i)
    .reverse()
    .find((s) => s.name === 'PV1');
  switch (map.name) {
    case 'ROL[Patient-GeneralPractitioner]':
      return patientLevel && seg.get(3, 0, 1).trim() === 'PP';
    case 'ROL[CareTeam]':
      return patientLevel && seg.get(3, 0, 1).trim() !== 'PP';
    case 'ROL[Encounter-PractitionerRole]':
      return group === 'PV1' || group === 'PV2';
    case 'DG1[Encounter]':
      return !!pv1;
    case 'DG1[EpisodeOfCare]':
      return !!pv1 && (valuedField(pv1, 54) || valuedField(pv1, 53));
    default:
      return true;
  }
}

function prevName(segments, i) {
  for (let j = i - 1; j >= 0; j--) if (segments[j].name !== 'NTE') return segments[j].name;
  return '';
}

function valuedField(segment, n) {
  return segment.reps(n).some((rep) => rep.some((comp) => comp.some((s) => s && s.trim() && s !== '""')));
}

function hasUrl(v, url) {
  if (Array.isArray(v)) return v.some((x) => hasUrl(x, url));
  if (v && typeof v === 'object') return v.url === url || Object.values(v).some((x) => hasUrl(x, url));
  return false;
}

function filled(row, resources, byType) {
  const top = row.attr
    .replace(/\[[^\]]*\]/g, '')
    .split(/[.(]/)[0]
    .trim();
  if (top === '$this' || top === '') {
    const dm = /\[([A-Za-z]+)/.exec(row.dtMap);
    return dm ? (byType.get(dm[1]) ?? []).length > 0 : resources.length > 0;
  }
  if (/^(modifierE|e)xtension$/.test(top) && /\.url$/.test(row.attr.replace(/\[[^\]]*\]/g, ''))) {
    const url = /"([^"]+)"/.exec(row.assign)?.[1];
    if (url) return resources.some((r) => hasUrl(r, url) || hasUrl(r, url.replace(/^https:/, 'http:')));
  }
  const key = top.replace(/\[x\]$/, '');
  return resources.some((r) =>
    Object.keys(r).some(
      (k) =>
        k === key ||
        k === `_${key}` ||
        (key.endsWith('x') ? false : k.startsWith(key) && /^[A-Z]/.test(k.slice(key.length))),
    ),
  );
}

const t = new Hl7v2Transform({});
/** type -> { messages, rows: Map(key -> { file, line, field, attr, exercised, filled }) } */
const byTypeReport = new Map();
const unevaluated = new Set();
for (const f of fs
  .readdirSync(CORPUS)
  .filter((x) => x.endsWith('.hl7'))
  .sort()) {
  for (const body of t.split(fs.readFileSync(path.join(CORPUS, f)))) {
    const headers = t.extractHeaders(body);
    const type = headers.messageType ?? 'unknown';
    const bundle = t.convert(body);
    const msg = parseHl7(decodeHl7Bytes(body, 'latin1').text);
    const byType = new Map();
    byType.set('Bundle', [bundle]);
    for (const e of bundle.entry ?? [])
      if (e.resource)
        (
          byType.get(e.resource.resourceType) ?? byType.set(e.resource.resourceType, []).get(e.resource.resourceType)
        ).push(e.resource);
    let rep = byTypeReport.get(type);
    if (!rep) byTypeReport.set(type, (rep = { messages: 0, rows: new Map() }));
    rep.messages++;
    const present = new Set(msg.segments.map((s) => s.name));
    const code = msg.msh.get(9, 0, 1);
    const structure = msg.msh.get(9, 0, 3) || `${code}_${msg.msh.get(9, 0, 2)}`;
    for (const seg of present) {
      for (const map of maps.get(seg) ?? []) {
        const segs = msg.segments.filter(
          (s, i) =>
            s.name === seg &&
            applies(map, code, structure, s, prevName(msg.segments, i)) &&
            inContext(map, s, msg.segments, i),
        );
        for (const row of map.rows) {
          if (row.cond === 'unsupported') {
            if (segs.some((s) => valuedField(s, row.n))) unevaluated.add(`${map.file}:${row.line}`);
            continue;
          }
          if (!segs.some((s) => valuedField(s, row.n) && (!row.cond || row.cond(s)))) continue;
          const key = `${map.file}:${row.line}`;
          let r = rep.rows.get(key);
          if (!r)
            rep.rows.set(
              key,
              (r = {
                file: map.file,
                line: row.line,
                field: row.field,
                attr: row.attr,
                resource: map.resource,
                filled: false,
              }),
            );
          if (!r.filled && filled(row, byType.get(map.resource) ?? [], byType)) r.filled = true;
        }
      }
    }
  }
}

const types = [...byTypeReport.keys()].sort();
let totalEx = 0;
let totalFill = 0;
const out = [];
for (const type of types) {
  const rep = byTypeReport.get(type);
  const rows = [...rep.rows.values()];
  const fillN = rows.filter((r) => r.filled).length;
  totalEx += rows.length;
  totalFill += fillN;
  out.push({
    type,
    messages: rep.messages,
    exercised: rows.length,
    filled: fillN,
    missing: rows.filter((r) => !r.filled),
  });
}
if (args.includes('--json')) {
  process.stdout.write(
    `${JSON.stringify({ total: { exercised: totalEx, filled: totalFill, unevaluated: unevaluated.size }, types: out }, null, 2)}\n`,
  );
} else report();

function report() {
  console.log(
    'IG segment-map rows exercised by the corpus (field valued) and filled by Ferry (target attribute present)\n',
  );
  console.log('| message type | msgs | IG rows exercised | filled by Ferry | % |');
  console.log('|---|---:|---:|---:|---:|');
  for (const o of out)
    console.log(
      `| ${o.type} | ${o.messages} | ${o.exercised} | ${o.filled} | ${o.exercised ? ((100 * o.filled) / o.exercised).toFixed(0) : '-'} |`,
    );
  console.log(
    `| **all** | ${out.reduce((a, o) => a + o.messages, 0)} | ${totalEx} | ${totalFill} | ${totalEx ? ((100 * totalFill) / totalEx).toFixed(1) : '-'} |`,
  );
  console.log(
    `\n(${unevaluated.size} IG rows with a valued field left out: their condition is not evaluated by this script)`,
  );
  if (args.includes('--missing')) {
    // each missing row once, with the message types exercising it
    const missing = new Map();
    for (const o of out)
      for (const m of o.missing)
        (
          missing.get(`${m.file}:${m.line}`) ??
          missing.set(`${m.file}:${m.line}`, { ...m, types: [] }).get(`${m.file}:${m.line}`)
        ).types.push(o.type);
    console.log(`\nexercised rows not filled (${missing.size}):`);
    for (const m of [...missing.values()].sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line))
      console.log(
        `  ${m.file.replace(/^HL7 Segment - FHIR R4_ /, '')} row ${m.line}  ${m.field} -> ${m.resource}.${m.attr}  (${m.types.length} types: ${m.types.slice(0, 4).join(', ')}${m.types.length > 4 ? ', …' : ''})`,
      );
  }
}
