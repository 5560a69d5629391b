import { FerryError, type ConfigSchema } from '@ferry/core';

/** The kinds of Bundle the FHIR -> v2 conversion knows, each with its default message type. */
export const BUNDLE_KINDS = ['adt', 'result', 'appointment', 'immunization', 'order', 'document'] as const;
export type BundleKind = (typeof BUNDLE_KINDS)[number];

/** Optional segments a receiver profile can switch off (required ones — MSH, PID, OBR, OBX, SCH — cannot). */
export const OPTIONAL_SEGMENTS = ['EVN', 'PV1', 'NK1', 'AL1', 'DG1', 'NTE', 'SPM', 'RGS', 'AIS', 'AIL', 'AIP', 'RXR'] as const;
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
  messageTypes: { adt: '', result: 'ORU^R01^ORU_R01', appointment: '', immunization: 'VXU^V04^VXU_V04', order: 'ORM^O01^ORM_O01', document: 'MDM^T02^MDM_T02' },
  segments: Object.fromEntries(OPTIONAL_SEGMENTS.map((s) => [s, true])) as Record<OptionalSegment, boolean>,
  codeTables: {},
  fieldOverrides: {},
  identifierSystems: {},
  codeSystems: {},
};

const FIELD_REF = /^[A-Z][A-Z0-9]{2}-([1-9]\d{0,2})$/;
const MSG_TYPE = /^[A-Z][A-Z0-9]{2}\^[A-Z0-9]{3}(\^[A-Z][A-Z0-9]{2}_[A-Z0-9]{3})?$/;

function profileError(message: string): FerryError {
  return new FerryError('CONFIG_HL7V2_PROFILE', message, { kind: 'config' });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown, where: string): Record<string, string> {
  if (v === undefined) return {};
  if (!isRecord(v)) throw profileError(`${where} must be a map of strings`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') throw profileError(`${where}.${k} must be a string`);
  return v as Record<string, string>;
}

/**
 * Checks and completes a receiver profile (from YAML/JSON or the sink config). Unknown keys, unknown
 * segments, malformed field references and message types are refused with the key named.
 */
export function receiverProfile(input?: unknown): ReceiverProfile {
  if (input === undefined || input === null) return structuredClone(DEFAULT_PROFILE);
  if (!isRecord(input)) throw profileError('the hl7v2 profile must be a map');
  const known = new Set(Object.keys(DEFAULT_PROFILE));
  for (const k of Object.keys(input)) if (!known.has(k)) throw profileError(`unknown hl7v2 profile key "${k}" (known: ${[...known].join(', ')})`);
  const p = structuredClone(DEFAULT_PROFILE);
  for (const k of ['version', 'sendingApplication', 'sendingFacility', 'receivingApplication', 'receivingFacility', 'processingId', 'acceptAckType', 'applicationAckType'] as const) {
    const v = input[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' && typeof v !== 'number') throw profileError(`profile.${k} must be a string`);
    p[k] = String(v);
  }
  if (!/^2\.(3|3\.1|4|5|5\.1|6|7|7\.1|8|8\.1|8\.2|9)$/.test(p.version)) throw profileError(`profile.version "${p.version}" is not an HL7 v2 version (2.3 … 2.9)`);
  for (const k of ['acceptAckType', 'applicationAckType'] as const)
    if (p[k] && !['AL', 'NE', 'ER', 'SU'].includes(p[k])) throw profileError(`profile.${k} must be AL, NE, ER or SU`);
  const mt = stringMap(input.messageTypes, 'profile.messageTypes');
  for (const [k, v] of Object.entries(mt)) {
    if (!(BUNDLE_KINDS as readonly string[]).includes(k)) throw profileError(`profile.messageTypes.${k}: unknown Bundle kind (known: ${BUNDLE_KINDS.join(', ')})`);
    if (v && !MSG_TYPE.test(v)) throw profileError(`profile.messageTypes.${k} "${v}" is not a message type like ADT^A08 or ORU^R01^ORU_R01`);
    p.messageTypes[k as BundleKind] = v;
  }
  if (input.segments !== undefined) {
    if (!isRecord(input.segments)) throw profileError('profile.segments must be a map of segment: true|false');
    for (const [k, v] of Object.entries(input.segments)) {
      if (!(OPTIONAL_SEGMENTS as readonly string[]).includes(k)) throw profileError(`profile.segments.${k}: not an optional segment (optional: ${OPTIONAL_SEGMENTS.join(', ')})`);
      if (typeof v !== 'boolean') throw profileError(`profile.segments.${k} must be true or false`);
      p.segments[k as OptionalSegment] = v;
    }
  }
  if (input.codeTables !== undefined) {
    if (!isRecord(input.codeTables)) throw profileError('profile.codeTables must be a map of field -> { system?, codes }');
    for (const [field, t] of Object.entries(input.codeTables)) {
      if (!FIELD_REF.test(field)) throw profileError(`profile.codeTables.${field}: not a field reference like OBX-3`);
      if (!isRecord(t)) throw profileError(`profile.codeTables.${field} must be { system?, codes }`);
      for (const k of Object.keys(t)) if (k !== 'system' && k !== 'codes') throw profileError(`profile.codeTables.${field}.${k}: unknown key (system, codes)`);
      if (t.system !== undefined && typeof t.system !== 'string') throw profileError(`profile.codeTables.${field}.system must be a string`);
      p.codeTables[field] = { ...(t.system ? { system: t.system as string } : {}), codes: stringMap(t.codes, `profile.codeTables.${field}.codes`) };
    }
  }
  p.fieldOverrides = stringMap(input.fieldOverrides, 'profile.fieldOverrides');
  for (const k of Object.keys(p.fieldOverrides)) {
    if (!FIELD_REF.test(k)) throw profileError(`profile.fieldOverrides.${k}: not a field reference like PV1-3`);
    if (/^MSH-(1|2)$/.test(k)) throw profileError(`profile.fieldOverrides.${k}: the delimiters cannot be overridden`);
    if (/[\r\n]/.test(p.fieldOverrides[k])) throw profileError(`profile.fieldOverrides.${k} must not contain a line break`);
  }
  p.identifierSystems = stringMap(input.identifierSystems, 'profile.identifierSystems');
  p.codeSystems = stringMap(input.codeSystems, 'profile.codeSystems');
  return p;
}

/**
 * The convict schema of the `profile` key of a sink (`format: hl7v2`): the keys are checked strictly by
 * `receiverProfile` when the sink starts (convict cannot type free-form maps).
 */
export const receiverProfileSchema = {
  profile: {
    doc: 'Receiver profile for format: hl7v2 (version, MSH-3..6, messageTypes, segments, codeTables, fieldOverrides); see FHIR-TO-V2.md',
    format: (v: unknown) => {
      receiverProfile(v);
    },
    default: {},
  },
} satisfies ConfigSchema;
