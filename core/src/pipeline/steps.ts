import type { Bundle } from '@medplum/fhirtypes';
import path from 'node:path';
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

export function loadScript(file: string, baseDir: string): ScriptFn {
  const abs = path.resolve(baseDir, file);
  let mod: any;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(abs);
  } catch (e) {
    throw new FerryError('CONFIG_SCRIPT_LOAD', `script ${abs} failed to load: ${(e as Error).message}`, { kind: 'config', cause: e });
  }
  const fn = typeof mod === 'function' ? mod : typeof mod?.default === 'function' ? mod.default : undefined;
  if (!fn) throw new FerryError('CONFIG_SCRIPT_EXPORT', `script ${abs} must export a function (bundle, message) => bundle | null`, { kind: 'config' });
  return fn;
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
    const fn = loadScript(step.script, baseDir);
    return {
      describe: `script ${step.script}`,
      async run(bundle, message) {
        let out: Bundle | null | undefined;
        try {
          out = await fn(structuredClone(bundle), message);
        } catch (e) {
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
