/**
 * The core sinks that can also write a plugin's output format (`format: hl7v2` with the hl7v2-mllp
 * plugin), and their own formats. Kept free of imports: the config loader reads it.
 */
export const OWN_FORMATS: Record<string, readonly string[]> = { file: ['ndjson', 'json'], http: ['fhir'] };
