import { splitHl7Batch, splitHl7BatchText } from './batch';

/** Each part as latin1 text, so a test reads the exact bytes a message keeps. */
const parts = (s: string | Buffer) =>
  splitHl7Batch(typeof s === 'string' ? Buffer.from(s, 'latin1') : s).map((b) => b.toString('latin1'));
const M1 = 'MSH|^~\\&|A|B|||x||ADT^A01|1|P|2.5\rPID|1||1\r';
const M2 = 'MSH|^~\\&|A|B|||x||ADT^A08|2|P|2.5\rPID|1||2\r';

describe('splitHl7Batch: where each message starts and ends, byte for byte', () => {
  it('a message ends where the next MSH starts (its own segment ends kept), the last at the end of the body', () => {
    expect(parts(M1 + M2)).toEqual([M1, M2]);
    expect(parts(M1 + M2 + M1)).toEqual([M1, M2, M1]);
  });

  it('envelope segments end the message before them and are dropped, wherever they are', () => {
    expect(parts(`FHS|^~\\&|A\rBHS|^~\\&|A\r${M1}${M2}BTS|2\rFTS|1\r`)).toEqual([M1, M2]);
    // a batch header between messages, and a message after the trailer
    expect(parts(`${M1}BHS|^~\\&|B\r${M2}BTS|1\r${M1}`)).toEqual([M1, M2, M1]);
    // each envelope segment on its own ends a message
    for (const env of ['FHS', 'BHS', 'BTS', 'FTS']) expect(parts(`${M1}${env}|x\r${M2}`)).toEqual([M1, M2]);
  });

  it('one message inside an envelope comes back without it (its own bytes, not the whole body)', () => {
    const body = Buffer.from(`BHS|^~\\&|A\r${M1}BTS|1\r`, 'latin1');
    const out = splitHl7Batch(body);
    expect(out.map((b) => b.toString('latin1'))).toEqual([M1]);
    expect(out[0]).not.toBe(body);
  });

  it('an envelope with no message gives no message; a body with neither is returned as it is', () => {
    expect(parts('FHS|^~\\&|A\rBHS|^~\\&|A\rBTS|0\rFTS|1\r')).toEqual([]);
    const junk = Buffer.from('PID|1||1\r', 'latin1');
    expect(splitHl7Batch(junk)).toEqual([junk]);
    expect(splitHl7Batch(junk)[0]).toBe(junk);
    const empty = Buffer.alloc(0);
    expect(splitHl7Batch(empty)[0]).toBe(empty);
  });

  it('lines between a trailer and the next MSH belong to no message and are dropped', () => {
    expect(parts(`${M1}BTS|1\rZZZ|lost\r${M2}`)).toEqual([M1, M2]);
  });

  it('only a segment id at the start of a line counts: MSH inside a field, lower case or a line of two bytes does not split', () => {
    const inField = 'MSH|^~\\&|A|B|||x||ADT^A01|1|P|2.5\rNTE|1||see MSH|x\rNTE|2||BHS and BTS\r';
    expect(parts(inField)).toEqual([inField]);
    expect(parts(`${M1}msh|^~\\&|lower\r`)).toEqual([`${M1}msh|^~\\&|lower\r`]);
    expect(parts(`${M1}${M2}MS`)).toEqual([M1, `${M2}MS`]);
    expect(parts(`${M1}${M2}M`)).toEqual([M1, `${M2}M`]);
  });

  it('only MSH and the four envelope ids count, not ids sharing two of their letters (PSH, MRG, MZH, ZHS, BZS, FTZ...)', () => {
    const lookalikes = ['PSH|1', 'MRG|123', 'MZH|x', 'MSZ|x', 'ZHS|x', 'BZS|x', 'FHZ|x', 'BTZ|x', 'FZS|x', 'XTS|x'];
    const one = `${M1}${lookalikes.join('\r')}\r`;
    expect(parts(one)).toEqual([one]);
    expect(parts(`${M1}${lookalikes.join('\r')}\r${M2}`)).toEqual([`${M1}${lookalikes.join('\r')}\r`, M2]);
  });

  it('LF and CRLF line ends and blank lines: every MSH after one starts a message', () => {
    const a = 'MSH|^~\\&|A|B|||x||ADT^A01|1|P|2.5\nPID|1\n';
    const b = 'MSH|^~\\&|A|B|||x||ADT^A08|2|P|2.5\r\nPID|2\r\n\r\n';
    expect(parts(a + b)).toEqual([a, b]);
    expect(parts(`\r\n\r\n${M1}${M2}`)).toEqual([M1, M2]);
  });

  it('a UTF-8 byte order mark before the first segment is skipped (it is no part of any message)', () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const two = Buffer.concat([bom, Buffer.from(M1 + M2, 'latin1')]);
    expect(parts(two)).toEqual([M1, M2]);
    const one = Buffer.concat([bom, Buffer.from(M1, 'latin1')]);
    expect(splitHl7Batch(one)[0]).toBe(one);
    // the mark then an envelope
    expect(parts(Buffer.concat([bom, Buffer.from(`BHS|x\r${M1}BTS|1\r`, 'latin1')]))).toEqual([M1]);
  });

  it('splitHl7BatchText keeps UTF-8 text whole', () => {
    expect(splitHl7BatchText(`${M1}PID|1||Zoë\r${M2}`)).toEqual([`${M1}PID|1||Zoë\r`, M2]);
  });
});
