import { readAck } from '../ack/ack.builder';
import { adt, field, frame } from '../mllp/__fixtures__/support';
import { sourceHarness } from '../mllp/__fixtures__/source-harness';

// The slow ones of mllp.source.test.ts: many connections at once, and 1,000 messages on one.
const h = sourceHarness();
const { startSource, connect } = h;
afterAll(() => h.close());

describe('MllpSource under load', () => {
  it('many concurrent connections each get their own ACKs', async () => {
    const { ctx, port } = await startSource();
    const cs = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
    cs.forEach((c, i) => {
      for (let k = 0; k < 5; k++) c.write(frame(adt(`K${i}-${k}`)));
    });
    await Promise.all(cs.map((c) => c.waitAcks(5)));
    cs.forEach((c, i) =>
      expect(c.acks.map((a) => readAck(a)!.controlId)).toEqual([0, 1, 2, 3, 4].map((k) => `K${i}-${k}`)),
    );
    expect(ctx.submitted).toHaveLength(100);
  });

  it('1,000 messages on one persistent connection: every ACK is AA with the right MSA-2', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    for (let i = 0; i < 1000; i++) {
      c.write(frame(adt(`P${i}`, { mrn: String(i % 37) })));
      await c.waitAcks(i + 1);
    }
    const wrong = c.acks.filter((a, i) => field(a, 'MSA', 1) !== 'AA' || field(a, 'MSA', 2) !== `P${i}`);
    expect(wrong).toHaveLength(0);
    expect(ctx.submitted).toHaveLength(1000);
  });
});
