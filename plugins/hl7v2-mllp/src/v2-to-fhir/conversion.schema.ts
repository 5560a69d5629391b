import { isTimezone } from './timezone';
import type { CharsetFallback } from '../hl7v2/charset';

/** Conversion options: `plugins.hl7v2-mllp.conversion` in the engine config. */
export interface ConversionOptions {
  /**
   * HL7 assigning authority (CX-4.1 namespace, CX-4.2 universal id, EI-2, HD-1) -> identifier system URI.
   * Looked up by namespace first, then universal id. Unlisted: an ISO OID -> `urn:oid:<oid>`, a URI/UUID
   * as is, else `${identifierSystemBase}<namespace>`.
   */
  identifierSystems: Record<string, string>;
  /** Prefix for the systems of unlisted, namespace-only authorities. */
  identifierSystemBase: string;
  /** Coding-system names (CWE-3) -> URI, added to the built-in table (LN, SCT, I10, HL7nnnn...). */
  codeSystems: Record<string, string>;
  /** Charset used when the bytes are not valid UTF-8 and MSH-18 does not say. */
  charsetFallback: CharsetFallback;
  /** Z-segments: kept as MessageHeader extensions (`extension`) or dropped (`ignore`). Never fatal. */
  zSegments: 'extension' | 'ignore';
  /** Standard segments Ferry does not map: `ignore` (default) or `extension` like Z-segments. */
  unknownSegments: 'extension' | 'ignore';
  /**
   * Zone of times sent without an offset (HL7 v2: such a time is in the sender's zone): `Z` or a fixed
   * `±hh:mm`, used when MSH-7 carries no offset either; or an IANA zone (`America/New_York`), whose offset
   * is resolved per timestamp (DST-correct) and then wins over MSH-7's single offset.
   */
  defaultTimezone: string;
  /** Per Ferry source id: the zone of that source's senders (same forms as defaultTimezone), instead of defaultTimezone. */
  sourceTimezones: Record<string, string>;
}

export const DEFAULT_CONVERSION_OPTIONS: ConversionOptions = {
  identifierSystems: {},
  identifierSystemBase: 'urn:ferry:id:',
  codeSystems: {},
  charsetFallback: 'latin1',
  zSegments: 'extension',
  unknownSegments: 'ignore',
  defaultTimezone: 'Z',
  sourceTimezones: {},
};

export function conversionOptions(partial?: Partial<ConversionOptions> | null): ConversionOptions {
  const o = { ...DEFAULT_CONVERSION_OPTIONS, ...(partial ?? {}) };
  // the same check as the convict schema, for options given in code
  for (const [k, z] of [['defaultTimezone', o.defaultTimezone], ...Object.entries(o.sourceTimezones ?? {}).map(([s, v]) => [`sourceTimezones.${s}`, v])])
    if (!isTimezone(z)) throw new Error(`conversion.${k}: ${JSON.stringify(z)} is not Z, +hh:mm / -hh:mm or an IANA time zone such as America/New_York`);
  return o;
}

/** Convict schema for `plugins.hl7v2-mllp.conversion` (merged into the plugin's configSchema). */
export const conversionConfigSchema = {
  conversion: {
    identifierSystems: {
      doc: 'HL7 assigning authority (namespace or universal id) -> FHIR identifier system URI',
      format: Object,
      default: {} as Record<string, string>,
    },
    identifierSystemBase: {
      doc: 'Prefix of the identifier system for namespace-only assigning authorities not in identifierSystems',
      format: String,
      default: 'urn:ferry:id:',
    },
    codeSystems: {
      doc: 'HL7 coding-system names (CWE-3) -> code system URI, on top of the built-in table',
      format: Object,
      default: {} as Record<string, string>,
    },
    charsetFallback: {
      doc: 'Charset for bytes that are not valid UTF-8 when MSH-18 does not name one',
      format: ['latin1', 'utf8', 'windows-1252'],
      default: 'latin1',
    },
    zSegments: {
      doc: 'Z-segments: keep as MessageHeader extensions or ignore',
      format: ['extension', 'ignore'],
      default: 'extension',
    },
    unknownSegments: {
      doc: 'Standard segments without a mapping: ignore or keep as extensions',
      format: ['extension', 'ignore'],
      default: 'ignore',
    },
    defaultTimezone: {
      doc: 'Zone of times without an offset when MSH-7 has none: Z, +hh:mm / -hh:mm, or an IANA zone (America/New_York; DST resolved per timestamp)',
      format: (v: unknown) => {
        if (!isTimezone(v)) throw new Error('must be Z, +hh:mm / -hh:mm or an IANA time zone such as America/New_York');
      },
      default: 'Z',
    },
    sourceTimezones: {
      doc: 'Per source id: the zone of its senders (Z, ±hh:mm or IANA), used instead of defaultTimezone for that source',
      format: (v: unknown) => {
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('must be a map of source id -> time zone');
        for (const [k, z] of Object.entries(v)) if (!isTimezone(z)) throw new Error(`${k}: must be Z, +hh:mm / -hh:mm or an IANA time zone such as America/New_York`);
      },
      default: {} as Record<string, string>,
    },
  },
};
