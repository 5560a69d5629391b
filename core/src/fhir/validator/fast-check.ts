/**
 * Generated per-type checking code for the valid path. Each type's compiled plan (plan.ts) is turned
 * ONCE, lazily, into the source of a function (`new Function`) that goes over the object's own keys once
 * and dispatches each by a `switch` on the key to the checks specialised for its element (JSON type,
 * format, cardinality, binding, invariants), recursing into the child types' generated functions. (It
 * replaced a load of every known key, `o["system"]`, `o["code"]`, ...: the converter's objects of one type
 * come in many shapes, so those loads missed V8's inline caches, and most found nothing; the for-in reads
 * each value by its field index from the enumeration cache, and touches only the keys that are there.
 * Corpus Bundles, already validated once: 286 -> 195 µs per message.)
 *
 * The functions are a predicate, not a report: true means the walk (index.ts) would report nothing for
 * the object and its subtree; false means "not sure", at the first unusual thing (an unknown key, a null,
 * an empty value, a wrong JSON type or format, a failing invariant, two choice-of-type keys, a primitive
 * extension on an array, ...), and the caller then runs the walk, which finds the exact issues with
 * medplum's paths and messages. So they build no paths and allocate nothing on the valid path, and a
 * false "not sure" costs time, never a verdict. Only definitions go into the generated source: property
 * names and type names are JSON.stringify'd, numbers are the definitions' cardinalities; data is never
 * code.
 */
import { fhirTypeToJsType, validationRegexes } from '@medplum/core';
import { DATED_TYPES, INT32_MAX, INT32_MIN, calendarDay, charCode as sharedCharCode, type Ctx } from './check-context';
import { emptyValue as isEmpty } from './fhirpath-fast';
import { evaluatesTrue, holdsOnEmpty, invariantsHold, probesOf, verdict } from './invariants';
import { compile, plainObject, typeInvariants, type Compiled, type Invariant, type Prop } from './plan';
import { conceptVerdict } from './valuesets';
import { checkXhtml } from './xhtml';

export type FastCheck = (o: Record<string, unknown>, ctx: Ctx) => boolean;

const REGEXES: Record<string, RegExp> = { ...validationRegexes };
const JS_TYPES: Record<string, string> = { ...(fhirTypeToJsType as Record<string, string>) };
const NON_BLANK = /\S/;
// a module constant, not the import: V8 inlines calls of a constant builtin, not of one read from the
// exports object on every call (measured: the import alone cost 4-6 % of validation)
const charCode = sharedCharCode;
const MAX_STRING = 1024 * 1024;

// ---------------------------------------------------------------------------------------------------
// primitive formats: checkPrimitive's verdicts (index.ts), with hand checks for the common types

/** A string medplum accepts as content (its length `n`): non-empty, not blank, at most 1 MB. */
function content(s: string, n: number): boolean {
  if (n === 0 || n > MAX_STRING) return false;
  const c0 = charCode.call(s, 0);
  return (c0 > 32 && c0 < 127) || NON_BLANK.test(s);
}

/** The UTF-16 units string and markdown refuse (/^[\r\n\t\u0020-\uFFFF]+$/ accepts every other one). */
// eslint-disable-next-line no-control-regex -- the control characters are what it looks for
const CONTROL = /[\x00-\x08\x0B\x0C\x0E-\x1F]/;
/** Anything but printable ASCII (uri, url, canonical: /^\S*$/ decides those strings). */
const NOT_PRINTABLE = /[^\x21-\x7E]/;
/** Anything but printable ASCII and single inner spaces (code: /^[^\s]+( [^\s]+)*$/ decides those strings). */
const NOT_CODE_ASCII = /[^\x21-\x7E ]| {2}/;

// Short strings are scanned here; on longer ones a search for one bad character is faster in irregexp
// (measured on the corpus's strings: the loop below wins up to ≈ 16 characters, the search above); the
// exact regex runs only when the search finds one.
const SHORT = 16;

/** string, markdown: exactly /^[\r\n\t\u0020-\uFFFF]+$/ (every UTF-16 unit is at most 0xFFFF). */
function str(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const n = s.length;
  if (!content(s, n)) return false;
  if (n > SHORT) return !CONTROL.test(s);
  for (let i = 0; i < n; i++) {
    const c = charCode.call(s, i);
    if (c < 32 && c !== 9 && c !== 10 && c !== 13) return false;
  }
  return true;
}

/** uri, url, canonical: /^\S*$/. */
function uri(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const n = s.length;
  if (!content(s, n)) return false;
  if (n > SHORT) return !NOT_PRINTABLE.test(s) || REGEXES.uri.test(s);
  for (let i = 0; i < n; i++) {
    const c = charCode.call(s, i);
    if (c <= 32 || c >= 127) return REGEXES.uri.test(s);
  }
  return true;
}

/** code: /^[^\s]+( [^\s]+)*$/. */
function code(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const n = s.length;
  if (!content(s, n)) return false;
  if (n > SHORT) {
    if (!NOT_CODE_ASCII.test(s) && charCode.call(s, 0) !== 32 && charCode.call(s, n - 1) !== 32) return true;
    return REGEXES.code.test(s);
  }
  let prevSpace = true; // no leading space
  for (let i = 0; i < n; i++) {
    const c = charCode.call(s, i);
    if (c === 32) {
      if (prevSpace) return false;
      prevSpace = true;
    } else if (c > 32 && c < 127) prevSpace = false;
    else return REGEXES.code.test(s);
  }
  return !prevSpace;
}

/** id: /^[A-Za-z0-9\-.]{1,64}$/, exactly. */
function id(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const n = s.length;
  if (!content(s, n) || n > 64) return false;
  for (let i = 0; i < n; i++) {
    const c = charCode.call(s, i);
    if (!((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46)) return false;
  }
  return true;
}

/** Any other string type: its regex, if it has one. */
function sre(s: unknown, re: RegExp | undefined): boolean {
  return typeof s === 'string' && content(s, s.length) && (re === undefined || re.test(s));
}

/** xhtml: a string (medplum's checks: content, at most 1 MB) that is one well-formed XHTML div. */
function xhtml(s: unknown): boolean {
  return sre(s, undefined) && checkXhtml(s as string).malformed === undefined;
}

/** date, dateTime, instant: the format's regex, then a day that exists in its month. */
function dated(s: unknown, re: RegExp): boolean {
  return sre(s, re) && calendarDay(s as string);
}

/** The hand checks, each with the regex it decides exactly as (used only while medplum's regex is that one). */
const HAND: Record<string, [string, string]> = {
  string: ['H.str(@V)', '^[\\r\\n\\t\\u0020-\\uFFFF]+$'],
  markdown: ['H.str(@V)', '^[\\r\\n\\t\\u0020-\\uFFFF]+$'],
  uri: ['H.uri(@V)', '^\\S*$'],
  url: ['H.uri(@V)', '^\\S*$'],
  canonical: ['H.uri(@V)', '^\\S*$'],
  code: ['H.code(@V)', '^[^\\s]+( [^\\s]+)*$'],
  id: ['H.id(@V)', '^[A-Za-z0-9\\-.]{1,64}$'],
};

/** The source of a check of `@V` as a value of primitive type `type` (R holds the regexes it names). */
function primitiveSource(type: string, R: RegExp[]): string {
  const js = JS_TYPES[type];
  if (js === 'string') {
    const re = REGEXES[type];
    const hand = HAND[type];
    if (hand !== undefined && re?.source === hand[1] && re.flags === '') return hand[0];
    // a narrative's div: one well-formed XHTML div (xhtml.ts); txt-1 and txt-2 are its element's invariants
    if (type === 'xhtml') return 'H.xhtml(@V)';
    if (!re) return 'H.sre(@V, undefined)';
    R.push(re);
    // a date's day must exist in its month too (calendarDay), after its format
    if (DATED_TYPES.has(type)) return `H.dated(@V, R[${R.length - 1}])`;
    return `H.sre(@V, R[${R.length - 1}])`;
  }
  if (js === 'number') {
    if (type === 'positiveInt')
      return `(typeof @V === "number" && Number.isInteger(@V) && @V > 0 && @V <= ${INT32_MAX})`;
    if (type === 'unsignedInt')
      return `(typeof @V === "number" && Number.isInteger(@V) && @V >= 0 && @V <= ${INT32_MAX})`;
    if (type === 'integer')
      return `(typeof @V === "number" && Number.isInteger(@V) && @V >= ${INT32_MIN} && @V <= ${INT32_MAX})`;
    return '(typeof @V === "number" && Number.isFinite(@V))';
  }
  if (js === 'boolean') return '(typeof @V === "boolean")';
  return 'false';
}

// ---------------------------------------------------------------------------------------------------
// helpers the generated code calls for the less common cases (choice types, resources, extensions)

/** The generated check of a type; a check that always says "not sure" for types it cannot handle. */
function checkerOf(type: string): FastCheck {
  const ct = compile(type);
  if (!ct) return () => false;
  return (ct.fast ??= generate(ct));
}

/** A value of a `Resource` element (contained, Bundle.entry.resource, Parameters.parameter.resource). */
function resourceOk(prop: Prop, v: Record<string, unknown>, ctx: Ctx): boolean {
  const rt = v.resourceType;
  if (typeof rt !== 'string') return false;
  const ct = compile(rt);
  if (!ct || !ct.isResourceKind) return false;
  if (prop.invariants.length && !invariantsHold(prop.invariants, rt, v, ctx)) return false;
  const check = (ct.fast ??= generate(ct));
  if (prop.entryResource && ctx.entriesAsResources) {
    // validateRoot: the entry is a resource of its own (its %resource and %rootResource, its invariants)
    const resources = ctx.resources;
    const root = ctx.root;
    ctx.resources = [v];
    ctx.root = { type: rt, value: v };
    const ok = (!ct.invariants.length || rootInvariantsHold(ct, v, ctx)) && check(v, ctx);
    ctx.resources = resources;
    ctx.root = root;
    return ok;
  }
  ctx.resources.push(v);
  const ok = check(v, ctx);
  ctx.resources.pop();
  return ok;
}

/** The type-level invariants of a resource type (validateRoot's), by their generated check. */
function rootInvariantsHold(ct: Compiled, v: Record<string, unknown>, ctx: Ctx): boolean {
  if (!ct.rootFast) {
    const src = invariantSource(
      ct.invariants,
      probesOf(ct.invariants, ct.name),
      'I',
      'Q',
      ct.name,
      true,
      'h',
      true,
    ).join('\n  ');
    // eslint-disable-next-line no-new-func -- generated from definitions only (see the top of this file)
    ct.rootFast = new Function('H', 'I', 'Q', `return function (x, ctx) {\n  let r;\n  ${src}\n  return true;\n};`)(
      HELPERS,
      ct.invariants,
      probesOf(ct.invariants, ct.name),
    ) as FastCheck;
  }
  return ct.rootFast(v, ctx);
}

/**
 * The `_name` keys of an object (primitive extensions, rare): how many there are, each on a single primitive
 * value that is present (and truthy) and has no invariants, whose extension part medplum merges into the
 * value and walks as an Element; -1 for anything else ("not sure").
 */
function underOk(o: Record<string, unknown>, ct: Compiled, ctx: Ctx): number {
  let m = 0;
  for (const k in o) {
    if (k.charCodeAt(0) !== 95) continue;
    const h = ct.byKey.get(k);
    if (h === undefined) return -1;
    const p = h.prop;
    const c = p.cands[h.cand];
    if (p.choice || p.cands.length !== 1 || !c.primitive || p.isArray || p.invariants.length || p.specified) return -1;
    const e = o[k];
    if (!plainObject(e) || isEmpty(e) || !checkerOf('Element')(e, ctx)) return -1;
    // the value is there (and truthy), or absent from an optional element (an extension in its place: the
    // IG's data-absent-reason on a ContactPoint's system), which medplum walks as the Element it merges to
    const value = o[c.name];
    if (value === undefined ? p.min > 0 : !value) return -1;
    m++;
  }
  return m;
}

const HELPERS = {
  str,
  uri,
  code,
  id,
  sre,
  dated,
  xhtml,
  verdict,
  evaluates: evaluatesTrue,
  empty: holdsOnEmpty,
  concept: conceptVerdict,
  get: checkerOf,
  res: resourceOk,
  under: underOk,
};

// ---------------------------------------------------------------------------------------------------
// code generation

const q = (s: string): string => JSON.stringify(s);

/**
 * The source checking the invariants `I` (an expression naming the list) on `x` of `type`, each in turn as
 * verdict() decides it (invariants.ts): its direct check when it has one (skipped when none of its idle
 * keys is there), else its probe's keys (evaluated when one is present, else its verdict on an empty
 * element), else evaluated. Each probed key is read once for the whole list (`tag` keeps the locals of two
 * lists on one `x` apart); `scan`: found by one for-in over `x` rather than read by name (a resource's root
 * invariants: objects of many shapes, where a load of an absent key by name misses V8's inline caches).
 */
function invariantSource(
  list: Invariant[],
  probes: ReturnType<typeof probesOf>,
  I: string,
  Q: string,
  type: string,
  objects = true,
  tag = 'h',
  scan = false,
): string[] {
  const T = q(type);
  const reads = new Map<string, string>();
  const seen = (keys: string[]) =>
    keys
      .map((k) => {
        let v = reads.get(k);
        if (v === undefined) reads.set(k, (v = `${tag}${reads.size}`));
        return v;
      })
      .join(' || ');
  const lines = list.map((inv, j) => {
    const at = `${I}[${j}], ${T}, x, ctx`;
    const p = probes[j];
    if (inv.direct) {
      const check = `((r = ${I}[${j}].direct(x, ctx)) === undefined ? H.verdict(${at}, ${Q}[${j}]) !== true : r !== true)`;
      if (objects && inv.idle) return `if ((${seen(inv.idle.flatMap((k) => [k, '_' + k]))}) && ${check}) return false;`;
      return `if (${check}) return false;`;
    }
    if (objects && p && p.list && p.list.length)
      return `if (!(${seen(p.list)} ? H.evaluates(${at}) : H.empty(${I}[${j}], ${T}, ${Q}[${j}], ctx))) return false;`;
    return `if (H.verdict(${at}, ${Q}[${j}]) !== true) return false;`;
  });
  if (!scan || reads.size === 0)
    return [...[...reads].map(([k, v]) => `const ${v} = x[${q(k)}] !== undefined;`), ...lines];
  return [
    `let ${[...reads.values()].map((v) => v + ' = false').join(', ')};`,
    `for (const k in x) {`,
    `  switch (k) {`,
    ...[...reads].map(([k, v]) => `    case ${q(k)}: ${v} = x[k] !== undefined; break;`),
    `  }`,
    `}`,
    ...lines,
  ];
}

/** The per-slot tables a generated function reads (a slot is one candidate of one property). */
interface Slots {
  R: RegExp[];
  K: (FastCheck | undefined)[];
  Q: (ReturnType<typeof probesOf> | undefined)[];
  TI: (Invariant[] | undefined)[];
  TQ: (ReturnType<typeof probesOf> | undefined)[];
}

/** The source checking one value `x` of candidate `c` of property `p` (P[i]), in slot `s`. */
function itemSource(p: Prop, i: number, c: Prop['cands'][number], s: number, S: Slots): string[] {
  const items: string[] = [];
  const P = `P[${i}]`;
  const T = q(c.type);
  if (p.invariants.length) S.Q[s] = probesOf(p.invariants, c.type);
  if (c.primitive) {
    items.push(`if (!${primitiveSource(c.type, S.R).replace(/@V/g, 'x')}) return false;`);
    if (p.codes) items.push(`if (ctx.bindings && !${P}.codes.has(x)) return false;`);
    // a primitive value: verdict() reads no keys of it
    if (p.invariants.length)
      items.push(...invariantSource(p.invariants, S.Q[s]!, `${P}.invariants`, `Q[${s}]`, c.type, false));
  } else if (c.type === 'Resource') {
    items.push(`if (typeof x !== "object" || x === null || Array.isArray(x) || !H.res(${P}, x, ctx)) return false;`);
  } else {
    const child = compile(c.type);
    items.push(`if (typeof x !== "object" || x === null || Array.isArray(x)) return false;`);
    if (p.invariants.length)
      items.push(...invariantSource(p.invariants, S.Q[s]!, `${P}.invariants`, `Q[${s}]`, c.type));
    // the data type's own invariants (typeInvariants), with their probes; but not those the child's own
    // check decides where it meets their key (onKey: ref-1)
    const own = typeInvariants(p, c.type).filter((inv) => !(inv.onKey && child?.invariants.includes(inv)));
    if (own.length) {
      S.TI[s] = own;
      S.TQ[s] = probesOf(own, c.type);
      items.push(...invariantSource(own, S.TQ[s]!, `TI[${s}]`, `TQ[${s}]`, c.type, true, 't'));
    }
    if (p.concepts) items.push(`if (ctx.bindings && H.concept(${P}.concepts, ${T}, x) === false) return false;`);
    // a known child's function is called through a per-slot cell, filled on first use
    if (!child || child.isResourceKind) items.push('return false;');
    else items.push(`if (!(K[${s}] ??= H.get(${T}))(x, ctx)) return false;`);
  }
  return items;
}

/**
 * The `case` of the key of candidate `c` of property `p`: the value `v` (the object's own, read by the
 * for-in) checked as checkItem/descend would accept it silently; `flag`: the variable that records the
 * property as present (a required property, or a choice, of which a second candidate is "not sure").
 */
function caseSource(
  p: Prop,
  i: number,
  c: Prop['cands'][number],
  s: number,
  S: Slots,
  flag: string | undefined,
  onKey: string[],
): string[] {
  const out: string[] = [`case ${q(c.name)}: {`];
  if (p.choice || p.cands.length !== 1) out.push(`  if (${flag}) return false;`);
  if (flag) out.push(`  ${flag} = true;`);
  const items = itemSource(p, i, c, s, S);
  if (p.isArray) {
    const bounds = [`!Array.isArray(v)`, `v.length === 0`];
    if (p.min > 1) bounds.push(`v.length < ${Number(p.min)}`);
    if (Number.isFinite(p.max)) bounds.push(`v.length > ${Number(p.max)}`);
    out.push(`  if (${bounds.join(' || ')}) return false;`);
    if (p.specified) out.push(`  return false;`);
    out.push(`  for (let j = 0; j < v.length; j++) {`, `    const x = v[j];`);
    for (const line of items) out.push('    ' + line);
    out.push(`  }`);
  } else {
    if (p.min > 1 || p.max < 1 || p.specified) out.push(`  return false;`);
    out.push(`  const x = v;`);
    for (const line of items) out.push('  ' + line);
  }
  // the type's own invariants decided on this key's value (their check's "not sure" is "not sure" here)
  for (const o of onKey) out.push(`  if (${o}.onKey.check(v, ctx) !== true) return false;`);
  out.push(`  break;`, `}`);
  return out;
}

/**
 * One pass over the object's own keys (for-in, whose `o[k]` V8 reads by the enumeration cache's field
 * index), each key dispatched by a `switch` to its candidate's checks: no load of the keys an object does
 * not have, and no per-property load whose shape varies from object to object. An unknown key, a second
 * key of one choice, a key whose value is undefined: "not sure". Then the `_name` keys, then the required
 * properties' presence.
 */
function generate(ct: Compiled): FastCheck {
  const S: Slots = { R: [], K: [], Q: [], TI: [], TQ: [] };
  const P = ct.props;
  const body: string[] = [];
  const flags = new Map<Prop, string>();
  P.forEach((p, i) => {
    if (p.min > 0 || p.choice || p.cands.length !== 1) flags.set(p, `f${i}`);
  });
  if (flags.size) body.push(`let ${[...flags.values()].map((f) => f + ' = false').join(', ')};`);
  body.push(`let keys = 0, under = false, r;`, `for (const k in o) {`, `  keys++;`, `  const v = o[k];`);
  body.push(`  if (v === undefined) return false;`, `  switch (k) {`);
  const cases: string[] = [];
  let slot = 0;
  P.forEach((p, i) => {
    p.cands.forEach((c, ci) => {
      const s = slot++;
      // a key two properties could claim is the first's (plan.ts byKey), as the walk reads it
      const h = ct.byKey.get(c.name);
      if (!h || h.prop !== p || h.cand !== ci) return;
      const owned = ct.isResourceKind
        ? []
        : ct.invariants.flatMap((inv, n) => (inv.onKey?.key === c.name ? [`O[${n}]`] : []));
      cases.push(...caseSource(p, i, c, s, S, flags.get(p), owned));
    });
  });
  if (ct.isResourceKind) cases.push(`case "resourceType":`, `  break;`);
  cases.push(`default:`, `  if (k.charCodeAt(0) !== 95) return false;`, `  under = true;`);
  for (const line of cases) body.push('    ' + line);
  body.push(`  }`, `}`, `if (keys === 0) return false;`);
  body.push(`if (under && H.under(o, T, ctx) < 0) return false;`);
  const required = P.filter((p) => p.min > 0).map((p) => flags.get(p)!);
  body.push(required.length ? `return ${required.join(' && ')};` : `return true;`);
  const name = 'check_' + ct.name.replace(/[^A-Za-z0-9_]/g, '_');
  const src = `return function ${name}(o, ctx) {\n  ${body.join('\n  ')}\n};`;
  // eslint-disable-next-line no-new-func -- generated from definitions only (see the top of this file)
  return new Function('H', 'P', 'K', 'R', 'T', 'Q', 'TI', 'TQ', 'O', src)(
    HELPERS,
    P,
    S.K,
    S.R,
    ct,
    S.Q,
    S.TI,
    S.TQ,
    ct.invariants,
  ) as FastCheck;
}

/**
 * Whether the walk would report nothing for `resource` (validateRoot's checks: a resource object of a
 * known type, its invariants, its tree). False means "not sure": run the walk.
 */
export function fastValid(resource: unknown, ctx: Ctx): boolean {
  if (!plainObject(resource)) return false;
  const rt = resource.resourceType;
  if (typeof rt !== 'string') return false;
  const ct = compile(rt);
  if (!ct || !ct.isResourceKind) return false;
  ctx.resources = [resource];
  ctx.root = { type: rt, value: resource };
  if (ct.invariants.length && !rootInvariantsHold(ct, resource, ctx)) return false;
  return (ct.fast ??= generate(ct))(resource, ctx);
}
