/**
 * Data quality: every value of a message the conversion cannot use becomes an issue -- where it
 * is (`PID-7`, `PID-11-13`, with the segment's occurrence and the field's repetition) and why,
 * never the value (it may be PHI). A field is judged by its HL7 data type as the v2-to-FHIR IG's
 * segment maps give it (maps/fields.generated.ts; OBX-5 by OBX-2), with the same parsers the
 * conversion uses (parseDtm, decimal, the IG concept maps): a value they reject is one the
 * conversion drops. So every typed field is checked whether or not a handler maps it, and no
 * handler has to remember to report.
 */
import type { ReportedIssue } from '@ferry/core';
import type { Hl7Rep, Hl7Segment } from '../hl7v2/parser';
import { mapCode } from './codes';
import { decimal } from './datatypes';
import { parseDtm } from './dates';
import { SEGMENT_FIELDS, TYPE_COMPONENTS, type FieldType } from './maps/fields.generated';

export type IssueReporter = (issue: ReportedIssue) => void;

/** HL7 table 0357 error conditions of the issues. */
const DATA_TYPE_ERROR = '102';
const TABLE_VALUE_NOT_FOUND = '103';
const VALUE_TOO_LONG = '104';

const DATE_TYPES = new Set(['DT', 'DTM', 'TS']);

/** Why a value of an HL7 primitive type cannot be used, or undefined when it can (or is empty). */
export function primitiveProblem(type: string, v: string | undefined): { code: string; text: string } | undefined {
  if (v === undefined || v === '' || v === '""') return undefined;
  if (DATE_TYPES.has(type)) {
    return parseDtm(v)
      ? undefined
      : {
          code: 'invalid-date',
          text: `not a valid HL7 ${type === 'DT' ? 'date (YYYY[MM[DD]])' : 'date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])'}`,
        };
  }
  if (type === 'NM')
    return decimal(v) === undefined ? { code: 'invalid-number', text: 'not a number (NM)' } : undefined;
  if (type === 'SI')
    return /^\s*\d+\s*$/.test(v)
      ? undefined
      : { code: 'invalid-number', text: 'not a sequence id (SI: a non-negative integer)' };
  return undefined;
}

/** Why a code is outside the required binding `map` (an IG concept map), or undefined. */
export function codeProblem(map: string, code: string | undefined): { code: string; text: string } | undefined {
  if (code === undefined || code.trim() === '' || code === '""') return undefined;
  // `A|B`: either map (XAD-7 is an address use or, M / SH, an address type)
  const maps = map.includes('|') ? map.split('|') : undefined;
  if (!maps)
    return mapCode(map, code)
      ? undefined
      : { code: 'unknown-code', text: `code not in the required binding (concept map ${map})` };
  for (const m of maps) if (mapCode(m, code)) return undefined;
  return { code: 'unknown-code', text: `code not in the required binding (concept map ${map.replace('|', ' or ')})` };
}

/** The type of a field of a segment: the IG's, OBX-5 by OBX-2. */
function fieldType(seg: Hl7Segment, n: number): FieldType | undefined {
  if (n === 5 && seg.name === 'OBX') {
    const t = seg.get(2).trim().toUpperCase();
    return t ? [t, 'Observation.value[x]', ''] : undefined;
  }
  return SEGMENT_FIELDS[seg.name]?.[n];
}

/**
 * Checks one segment's typed fields (and the truncation character) and reports each value the
 * conversion cannot use. `occurrence`: which one of its name this segment is in the message.
 */
export function checkSegment(seg: Hl7Segment, occurrence: number, report: IssueReporter): void {
  const at = (
    field: number,
    repetition: number,
    reps: number,
    component?: number,
  ): Omit<ReportedIssue, 'code' | 'text'> => {
    const loc: Omit<ReportedIssue, 'code' | 'text'> = {
      location: component ? `${seg.name}-${field}-${component}` : `${seg.name}-${field}`,
      occurrence,
      sequence: seg.sequence,
    };
    if (reps > 1) loc.repetition = repetition + 1;
    return loc;
  };
  const trunc = seg.delimiters.truncation;
  const fields = SEGMENT_FIELDS[seg.name];
  if (!trunc) {
    // The usual case (no truncation character): only the typed fields are visited.
    const typed = typedFields(seg.name);
    for (let k = 0; k < typed.length; k++) {
      const n = typed[k];
      const raw = seg.fields[n];
      if (raw === undefined || raw === '' || raw === '""') continue;
      const ft = n === 5 && seg.name === 'OBX' ? fieldType(seg, 5) : fields![n];
      if (ft) checkField(seg, n, ft, at, report);
    }
    return;
  }
  const first = seg.name === 'MSH' ? 3 : 1;
  for (let n = first; n < seg.fields.length; n++) {
    const raw = seg.fields[n];
    if (raw === undefined || raw === '' || raw === '""') continue;
    // A value the sender cut short (HL7 v2.7+ truncation character, MSH-2's fifth): not all of it arrived.
    if (trunc && raw.includes(trunc)) {
      const reps = seg.reps(n);
      reps.forEach((rep, ri) => {
        rep.forEach((comp, ci) => {
          if (comp.some((s) => s.endsWith(trunc)))
            report({
              ...at(n, ri, reps.length, rep.length > 1 ? ci + 1 : undefined),
              code: 'truncated',
              text: 'value truncated by the sender (ends in the truncation character)',
              hl7ErrorCode: VALUE_TOO_LONG,
            });
        });
      });
    }
    const ft = fields?.[n] ?? (n === 5 && seg.name === 'OBX' ? fieldType(seg, n) : undefined);
    if (ft) checkField(seg, n, ft, at, report);
  }
}

const typedCache = new Map<string, number[]>();
/** The field numbers of a segment the IG types (MSH-1/2, the delimiters, left out). */
function typedFields(name: string): number[] {
  let t = typedCache.get(name);
  if (!t) {
    t = Object.keys(SEGMENT_FIELDS[name] ?? {})
      .map(Number)
      .concat(name === 'OBX' && !SEGMENT_FIELDS.OBX?.[5] ? [5] : [])
      .filter((n) => !(name === 'MSH' && n < 3))
      .sort((a, b) => a - b);
    typedCache.set(name, t);
  }
  return t;
}

function checkField(
  seg: Hl7Segment,
  n: number,
  [type, path, binding]: FieldType,
  at: (field: number, repetition: number, reps: number, component?: number) => Omit<ReportedIssue, 'code' | 'text'>,
  report: IssueReporter,
): void {
  const comps = TYPE_COMPONENTS[type];
  // Fast paths on the raw text (most fields: the check must not parse what the conversion does not):
  const raw = seg.fields[n];
  const d = seg.delimiters;
  if (raw.indexOf(d.repetition) < 0 && (d.escape === '' || raw.indexOf(d.escape) < 0)) {
    const comp = raw.indexOf(d.component);
    if (comp < 0 && type !== 'SN') {
      // one plain value: checked as it is
      if (raw.charCodeAt(0) <= 32 && raw.trim() === '') return;
      const primitive = type === 'TS' ? 'DTM' : type;
      const p = primitiveProblem(primitive, raw) ?? (binding ? codeProblem(binding, raw) : undefined);
      if (p) {
        report({
          ...at(n, 0, 1),
          ...(path ? { path } : {}),
          ...p,
          hl7ErrorCode: p.code === 'unknown-code' ? TABLE_VALUE_NOT_FOUND : DATA_TYPE_ERROR,
        });
        return;
      }
      // a composite's first component (DR-1, CQ-1...)
      const c1 = comps?.[1];
      if (c1) {
        const q =
          primitiveProblem(c1[0] === 'TS' ? 'DTM' : c1[0], raw) ?? (c1[2] ? codeProblem(c1[2], raw) : undefined);
        const full = path && c1[1] ? `${path}.${c1[1]}` : path || undefined;
        if (q)
          report({
            ...at(n, 0, 1, 1),
            ...(full ? { path: full } : {}),
            ...q,
            hl7ErrorCode: q.code === 'unknown-code' ? TABLE_VALUE_NOT_FOUND : DATA_TYPE_ERROR,
          });
      }
      return;
    }
    // a composite whose checked components are past its last one: nothing to check
    if (
      comps &&
      !binding &&
      !DATE_TYPES.has(type) &&
      type !== 'NM' &&
      type !== 'SI' &&
      type !== 'SN' &&
      !hasComponents(raw, d.component, firstChecked(type))
    )
      return;
  }
  const reps = seg.reps(n);
  for (let ri = 0; ri < reps.length; ri++) {
    const rep: Hl7Rep = reps[ri];
    const value = rep[0]?.[0];
    // A primitive (TS: its DTM in component 1).
    const primitive = type === 'TS' ? 'DTM' : type;
    const p = primitiveProblem(primitive, value) ?? (binding ? codeProblem(binding, value) : undefined);
    if (p) {
      report({
        ...at(n, ri, reps.length),
        ...(path ? { path } : {}),
        ...p,
        hl7ErrorCode: p.code === 'unknown-code' ? TABLE_VALUE_NOT_FOUND : DATA_TYPE_ERROR,
      });
      continue;
    }
    if (type === 'SN') checkSn(rep, n, ri, reps.length, path, at, report);
    if (!comps) continue;
    const list = componentList(type);
    for (let k = 0; k < list.length; k++) {
      const [c, ctype, cpath, cbinding] = list[k];
      const v = rep[c - 1]?.[0];
      if (v === undefined || v === '') continue;
      const q =
        primitiveProblem(ctype === 'TS' ? 'DTM' : ctype, v) ?? (cbinding ? codeProblem(cbinding, v) : undefined);
      if (q) {
        const full = path && cpath ? `${path}.${cpath}` : path || undefined;
        report({
          ...at(n, ri, reps.length, c),
          ...(full ? { path: full } : {}),
          ...q,
          hl7ErrorCode: q.code === 'unknown-code' ? TABLE_VALUE_NOT_FOUND : DATA_TYPE_ERROR,
        });
      }
    }
  }
}

/** True when a raw field (no repetitions) has at least `k` components. */
function hasComponents(raw: string, sep: string, k: number): boolean {
  let n = 1;
  for (let i = raw.indexOf(sep); i >= 0 && n < k; i = raw.indexOf(sep, i + 1)) n++;
  return n >= k;
}

const listCache = new Map<string, (readonly [number, string, string, string])[]>();
/** The components of a composite type the check reads, in order: [component, type, path, binding]. */
function componentList(type: string): (readonly [number, string, string, string])[] {
  let l = listCache.get(type);
  if (!l) {
    const comps = TYPE_COMPONENTS[type] ?? {};
    l = Object.keys(comps)
      .map(Number)
      .sort((a, b) => a - b)
      .map((c) => [c, comps[c][0], comps[c][1], comps[c][2]] as const);
    listCache.set(type, l);
  }
  return l;
}

/** The lowest component of a composite type the check reads. */
function firstChecked(type: string): number {
  return componentList(type)[0]?.[0] ?? Infinity;
}

/** SN (structured numeric, OBX-5 when OBX-2 is SN): its numbers in components 2 and 4. */
function checkSn(
  rep: Hl7Rep,
  n: number,
  ri: number,
  reps: number,
  path: string,
  at: (field: number, repetition: number, reps: number, component?: number) => Omit<ReportedIssue, 'code' | 'text'>,
  report: IssueReporter,
): void {
  for (const c of [2, 4]) {
    const q = primitiveProblem('NM', rep[c - 1]?.[0]);
    if (q) report({ ...at(n, ri, reps, c), ...(path ? { path } : {}), ...q, hl7ErrorCode: DATA_TYPE_ERROR });
  }
}

/** A standard segment no handler maps, dropped under `unknownSegments: ignore`. */
export function unknownSegment(seg: Hl7Segment, occurrence: number): ReportedIssue {
  return {
    location: seg.name,
    occurrence,
    sequence: seg.sequence,
    code: 'unknown-segment',
    text: 'segment not mapped to FHIR and dropped (conversion.unknownSegments: ignore)',
  };
}
