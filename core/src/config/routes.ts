import type { ConfigProblem } from './config-error';
import { routeSchema, type RouteConfig, type RouteTest, type StepConfig } from './engine.schema';
import { validateWithSchema } from './validate-schema';

type FhirpathCheck = (expr: string) => string | undefined;

function parseStep(step: unknown, at: string, problems: ConfigProblem[]): StepConfig | undefined {
  if (step === 'validate') return { validate: true };
  if (step && typeof step === 'object' && !Array.isArray(step)) {
    const entries = Object.entries(step as Record<string, unknown>);
    if (entries.length === 1) {
      const [k, v] = entries[0];
      if (k === 'validate' && (v === true || v === null)) return { validate: true };
      if (k === 'filter' && typeof v === 'string' && v.trim()) return { filter: v };
      if (k === 'script' && typeof v === 'string' && v.trim()) return { script: v };
    }
    // { script, timeoutMs }: the script's time limit per message (ms, synchronous part).
    const o = step as Record<string, unknown>;
    if (entries.length === 2 && typeof o.script === 'string' && o.script.trim() && 'timeoutMs' in o) {
      if (typeof o.timeoutMs === 'number' && Number.isInteger(o.timeoutMs) && o.timeoutMs > 0)
        return { script: o.script, timeoutMs: o.timeoutMs };
      problems.push({ path: `${at}.timeoutMs`, message: 'a positive whole number of milliseconds' });
      return undefined;
    }
  }
  problems.push({
    path: at,
    message: 'a step is `validate`, `{ filter: <fhirpath> }` or `{ script: <path to module>, timeoutMs?: <ms> }`',
  });
  return undefined;
}

/** `routes:` -- each checked against the route schema, its sources and sinks known, its FHIRPath valid. */
export function readRoutes(
  rawRoutes: unknown,
  knownSources: Set<string>,
  knownSinks: Set<string>,
  problems: ConfigProblem[],
  fhirpathCheck?: FhirpathCheck,
): RouteConfig[] {
  const routes: RouteConfig[] = [];
  if (rawRoutes !== undefined && !Array.isArray(rawRoutes)) {
    problems.push({ path: 'routes', message: 'must be a list of { id, from, when, steps, to }' });
  } else {
    const seen = new Set<string>();
    ((rawRoutes as unknown[]) ?? []).forEach((r, i) => {
      const at = `routes[${i}]`;
      const before = problems.length;
      const v = validateWithSchema<any>(routeSchema, r, at, problems);
      if (problems.length > before && !v.id) return;
      if (!v.id) problems.push({ path: `${at}.id`, message: 'missing' });
      else if (seen.has(v.id)) problems.push({ path: `${at}.id`, message: `duplicate route id "${v.id}"` });
      seen.add(v.id);
      const strList = (key: 'from' | 'to', known: Set<string>, kind: string) =>
        (v[key] as unknown[]).filter((x, j) => {
          if (typeof x !== 'string') {
            problems.push({ path: `${at}.${key}[${j}]`, message: `must be a ${kind} id` });
            return false;
          }
          if (!known.has(x)) {
            problems.push({
              path: `${at}.${key}[${j}]`,
              message: `unknown ${kind} "${x}"${known.size ? `; defined: ${[...known].join(', ')}` : ''}`,
            });
            return false;
          }
          return true;
        }) as string[];
      const from = strList('from', knownSources, 'source');
      const to = strList('to', knownSinks, 'sink');
      if (!(v.to as unknown[]).length) problems.push({ path: `${at}.to`, message: 'a route needs at least one sink' });
      const messageType = (v.when?.messageType ?? []) as unknown[];
      messageType.forEach((g, j) => {
        if (typeof g !== 'string' || !g)
          problems.push({ path: `${at}.when.messageType[${j}]`, message: 'must be a glob string like ADT^A0*' });
      });
      if (v.when?.fhirpath && fhirpathCheck) {
        const err = fhirpathCheck(v.when.fhirpath);
        if (err) problems.push({ path: `${at}.when.fhirpath`, message: `invalid FHIRPath: ${err}` });
      }
      const steps = ((v.steps ?? []) as unknown[])
        .map((s, j) => {
          const step = parseStep(s, `${at}.steps[${j}]`, problems);
          if (step && 'filter' in step && fhirpathCheck) {
            const err = fhirpathCheck(step.filter);
            if (err) problems.push({ path: `${at}.steps[${j}].filter`, message: `invalid FHIRPath: ${err}` });
          }
          return step;
        })
        .filter((s): s is StepConfig => !!s);
      routes.push({
        id: v.id,
        from,
        when: { messageType: messageType as string[], fhirpath: v.when?.fhirpath ?? '' },
        steps,
        to,
        ordering: v.ordering,
      });
    });
  }
  return routes;
}

/** `tests:` -- route tests run by `ferry validate-config --test` (see RouteTest). */
export function parseRouteTests(
  raw: unknown,
  routeIds: Set<string>,
  sinkIds: Set<string>,
  problems: ConfigProblem[],
  fhirpathCheck?: FhirpathCheck,
): RouteTest[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    problems.push({
      path: 'tests',
      message: 'must be a list of { message, source?, contentType?, expect: { routes?, sinks?, fhirpath? } }',
    });
    return [];
  }
  const out: RouteTest[] = [];
  raw.forEach((t: any, i) => {
    const at = `tests[${i}]`;
    if (!t || typeof t !== 'object' || typeof t.message !== 'string' || !t.message.trim()) {
      problems.push({ path: `${at}.message`, message: 'the message file to run through the routes' });
      return;
    }
    const e = t.expect ?? {};
    const list = (v: unknown, what: string, known?: Set<string>): string[] | undefined => {
      if (v === undefined) return undefined;
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
        problems.push({ path: `${at}.expect.${what}`, message: 'a list of strings' });
        return undefined;
      }
      if (known)
        for (const [j, x] of (v as string[]).entries())
          if (!known.has(x))
            problems.push({
              path: `${at}.expect.${what}[${j}]`,
              message: `unknown ${what === 'routes' ? 'route' : 'sink'} "${x}"; defined: ${[...known].join(', ')}`,
            });
      return v as string[];
    };
    const test: RouteTest = { name: typeof t.name === 'string' ? t.name : t.message, message: t.message, expect: {} };
    if (typeof t.source === 'string') test.source = t.source;
    if (typeof t.contentType === 'string') test.contentType = t.contentType;
    const routes = list(e.routes, 'routes', routeIds);
    const sinks = list(e.sinks, 'sinks', sinkIds);
    const fhirpath = list(e.fhirpath, 'fhirpath');
    for (const [j, x] of (fhirpath ?? []).entries()) {
      const err = fhirpathCheck?.(x);
      if (err) problems.push({ path: `${at}.expect.fhirpath[${j}]`, message: `invalid FHIRPath: ${err}` });
    }
    if (routes) test.expect.routes = routes;
    if (sinks) test.expect.sinks = sinks;
    if (fhirpath) test.expect.fhirpath = fhirpath;
    out.push(test);
  });
  return out;
}
