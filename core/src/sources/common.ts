import { ContentType } from '../model/message';

/** convict format: a non-empty string. */
export const requiredString = (what: string) =>
  function required(v: unknown): void {
    if (typeof v !== 'string' || !v.trim()) throw new Error(`${what} is required`);
  };

/** Content types accepted as HL7 v2 text (stored as `application/hl7-v2`). */
export const HL7_CONTENT_TYPES = new Set([
  'application/hl7-v2',
  'x-application/hl7-v2+er7',
  'text/plain',
  'application/edi-hl7',
  'text/hl7',
]);
/** Content types accepted as FHIR JSON (stored as `application/fhir+json`). */
export const FHIR_CONTENT_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

/** The media type without parameters, lower case: `Text/Plain; charset=x` -> `text/plain`. */
export function mediaType(ct: string | undefined): string {
  return (ct ?? '').split(';')[0].trim().toLowerCase();
}

/** The content type a message is stored with, for an accepted media type; undefined when unknown. */
export function canonicalContentType(ct: string | undefined): string | undefined {
  const m = mediaType(ct);
  if (HL7_CONTENT_TYPES.has(m)) return ContentType.hl7v2;
  if (FHIR_CONTENT_TYPES.has(m)) return ContentType.fhirJson;
  return undefined;
}

/**
 * Checks a body is plausible for its content type; returns the reason when it is not.
 * HL7 v2: starts with MSH (or a batch header FHS/BHS) after an optional BOM and blank lines.
 * FHIR JSON: parses, is an object with a `resourceType` string.
 */
export function checkBody(contentType: string, body: Buffer): string | undefined {
  if (!body.length) return 'empty body';
  let text = body.toString('utf8', 0, Math.min(body.length, 16));
  if (contentType === ContentType.hl7v2) {
    text = text.replace(/^\uFEFF/, '').replace(/^[\r\n\t ]+/, '');
    if (!/^(MSH|FHS|BHS)/.test(text)) return 'not an HL7 v2 message: it does not start with an MSH segment';
    return undefined;
  }
  if (contentType === ContentType.fhirJson || contentType === ContentType.json) {
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8').replace(/^\uFEFF/, ''));
    } catch (e) {
      // Never echo the parser's message: it quotes the body.
      const pos = /position (\d+)/.exec((e as Error).message)?.[1];
      return `body is not valid JSON${pos ? ` (error at position ${pos})` : ''}`;
    }
    if (!doc || typeof doc !== 'object' || Array.isArray(doc))
      return 'FHIR JSON must be an object (a resource or a Bundle)';
    const rt = (doc as { resourceType?: unknown }).resourceType;
    if (typeof rt !== 'string' || !/^[A-Z][A-Za-z]+$/.test(rt)) return 'FHIR JSON has no resourceType';
    return undefined;
  }
  return undefined;
}

/** Simple glob (`*`, `?`, `{a,b}`) to a whole-name RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  let inBraces = false;
  for (const ch of glob) {
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else if (ch === '{') {
      re += '(?:';
      inBraces = true;
    } else if (ch === '}' && inBraces) {
      re += ')';
      inBraces = false;
    } else if (ch === ',' && inBraces) re += '|';
    else re += ch.replace(/[.+^$()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'i');
}
