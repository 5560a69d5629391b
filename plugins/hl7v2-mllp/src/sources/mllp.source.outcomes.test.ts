import { PassThrough } from 'node:stream';
import { createLogger, defineErrors, FerryError } from '@ferry/core';
import { readAck } from '../ack/ack.builder';
import { adt, frame, RawClient, storeCtx, type RecordingCtx } from '../mllp/__fixtures__/support';
import { MllpSource } from './mllp.source';
import type { MllpSourceInput } from '../mllp/mllp.schema';

/**
 * What the source makes of the store's answers, beyond the ACK codes of mllp.source.test.ts: the
 * ACK each stored message keeps (recordAcks), a refusal of several messages sorted out one by one,
 * and what it logs (levels and fields; never the message).
 */
const testErrors = defineErrors({
  INPUT_REFUSED_TEST: { kind: 'input', description: 'test engine: refused' },
  INPUT_DUPLICATE_TEST: { kind: 'input', description: 'test engine: a duplicate refused' },
});

const sources: MllpSource[] = [];
const clients: RawClient[] = [];
const ctxs: RecordingCtx[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of sources) await s.stop();
  for (const x of ctxs) await x.close();
});

type Entry = { level: string; message: string; [k: string]: unknown };

/** A source over the real store with some of its context replaced, logging at debug into `logs`. */
async function startWith(
  patch: (ctx: RecordingCtx) => Partial<RecordingCtx>,
  cfg: MllpSourceInput = {},
  storeOpts?: Parameters<typeof storeCtx>[1],
) {
  const ctx = await storeCtx(cfg, storeOpts);
  ctxs.push(ctx);
  const logs: Entry[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Entry);
  });
  const recorded: { messageId: string; ack: string }[] = [];
  const recordCalls: number[] = [];
  const recordAcks = (s: { messageId: string; ack: string }[]) =>
    void (recordCalls.push(s.length), recorded.push(...s));
  const src = new MllpSource({
    ...ctx,
    logger: createLogger({ level: 'debug' }, stream),
    recordAcks,
    ...patch(ctx),
  } as RecordingCtx);
  await src.start();
  sources.push(src);
  const c = await RawClient.connect(src.address()!.port);
  clients.push(c);
  return { ctx, c, logs, recorded, recordCalls };
}

const codeOf = (a: string) => `${readAck(a)!.code}:${readAck(a)!.controlId}`;
const settle = () => new Promise((r) => setTimeout(r, 50));

describe('MllpSource: the ACK each stored message keeps', () => {
  it('recorded for a message stored now, with its id; not for a duplicate acknowledged again nor for a refused one', async () => {
    const { ctx, c, recorded, recordCalls } = await startWith(() => ({}), {
      duplicates: { policy: 'ignore', windowMs: 60_000 },
    });
    c.write(frame(adt('R1')));
    await c.waitAcks(1);
    c.write(frame(adt('R1'))); // the same again: AA, not stored
    await c.waitAcks(2);
    c.write(frame('MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\rPID|1\r')); // no control id: AR
    const acks = await c.waitAcks(3);
    expect(acks.map(codeOf)).toEqual(['AA:R1', 'AA:R1', 'AR:']);
    const [stored] = await ctx.store.listMessages({ limit: 10 });
    expect(recorded).toEqual([{ messageId: stored.id, ack: acks[0] }]);
    expect(recordCalls).toEqual([1]); // not called with nothing to record
  });

  it('enhanced mode: both ACKs of a message, one per line; a batch: each message its own ACK', async () => {
    const { ctx, c, recorded } = await startWith(() => ({}));
    c.write(frame(adt('E1', { msh15: 'AL', msh16: 'AL' })));
    const acks = await c.waitAcks(2);
    expect(acks.map(codeOf)).toEqual(['CA:E1', 'AA:E1']);
    expect(recorded).toHaveLength(1);
    expect(recorded[0].ack).toBe(acks.join('\n'));
    recorded.length = 0;
    c.write(frame(`BHS|^~\\&|S|F|R|RF|2024||||BX1\r${adt('BA1')}${adt('BA2')}BTS|2\r`));
    const [batchAck] = (await c.waitAcks(3)).slice(2);
    const ids = Object.fromEntries(
      (await ctx.store.listMessages({ limit: 10 })).map((m) => [m.headers?.controlId, m.id]),
    );
    expect(recorded.map((r) => r.messageId)).toEqual([ids.BA1, ids.BA2]);
    expect(recorded.map((r) => readAck(r.ack)?.code)).toEqual(['AA', 'AA']);
    expect(recorded.map((r) => readAck(r.ack)?.controlId)).toEqual(['BA1', 'BA2']);
    // each one's ACK is inside the batch ACK sent
    for (const r of recorded) expect(batchAck).toContain(r.ack.split('\r').find((l) => l.startsWith('MSA'))!);
  });

  it('a duplicate stored again (policy accept) is stored now: its ACK is kept too', async () => {
    const { ctx, c, recorded } = await startWith(() => ({}), { duplicates: { policy: 'accept', windowMs: 60_000 } });
    c.write(frame(adt('D1')));
    await c.waitAcks(1);
    c.write(frame(adt('D1')));
    expect((await c.waitAcks(2)).map(codeOf)).toEqual(['AA:D1', 'AA:D1']);
    expect(ctx.submitted).toHaveLength(2);
    expect(recorded).toHaveLength(2);
    expect(new Set(recorded.map((r) => r.messageId)).size).toBe(2);
  });
});

describe('MllpSource: refusals of the store, sorted out', () => {
  it('an input refusal of a submit of several messages is asked again one by one: only the refused one is AR (207, its code)', async () => {
    const calls: string[][] = [];
    const { ctx, c, logs } = await startWith((x) => ({
      submit: async (ms, o) => {
        calls.push(ms.map((m) => String(m.headers?.controlId)));
        if (ms.some((m) => m.headers?.controlId === 'BAD'))
          throw new FerryError(testErrors.codes.INPUT_REFUSED_TEST, 'not for us', { kind: 'input' });
        return x.submit(ms, o);
      },
    }));
    c.write(Buffer.concat([frame(adt('OK1')), frame(adt('BAD')), frame(adt('OK2'))]));
    const acks = await c.waitAcks(3);
    expect(acks.map(codeOf)).toEqual(['AA:OK1', 'AR:BAD', 'AA:OK2']);
    expect(calls).toEqual([['OK1', 'BAD', 'OK2'], ['OK1'], ['BAD'], ['OK2']]);
    expect(readAck(acks[1])).toMatchObject({ errCode: '207', text: 'message refused (FERRY_E_INPUT_REFUSED_TEST)' });
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['OK1', 'OK2']);
    await settle();
    const refused = logs.filter((l) => l.message === 'message refused by the store');
    expect(refused).toEqual([
      expect.objectContaining({
        level: 'info',
        source: 'mllp-test',
        controlId: 'BAD',
        errorCode: 'FERRY_E_INPUT_REFUSED_TEST',
      }),
    ]);
  });

  it('a refusal whose code says duplicate is AR 205 naming MSH-10, logged as a duplicate rejected', async () => {
    const { c, logs } = await startWith(() => ({
      submit: async () => {
        throw new FerryError(testErrors.codes.INPUT_DUPLICATE_TEST, 'seen', { kind: 'input' });
      },
    }));
    c.write(frame(adt('DU1')));
    const [a] = await c.waitAcks(1);
    expect(readAck(a)).toMatchObject({
      code: 'AR',
      controlId: 'DU1',
      errCode: '205',
      text: 'duplicate message control id',
    });
    expect(
      a
        .split('\r')
        .find((l) => l.startsWith('ERR'))!
        .split('|')[2],
    ).toBe('MSH^1^10');
    await settle();
    expect(logs.filter((l) => l.message === 'duplicate rejected')).toEqual([
      expect.objectContaining({ level: 'info', controlId: 'DU1', errorCode: 'FERRY_E_INPUT_DUPLICATE_TEST' }),
    ]);
  });

  it('a store outage fails the whole submit (not retried one by one): AE for each, logged once at error, then recovered at info', async () => {
    const { ctx, c, logs } = await startWith(() => ({}));
    ctx.failNext.push(new FerryError('TRANSIENT_STORE_DOWN' as never, 'down', { kind: 'transient', retryable: true }));
    c.write(Buffer.concat([frame(adt('O1')), frame(adt('O2'))]));
    const acks = await c.waitAcks(2);
    expect(acks.map(codeOf)).toEqual(['AE:O1', 'AE:O2']);
    expect(readAck(acks[0])!.text).toBe('message not stored, retry later (FERRY_E_TRANSIENT_STORE_DOWN)');
    expect(ctx.submitCalls).toBe(1);
    c.write(frame(adt('O3')));
    expect((await c.waitAcks(3)).map(codeOf)[2]).toBe('AA:O3');
    await settle();
    const outage = logs.filter((l) => String(l.message).startsWith('message not stored: answered AE'));
    expect(outage.map((l) => [l.level, l.message, l.controlId])).toEqual([
      ['error', 'message not stored: answered AE', 'O1'],
      ['debug', 'message not stored: answered AE', 'O2'],
      ['info', 'message not stored: answered AE: recovered', undefined],
    ]);
    expect(outage[0]).toMatchObject({
      source: 'mllp-test',
      errorCode: 'FERRY_E_TRANSIENT_STORE_DOWN',
      errorKind: 'transient',
    });
    expect(outage[2]).toMatchObject({ failures: 2 });
    // nothing of the message itself at info and above
    for (const l of logs.filter((x) => x.level !== 'debug')) expect(JSON.stringify(l)).not.toMatch(/PID\||HOSP\|12345/);
  });

  it('duplicates the store refuses (reject): AR 205 logged at info with the first copy; one acknowledged again: logged at debug only', async () => {
    const rej = await startWith(() => ({}), { duplicates: { policy: 'reject', windowMs: 60_000 } });
    rej.c.write(frame(adt('X1')));
    await rej.c.waitAcks(1);
    rej.c.write(frame(adt('X1')));
    expect((await rej.c.waitAcks(2)).map(codeOf)).toEqual(['AA:X1', 'AR:X1']);
    const ign = await startWith(() => ({}), { duplicates: { policy: 'ignore', windowMs: 60_000 } });
    ign.c.write(frame(adt('Y1')));
    await ign.c.waitAcks(1);
    ign.c.write(frame(adt('Y1')));
    expect((await ign.c.waitAcks(2)).map(codeOf)).toEqual(['AA:Y1', 'AA:Y1']);
    await settle();
    const [first] = await ign.ctx.store.listMessages({ limit: 1 });
    const acked = ign.logs.filter((l) => l.message === 'duplicate acknowledged');
    expect(acked).toEqual([
      expect.objectContaining({ level: 'debug', controlId: 'Y1', stored: false, duplicateOf: first.id }),
    ]);
    expect(ign.logs.filter((l) => l.message === 'duplicate rejected')).toEqual([]);
    expect(rej.logs.filter((l) => l.level !== 'debug' && /duplicate/.test(String(l.message)))).toHaveLength(1);
  });

  it('a source given the reject policy in its own config refuses a duplicate the store did not store, even unflagged', async () => {
    const { c, ctx } = await startWith(
      (x) => ({
        // the store's answer without its `rejected` flag (an older engine)
        submit: async (ms, o) =>
          (await x.submit(ms, o)).map((r) => ({
            id: r.id,
            duplicate: r.duplicate,
            duplicateOf: r.duplicateOf,
            stored: r.stored,
          })),
      }),
      { duplicates: { policy: 'reject', windowMs: 60_000 } },
      { keepDuplicatesInConfig: true },
    );
    c.write(frame(adt('Z1')));
    await c.waitAcks(1);
    // two in one submit: the engine answers (flags) rather than throws, and the flag is stripped above
    c.write(Buffer.concat([frame(adt('Z1')), frame(adt('Z2'))]));
    const acks = await c.waitAcks(3);
    expect(acks.map(codeOf)).toEqual(['AA:Z1', 'AR:Z1', 'AA:Z2']);
    expect(readAck(acks[1])!.errCode).toBe('205');
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['Z1', 'Z2']);
  });

  it('a duplicate the store flags as refused (in a submit of several): AR 205 naming MSH-10, logged at info with its first copy', async () => {
    const { c, ctx, logs } = await startWith(() => ({}), { duplicates: { policy: 'reject', windowMs: 60_000 } });
    c.write(Buffer.concat([frame(adt('F1')), frame(adt('F1'))]));
    const acks = await c.waitAcks(2);
    expect(acks.map(codeOf)).toEqual(['AA:F1', 'AR:F1']);
    expect(readAck(acks[1])).toMatchObject({ errCode: '205', text: 'duplicate message control id' });
    expect(
      acks[1]
        .split('\r')
        .find((l) => l.startsWith('ERR'))!
        .split('|')[2],
    ).toBe('MSH^1^10');
    await settle();
    const [first] = await ctx.store.listMessages({ limit: 1 });
    expect(logs.filter((l) => l.message === 'duplicate rejected')).toEqual([
      expect.objectContaining({ level: 'info', source: 'mllp-test', controlId: 'F1', duplicateOf: first.id }),
    ]);
  });
});

describe('MllpSource: which ACK mode', () => {
  const issues = async () => [
    { severity: 'error' as const, location: 'PID-7', code: 'invalid-date', text: 'not a date', hl7ErrorCode: '102' },
  ];

  it('ackMode original: one AA even when MSH-15/16 ask for enhanced mode', async () => {
    const { c } = await startWith(() => ({}), { ackMode: 'original' });
    c.write(frame(adt('M1', { msh15: 'AL', msh16: 'AL' })));
    const acks = await c.waitAcks(1);
    await settle();
    expect(c.acks.map(codeOf)).toEqual(['AA:M1']);
    expect(acks).toHaveLength(1);
  });

  it('data-quality issues change the application ACK only when the policy can fail the message', async () => {
    const { c } = await startWith(() => ({ dataQualityCanFail: false, dataQualityIssues: issues }));
    c.write(frame(adt('Q1', { msh15: 'AL', msh16: 'AL' })));
    expect((await c.waitAcks(2)).map(codeOf)).toEqual(['CA:Q1', 'AA:Q1']);
  });

  it('a batch is acknowledged in original mode, one AA per message, whatever their MSH-15/16 and data quality', async () => {
    const { c, logs } = await startWith(() => ({ dataQualityCanFail: true, dataQualityIssues: issues }));
    c.write(
      frame(
        `BHS|^~\\&|S|F|R|RF|2024||||BQ\r${adt('BQ1', { msh15: 'AL', msh16: 'AL' })}${adt('BQ2', { msh15: 'AL', msh16: 'AL' })}BTS|2\r`,
      ),
    );
    const [a] = await c.waitAcks(1);
    await settle();
    expect(c.acks).toHaveLength(1);
    const msa = a.split('\r').filter((l) => l.startsWith('MSA'));
    expect(msa).toEqual(['MSA|AA|BQ1', 'MSA|AA|BQ2']);
    expect(a).not.toMatch(/\rERR\|/);
    // nor looked at for an application ACK that is not sent
    expect(logs.filter((l) => String(l.message).startsWith('application ACK AE'))).toEqual([]);
  });

  it('a submit that throws something not a FerryError: AE (INTERNAL_SUBMIT), retried by the sender', async () => {
    const { c } = await startWith(() => ({
      submit: async () => {
        throw new TypeError('store gone');
      },
    }));
    c.write(frame(adt('T1')));
    const [a] = await c.waitAcks(1);
    expect(readAck(a)).toMatchObject({
      code: 'AE',
      controlId: 'T1',
      text: 'message not stored, retry later (FERRY_E_INTERNAL_SUBMIT)',
    });
  });
});

describe('MllpSource: what a frame is refused for before the store, and what it logs', () => {
  const ackText = (a: string) => ({ ...readAck(a)!, err2: errField(a, 2), err8: errField(a, 8) });
  const errField = (a: string, n: number) =>
    a
      .split('\r')
      .find((l) => l.startsWith('ERR'))
      ?.split('|')[n] ?? '';
  const logged = (logs: Entry[], message: string) => logs.filter((l) => l.message === message);

  it('a frame over maxMessageSize: AR naming its size and the limit; logged at warn with its control id and size, not its content', async () => {
    const { ctx, c, logs } = await startWith(() => ({}), { maxMessageSize: 400 });
    const big = adt('BIG1', { mrn: 'MRN-SECRET' }) + `NTE|1||${'x'.repeat(600)}\r`;
    c.write(frame(big));
    const [a] = await c.waitAcks(1);
    expect(ackText(a)).toMatchObject({
      code: 'AR',
      controlId: 'BIG1',
      text: `message of ${Buffer.byteLength(big)} bytes exceeds the maximum of 400 bytes`,
    });
    expect(logged(logs, 'message over the size limit rejected')).toEqual([
      expect.objectContaining({ level: 'warn', controlId: 'BIG1', bytes: Buffer.byteLength(big), connection: 1 }),
    ]);
    expect(JSON.stringify(logs)).not.toMatch(/MRN-SECRET|DOE/);
    expect(ctx.submitCalls).toBe(0);
  });

  it('no MSH, an empty MSH-9, an empty MSH-10: AR each with its reason and location', async () => {
    const { ctx, c } = await startWith(() => ({}));
    c.write(frame('PID|1||123\r'));
    c.write(frame('MSH|^~\\&|A|B|C|D|2024|||N9|P|2.5\rPID|1\r'));
    c.write(frame('MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\rPID|1\r'));
    const acks = (await c.waitAcks(3)).map(ackText);
    expect(acks).toEqual([
      expect.objectContaining({
        code: 'AR',
        text: 'the message does not start with a valid MSH segment',
        err2: 'MSH^1',
      }),
      expect.objectContaining({ code: 'AR', controlId: 'N9', text: 'MSH-9 (message type) is empty', err2: 'MSH^1^9' }),
      expect.objectContaining({ code: 'AR', text: 'MSH-10 (message control id) is empty', err2: 'MSH^1^10' }),
    ]);
    expect(ctx.submitCalls).toBe(0);
  });

  it('a message the codec cannot read: AR with its reason, at MSH-1 when the codec names no place; logged at info with its error code', async () => {
    const { ctx, c, logs } = await startWith(() => ({
      extractHeaders: () => {
        throw new FerryError(testErrors.codes.INPUT_REFUSED_TEST, 'unreadable here', { kind: 'input' });
      },
    }));
    c.write(frame(adt('UR1')));
    const [a] = await c.waitAcks(1);
    expect(ackText(a)).toMatchObject({ code: 'AR', controlId: 'UR1', text: 'unreadable here', err2: 'MSH^1' });
    expect(logged(logs, 'message rejected: not readable HL7 v2')).toEqual([
      expect.objectContaining({
        level: 'info',
        controlId: 'UR1',
        errorCode: 'FERRY_E_INPUT_REFUSED_TEST',
        connection: 1,
      }),
    ]);
    expect(ctx.submitCalls).toBe(0);
  });

  it('a batch that cannot be split: AR at BHS-1, logged at info with the error code', async () => {
    const { c, logs } = await startWith(() => ({
      split: () => {
        throw new FerryError(testErrors.codes.INPUT_REFUSED_TEST, 'bad batch', { kind: 'input' });
      },
    }));
    c.write(frame(`BHS|^~\\&|S|F|R|RF|2024||||BY1\r${adt('BY2')}BTS|1\r`));
    const [a] = await c.waitAcks(1);
    expect(errField(a, 2)).toBe('BHS^1');
    expect(logged(logs, 'batch rejected: cannot be split')).toEqual([
      expect.objectContaining({ level: 'info', errorCode: 'FERRY_E_INPUT_REFUSED_TEST', connection: 1 }),
    ]);
  });

  it('an FHS file batch is split into its messages, each stored, and acknowledged in a batch echoing the BHS control id', async () => {
    const { ctx, c } = await startWith(() => ({}));
    c.write(
      frame(`FHS|^~\\&|S|F|R|RF|2024||||FX1\rBHS|^~\\&|S|F|R|RF|2024||||BX7\r${adt('FB1')}${adt('FB2')}BTS|2\rFTS|1\r`),
    );
    const [a] = await c.waitAcks(1);
    const lines = a.split('\r').filter(Boolean);
    expect(lines.filter((l) => l.startsWith('MSA'))).toEqual(['MSA|AA|FB1', 'MSA|AA|FB2']);
    expect(lines.find((l) => l.startsWith('BHS'))!.split('|')[11]).toBe('BX7');
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['FB1', 'FB2']);
  });
});

describe('MllpSource: the data-quality check behind an enhanced-mode application ACK', () => {
  const ACKS_NOT_STORED = ['CE', 'AE'];
  const issue = (location: string, severity: 'error' | 'warning' = 'error') => ({
    severity,
    location,
    code: 'invalid-date',
    text: 'not a date',
    hl7ErrorCode: '102',
  });
  const obx = (n: number) => Array.from({ length: n }, (_, i) => issue(`OBX-${i + 1}`));

  it('asked only when an application ACK will be sent (MSH-16 not NE), and the issues logged by place and code, never by value', async () => {
    let asked = 0;
    const { c, logs } = await startWith(() => ({
      dataQualityCanFail: true,
      dataQualityIssues: async () => (asked++, [issue('PID-7'), issue('PID-8', 'warning'), ...obx(25)]),
    }));
    c.write(frame(adt('AQ1', { msh15: 'AL', msh16: 'NE' })));
    expect((await c.waitAcks(1)).map(codeOf)).toEqual(['CA:AQ1']);
    expect(asked).toBe(0);
    c.write(frame(adt('AQ2', { msh15: 'AL', msh16: 'AL' })));
    expect((await c.waitAcks(3)).slice(1).map(codeOf)).toEqual(['CA:AQ2', 'AE:AQ2']);
    expect(asked).toBe(1);
    expect(logs.filter((l) => l.message === 'application ACK AE: data-quality issues the source fails')).toEqual([
      // the first 20 errors (the warning is no failure), however many there are
      expect.objectContaining({
        level: 'info',
        controlId: 'AQ2',
        issues: ['PID-7:invalid-date', ...obx(19).map((i) => `${i.location}:invalid-date`)],
      }),
    ]);
  });

  it('warnings only: the application ACK is AA and nothing is logged as failing', async () => {
    const { c, logs } = await startWith(() => ({
      dataQualityCanFail: true,
      dataQualityIssues: async () => [issue('PID-8', 'warning')],
    }));
    c.write(frame(adt('AW1', { msh15: 'AL', msh16: 'AL' })));
    expect((await c.waitAcks(2)).map(codeOf)).toEqual(['CA:AW1', 'AA:AW1']);
    expect(logs.filter((l) => String(l.message).startsWith('application ACK AE'))).toEqual([]);
  });

  it('a check that fails: the application ACK is AA (the message is stored and fails in processing), logged at debug', async () => {
    const { c, logs } = await startWith(() => ({
      dataQualityCanFail: true,
      dataQualityIssues: async () => {
        throw new FerryError(testErrors.codes.INPUT_REFUSED_TEST, 'check failed', { kind: 'input' });
      },
    }));
    c.write(frame(adt('AF1', { msh15: 'AL', msh16: 'AL' })));
    expect((await c.waitAcks(2)).map(codeOf)).toEqual(['CA:AF1', 'AA:AF1']);
    expect(logs.filter((l) => l.message === 'data-quality check for the application ACK failed')).toEqual([
      expect.objectContaining({ level: 'debug', controlId: 'AF1', errorCode: 'FERRY_E_INPUT_REFUSED_TEST' }),
    ]);
  });

  it('a message the store did not keep is not checked: its ACK says not stored, retry later -- not data-quality errors', async () => {
    let asked = 0;
    const { c } = await startWith(() => ({
      dataQualityCanFail: true,
      dataQualityIssues: async () => (asked++, [issue('PID-7')]),
      submit: async () => {
        throw new FerryError('FERRY_E_TRANSIENT_STORE_IO', 'disk', { kind: 'transient', retryable: true });
      },
    }));
    c.write(frame(adt('AN1', { msh15: 'AL', msh16: 'AL' })));
    await c.waitAcks(1);
    await settle();
    expect(c.acks.map((a) => `${codeOf(a)} ${readAck(a)!.text}`)).toEqual(
      ACKS_NOT_STORED.map((code) => `${code}:AN1 message not stored, retry later (FERRY_E_TRANSIENT_STORE_IO)`),
    );
    expect(asked).toBe(0);
  });
});
