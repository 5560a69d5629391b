import convict from 'convict';
import type { ConfigSchema } from '../plugin/api';
import { joinPath, type ConfigProblem } from './config-error';

/**
 * Validate `value` against a convict schema strictly; every problem is pushed with `at` prefixed.
 * Returns the validated properties (defaults applied).
 */
export function validateWithSchema<T = Record<string, unknown>>(
  schema: ConfigSchema,
  value: unknown,
  at: string,
  problems: ConfigProblem[],
  opts: { env?: NodeJS.ProcessEnv } = {},
): T {
  if (value !== undefined && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    problems.push({ path: at, message: 'must be a mapping' });
    return {} as T;
  }
  let conf: convict.Config<any>;
  const mapLeaves: { path: string; check: (v: unknown) => void }[] = [];
  try {
    conf = convict(mapLeavesAsObjects(schema, '', mapLeaves) as ConfigSchema, { env: opts.env ?? {}, args: [] });
  } catch (e) {
    problems.push({ path: at, message: `invalid schema: ${(e as Error).message}` });
    return {} as T;
  }
  try {
    conf.load(value ?? {});
  } catch (e) {
    problems.push({ path: at, message: (e as Error).message });
    return {} as T;
  }
  try {
    conf.validate({ allowed: 'strict', output: () => undefined });
  } catch (e) {
    for (const line of (e as Error).message.split('\n')) {
      const p = convictLineToProblem(line);
      if (p) problems.push({ path: p.path ? joinPath(at, p.path) : at, message: p.message });
    }
  }
  const out = conf.getProperties() as T;
  for (const leaf of mapLeaves) {
    try {
      leaf.check(leaf.path.split('.').reduce<any>((o, k) => o?.[k], out));
    } catch (e) {
      // a validator that lists several problems (details.problems: [{ path, message }], paths relative to the leaf) gives each by its path
      const listed = (e as { details?: { problems?: unknown } }).details?.problems;
      if (Array.isArray(listed) && listed.length && listed.every((p) => typeof p?.message === 'string'))
        for (const p of listed as ConfigProblem[])
          problems.push({
            path: joinPath(at, p.path ? `${leaf.path}${p.path.startsWith('[') ? '' : '.'}${p.path}` : leaf.path),
            message: p.message,
          });
      else problems.push({ path: joinPath(at, leaf.path), message: (e as Error).message });
    }
  }
  return out;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/**
 * convict merges a loaded mapping into a leaf whose default is an object key by key, and fails on
 * a nested mapping inside it (`Cannot read properties of undefined`), unless the leaf's format is
 * `Object`. So a leaf with an object default and a validator function (a map of maps, such as
 * athena-fhir `searchParams: { Observation: { category: laboratory } }`) is given to convict as
 * `Object` and its validator is run here on the loaded value, with the leaf's path.
 */
function mapLeavesAsObjects(
  schema: unknown,
  path: string,
  out: { path: string; check: (v: unknown) => void }[],
): unknown {
  if (!isPlainObject(schema)) return schema;
  if ('default' in schema) {
    if (isPlainObject(schema.default) && typeof schema.format === 'function') {
      out.push({ path, check: schema.format as (v: unknown) => void });
      return { ...schema, format: Object };
    }
    return schema;
  }
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) copy[k] = mapLeavesAsObjects(v, path ? `${path}.${k}` : k, out);
  return copy;
}

function convictLineToProblem(line: string): ConfigProblem | undefined {
  const l = line.trim();
  if (!l) return undefined;
  const undeclared = /^configuration param '([^']+)' not declared in the schema$/.exec(l);
  if (undeclared) return { path: undeclared[1], message: 'unknown key' };
  const m = /^([\w.$-]+): (.*)$/.exec(l);
  if (m) return { path: m[1], message: m[2] };
  return { path: '', message: l };
}
