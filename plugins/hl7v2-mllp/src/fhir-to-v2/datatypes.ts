/**
 * FHIR R4 datatypes -> HL7 v2 datatypes: the IG's datatype maps (../shared/v2-to-fhir/mappings/datatypes)
 * read right to left. Every function returns components (Hl7WriteRep) for `encodeField`, or undefined
 * when there is nothing to write. Escaping is done once, by `encodeField` (src/hl7v2/parser.ts).
 */
import type {
  Address,
  CodeableConcept,
  Coding,
  ContactPoint,
  HumanName,
  Identifier,
  Quantity,
} from '@medplum/fhirtypes';
import { CODE_MAPS } from '../v2-to-fhir/maps/codesystems.generated';
import { CODE_SYSTEMS } from '../v2-to-fhir/context';
import type { Hl7WriteComponent } from '../hl7v2/parser';
import type { ReceiverProfile } from './profile';

export type Comps = Hl7WriteComponent[];

// ---------------------------------------------------------------------------------------------
// Dates (DT, DTM): the precision and the offset the FHIR value has

const FHIR_DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/;
const FHIR_DATETIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?$/;

/** FHIR date (YYYY, YYYY-MM, YYYY-MM-DD) -> DT at the same precision. */
export function dt(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const m = FHIR_DATE.exec(v);
  if (m) return m[1] + (m[2] ?? '') + (m[3] ?? '');
  const t = FHIR_DATETIME.exec(v);
  return t ? t[1] + t[2] + t[3] : undefined;
}

/**
 * FHIR dateTime / instant -> DTM: a date stays a date (YYYY[MM[DD]]); a time keeps its seconds,
 * fraction (at most 4 digits, as DTM allows) and offset (`Z` -> `+0000`, `+02:15` -> `+0215`).
 */
export function dtm(v: string | undefined): string | undefined {
  if (!v) return undefined;
  if (FHIR_DATE.test(v)) return dt(v);
  const m = FHIR_DATETIME.exec(v);
  if (!m) return undefined;
  let out = `${m[1]}${m[2]}${m[3]}${m[4]}${m[5]}${m[6] ?? ''}`;
  if (m[6] && m[7]) out += `.${m[7].slice(0, 4)}`;
  if (m[8]) out += m[8] === 'Z' ? '+0000' : m[8].replace(':', '');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Codes

/** HL7 table 0396 names preferred for writing where the inbound table knows several aliases. */
const REVERSE_SYSTEMS = new Map<string, string>([
  ['http://hl7.org/fhir/sid/icd-10-cm', 'I10C'],
  ['http://hl7.org/fhir/sid/icd-9-cm', 'I9CDX'],
  ['http://www.ama-assn.org/go/cpt', 'C4'],
  ['http://unitsofmeasure.org', 'UCUM'],
]);
for (const [name, uri] of Object.entries(CODE_SYSTEMS)) if (!REVERSE_SYSTEMS.has(uri)) REVERSE_SYSTEMS.set(uri, name);

const reverseMaps = new Map<string, Map<string, string>>();
/** The v2 code an IG concept map (`AdministrativeSex`…) maps to this FHIR code (first row wins). */
export function v2CodeOf(map: string, fhirCode: string | undefined, fhirSystem?: string): string | undefined {
  if (!fhirCode) return undefined;
  let r = reverseMaps.get(map);
  if (!r) {
    r = new Map();
    for (const [v2, e] of Object.entries(CODE_MAPS[map]?.entries ?? {})) {
      if (!r.has(`${e[2]}|${e[0]}`)) r.set(`${e[2]}|${e[0]}`, v2);
      if (!r.has(`|${e[0]}`)) r.set(`|${e[0]}`, v2);
    }
    reverseMaps.set(map, r);
  }
  return (fhirSystem ? r.get(`${fhirSystem}|${fhirCode}`) : undefined) ?? r.get(`|${fhirCode}`);
}

/** The v2 table number of an IG concept map (HL70001 -> 0001). */
function tableOf(map: string): string | undefined {
  return /^HL7(\d{4})$/.exec(CODE_MAPS[map]?.v2System ?? '')?.[1];
}

export class V2Writer {
  /** v2.3 / v2.4 receivers: CE (6 components) instead of CWE, no SPM. */
  readonly legacy: boolean;
  constructor(readonly profile: ReceiverProfile) {
    this.legacy = /^2\.[34]/.test(profile.version);
  }

  /** A FHIR code system URI -> the HL7 coding system name (CWE-3). */
  codingSystem(uri: string | undefined): string {
    if (!uri) return '';
    for (const [name, u] of Object.entries(this.profile.codeSystems)) if (u === uri) return name;
    const known = REVERSE_SYSTEMS.get(uri);
    if (known) return known;
    const tbl = /^http:\/\/terminology\.hl7\.org\/CodeSystem\/v2-(\d{4})$/.exec(uri);
    if (tbl) return `HL7${tbl[1]}`;
    if (uri.startsWith('urn:oid:')) return uri.slice(8);
    if (uri.startsWith('urn:ferry:cs:')) return decodeURIComponent(uri.slice(13));
    return uri;
  }

  /** Identifier system -> HD components (namespace, universal id, type). */
  hd(system: string | undefined, assigner?: string): string[] {
    if (!system) return assigner ? [assigner] : [];
    for (const [ns, u] of Object.entries(this.profile.identifierSystems)) if (u === system) return [ns];
    if (system.startsWith('urn:ferry:id:')) return [decodeURIComponent(system.slice(13))];
    if (system.startsWith('urn:oid:'))
      return [assigner && assigner !== system.slice(8) ? assigner : '', system.slice(8), 'ISO'];
    if (system.startsWith('urn:uuid:')) return [assigner ?? '', system.slice(9), 'UUID'];
    return [assigner ?? '', system, 'URI'];
  }

  /** Translate a code through the profile's table for this field (`OBX-3`). */
  private translate(field: string | undefined, code: string, system: string): [string, string] {
    const t = field ? this.profile.codeTables[field] : undefined;
    if (!t) return [code, system];
    const to = t.codes[code];
    if (to === undefined) return [code, system];
    return [to, t.system ?? system];
  }

  /** Coding -> CWE triplet (code, text, system). */
  triplet(cd: Coding | undefined, field?: string): string[] {
    if (!cd) return ['', '', ''];
    const [code, sys] = this.translate(field, cd.code ?? '', this.codingSystem(cd.system));
    return [code, cd.display ?? '', sys];
  }

  /**
   * CodeableConcept -> CWE (CWE[CodeableConcept] in reverse): the first two codings in CWE-1..3 and
   * CWE-4..6, the text in CWE-9. With an IG concept map (`map`) the coding in the map's v2 table is
   * put first (the inbound conversion put the mapped FHIR coding first and kept the v2 coding after it),
   * and when there is none the FHIR code is mapped back through the concept map.
   */
  cwe(cc: CodeableConcept | undefined, field?: string, map?: string): Comps | undefined {
    if (!cc) return undefined;
    let codings = (cc.coding ?? []).filter((x) => x.code || x.display);
    if (map) {
      const table = tableOf(map);
      const v2sys = table ? `http://terminology.hl7.org/CodeSystem/v2-${table}` : undefined;
      const inTable = codings.find((x) => x.system === v2sys);
      if (inTable)
        codings = [
          inTable,
          ...codings.filter((x) => x !== inTable && !(v2CodeOf(map, x.code, x.system) === inTable.code)),
        ];
      else if (codings.length) {
        const v2 = v2CodeOf(map, codings[0].code, codings[0].system);
        if (v2) codings = [{ system: v2sys, code: v2, display: codings[0].display }, ...codings.slice(1)];
      }
    }
    const out: Comps = [...this.triplet(codings[0], field)];
    if (codings[1]) out.push(...this.triplet(codings[1], undefined));
    if (this.legacy) {
      // CE has no original text (CWE-9): the text stands in for a missing display
      if (cc.text && !out[1]) out[1] = cc.text;
      return out.some((x) => x !== '') ? out : undefined;
    }
    if (cc.text && cc.text !== codings[0]?.display) {
      while (out.length < 8) out.push('');
      out.push(cc.text);
    } else if (!codings.length && cc.text) out[1] = cc.text;
    return out.some((x) => x !== '') ? out : undefined;
  }

  /** Identifier -> CX (value, check digit, scheme, assigning authority HD, type code). */
  cx(id: Identifier | undefined): Comps | undefined {
    if (!id?.value) return undefined;
    const check =
      id.extension?.find((e) => e.url === 'http://hl7.org/fhir/StructureDefinition/identifier-checkDigit')
        ?.valueString ?? '';
    const scheme =
      id.extension?.find((e) => e.url === 'http://hl7.org/fhir/StructureDefinition/namingsystem-checkDigit')
        ?.valueString ?? '';
    const type =
      id.type?.coding?.find((x) => x.system === 'http://terminology.hl7.org/CodeSystem/v2-0203')?.code ??
      id.type?.coding?.[0]?.code ??
      '';
    return [id.value, check, scheme, this.hd(id.system, id.assigner?.display), type];
  }

  /** Identifier -> EI (entity id, namespace, universal id, type). */
  ei(id: Identifier | undefined): Comps | undefined {
    if (!id?.value) return undefined;
    return [id.value, ...this.hd(id.system, id.assigner?.display)];
  }

  /** Identifier -> EI as subcomponents of one component (EIP-1 / EIP-2). */
  eiSub(id: Identifier | undefined): string[] | undefined {
    const e = this.ei(id);
    return e ? (e as string[]) : undefined;
  }
}

/** HumanName -> XPN (family, given, second given, suffix, prefix, -, name type). */
export function xpn(n: HumanName | undefined): Comps | undefined {
  if (!n) return undefined;
  // a name given as text only ("Jane Doe"): family = the last word, given = the rest
  if (!n.family && !n.given?.length && n.text) {
    const words = n.text.trim().split(/\s+/);
    return words.length > 1 ? [words[words.length - 1], words.slice(0, -1).join(' ')] : [words[0]];
  }
  const family = n.family ?? '';
  const out: Comps = [
    family,
    n.given?.[0] ?? '',
    n.given?.slice(1).join(' ') ?? '',
    n.suffix?.[0] ?? '',
    n.prefix?.[0] ?? '',
    '',
    v2CodeOf('NameType', n.use) ?? '',
  ];
  return out.some((x) => x !== '') ? out : undefined;
}

/** Address -> XAD (street, other designation = the further lines, city, state, zip, country, type, -, county). */
export function xad(a: Address | undefined): Comps | undefined {
  if (!a) return undefined;
  const type = (a.type === 'postal' ? 'M' : undefined) ?? v2CodeOf('AddressType[Use]', a.use) ?? '';
  const out: Comps = [
    a.line?.[0] ?? '',
    a.line?.slice(1).join(', ') ?? '',
    a.city ?? '',
    a.state ?? '',
    a.postalCode ?? '',
    a.country ?? '',
    type,
    '',
    a.district ?? '',
  ];
  return out.some((x) => x !== '') ? out : undefined;
}

/** ContactPoint -> XTN (v2.5.1: the number in XTN-1 for compatibility and XTN-4 email / XTN-12 unformatted). */
export function xtn(cp: ContactPoint | undefined): Comps | undefined {
  if (!cp?.value) return undefined;
  const use = cp.use === 'mobile' ? 'PRN' : (v2CodeOf('TelecommunicationUseCode', cp.use) ?? '');
  if (cp.system === 'email') return ['', use || 'NET', 'Internet', cp.value];
  const equip = cp.use === 'mobile' ? 'CP' : (v2CodeOf('TelecommunicationEquipmentType', cp.system) ?? '');
  return [cp.value, use, equip];
}

/** Quantity units -> CWE (code, unit text, UCUM). */
export function unitsCwe(w: V2Writer, q: Quantity | undefined): Comps | undefined {
  if (!q || (!q.code && !q.unit)) return undefined;
  if (q.code)
    return [q.code, q.unit && q.unit !== q.code ? q.unit : '', w.codingSystem(q.system) || (q.system ? '' : '')];
  return [q.unit ?? ''];
}

/** A FHIR decimal as an NM string (no exponent, as sent). */
export function nm(v: number | undefined): string | undefined {
  if (v === undefined || !Number.isFinite(v)) return undefined;
  return String(v);
}
