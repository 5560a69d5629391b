import { isTimezone } from './timezone';
import { defineSchema, schemaDefaults, type SchemaType } from '@ferry/core';

/**
 * Conversion options: `plugins.hl7v2-mllp.conversion` in the engine config (derived from
 * conversionConfigSchema, whose docs describe each key).
 */
export type ConversionOptions = SchemaType<typeof conversionConfigSchema>['conversion'];

export function conversionOptions(partial?: Partial<ConversionOptions> | null): ConversionOptions {
  const o = { ...DEFAULT_CONVERSION_OPTIONS, ...(partial ?? {}) };
  // the same check as the convict schema, for options given in code
  for (const [k, z] of [
    ['defaultTimezone', o.defaultTimezone],
    ...Object.entries(o.sourceTimezones ?? {}).map(([s, v]) => [`sourceTimezones.${s}`, v]),
  ])
    if (!isTimezone(z))
      throw new Error(
        `conversion.${k}: ${JSON.stringify(z)} is not Z, +hh:mm / -hh:mm or an IANA time zone such as America/New_York`,
      );
  return o;
}

/** Convict schema for `plugins.hl7v2-mllp.conversion` (merged into the plugin's configSchema). */
export const conversionConfigSchema = defineSchema({
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
        for (const [k, z] of Object.entries(v))
          if (!isTimezone(z))
            throw new Error(`${k}: must be Z, +hh:mm / -hh:mm or an IANA time zone such as America/New_York`);
      },
      default: {} as Record<string, string>,
    },
  },
});

/** The schema's defaults. */
export const DEFAULT_CONVERSION_OPTIONS: ConversionOptions = schemaDefaults(conversionConfigSchema.conversion);
