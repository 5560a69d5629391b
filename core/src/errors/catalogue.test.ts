import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ERROR_CATALOGUE,
  ackCodeOf,
  configError,
  defineErrors,
  FerryError,
  httpStatusOf,
  inputError,
  lookupError,
  permanentDeliveryError,
  retryableDeliveryError,
  transientError,
  type ErrorSpec,
} from './index';

/* eslint-disable @typescript-eslint/no-require-imports -- the scripts are plain CommonJS run by node */
const repo = path.resolve(__dirname, '../../..');
const { scan } = require(path.join(repo, 'scripts/errors-scan.js')) as {
  scan: (files?: string[]) => {
    uses: Map<string, Set<string>>;
    dynamic: Array<{ file: string; line: number; text: string }>;
  };
};
const { render, DOC } = require(path.join(repo, 'scripts/gen-errors-doc.js')) as {
  render: (c: unknown, u: Map<string, Set<string>>) => string;
  DOC: string;
};
/* eslint-enable @typescript-eslint/no-require-imports */

const catalogue = ERROR_CATALOGUE as Record<string, ErrorSpec>;

describe('the error catalogue', () => {
  const { uses, dynamic } = scan();

  it('lists every code the sources throw (core, plugins, packages), and no code is built at run time', () => {
    expect(uses.size).toBeGreaterThan(200);
    const unlisted = [...uses.keys()]
      .filter((c) => !(c in catalogue))
      .map((c) => `FERRY_E_${c} (${[...uses.get(c)!].join(', ')})`);
    expect(unlisted).toEqual([]);
    expect(dynamic.map((d) => `${d.file}:${d.line} ${d.text}`)).toEqual([]);
  });

  it('has no entry nothing throws', () => {
    expect(Object.keys(catalogue).filter((c) => !uses.has(c))).toEqual([]);
  });

  it('gives every entry a kind, a retryable flag, an HTTP status, an ACK code and a one-line description', () => {
    for (const [code, e] of Object.entries(catalogue)) {
      expect(code).toMatch(/^[A-Z][A-Z0-9_]*[A-Z0-9]$/);
      expect(['config', 'input', 'transient', 'internal']).toContain(e.kind);
      expect(typeof e.retryable).toBe('boolean');
      expect(e.http >= 400 && e.http <= 599).toBe(true);
      expect(['AR', 'AE']).toContain(e.ack);
      expect(e.description.length).toBeGreaterThan(15);
      expect(e.description).not.toMatch(/\n/);
    }
  });

  it('docs/errors.md is the one generated from the catalogue (npm run errors:doc)', () => {
    const expected = render(ERROR_CATALOGUE, uses);
    let actual = '';
    try {
      actual = readFileSync(DOC, 'utf8');
    } catch {
      /* missing: stale */
    }
    if (actual !== expected)
      throw new Error('docs/errors.md is stale: run npm run errors:doc (after npm run build) and commit it');
    expect(actual).toContain('| `FERRY_E_INPUT_DUPLICATE_REJECTED` | input | no | 409 | AR |');
  });

  it('the scan finds an unlisted code in a source (helpers, new FerryError, FERRY_E_ literals, template codes)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-errscan-'));
    try {
      const f = path.join(dir, 'bad.ts');
      writeFileSync(
        f,
        [
          "throw inputError('NOPE_ONE', 'x');",
          "throw new FerryError(ok ? 'VENDOR_NOPE_TWO' : 'INTERNAL_NOPE_THREE', 'x', { kind: 'internal' });",
          "if (e.code === 'FERRY_E_CONFIG_NOPE_FOUR') {}",
          'throw permanentDeliveryError(`${kind}_NOPE`, "x");',
        ].join('\n'),
      );
      const r = scan([f]);
      expect([...r.uses.keys()].sort()).toEqual([
        'CONFIG_NOPE_FOUR',
        'INPUT_NOPE_ONE',
        'INTERNAL_NOPE_THREE',
        'VENDOR_NOPE_TWO',
      ]);
      expect(r.dynamic.map((d) => d.text)).toEqual(['`${kind}_NOPE`']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('FerryError and the catalogue', () => {
  it('takes kind and retryable from the entry when the call does not give them', () => {
    const e = new FerryError('TRANSIENT_STORE_FULL', 'disk full');
    expect(e).toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_FULL', kind: 'transient', retryable: true });
    expect(new FerryError('CONFIG_SINK_GONE', 'gone')).toMatchObject({ kind: 'config', retryable: true });
    expect(new FerryError('FERRY_E_INPUT_BAD_JSON', 'x')).toMatchObject({
      code: 'FERRY_E_INPUT_BAD_JSON',
      kind: 'input',
      retryable: false,
    });
  });

  it('keeps what a call says (kind given: retryable defaults to kind === transient, as before the catalogue)', () => {
    expect(new FerryError('CONFIG_SINK_GONE', 'gone', { kind: 'config' })).toMatchObject({
      kind: 'config',
      retryable: false,
    });
    expect(new FerryError('DELIVERY_MLLP_REJECTED', 'AR', { kind: 'transient', retryable: true })).toMatchObject({
      kind: 'transient',
      retryable: true,
    });
    expect(FerryError.from(new Error('boom'))).toMatchObject({
      code: 'FERRY_E_INTERNAL_UNEXPECTED',
      kind: 'internal',
      retryable: false,
    });
  });

  it('the helpers prefix their code and set the kind as before', () => {
    expect(configError('STORE_URL', 'x')).toMatchObject({
      code: 'FERRY_E_CONFIG_STORE_URL',
      kind: 'config',
      retryable: false,
    });
    expect(inputError('BAD_JSON', 'x')).toMatchObject({
      code: 'FERRY_E_INPUT_BAD_JSON',
      kind: 'input',
      retryable: false,
    });
    expect(transientError('STORE_WRITE', 'x')).toMatchObject({
      code: 'FERRY_E_TRANSIENT_STORE_WRITE',
      kind: 'transient',
      retryable: true,
    });
    expect(permanentDeliveryError('REJECTED', 'x')).toMatchObject({
      code: 'FERRY_E_DELIVERY_REJECTED',
      kind: 'input',
      retryable: false,
    });
    expect(retryableDeliveryError('MLLP_REJECTED', 'x')).toMatchObject({
      code: 'FERRY_E_DELIVERY_MLLP_REJECTED',
      kind: 'transient',
      retryable: true,
    });
  });

  it('an unlisted or misspelt code does not compile', () => {
    // @ts-expect-error not in the catalogue
    expect(new FerryError('INPUT_NO_SUCH_CODE', 'x', { kind: 'input' }).code).toBe('FERRY_E_INPUT_NO_SUCH_CODE');
    // @ts-expect-error a helper takes only the codes under its prefix (this one is an INPUT_ code)
    expect(configError('BAD_JSON', 'x').code).toBe('FERRY_E_CONFIG_BAD_JSON');
    // @ts-expect-error misspelt
    expect(inputError('BAD_JSNO', 'x').kind).toBe('input');
  });

  it('HTTP status and ACK code come from the entry, by kind for a code the catalogue does not know', () => {
    expect(httpStatusOf(inputError('DUPLICATE_REJECTED', 'dup'))).toBe(409);
    expect(httpStatusOf(inputError('BAD_JSON', 'x'))).toBe(400);
    expect(httpStatusOf(transientError('STORE_FULL', 'x'))).toBe(503);
    expect(ackCodeOf(inputError('BAD_JSON', 'x'))).toBe('AR');
    expect(ackCodeOf(transientError('STORE_FULL', 'x'))).toBe('AE');
    expect(ackCodeOf(new FerryError('INTERNAL_UNEXPECTED', 'x'))).toBe('AE');
    const odd = Object.assign(Object.create(FerryError.prototype) as FerryError, {
      code: 'FERRY_E_SOMEONE_ELSES',
      kind: 'input',
    });
    expect([httpStatusOf(odd), ackCodeOf(odd)]).toEqual([400, 'AR']);
  });
});

describe('defineErrors (a plugin catalogue merged into the core one)', () => {
  const acme = defineErrors({
    ACME_REJECTED: { kind: 'input', description: 'acme refused the order: fix it and replay.', http: 422 },
    TRANSIENT_ACME_DOWN: { kind: 'transient', description: 'acme is down: retried.' },
  });

  it('throws typed codes with the declared kind, retryable flag, HTTP status and ACK', () => {
    const e = acme.error('ACME_REJECTED', 'acme answered 422', { details: { status: 422 } });
    expect(e).toMatchObject({
      code: 'FERRY_E_ACME_REJECTED',
      kind: 'input',
      retryable: false,
      details: { status: 422 },
    });
    expect([httpStatusOf(e), ackCodeOf(e)]).toEqual([422, 'AR']);
    expect(acme.error('TRANSIENT_ACME_DOWN', 'x')).toMatchObject({ kind: 'transient', retryable: true });
    expect(lookupError('FERRY_E_TRANSIENT_ACME_DOWN')).toMatchObject({ kind: 'transient', http: 503, ack: 'AE' });
    const undeclared = () => {
      // @ts-expect-error not declared by this plugin
      acme.error('ACME_OTHER', 'x');
    };
    expect(typeof undeclared).toBe('function');
  });

  it('refuses a code the core (or another plugin) declared differently, and a code that is not UPPER_SNAKE', () => {
    expect(() => defineErrors({ INPUT_BAD_JSON: { kind: 'transient', description: 'mine now' } })).toThrow(
      /declared already/,
    );
    expect(() => defineErrors({ ACME_REJECTED: { kind: 'transient', description: 'another acme' } })).toThrow(
      /declared already/,
    );
    expect(() => defineErrors({ 'acme-bad': { kind: 'input', description: 'x' } })).toThrow(/UPPER_SNAKE/);
    // the same declaration again (a module loaded twice) is fine
    expect(() =>
      defineErrors({
        ACME_REJECTED: { kind: 'input', description: 'acme refused the order: fix it and replay.', http: 422 },
      }),
    ).not.toThrow();
  });
});
