import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { silentLogger } from '../../../../core/src/logging/logger';
import { adt, storeCtx, type RecordingCtx } from '../mllp/__fixtures__/support';
import { MllpSource } from '../sources/mllp.source';
import { messagesOfFile, parseTarget, sendCommand } from './send.command';

const CORPUS = path.resolve(__dirname, '../../../../../shared/corpus/hl7v2-msft');

async function run(args: string[], options: Record<string, unknown> = {}): Promise<{ code: number; out: string }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  const code = await sendCommand(out).run(args, options, { logger: silentLogger(), transforms: [] });
  return { code, out: text };
}

describe('ferry send', () => {
  let dir: string;
  let src: MllpSource;
  let port: number;
  let ctx: RecordingCtx;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-send-'));
    ctx = await storeCtx({ duplicates: { policy: 'reject', windowMs: 60_000 } });
    src = new MllpSource(ctx);
    await src.start();
    port = src.address()!.port;
  });
  afterAll(async () => {
    await src.stop();
    await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('parses targets', () => {
    expect(parseTarget('10.1.2.3:2575')).toEqual({ host: '10.1.2.3', port: 2575 });
    expect(parseTarget('[::1]:2575')).toEqual({ host: '::1', port: 2575 });
    expect(parseTarget('2575')).toEqual({ host: '127.0.0.1', port: 2575 });
    expect(() => parseTarget('host')).toThrow(/host:port/);
  });

  it('splits batch files (BOM, LF line ends) into CR-terminated messages', () => {
    const file = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from(
        `FHS|^~\\&|A\nBHS|^~\\&|A\n${adt('F1').replace(/\r/g, '\n')}\n${adt('F2').replace(/\r/g, '\r\n')}BTS|2\nFTS|1\n`,
      ),
    ]);
    expect(messagesOfFile(file).map((m) => m.toString('latin1'))).toEqual([adt('F1'), adt('F2')]);
  });

  it('sends files, prints each ACK code, exits 0 when all are AA', async () => {
    const single = path.join(dir, 'one.hl7');
    const batch = path.join(dir, 'batch.hl7');
    fs.writeFileSync(single, adt('ONE').replace(/\r/g, '\n'));
    fs.writeFileSync(batch, `BHS|^~\\&|A\r${adt('TWO')}${adt('THREE')}BTS|2\r`);
    const { code, out } = await run([`127.0.0.1:${port}`, single, batch]);
    expect(code).toBe(0);
    const lines = out.trim().split('\n');
    expect(lines.slice(0, 3).map((l) => l.split('\t').slice(0, 3).join(' '))).toEqual([
      `${single}#1 ONE AA`,
      `${batch}#1 TWO AA`,
      `${batch}#2 THREE AA`,
    ]);
    expect(lines[3]).toBe('3/3 accepted');
  });

  it('exits non-zero when any message is not AA (a rejected duplicate, an unreadable file)', async () => {
    const f = path.join(dir, 'dup.hl7');
    fs.writeFileSync(f, adt('DUP1') + adt('DUP1'));
    const { code, out } = await run([`127.0.0.1:${port}`, f, path.join(dir, 'missing.hl7')], { json: true });
    expect(code).toBe(1);
    const rows = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(rows.map((r) => r.code)).toEqual(['AA', 'AR', 'UNREADABLE']);
    expect(rows[1].errCode).toBe('205');
  });

  it('exits non-zero when the receiver is unreachable', async () => {
    const f = path.join(dir, 'x.hl7');
    fs.writeFileSync(f, adt('X1'));
    const { code, out } = await run(['127.0.0.1:1', f], { timeout: '500' });
    expect(code).toBe(1);
    expect(out).toMatch(/ERROR/);
  });

  const corpus = fs.existsSync(CORPUS) ? fs.readdirSync(CORPUS).filter((f) => f.endsWith('.hl7')) : [];
  if (!corpus.length) console.warn(`skipped: ../shared absent (${CORPUS})`);
  (corpus.length ? it : it.skip)(
    'sends the whole shared corpus: every message AA and stored byte-for-byte (after CR ends)',
    async () => {
      const files = corpus.map((f) => path.join(CORPUS, f));
      // the corpus reuses control ids (MSG00001...): accept duplicates here
      const actx = await storeCtx({ duplicates: { policy: 'accept', windowMs: 60_000 } });
      const asrc = new MllpSource(actx);
      await asrc.start();
      let code: number, out: string;
      try {
        ({ code, out } = await run([`127.0.0.1:${asrc.address()!.port}`, ...files], { grace: '150' }));
      } finally {
        await asrc.stop();
        await actx.close();
      }
      const bad = out.split('\n').filter((l) => l.includes('\t') && !['AA', 'NONE', 'CA'].includes(l.split('\t')[2]));
      expect(bad).toEqual([]);
      expect(code).toBe(0);
      const expected = files.flatMap((f) => messagesOfFile(fs.readFileSync(f)));
      expect(actx.submitted.map((m) => m.body.toString('latin1'))).toEqual(expected.map((b) => b.toString('latin1')));
    },
  );
});
