import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { FerryError } from '@ferry/core';
import {
  STANDARD_DELIMITERS,
  decodeHl7Bytes,
  encodeSegment,
  escapeHl7,
  extractHeaders,
  parseHl7,
  splitHl7Batch,
  toHl7Standard,
  unescapeHl7,
} from './index';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');
const haveCorpus = fs.existsSync(CORPUS);
if (!haveCorpus) console.warn(`skipped: ../shared absent (${CORPUS}) — corpus parse tests not run`);
const corpusFiles = haveCorpus
  ? fs
      .readdirSync(CORPUS)
      .filter((f) => f.endsWith('.hl7'))
      .sort()
  : [];

const ADT = [
  'MSH|^~\\&|ADTApp|GHH^2.16.840.1.1^ISO|EHR|RCV|20240101120000+0100||ADT^A01^ADT_A01|CTRL-1|P|2.5.1|||AL|NE||UNICODE UTF-8',
  'EVN|A01|20240101120000',
  'PID|1||12345^^^MRN-AUTH^MR~999^^^SSA^SS||Doe^Jane^Q||19800501|F',
  'PV1|1|I',
].join('\r');

describe('parseHl7: structure and accessors', () => {
  test('fields, repetitions, components and subcomponents (1-based fields/components, 0-based repetitions)', () => {
    const m = parseHl7(ADT);
    expect(m.segments.map((s) => s.name)).toEqual(['MSH', 'EVN', 'PID', 'PV1']);
    expect(m.get('MSH', 1)).toBe('|');
    expect(m.get('MSH', 2)).toBe('^~\\&');
    expect(m.get('MSH', 9, 0, 2)).toBe('A01');
    expect(m.get('PID', 3, 0, 1)).toBe('12345');
    expect(m.get('PID', 3, 1, 4)).toBe('SSA');
    expect(m.get('PID', 5, 0, 2)).toBe('Jane');
    expect(m.get('PID', 99)).toBe('');
    expect(m.segment('PID')!.reps(3)).toHaveLength(2);
    const sub = parseHl7('MSH|^~\\&|A\rPID|1||1^^^NS&1.2.3&ISO');
    expect(sub.get('PID', 3, 0, 4, 2)).toBe('1.2.3');
  });

  test.each([
    ['\\r', '\r'],
    ['\\n', '\n'],
    ['\\r\\n', '\r\n'],
  ])('segment ends %s', (_n, eol) => {
    const m = parseHl7(ADT.split('\r').join(eol) + eol);
    expect(m.segments).toHaveLength(4);
    expect(m.get('PV1', 2)).toBe('I');
  });

  test('control-only lines (MLLP leftovers, DOS EOF) are not segments', () => {
    const m = parseHl7(`\x0b${ADT}\r\x1c\r\x1a\r  \r`);
    expect(m.segments.map((s) => s.name)).toEqual(['MSH', 'EVN', 'PID', 'PV1']);
  });

  test('a UTF-8 BOM is stripped (bytes and text)', () => {
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(ADT)]);
    const { text } = decodeHl7Bytes(bytes);
    expect(text.startsWith('MSH')).toBe(true);
    expect(parseHl7('\ufeff' + ADT).msh.name).toBe('MSH');
    expect(extractHeaders(bytes).controlId).toBe('CTRL-1');
  });

  test('non-standard delimiters from MSH-1/MSH-2', () => {
    const m = parseHl7('MSH#*@!$#SND#FAC#####ORU*R01#C1#P#2.4\rPID#1##A1*B*C*ISS$X@A2');
    expect(m.delimiters).toMatchObject({ field: '#', component: '*', repetition: '@', escape: '!', subcomponent: '$' });
    expect(m.get('MSH', 9, 0, 2)).toBe('R01');
    expect(m.get('PID', 3, 0, 4, 2)).toBe('X');
    expect(m.get('PID', 3, 1, 1)).toBe('A2');
  });

  test('a truncation character (MSH-2.5) is accepted', () => {
    const m = parseHl7('MSH|^~\\&#|A|B\rNTE|1||x\\P\\y');
    expect(m.delimiters.truncation).toBe('#');
    expect(m.get('NTE', 3)).toBe('x#y');
  });

  test('escape sequences are decoded on read', () => {
    const m = parseHl7(
      'MSH|^~\\&|A\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41C3A9\\h\\H\\bold\\N\\|x\\Zcustom\\y',
    );
    expect(m.get('NTE', 3)).toBe('a|b^c&d~e\\f\ngAéhbold');
    expect(m.get('NTE', 4)).toBe('xy');
    // an escaped delimiter does not split
    expect(parseHl7('MSH|^~\\&|A\rOBX|1|ST|||A\\S\\B').segment('OBX')!.reps(5)[0]).toEqual([['A^B']]);
    // unterminated / unknown escapes are kept literally
    expect(unescapeHl7('C:\\path', STANDARD_DELIMITERS)).toBe('C:\\path');
  });

  test('escape/unescape round-trip (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const clean = s.replace(/\r\n?/g, '\n');
        const enc = escapeHl7(clean, STANDARD_DELIMITERS);
        expect(enc).not.toMatch(/[|^~&\r\n]/);
        expect(unescapeHl7(enc, STANDARD_DELIMITERS)).toBe(clean);
      }),
      { numRuns: 300 },
    );
  });

  test('encodeSegment escapes leaves and writes MSH-1/2 from the delimiters', () => {
    const d = STANDARD_DELIMITERS;
    expect(encodeSegment('MSH', ['APP', 'FAC', '', '', '20240101', '', ['ACK', 'A01', 'ACK']], d)).toBe(
      'MSH|^~\\&|APP|FAC|||20240101||ACK^A01^ACK',
    );
    expect(encodeSegment('MSA', ['AA', 'C|1'], d)).toBe('MSA|AA|C\\F\\1');
    expect(encodeSegment('PID', ['1', '', { reps: [['1', '', '', ['NS', '1.2', 'ISO']], '2'] }], d)).toBe(
      'PID|1||1^^^NS&1.2&ISO~2',
    );
    const back = parseHl7('MSH|^~\\&|A\r' + encodeSegment('NTE', ['1', '', 'a^b\nc'], d));
    expect(back.get('NTE', 3)).toBe('a^b\nc');
  });
});

describe('charsets (MSH-18)', () => {
  const msg = (msh18: string, body: string) =>
    `MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5|||||${msh18}\rPID|1||1||${body}\r`;

  test('8859/1 is decoded as ISO-8859-1', () => {
    const buf = Buffer.from(msg('8859/1', 'Müller^Zoë'), 'latin1');
    expect(parseHl7(decodeHl7Bytes(buf).text).get('PID', 5, 0, 1)).toBe('Müller');
  });
  test('UNICODE UTF-8 is decoded as UTF-8', () => {
    const buf = Buffer.from(msg('UNICODE UTF-8', '李^小龙'), 'utf8');
    const d = decodeHl7Bytes(buf);
    expect(d.encoding).toBe('utf-8');
    expect(parseHl7(d.text).get('PID', 5, 0, 2)).toBe('小龙');
  });
  test('ASCII declared but UTF-8 bytes present: read as UTF-8 (feeds lie)', () => {
    const buf = Buffer.from(msg('ASCII', 'Müller'), 'utf8');
    expect(parseHl7(decodeHl7Bytes(buf).text).get('PID', 5)).toBe('Müller');
  });
  test('no MSH-18 and invalid UTF-8: the configured fallback', () => {
    const buf = Buffer.from(msg('', 'Müller'), 'latin1');
    expect(decodeHl7Bytes(buf).encoding).toBe('latin1');
    expect(parseHl7(decodeHl7Bytes(buf).text).get('PID', 5)).toBe('Müller');
    expect(decodeHl7Bytes(Buffer.from(msg('', '\x80uro'), 'latin1'), 'windows-1252').text).toContain('€uro');
  });
});

describe('batches (FHS/BHS/BTS/FTS)', () => {
  test('envelope segments are dropped and each MSH starts a message; bytes kept as is', () => {
    const m1 = 'MSH|^~\\&|A|B|||x||ADT^A01|1|P|2.5\rPID|1||1';
    const m2 = 'MSH|^~\\&|A|B|||x||ADT^A08|2|P|2.5\nPID|1||2';
    const body = Buffer.from(`FHS|^~\\&|A\rBHS|^~\\&|A\r${m1}\r${m2}\nBTS|2\rFTS|1\r`);
    const parts = splitHl7Batch(body);
    expect(parts).toHaveLength(2);
    expect(extractHeaders(parts[0]).controlId).toBe('1');
    expect(extractHeaders(parts[1]).controlId).toBe('2');
    expect(parts[1].toString()).toBe(`${m2}\n`);
  });
  test('a single message comes back as the same buffer', () => {
    const b = Buffer.from(ADT);
    expect(splitHl7Batch(b)[0]).toBe(b);
  });
  test('several MSH without envelope are split too', () => {
    expect(splitHl7Batch(Buffer.from(`${ADT}\r${ADT}\r`))).toHaveLength(2);
  });
});

describe('extractHeaders', () => {
  test('MSH fields and the PID-3 ordering key', () => {
    expect(extractHeaders(Buffer.from(ADT))).toEqual({
      messageType: 'ADT^A01',
      trigger: 'A01',
      messageStructure: 'ADT_A01',
      controlId: 'CTRL-1',
      sendingApplication: 'ADTApp',
      sendingFacility: 'GHH',
      receivingApplication: 'EHR',
      receivingFacility: 'RCV',
      dateTime: '20240101120000+0100',
      processingId: 'P',
      version: '2.5.1',
      acceptAckType: 'AL',
      applicationAckType: 'NE',
      characterSet: 'UNICODE UTF-8',
      orderingKey: 'MRN-AUTH|12345',
    });
  });
  test('no PID: no ordering key', () => {
    expect(extractHeaders(Buffer.from('MSH|^~\\&|A|B|||x||ACK|9|P|2.5')).orderingKey).toBeUndefined();
  });
});

describe('unparseable input: FerryError kind input with an ERR-ready location', () => {
  const err = (text: string): FerryError => {
    try {
      parseHl7(text);
    } catch (e) {
      return e as FerryError;
    }
    throw new Error('expected a failure');
  };
  test.each([
    ['empty', '', 'FERRY_E_INPUT_HL7_EMPTY', { segment: 'MSH', sequence: 1 }],
    ['no MSH', 'PID|1||2', 'FERRY_E_INPUT_HL7_NO_MSH', { segment: 'MSH', sequence: 1 }],
    ['bad field separator', 'MSHA^~\\&', 'FERRY_E_INPUT_HL7_BAD_DELIMITERS', { segment: 'MSH', sequence: 1, field: 1 }],
    [
      'repeated encoding characters',
      'MSH|^^\\&|A',
      'FERRY_E_INPUT_HL7_BAD_DELIMITERS',
      { segment: 'MSH', sequence: 1, field: 2 },
    ],
    [
      'garbage segment',
      'MSH|^~\\&|A\rPID|1\rhello world',
      'FERRY_E_INPUT_HL7_BAD_SEGMENT',
      { segment: '???', sequence: 3 },
    ],
    ['second MSH', 'MSH|^~\\&|A\rMSH|^~\\&|B', 'FERRY_E_INPUT_HL7_UNEXPECTED_MSH', { segment: 'MSH', sequence: 2 }],
  ])('%s', (_n, text, code, location) => {
    const e = err(text);
    expect(e).toBeInstanceOf(FerryError);
    expect(e.code).toBe(code);
    expect(e.kind).toBe('input');
    expect(e.retryable).toBe(false);
    expect(e.details?.location).toEqual(location);
    expect(e.details?.hl7ErrorCode).toMatch(/^\d{3}$/);
  });
});

(haveCorpus ? describe : describe.skip)('corpus ../shared/corpus/hl7v2-msft', () => {
  test('every message parses (Ferry reader and hl7-standard) and yields headers', () => {
    expect(corpusFiles.length).toBeGreaterThanOrEqual(139);
    const types = new Set<string>();
    for (const f of corpusFiles) {
      const bytes = fs.readFileSync(path.join(CORPUS, f));
      const parts = splitHl7Batch(bytes);
      expect(parts.length).toBeGreaterThanOrEqual(1);
      for (const p of parts) {
        const h = extractHeaders(p);
        expect(h.messageType).toBeTruthy();
        expect(h.controlId).toBeTruthy();
        types.add(h.messageType!);
        const text = decodeHl7Bytes(p).text;
        const m = parseHl7(text);
        for (const s of m.segments) for (let i = 1; i <= s.size; i++) s.reps(i);
        const std = toHl7Standard(text);
        expect(std.get('MSH.10')).toBe(h.controlId);
      }
    }
    expect(types.size).toBeGreaterThanOrEqual(57);
  });
});
