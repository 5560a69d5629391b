/**
 * HL7 v2 datatype -> FHIR datatype maps, written from the IG's datatype CSVs
 * (../shared/v2-to-fhir/mappings/datatypes/HL7 Data Type - FHIR R4_ <TYPE>[<FHIR>].csv).
 * Every function takes one repetition (components x subcomponents) and returns undefined
 * when nothing is valued, so callers can spread results without empty elements.
 */
import type {
  Address,
  Attachment,
  CodeableConcept,
  Coding,
  ContactPoint,
  HumanName,
  Identifier,
  Period,
  Quantity,
  Range,
  Ratio,
} from '@medplum/fhirtypes';
import type { Hl7Rep } from '../hl7v2/parser';
import { mapCode, mappedCoding } from './codes';
import type { Systems } from './context';
import { toDateTime } from './dates';
import type { DefaultTz } from './timezone';

/** Component i (1-based), first subcomponent. */
export const c = (r: Hl7Rep | undefined, i: number): string => r?.[i - 1]?.[0] ?? '';
/** Component i as a composite of its subcomponents (for HD in CX-4, FN in XPN-1...). */
export const nest = (r: Hl7Rep | undefined, i: number): Hl7Rep => (r?.[i - 1] ?? []).map((s) => [s]);
/** A FHIR `code` from a v2 value: trimmed, inner blanks collapsed to one space; undefined when empty. */
export function codeStr(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  let t = v.trim();
  if (/\s\s|[\t\n\r\f\v]/.test(t)) t = t.replace(/\s+/g, ' ');
  return t === '' ? undefined : t;
}
/** A MIME type usable as Attachment.contentType (a FHIR code), else undefined. */
export function mimeCode(v: string | undefined): string | undefined {
  return v && /^[!-~]+\/[!-~]+$/.test(v) ? v : undefined;
}
export const valued = (s: string | undefined): s is string =>
  s !== undefined && s !== '' && s !== '""' && s.trim() !== '';

/** A copy of `o` without undefined / empty values (no `delete`: keeps objects in V8's fast mode); undefined when nothing is left. */
export function compact<T extends object>(o: T): T | undefined {
  let out: Record<string, unknown> | undefined;
  for (const k in o) {
    const v = (o as Record<string, unknown>)[k];
    if (v === undefined || v === '' || (Array.isArray(v) && v.length === 0)) continue;
    (out ??= {})[k] = v;
  }
  return out as T | undefined;
}

export const ext = {
  identifierCheckDigit: 'http://hl7.org/fhir/StructureDefinition/identifier-checkDigit',
  namingSystemCheckDigit: 'http://hl7.org/fhir/StructureDefinition/namingsystem-checkDigit',
  humannameAssemblyOrder: 'http://hl7.org/fhir/StructureDefinition/humanname-assembly-order',
  addressUse: 'http://terminology.hl7.org/CodeSystem/v2-0190',
};

export interface DtCtx {
  systems: Systems;
  /** Offset of times sent without one: fixed (`Z`, `±hh:mm`) or resolved per timestamp (IANA zone). */
  tz: DefaultTz;
}

// ---------------------------------------------------------------------------------------------
// CWE / CE / CNE / CF / IS / ID

/** CWE[CodeableConcept]: coding[1] = 1,2,3 (+7 version), coding[2] = 4,5,6 (+8), coding[3] = 10,11,12 (+13), text = 9. */
export function cwe(r: Hl7Rep | undefined, x: DtCtx): CodeableConcept | undefined {
  if (!r || r.length === 0) return undefined;
  const coding: Coding[] = [];
  const one = (code: string, display: string, sys: string, version: string) => {
    if (!valued(code) && !valued(display)) return;
    const cd: Coding = {};
    const system = x.systems.code(sys);
    if (system) cd.system = system;
    if (valued(version)) cd.version = version;
    if (valued(code)) cd.code = codeStr(code);
    if (valued(display)) cd.display = display;
    if (cd.code || cd.system) coding.push(cd);
  };
  one(c(r, 1), c(r, 2), c(r, 3), c(r, 7));
  one(c(r, 4), c(r, 5), c(r, 6), c(r, 8));
  one(c(r, 10), c(r, 11), c(r, 12), c(r, 13));
  const cc: CodeableConcept = {};
  if (coding.length) cc.coding = coding;
  const text = c(r, 9) || (!c(r, 1) ? c(r, 2) : '');
  if (valued(text)) cc.text = text;
  return cc.coding || cc.text ? cc : undefined;
}

/** CWE[CodeableConcept] through an IG concept map: the mapped coding first, the original v2 coding kept. */
export function cweMapped(r: Hl7Rep | undefined, map: string, x: DtCtx, v2Table?: string): CodeableConcept | undefined {
  const cc = cwe(r, x);
  if (!cc) return undefined;
  const code = c(r, 1);
  const mapped = mappedCoding(map, code);
  if (cc.coding && v2Table && !c(r, 3)) cc.coding[0].system = `http://terminology.hl7.org/CodeSystem/v2-${v2Table}`;
  const same = mapped && (cc.coding ?? []).find((k) => k.system === mapped.system && k.code === mapped.code);
  if (mapped && !same) cc.coding = [mapped, ...(cc.coding ?? [])];
  else if (same && !same.display && mapped?.display) same.display = mapped.display; // the map's display for a bare code
  return cc;
}

/** A simple ID/IS code as CodeableConcept with a v2 table system. */
export function isCode(code: string | undefined, table: string, display?: string): CodeableConcept | undefined {
  if (!valued(code)) return undefined;
  const cd: Coding = { system: `http://terminology.hl7.org/CodeSystem/v2-${table}`, code: codeStr(code) };
  if (display) cd.display = display;
  return { coding: [cd] };
}

/** CWE[code] through a concept map. */
export function codeOf(map: string, v2code: string | undefined): string | undefined {
  return mapCode(map, v2code)?.code;
}

// ---------------------------------------------------------------------------------------------
// Identifiers: CX, EI, HD

/** HD -> identifier system (HD.1 namespace / HD.2 universal id / HD.3 type). */
export function hdSystem(hd: Hl7Rep, x: DtCtx): string | undefined {
  return x.systems.identifier(c(hd, 1) || undefined, c(hd, 2) || undefined, c(hd, 3) || undefined);
}

export function hdDisplay(hd: Hl7Rep): string | undefined {
  return c(hd, 1) || c(hd, 2) || undefined;
}

/** CX[Identifier]: value 1, check digit 2/3 (extensions), system + assigner from 4, type 5 (IdentifierType), period 7/8. */
export function cx(r: Hl7Rep | undefined, x: DtCtx): Identifier | undefined {
  const value = c(r, 1);
  if (!r || !valued(value)) return undefined;
  const id: Identifier = {};
  const extension = [];
  if (valued(c(r, 2))) extension.push({ url: ext.identifierCheckDigit, valueString: c(r, 2) });
  if (valued(c(r, 3))) extension.push({ url: ext.namingSystemCheckDigit, valueString: c(r, 3) });
  if (extension.length) id.extension = extension;
  const type = c(r, 5);
  if (valued(type)) {
    const m = mapCode('IdentifierType', type);
    id.type = {
      coding: [
        {
          system: m?.system || 'http://terminology.hl7.org/CodeSystem/v2-0203',
          code: m?.code ?? codeStr(type),
          ...(m?.display ? { display: m.display } : {}),
        },
      ],
    };
  }
  const hd = nest(r, 4);
  const sys = hdSystem(hd, x);
  if (sys) id.system = sys;
  id.value = value;
  const period = compact<Period>({ start: toDateTime(c(r, 7), x.tz), end: toDateTime(c(r, 8), x.tz) });
  if (period) id.period = period;
  const asg = hdDisplay(hd);
  if (asg) id.assigner = { display: asg };
  return id;
}

/** EI[Identifier-System]: value 1, system from 2 (namespace) / 3 (universal id). */
export function ei(r: Hl7Rep | undefined, x: DtCtx, type?: CodeableConcept): Identifier | undefined {
  const value = c(r, 1);
  if (!r || !valued(value)) return undefined;
  const id: Identifier = {};
  if (type) id.type = type;
  const sys = x.systems.identifier(c(r, 2) || undefined, c(r, 3) || undefined, c(r, 4) || undefined);
  if (sys) id.system = sys;
  id.value = value;
  return id;
}

/** EI inside a component (EIP placer/filler parts): subcomponents. */
export function eiNested(r: Hl7Rep | undefined, i: number, x: DtCtx, type?: CodeableConcept): Identifier | undefined {
  return ei(nest(r, i), x, type);
}

export const PLACER = (): CodeableConcept => ({
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'PLAC', display: 'Placer Identifier' }],
});
export const FILLER = (): CodeableConcept => ({
  coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'FILL', display: 'Filler Identifier' }],
});

// ---------------------------------------------------------------------------------------------
// Names, addresses, telecom

/** XPN[HumanName] (FN surname in XPN.1.1). */
export function xpn(r: Hl7Rep | undefined, x: DtCtx): HumanName | undefined {
  if (!r) return undefined;
  const n: HumanName = {};
  const family = c(r, 1);
  if (valued(family)) n.family = family;
  const given = [c(r, 2), c(r, 3)].filter(valued);
  if (given.length) n.given = given;
  if (valued(c(r, 5))) n.prefix = [c(r, 5)];
  const suffix = [c(r, 4), c(r, 6), c(r, 14)].filter(valued);
  if (suffix.length) n.suffix = suffix;
  const use = codeOf('NameType', c(r, 7));
  if (use) n.use = use as HumanName['use'];
  const period =
    valued(c(r, 12)) || valued(c(r, 13))
      ? compact<Period>({ start: toDateTime(c(r, 12), x.tz), end: toDateTime(c(r, 13), x.tz) })
      : dr(nest(r, 10), x);
  if (period) n.period = period;
  if (!n.family && !n.given && !n.prefix && !n.suffix) return undefined;
  return n;
}

/** XAD[Address] (SAD street in XAD.1). */
export function xad(r: Hl7Rep | undefined, x: DtCtx): Address | undefined {
  if (!r) return undefined;
  const a: Address = {};
  const sad = r[0] ?? [];
  const line = [sad[0] ?? '', sad[1] ?? '', sad[2] ?? '', c(r, 2), c(r, 19)].filter(valued);
  if (line.length) a.line = line;
  if (valued(c(r, 3))) a.city = c(r, 3).trim();
  if (valued(c(r, 4))) a.state = c(r, 4);
  if (valued(c(r, 5))) a.postalCode = c(r, 5);
  if (valued(c(r, 6))) a.country = c(r, 6);
  if (valued(c(r, 9))) a.district = c(r, 9);
  const t = c(r, 7);
  if (t === 'M' || t === 'SH') a.type = codeOf('AddressType[Type]', t) as Address['type'];
  else if (valued(t)) {
    const use = codeOf('AddressType[Use]', t);
    if (use) a.use = use as Address['use'];
  }
  const period =
    valued(c(r, 13)) || valued(c(r, 14))
      ? compact<Period>({ start: toDateTime(c(r, 13), x.tz), end: toDateTime(c(r, 14), x.tz) })
      : dr(nest(r, 12), x);
  if (period) a.period = period;
  if (!a.line && !a.city && !a.state && !a.postalCode && !a.country && !a.district) return undefined;
  return a;
}

/** A primitive's `_name` element saying why its value is absent (R4's data-absent-reason; a new object each call). */
export function dataAbsent(reason: string): { extension: { url: string; valueCode: string }[] } {
  return { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: reason }] };
}

/** XTN[ContactPoint]. */
export function xtn(r: Hl7Rep | undefined, x: DtCtx, defaultUse?: ContactPoint['use']): ContactPoint | undefined {
  if (!r) return undefined;
  const equip = c(r, 3);
  const email = equip === 'Internet' || equip === 'X.400';
  let value: string | undefined;
  if (email) value = c(r, 4) || c(r, 1);
  else if (valued(c(r, 12))) value = c(r, 12);
  else if (valued(c(r, 7))) {
    value =
      (valued(c(r, 5)) ? `+${c(r, 5)} ` : '') +
      [c(r, 6), c(r, 7)].filter(valued).join(' ') +
      (valued(c(r, 8)) ? ` X${c(r, 8)}` : '');
  } else value = c(r, 1) || c(r, 4);
  if (!valued(value)) return undefined;
  const cp: ContactPoint = {};
  // the IG's TelecommunicationEquipmentType map sends CP (cellular phone) to contact-point-USE "mobile"; the
  // system of a cell phone is "phone" (ContactPoint.system's required value set has no "mobile")
  const mapped = codeOf('TelecommunicationEquipmentType', equip);
  const sys = email ? 'email' : mapped === 'mobile' ? 'phone' : mapped;
  if (sys) cp.system = sys as ContactPoint['system'];
  else if (!valued(equip) && valued(c(r, 4)) && !valued(c(r, 1))) cp.system = 'email';
  // FHIR requires a system with a value (cpt-2): none known (no or an unmapped XTN-3), the IG's
  // data-absent-reason "unknown" on it instead
  else (cp as ContactPoint & { _system?: unknown })._system = dataAbsent('unknown');
  cp.value = value;
  const use = codeOf('TelecommunicationUseCode', c(r, 2));
  if (use) cp.use = use as ContactPoint['use'];
  else if (defaultUse && !valued(c(r, 2))) cp.use = defaultUse;
  if (equip === 'CP' && !cp.use) cp.use = 'mobile';
  const period = compact<Period>({ start: toDateTime(c(r, 13), x.tz), end: toDateTime(c(r, 14), x.tz) });
  if (period) cp.period = period;
  const rank = Number(c(r, 18));
  if (Number.isInteger(rank) && rank > 0) cp.rank = rank;
  return cp;
}

// ---------------------------------------------------------------------------------------------
// Time, quantities

/** DR[Period]: start 1, end 2. */
export function dr(r: Hl7Rep | undefined, x: DtCtx): Period | undefined {
  if (!r) return undefined;
  return compact<Period>({ start: toDateTime(c(r, 1), x.tz), end: toDateTime(c(r, 2), x.tz) });
}

const DECIMAL = /^[+-]?(0|[1-9]\d*)(\.\d+)?$/;
/** An NM as a FHIR decimal (leading zeros / plus sign / trailing dot normalised), undefined if not numeric. */
export function decimal(v: string | undefined): number | undefined {
  if (!valued(v)) return undefined;
  let s = v.trim().replace(/^\+/, '');
  if (s.endsWith('.')) s = s.slice(0, -1);
  if (s.startsWith('.')) s = `0${s}`;
  if (s.startsWith('-.')) s = `-0${s.slice(1)}`;
  s = s.replace(/^(-?)0+(\d)/, '$1$2');
  if (!DECIMAL.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** CWE[Quantity] units (OBX-6) merged into a Quantity. */
export function units(q: Quantity, r: Hl7Rep | undefined, x: DtCtx): Quantity {
  if (!r) return q;
  const code = c(r, 1);
  const text = c(r, 2);
  const sys = x.systems.code(c(r, 3));
  if (valued(code) || valued(text)) q.unit = valued(text) ? text : code;
  if (sys && valued(code)) q.system = sys;
  if (valued(code) && sys) q.code = codeStr(code);
  else if (valued(code) && !sys) {
    q.code = codeStr(code);
    q.system = 'http://unitsofmeasure.org';
  }
  return q;
}

/** NR[Range]: low 1, high 2. */
export function nr(r: Hl7Rep | undefined): Range | undefined {
  const low = decimal(c(r, 1));
  const high = decimal(c(r, 2));
  if (low === undefined && high === undefined) return undefined;
  const out: Range = {};
  if (low !== undefined) out.low = { value: low };
  if (high !== undefined) out.high = { value: high };
  return out;
}

/** SN (structured numeric): comparator 1, num1 2, separator 3 (`-` range, `/` `:` ratio, `+` suffix), num2 4. */
export type SnValue =
  | { kind: 'quantity'; q: Quantity }
  | { kind: 'range'; r: Range }
  | { kind: 'ratio'; r: Ratio }
  | { kind: 'string'; s: string };
export function sn(r: Hl7Rep | undefined): SnValue | undefined {
  if (!r) return undefined;
  const cmp = c(r, 1).trim();
  const n1 = decimal(c(r, 2));
  const sep = c(r, 3).trim();
  const n2 = decimal(c(r, 4));
  const text = [c(r, 1), c(r, 2), c(r, 3), c(r, 4)].filter(valued).join(' ');
  if (!text) return undefined;
  if (cmp === '<>') return { kind: 'string', s: text };
  if (!sep && n1 !== undefined && ['', '<', '>', '<=', '>=', '='].includes(cmp)) {
    const q: Quantity = { value: n1 };
    if (cmp && cmp !== '=') q.comparator = cmp as Quantity['comparator'];
    return { kind: 'quantity', q };
  }
  if (sep === '-' && n1 !== undefined && n2 !== undefined && !cmp)
    return { kind: 'range', r: { low: { value: n1 }, high: { value: n2 } } };
  if ((sep === '/' || sep === ':') && n1 !== undefined && n2 !== undefined && !cmp)
    return { kind: 'ratio', r: { numerator: { value: n1 }, denominator: { value: n2 } } };
  return { kind: 'string', s: text };
}

// ---------------------------------------------------------------------------------------------
// Attachments

const B64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** ED[Attachment]: contentType from ED.2/ED.3, data from ED.5 (Base64 kept, Hex/A converted). */
export function ed(r: Hl7Rep | undefined): Attachment | undefined {
  if (!r) return undefined;
  const type = c(r, 2);
  const sub = c(r, 3);
  const enc = c(r, 4).toUpperCase();
  const data = c(r, 5);
  const a: Attachment = {};
  a.contentType =
    mimeCode(
      valued(sub) && valued(type) && !sub.includes('/')
        ? `${mimeMain(type)}/${sub.toLowerCase()}`
        : valued(sub) && sub.includes('/')
          ? sub
          : undefined,
    ) ?? 'application/octet-stream';
  if (valued(data)) {
    const raw = data.replace(/\s+/g, '');
    if (enc === 'BASE64' && B64.test(raw) && raw.length % 4 === 0) a.data = raw;
    else if (enc === 'HEX' && /^([0-9A-Fa-f]{2})+$/.test(raw)) a.data = Buffer.from(raw, 'hex').toString('base64');
    else a.data = Buffer.from(data, 'utf8').toString('base64');
  }
  return a.data ? a : undefined;
}

function mimeMain(t: string): string {
  const m: Record<string, string> = {
    AP: 'application',
    AU: 'audio',
    IM: 'image',
    TEXT: 'text',
    NS: 'application',
    SI: 'application',
    SD: 'application',
    MULTIPART: 'multipart',
  };
  return m[t.toUpperCase()] ?? 'application';
}

/** RP[Attachment]: url 1, contentType 3/4. */
export function rp(r: Hl7Rep | undefined): Attachment | undefined {
  const url = c(r, 1);
  if (!valued(url)) return undefined;
  const a: Attachment = { url: url.replace(/\s/g, '%20') };
  const t = c(r, 3);
  const s = c(r, 4);
  if (valued(t))
    a.contentType =
      mimeCode(valued(s) ? `${mimeMain(t)}/${s.toLowerCase()}` : `${mimeMain(t)}/octet-stream`) ??
      'application/octet-stream';
  return a;
}
