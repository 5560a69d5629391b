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
import type { ScriptHelpers } from './script-api';
import { scriptHelpers } from './script-helpers';

/** A user script: `module.exports = (bundle, message, ferry) => bundle | null` (or a default export); see script-api.ts. */
export type ScriptFn = (
  bundle: Bundle,
  message: Readonly<StoredMessage>,
  ferry: ScriptHelpers,
) => Bundle | null | undefined | Promise<Bundle | null | undefined>;

export type StepResult = { bundle: Bundle } | { filtered: string };

export interface CompiledStep {
  describe: string;
  run(bundle: Bundle, message: StoredMessage): Promise<StepResult>;
}

/** How long one script call may take, synchronous part and everything it awaits (`{ script, timeoutMs }`). */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 1000;

/** A loaded script: each call bounded by the time limit, awaited parts included. */
export type BoundedScript = (
  bundle: Bundle,
  message: Readonly<StoredMessage>,
  ferry?: ScriptHelpers,
) => Promise<Bundle | null | undefined>;

/**
 * A script's own context (node:vm). Its timers are its own: their callbacks run as evaluations
 * with the time left to the call under way (a loop in one is stopped), and a context that is given
 * up (a call ran out of time) runs nothing more -- its timers are cleared.
 *
 * Promise jobs run in Node's own queue (the default microtask mode): `microtaskMode:
 * 'afterEvaluate'` would bound them too, but stopping a script inside a promise job corrupts
 * Node 20's async-hook stack and aborts the process whenever async hooks are on (an APM agent,
 * AsyncLocalStorage, jest) -- so a loop made of promise jobs alone (`for (;;) await null`) is
 * bounded by the transform worker's batch watchdog, not here.
 */
class ScriptContext {
  readonly context: vm.Context;
  private readonly timers = new Set<NodeJS.Timeout | NodeJS.Immediate>();
  private retired = false;
  /** The call under way: its deadline, and how a timer callback that runs out of time or throws fails it. */
  call?: { deadline: number; fail(e: unknown): void };

  constructor(
    private readonly abs: string,
    source: string,
    private readonly timeoutMs: number,
  ) {
    const track = <T extends NodeJS.Timeout | NodeJS.Immediate>(t: T): T => {
      this.timers.add(t);
      return t;
    };
    const context = vm.createContext({
      console,
      Buffer,
      URL,
      TextEncoder,
      TextDecoder,
      structuredClone,
      setTimeout: (cb: (...a: unknown[]) => void, ms?: number, ...a: unknown[]) => {
        if (this.retired) return undefined;
        const t: NodeJS.Timeout = track(setTimeout(() => (this.timers.delete(t), this.fire(cb, a)), ms));
        return t;
      },
      setInterval: (cb: (...a: unknown[]) => void, ms?: number, ...a: unknown[]) =>
        this.retired ? undefined : track(setInterval(() => this.fire(cb, a), ms)),
      setImmediate: (cb: (...a: unknown[]) => void, ...a: unknown[]) => {
        if (this.retired) return undefined;
        const t: NodeJS.Immediate = track(setImmediate(() => (this.timers.delete(t), this.fire(cb, a))));
        return t;
      },
      clearTimeout: (t: NodeJS.Timeout) => (clearTimeout(t), this.timers.delete(t)),
      clearInterval: (t: NodeJS.Timeout) => (clearInterval(t), this.timers.delete(t)),
      clearImmediate: (t: NodeJS.Immediate) => (clearImmediate(t), this.timers.delete(t)),
    });
    const mod: { exports: any } = { exports: {} };
    const wrapper = new vm.Script(`(function (module, exports, require, __filename, __dirname) {${source}\n})`, {
      filename: abs,
    });
    context.__init = wrapper.runInContext(context, { timeout: timeoutMs }) as (...a: unknown[]) => void;
    context.__args = [mod, mod.exports, createRequire(abs), abs, path.dirname(abs)];
    vm.runInContext('__init.apply(undefined, __args)', context, { timeout: timeoutMs });
    context.__init = context.__args = undefined;
    const exported = mod.exports;
    const fn =
      typeof exported === 'function'
        ? exported
        : typeof exported?.default === 'function'
          ? exported.default
          : undefined;
    if (!fn)
      throw new FerryError(
        'CONFIG_SCRIPT_EXPORT',
        `script ${abs} must export a function (bundle, message, ferry) => bundle | null`,
        { kind: 'config' },
      );
    context.__fn = fn;
    this.context = context;
  }

  /** A timer callback of the script, run as an evaluation with the time left to the call under way. */
  private fire(cb: (...a: unknown[]) => void, args: unknown[]): void {
    if (this.retired) return;
    const call = this.call;
    this.context.__cb = () => cb(...args);
    try {
      timerScript.runInContext(this.context, {
        timeout: Math.max(1, call ? call.deadline - Date.now() : this.timeoutMs),
      });
    } catch (e) {
      // never an uncaught exception in the engine: it fails the call under way (or is dropped with the context)
      if (call) call.fail(e);
      else if ((e as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') this.retire();
    } finally {
      this.context.__cb = undefined;
    }
  }

  /** Given up: its timers are cleared and nothing in it runs again. */
  retire(): void {
    this.retired = true;
    this.call = undefined;
    for (const t of this.timers) {
      clearTimeout(t as NodeJS.Timeout);
      clearImmediate(t as NodeJS.Immediate);
    }
    this.timers.clear();
  }
}

const callScript = new vm.Script('__fn(__bundle, __message, __ferry)', { filename: 'ferry-script-call' });
const timerScript = new vm.Script('__cb()', { filename: 'ferry-script-timer' });

const isVmTimeout = (e: unknown) => (e as { code?: string } | undefined)?.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';

/**
 * Loads a script from its file -- read afresh each time (not from Node's module cache), so a
 * reload picks up an edited script -- into a context of its own (node:vm). Each call gets
 * `(bundle, message, ferry)` (the helpers of script-api.ts) and runs within `timeoutMs` as a
 * whole: its synchronous part, its timer callbacks and whatever it awaits (a wait, a loop of
 * timers, a promise that never settles). A call over the limit fails only its message
 * (INPUT_SCRIPT_TIMEOUT); its context is given up (its timers cleared, so nothing it left behind
 * keeps running) and the next call gets a fresh one. Calls of one script run one at a time.
 * `require` resolves from the script's folder, as for a module.
 */
export function loadScript(file: string, baseDir: string, timeoutMs = DEFAULT_SCRIPT_TIMEOUT_MS): BoundedScript {
  const abs = path.resolve(baseDir, file);
  let source: string;
  let ctx: ScriptContext;
  try {
    source = readFileSync(abs, 'utf8');
    ctx = new ScriptContext(abs, source, timeoutMs);
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw new FerryError('CONFIG_SCRIPT_LOAD', `script ${abs} failed to load: ${(e as Error).message}`, {
      kind: 'config',
      cause: e,
    });
  }
  const timeoutError = () =>
    new FerryError(
      'INPUT_SCRIPT_TIMEOUT',
      `script ${file} did not finish within ${timeoutMs} ms (stopped; only this message fails)`,
      { kind: 'input' },
    );

  const callOnce = (
    bundle: Bundle,
    message: Readonly<StoredMessage>,
    ferry: ScriptHelpers,
  ): Promise<Bundle | null | undefined> => {
    const deadline = Date.now() + timeoutMs;
    const c = ctx;
    const giveUp = () => {
      c.retire();
      // the next call gets a fresh context (the source loaded once already: it loads again)
      if (ctx === c) ctx = new ScriptContext(abs, source, timeoutMs);
    };
    return new Promise((resolve, reject) => {
      let finished = false;
      const finish = (err: unknown, value?: Bundle | null) => {
        if (finished) return;
        finished = true;
        clearTimeout(limit);
        if (c.call === call) c.call = undefined;
        if (err === undefined) return resolve(value);
        if (isVmTimeout(err)) {
          giveUp();
          return reject(timeoutError());
        }
        reject(err ?? new Error('script failed with no reason'));
      };
      const call = { deadline, fail: (e: unknown) => finish(e ?? new Error('a timer callback failed')) };
      const limit = setTimeout(() => {
        if (finished) return;
        finished = true;
        if (c.call === call) c.call = undefined;
        giveUp();
        reject(timeoutError());
      }, timeoutMs);
      c.call = call;
      c.context.__bundle = bundle;
      c.context.__message = message;
      c.context.__ferry = ferry;
      let r: unknown;
      try {
        r = callScript.runInContext(c.context, { timeout: timeoutMs });
      } catch (e) {
        return finish(e);
      } finally {
        c.context.__bundle = c.context.__message = c.context.__ferry = undefined;
      }
      Promise.resolve(r as Bundle | null | undefined).then(
        (v) => finish(undefined, v),
        (e) => finish(e ?? new Error('script rejected with no reason')),
      );
    });
  };

  // One call at a time: a call that runs out of time is blamed on its own message alone.
  let queue: Promise<unknown> = Promise.resolve();
  return (bundle, message, ferry = scriptHelpers(bundle, message)) => {
    const run = queue.then(() => callOnce(bundle, message, ferry));
    queue = run.catch(() => undefined);
    return run;
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
          const copy = structuredClone(bundle);
          out = await fn(copy, message, scriptHelpers(copy, message));
        } catch (e) {
          if (e instanceof FerryError && e.code === 'FERRY_E_INPUT_SCRIPT_TIMEOUT') throw e;
          throw new FerryError('INPUT_SCRIPT_FAILED', `script ${step.script} threw: ${(e as Error).message}`, {
            kind: 'input',
            cause: e,
          });
        }
        if (out === null || out === undefined) return { filtered: `script: ${step.script}` };
        if (typeof out !== 'object' || (out as Bundle).resourceType !== 'Bundle')
          throw new FerryError('INPUT_SCRIPT_RESULT', `script ${step.script} must return a Bundle or null`, {
            kind: 'input',
          });
        return { bundle: out };
      },
    };
  }
  step satisfies never;
  throw new Error('unreachable');
}
