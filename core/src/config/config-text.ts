import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { joinPath, type ConfigProblem } from './config-error';

/** Reads YAML text into a plain object, interpolating `${VAR}` and resolving `*_FILE` keys. */
export function parseConfigText(
  text: string,
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
): Record<string, unknown> {
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { prettyErrors: true });
  } catch (e) {
    problems.push({ path: '', message: `not valid YAML: ${(e as Error).message}` });
    return {};
  }
  if (doc.errors.length) {
    for (const err of doc.errors) problems.push({ path: '', message: `not valid YAML: ${err.message}` });
    return {};
  }
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    problems.push({ path: '', message: 'the config must be a YAML mapping' });
    return {};
  }
  return resolveValues(raw, '', env, problems) as Record<string, unknown>;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function readSecretFile(file: string, at: string, problems: ConfigProblem[]): string | undefined {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    problems.push({
      path: at,
      message: `cannot read secret file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    });
    return undefined;
  }
}

function interpolate(s: string, at: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): string {
  return s.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
    if (env[name] !== undefined) return env[name] as string;
    const fileVar = env[`${name}_FILE`];
    if (fileVar) return readSecretFile(fileVar, at, problems) ?? '';
    if (fallback !== undefined) return fallback;
    problems.push({ path: at, message: `environment variable ${name} is not set (nor ${name}_FILE)` });
    return '';
  });
}

/** `${VAR}` interpolation and `*_FILE` keys over an already-parsed config value. */
export function resolveValues(v: unknown, at: string, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (typeof v === 'string') {
    const s = interpolate(v, at, env, problems);
    // A whole-value reference to a number/boolean stays typed for convict's formats.
    if (s !== v && /^\$\{[^}]+\}$/.test(v)) {
      if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
      if (s === 'true' || s === 'false') return s === 'true';
    }
    return s;
  }
  if (Array.isArray(v)) return v.map((x, i) => resolveValues(x, joinPath(at, i), env, problems));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (k.endsWith('_FILE') && typeof val === 'string') {
        const target = k.slice(0, -'_FILE'.length);
        const file = interpolate(val, joinPath(at, k), env, problems);
        const content = readSecretFile(file, joinPath(at, k), problems);
        if (content !== undefined) out[target] = content;
        continue;
      }
      out[k] = resolveValues(val, joinPath(at, k), env, problems);
    }
    return out;
  }
  return v;
}

/** Read a config file from disk (YAML), with interpolation. Problems are collected, not thrown. */
export function readConfigFile(
  file: string,
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
): Record<string, unknown> {
  const abs = path.resolve(file);
  if (!existsSync(abs)) {
    problems.push({ path: '', message: `config file not found: ${abs}` });
    return {};
  }
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    problems.push({ path: '', message: `cannot read config file ${abs}: ${(e as Error).message}` });
    return {};
  }
  return parseConfigText(text, env, problems);
}
