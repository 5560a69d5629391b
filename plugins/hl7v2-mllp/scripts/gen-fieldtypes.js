#!/usr/bin/env node
/**
 * Generates src/v2-to-fhir/maps/fields.generated.ts from the HL7 v2-to-FHIR IG segment and datatype
 * maps (../shared/v2-to-fhir/mappings/{segments,datatypes}/*.csv, HL7/v2-to-fhir at 8c9b414b,
 * Apache-2.0): for each segment field the IG maps, its HL7 data type, the FHIR element it goes
 * to and, for a `code` element, the concept map of its required binding; for each composite data
 * type, its components of the types the data-quality check reads (dates, numbers, codes).
 * Run: node plugins/hl7v2-mllp/scripts/gen-fieldtypes.js  (output is committed; the runtime never reads ../shared)
 * `--check` compares instead of writing (exit 1 on a difference): src/v2-to-fhir/maps/generated.test.ts runs it.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '../../../../shared/v2-to-fhir/mappings');
const OUT = path.resolve(__dirname, '../src/v2-to-fhir/maps/fields.generated.ts');
const { CODE_MAPS } = loadCodeMaps();

function loadCodeMaps() {
  // the generated concept maps, read as text (no TypeScript at generation time)
  const text = fs.readFileSync(path.resolve(__dirname, '../src/v2-to-fhir/maps/codesystems.generated.ts'), 'utf8');
  // CODE_MAPS = JSON.parse("<the maps as a JSON string literal>")
  const literal = /CODE_MAPS: Record<string, CodeMap> = JSON\.parse\(("(?:[^"\\]|\\.)*")\);/.exec(text)[1];
  return { CODE_MAPS: new Set(Object.keys(JSON.parse(JSON.parse(literal)))) };
}

const { parseCsv } = require('./csv');

/** Types whose values the check reads. */
const CHECKED = new Set(['DT', 'DTM', 'TS', 'NM', 'SI']);
const CODED = new Set(['CWE', 'CE', 'CNE', 'ID', 'IS']);
/** The resource a segment's fields are named after when several IG maps cover it (the one Ferry builds). */
const PRIMARY = {
  OBR: 'ServiceRequest',
  ORC: 'ServiceRequest',
  MSH: 'MessageHeader',
  PID: 'Patient',
  NK1: 'RelatedPerson',
  OBX: 'Observation',
  DG1: 'Condition',
  AIS: 'Appointment',
  PD1: 'Patient',
  PRT: 'Practitioner',
};

/** `identifier[2]` -> `identifier`, `assigner(Organization)` -> `assigner`. */
function cleanAttr(a) {
  return a
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\([^)]*\)/g, '')
    .replace(/\(.*$/, '')
    .replace(/\)/g, '')
    .replace(/\s+/g, '')
    .replace(/^\.+|\.+$/g, '');
}

/**
 * A required binding: a FHIR `code` element whose value set is required by FHIR R4 (a code
 * outside it cannot be sent at all) -- gender, status, priority, use, system, criticality...
 * -- not the code of a CodeableConcept or Quantity (extensible or example bindings: the v2
 * code is kept as sent).
 */
function requiredBinding(attr, fhirType, v2Type, vocab) {
  if (fhirType !== 'code' || !CODED.has(v2Type) || !CODE_MAPS.has(vocab)) return undefined;
  if (/coding|\.code$|^code$|tag\./.test(attr)) return undefined;
  const last = attr.split('.').pop();
  return [
    'gender',
    'status',
    'priority',
    'use',
    'system',
    'criticality',
    'category',
    'severity',
    'intent',
    'mode',
  ].includes(last)
    ? vocab
    : undefined;
}

function readMaps(dir, re) {
  const out = [];
  for (const f of fs
    .readdirSync(path.join(ROOT, dir))
    .filter((f) => f.endsWith('.csv'))
    .sort()) {
    const m = re.exec(f);
    if (!m) continue;
    out.push({ name: m[1], target: m[2], rows: parseCsv(fs.readFileSync(path.join(ROOT, dir, f), 'utf8')).slice(2) });
  }
  return out;
}

// Segments: SEG -> field -> [type, path, binding]
const segments = {};
const segFiles = readMaps('segments', /^HL7 Segment - FHIR R4_ ([A-Z0-9]{3})\[([^\]]+)\]/);
segFiles.sort(
  (a, b) =>
    (PRIMARY[a.name] === a.target.split('-')[0] ? -1 : 0) - (PRIMARY[b.name] === b.target.split('-')[0] ? -1 : 0),
);
for (const { name, target, rows } of segFiles) {
  const resource = target.split('-')[0];
  const seg = (segments[name] ??= {});
  for (const r of rows) {
    const m = /^([A-Z0-9]{3})-(\d+)$/.exec((r[1] || '').trim());
    if (!m || m[1] !== name) continue;
    const field = Number(m[2]);
    const type = (r[3] || '').trim().toUpperCase();
    const attr = cleanAttr(r[9] || '');
    const fhirType = (r[11] || '').trim();
    const vocab = (r[15] || '').trim();
    if (!type) continue;
    const prev = seg[field];
    // The first row naming an element wins (a `.url` row of an extension gives way to its value row).
    const usable = attr && !/\.url$/.test(attr);
    // ORC-1 is the order control: only some of its codes give a status (the others are no loss)
    const binding = `${name}-${field}` === 'ORC-1' ? undefined : requiredBinding(attr, fhirType, type, vocab);
    if (!prev) seg[field] = { type, path: usable ? `${resource}.${attr}` : undefined, binding };
    else {
      if (!prev.path && usable && prev.type === type) prev.path = `${resource}.${attr}`;
      if (!prev.binding && binding) {
        // the element the binding is on names the field's issues
        prev.binding = binding;
        prev.path = `${resource}.${attr}`;
      }
    }
  }
}

// Datatypes: TYPE -> component -> [type, path, binding] (first map of each type)
const datatypes = {};
for (const { name: _n, target, rows } of readMaps(
  'datatypes',
  /^HL7 Data Type - FHIR R4_ ([A-Z0-9]{2,3})\[([^\]]+)\]/,
)) {
  for (const r of rows) {
    const m = /^([A-Z0-9]{2,3})\.(\d+)$/.exec((r[1] || '').trim());
    if (!m) continue;
    const dt = (datatypes[m[1]] ??= {});
    const comp = Number(m[2]);
    const type = (r[3] || '').trim().toUpperCase();
    const attr = cleanAttr(r[9] || '');
    const fhirType = (r[11] || '').trim();
    const vocab = (r[15] || '').trim();
    if (!type || dt[comp]) {
      if (dt[comp] && !dt[comp].binding) dt[comp].binding = requiredBinding(attr, fhirType, type, vocab);
      continue;
    }
    dt[comp] = {
      type,
      path: attr && !/\.url$/.test(attr) ? attr : undefined,
      binding: requiredBinding(attr, fhirType, type, vocab),
      target,
    };
  }
}

/** Keep what the check reads: checked primitives, bound codes, and composites with checked components. */
const keepType = (t) => CHECKED.has(t) || !!compsOf(t);
/**
 * Components checked: dates everywhere, numbers that are quantities (CQ.1), and the codes the
 * conversion maps through a required binding. Not the numbers of XON (ids the versions before
 * 2.5 typed NM and senders fill with text), of RPT / TQ / NDL (laid out otherwise before 2.7):
 * a check must not cry wolf on every old-version message.
 */
const COMPONENT_NUMBERS = new Set(['CQ.1']);
const COMPONENT_BINDINGS = {
  'XPN.7': 'NameType',
  'XTN.2': 'TelecommunicationUseCode',
  'XTN.3': 'TelecommunicationEquipmentType',
  'XAD.7': 'AddressType[Use]|AddressType[Type]',
};
const SKIP_TYPES = new Set(['XON', 'RPT', 'TQ', 'NDL']);
function compsOf(t) {
  const dt = datatypes[t];
  if (!dt || CHECKED.has(t) || SKIP_TYPES.has(t)) return undefined;
  const out = {};
  for (const [c, e] of Object.entries(dt)) {
    const key = `${t}.${c}`;
    if (DATE_TYPES.has(e.type) || (e.type === 'NM' && COMPONENT_NUMBERS.has(key))) out[c] = [e.type, e.path ?? '', ''];
    else if (COMPONENT_BINDINGS[key]) out[c] = [e.type, e.path ?? '', COMPONENT_BINDINGS[key]];
  }
  return Object.keys(out).length ? out : undefined;
}
const DATE_TYPES = new Set(['DT', 'DTM', 'TS']);

const segOut = {};
for (const name of Object.keys(segments).sort()) {
  const f = {};
  for (const [n, e] of Object.entries(segments[name]))
    if (keepType(e.type) || e.binding) f[n] = [e.type, e.path ?? '', e.binding ?? ''];
  if (Object.keys(f).length) segOut[name] = f;
}
const typesUsed = new Set();
for (const s of Object.values(segOut)) for (const e of Object.values(s)) typesUsed.add(e[0]);
const compOut = {};
for (const t of [...typesUsed].sort()) {
  const c = compsOf(t);
  if (c) compOut[t] = c;
}

const body = `/* eslint-disable */
// GENERATED by plugins/hl7v2-mllp/scripts/gen-fieldtypes.js from
// ../shared/v2-to-fhir/mappings/{segments,datatypes}/*.csv (HL7 v2-to-FHIR IG, HL7/v2-to-fhir 8c9b414b, Apache-2.0).
// Do not edit by hand.

/** [HL7 data type, FHIR element it maps to ('' when the IG names none), concept map of a required binding ('' when none)]. */
export type FieldType = readonly [string, string, string];

/** Segment -> field number -> type: the fields the IG maps whose values the data-quality check reads. */
export const SEGMENT_FIELDS: Record<string, Record<number, FieldType>> = ${JSON.stringify(segOut, null, 0).replace(/\],"/g, '],\n  "').replace(/\},"/g, '},\n"')};

/** Composite data type -> component number -> type (the components the check reads; path relative to the field's element). */
export const TYPE_COMPONENTS: Record<string, Record<number, FieldType>> = ${JSON.stringify(compOut, null, 0).replace(/\},"/g, '},\n"')};
`;
require('./generated-output').emit(
  OUT,
  body,
  `${Object.keys(segOut).length} segments, ${Object.keys(compOut).length} composite types`,
);
