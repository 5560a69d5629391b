import type { Bundle } from '@medplum/fhirtypes';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import type { StepConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import { fhirpathTest } from '../fhir/fhirpath';
import { validateBundle } from '../fhir/validate';
import type { StoredMessage } from '../model/message';

/** A user script: `module.exports = (bundle, message) => bundle | null` (or a default export). */
export type ScriptFn = (bundle: Bundle, message: Readonly<StoredMessage>) => Bundle | null | undefined | Promise<Bundle | null | undefined>;

export type StepResult = { bundle: Bundle } | { filtered: string };

export interface CompiledStep {
  describe: string;
  run(bundle: Bundle, message: StoredMessage): Promise<StepResult>;
}

/** How long a script may run synchronously on one message before it is stopped (`{ script, timeoutMs }`). */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 1000;

/** A loaded script: called with a time limit on its synchronous run. */
export type BoundedScript = (bundle: Bundle, message: Readonly<StoredMessage>) => Bundle | null | undefined | Promise<Bundle | null | undefined>;

/**
 * Loads a script from its file -- read afresh each time (not from Node's module cache), so a
 * reload picks up an edited script -- into a context of its own (node:vm), where each call runs
 * with `timeoutMs` on its synchronous part: a script stuck in a loop is stopped and fails only its
 * message (INPUT_SCRIPT_TIMEOUT). `require` resolves from the script's folder, as for a module.
 */
export function loadScript(file: string, baseDir: string, timeoutMs = DEFAULT_SCRIPT_TIMEOUT_MS): BoundedScript {
  const abs = path.resolve(baseDir, file);
  const context = vm.createContext({ console, Buffer, URL, TextEncoder, TextDecoder, setTimeout, clearTimeout, structuredClone });
  const mod: { exports: any } = { exports: {} };
  try {
    const source = readFileSync(abs, 'utf8');
    const wrapper = new vm.Script(`(function (module, exports, require, __filename, __dirname) {${source}\n})`, { filename: abs });
    const fnInit = wrapper.runInContext(context, { timeout: timeoutMs }) as (...a: unknown[]) => void;
    context.__init = fnInit;
    context.__args = [mod, mod.exports, createRequire(abs), abs, path.dirname(abs)];
    vm.runInContext('__init.apply(undefined, __args)', context, { timeout: timeoutMs });
  } catch (e) {
    throw new FerryError('CONFIG_SCRIPT_LOAD', `script ${abs} failed to load: ${(e as Error).message}`, { kind: 'config', cause: e });
  }
  const exported = mod.exports;
  const fn = typeof exported === 'function' ? exported : typeof exported?.default === 'function' ? exported.default : undefined;
  if (!fn) throw new FerryError('CONFIG_SCRIPT_EXPORT', `script ${abs} must export a function (bundle, message) => bundle | null`, { kind: 'config' });
  context.__fn = fn;
  const call = new vm.Script('__fn(__bundle, __message)', { filename: `${abs} (call)` });
  return (bundle, message) => {
    context.__bundle = bundle;
    context.__message = message;
    try {
      return call.runInContext(context, { timeout: timeoutMs }) as ReturnType<BoundedScript>;
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT')
        throw new FerryError('INPUT_SCRIPT_TIMEOUT', `script ${file} did not finish within ${timeoutMs} ms (stopped; only this message fails)`, { kind: 'input' });
      throw e;
    } finally {
      context.__bundle = undefined;
      context.__message = undefined;
    }
  };
}

export function compileStep(step: StepConfig, baseDir: string): CompiledStep {
  if ('validate' in step) {
    return {
      describe: 'validate',
      async run(bundle) {
        const outcome = validateBundle(bundle);
        if (outcome) {
          const first = outcome.issue?.[0];
          throw new FerryError(
            'INPUT_FHIR_INVALID',
            `canonical bundle is not valid FHIR R4: ${outcome.issue?.length} issue(s)${first ? ` (first: ${first.expression?.[0] ?? '?'}: ${first.details?.text ?? first.code})` : ''}`,
            { kind: 'input', details: { outcome } },
          );
        }
        return { bundle };
      },
    };
  }
  if ('filter' in step) {
    const expr = step.filter;
    return {
      describe: `filter ${expr}`,
      async run(bundle) {
        return fhirpathTest(expr, bundle) ? { bundle } : { filtered: `filter: ${expr}` };
      },
    };
  }
  if ('script' in step) {
    const fn = loadScript(step.script, baseDir, step.timeoutMs);
    return {
      describe: `script ${step.script}`,
      async run(bundle, message) {
        let out: Bundle | null | undefined;
        try {
          out = await fn(structuredClone(bundle), message);
        } catch (e) {
          if (e instanceof FerryError && e.code === 'FERRY_E_INPUT_SCRIPT_TIMEOUT') throw e;
          throw new FerryError('INPUT_SCRIPT_FAILED', `script ${step.script} threw: ${(e as Error).message}`, { kind: 'input', cause: e });
        }
        if (out === null || out === undefined) return { filtered: `script: ${step.script}` };
        if (typeof out !== 'object' || (out as Bundle).resourceType !== 'Bundle')
          throw new FerryError('INPUT_SCRIPT_RESULT', `script ${step.script} must return a Bundle or null`, { kind: 'input' });
        return { bundle: out };
      },
    };
  }
  step satisfies never;
  throw new Error('unreachable');
}
