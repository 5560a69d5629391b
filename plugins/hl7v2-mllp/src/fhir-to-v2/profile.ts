import { defineSchema, fhirpathError, FerryError } from '@ferry/core';

/** The kinds of Bundle the FHIR -> v2 conversion knows, each with its default message type. */
export const BUNDLE_KINDS = ['adt', 'result', 'appointment', 'immunization', 'order', 'document'] as const;
export type BundleKind = (typeof BUNDLE_KINDS)[number];

/** Optional segments a receiver profile can switch off (required ones — MSH, PID, OBR, OBX, SCH — cannot). */
export const OPTIONAL_SEGMENTS = [
  'EVN',
  'PV1',
  'NK1',
  'AL1',
  'DG1',
  'IN1',
  'NTE',
  'SPM',
  'TQ1',
  'RGS',
  'AIS',
  'AIL',
  'AIP',
  'RXR',
] as const;
export type OptionalSegment = (typeof OPTIONAL_SEGMENTS)[number];

/**
 * What one receiving system expects (the "receiver profile"): MSH header values, the message type
 * per Bundle kind, optional segments, code translation tables and field overrides.
 */
export interface ReceiverProfile {
  /** MSH-12: 2.5.1 (default), 2.3, 2.3.1, 2.4, 2.5 … */
  version: string;
  /** MSH-3..6 (HD: `APP` or `NAME^1.2.3^ISO`); '' = from the Bundle's MessageHeader (MSH-3 else FERRY). */
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  /** MSH-11 P / T / D */
  processingId: string;
  /** MSH-15 / MSH-16 ('' = not valued: original acknowledgment mode). */
  acceptAckType: string;
  applicationAckType: string;
  /**
   * Message type per Bundle kind, `ADT^A08` or `ADT^A08^ADT_A01` ('' = derived from the Bundle:
   * the MessageHeader event, else the Encounter / Appointment status).
   */
  messageTypes: Record<BundleKind, string>;
  /** Optional segments switched on (true) or off (false); all on by default. */
  segments: Record<OptionalSegment, boolean>;
  /**
   * Code translation per v2 field (`OBX-3`, `PID-8`, `AL1-3` …): FHIR/v2 code -> the receiver's code.
   * `{ 'OBX-3': { system: '99LAB', codes: { '718-7': 'HGB' } } }`: the first component is translated
   * and, when `system` is set, the coding system component (CWE-3) becomes it.
   */
  codeTables: Record<string, { system?: string; codes: Record<string, string> }>;
  /**
   * Field overrides: `{ 'MSH-4': 'LAB^1.2.3^ISO', 'PV1-3': '' }` — the value is HL7 text in the standard
   * delimiters (`|^~\&`) written as is into every segment of that name ('' empties the field).
   */
  fieldOverrides: Record<string, string>;
  /** Assigning authority name -> identifier system (as in the inbound `identifierSystems`), used in reverse. */
  identifierSystems: Record<string, string>;
  /** Coding system name (CWE-3) -> URI (as in the inbound `codeSystems`), used in reverse. */
  codeSystems: Record<string, string>;
  /**
   * FHIRPath rules choosing the message type per Bundle, tried in order (first match wins) before
   * `messageTypes`: `{ when: <FHIRPath on the Bundle>, type: 'ADT^A28' }`. The type's message code
   * (ADT, ORU, SIU, VXU, ORM, OML, MDM) picks the message built.
   */
  messageTypeRules: MessageTypeRule[];
  /**
   * Z-segments from extensions (or any FHIRPath): one segment per resource of `resource` (the message's
   * Patient for `Patient`, the Encounter written in PV1 for `Encounter`, every resource of the type
   * otherwise), placed after the last segment named `after` (default: at the end); `fields` maps a
   * field number to a FHIRPath on that resource (several results: repetitions; Coding/CodeableConcept
   * as CWE, Identifier as CX, Quantity as its value).
   */
  zSegments: ZSegmentRule[];
}

export interface MessageTypeRule {
  when: string;
  type: string;
}

export interface ZSegmentRule {
  segment: string;
  resource: string;
  after?: string;
  fields: Record<string, string>;
}

export const DEFAULT_PROFILE: ReceiverProfile = {
  version: '2.5.1',
  sendingApplication: '',
  sendingFacility: '',
  receivingApplication: '',
  receivingFacility: '',
  processingId: 'P',
  acceptAckType: '',
  applicationAckType: '',
  messageTypes: {
    adt: '',
    result: 'ORU^R01^ORU_R01',
    appointment: '',
    immunization: 'VXU^V04^VXU_V04',
    order: '',
    document: 'MDM^T02^MDM_T02',
  },
  segments: Object.fromEntries(OPTIONAL_SEGMENTS.map((s) => [s, true])) as Record<OptionalSegment, boolean>,
  codeTables: {},
  fieldOverrides: {},
  identifierSystems: {},
  codeSystems: {},
  messageTypeRules: [],
  zSegments: [],
};

/** The message codes the conversion builds, and the Bundle kind each is built from. */
export const KIND_OF_MESSAGE: Record<string, BundleKind> = {
  ADT: 'adt',
  ORU: 'result',
  SIU: 'appointment',
  VXU: 'immunization',
  ORM: 'order',
  OML: 'order',
  MDM: 'document',
};

const FIELD_REF = /^[A-Z][A-Z0-9]{2}-([1-9]\d{0,2})$/;
const MSG_TYPE = /^[A-Z][A-Z0-9]{2}\^[A-Z0-9]{3}(\^[A-Z][A-Z0-9]{2}_[A-Z0-9]{3})?$/;

function profileError(message: string, problems?: { path: string; message: string }[]): FerryError {
  return new FerryError('CONFIG_HL7V2_PROFILE', message, {
    kind: 'config',
    ...(problems ? { details: { problems } } : {}),
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Problems found in a profile, each by its path inside the profile (`messageTypeRules[0].when`). */
type Problems = { path: string; message: string }[];

function stringMap(v: unknown, where: string, problems: Problems): Record<string, string> {
  if (v === undefined) return {};
  if (!isRecord(v)) {
    problems.push({ path: where, message: 'must be a map of strings' });
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') problems.push({ path: `${where}.${k}`, message: 'must be a string' });
    else out[k] = x;
  }
  return out;
}

/**
 * Checks and completes a receiver profile (from YAML/JSON or the sink config). Unknown keys, unknown
 * segments, malformed field references and message types, FHIRPath that does not compile are refused:
 * every problem is listed, each by its path (`profile.messageTypeRules[1].when: ...`), in the error's
 * message and in `details.problems` (the config loader reports them one by one).
 */
export function receiverProfile(input?: unknown): ReceiverProfile {
  if (input === undefined || input === null) return structuredClone(DEFAULT_PROFILE);
  if (!isRecord(input)) throw profileError('the hl7v2 profile must be a map');
  const problems: Problems = [];
  const bad = (path: string, message: string) => problems.push({ path, message });
  const known = new Set(Object.keys(DEFAULT_PROFILE));
  for (const k of Object.keys(input))
    if (!known.has(k)) bad(k, `unknown hl7v2 profile key (known: ${[...known].join(', ')})`);
  const p = structuredClone(DEFAULT_PROFILE);
  for (const k of [
    'version',
    'sendingApplication',
    'sendingFacility',
    'receivingApplication',
    'receivingFacility',
    'processingId',
    'acceptAckType',
    'applicationAckType',
  ] as const) {
    const v = input[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' && typeof v !== 'number') bad(k, 'must be a string');
    else p[k] = String(v);
  }
  if (!/^2\.(3|3\.1|4|5|5\.1|6|7|7\.1|8|8\.1|8\.2|9)$/.test(p.version))
    bad('version', `"${p.version}" is not an HL7 v2 version (2.3 … 2.9)`);
  for (const k of ['acceptAckType', 'applicationAckType'] as const)
    if (p[k] && !['AL', 'NE', 'ER', 'SU'].includes(p[k])) bad(k, 'must be AL, NE, ER or SU');
  const mt = stringMap(input.messageTypes, 'messageTypes', problems);
  for (const [k, v] of Object.entries(mt)) {
    if (!(BUNDLE_KINDS as readonly string[]).includes(k))
      bad(`messageTypes.${k}`, `unknown Bundle kind (known: ${BUNDLE_KINDS.join(', ')})`);
    else if (v && !MSG_TYPE.test(v))
      bad(`messageTypes.${k}`, `"${v}" is not a message type like ADT^A08 or ORU^R01^ORU_R01`);
    else p.messageTypes[k as BundleKind] = v;
  }
  if (input.segments !== undefined) {
    if (!isRecord(input.segments)) bad('segments', 'must be a map of segment: true|false');
    else
      for (const [k, v] of Object.entries(input.segments)) {
        if (!(OPTIONAL_SEGMENTS as readonly string[]).includes(k))
          bad(`segments.${k}`, `not an optional segment (optional: ${OPTIONAL_SEGMENTS.join(', ')})`);
        else if (typeof v !== 'boolean') bad(`segments.${k}`, 'must be true or false');
        else p.segments[k as OptionalSegment] = v;
      }
  }
  if (input.codeTables !== undefined) {
    if (!isRecord(input.codeTables)) bad('codeTables', 'must be a map of field -> { system?, codes }');
    else
      for (const [field, t] of Object.entries(input.codeTables)) {
        if (!FIELD_REF.test(field)) bad(`codeTables.${field}`, 'not a field reference like OBX-3');
        else if (!isRecord(t)) bad(`codeTables.${field}`, 'must be { system?, codes }');
        else {
          for (const k of Object.keys(t))
            if (k !== 'system' && k !== 'codes') bad(`codeTables.${field}.${k}`, 'unknown key (system, codes)');
          if (t.system !== undefined && typeof t.system !== 'string')
            bad(`codeTables.${field}.system`, 'must be a string');
          p.codeTables[field] = {
            ...(typeof t.system === 'string' && t.system ? { system: t.system } : {}),
            codes: stringMap(t.codes, `codeTables.${field}.codes`, problems),
          };
        }
      }
  }
  p.fieldOverrides = stringMap(input.fieldOverrides, 'fieldOverrides', problems);
  for (const k of Object.keys(p.fieldOverrides)) {
    if (!FIELD_REF.test(k)) bad(`fieldOverrides.${k}`, 'not a field reference like PV1-3');
    else if (/^MSH-(1|2)$/.test(k)) bad(`fieldOverrides.${k}`, 'the delimiters cannot be overridden');
    else if (/[\r\n]/.test(p.fieldOverrides[k])) bad(`fieldOverrides.${k}`, 'must not contain a line break');
  }
  p.identifierSystems = stringMap(input.identifierSystems, 'identifierSystems', problems);
  p.codeSystems = stringMap(input.codeSystems, 'codeSystems', problems);
  p.messageTypeRules = messageTypeRules(input.messageTypeRules, bad);
  p.zSegments = zSegments(input.zSegments, bad);
  if (problems.length) {
    const at = (x: { path: string }) => `profile${x.path.startsWith('[') ? '' : '.'}${x.path}`;
    throw profileError(problems.map((x) => `${at(x)}: ${x.message}`).join('; '), problems);
  }
  return p;
}

function fhirpathProblem(expr: unknown): string | undefined {
  if (typeof expr !== 'string' || !expr.trim()) return 'must be a FHIRPath expression (a non-empty string)';
  const e = fhirpathError(expr);
  return e ? `not valid FHIRPath: ${e}` : undefined;
}

function messageTypeRules(v: unknown, bad: (path: string, message: string) => void): MessageTypeRule[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    bad('messageTypeRules', 'must be a list of { when: <FHIRPath on the Bundle>, type: <message type> }');
    return [];
  }
  const out: MessageTypeRule[] = [];
  v.forEach((r, i) => {
    const at = `messageTypeRules[${i}]`;
    if (!isRecord(r)) return bad(at, 'must be { when: <FHIRPath on the Bundle>, type: <message type> }');
    for (const k of Object.keys(r)) if (k !== 'when' && k !== 'type') bad(`${at}.${k}`, 'unknown key (when, type)');
    const fp = fhirpathProblem(r.when);
    if (fp) bad(`${at}.when`, fp);
    const type = r.type;
    if (typeof type !== 'string' || !MSG_TYPE.test(type))
      bad(
        `${at}.type`,
        `${typeof type === 'string' ? `"${type}"` : 'missing:'} not a message type like ADT^A28 or OML^O21^OML_O21`,
      );
    else if (!KIND_OF_MESSAGE[type.slice(0, 3)])
      bad(`${at}.type`, `"${type}": the conversion builds ${Object.keys(KIND_OF_MESSAGE).join(', ')} messages`);
    if (!fp && typeof type === 'string' && MSG_TYPE.test(type) && KIND_OF_MESSAGE[type.slice(0, 3)])
      out.push({ when: r.when as string, type });
  });
  return out;
}

function zSegments(v: unknown, bad: (path: string, message: string) => void): ZSegmentRule[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    bad(
      'zSegments',
      'must be a list of { segment: Zxx, resource: <type>, after?: <segment>, fields: { <n>: <FHIRPath> } }',
    );
    return [];
  }
  const out: ZSegmentRule[] = [];
  v.forEach((z, i) => {
    const at = `zSegments[${i}]`;
    if (!isRecord(z))
      return bad(at, 'must be { segment: Zxx, resource: <type>, after?: <segment>, fields: { <n>: <FHIRPath> } }');
    const before = out.length;
    let ok = true;
    const no = (path: string, message: string) => {
      ok = false;
      bad(path, message);
    };
    for (const k of Object.keys(z))
      if (!['segment', 'resource', 'after', 'fields'].includes(k))
        no(`${at}.${k}`, 'unknown key (segment, resource, after, fields)');
    if (typeof z.segment !== 'string' || !/^Z[A-Z0-9]{2}$/.test(z.segment))
      no(`${at}.segment`, 'must be a Z-segment name (Z followed by two letters or digits)');
    if (typeof z.resource !== 'string' || !/^[A-Z][A-Za-z]+$/.test(z.resource))
      no(`${at}.resource`, 'must be a FHIR resource type (Patient, Encounter, Observation …)');
    if (z.after !== undefined && (typeof z.after !== 'string' || !/^[A-Z][A-Z0-9]{2}$/.test(z.after)))
      no(`${at}.after`, 'must be a segment name (PID, PV1 …)');
    if (!isRecord(z.fields) || !Object.keys(z.fields).length)
      no(`${at}.fields`, 'must map field numbers to FHIRPath expressions ({ 1: "extension(\'…\').value" })');
    else
      for (const [n, expr] of Object.entries(z.fields)) {
        if (!/^[1-9]\d{0,2}$/.test(n)) no(`${at}.fields.${n}`, 'not a field number (1 …)');
        const fp = fhirpathProblem(expr);
        if (fp) no(`${at}.fields.${n}`, fp);
      }
    if (ok && out.length === before)
      out.push({
        segment: z.segment as string,
        resource: z.resource as string,
        ...(z.after ? { after: z.after as string } : {}),
        fields: z.fields as Record<string, string>,
      });
  });
  return out;
}

/**
 * The convict schema of the `profile` key of a sink (`format: hl7v2`): the keys are checked strictly by
 * `receiverProfile` when the sink starts (convict cannot type free-form maps).
 */
export const receiverProfileSchema = defineSchema({
  profile: {
    doc: 'Receiver profile for format: hl7v2 (version, MSH-3..6, messageTypes, segments, codeTables, fieldOverrides); see FHIR-TO-V2.md',
    format: (v: unknown) => {
      receiverProfile(v);
    },
    default: {},
  },
});
