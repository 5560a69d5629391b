import fc from 'fast-check';
import { readAck } from '../ack/ack.builder';
import { isEnhanced } from '../ack/ack.builder';
import { readRawHeader } from '../ack/msh';
import { adt, frame, RawClient, storeCtx, type RecordingCtx } from './__fixtures__/support';
import { CR, FS, MllpDeframer, VT } from './framing';
import { MllpSource } from '../sources/mllp.source';

/**
 * Property-based tests: random, truncated and oversized frames and malformed HL7 never crash the
 * listener; every complete frame gets an ACK (with MSA-2 = its control id when one is readable) or
 * a clear close; memory held stays bounded. Runs are bounded to keep the suite fast.
 */
const MAX = 4096;
const noFrameBytes = (b: Uint8Array) => Buffer.from(b.filter((x) => x !== VT && x !== FS));

/** A valid ADT mutated: truncated, bytes deleted/inserted/replaced (never the framing bytes). */
const malformedHl7 = fc
  .tuple(
    fc.string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(...'ABCXYZ0123456789-'.split('')) }),
    fc.array(
      fc.oneof(
        fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
        fc.record({ op: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
        fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 8 }) }),
      ),
      { maxLength: 4 },
    ),
  )
  .map(([id, ops]) => {
    let b = Buffer.from(adt(id), 'latin1');
    for (const o of ops) {
      const at = b.length ? o.at % b.length : 0;
      if (o.op === 'truncate') b = b.subarray(0, at);
      else if (o.op === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + o.n)]);
      else b = Buffer.concat([b.subarray(0, at), noFrameBytes(o.bytes), b.subarray(at)]);
    }
    return b;
  });

const payload = fc.oneof(
  { weight: 3, arbitrary: malformedHl7 },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map(noFrameBytes) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: MAX + 1, max: 3 * MAX })
      .map((n) => Buffer.concat([Buffer.from(adt('BIG'), 'latin1'), Buffer.alloc(n, 0x41)])),
  },
);

describe('MLLP fuzz', () => {
  it('deframer: any chunking of frames + junk yields exactly the frames, memory bounded', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b.filter((x) => x !== VT))),
            payload,
          ),
          { maxLength: 8 },
        ),
        fc.array(fc.integer({ min: 1, max: 512 }), { minLength: 1, maxLength: 10 }),
        (items, cuts) => {
          const stream = Buffer.concat(items.flatMap(([junk, p]) => [junk, frame(p)]));
          const d = new MllpDeframer({ maxMessageSize: MAX, headBytes: 256 });
          const got: string[] = [];
          let i = 0;
          let k = 0;
          let maxBuffered = 0;
          while (i < stream.length) {
            const n = cuts[k++ % cuts.length];
            for (const ev of d.push(stream.subarray(i, i + n)))
              got.push(ev.kind === 'frame' ? ev.payload.toString('hex') : `big:${ev.size}`);
            maxBuffered = Math.max(maxBuffered, d.buffered);
            i += n;
          }
          expect(maxBuffered).toBeLessThanOrEqual(MAX + 256);
          expect(got).toEqual(items.map(([, p]) => (p.length > MAX ? `big:${p.length}` : p.toString('hex'))));
        },
      ),
      { numRuns: 200 },
    );
  });

  describe('listener', () => {
    let src: MllpSource;
    let ctx: RecordingCtx;
    let port: number;
    const clients: RawClient[] = [];
    beforeAll(async () => {
      ctx = await storeCtx({ maxMessageSize: MAX, maxConnections: 500 }, { memory: true });
      src = new MllpSource(ctx);
      await src.start();
      port = src.address()!.port;
    });
    afterAll(async () => {
      for (const c of clients) c.close();
      await src.stop();
      await ctx.close();
    });
    const connect = async () => {
      const c = await RawClient.connect(port);
      clients.push(c);
      return c;
    };

    it('every complete frame gets exactly its ACK, in order, with MSA-2 = its control id', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(payload, { minLength: 1, maxLength: 6 }),
          fc.integer({ min: 1, max: 97 }),
          async (payloads, chunk) => {
            // frames whose own MSH asks for enhanced mode may rightly get 0 or 2 ACKs: keep the count exact by excluding them
            const ps = payloads.filter((p) => !isEnhanced(readRawHeader(p.subarray(0, 256)), 'auto'));
            const c = await connect();
            const bytes = Buffer.concat(ps.map(frame));
            for (let i = 0; i < bytes.length; i += chunk) c.write(bytes.subarray(i, i + chunk));
            const acks = await c.waitAcks(ps.length, 5000);
            expect(c.closed).toBe(false);
            expect(acks).toHaveLength(ps.length);
            // Each ACK is AA, AR or AE; it echoes the frame's control id when the frame has a readable MSH
            // (else any), and refuses (AR) a frame over the size limit.
            const got = acks.map((a) => readAck(a)).map((r) => r && { code: r.code, controlId: r.controlId });
            const anyCode = expect.stringMatching(/^(AA|AR|AE)$/);
            const want = ps.map((p, i) => {
              const msh = readRawHeader(p.subarray(0, 256));
              return { code: p.length > MAX ? 'AR' : anyCode, controlId: msh ? msh.controlId : got[i]?.controlId };
            });
            expect(got).toEqual(want);
            c.close();
          },
        ),
        { numRuns: 100 },
      );
    });

    it('random bytes never crash it; a valid frame afterwards on the same connection is acknowledged', async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }), async (chunks) => {
          const c = await connect();
          for (const ch of chunks) c.write(Buffer.from(ch));
          const id = `OK${n++}`;
          c.write(frame(adt(id)));
          // garbage may itself contain complete frames (answered too): wait for ours
          const deadline = Date.now() + 5000;
          while (!c.acks.some((a) => readAck(a)?.controlId === id) && Date.now() < deadline && !c.closed)
            await new Promise((r) => setTimeout(r, 5));
          expect(c.closed).toBe(false);
          expect(readAck(c.acks[c.acks.length - 1])).toMatchObject({ code: 'AA', controlId: id });
          c.close();
        }),
        { numRuns: 100 },
      );
    });

    it('truncated frames and abrupt closes leave it serving, with nothing buffered', async () => {
      await fc.assert(
        fc.asyncProperty(payload, fc.nat(), async (p, cutAt) => {
          const c = await connect();
          const f = frame(p);
          c.write(f.subarray(0, cutAt % f.length));
          c.close();
        }),
        { numRuns: 40 },
      );
      await new Promise((r) => setTimeout(r, 100));
      const c = await connect();
      c.write(frame(adt('ALIVE')));
      expect(readAck((await c.waitAcks(1))[0])).toMatchObject({ code: 'AA', controlId: 'ALIVE' });
      c.close();
      await new Promise((r) => setTimeout(r, 50));
      expect(src.stats()!.bufferedBytes).toBe(0);
    });

    it('a peer that never reads its ACKs is throttled, not buffered without bound', async () => {
      // Tiny junk frames answered by ~170-byte AR ACKs: a 40x amplification if the listener kept
      // reading while the peer does not read.
      const c = await connect();
      c.socket.pause(); // never read
      const tiny = Buffer.alloc(64 * 1024);
      for (let i = 0; i < tiny.length; i += 4) tiny.set([VT, 0x58, FS, CR], i);
      for (let i = 0; i < 8; i++) c.socket.write(tiny); // 131,072 frames; ~22 MB of ACKs
      await new Promise((r) => setTimeout(r, 1500));
      const st = src.stats()!;
      expect(st.pendingWriteBytes).toBeLessThanOrEqual(1024 * 1024);
      expect(st.bufferedBytes).toBeLessThanOrEqual(1024 * 1024);
      c.close();
    });

    it('memory stays bounded while oversized frames stream in', async () => {
      const c = await connect();
      c.write(Buffer.from([VT]));
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      for (let i = 0; i < 160; i++) c.write(chunk); // 10 MB into a 4 KB limit
      await new Promise((r) => setTimeout(r, 200));
      expect(src.stats()!.bufferedBytes).toBeLessThanOrEqual(MAX + 4096);
      c.write(Buffer.from([FS, CR]));
      const [ack] = await c.waitAcks(1);
      expect(readAck(ack)!.code).toBe('AR');
      c.close();
    });
  });
});
