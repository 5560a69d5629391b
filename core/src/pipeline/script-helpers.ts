import type { Bundle, Reference, Resource, ResourceType } from '@medplum/fhirtypes';
import { isUtf8 } from 'node:buffer';
import { FerryError } from '../errors';
import { fhirpathEval, fhirpathTest } from '../fhir/fhirpath';
import type { StoredMessage } from '../model/message';
import { unescapeHl7, type Hl7Delimiters } from '../util/hl7-escape';
import type { ResourceOf, ScriptHelpers, V2Message } from './script-api';

/** `SEG[n]-field[rep].component.subcomponent` (occurrence and repetition optional, from 1). */
const V2_PATH = /^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?)?$/;

interface V2Path {
  segment: string;
  occurrence?: number;
  field?: number;
  repetition?: number;
  component?: number;
  subcomponent?: number;
}

function parseV2Path(path: string): V2Path {
  const m = V2_PATH.exec(String(path).trim().toUpperCase());
  const n = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  if (
    !m ||
    [m[2], m[4]].some((x) => x !== undefined && Number(x) < 1) ||
    [m[3], m[5], m[6]].some((x) => x !== undefined && Number(x) < 1)
  )
    throw new FerryError(
      'INPUT_SCRIPT_V2_PATH',
      `not an HL7 v2 path: "${String(path).slice(0, 40)}" (expected SEG[n]-field[rep].component.subcomponent, e.g. PID-3[2].1)`,
      { kind: 'input' },
    );
  return {
    segment: m[1],
    occurrence: n(m[2]),
    field: n(m[3]),
    repetition: n(m[4]),
    component: n(m[5]),
    subcomponent: n(m[6]),
  };
}

/** An HL7 v2 message read by path (ER7: the MSH segment gives the delimiters). Undefined when the text has no MSH. */
export function v2Message(body: Buffer): V2Message | undefined {
  const text = (isUtf8(body) ? body.toString('utf8') : body.toString('latin1'))
    .replace(/^\uFEFF/, '')
    .replace(/^[\r\n\t ]+/, '');
  if (!text.startsWith('MSH') || text.length < 8) return undefined;
  const enc = text.slice(4).split(text[3])[0];
  // As the HL7 v2 plugin's parser reads MSH-2: a character it does not declare is absent (no
  // escapes are decoded without an escape character, nothing is split without a separator).
  const d: Hl7Delimiters = {
    field: text[3],
    component: enc[0] ?? '^',
    repetition: enc[1] ?? '',
    escape: enc[2] ?? '',
    subcomponent: enc[3] ?? '',
    truncation: enc[4] ?? '',
  };
  const split = (v: string, sep: string): string[] => (sep ? v.split(sep) : [v]);
  const rows = text
    .split(/\r\n|\r|\n/)
    .filter((l) => l.length >= 3)
    .map((l) => {
      const parts = l.split(d.field);
      // MSH-1 is the field separator itself: MSH-n is parts[n - 1]
      return { name: parts[0].toUpperCase(), fields: parts[0] === 'MSH' ? ['MSH', d.field, ...parts.slice(1)] : parts };
    });

  const values = (p: V2Path, all: boolean): string[] => {
    const rowsOf = rows.filter((r) => r.name === p.segment);
    const picked =
      p.occurrence !== undefined
        ? rowsOf[p.occurrence - 1]
          ? [rowsOf[p.occurrence - 1]]
          : []
        : all
          ? rowsOf
          : rowsOf.slice(0, 1);
    const out: string[] = [];
    for (const row of picked) {
      if (p.field === undefined) {
        out.push(row.fields.join(d.field));
        continue;
      }
      const raw = row.fields[p.field];
      if (raw === undefined || raw === '') continue;
      // MSH-1 and MSH-2 are delimiters, not structured values
      const isDelims = row.name === 'MSH' && p.field <= 2;
      const reps = isDelims ? [raw] : split(raw, d.repetition);
      const chosen =
        p.repetition !== undefined
          ? reps[p.repetition - 1] !== undefined
            ? [reps[p.repetition - 1]]
            : []
          : all
            ? reps
            : reps.slice(0, 1);
      for (const rep of chosen) {
        let v: string | undefined = rep;
        if (!isDelims && p.component !== undefined) v = split(rep, d.component)[p.component - 1];
        if (v !== undefined && !isDelims && p.subcomponent !== undefined)
          v = split(v, d.subcomponent)[p.subcomponent - 1];
        if (v !== undefined && v !== '') out.push(isDelims ? v : unescapeHl7(v, d));
      }
    }
    return out;
  };

  return {
    get: (path) => values(parseV2Path(path), false)[0],
    getAll: (path) => values(parseV2Path(path), true),
    count: (segment) => rows.filter((r) => r.name === String(segment).toUpperCase()).length,
    segments: Object.freeze(rows.map((r) => r.name)),
  };
}

/**
 * The `ferry` helpers of one script call, on the Bundle the script gets (its own copy) and the
 * original message. The v2 view is parsed on first use only.
 */
export function scriptHelpers(bundle: Bundle, message: Readonly<StoredMessage>): ScriptHelpers {
  let v2: V2Message | undefined | null = null;
  const entries = () => (bundle.entry ?? []).filter((e) => e?.resource);
  return {
    fhirpath: (expression, on = bundle) => fhirpathEval(expression, on),
    fhirpathTest: (expression, on = bundle) => fhirpathTest(expression, on),
    resources: <T extends ResourceType>(type: T) =>
      entries()
        .map((e) => e.resource!)
        .filter((r): r is ResourceOf<T> => r.resourceType === type),
    resource: <T extends ResourceType>(type: T) =>
      entries().find((e) => e.resource!.resourceType === type)?.resource as ResourceOf<T> | undefined,
    resolve: (reference: string | Reference | undefined) => {
      const ref = typeof reference === 'string' ? reference : reference?.reference;
      if (!ref) return undefined;
      const byUrl = entries().find((e) => e.fullUrl === ref);
      if (byUrl) return byUrl.resource as Resource;
      const m = /(?:^|\/)([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(ref);
      if (!m) return undefined;
      return entries().find((e) => e.resource!.resourceType === m[1] && e.resource!.id === m[2])?.resource as
        Resource | undefined;
    },
    get v2() {
      if (v2 === null) v2 = message.body ? v2Message(message.body) : undefined;
      return v2;
    },
  };
}
