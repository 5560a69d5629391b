/**
 * The checking plan of each FHIR type, compiled once from its StructureDefinition (as @medplum/core parses
 * it): every JSON key the type allows, mapped to its element, type candidates, cardinality, required binding
 * and compiled invariants; and the invariants themselves (parsed once, in the fast FHIRPath subset when they
 * can be, with hand-written checks for the ones evaluated most). The validator (index.ts) walks it.
 */
import {
  getAllDataTypes,
  isPrimitiveType,
  parseFhirPath,
  tryGetDataType,
  type InternalSchemaElement,
  type InternalTypeSchema,
} from '@medplum/core';
import { ensureFhirDefinitions } from '../definitions';
import { charCode as sharedCharCode, type Ctx } from './check-context';
import { compileFast, emptyValue as isEmpty, internalize, setChoiceNames, type FastFn } from './fhirpath-fast';
import { requiredCodes, requiredConcepts } from './valuesets';
import { checkXhtml } from './xhtml';

/**
 * Keys of invariants @medplum/core does not evaluate either (ele-1 per element, org-1, sdf-19). It skips
 * dom-3 too; Ferry decides that one directly (DIRECT).
 */
const SKIPPED: Record<string, true> = { 'ele-1': true, 'org-1': true, 'sdf-19': true };
/** Anything that reads the context other than through its named children. */
const IMPURE =
  /%|\$|descendants\s*\(|children\s*\(|repeat\s*\(|resolve\s*\(|hasValue\s*\(|trace\s*\(|memberOf|conformsTo|htmlChecks|(^|[^.\w\s]|\b(and|or|xor|implies|not|in|contains)\s)\s*[A-Za-z_]\w*\s*\(/;

export interface Invariant {
  key: string;
  constraint: { key: string; severity: 'error' | 'warning'; expression: string; description: string };
  atom: ReturnType<typeof parseFhirPath>;
  /** the expression compiled to closures over plain JSON, when it is in the fast subset */
  fast?: FastFn;
  /** identifiers the expression names, when it only navigates its context's children */
  names?: string[];
  /** per item type: the JSON keys to look for, and the verdict on an element without them */
  perType: Map<string, Probe>;
  /** a hand-written check of the same verdict, for the invariants evaluated most (undefined: not sure, evaluate) */
  direct?: (v: unknown, ctx: Ctx) => boolean | undefined;
  /** keys none of which (nor their `_name` twins) present means the direct check holds: it need not run */
  idle?: string[];
  /** the invariant as a check of one key's value (it holds when the key is absent); see ON_KEY */
  onKey?: { key: string; check: (value: unknown, ctx: Ctx) => boolean | undefined };
}

/** `x.exists()` of a navigation to one child value, as medplum (and the fast closures) evaluate it. */
function existsOf(x: unknown): boolean {
  if (isEmpty(x)) return false;
  if (Array.isArray(x)) {
    for (let i = 0; i < x.length; i++) if (isEmpty(x[i])) return false;
  }
  return true;
}

const VALUE_SUFFIXES = new Set(
  'Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid PositiveInt String Time UnsignedInt Uri Url Uuid Address Age Annotation Attachment CodeableConcept Coding ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range Ratio Reference SampledData Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition RelatedArtifact TriggerDefinition UsageContext Dosage Meta'.split(
    ' ',
  ),
);
/** `value` and `value<Type>` for every suffix: an object's key looked up as it is (no slice per key). */
const VALUE_KEYS = new Set(['value', ...[...VALUE_SUFFIXES].map((t) => internalize('value' + t))]);

/**
 * bdl-3 / bdl-4 (`entry.all(request.exists() = (%resource.type = 'batch' or ...))`) on a Bundle, which is
 * its own %resource wherever its type-level invariants are evaluated (validateRoot).
 */
function entriesHaveIff(
  v: unknown,
  child: 'request' | 'response',
  ext: '_request' | '_response',
  types: string[],
): boolean | undefined {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (o._type !== undefined || o._entry !== undefined) return undefined;
  const t = o.type;
  let typed: boolean | undefined; // the `or` of the comparisons: empty when type is
  if (!isEmpty(t)) {
    if (typeof t !== 'string') return undefined;
    typed = types.includes(t);
  }
  const entries = o.entry;
  if (isEmpty(entries)) return true;
  const list = Array.isArray(entries) ? entries : [entries];
  for (const e of list) {
    let has = false;
    if (e && typeof e === 'object' && !Array.isArray(e)) {
      const eo = e as Record<string, unknown>;
      if (eo[ext] !== undefined) return undefined;
      has = existsOf(eo[child]);
    }
    if (typed === undefined || has !== typed) return false;
  }
  return true;
}

/**
 * `type = 'X' implies ...` on a Bundle whose `type` is a plain string other than X: true (the premise is
 * false); undefined (evaluate) otherwise.
 */
function typeIsNot(v: unknown, t: string): true | undefined {
  if (!plainObject(v)) return undefined;
  const type = v.type;
  return typeof type === 'string' && type !== '' && type !== t && v._type === undefined ? true : undefined;
}

/** A plain JSON object (not null, not an array). */
export function plainObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

// a module constant, not the import: V8 inlines calls of a constant builtin, not of one read from the
// exports object on every call (measured: the import alone cost 4-6 % of validation)
const charCode = sharedCharCode;

/** A plain JSON object without `_name` keys (primitive extensions). */
function plainNoExt(v: unknown): v is Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  for (const k in v) if (k.charCodeAt(0) === 95) return false;
  return true;
}

/** Every string under `v` that starts with '#' (local references, for dom-3). */
function localRefs(v: unknown, out: Set<string>): void {
  if (typeof v === 'string') {
    if (charCode.call(v, 0) === 35) out.add(v);
  } else if (Array.isArray(v)) for (const x of v) localRefs(x, out);
  else if (v && typeof v === 'object') for (const k in v) localRefs((v as Record<string, unknown>)[k], out);
}

/**
 * A primitive's absent value with an extension of the common shape in its place (`_system: {extension: [...]}`,
 * the IG's data-absent-reason): medplum merges the extension into the element, which then exists.
 */
function absentWithExt(value: unknown, ext: unknown): boolean {
  if (value !== undefined || !plainObject(ext)) return false;
  for (const k in ext) if (k !== 'extension') return false;
  return Array.isArray(ext.extension) && ext.extension.length > 0;
}

/**
 * `a.empty() or b.exists()` on plain JSON (`_a`, `_b`: the primitive extensions' keys, literals, so the loads
 * are by internalized keys); undefined (evaluate) for a primitive extension other than absentWithExt's.
 */
function emptyOrExists(v: unknown, a: string, b: string, _a: string, _b: string): boolean | undefined {
  if (!plainObject(v)) return undefined;
  const xa = v[_a];
  const xb = v[_b];
  if (xa === undefined && xb === undefined) return isEmpty(v[a]) || existsOf(v[b]);
  const aEmpty = xa === undefined ? isEmpty(v[a]) : absentWithExt(v[a], xa) ? false : undefined;
  if (aEmpty !== false) return aEmpty;
  return xb === undefined ? existsOf(v[b]) : absentWithExt(v[b], xb) ? true : undefined;
}

/** The zone suffix of a dateTime or instant string ('Z', '+hh:mm', '-hh:mm'); '' for a date. */
function zoneOf(s: string): string {
  if (s.length <= 10) return '';
  return s.charCodeAt(s.length - 1) === 90 ? 'Z' : s.slice(-6);
}

/**
 * ref-1 on a Reference's `reference` value: only a local one ('#id') is constrained, and it must name a
 * contained resource of %rootResource (see DIRECT).
 */
function localReference(r: unknown, ctx: Ctx): boolean | undefined {
  if (typeof r !== 'string' || charCode.call(r, 0) !== 35 || r === '#') return true;
  // %rootResource; and, where Bundle entries are elements of the Bundle (medplum's reading), the
  // enclosing resources, which hold the entry resource whose contained the reference means
  const id = r.slice(1);
  let unsure = false;
  const holds = (x: unknown): boolean => {
    const contained = x && typeof x === 'object' ? (x as Record<string, unknown>).contained : undefined;
    if (contained === undefined) return false;
    if (!Array.isArray(contained)) unsure = true;
    else
      for (const c of contained)
        if (c && typeof c === 'object' && (c as Record<string, unknown>).id === id) return true;
    return false;
  };
  if (holds(ctx.root?.value)) return true;
  for (const x of ctx.resources) if (holds(x)) return true;
  return unsure ? undefined : false;
}

/**
 * Direct checks, keyed by key and exact expression, on plain JSON:
 * - of the invariants evaluated on every Bundle entry and every extension (≈ 100 per corpus message) and
 *   of the Bundle's type-level invariants (bdl-3/4/7 go over every entry; bdl-1/2/9-12 in the shapes a
 *   message or transaction Bundle has): the verdicts of the compiled FHIRPath (and so medplum's), without
 *   its intermediate lists; and of the ones outside the fast FHIRPath subset that the
 *   corpus still sent to medplum's interpreter (≈ 30 µs each: obs-7, app-4, tim-9, ctm-1 when the element
 *   their `implies`/`or` hinges on is absent);
 * - of the data types' own invariants on every value (typeInvariants: ref-1, per-1, qty-3, cpt-2), with
 *   FHIRPath's verdicts except where each says otherwise (ref-1 without a `reference`); qty-3 and cpt-2 also
 *   with a data-absent-reason extension in place of the value (absentWithExt);
 * - of what medplum does not decide at all: txt-1 / txt-2 (its htmlChecks() is [true]; xhtml.ts) and dom-3
 *   (skipped there).
 * Anything unusual (primitive extensions, several value[x] keys, a non-string fullUrl or type) returns
 * undefined and goes to the FHIRPath evaluation.
 */
const DIRECT: Record<string, (v: unknown, ctx: Ctx) => boolean | undefined> = {
  "bdl-3 entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = 'history'))":
    (v) => entriesHaveIff(v, 'request', '_request', ['batch', 'transaction', 'history']),
  "bdl-4 entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or %resource.type = 'history'))":
    (v) => entriesHaveIff(v, 'response', '_response', ['batch-response', 'transaction-response', 'history']),
  "bdl-7 (type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()": (
    v,
  ) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    if (o._type !== undefined || o._entry !== undefined) return undefined;
    const t = o.type;
    if (!isEmpty(t) && typeof t !== 'string') return undefined;
    if (t === 'history') return true;
    const entries = o.entry;
    if (isEmpty(entries)) return true;
    const list = Array.isArray(entries) ? entries : [entries];
    const seen = new Set<string>();
    let n = 0;
    for (const e of list) {
      if (!e || typeof e !== 'object' || Array.isArray(e)) continue;
      const eo = e as Record<string, unknown>;
      if (eo._fullUrl !== undefined) return undefined;
      const f = eo.fullUrl;
      if (typeof f !== 'string') {
        if (isEmpty(f)) continue;
        return undefined;
      }
      if (f === '') continue;
      // resource.meta.versionId, read without isEmpty's key scan of the resource (an empty object has no meta)
      let version = '';
      const r = eo.resource;
      if (plainObject(r)) {
        if (r._meta !== undefined) return undefined;
        const m = r.meta;
        if (plainObject(m)) {
          if (m._versionId !== undefined) return undefined;
          const vid = m.versionId;
          if (typeof vid === 'string') version = vid;
          else if (!isEmpty(vid)) return undefined;
        } else if (!isEmpty(m)) return undefined;
      } else if (!isEmpty(r)) return undefined;
      seen.add(f + version);
      n++;
    }
    return seen.size === n;
  },
  // the Bundle's other type-level invariants, on every Bundle (a message's): decided in the common shapes
  "bdl-1 total.empty() or (type = 'searchset') or (type = 'history')": (v) =>
    plainObject(v) && v._total === undefined && v._type === undefined && v.total === undefined ? true : undefined,
  "bdl-2 entry.search.empty() or (type = 'searchset')": (v) => {
    if (!plainObject(v) || v._entry !== undefined) return undefined;
    const entries = v.entry;
    if (entries === undefined) return true;
    if (!Array.isArray(entries)) return undefined;
    for (const e of entries) if (!plainObject(e) || e.search !== undefined || e._search !== undefined) return undefined;
    return true;
  },
  "bdl-9 type = 'document' implies (identifier.system.exists() and identifier.value.exists())": (v) =>
    typeIsNot(v, 'document'),
  "bdl-10 type = 'document' implies (timestamp.hasValue())": (v) => typeIsNot(v, 'document'),
  "bdl-11 type = 'document' implies entry.first().resource.is(Composition)": (v) => typeIsNot(v, 'document'),
  "bdl-12 type = 'message' implies entry.first().resource.is(MessageHeader)": (v) => {
    if (typeIsNot(v, 'message')) return true;
    if (!plainObject(v) || v.type !== 'message' || v._type !== undefined || v._entry !== undefined) return undefined;
    const entries = v.entry;
    if (!Array.isArray(entries) || entries.length === 0) return undefined;
    const first = entries[0];
    if (!plainObject(first) || first._resource !== undefined) return undefined;
    const r = first.resource;
    if (!plainObject(r) || typeof r.resourceType !== 'string') return undefined;
    return r.resourceType === 'MessageHeader';
  },
  'ext-1 extension.exists() != value.exists()': (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    let ext = false;
    let val = false;
    let values = 0;
    for (const k in o) {
      if (k.charCodeAt(0) === 95) return undefined;
      if (k === 'extension') ext = existsOf(o[k]);
      else if (VALUE_KEYS.has(k)) {
        values++;
        val = existsOf(o[k]);
      }
    }
    return values > 1 ? undefined : ext !== val;
  },
  'bdl-5 resource.exists() or request.exists() or response.exists()': (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    if (o._resource !== undefined || o._request !== undefined || o._response !== undefined) return undefined;
    return existsOf(o.resource) || existsOf(o.request) || existsOf(o.response);
  },
  // medplum's htmlChecks() is [true] whatever its input (4.5.2: "not implemented"): decided here (xhtml.ts)
  'txt-1 htmlChecks()': (v) => (typeof v === 'string' ? checkXhtml(v).allowed : undefined),
  'txt-2 htmlChecks()': (v) => (typeof v === 'string' ? checkXhtml(v).content : undefined),
  // `x.empty() or ...` / `x.exists() implies ...` with x absent: true, once nothing on the other side can throw
  // (medplum evaluates both sides; a `_name` key, whose merge medplum may refuse, or a null on the way throws)
  'obs-7 value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()': (v) => {
    // a type-level invariant: evaluated at the resource's root, so %resource is the Observation itself
    if (!plainNoExt(v)) return undefined;
    const comps = v.component;
    if (comps === undefined) return true; // the right side is empty().empty(): true
    for (const k in v) if (k.startsWith('value')) return undefined; // a value: the intersect decides
    if (v.code !== undefined && !plainNoExt(v.code)) return undefined;
    for (const c of Array.isArray(comps) ? comps : [comps])
      if (!plainNoExt(c) || (c.code !== undefined && !plainNoExt(c.code))) return undefined;
    return true;
  },
  "app-4 Appointment.cancelationReason.exists() implies (Appointment.status='noshow' or Appointment.status='cancelled')":
    (v) => (plainNoExt(v) && v.cancelationReason === undefined ? true : undefined),
  "tim-9 offset.empty() or (when.exists() and when.select($this in ('C' | 'CM' | 'CD' | 'CV')).allFalse())": (v) =>
    plainNoExt(v) && v.offset === undefined ? true : undefined,
  'ctm-1 onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))': (v) => {
    if (!plainNoExt(v)) return undefined;
    const m = v.member;
    if (m === undefined) return true; // resolve() of nothing: iif(empty(), true, ...) is true
    if (!plainNoExt(m) || m.resource !== undefined) return undefined;
    const ref = m.reference;
    // medplum's resolve(): a reference without '?' or '/' (urn:uuid:..., #id) resolves to nothing
    if (typeof ref === 'string') return ref.includes('?') || ref.includes('/') ? undefined : true;
    return ref === undefined && !(m.type && m.identifier) ? true : undefined;
  },
  // Reference's own invariant (typeInvariants), on every reference: only a local one ('#id') is constrained,
  // and it must name a contained resource of %rootResource. Without a `reference` FHIRPath gives an empty
  // result here (`{}.not() or ({} in ...)`), where the invariant's text means to allow any other reference;
  // '#' alone is the container itself (R4 4.0.1's expression misses that case, later versions add it). A
  // `reference` that is not a string fails its type check, not this.
  "ref-1 reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))":
    (v, ctx) => (plainObject(v) ? localReference(v.reference, ctx) : undefined),
  // A contained resource must be referenced from the resource (or refer to its container, '#'). medplum skips
  // it (its descendants() over every element is slow); decided here on plain JSON, only when there is
  // `contained`: every string of the resource that starts with '#' counts as a local reference (FHIRPath
  // counts reference, canonical, uri and url values -- a string element of another type that holds
  // '#id' counts here too, the lenient side). A contained resource without an id is not "unmatched" in
  // FHIRPath ('#' + {} is empty), nor here.
  "dom-3 contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', id).empty()":
    (v) => {
      if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
      const contained = (v as Record<string, unknown>).contained;
      if (isEmpty(contained)) return true;
      if (!Array.isArray(contained)) return undefined;
      const local = new Set<string>();
      localRefs(v, local);
      for (const c of contained) {
        if (!c || typeof c !== 'object' || Array.isArray(c)) return undefined;
        const id = (c as Record<string, unknown>).id;
        if (typeof id !== 'string' || local.has('#' + id)) continue;
        const own = new Set<string>();
        localRefs(c, own);
        if (!own.has('#')) return false;
      }
      return true;
    },
  // Quantity's and ContactPoint's own invariants (typeInvariants), on every quantity and contact point
  'qty-3 code.empty() or system.exists()': (v) => emptyOrExists(v, 'code', 'system', '_code', '_system'),
  'cpt-2 value.empty() or system.exists()': (v) => emptyOrExists(v, 'value', 'system', '_value', '_system'),
  // Period's own invariant (typeInvariants), on every period: `hasValue` keeps it out of the fast FHIRPath subset.
  // Decided here when start or end is absent, or when both are strings of one shape (the same length and the
  // same zone suffix: then their order as strings is their order in time); else evaluated.
  'per-1 start.hasValue().not() or end.hasValue().not() or (start <= end)': (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    if (o._start !== undefined || o._end !== undefined) return undefined;
    const a = o.start;
    const b = o.end;
    if (a === undefined || b === undefined) return true;
    if (typeof a !== 'string' || typeof b !== 'string' || a.length !== b.length) return undefined;
    if (zoneOf(a) !== zoneOf(b)) return undefined;
    return a <= b;
  },
  "bdl-8 fullUrl.exists() implies fullUrl.contains('/_history/').not()": (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    if (o._fullUrl !== undefined) return undefined;
    const f = o.fullUrl;
    if (isEmpty(f)) return true;
    return typeof f === 'string' ? !f.includes('/_history/') : undefined;
  },
};

/**
 * For direct checks that hold whenever some keys are absent: those keys. dom-3 holds without `contained`
 * (every resource, every entry: the generated root check then skips it on a key it has already seen).
 */
const IDLE: Record<string, string[]> = { 'dom-3': ['contained'] };

/**
 * Data type invariants that depend on one key's value only (and hold without it), with the check of that
 * value: the type's own generated check decides them where it meets the key (the value at hand, no second
 * load by name), instead of each element that holds the type. ref-1 on every Reference.
 */
const ON_KEY: Record<string, NonNullable<Invariant['onKey']>> = {
  'ref-1': { key: 'reference', check: localReference },
};

export interface Probe {
  keys: Set<string>;
  /** the same keys when they are few: read directly rather than going over every key of the object */
  list: string[] | undefined;
  empty: boolean | undefined;
}

export interface Candidate {
  name: string; // JSON key, e.g. valueQuantity
  ext: string; // its primitive extension's key, _valueQuantity
  type: string; // element type code (Resource -> resolved from resourceType at run time)
  primitive: boolean;
}

export interface Prop {
  index: number;
  key: string; // schema key, e.g. value[x]
  element: InternalSchemaElement;
  cands: Candidate[];
  choice: boolean;
  isArray: boolean;
  min: number;
  max: number;
  invariants: Invariant[];
  codes?: Set<string>; // required binding on a code element
  concepts?: Map<string, Set<string>>; // required binding on a Coding or CodeableConcept element: codes by system
  entryResource: boolean; // Bundle.entry.resource
  specified: boolean; // fixed or pattern
  /** the compiled plan of the first candidate type, once compiled (saves a lookup per object) */
  ct?: Compiled | null;
  /** typeInvariants' answers, by candidate type */
  typeInv?: Map<string, Invariant[]>;
}

/**
 * The invariants of data type `type` itself (its root element's: Quantity's qty-3, Period's per-1,
 * Reference's ref-1, ContactPoint's cpt-2, Attachment's att-1, Range's rng-2, Ratio's rat-1, ...) that
 * element `prop` does not carry already. R4 holds every value of a type to them; @medplum/core evaluates
 * only the constraints listed on the element (a backbone element's, and ext-1, are there; a reused data
 * type's are not), so Ferry evaluates these as well. None for resources (their root invariants are
 * validateRoot's) and primitives.
 */
export function typeInvariants(prop: Prop, type: string): Invariant[] {
  let byType = prop.typeInv;
  if (byType === undefined) prop.typeInv = byType = new Map();
  let list = byType.get(type);
  if (list === undefined) {
    // a base profile of the type named on the element (Quantity as SimpleQuantity: sqty-1, no comparator;
    // as MoneyQuantity: mqty-1) brings its invariants, which include the type's
    const profiled = prop.element.type
      ?.find((t) => t.code === type)
      ?.profile?.map((url) => BASE_PROFILES[url])
      .find((name) => name !== undefined);
    const ct = compile(profiled ?? type);
    list =
      !ct || ct.isResourceKind || isPrimitiveType(type)
        ? []
        : ct.invariants.filter((i) => !prop.invariants.some((own) => own.key === i.key));
    byType.set(type, list);
  }
  return list;
}

/** The R4 base profiles of data types an element may name, by canonical URL (their definitions' names). */
const BASE_PROFILES: Record<string, string> = {
  'http://hl7.org/fhir/StructureDefinition/SimpleQuantity': 'SimpleQuantity',
  'http://hl7.org/fhir/StructureDefinition/MoneyQuantity': 'MoneyQuantity',
};

export interface Compiled {
  name: string;
  schema: InternalTypeSchema;
  props: Prop[];
  byKey: Map<string, { prop: Prop; cand: number }>;
  /**
   * A one-entry inline cache of key order: the keys of the last object of this type seen, and their
   * lookups. Objects of one type mostly repeat the same keys in the same order (a Coding's system, code,
   * display), and for-in yields the same internalized strings, so a pointer compare replaces a Map lookup.
   */
  lastKeys: (string | undefined)[];
  lastHits: ({ prop: Prop; cand: number } | undefined)[];
  required: Prop[];
  choicePrefixes: Map<string, Prop>;
  invariants: Invariant[]; // type-level (resource root)
  isResourceKind: boolean;
  /** the generated check of the valid path (fast-check.ts), once generated */
  fast?: (o: Record<string, unknown>, ctx: Ctx) => boolean;
  /** the generated check of the type-level invariants (fast-check.ts), once generated */
  rootFast?: (o: Record<string, unknown>, ctx: Ctx) => boolean;
}

const compiledTypes = new Map<string, Compiled | null>();
const invariantCache = new Map<string, Invariant>();

let choiceNamesSet = false;
/** Tells the FHIRPath compiler which element names are choices of type in some R4 type (once, definitions loaded). */
function collectChoiceNames(): void {
  if (choiceNamesSet) return;
  const names = new Set<string>();
  const add = (t: InternalTypeSchema) => {
    for (const k in t.elements) if (k.endsWith('[x]')) names.add(k.slice(0, -3));
  };
  for (const t of Object.values(getAllDataTypes())) {
    add(t);
    for (const inner of t.innerTypes ?? []) add(inner);
  }
  setChoiceNames(names);
  choiceNamesSet = true;
}

/** FHIRPath's word operators and boolean literals: never a child's name (no R4 element is named so). */
const OPERATORS = new Set(['and', 'or', 'xor', 'implies', 'true', 'false']);

function compileInvariant(c: NonNullable<InternalSchemaElement['constraints']>[number]): Invariant {
  const id = `${c.key}\u0000${c.expression}`;
  let inv = invariantCache.get(id);
  if (!inv) {
    collectChoiceNames();
    // names that start a navigation chain (`contained` in `contained.meta.versionId`): when none of them is
    // a present child of the context, a pure expression evaluates as it does on an empty element
    const names = IMPURE.test(c.expression)
      ? undefined
      : [
          ...new Set(
            (c.expression.replace(/'(?:[^'\\]|\\.)*'/g, "''").match(/(?<![.\w])[A-Za-z_]\w*/g) ?? []).filter(
              (n) => !OPERATORS.has(n),
            ),
          ),
        ];
    const atom = parseFhirPath(c.expression);
    inv = {
      key: c.key,
      constraint: c,
      atom,
      fast: compileFast(atom),
      direct: DIRECT[`${c.key} ${c.expression}`],
      idle: IDLE[c.key],
      onKey: ON_KEY[c.key],
      names,
      perType: new Map(),
    };
    invariantCache.set(id, inv);
  }
  return inv;
}

function errorInvariants(list: InternalSchemaElement['constraints']): Invariant[] {
  return (list ?? []).filter((c) => c.severity === 'error' && !SKIPPED[c.key]).map(compileInvariant);
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function compile(typeName: string): Compiled | null {
  let c = compiledTypes.get(typeName);
  if (c !== undefined) return c;
  ensureFhirDefinitions();
  const schema = tryGetDataType(typeName);
  if (!schema) {
    compiledTypes.set(typeName, null);
    return null;
  }
  const props: Prop[] = [];
  const byKey = new Map<string, { prop: Prop; cand: number }>();
  const choicePrefixes = new Map<string, Prop>();
  for (const [key, element] of Object.entries(schema.elements)) {
    const last = element.path.substring(element.path.lastIndexOf('.') + 1);
    const choice = key.endsWith('[x]');
    const cands: Candidate[] = (element.type ?? []).map((t) => {
      let type = t.code;
      if (type === 'Element' || type === 'BackboneElement') type = element.type[0].code;
      const name = last.replace('[x]', capitalize(t.code));
      return { name, ext: '_' + name, type, primitive: isPrimitiveType(type) };
    });
    const binding = element.binding;
    const codes =
      binding?.strength === 'required' &&
      binding.valueSet &&
      element.type?.length === 1 &&
      element.type[0].code === 'code'
        ? requiredCodes(binding.valueSet)
        : undefined;
    const prop: Prop = {
      index: props.length,
      key,
      element,
      cands,
      choice,
      isArray: !!element.isArray,
      min: element.min,
      max: element.max,
      invariants: errorInvariants(element.constraints),
      codes,
      concepts:
        binding?.strength === 'required' &&
        binding.valueSet &&
        element.type?.length === 1 &&
        (element.type[0].code === 'Coding' || element.type[0].code === 'CodeableConcept')
          ? requiredConcepts(binding.valueSet)
          : undefined,
      entryResource: element.path === 'Bundle.entry.resource',
      specified: !!(element.fixed || element.pattern),
    };
    props.push(prop);
    cands.forEach((cand, i) => {
      if (!byKey.has(cand.name)) byKey.set(cand.name, { prop, cand: i });
      if (!byKey.has('_' + cand.name)) byKey.set('_' + cand.name, { prop, cand: i });
    });
    if (choice) choicePrefixes.set(key.slice(0, -3), prop);
  }
  c = {
    name: typeName,
    schema,
    props,
    byKey,
    lastKeys: [],
    lastHits: [],
    required: props.filter((p) => p.min > 0),
    choicePrefixes,
    invariants: errorInvariants(schema.constraints),
    isResourceKind: schema.kind === 'resource' && typeName !== 'Resource' && typeName !== 'DomainResource',
  };
  compiledTypes.set(typeName, c);
  return c;
}
