import { acksFor, buildAck, buildBatchAck, HL7Error, readAck } from './ack.builder';
import { readRawHeader } from './msh';

const now = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6));
const msg = (extra = '') =>
  Buffer.from(`MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240101||ORU^R01^ORU_R01|CTL-42|P|2.5.1${extra}\rPID|1||123^^^HOSP^MR\r`, 'latin1');
const seg = (ack: string, name: string) => ack.split('\r').find((l) => l.startsWith(name))!.split('|');

describe('buildAck (original mode)', () => {
  it('swaps sender/receiver, echoes trigger, version, processing id and control id', () => {
    const ack = buildAck(readRawHeader(msg()), 'AA', { now, controlId: 'ACK1' });
    expect(ack).toBe('MSH|^~\\&|EHR|CLINIC|LAB|HOSP|20240102030405.006+0000||ACK^R01^ACK|ACK1|P|2.5.1\rMSA|AA|CTL-42\r');
  });

  it('AR carries an ERR with location and a table 0357 code (v2.5+)', () => {
    const ack = buildAck(readRawHeader(msg()), 'AR', { now, error: { condition: HL7Error.requiredFieldMissing, location: { segment: 'PID', sequence: 2, field: 3 }, detail: 'PID-3 empty' } });
    expect(seg(ack, 'MSA').slice(0, 3)).toEqual(['MSA', 'AR', 'CTL-42']);
    const err = seg(ack, 'ERR');
    expect(err[2]).toBe('PID^2^3');
    expect(err[3]).toBe('101^Required field missing^HL70357');
    expect(err[4]).toBe('E');
    expect(readAck(ack)).toMatchObject({ code: 'AR', controlId: 'CTL-42', errCode: '101' });
  });

  it('uses ERR-1 (ELD) before v2.5', () => {
    const m = Buffer.from('MSH|^~\\&|A|B|C|D|2024||ADT^A08|X1|P|2.3\r', 'latin1');
    const ack = buildAck(readRawHeader(m), 'AE', { now, error: { condition: HL7Error.internal, location: { segment: 'MSH', sequence: 1 } } });
    expect(seg(ack, 'ERR')[1]).toBe('MSH^1^^207&Application internal error&HL70357');
    expect(readAck(ack)).toMatchObject({ code: 'AE', controlId: 'X1', errCode: '207' });
  });

  it('keeps non-standard delimiters and escapes its own text with them', () => {
    const m = Buffer.from('MSH#*@!%#APP#FAC#R#RF#2024##ADT*A04#C9#T#2.4\r', 'latin1');
    const h = readRawHeader(m)!;
    expect(h.fieldSep).toBe('#');
    const ack = buildAck(h, 'AR', { now, controlId: 'Z', error: { condition: HL7Error.internal, detail: 'bad # and *' } });
    expect(ack.startsWith('MSH#*@!%#R#RF#APP#FAC#')).toBe(true);
    expect(ack).toContain('#ACK*A04*ACK#Z#T#2.4\r');
    expect(ack).toContain('MSA#AR#C9#bad !F! and !S!\r');
  });

  it('answers a message without MSH with standard delimiters and an empty MSA-2', () => {
    const ack = buildAck(readRawHeader(Buffer.from('garbage')), 'AR', { now, error: { condition: HL7Error.segmentSequence, location: { segment: 'MSH', sequence: 1 } } });
    expect(seg(ack, 'MSA')).toEqual(['MSA', 'AR', '', 'Segment sequence error']);
  });

  it('echoes MSH-18 so echoed bytes keep their meaning', () => {
    const h = readRawHeader(msg('||||||UNICODE UTF-8'))!;
    expect(buildAck(h, 'AA', { now, controlId: 'A' })).toContain('|P|2.5.1||||||UNICODE UTF-8\r');
  });
});

describe('MSA-2: the control id echoed whole and byte for byte (no ../shared needed)', () => {
  const withCtl = (ctl: string) => Buffer.from(`MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240101||ORU^R01^ORU_R01|${ctl}|P|2.5.1\rPID|1||123^^^HOSP^MR\r`, 'latin1');
  it.each([
    ['21 characters (one over the 2.3 limit of 20)', 'ABCDEFGHIJ0123456789K'],
    ['a GUID (36)', '3f2504e0-4f89-11d3-9a0c-0305e82c3301'],
    ['199 characters (the 2.5+ ST limit)', 'C'.repeat(100) + '9'.repeat(99)],
    ['escape sequences, kept escaped', 'A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\'],
    ['a component separator inside', 'CTL^7'],
    ['spaces and a dot', ' ID 1.2 '],
  ])('%s', (_what, ctl) => {
    for (const code of ['AA', 'AE', 'AR'] as const) {
      const ack = buildAck(readRawHeader(withCtl(ctl)), code, { now, controlId: 'A1', ...(code === 'AA' ? {} : { error: { condition: HL7Error.internal } }) });
      expect(seg(ack, 'MSA')[2]).toBe(ctl);
      expect(readAck(ack)).toMatchObject({ code, controlId: ctl });
    }
  });
  it('in enhanced mode (CA and AA) and in a batch ACK too', () => {
    const ctl = 'X'.repeat(64);
    const h = readRawHeader(Buffer.from(`MSH|^~\\&|A|B|C|D|2024||ADT^A08|${ctl}|P|2.5.1|||AL|AL\r`, 'latin1'));
    const acks = acksFor(h, { status: 'accepted' }, 'auto', now);
    expect(acks.map((a) => readAck(a))).toEqual([expect.objectContaining({ code: 'CA', controlId: ctl }), expect.objectContaining({ code: 'AA', controlId: ctl })]);
    const batch = buildBatchAck(undefined, readRawHeader(Buffer.from('BHS|^~\\&|A|B|C|D|2024||||B1\r'), 'BHS'), [acks[1]], now);
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
