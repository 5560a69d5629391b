import * as fs from 'node:fs';
import * as path from 'node:path';
import 'reflect-metadata';
import { FerryError, type PluginRegistrar, coreTokens } from '@ferry/core';
import fc from 'fast-check';
import { container } from 'tsyringe';
import { hl7v2MllpPlugin } from '../index';
import { Hl7v2Transform } from './hl7v2-to-fhir.transform';
import { validateBundle } from '../v2-to-fhir/validate';

const ADT =
  'MSH|^~\\&|A|B|C|D|20240102103000+0100||ADT^A01^ADT_A01|C1|P|2.5.1\rEVN|A01|20240102\rPID|1||123^^^MRN^MR||Doe^Jane||19800101|F\rPV1|1|I|W^1^2';

describe('Hl7v2Transform', () => {
  const t = new Hl7v2Transform({});

  test('canHandle application/hl7-v2 (with parameters, any case) only', () => {
    expect(t.canHandle('application/hl7-v2')).toBe(true);
    expect(t.canHandle('Application/HL7-V2; charset=utf-8')).toBe(true);
    expect(t.canHandle('application/fhir+json')).toBe(false);
  });

  test('toFhir on a stored message; extractHeaders and split', () => {
    const body = Buffer.from(ADT);
    const b = t.toFhir({
      id: 'm1',
      seq: 1,
      sourceId: 's',
      contentType: 'application/hl7-v2',
      body,
      headers: {},
      receivedAt: new Date(),
      status: 'received',
    });
    expect(b.resourceType).toBe('Bundle');
    expect(t.extractHeaders(body)).toMatchObject({ messageType: 'ADT^A01', controlId: 'C1', orderingKey: 'MRN|123' });
    expect(t.split(Buffer.from(`${ADT}\r${ADT.replace('C1', 'C2')}`))).toHaveLength(2);
  });

  test('bad input: FerryError kind input; conversion never throws anything else', () => {
    let error: unknown;
    try {
      t.convert(Buffer.from('hello'));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).kind).toBe('input');
  });

  test('config: identifier systems table from plugins.hl7v2-mllp.conversion', () => {
    const t2 = new Hl7v2Transform({ conversion: { identifierSystems: { MRN: 'http://hospital.example/mrn' } } });
    const p = t2.convert(Buffer.from(ADT)).entry!.find((e) => e.resource?.resourceType === 'Patient')!.resource as {
      identifier: { system: string }[];
    };
    expect(p.identifier[0].system).toBe('http://hospital.example/mrn');
  });

  test('the plugin registers the transform, resolvable through DI with the plugin config', async () => {
    const child = container.createChildContainer();
    child.register(coreTokens.PluginConfig, { useValue: { conversion: { zSegments: 'ignore' } } });
    const added: unknown[] = [];
    const reg = {
      manifest: hl7v2MllpPlugin.manifest,
      config: {},
      logger: undefined,
      container: child,
      addTransform: (impl: unknown) => added.push(impl),
      addSourceType: () => undefined,
      addSinkType: () => undefined,
      addCommand: () => undefined,
    } as unknown as PluginRegistrar;
    await hl7v2MllpPlugin.register(reg);
    expect(added).toContain(Hl7v2Transform);
    const resolved = child.resolve(Hl7v2Transform);
    expect(resolved.options.zSegments).toBe('ignore');
    expect(hl7v2MllpPlugin.configSchema).toHaveProperty('conversion.identifierSystems');
  });
});

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus) console.warn(`skipped: ../shared absent (${CORPUS}) — conversion fuzz over corpus messages not run`);

(haveCorpus ? describe : describe.skip)('robustness: mutated corpus messages', () => {
  const t = new Hl7v2Transform({});
  const msgs = haveCorpus
    ? fs
        .readdirSync(CORPUS)
        .filter((f) => f.endsWith('.hl7'))
        .sort()
        .map((f) => fs.readFileSync(path.join(CORPUS, f), 'utf8').replace(/^\ufeff/, ''))
    : [];
  test('random field values (dates, codes, numbers, escapes, delimiters) never crash and stay valid FHIR', () => {
    const junk = fc.oneof(
      fc.constantFrom(
        '',
        '""',
        '\\',
        '\\X\\',
        '\\E\\',
        '^^^',
        '~',
        '&&',
        '99999999999999',
        '20241399',
        '-',
        '+0000',
        '1.2.3',
        'abc',
        ' ',
        'Y',
        'N',
        '0',
        '1e5',
        '<>',
        '>=1',
        '1:2',
        '1-2',
      ),
      fc.string({ maxLength: 12 }).map((s) => s.replace(/[\r\n|]/g, '')),
    );
    fc.assert(
      fc.property(
        fc.nat(msgs.length - 1),
        fc.array(fc.tuple(fc.nat(60), fc.nat(40), junk), { minLength: 1, maxLength: 8 }),
        (mi, edits) => {
          const lines = msgs[mi].split(/\r\n|\n|\r/).filter(Boolean);
          for (const [li, fi, v] of edits) {
            const idx = 1 + (li % Math.max(1, lines.length - 1)); // keep MSH intact
            if (idx >= lines.length) continue;
            const f = lines[idx].split('|');
            const k = 1 + (fi % Math.max(1, f.length));
            while (f.length <= k) f.push('');
            f[k] = v;
            lines[idx] = f.join('|');
          }
          let bundle;
          let error: unknown;
          // converted as the engine does: with the data-quality check (it must not crash either)
          const reported: { location: string }[] = [];
          try {
            bundle = t.convert(Buffer.from(lines.join('\r')), (i) => reported.push(i));
          } catch (e) {
            error = e;
          }
          expect(reported.map((i) => i.location).filter((l) => !/^[A-Z][A-Z0-9]{2}(-\d+(-\d+)?)?$/.test(l))).toEqual(
            [],
          );
          // Either a Bundle or an input error, nothing else.
          expect(error === undefined || (error instanceof FerryError && error.kind === 'input')).toBe(true);
          if (!bundle) return;
          const issues = validateBundle(bundle);
          if (issues.length) throw new Error(`${JSON.stringify(edits)} -> ${JSON.stringify(issues.slice(0, 3))}`);
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 40), seed: process.env.FUZZ_RUNS ? undefined : 20241129 },
    );
  });

  test('segments dropped, duplicated and moved (broken structures) never crash and stay valid FHIR', () => {
    fc.assert(
      fc.property(
        fc.nat(msgs.length - 1),
        fc.array(fc.tuple(fc.constantFrom('drop', 'dup', 'move'), fc.nat(60), fc.nat(60)), {
          minLength: 1,
          maxLength: 6,
        }),
        (mi, ops) => {
          const lines = msgs[mi].split(/\r\n|\n|\r/).filter(Boolean);
          const body = lines.slice(1);
          for (const [op, a, b] of ops) {
            if (!body.length) break;
            const i = a % body.length;
            if (op === 'drop') body.splice(i, 1);
            else if (op === 'dup') body.splice(b % (body.length + 1), 0, body[i]);
            else body.splice(b % body.length, 0, ...body.splice(i, 1));
          }
          const bundle = t.convert(Buffer.from([lines[0], ...body].join('\r')));
          const issues = validateBundle(bundle);
          if (issues.length) throw new Error(`${JSON.stringify(ops)} -> ${JSON.stringify(issues.slice(0, 3))}`);
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 40), seed: process.env.FUZZ_RUNS ? undefined : 20241130 },
    );
  });
});
