/**
 * Invariants as medplum evaluates them (constraintsCheck): the fast closures when the expression is in their
 * subset, else @medplum/core's FHIRPath engine; an invariant that only navigates its context's children is
 * evaluated only when one of them is present, and otherwise takes its verdict on an empty element.
 */
import { createConstraintIssue, createProcessingIssue, toTypedValue, UCUM, type TypedValue } from '@medplum/core';
import type { At, Ctx } from './check-context';
import { internalize, NOT_FAST } from './fhirpath-fast';
import { compile, type Invariant, type Probe } from './plan';

const UCUM_TV = toTypedValue(UCUM);

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
      // internalized: verdict() reads them from every object it probes
      if (prop) for (const cand of prop.cands) keys.add(internalize(cand.name)).add(internalize('_' + cand.name));
      else keys.add(internalize(n)).add(internalize('_' + n));
    }
    p = { keys, list: keys.size <= 8 ? [...keys] : undefined, empty: undefined };
    inv.perType.set(type, p);
  }
  return p;
}

/** One invariant's verdict on a value of `type`: true, false, or the error its evaluation threw. */
export function verdict(inv: Invariant, type: string, v: unknown, ctx: Ctx, p?: Probe): boolean | Error {
  let ok: boolean | Error | undefined;
  if (inv.direct !== undefined && (ok = inv.direct(v, ctx)) !== undefined) return ok;
  if (!inv.names) return evaluate(inv, { type, value: v }, ctx);
  p ??= probe(inv, type);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const list = p.list;
    if (list !== undefined) {
      // JSON objects: own enumerable keys only, so a direct read finds what the for-in would
      for (let i = 0; i < list.length; i++) if (o[list[i]] !== undefined) return evaluate(inv, { type, value: v }, ctx);
    } else for (const k in o) if (p.keys.has(k) && o[k] !== undefined) return evaluate(inv, { type, value: v }, ctx);
  }
  if (p.empty === undefined) p.empty = evaluate(inv, { type, value: {} }, ctx) === true;
  return p.empty;
}

/** Whether an invariant holds on a value, evaluated (its probe found one of the children it names). */
export function evaluatesTrue(inv: Invariant, type: string, v: unknown, ctx: Ctx): boolean {
  return evaluate(inv, { type, value: v }, ctx) === true;
}

/** Whether an invariant holds on an element without any of the children it names (computed once per type). */
export function holdsOnEmpty(inv: Invariant, type: string, p: Probe, ctx: Ctx): boolean {
  if (p.empty === undefined) p.empty = evaluate(inv, { type, value: {} }, ctx) === true;
  return p.empty;
}

/** Medplum's constraintsCheck: the first failing invariant of the list is reported. */
export function checkInvariants(list: Invariant[], tv: TypedValue, at: At, ctx: Ctx): void {
  for (const inv of list) {
    const ok = verdict(inv, tv.type, tv.value, ctx);
    if (ok === true) continue;
    if (ok instanceof Error)
      ctx.issues.push(
        createProcessingIssue(at.path, 'Error evaluating invariant expression', ok, {
          fhirpath: inv.constraint.expression,
        }),
      );
    ctx.issues.push(createConstraintIssue(at.path, inv.constraint));
    return;
  }
}

/** The probes of a list of invariants on values of `type`, looked up once (for invariantsHold). */
export function probesOf(list: Invariant[], type: string): (Probe | undefined)[] {
  return list.map((inv) => (inv.names ? probe(inv, type) : undefined));
}

/**
 * Whether every invariant of the list holds on a value of `type` (checkInvariants would report nothing);
 * `probes`: probesOf(list, type), when the caller keeps them.
 */
export function invariantsHold(
  list: Invariant[],
  type: string,
  value: unknown,
  ctx: Ctx,
  probes?: (Probe | undefined)[],
): boolean {
  for (let i = 0; i < list.length; i++) if (verdict(list[i], type, value, ctx, probes?.[i]) !== true) return false;
  return true;
}
