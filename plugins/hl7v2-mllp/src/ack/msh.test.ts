import { findSegmentStart, parseHeaderSegment, readRawHeader } from './msh';

/**
 * The raw header reader every ACK is built from: where the header starts (a BOM, blank lines and
 * spaces before it skipped), what is too short or not a header, and each field as sent (still
 * escaped, in the sender's delimiters).
 */
const MSH = 'MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240101||ORU^R01^ORU_R01|CTL-42|P|2.5.1';
const b = (s: string) => Buffer.from(s, 'latin1');
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

describe('readRawHeader: where the header starts', () => {
  it.each([
    ['at the first byte', b(`${MSH}\r`)],
    ['after a UTF-8 BOM', Buffer.concat([BOM, b(`${MSH}\r`)])],
    ['after blank lines, spaces and tabs', b(`\r\n\r \t\n${MSH}\r`)],
    ['after a BOM and then a blank line', Buffer.concat([BOM, b(`\r\n${MSH}\r`)])],
  ])('%s', (_what, body) => {
    expect(readRawHeader(body)).toMatchObject({ controlId: 'CTL-42', sendingApplication: 'LAB' });
  });

  it('a BOM only at the very start; other bytes before the header are no header', () => {
    expect(readRawHeader(Buffer.concat([b(' '), BOM, b(`${MSH}\r`)]))).toBeUndefined();
    expect(readRawHeader(b(`x${MSH}\r`))).toBeUndefined();
    expect(readRawHeader(Buffer.concat([BOM.subarray(0, 2), b(`${MSH}\r`)]))).toBeUndefined();
    // a body of only the BOM's first bytes, or only blank characters: nothing to read, no error
    expect(readRawHeader(BOM.subarray(0, 2))).toBeUndefined();
    expect(readRawHeader(b('\r\n \t\r\n \t\r\n'))).toBeUndefined();
    expect(readRawHeader(Buffer.alloc(0))).toBeUndefined();
  });

  it('needs 8 bytes of header after what it skips (MSH|^~\\&); fewer is no header', () => {
    expect(readRawHeader(b('MSH|^~\\&'))).toMatchObject({ fieldSep: '|', encodingChars: '^~\\&', controlId: '' });
    expect(readRawHeader(b('MSH|^~\\'))).toBeUndefined();
    expect(readRawHeader(b('\r\n\r\nMSH|^~\\'))).toBeUndefined();
    expect(readRawHeader(Buffer.concat([BOM, b('MSH|^~\\')]))).toBeUndefined();
  });

  it('reads the named segment only: MSH by default, FHS or BHS when asked', () => {
    const fhs = b('FHS|^~\\&|A|B|C|D|2024||||F1\r');
    expect(readRawHeader(fhs)).toBeUndefined();
    expect(readRawHeader(fhs, 'FHS')).toMatchObject({ batchControlId: 'F1' });
    expect(readRawHeader(b(`${MSH}\r`), 'BHS')).toBeUndefined();
  });

  it('reads the header within the first 8 KB of the body, however long the body', () => {
    const long = b(`${MSH}\r${'OBX|1|TX|||' + 'x'.repeat(20_000)}\r`);
    expect(readRawHeader(long)).toMatchObject({ controlId: 'CTL-42', version: '2.5.1' });
    // A header line longer than 8 KB: its fields past the first 8 KB are not read.
    const huge = readRawHeader(b(`MSH|^~\\&|${'A'.repeat(9000)}|HOSP|EHR\r`))!;
    expect(huge.sendingApplication).toHaveLength(8192 - 'MSH|^~\\&|'.length);
    expect(huge.sendingFacility).toBe('');
  });
});

describe('parseHeaderSegment: the fields', () => {
  it('each field raw, in the sender delimiters; MSH-15/16 trimmed and upper-cased; MSH-12 its first component', () => {
    const h = parseHeaderSegment(
      'MSH#$%!*#LAB#HOSP#EHR#CLINIC#2024##ADT$A08$ADT_A01#C\\F\\1#T#2.4$USA### al # er ##8859/1\r',
    )!;
    expect(h).toEqual({
      fieldSep: '#',
      encodingChars: '$%!*',
      componentSep: '$',
      sendingApplication: 'LAB',
      sendingFacility: 'HOSP',
      receivingApplication: 'EHR',
      receivingFacility: 'CLINIC',
      messageType: 'ADT$A08$ADT_A01',
      messageCode: 'ADT',
      trigger: 'A08',
      controlId: 'C\\F\\1',
      processingId: 'T',
      version: '2.4',
      acceptAckType: 'AL',
      appAckType: 'ER',
      charset: '8859/1',
      batchControlId: 'T',
    });
  });

  it('absent fields are empty strings: a header of MSH-1 and MSH-2 only, a type without trigger', () => {
    const h = parseHeaderSegment('MSH|^~\\&')!;
    for (const k of [
      'sendingApplication',
      'messageType',
      'messageCode',
      'trigger',
      'controlId',
      'version',
      'acceptAckType',
      'appAckType',
      'charset',
    ] as const)
      expect(h[k]).toBe('');
    expect(parseHeaderSegment('MSH|^~\\&|||||||ADT|1')).toMatchObject({ messageCode: 'ADT', trigger: '' });
  });

  it('the line ends at the first CR or LF: the next segment is not read as more fields', () => {
    expect(parseHeaderSegment('MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1\nPID|1|2|3|4|5\r')).toMatchObject({
      controlId: 'C1',
      processingId: '',
    });
    expect(parseHeaderSegment('MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1\rEVN|x|y')).toMatchObject({
      controlId: 'C1',
      processingId: '',
    });
    // no line end at all: the whole text
    expect(parseHeaderSegment('MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P')).toMatchObject({ processingId: 'P' });
  });

  it('no header: a field separator missing, a letter, digit or line break, or no encoding characters', () => {
    for (const bad of ['MSH', 'MSHA^~\\&|x', 'MSH1^~\\&', 'MSH\r^~\\&|', 'MSH\n^~\\&', 'MSH||A|B'])
      expect(parseHeaderSegment(bad)).toBeUndefined();
    expect(parseHeaderSegment('MSH|^|A')).toMatchObject({ encodingChars: '^', sendingApplication: 'A' });
  });
});

describe('findSegmentStart', () => {
  it('the header at the start (after a BOM or blank lines) or a segment at a line start (CR, LF); -1 when absent', () => {
    const body = b('MSH|^~\\&|A\rPID|1\nOBX|1|PIDX\r\nNTE|1|OBX|\r');
    expect(findSegmentStart(body, 'MSH')).toBe(0);
    expect(findSegmentStart(body, 'PID')).toBe(body.indexOf('PID|1'));
    expect(findSegmentStart(body, 'OBX')).toBe(body.indexOf('OBX|1'));
    expect(findSegmentStart(body, 'NTE')).toBe(body.indexOf('NTE'));
    expect(findSegmentStart(body, 'ZZZ')).toBe(-1);
    expect(findSegmentStart(Buffer.concat([BOM, b('\r\nBHS|x\rMSH|y')]), 'BHS')).toBe(5);
    expect(findSegmentStart(Buffer.concat([BOM, b('BHS|x\rMSH|y')]), 'MSH')).toBe(9);
  });

  it('skips a match inside a line (a field value) and finds the segment after it', () => {
    const body = b('MSH|^~\\&|MSHX|BHS\rEVN|BHS|x\rBHS|1\r');
    expect(findSegmentStart(body, 'BHS')).toBe(body.indexOf('\rBHS|1') + 1);
    expect(findSegmentStart(b('EVN|MSH|MSH\rPID|MSH'), 'MSH')).toBe(-1);
    // a match at the very first byte only counts for the header position, not as "after a line end"
    expect(findSegmentStart(b('XMSH|a\rMSH|b'), 'MSH')).toBe(7);
  });
});
