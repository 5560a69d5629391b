import { encodeFrame, MllpDeframer } from './framing';

const payloads = (evs: ReturnType<MllpDeframer['push']>) => evs.map((e) => (e.kind === 'frame' ? e.payload.toString('latin1') : `OVERSIZED:${e.size}`));

describe('MllpDeframer', () => {
  it('reassembles a frame split across reads at every byte', () => {
    const f = encodeFrame('MSH|^~\\&|A\rPID|1\r');
    for (let cut = 1; cut < f.length; cut++) {
      const d = new MllpDeframer({ maxMessageSize: 1000 });
      const out = [...d.push(f.subarray(0, cut)), ...d.push(f.subarray(cut))];
      expect(payloads(out)).toEqual(['MSH|^~\\&|A\rPID|1\r']);
    }
  });

  it('returns several frames from one read, in order', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000 });
    const buf = Buffer.concat([encodeFrame('one'), encodeFrame('two'), encodeFrame('three')]);
    expect(payloads(d.push(buf))).toEqual(['one', 'two', 'three']);
  });

  it('discards and counts bytes outside frames', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000 });
    const out = d.push(Buffer.concat([Buffer.from('junk'), encodeFrame('a'), Buffer.from('\r\n'), encodeFrame('b'), Buffer.from('xx')]));
    expect(payloads(out)).toEqual(['a', 'b']);
    expect(d.junkBytes).toBe(8);
  });

  it('keeps a lone FS (not followed by CR) as data, also across reads', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000 });
    const out = [...d.push(Buffer.from([0x0b, 0x41, 0x1c])), ...d.push(Buffer.from([0x42, 0x1c])), ...d.push(Buffer.from([0x0d]))];
    expect(out).toHaveLength(1);
    expect(out[0].kind === 'frame' && [...out[0].payload]).toEqual([0x41, 0x1c, 0x42]);
  });

  it('discards an oversized frame, keeps its head, and carries on', () => {
    const d = new MllpDeframer({ maxMessageSize: 10, headBytes: 4 });
    const out = d.push(Buffer.concat([encodeFrame('0123456789ABCDEF'), encodeFrame('ok')]));
    expect(out[0]).toEqual({ kind: 'oversized', head: Buffer.from('0123'), size: 16 });
    expect(payloads(out.slice(1))).toEqual(['ok']);
    expect(d.buffered).toBe(0);
  });

  it('bounds memory while an oversized frame streams in', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000, headBytes: 100 });
    d.push(Buffer.from([0x0b]));
    for (let i = 0; i < 100; i++) d.push(Buffer.alloc(1000, 0x41));
    expect(d.buffered).toBeLessThanOrEqual(100);
    expect(d.push(Buffer.from([0x1c, 0x0d]))[0]).toMatchObject({ kind: 'oversized', size: 100_000 });
  });

  it('resyncs on a start block inside a frame (truncated frame dropped)', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000 });
    const out = d.push(Buffer.concat([Buffer.from([0x0b]), Buffer.from('partial'), encodeFrame('whole')]));
    expect(payloads(out)).toEqual(['whole']);
    expect(d.truncatedFrames).toBe(1);
  });
});
