import type { Bundle } from '@medplum/fhirtypes';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { StoredMessage } from '../model/message';
import { compileStep, loadScript } from './steps';

const bundle = (gender = 'female'): Bundle => ({
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [{ fullUrl: 'urn:uuid:p1', resource: { resourceType: 'Patient', id: 'p1', gender: gender as 'female' } }],
});
const message: StoredMessage = {
  id: 'm1',
  seq: 1,
  sourceId: 'feed',
  contentType: 'application/hl7-v2',
  body: Buffer.from(
    'MSH|^~\\&|HIS|GEN|FERRY|HUB|20250101||ADT^A01|CTRL-1|P|2.5\rPID|1||MRN1^^^GEN^MR~SSN9^^^SSA^SS||DOE^JANE\r',
  ),
  headers: { messageType: 'ADT^A01', controlId: 'CTRL-1' },
  receivedAt: new Date(),
  status: 'received',
};

describe('script steps', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-steps-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const script = (name: string, source: string) => {
    writeFileSync(path.join(dir, name), source);
    return name;
  };

  it('gets the ferry helpers: FHIRPath, resource lookup, v2 fields of the original message', async () => {
    const step = compileStep(
      {
        script: script(
          'helpers.js',
          `module.exports = (bundle, message, ferry) => {
             const p = ferry.resource('Patient');
             p.identifier = ferry.v2.getAll('PID-3.1').map((value) => ({ value }));
             bundle.meta = { tag: [{ code: ferry.fhirpath("Bundle.entry.resource.ofType(Patient).gender")[0] }, { code: ferry.v2.get('MSH-9.2') }, { code: message.headers.controlId }] };
             return ferry.fhirpathTest("Bundle.entry.resource.ofType(Patient).gender = 'male'") ? null : bundle;
           };`,
        ),
      },
      dir,
    );
    const out = await step.run(bundle(), message);
    expect('bundle' in out && out.bundle.meta?.tag?.map((t) => t.code)).toEqual(['female', 'A01', 'CTRL-1']);
    expect('bundle' in out && out.bundle.entry?.[0].resource).toMatchObject({
      identifier: [{ value: 'MRN1' }, { value: 'SSN9' }],
    });
    expect(await step.run(bundle('male'), message)).toEqual({ filtered: 'script: helpers.js' });
  });

  it('awaits an async script that finishes in time (timers and I/O)', async () => {
    const fn = loadScript(
      script(
        'async-ok.js',
        `const fs = require('node:fs');
         module.exports = async (b) => {
           await new Promise((r) => setTimeout(r, 20));
           const text = await fs.promises.readFile(__filename, 'utf8');
           for (let i = 0; i < 50; i++) await null;
           return { ...b, meta: { tag: [{ code: String(text.length > 0) }] } };
         };`,
      ),
      dir,
      2000,
    );
    const out = await fn(bundle(), message);
    expect(out?.meta?.tag?.[0].code).toBe('true');
  });

  it.each([
    ['a synchronous loop', 'module.exports = () => { for (;;) {} };'],
    ['a wait past the limit', 'module.exports = () => new Promise((r) => setTimeout(r, 60000));'],
    ['a loop of timers', 'module.exports = async () => { for (;;) await new Promise((r) => setTimeout(r, 1)); };'],
    ['a promise that never settles', 'module.exports = () => new Promise(() => {});'],
    ['a loop in a timer callback', 'module.exports = () => new Promise((r) => setTimeout(() => { for (;;) {} }, 1));'],
    ['an interval that never resolves', 'module.exports = () => new Promise(() => setInterval(() => {}, 2));'],
  ])('stops %s at the time limit with a clear error; the next call works', async (_what, source) => {
    const name = script(
      `runaway-${_what.replace(/\W+/g, '-')}.js`,
      `let calls = 0;\n${source.replace('module.exports = ', 'const bad = ')}\nmodule.exports = (b, m) => (m.headers.controlId === 'bad' ? bad(b) : b);`,
    );
    const step = compileStep({ script: name, timeoutMs: 150 }, dir);
    // (unbounded, the 60 s waits and endless loops would outlast the test's own timeout)
    await expect(step.run(bundle(), { ...message, headers: { controlId: 'bad' } })).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_SCRIPT_TIMEOUT',
      message: expect.stringMatching(/did not finish within 150 ms \(stopped; only this message fails\)/),
    });
    // the event loop is free and the script answers the next message
    await new Promise((r) => setTimeout(r, 5));
    const ok = await step.run(bundle(), message);
    expect('bundle' in ok).toBe(true);
  });

  it('a runaway call leaves nothing running behind it (its timers are cleared)', async () => {
    const marker = path.join(dir, 'ticks.txt');
    const name = script(
      'leftover.js',
      `const fs = require('node:fs');
       module.exports = async () => { for (;;) { fs.appendFileSync(${JSON.stringify(marker)}, 'x'); await new Promise((r) => setTimeout(r, 5)); } };`,
    );
    const fn = loadScript(name, dir, 100);
    await expect(fn(bundle(), message)).rejects.toMatchObject({ code: 'FERRY_E_INPUT_SCRIPT_TIMEOUT' });
    const size = statSync(marker).size;
    await new Promise((r) => setTimeout(r, 200));
    expect(statSync(marker).size).toBe(size);
  });

  it('a script that throws or rejects fails its message with the reason; a bad return is refused', async () => {
    const throws = compileStep(
      { script: script('throws.js', "module.exports = () => { throw new Error('no MRN'); };") },
      dir,
    );
    await expect(throws.run(bundle(), message)).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_SCRIPT_FAILED',
      message: 'script throws.js threw: no MRN',
    });
    const rejects = compileStep(
      { script: script('rejects.js', "module.exports = async () => { await null; throw new Error('later'); };") },
      dir,
    );
    await expect(rejects.run(bundle(), message)).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_SCRIPT_FAILED',
      message: 'script rejects.js threw: later',
    });
    const timer = compileStep(
      {
        script: script(
          'timer-throws.js',
          "module.exports = () => new Promise(() => setTimeout(() => { throw new Error('in a timer'); }, 1));",
        ),
      },
      dir,
    );
    await expect(timer.run(bundle(), message)).rejects.toMatchObject({
      code: 'FERRY_E_INPUT_SCRIPT_FAILED',
      message: 'script timer-throws.js threw: in a timer',
    });
    const bad = compileStep({ script: script('bad.js', 'module.exports = () => 42;') }, dir);
    await expect(bad.run(bundle(), message)).rejects.toMatchObject({ code: 'FERRY_E_INPUT_SCRIPT_RESULT' });
  });

  it('a script that does not load is a config error naming the file', () => {
    expect(() => compileStep({ script: script('syntax.js', 'module.exports = (b) => {') }, dir)).toThrow(
      /syntax\.js failed to load/,
    );
    expect(() => compileStep({ script: script('noexport.js', 'const x = 1;') }, dir)).toThrow(/must export a function/);
    expect(() => compileStep({ script: 'missing.js' }, dir)).toThrow(/missing\.js failed to load/);
  });
});
