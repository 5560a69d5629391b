import { encodeFrame, MllpDeframer } from './framing';

const payloads = (evs: ReturnType<MllpDeframer['push']>) =>
  evs.map((e) => (e.kind === 'frame' ? e.payload.toString('latin1') : `OVERSIZED:${e.size}`));

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
    const out = d.push(
      Buffer.concat([Buffer.from('junk'), encodeFrame('a'), Buffer.from('\r\n'), encodeFrame('b'), Buffer.from('xx')]),
    );
    expect(payloads(out)).toEqual(['a', 'b']);
    expect(d.junkBytes).toBe(8);
  });

  it('keeps a lone FS (not followed by CR) as data, also across reads', () => {
    const d = new MllpDeframer({ maxMessageSize: 1000 });
    const out = [
      ...d.push(Buffer.from([0x0b, 0x41, 0x1c])),
      ...d.push(Buffer.from([0x42, 0x1c])),
      ...d.push(Buffer.from([0x0d])),
    ];
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

describe('MllpDeframer limits and bookkeeping (what the listener relies on)', () => {
  it('accepts a payload of exactly maxMessageSize; one byte more is oversized', () => {
    const d = new MllpDeframer({ maxMessageSize: 5, headBytes: 3 });
    expect(d.push(encodeFrame('12345'))).toEqual([{ kind: 'frame', payload: Buffer.from('12345') }]);
    expect(d.push(encodeFrame('123456'))).toEqual([{ kind: 'oversized', head: Buffer.from('123'), size: 6 }]);
    // the limit is on the whole payload, also when it arrives in pieces
    expect(d.push(Buffer.from('\x0b12'))).toEqual([]);
    expect(d.push(Buffer.from('345'))).toEqual([]);
    expect(d.push(Buffer.from('\x1c\x0d'))).toEqual([{ kind: 'frame', payload: Buffer.from('12345') }]);
    expect(d.push(Buffer.from('\x0b123'))).toEqual([]);
    expect(d.push(Buffer.from('456\x1c\x0d'))).toEqual([{ kind: 'oversized', head: Buffer.from('123'), size: 6 }]);
    expect([d.frames, d.oversizedFrames]).toEqual([2, 2]);
  });

  it('keeps the first 4096 bytes of an oversized frame by default (enough for its MSH)', () => {
    const big = Buffer.alloc(10_000, 0x41);
    big.write('MSH|', 0, 'latin1');
    const [ev] = new MllpDeframer({ maxMessageSize: 5000 }).push(encodeFrame(big));
    expect(ev).toEqual({ kind: 'oversized', head: big.subarray(0, 4096), size: 10_000 });
  });

  it('counts frames and the junk around a truncated frame; reports buffered bytes and midFrame', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    expect(d.push(Buffer.from('no frame here'))).toEqual([]);
    expect(d.junkBytes).toBe(13);
    expect(d.midFrame).toBe(false);
    d.push(Buffer.from('\x0bABCD'));
    expect(d.midFrame).toBe(true);
    expect(d.buffered).toBe(4);
    // a new start block: the 4 buffered bytes and the 2 before the VT are junk
    const out = d.push(Buffer.from('EF\x0bok\x1c\x0d'));
    expect(payloads(out)).toEqual(['ok']);
    expect(d.junkBytes).toBe(13 + 6);
    expect([d.frames, d.truncatedFrames, d.oversizedFrames]).toEqual([1, 1, 0]);
    expect(d.midFrame).toBe(false);
    expect(d.buffered).toBe(0);
  });

  it('a start block in the read after a lone FS: the truncated frame is dropped, the next one whole', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    expect(d.push(Buffer.from('\x0bAB\x1c'))).toEqual([]);
    expect(payloads(d.push(Buffer.from('\x0bCD\x1c\x0d')))).toEqual(['CD']);
    expect(d.truncatedFrames).toBe(1);
  });

  it('an oversized frame whose end block is split across reads is still reported once', () => {
    const d = new MllpDeframer({ maxMessageSize: 3, headBytes: 2 });
    expect(d.push(Buffer.from('\x0bABCDE\x1c'))).toEqual([]);
    expect(d.buffered).toBe(2);
    expect(d.push(Buffer.from('\x0d'))).toEqual([{ kind: 'oversized', head: Buffer.from('AB'), size: 5 }]);
    expect(payloads(d.push(encodeFrame('ok')))).toEqual(['ok']);
  });

  it('reset drops a partial frame and says how many bytes were lost; nothing is lost between frames', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    expect(d.reset()).toBe(0);
    d.push(Buffer.from('\x0bABC\x1c'));
    expect(d.reset()).toBe(3);
    expect(d.midFrame).toBe(false);
    expect(d.buffered).toBe(0);
    // the pending FS went with it: a CR now is junk, not the end of a frame
    expect(d.push(Buffer.from('\x0d'))).toEqual([]);
    expect(d.frames).toBe(0);
    expect(payloads(d.push(encodeFrame('next')))).toEqual(['next']);
    // an oversized frame reset mid-way: the next frame is not oversized
    const o = new MllpDeframer({ maxMessageSize: 3 });
    o.push(Buffer.from('\x0bABCDEF'));
    o.reset();
    expect(o.push(encodeFrame('ok'))).toEqual([{ kind: 'frame', payload: Buffer.from('ok') }]);
  });

  it('a frame of several reads comes back as one payload with every byte in order', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    d.push(Buffer.from('\x0bMSH|'));
    d.push(Buffer.from('^~\\&|'));
    const [ev] = d.push(Buffer.from('A\rPID\r\x1c\x0d'));
    expect(ev).toEqual({ kind: 'frame', payload: Buffer.from('MSH|^~\\&|A\rPID\r') });
  });

  it('encodeFrame writes a string in latin1, byte for byte', () => {
    expect([...encodeFrame('\xe9A')]).toEqual([0x0b, 0xe9, 0x41, 0x1c, 0x0d]);
    expect([...encodeFrame(Buffer.from([1, 2]))]).toEqual([0x0b, 1, 2, 0x1c, 0x0d]);
  });

  it('FS not followed by CR inside one read is data, as many times as it comes', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    expect([
      ...(d.push(Buffer.from([0x0b, 0x41, 0x1c, 0x42, 0x1c, 0x43, 0x1c, 0x0d]))[0] as { payload: Buffer }).payload,
    ]).toEqual([0x41, 0x1c, 0x42, 0x1c, 0x43]);
    // a lone FS ending one read, then two more lone ones in the next: each kept once
    d.push(Buffer.from([0x0b, 0x41, 0x1c]));
    expect([
      ...(d.push(Buffer.from([0x42, 0x1c, 0x43, 0x1c, 0x44, 0x1c, 0x0d]))[0] as { payload: Buffer }).payload,
    ]).toEqual([0x41, 0x1c, 0x42, 0x1c, 0x43, 0x1c, 0x44]);
  });

  it('the junk of a frame truncated by a start block in the same read counts only its own bytes', () => {
    const d = new MllpDeframer({ maxMessageSize: 100 });
    expect(payloads(d.push(Buffer.from('xy\x0bAB\x0bok\x1c\x0d', 'latin1')))).toEqual(['ok']);
    // 'xy' before the first frame, 'AB' of the truncated one
    expect(d.junkBytes).toBe(4);
  });
});
