import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { contentHash, isIgnoreField } from './content-hash';

const HL7 = 'application/hl7-v2';
const msg = (ts: string, evn = '20250101', eol = '\r') =>
  Buffer.from(
    ['MSH|^~\\&|APP|FAC|||' + ts + '||ADT^A01|C1|P|2.5', 'EVN|A01|' + evn, 'PID|1||123'].join(eol) + eol,
    'latin1',
  );

describe('contentHash', () => {
  it('HL7 v2: the ignored fields, segment ends and blank lines do not count; everything else does', () => {
    const a = contentHash(HL7, msg('20250101120000'), ['MSH-7']);
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(contentHash(HL7, msg('20250101999999'), ['MSH-7'])).toBe(a);
    expect(contentHash(HL7, msg('20250101120000', '20250101', '\r\n'), ['MSH-7'])).toBe(a);
    expect(
      contentHash(HL7, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), msg('1'), Buffer.from('\r\n')]), ['MSH-7']),
    ).toBe(a);
    expect(contentHash(HL7, msg('20250101999999'))).not.toBe(contentHash(HL7, msg('20250101120000')));
    // EVN-2 counts unless named; MSH-6 is not MSH-7.
    expect(contentHash(HL7, msg('1', '20250202'), ['MSH-7'])).not.toBe(a);
    expect(contentHash(HL7, msg('1', '20250202'), ['MSH-7', 'EVN-2'])).toBe(
      contentHash(HL7, msg('2', '20250101'), ['MSH-7', 'EVN-2']),
    );
    expect(contentHash(HL7, msg('1'), ['MSH-6'])).not.toBe(contentHash(HL7, msg('2'), ['MSH-6']));
    // JSON paths are ignored for HL7.
    expect(contentHash(HL7, msg('1'), ['MSH-7', 'meta.lastUpdated'])).toBe(a);
  });

  it('JSON: compared as parsed, ignored paths dropped (arrays walked); unparseable JSON and other types by bytes', () => {
    const J = 'application/fhir+json';
    const b = (o: unknown) => Buffer.from(JSON.stringify(o));
    const bundle = (t: string, gender: string) =>
      b({
        resourceType: 'Bundle',
        entry: [{ resource: { resourceType: 'Patient', meta: { lastUpdated: t }, gender } }],
      });
    const ign = ['entry.resource.meta.lastUpdated'];
    expect(contentHash(J, bundle('1', 'f'), ign)).toBe(contentHash(J, bundle('2', 'f'), ign));
    expect(contentHash(J, bundle('1', 'f'), ign)).not.toBe(contentHash(J, bundle('1', 'm'), ign));
    expect(contentHash(J, bundle('1', 'f'))).not.toBe(contentHash(J, bundle('2', 'f')));
    expect(contentHash(J, Buffer.from('{"a":1,"b":2}'))).toBe(contentHash(J, Buffer.from(' { "b": 2, "a": 1 }')));
    expect(contentHash(J, Buffer.from('{not json'))).toBe(contentHash('text/csv', Buffer.from('{not json')));
  });

  it('names HL7 v2 fields and JSON paths', () => {
    for (const ok of ['MSH-7', 'EVN-2', 'ZX1-12', 'meta.lastUpdated', 'timestamp'])
      expect(isIgnoreField(ok)).toBe(true);
    for (const bad of ['MSH-0', 'msh-7 ', 'a..b', '', 7]) expect(isIgnoreField(bad)).toBe(false);
  });
});

describe('contentHash: the bytes path and the text path agree', () => {
  const CORPUS = path.resolve(__dirname, '../../../../shared/corpus/hl7v2-msft');
  const files = existsSync(CORPUS) ? readdirSync(CORPUS).filter((f) => f.endsWith('.hl7')) : [];
  if (!files.length) console.warn(`skipped: the corpus is not at ${CORPUS}`);
  (files.length ? it : it.skip)(
    'over the corpus: LF files (text path) hash as their CR form (bytes path), with and without ignored fields',
    () => {
      const lists = [[], ['MSH-7'], ['MSH-7', 'EVN-2', 'PID-5', 'OBX-5', 'ZZZ-1', 'MSH-1', 'MSH-2', 'PID-99']];
      for (const f of files) {
        const raw = readFileSync(`${CORPUS}/${f}`);
        const cr = Buffer.from(raw.toString('latin1').replace(/\r\n|\n/g, '\r'), 'latin1');
        for (const ign of lists) {
          const viaText = contentHash(HL7, Buffer.concat([raw, Buffer.from('\n\n')]), ign);
          expect(contentHash(HL7, cr, ign)).toBe(viaText);
          expect(contentHash(HL7, Buffer.concat([cr, Buffer.from('\r\r')]), ign)).toBe(viaText);
        }
      }
    },
  );
});
