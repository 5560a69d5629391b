import {
  acksFor,
  buildAck,
  buildBatchAck,
  hl7Timestamp,
  HL7Error,
  isEnhanced,
  nextAckControlId,
  readAck,
} from './ack.builder';
import { readRawHeader } from './msh';

const now = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6));
const msg = (extra = '') =>
  Buffer.from(
    `MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240101||ORU^R01^ORU_R01|CTL-42|P|2.5.1${extra}\rPID|1||123^^^HOSP^MR\r`,
    'latin1',
  );
const seg = (ack: string, name: string) =>
  ack
    .split('\r')
    .find((l) => l.startsWith(name))!
    .split('|');

describe('buildAck (original mode)', () => {
  it('swaps sender/receiver, echoes trigger, version, processing id and control id', () => {
    const ack = buildAck(readRawHeader(msg()), 'AA', { now, controlId: 'ACK1' });
    expect(ack).toBe(
      'MSH|^~\\&|EHR|CLINIC|LAB|HOSP|20240102030405.006+0000||ACK^R01^ACK|ACK1|P|2.5.1\rMSA|AA|CTL-42\r',
    );
  });

  it('AR carries an ERR with location and a table 0357 code (v2.5+)', () => {
    const ack = buildAck(readRawHeader(msg()), 'AR', {
      now,
      error: {
        condition: HL7Error.requiredFieldMissing,
        location: { segment: 'PID', sequence: 2, field: 3 },
        detail: 'PID-3 empty',
      },
    });
    expect(seg(ack, 'MSA').slice(0, 3)).toEqual(['MSA', 'AR', 'CTL-42']);
    const err = seg(ack, 'ERR');
    expect(err[2]).toBe('PID^2^3');
    expect(err[3]).toBe('101^Required field missing^HL70357');
    expect(err[4]).toBe('E');
    expect(readAck(ack)).toMatchObject({ code: 'AR', controlId: 'CTL-42', errCode: '101' });
  });

  it('uses ERR-1 (ELD) before v2.5', () => {
    const m = Buffer.from('MSH|^~\\&|A|B|C|D|2024||ADT^A08|X1|P|2.3\r', 'latin1');
    const ack = buildAck(readRawHeader(m), 'AE', {
      now,
      error: { condition: HL7Error.internal, location: { segment: 'MSH', sequence: 1 } },
    });
    expect(seg(ack, 'ERR')[1]).toBe('MSH^1^^207&Application internal error&HL70357');
    expect(readAck(ack)).toMatchObject({ code: 'AE', controlId: 'X1', errCode: '207' });
  });

  it('keeps non-standard delimiters and escapes its own text with them', () => {
    const m = Buffer.from('MSH#*@!%#APP#FAC#R#RF#2024##ADT*A04#C9#T#2.4\r', 'latin1');
    const h = readRawHeader(m)!;
    expect(h.fieldSep).toBe('#');
    const ack = buildAck(h, 'AR', {
      now,
      controlId: 'Z',
      error: { condition: HL7Error.internal, detail: 'bad # and *' },
    });
    expect(ack.startsWith('MSH#*@!%#R#RF#APP#FAC#')).toBe(true);
    expect(ack).toContain('#ACK*A04*ACK#Z#T#2.4\r');
    expect(ack).toContain('MSA#AR#C9#bad !F! and !S!\r');
  });

  it('answers a message without MSH with standard delimiters and an empty MSA-2', () => {
    const ack = buildAck(readRawHeader(Buffer.from('garbage')), 'AR', {
      now,
      error: { condition: HL7Error.segmentSequence, location: { segment: 'MSH', sequence: 1 } },
    });
    expect(seg(ack, 'MSA')).toEqual(['MSA', 'AR', '', 'Segment sequence error']);
  });

  it('echoes MSH-18 so echoed bytes keep their meaning', () => {
    const h = readRawHeader(msg('||||||UNICODE UTF-8'))!;
    expect(buildAck(h, 'AA', { now, controlId: 'A' })).toContain('|P|2.5.1||||||UNICODE UTF-8\r');
  });
});

describe('MSA-2: the control id echoed whole and byte for byte (no ../shared needed)', () => {
  const withCtl = (ctl: string) =>
    Buffer.from(
      `MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240101||ORU^R01^ORU_R01|${ctl}|P|2.5.1\rPID|1||123^^^HOSP^MR\r`,
      'latin1',
    );
  it.each([
    ['21 characters (one over the 2.3 limit of 20)', 'ABCDEFGHIJ0123456789K'],
    ['a GUID (36)', '3f2504e0-4f89-11d3-9a0c-0305e82c3301'],
    ['199 characters (the 2.5+ ST limit)', 'C'.repeat(100) + '9'.repeat(99)],
    ['escape sequences, kept escaped', 'A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\'],
    ['a component separator inside', 'CTL^7'],
    ['spaces and a dot', ' ID 1.2 '],
  ])('%s', (_what, ctl) => {
    for (const code of ['AA', 'AE', 'AR'] as const) {
      const ack = buildAck(readRawHeader(withCtl(ctl)), code, {
        now,
        controlId: 'A1',
        ...(code === 'AA' ? {} : { error: { condition: HL7Error.internal } }),
      });
      expect(seg(ack, 'MSA')[2]).toBe(ctl);
      expect(readAck(ack)).toMatchObject({ code, controlId: ctl });
    }
  });
  it('in enhanced mode (CA and AA) and in a batch ACK too', () => {
    const ctl = 'X'.repeat(64);
    const h = readRawHeader(Buffer.from(`MSH|^~\\&|A|B|C|D|2024||ADT^A08|${ctl}|P|2.5.1|||AL|AL\r`, 'latin1'));
    const acks = acksFor(h, { status: 'accepted' }, 'auto', now);
    expect(acks.map((a) => readAck(a))).toEqual([
      expect.objectContaining({ code: 'CA', controlId: ctl }),
      expect.objectContaining({ code: 'AA', controlId: ctl }),
    ]);
    const batch = buildBatchAck(
      undefined,
      readRawHeader(Buffer.from('BHS|^~\\&|A|B|C|D|2024||||B1\r'), 'BHS'),
      [acks[1]],
      now,
    );
    expect(batch).toContain(`\rMSA|AA|${ctl}\r`);
  });
});

describe('acksFor (enhanced mode)', () => {
  const h = (m15: string, m16: string) => readRawHeader(msg(`|||${m15}|${m16}`));
  const codes = (acks: string[]) => acks.map((a) => readAck(a)!.code);
  const err = { condition: HL7Error.internal };
  it.each([
    ['AL', 'AL', 'accepted', ['CA', 'AA']],
    ['AL', 'NE', 'accepted', ['CA']],
    ['NE', 'AL', 'accepted', ['AA']],
    ['NE', 'NE', 'accepted', []],
    ['ER', 'ER', 'accepted', []],
    ['ER', 'ER', 'rejected', ['CR', 'AR']],
    ['SU', 'SU', 'accepted', ['CA', 'AA']],
    ['SU', 'AL', 'error', ['AE']],
    ['AL', 'ER', 'error', ['CE', 'AE']],
  ] as const)('MSH-15 %s MSH-16 %s %s -> %j', (m15, m16, status, expected) => {
    const outcome = status === 'accepted' ? { status } : { status, error: err };
    expect(codes(acksFor(h(m15, m16), outcome as never, 'auto'))).toEqual(expected);
  });
  it('ackMode original ignores MSH-15/16', () => {
    expect(codes(acksFor(h('NE', 'NE'), { status: 'accepted' }, 'original'))).toEqual(['AA']);
  });
});

describe('buildBatchAck', () => {
  it('wraps one ACK per message in BHS/BTS referencing the batch control id', () => {
    const bhs = readRawHeader(Buffer.from('BHS|^~\\&|LAB|HOSP|EHR|CLINIC|2024||||BATCH7\r'), 'BHS');
    const a1 = buildAck(readRawHeader(msg()), 'AA', { now });
    const out = buildBatchAck(undefined, bhs, [a1, a1], now);
    const lines = out.split('\r').filter(Boolean);
    expect(lines[0].split('|')[11]).toBe('BATCH7');
    expect(lines[0].split('|').slice(2, 6)).toEqual(['EHR', 'CLINIC', 'LAB', 'HOSP']);
    expect(lines.filter((l) => l.startsWith('MSA'))).toHaveLength(2);
    expect(lines[lines.length - 1]).toBe('BTS|2');
  });
});

describe('ACK details a receiver reads', () => {
  it('timestamps in UTC with zero padding; ACK control ids unique and at most 20 characters', () => {
    expect(hl7Timestamp(new Date(Date.UTC(2024, 8, 7, 6, 5, 4, 3)))).toBe('20240907060504.003+0000');
    expect(hl7Timestamp(new Date(Date.UTC(2024, 11, 31, 23, 59, 59, 999)))).toBe('20241231235959.999+0000');
    const ids = Array.from({ length: 500 }, () => nextAckControlId());
    expect(new Set(ids).size).toBe(500);
    for (const id of ids) expect(id.length).toBeLessThanOrEqual(20);
    expect(ids[0].startsWith('F')).toBe(true);
  });

  it('ERR layout by version: 2.5 and later ERR-2/3/4 (and 2.10 > 2.5), before 2.5 ERR-1; no version: the current layout', () => {
    const err = {
      condition: HL7Error.dataType,
      location: { segment: 'PID', sequence: 1, field: 7, component: 1 },
      severity: 'W' as const,
      detail: 'a|b',
    };
    const at = (v: string) =>
      buildAck(readRawHeader(Buffer.from(`MSH|^~\\&|A|B|C|D|2024||ADT^A08|X|P|${v}\r`, 'latin1')), 'AE', {
        now,
        error: err,
      });
    for (const v of ['2.5', '2.5.1', '2.10', '3.0']) {
      const e = seg(at(v), 'ERR');
      // ERL: segment ^ sequence ^ field ^ field repetition (1 when not given) ^ component (ERL-5)
      expect(e.slice(1, 5)).toEqual(['', 'PID^1^7^1^1', '102^Data type error^HL70357', 'W']);
      expect(e[8]).toBe('a\\F\\b');
    }
    for (const v of ['2.4', '2.3.1', '1.9'])
      expect(seg(at(v), 'ERR')).toEqual(['ERR', 'PID^1^7^102&Data type error&HL70357']);
    expect(seg(at('x'), 'ERR')[3]).toBe('102^Data type error^HL70357');
  });

  it('ERR-2 without field or component is trimmed; without location empty; without detail ERR ends at ERR-4', () => {
    const h = readRawHeader(msg());
    const e1 = seg(
      buildAck(h, 'AR', { now, error: { condition: HL7Error.internal, location: { segment: 'MSH' } } }),
      'ERR',
    );
    expect(e1).toEqual(['ERR', '', 'MSH^1', '207^Application internal error^HL70357', 'E']);
    const e2 = seg(buildAck(h, 'AR', { now, error: { condition: HL7Error.internal } }), 'ERR');
    expect(e2).toEqual(['ERR', '', '', '207^Application internal error^HL70357', 'E']);
    const old = readRawHeader(Buffer.from('MSH|^~\\&|A|B|C|D|2024||ADT^A08|X1|P|2.3\r', 'latin1'));
    expect(seg(buildAck(old, 'AE', { now, error: { condition: HL7Error.internal } }), 'ERR')).toEqual([
      'ERR',
      '^^^207&Application internal error&HL70357',
    ]);
  });

  it('MSA-3: the detail, else the condition text; line breaks become spaces, every delimiter escaped', () => {
    const h = readRawHeader(msg());
    expect(seg(buildAck(h, 'AR', { now, error: { condition: HL7Error.duplicateKey } }), 'MSA')[3]).toBe(
      'Duplicate key identifier',
    );
    const m = seg(
      buildAck(h, 'AR', { now, error: { condition: HL7Error.internal, detail: 'a\r\nb^c~d&e\\f' } }),
      'MSA',
    );
    expect(m[3]).toBe('a b\\S\\c\\R\\d\\T\\e\\E\\f');
    expect(buildAck(h, 'AA', { now, controlId: 'A' })).toContain('\rMSA|AA|CTL-42\r');
  });

  it('no MSH: standard delimiters, version 2.5.1, processing id P, ACK^^ACK', () => {
    const ack = buildAck(undefined, 'AR', { now, controlId: 'Q' });
    expect(ack).toBe('MSH|^~\\&|||||20240102030405.006+0000||ACK^^ACK|Q|P|2.5.1\rMSA|AR|\r');
  });

  it('isEnhanced: original mode never; MSH-15 or MSH-16 valued; neither not', () => {
    const h = (a: string, b: string) => readRawHeader(msg(`|||${a}|${b}`));
    expect(isEnhanced(h('AL', ''), 'auto')).toBe(true);
    expect(isEnhanced(h('', 'AL'), 'auto')).toBe(true);
    expect(isEnhanced(h('', ''), 'auto')).toBe(false);
    expect(isEnhanced(h('AL', 'AL'), 'original')).toBe(false);
    expect(isEnhanced(undefined, 'auto')).toBe(false);
    // an unknown or empty condition in enhanced mode: answered (a sender is never left waiting)
    expect(acksFor(h('XX', ''), { status: 'accepted' }, 'auto', now).map((a) => readAck(a)!.code)).toEqual([
      'CA',
      'AA',
    ]);
    expect(
      acksFor(h('ER', 'ER'), { status: 'error', error: { condition: HL7Error.internal } }, 'auto', now).map(
        (a) => readAck(a)!.code,
      ),
    ).toEqual(['CE', 'AE']);
  });

  it('a file batch: FHS and BHS, BTS count, FTS 1; trailing empty header fields trimmed', () => {
    const fhs = readRawHeader(Buffer.from('FHS|^~\\&|LAB|HOSP|EHR|CLINIC|2024||||F1\r'), 'FHS');
    const a = buildAck(readRawHeader(msg()), 'AA', { now, controlId: 'A' });
    const lines = buildBatchAck(fhs, undefined, [a, a, a], now).split('\r').filter(Boolean);
    expect(lines[0].startsWith('FHS|^~\\&|EHR|CLINIC|LAB|HOSP|20240102030405.006+0000||||')).toBe(true);
    expect(lines[0].split('|')[11]).toBe('F1');
    expect(lines[1].startsWith('BHS|')).toBe(true);
    expect(lines.slice(-2)).toEqual(['BTS|3', 'FTS|1']);
    const noId = buildBatchAck(undefined, readRawHeader(Buffer.from('BHS|^~\\&|A|B|C|D|2024\r'), 'BHS'), [], now).split(
      '\r',
    )[0];
    expect(noId.endsWith('|')).toBe(false);
    expect(noId.split('|')).toHaveLength(11);
  });

  it('readAck: other field separators, a BOM, ERR-1 codes, no MSA', () => {
    expect(readAck('\uFEFFMSH#^~\\&#A#B#C#D#2024##ACK#1#P#2.5\rMSA#AE#C7#oops\r')).toEqual({
      code: 'AE',
      controlId: 'C7',
      text: 'oops',
      errCode: undefined,
    });
    expect(readAck('MSH|^~\\&|A|B|C|D|2024||ACK|1|P|2.3\rMSA|AR|C8\rERR|PID^1^3^101&Required&HL70357\r')!.errCode).toBe(
      '101',
    );
    expect(readAck('MSH|^~\\&|A|B\rPID|1\r')).toBeUndefined();
    expect(readAck(Buffer.from('MSA|AA|Z9\n', 'latin1'))).toMatchObject({ code: 'AA', controlId: 'Z9' });
  });
});

describe('ACK control ids', () => {
  it('F, then upper-case base 36 of fixed width, counting up by one', () => {
    const ids = Array.from({ length: 40 }, () => nextAckControlId());
    for (const id of ids) {
      expect(id).toMatch(/^F[0-9A-Z]+$/);
      expect(id).toHaveLength(ids[0].length);
      expect(id.slice(0, -7)).toBe(ids[0].slice(0, -7));
    }
    for (let i = 1; i < ids.length; i++)
      expect(parseInt(ids[i].slice(-7), 36)).toBe((parseInt(ids[i - 1].slice(-7), 36) + 1) % 36 ** 7);
  });
});

describe('ERR and MSA-3 in unusual headers', () => {
  const head = (enc: string, version: string) =>
    readRawHeader(Buffer.from(`MSH|${enc}|A|B|C|D|2024||ADT^A08|X1|P|${version}\r`, 'latin1'));

  it('an unreadable MSH-12 (V2.3) gets the current layout (ERR-2/3/4)', () => {
    const ack = buildAck(head('^~\\&', 'V2.3'), 'AE', { now, error: { condition: HL7Error.internal } });
    expect(seg(ack, 'ERR')).toEqual(['ERR', '', '', '207^Application internal error^HL70357', 'E']);
  });

  it('an MSH-2 shorter than four characters: the standard separators stand in for the missing ones', () => {
    const detail = 'x~y\\z&w^v';
    const e25 = buildAck(head('^', '2.5'), 'AR', { now, error: { condition: HL7Error.internal, detail } });
    expect(seg(e25, 'MSA')[3]).toBe('x\\R\\y\\E\\z\\T\\w\\S\\v');
    expect(seg(e25, 'ERR')[8]).toBe('x\\R\\y\\E\\z\\T\\w\\S\\v');
    // before 2.5 ERR-1's code is in subcomponents: '&' when MSH-2 names none
    const e23 = buildAck(head('^~\\', '2.3'), 'AE', {
      now,
      error: { condition: HL7Error.internal, location: { segment: 'OBX', sequence: 2, field: 5 } },
    });
    expect(seg(e23, 'ERR')).toEqual(['ERR', 'OBX^2^5^207&Application internal error&HL70357']);
  });

  it('ERL: the field repetition only with a field and a repetition or component (1 when only the component is given)', () => {
    const erl = (location: { segment: string; field?: number; repetition?: number; component?: number }) =>
      seg(buildAck(head('^~\\&', '2.5'), 'AR', { now, error: { condition: HL7Error.dataType, location } }), 'ERR')[2];
    expect(erl({ segment: 'PID', repetition: 2 })).toBe('PID^1');
    expect(erl({ segment: 'PID', field: 3, component: 2 })).toBe('PID^1^3^1^2');
    expect(erl({ segment: 'PID', field: 3, repetition: 2 })).toBe('PID^1^3^2');
    expect(erl({ segment: 'PID', field: 3 })).toBe('PID^1^3');
  });
});

describe('acksFor: what each ACK carries', () => {
  const h = (m15: string, m16: string) => readRawHeader(msg(`|||${m15}|${m16}`));
  const error = { condition: HL7Error.requiredFieldMissing, detail: 'PID-3 empty' };

  it('NE: never, not even for a failure', () => {
    const codes = (m15: string, m16: string, status: 'rejected' | 'error') =>
      acksFor(h(m15, m16), { status, error }, 'auto', now).map((a) => readAck(a)!.code);
    expect(codes('NE', 'NE', 'rejected')).toEqual([]);
    expect(codes('NE', 'AL', 'error')).toEqual(['AE']);
    expect(codes('AL', 'NE', 'rejected')).toEqual(['CR']);
  });

  it('the error and the time go into every ACK: original mode, the accept ACK and the application ACK', () => {
    for (const acks of [
      acksFor(readRawHeader(msg()), { status: 'rejected', error }, 'auto', now),
      acksFor(h('AL', 'AL'), { status: 'rejected', error }, 'auto', now),
    ])
      for (const a of acks) {
        expect(seg(a, 'MSH')[6]).toBe('20240102030405.006+0000');
        expect(seg(a, 'MSA')[3]).toBe('PID-3 empty');
        expect(seg(a, 'ERR')[3]).toBe('101^Required field missing^HL70357');
      }
  });

  it('data errors of a stored message: CA, then an AE with one ERR each -- unless MSH-16 is NE or SU', () => {
    const dataErrors = [
      { condition: HL7Error.dataType, location: { segment: 'PID', field: 7 }, detail: 'PID-7 not a date' },
      { condition: HL7Error.tableValueNotFound, location: { segment: 'PID', field: 8 }, detail: 'PID-8 unknown' },
    ];
    const outcome = { status: 'accepted' as const, dataErrors };
    const acks = acksFor(h('AL', 'AL'), outcome, 'auto', now);
    expect(acks.map((a) => readAck(a)!.code)).toEqual(['CA', 'AE']);
    expect(acks[0]).not.toContain('\rERR');
    const errs = acks[1].split('\r').filter((l) => l.startsWith('ERR'));
    expect(errs.map((l) => l.split('|').slice(2, 4))).toEqual([
      ['PID^1^7', '102^Data type error^HL70357'],
      ['PID^1^8', '103^Table value not found^HL70357'],
    ]);
    expect(seg(acks[1], 'MSA')[3]).toBe('PID-7 not a date');
    expect(seg(acks[1], 'MSH')[6]).toBe('20240102030405.006+0000');
    expect(acksFor(h('AL', 'ER'), outcome, 'auto', now).map((a) => readAck(a)!.code)).toEqual(['CA', 'AE']);
    expect(acksFor(h('AL', 'NE'), outcome, 'auto', now).map((a) => readAck(a)!.code)).toEqual(['CA']);
    expect(acksFor(h('AL', 'SU'), outcome, 'auto', now).map((a) => readAck(a)!.code)).toEqual(['CA']);
    // none: the plain AA
    expect(
      acksFor(h('AL', 'AL'), { status: 'accepted', dataErrors: [] }, 'auto', now).map((a) => readAck(a)!.code),
    ).toEqual(['CA', 'AA']);
  });
});

describe('buildBatchAck: headers', () => {
  const ack = buildAck(readRawHeader(msg()), 'AA', { now, controlId: 'A' });

  it("a BHS's own delimiters; a file header alone stands for the batch header too", () => {
    const bhs = readRawHeader(Buffer.from('BHS#$%!*#LAB#HOSP#EHR#CLINIC#2024####B9\r'), 'BHS');
    const lines = buildBatchAck(undefined, bhs, [ack], now).split('\r');
    expect(lines[0].split('#').slice(0, 6)).toEqual(['BHS', '$%!*', 'EHR', 'CLINIC', 'LAB', 'HOSP']);
    expect(lines[0].split('#')[11]).toBe('B9');
    expect(lines[lines.length - 2]).toBe('BTS#1');
    const fhs = readRawHeader(Buffer.from('FHS#$%!*#LAB#HOSP#EHR#CLINIC#2024####F9\r'), 'FHS');
    const withFile = buildBatchAck(fhs, undefined, [ack], now).split('\r');
    expect(withFile[1].split('#').slice(0, 6)).toEqual(['BHS', '$%!*', 'EHR', 'CLINIC', 'LAB', 'HOSP']);
    expect(withFile[1].split('#')[11]).toBe('F9');
    expect(withFile.slice(-3)).toEqual(['BTS#1', 'FTS#1', '']);
  });

  it('no readable header at all: standard delimiters, empty names, its own control id; every segment ends with CR', () => {
    const out = buildBatchAck(undefined, undefined, [ack, ack], now);
    expect(out.endsWith('BTS|2\r')).toBe(true);
    const bhs = out.split('\r')[0].split('|');
    expect(bhs.slice(0, 10)).toEqual(['BHS', '^~\\&', '', '', '', '', '20240102030405.006+0000', '', '', '']);
    expect(bhs[10]).toMatch(/^F[0-9A-Z]+$/);
    expect(bhs).toHaveLength(11);
  });
});

describe('readAck: odd ACKs', () => {
  it('a BOM (as text or as latin1 bytes) only at the start: one inside the text is kept', () => {
    expect(readAck('MSA|AE|C1|a\uFEFFb')!.text).toBe('a\uFEFFb');
    expect(readAck(Buffer.from('MSA|AE|C1|a \xEF\xBB\xBF b', 'latin1'))!.text).toBe('a \xEF\xBB\xBF b');
    expect(readAck('\uFEFFMSA|AE|C1|a\uFEFFb \xEF\xBB\xBF c')!.text).toBe('a\uFEFFb \xEF\xBB\xBF c');
    expect(readAck(Buffer.from('\xEF\xBB\xBFMSA|AE|C1|a \xEF\xBB\xBF b', 'latin1'))!.text).toBe('a \xEF\xBB\xBF b');
  });

  it('no MSH: standard separators, whatever the first characters', () => {
    expect(readAck('\r\nMSA|AE|X1|bad\rERR|||207^Application internal error^HL70357\r')).toEqual({
      code: 'AE',
      controlId: 'X1',
      text: 'bad',
      errCode: '207',
    });
    // ERR-1 (before 2.5): the code in subcomponents, '&' without an MSH
    expect(readAck('MSA|AE|X1\rERR|MSH^1^^207&Application internal error&HL70357\r')!.errCode).toBe('207');
  });

  it("the MSH's own component and subcomponent separators", () => {
    // an MSH-2 of three characters names no subcomponent separator: '&'
    expect(readAck('MSH|^~\\|A|B|C|D|2024||ACK|1|P|2.3\rMSA|AR|C2\rERR|PID^1^3^101&Required&HL70357\r')!.errCode).toBe(
      '101',
    );
    expect(
      readAck('MSH|$~\\%|A|B|C|D|2024||ACK|1|P|2.5\rMSA|AR|C2\rERR||PID$1$3|101$Required$HL70357\r')!.errCode,
    ).toBe('101');
    expect(readAck('MSH|$~\\%|A|B|C|D|2024||ACK|1|P|2.3\rMSA|AR|C2\rERR|PID$1$3$101%Required%HL70357\r')!.errCode).toBe(
      '101',
    );
  });

  it('missing parts are empty, never an error: MSA alone, an ERR without a code, MSA-1 padded', () => {
    expect(readAck('MSA')).toEqual({ code: '', controlId: '', text: '', errCode: undefined });
    expect(readAck('MSA| AA |C3')).toEqual({ code: 'AA', controlId: 'C3', text: '', errCode: undefined });
    expect(readAck('MSA|AE|C4\rERR')!.errCode).toBeUndefined();
    expect(readAck('MSA|AE|C4\rERR|PID^1\r')!.errCode).toBeUndefined();
  });
});
