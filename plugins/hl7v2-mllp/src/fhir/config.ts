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
   * Offset for times sent without one, when MSH-7 has none either (HL7 v2: a time without an
   * offset is in the sender's zone, which MSH-7 states). `Z` or `+hh:mm`.
   */
  defaultTimezone: string;
}

export const DEFAULT_CONVERSION_OPTIONS: ConversionOptions = {
  identifierSystems: {},
  identifierSystemBase: 'urn:ferry:id:',
  codeSystems: {},
  charsetFallback: 'latin1',
  zSegments: 'extension',
  unknownSegments: 'ignore',
  defaultTimezone: 'Z',
};

export function conversionOptions(partial?: Partial<ConversionOptions> | null): ConversionOptions {
  return { ...DEFAULT_CONVERSION_OPTIONS, ...(partial ?? {}) };
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
      doc: 'Offset for times without one when MSH-7 has none (Z or +hh:mm)',
      format: (v: unknown) => {
        if (typeof v !== 'string' || !/^(Z|[+-](0\d|1[0-4]):[0-5]\d)$/.test(v)) throw new Error('must be Z or +hh:mm / -hh:mm');
      },
      default: 'Z',
    },
  },
};
