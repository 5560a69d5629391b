import * as fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';

export type FhirPathPredicate = (resource: unknown) => boolean;

/** Compiled expressions, by text; bounded (scripts may build expressions), the oldest dropped first. */
const cache = new Map<string, (resource: unknown) => unknown[]>();
const CACHE_MAX = 2000;

function compiled(expr: string): (resource: unknown) => unknown[] {
  let fn = cache.get(expr);
  if (!fn) {
    const f = fhirpath.compile(expr, r4model as any);
    fn = (r: unknown) => f(r as any) as unknown[];
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
    cache.set(expr, fn);
  }
  return fn;
}

/** Returns the parse error of an expression, or undefined when it compiles. */
export function fhirpathError(expr: string): string | undefined {
  try {
    compiled(expr);
    return undefined;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

/** FHIRPath truthiness: a non-empty result whose single boolean is not false. */
export function fhirpathTest(expr: string, resource: unknown): boolean {
  const out = compiled(expr)(resource);
  if (!out.length) return false;
  if (out.length === 1 && typeof out[0] === 'boolean') return out[0];
  return true;
}

export function fhirpathEval(expr: string, resource: unknown): unknown[] {
  return compiled(expr)(resource);
}
