/**
 * A small compiler from @medplum/core's parsed FHIRPath (its AST) to JavaScript closures over plain FHIR
 * JSON, for the subset the base R4 invariants mostly use: child navigation, `exists()`, `empty()`,
 * `not()`, `count()`, `contains()`/`startsWith()`/`endsWith()` with a literal, `=`/`!=` on primitives,
 * `and`/`or`/`xor`/`implies`, `in`, `|`, `&`, `all()`/`where()`/`select()`, `first()`, `isDistinct()`,
 * `hasValue()`, `is(Type)` on resources, `%resource`/`%rootResource`, and literals. The semantics are
 * medplum's (atoms.ts / functions.ts), so verdicts are identical: a node outside the subset compiles to a
 * closure that throws NOT_FAST when it is reached, as does a value the closures cannot treat exactly as
 * medplum does (a primitive extension, several choice-of-type keys, an object compared with `=`, a
 * non-boolean operand of `and`); the caller then evaluates that one invariant with medplum. Both operands
 * of `and`/`or`/`implies` are always evaluated, as medplum does (an operand medplum fails on fails here too).
 */
import {
  AndAtom,
  ConcatAtom,
  DotAtom,
  EqualsAtom,
  FhirPathAtom,
  FunctionAtom,
  ImpliesAtom,
  InAtom,
  LiteralAtom,
  NotEqualsAtom,
  OrAtom,
  SymbolAtom,
  UnionAtom,
  XorAtom,
  UCUM,
} from '@medplum/core';

/** `%resource` and `%rootResource` of an evaluation. */
export interface FastEnv {
  resource: unknown;
  root: unknown;
}

export type FastFn = (input: unknown[], env: FastEnv) => unknown[];

/** Thrown at run time when a value falls outside what the closures model exactly. */
export const NOT_FAST = { notFast: true };

const TRUE = [true];
const FALSE = [false];
const EMPTY: unknown[] = [];

/** medplum's isEmpty (null/undefined, '', an object without keys and without a positive length). */
export function emptyValue(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (typeof v === 'string') return v === '';
  if (typeof v !== 'object') return false;
  if (Array.isArray(v)) return v.length === 0;
  for (const k in v) if (Object.hasOwn(v, k)) return false;
  return !((v as { length?: number }).length! > 0);
}

/** Capitalised type names a choice-of-type key ends with (valueString, onsetDateTime, ...). */
const CHOICE_SUFFIXES = new Set(
  (
    'Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid PositiveInt String Time UnsignedInt Uri Url Uuid ' +
    'Address Age Annotation Attachment CodeableConcept Coding ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range ' +
    'Ratio Reference SampledData Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition RelatedArtifact ' +
    'TriggerDefinition UsageContext Dosage Meta'
  ).split(' '),
);

/**
 * Names of the choice-of-type elements of every R4 type (`value` of `value[x]`, `onset`, ...): only for these
 * does an absent `name` send the navigation looking for `nameString`, `nameQuantity`, ... keys (medplum reads
 * other elements by their one key). Set by the validator from the loaded definitions before it compiles.
 */
let choiceNames: ReadonlySet<string> | undefined;
export function setChoiceNames(names: ReadonlySet<string>): void {
  choiceNames = names;
}

/**
 * The internalized copy of a string built at run time (a parsed FHIRPath name, `'_' + name`): a property key
 * of an object literal is internalized, and a keyed load by an internalized key is a lookup by identity,
 * where any other string is first looked up in V8's string table on every load.
 */
export function internalize(s: string): string {
  return Object.keys({ [s]: true })[0];
}

function navigate(parsed: string): FastFn {
  const name = internalize(parsed);
  const under = internalize('_' + name);
  const n = name.length;
  if (choiceNames && !choiceNames.has(name))
    return (input) => {
      const out: unknown[] = [];
      for (let i = 0; i < input.length; i++) {
        const item = input[i];
        if (!item || typeof item !== 'object' || Array.isArray(item)) continue;
        const o = item as Record<string, unknown>;
        const v = o[name];
        if (o[under] !== undefined) throw NOT_FAST;
        if (emptyValue(v)) continue;
        if (Array.isArray(v)) for (let j = 0; j < v.length; j++) out.push(v[j]);
        else out.push(v);
      }
      return out;
    };
  return (input) => {
    const out: unknown[] = [];
    for (const item of input) {
      if (!item || typeof item !== 'object' || Array.isArray(item)) continue;
      const o = item as Record<string, unknown>;
      let v = o[name];
      if (o[under] !== undefined) throw NOT_FAST;
      if (v === undefined) {
        // a choice-of-type element (value[x]): valueString, valueQuantity, ...
        let found: string | undefined;
        for (const k in o) {
          if (k.length > n && k.startsWith(name) && CHOICE_SUFFIXES.has(k.slice(n))) {
            if (found !== undefined || o['_' + k] !== undefined) throw NOT_FAST;
            found = k;
          } else if (
            k.length > n + 1 &&
            k.charCodeAt(0) === 95 &&
            k.startsWith(name, 1) &&
            CHOICE_SUFFIXES.has(k.slice(n + 1))
          )
            throw NOT_FAST;
        }
        if (found === undefined) continue;
        v = o[found];
      }
      if (emptyValue(v)) continue;
      if (Array.isArray(v)) for (const x of v) out.push(x);
      else out.push(v);
    }
    return out;
  };
}

function bool(c: unknown[]): boolean | undefined {
  if (c.length === 0) return undefined;
  if (c.length === 1 && typeof c[0] === 'boolean') return c[0];
  throw NOT_FAST;
}

function primitiveEquals(a: unknown, b: unknown): boolean {
  const ta = typeof a;
  if ((ta !== 'string' && ta !== 'number' && ta !== 'boolean') || ta !== typeof b) throw NOT_FAST;
  return a === b;
}

function stringFunc(arg: FastFn, f: (s: string, a: string) => boolean): FastFn {
  return (input, env) => {
    if (input.length === 0) return EMPTY;
    if (input.length > 1 || typeof input[0] !== 'string') throw NOT_FAST;
    const a = arg([input[0]], env);
    if (a.length !== 1 || typeof a[0] !== 'string') throw NOT_FAST;
    return f(input[0], a[0]) ? TRUE : FALSE;
  };
}

/** Compiles an atom, or returns undefined when it is outside the subset. */
export function compileFast(atom: unknown): FastFn | undefined {
  try {
    return build(atom);
  } catch (e) {
    if (e === NOT_FAST) return undefined;
    throw e;
  }
}

function truthy(c: unknown[]): boolean {
  // medplum's toJsBoolean: the first item's truthiness
  return c.length === 0 ? false : !!c[0];
}

function primitivesDistinct(c: unknown[]): unknown[] {
  const seen = new Set<unknown>();
  let t: string | undefined;
  for (const v of c) {
    const tv = typeof v;
    if ((tv !== 'string' && tv !== 'number' && tv !== 'boolean') || (t !== undefined && t !== tv)) throw NOT_FAST;
    t = tv;
    seen.add(v);
  }
  return [...seen];
}

/** A node outside the subset: reaching it at run time hands the evaluation to medplum. */
const UNSUPPORTED: FastFn = () => {
  throw NOT_FAST;
};

function build(atom: unknown): FastFn {
  if (atom instanceof FhirPathAtom) return build(atom.child);
  if (atom instanceof LiteralAtom) {
    const { type, value } = atom.value;
    if (type !== 'string' && type !== 'boolean' && type !== 'integer' && type !== 'decimal') return UNSUPPORTED;
    const c = [value];
    return () => c;
  }
  if (atom instanceof SymbolAtom) {
    const name = atom.name;
    if (name === '%ucum') {
      // the UCUM system URI (medplum's %ucum: drt-1, qty-3 of the quantity profiles)
      const c = [UCUM];
      return () => c;
    }
    if (name === '%resource') return (_input, env) => (env.resource === undefined ? EMPTY : [env.resource]);
    if (name === '%rootResource') return (_input, env) => (env.root === undefined ? EMPTY : [env.root]);
    if (!/^[a-z][A-Za-z0-9]*$/.test(name)) return UNSUPPORTED; // other variables, $this, type names, `div`...
    return navigate(name);
  }
  if (atom instanceof DotAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    return (input, env) => r(l(input, env), env);
  }
  if (atom instanceof ConcatAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    return (input, env) => {
      const out = [...l(input, env), ...r(input, env)];
      return out.length > 0 && out.every((v) => typeof v === 'string') ? [out.join('')] : out;
    };
  }
  if (atom instanceof UnionAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    return (input, env) => primitivesDistinct([...l(input, env), ...r(input, env)]);
  }
  if (atom instanceof InAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    return (input, env) => {
      const a = l(input, env);
      if (a.length > 1) throw NOT_FAST;
      const b = r(input, env);
      if (a.length === 0) return EMPTY;
      let found = false;
      for (const v of b) if (primitiveEquals(a[0], v)) found = true;
      return found ? TRUE : FALSE;
    };
  }
  if (atom instanceof FunctionAtom) {
    const args = atom.args;
    switch (atom.name) {
      case 'exists':
        if (args.length) return UNSUPPORTED;
        return (input) => {
          if (input.length === 0) return FALSE;
          for (const e of input) if (emptyValue(e)) return FALSE;
          return TRUE;
        };
      case 'empty':
        if (args.length) return UNSUPPORTED;
        return (input) => {
          for (const e of input) if (!emptyValue(e)) return FALSE;
          return TRUE;
        };
      case 'not':
        if (args.length) return UNSUPPORTED;
        return (input) => {
          const b = bool(input);
          return b === undefined ? EMPTY : b ? FALSE : TRUE;
        };
      case 'count':
        if (args.length) return UNSUPPORTED;
        return (input) => [input.length];
      case 'hasValue':
        if (args.length) return UNSUPPORTED;
        return (input) => (input.length !== 0 ? TRUE : FALSE);
      case 'first':
        if (args.length) return UNSUPPORTED;
        return (input) => (input.length === 0 ? EMPTY : [input[0]]);
      case 'isDistinct':
        if (args.length) return UNSUPPORTED;
        return (input) => (primitivesDistinct(input).length === input.length ? TRUE : FALSE);
      case 'all':
      case 'where':
      case 'select': {
        if (args.length !== 1) return UNSUPPORTED;
        const crit = build(args[0]);
        if (atom.name === 'all')
          return (input, env) => {
            for (const e of input) if (!truthy(crit([e], env))) return FALSE;
            return TRUE;
          };
        if (atom.name === 'where') return (input, env) => input.filter((e) => truthy(crit([e], env)));
        return (input, env) => input.flatMap((e) => crit([e], env));
      }
      case 'is': {
        // resource.is(Composition): only resources carry their type in plain JSON
        const t = args[0];
        if (args.length !== 1 || !(t instanceof SymbolAtom) || !/^[A-Z][A-Za-z]+$/.test(t.name)) return UNSUPPORTED;
        const name = t.name;
        return (input) => {
          if (input.length === 0) return EMPTY;
          if (input.length > 1) throw NOT_FAST; // medplum reports an evaluation error
          const v = input[0] as { resourceType?: unknown } | null;
          if (!v || typeof v !== 'object' || typeof v.resourceType !== 'string') throw NOT_FAST;
          return v.resourceType === name ? TRUE : FALSE;
        };
      }
      case 'contains':
      case 'startsWith':
      case 'endsWith': {
        if (args.length !== 1 || !(args[0] instanceof LiteralAtom) || args[0].value.type !== 'string')
          return UNSUPPORTED;
        const arg = build(args[0]);
        const f =
          atom.name === 'contains'
            ? (s: string, a: string) => s.includes(a)
            : atom.name === 'startsWith'
              ? (s: string, a: string) => s.startsWith(a)
              : (s: string, a: string) => s.endsWith(a);
        return stringFunc(arg, f);
      }
      default:
        return UNSUPPORTED;
    }
  }
  if (atom instanceof AndAtom || atom instanceof OrAtom || atom instanceof XorAtom || atom instanceof ImpliesAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    if (atom instanceof AndAtom)
      return (input, env) => {
        const a = bool(l(input, env));
        const b = bool(r(input, env));
        if (a === true && b === true) return TRUE;
        if (a === false || b === false) return FALSE;
        return EMPTY;
      };
    if (atom instanceof OrAtom)
      return (input, env) => {
        const a = bool(l(input, env));
        const b = bool(r(input, env));
        if (a === false && b === false) return FALSE;
        if (a || b) return TRUE;
        return EMPTY;
      };
    if (atom instanceof XorAtom)
      return (input, env) => {
        const a = bool(l(input, env));
        const b = bool(r(input, env));
        if (a === undefined || b === undefined) return EMPTY;
        return a !== b ? TRUE : FALSE;
      };
    return (input, env) => {
      const a = bool(l(input, env));
      const b = bool(r(input, env));
      if (b === true || a === false) return TRUE;
      if (a === undefined || b === undefined) return EMPTY;
      return FALSE;
    };
  }
  if (atom instanceof EqualsAtom || atom instanceof NotEqualsAtom) {
    const l = build(atom.left);
    const r = build(atom.right);
    const neq = atom instanceof NotEqualsAtom;
    return (input, env) => {
      const a = l(input, env);
      const b = r(input, env);
      if (a.length === 0 || b.length === 0) return EMPTY;
      if (a.length !== b.length) return neq ? TRUE : FALSE;
      let same = true;
      for (let i = 0; i < a.length; i++) if (!primitiveEquals(a[i], b[i])) same = false;
      return same !== neq ? TRUE : FALSE;
    };
  }
  return UNSUPPORTED;
}
