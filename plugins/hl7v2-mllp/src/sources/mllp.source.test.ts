import Database from 'better-sqlite3';
import { defineErrors, FerryError } from '@ferry/core';

/** Codes the test's stand-ins for the engine throw (declared as a plugin declares its own). */
const testErrors = defineErrors({
  TRANSIENT_STORE_DOWN: { kind: 'transient', description: 'test store: down' },
  CONFIG_NO_TRANSFORM: { kind: 'config', description: 'test engine: no transform' },
  INPUT_HL7_BAD: { kind: 'input', description: 'test transform: bad HL7' },
  INPUT_BATCH: { kind: 'input', description: 'test transform: bad batch' },
});
import { readAck } from '../ack/ack.builder';
import { adt, field, frame, RawClient, storeCtx, type RecordingCtx } from '../mllp/__fixtures__/support';
// TLS: mllp.source.tls.test.ts; many connections and 1,000 messages on one: mllp.source.load.test.ts.
import { MllpSource } from './mllp.source';
import type { MllpSourceInput } from '../mllp/mllp.schema';

const sources: MllpSource[] = [];
const clients: RawClient[] = [];
const ctxs: RecordingCtx[] = [];

/** A source on a real engine submit and SQLite store (see storeCtx). */
async function startSource(
  cfg: MllpSourceInput = {},
  opts?: Parameters<typeof storeCtx>[1],
): Promise<{ src: MllpSource; ctx: RecordingCtx; port: number }> {
  const ctx = await storeCtx(cfg, opts);
  ctxs.push(ctx);
  const src = new MllpSource(ctx);
  await src.start();
  sources.push(src);
  return { src, ctx, port: src.address()!.port };
}
async function connect(port: number, tlsOpts?: Parameters<typeof RawClient.connect>[1]): Promise<RawClient> {
  const c = await RawClient.connect(port, tlsOpts);
  clients.push(c);
  return c;
}

afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of sources) await s.stop();
  for (const x of ctxs) await x.close();
});

describe('MllpSource on a real socket', () => {
  it('stores then acknowledges AA with MSA-2, swapped MSH, ACK^trigger^ACK and echoed version', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    c.write(frame(adt('C1', { trigger: 'A04', version: '2.4' })));
    const [ack] = await c.waitAcks(1);
    expect(ctx.submitted).toHaveLength(1);
    expect(field(ack, 'MSA', 1)).toBe('AA');
    expect(field(ack, 'MSA', 2)).toBe('C1');
    expect([3, 4, 5, 6].map((n) => field(ack, 'MSH', n))).toEqual(['RECVAPP', 'RECVFAC', 'SENDAPP', 'SENDFAC']);
    expect(field(ack, 'MSH', 9)).toBe('ACK^A04^ACK');
    expect(field(ack, 'MSH', 12)).toBe('2.4');
    const h = ctx.submitted[0].headers!;
    expect(h).toMatchObject({
      messageType: 'ADT^A04',
      trigger: 'A04',
      controlId: 'C1',
      sendingApplication: 'SENDAPP',
      sendingFacility: 'SENDFAC',
      orderingKey: 'HOSP|12345',
    });
    expect(ctx.submitted[0].body.toString('latin1')).toBe(adt('C1', { trigger: 'A04', version: '2.4' }));
  });

  it('no ACK while the commit is held: a second connection holds the SQLite write lock for 300 ms', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    const other = new Database(ctx.file);
    try {
      other.exec('BEGIN IMMEDIATE');
      c.write(frame(adt('HOLD1')));
      await new Promise((r) => setTimeout(r, 300));
      // The source has the frame and the store is waiting for the lock: nothing acknowledged yet.
      expect(ctx.submitCalls).toBe(1);
      expect(c.acks).toEqual([]);
    } finally {
      other.exec('COMMIT');
      other.close();
    }
    const [ack] = await c.waitAcks(1);
    expect(readAck(ack)).toMatchObject({ code: 'AA', controlId: 'HOLD1' });
    expect((await ctx.store.listMessages({ sourceId: ctx.id })).map((m) => m.headers.controlId)).toEqual(['HOLD1']);
  });

  it('MSA-2 over the socket: long control ids and escapes come back whole (raw), and are stored as sent', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    const ids = ['ABCDEFGHIJ0123456789K', 'G'.repeat(199), 'E\\F\\1\\T\\2'];
    c.write(Buffer.concat(ids.map((id) => frame(adt(id)))));
    const acks = await c.waitAcks(3);
    expect(acks.map((a) => field(a, 'MSA', 2))).toEqual(ids);
    expect(acks.map((a) => readAck(a)!.code)).toEqual(['AA', 'AA', 'AA']);
    // Stored byte for byte; the header is the decoded value (\\F\\ is |, \\T\\ is &).
    const stored = await ctx.store.listMessages({ sourceId: ctx.id });
    const bodies = await Promise.all(
      stored.map(async (m) => (await ctx.store.getMessage(m.id, { body: true }))!.body!.toString('latin1')),
    );
    expect(bodies.sort()).toEqual(ids.map((id) => adt(id)).sort());
    expect(stored.map((m) => m.headers.controlId).sort()).toEqual([ids[0], ids[1], 'E|1&2'].sort());
  });

  it('handles a frame split across packets and several frames in one packet, ACKs in order', async () => {
    const { port } = await startSource();
    const c = await connect(port);
    const f = frame(adt('S1'));
    c.write(f.subarray(0, 10));
    await new Promise((r) => setTimeout(r, 30));
    c.write(f.subarray(10, 50));
    await new Promise((r) => setTimeout(r, 30));
    c.write(Buffer.concat([f.subarray(50), Buffer.from('noise'), frame(adt('S2')), frame(adt('S3'))]));
    const acks = await c.waitAcks(3);
    expect(acks.map((a) => field(a, 'MSA', 2))).toEqual(['S1', 'S2', 'S3']);
    expect(acks.every((a) => field(a, 'MSA', 1) === 'AA')).toBe(true);
  });

  it('rejects an oversized frame with AR (control id from its head) and keeps the connection', async () => {
    const { ctx, port, src } = await startSource({ maxMessageSize: 2000 });
    const c = await connect(port);
    const big = adt('BIG1') + 'NTE|1||' + 'x'.repeat(5000) + '\r';
    c.write(Buffer.concat([frame(big), frame(adt('AFTER'))]));
    const acks = await c.waitAcks(2);
    expect(readAck(acks[0])).toMatchObject({ code: 'AR', controlId: 'BIG1', errCode: '207' });
    expect(readAck(acks[1])).toMatchObject({ code: 'AA', controlId: 'AFTER' });
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['AFTER']);
    expect(src.stats()!.oversizedFrames).toBe(1);
    expect(c.closed).toBe(false);
  });

  it('AR with ERR for unparseable input, never storing it', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    c.write(frame('this is not HL7'));
    c.write(frame('MSH|^~\\&|A|B|C|D|2024||ADT^A01|BADSEG|P|2.5\rP!D|1\r'));
    c.write(frame('MSH|^~\\&|A|B|C|D|2024|||NOTYPE|P|2.5\r'));
    const acks = await c.waitAcks(3);
    expect(readAck(acks[0])).toMatchObject({ code: 'AR', controlId: '', errCode: '100' });
    expect(readAck(acks[1])).toMatchObject({ code: 'AR', controlId: 'BADSEG', errCode: '100' });
    expect(field(acks[1], 'ERR', 2)).toBe('???^2');
    expect(readAck(acks[2])).toMatchObject({ code: 'AR', controlId: 'NOTYPE', errCode: '101' });
    expect(field(acks[2], 'ERR', 2)).toBe('MSH^1^9');
    expect(ctx.submitted).toHaveLength(0);
  });

  it('AE when the store fails, AA again once it works', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    ctx.failNext.push(new FerryError(testErrors.codes.TRANSIENT_STORE_DOWN, 'db down', { kind: 'transient' }));
    c.write(frame(adt('E1')));
    await c.waitAcks(1);
    c.write(frame(adt('E1')));
    const acks = await c.waitAcks(2);
    expect(readAck(acks[0])).toMatchObject({ code: 'AE', controlId: 'E1', errCode: '207' });
    expect(readAck(acks[1])).toMatchObject({ code: 'AA', controlId: 'E1' });
    expect(ctx.submitted).toHaveLength(1);
  });

  it('duplicates: ignore -> AA without storing again; reject -> AR 205', async () => {
    const ign = await startSource({ duplicates: { policy: 'ignore', windowMs: 60_000 } });
    const c1 = await connect(ign.port);
    c1.write(Buffer.concat([frame(adt('D1')), frame(adt('D1'))]));
    const a1 = await c1.waitAcks(2);
    expect(a1.map((a) => readAck(a)!.code)).toEqual(['AA', 'AA']);
    expect(ign.ctx.submitted).toHaveLength(1);

    const rej = await startSource({ duplicates: { policy: 'reject', windowMs: 60_000 } });
    const c2 = await connect(rej.port);
    // the duplicate sits between two new messages in the same submit batch: only it is refused
    c2.write(Buffer.concat([frame(adt('R1')), frame(adt('R2')), frame(adt('R1')), frame(adt('R3'))]));
    const a2 = await c2.waitAcks(4);
    expect(a2.map((a) => readAck(a)!.code)).toEqual(['AA', 'AA', 'AR', 'AA']);
    expect(readAck(a2[2])).toMatchObject({ controlId: 'R1', errCode: '205' });
    expect(rej.ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['R1', 'R2', 'R3']);
  });

  it('duplicates: a store result flagged `rejected` (policy not in the source config) -> AR 205', async () => {
    // The engine takes `duplicates` out of the source's config (storeCtx does the same): the source
    // knows a refusal only by the `rejected` flag the engine sets on the store's result.
    const { ctx, port } = await startSource({ duplicates: { policy: 'reject', windowMs: 60_000 } });
    expect((ctx.config as { duplicates?: unknown }).duplicates).toBeUndefined();
    const c = await connect(port);
    c.write(Buffer.concat([frame(adt('F1')), frame(adt('F1')), frame(adt('F2'))]));
    const acks = await c.waitAcks(3);
    expect(acks.map((a) => `${readAck(a)!.code}:${readAck(a)!.errCode ?? ''}`)).toEqual(['AA:', 'AR:205', 'AA:']);
  });

  it('enhanced mode: CA then AA on the same connection per MSH-15/16', async () => {
    const { port } = await startSource();
    const c = await connect(port);
    c.write(frame(adt('EN1', { msh15: 'AL', msh16: 'AL' })));
    c.write(frame(adt('EN2', { msh15: 'NE', msh16: 'AL' })));
    const acks = await c.waitAcks(3);
    expect(acks.map((a) => `${readAck(a)!.code}:${readAck(a)!.controlId}`)).toEqual(['CA:EN1', 'AA:EN1', 'AA:EN2']);
  });

  it('acknowledges a BHS/BTS batch with a batch of ACKs, one per message', async () => {
    const { ctx, port } = await startSource();
    const c = await connect(port);
    const batch =
      'BHS|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101||||B77\r' +
      adt('B1') +
      adt('B2') +
      adt('B3', { mrn: '999' }) +
      'BTS|3\r';
    c.write(frame(batch));
    const [ack] = await c.waitAcks(1);
    const lines = ack.split('\r').filter(Boolean);
    expect(lines[0].startsWith('BHS|')).toBe(true);
    expect(lines[0].split('|')[11]).toBe('B77');
    expect(lines.filter((l) => l.startsWith('MSA')).map((l) => l.split('|').slice(1, 3).join(':'))).toEqual([
      'AA:B1',
      'AA:B2',
      'AA:B3',
    ]);
    expect(lines[lines.length - 1]).toBe('BTS|3');
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['B1', 'B2', 'B3']);
  });

  it('refuses connections beyond maxConnections', async () => {
    const { port, src } = await startSource({ maxConnections: 2 });
    const a = await connect(port);
    const b = await connect(port);
    const third = await connect(port);
    await third.waitClose(2000);
    expect(third.closed).toBe(true);
    a.write(frame(adt('MC1')));
    b.write(frame(adt('MC2')));
    await Promise.all([a.waitAcks(1), b.waitAcks(1)]);
    expect(src.stats()!.connectionsRefused).toBe(1);
  });

  it('closes an idle connection after idleTimeoutMs', async () => {
    const { port } = await startSource({ idleTimeoutMs: 150 });
    const c = await connect(port);
    c.write(frame(adt('I1')));
    await c.waitAcks(1);
    await c.waitClose(2000);
    expect(c.closed).toBe(true);
  });

  it('closes a connection whose frame does not complete within frameTimeoutMs (slow sender)', async () => {
    const { ctx, port } = await startSource({ frameTimeoutMs: 200, idleTimeoutMs: 0 });
    const c = await connect(port);
    c.write(frame(adt('SL1')));
    await c.waitAcks(1);
    const f = frame(adt('SL2'));
    let i = 0;
    const timer = setInterval(() => !c.closed && i < f.length - 2 && c.write(f.subarray(i, ++i)), 20); // trickle, never finishing
    try {
      await c.waitClose(3000);
    } finally {
      clearInterval(timer);
    }
    expect(c.acks).toHaveLength(1);
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['SL1']);
    // a sender repeating start blocks (each abandoning the partial frame) is closed too
    const v = await connect(port);
    const t2 = setInterval(() => !v.closed && v.write(Buffer.from([0x0b, 0x41])), 20);
    try {
      await v.waitClose(3000);
    } finally {
      clearInterval(t2);
    }
  });
});

describe('MllpSource: what each answer and stored message is made of', () => {
  /** A source over the real store with some of its context replaced. */
  async function startWith(patch: (ctx: RecordingCtx) => Partial<RecordingCtx>, cfg: MllpSourceInput = {}) {
    const ctx = await storeCtx(cfg);
    ctxs.push(ctx);
    const src = new MllpSource({ ...ctx, ...patch(ctx) } as RecordingCtx);
    await src.start();
    sources.push(src);
    return { ctx, c: await connect(src.address()!.port) };
  }

  it('stores the raw MSH headers when no codec reads the content type, and the connection it came on', async () => {
    const { ctx, c } = await startWith(() => ({
      extractHeaders: () => {
        throw new FerryError(testErrors.codes.CONFIG_NO_TRANSFORM, 'no transform for application/hl7-v2', {
          kind: 'config',
        });
      },
    }));
    c.write(frame('MSH|^~\\&|LAB^X|HOSP^Y|EHR^Z|CLIN^W|2024||ORU^R01^ORU_R01|RAW1|P|2.3.1^x\rPID|1\r'));
    c.write(frame('MSH|^~\\&|||||2024||ACK|RAW2|P|\r'));
    const acks = await c.waitAcks(2);
    expect(acks.map((a) => readAck(a)!.code)).toEqual(['AA', 'AA']);
    const [m1, m2] = await ctx.store.listMessages({ limit: 10 });
    const byId = Object.fromEntries([m1, m2].map((m) => [m.headers?.controlId, m.headers]));
    expect(byId.RAW1).toEqual(
      expect.objectContaining({
        messageType: 'ORU^R01',
        trigger: 'R01',
        controlId: 'RAW1',
        sendingApplication: 'LAB',
        sendingFacility: 'HOSP',
        receivingApplication: 'EHR',
        receivingFacility: 'CLIN',
        version: '2.3.1',
        mllpConnection: expect.stringMatching(/^\d+$/),
        mllpPeer: expect.stringMatching(/127\.0\.0\.1/),
      }),
    );
    // empty values are left out, not stored as empty strings
    expect(byId.RAW2).toEqual({
      messageType: 'ACK',
      controlId: 'RAW2',
      mllpConnection: expect.any(String),
      mllpPeer: expect.any(String),
    });
  });

  it('a codec refusal keeps its table 0357 code and location in the AR', async () => {
    const { c } = await startWith(() => ({
      extractHeaders: () => {
        throw new FerryError(testErrors.codes.INPUT_HL7_BAD, 'PID-3 is empty', {
          kind: 'input',
          details: { hl7ErrorCode: '101', location: { segment: 'PID', sequence: 2, field: 3 } },
        });
      },
    }));
    c.write(frame(adt('CX1')));
    c.write(frame(adt('CX2')));
    const [a] = await c.waitAcks(2);
    expect(readAck(a)).toMatchObject({ code: 'AR', controlId: 'CX1', errCode: '101', text: 'PID-3 is empty' });
    expect(field(a, 'ERR', 2)).toBe('PID^2^3');
  });

  it('AR 101 naming MSH-10 when the control id is empty (nothing stored)', async () => {
    const { ctx, c } = await startWith(() => ({}));
    c.write(frame('MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\rPID|1\r'));
    const [a] = await c.waitAcks(1);
    expect(readAck(a)).toMatchObject({ code: 'AR', controlId: '', errCode: '101' });
    expect(field(a, 'ERR', 2)).toBe('MSH^1^10');
    expect(ctx.submitCalls).toBe(0);
  });

  it('never AA for a message the store did not report as kept (fewer results than messages): AE', async () => {
    const { c } = await startWith((ctx) => ({
      submit: async (ms, o) => (await ctx.submit(ms, o)).slice(0, ms.length - 1),
    }));
    c.write(Buffer.concat([frame(adt('FR1')), frame(adt('FR2'))]));
    const acks = await c.waitAcks(2);
    expect(acks.map((a) => `${readAck(a)!.code}:${readAck(a)!.controlId}`)).toEqual(['AA:FR1', 'AE:FR2']);
  });

  it('a batch that cannot be split is refused as a whole in a batch ACK (BHS control id, AR 100)', async () => {
    const { ctx, c } = await startWith(() => ({
      split: () => {
        throw new FerryError(testErrors.codes.INPUT_BATCH, 'bad batch', { kind: 'input' });
      },
    }));
    // a byte order mark before the batch header
    c.write(
      frame(
        Buffer.concat([
          Buffer.from([0xef, 0xbb, 0xbf]),
          Buffer.from(`BHS|^~\\&|S|F|R|RF|2024||||BX9\r${adt('BB1')}BTS|1\r`, 'latin1'),
        ]),
      ),
    );
    const [a] = await c.waitAcks(1);
    const lines = a.split('\r').filter(Boolean);
    expect(lines[0].split('|')[11]).toBe('BX9');
    expect(lines.find((l) => l.startsWith('MSA'))).toBe('MSA|AR||batch cannot be split (FERRY_E_INPUT_BATCH)');
    expect(lines[lines.length - 1]).toBe('BTS|1');
    expect(ctx.submitCalls).toBe(0);
  });

  it('enhanced mode: the application ACK is AE naming the fields the dataQuality policy fails, at most 20 ERR segments', async () => {
    const issue = (location: string, more: Record<string, unknown> = {}) => ({
      severity: 'error' as const,
      location,
      code: 'invalid-date',
      text: 'not a date',
      hl7ErrorCode: '102',
      ...more,
    });
    const issues = [
      issue('PID-7'),
      issue('PID-5-1', { repetition: 2, occurrence: 1 }),
      issue('ZPD'),
      issue('patient.dob'),
      { ...issue('PID-8'), severity: 'warning' as const },
      ...Array.from({ length: 30 }, (_, i) => issue(`OBX-${i + 1}`)),
    ];
    const { c } = await startWith(() => ({ dataQualityCanFail: true, dataQualityIssues: async () => issues }));
    c.write(frame(adt('DQ1', { msh15: 'AL', msh16: 'AL' })));
    c.write(frame(adt('DQ2', { msh15: 'AL', msh16: 'NE' })));
    c.write(frame(adt('DQ3')));
    const acks = await c.waitAcks(4);
    expect(acks.map((a) => `${readAck(a)!.code}:${readAck(a)!.controlId}`)).toEqual([
      'CA:DQ1',
      'AE:DQ1',
      'CA:DQ2',
      'AA:DQ3',
    ]);
    const errs = acks[1].split('\r').filter((l) => l.startsWith('ERR'));
    expect(errs).toHaveLength(20);
    expect(errs.slice(0, 4).map((l) => l.split('|').slice(2, 4).join(' '))).toEqual([
      'PID^1^7 102^Data type error^HL70357',
      'PID^1^5^2^1 102^Data type error^HL70357',
      'ZPD^1 102^Data type error^HL70357',
      ' 102^Data type error^HL70357',
    ]);
    expect(errs[0].split('|')[8]).toBe('PID-7: not a date');
    expect(errs[4].split('|')[2]).toBe('OBX^1^1');
  });
});
