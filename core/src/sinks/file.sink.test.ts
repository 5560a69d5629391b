import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FerryError } from '../errors';
import { delivery, patientBundle, sinkContext } from './__fixtures__/delivery';
import { FileSink, NdjsonWriters, type FileSinkInput } from './file.sink';

const base = (dir: string, over: Partial<FileSinkInput> = {}): FileSinkInput => ({
  dir,
  format: 'ndjson',
  file: 'bundles.ndjson',
  fsync: true,
  envelope: false,
  indent: 2,
  ...over,
});

describe('FileSink', () => {
  let tmp: string;
  /** The engine's writers (a service of the core plugin): shared by the sinks of one test. */
  let writers: NdjsonWriters;
  beforeEach(() => {
    writers = new NdjsonWriters();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-file-sink-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('ndjson: concurrent deliveries of large bundles give whole, non-interleaved lines', async () => {
    const sink = new FileSink(sinkContext(base(tmp)), writers);
    await sink.start();
    const ds = Array.from({ length: 150 }, (_, i) => delivery(patientBundle(`MRN${i}`, { size: 40_000 + i })));
    await Promise.all(ds.map((d) => sink.deliver(d)));
    // a second sink instance on the same file shares the single writer
    const sink2 = new FileSink(sinkContext(base(tmp), 'second'), writers);
    await Promise.all(ds.slice(0, 20).map((d) => sink2.deliver(d)));
    expect(writers.files()).toEqual([path.join(tmp, 'bundles.ndjson')]);
    await sink.stop();
    await sink2.stop();
    expect(writers.files()).toEqual([]);
    const text = fs.readFileSync(path.join(tmp, 'bundles.ndjson'), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(170);
    const mrns = lines.map((l) => JSON.parse(l).entry[0].resource.identifier[0].value as string);
    for (let i = 0; i < 150; i++) expect(mrns.filter((m) => m === `MRN${i}`).length).toBe(i < 20 ? 2 : 1);
  });

  it('ndjson: a torn last line from a crash is closed off so the next record is whole', async () => {
    const file = path.join(tmp, 'bundles.ndjson');
    fs.writeFileSync(file, '{"resourceType":"Bundle"}\n{"resourceType":"Bun');
    const sink = new FileSink(sinkContext(base(tmp)), writers);
    await sink.deliver(delivery(patientBundle('M1')));
    await sink.stop();
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[1]).toBe('{"resourceType":"Bun');
    expect(JSON.parse(lines[2]).entry[0].resource.identifier[0].value).toBe('M1');
  });

  it('ndjson: envelope carries message and delivery ids; {date} names a daily file', async () => {
    const sink = new FileSink(
      sinkContext(base(tmp, { envelope: true, file: 'out-{date}.ndjson', fsync: false })),
      writers,
    );
    const d = delivery(patientBundle('M2'));
    await sink.deliver(d);
    await sink.stop();
    const file = sink.currentFile();
    expect(path.basename(file)).toMatch(/^out-\d{4}-\d\d-\d\d\.ndjson$/);
    const rec = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(rec).toMatchObject({
      messageId: d.message.id,
      deliveryId: d.deliveryId,
      routeId: 'r1',
      sourceId: 'src',
      messageType: 'ADT^A01',
      controlId: 'CTRL1',
    });
    expect(rec.bundle.resourceType).toBe('Bundle');
  });

  it('json: one file per message id, atomically replaced on redelivery, no temp files left', async () => {
    const out = path.join(tmp, 'nested', 'out');
    const sink = new FileSink(sinkContext(base(out, { format: 'json' })), writers);
    await sink.start();
    const d = delivery(patientBundle('M3'), { id: 'msg-123' });
    await sink.deliver(d);
    const d2 = { ...d, attempt: 2, bundle: patientBundle('M3', { family: 'Changed' }) };
    await Promise.all([sink.deliver(d2), sink.deliver(d2), sink.deliver(d2)]);
    await sink.stop();
    expect(fs.readdirSync(out)).toEqual(['msg-123.json']);
    const b = JSON.parse(fs.readFileSync(path.join(out, 'msg-123.json'), 'utf8'));
    expect(b.entry[0].resource.name[0].family).toBe('Changed');
  });

  it('a write failure is a retryable FerryError without the bundle in the message', async () => {
    const notADir = path.join(tmp, 'file');
    fs.writeFileSync(notADir, 'x');
    for (const format of ['ndjson', 'json'] as const) {
      const sink = new FileSink(sinkContext(base(notADir, { format })), writers);
      const err = await sink.deliver(delivery(patientBundle('SECRET-MRN', { family: 'Secretname' }))).catch((e) => e);
      await sink.stop();
      expect(err).toBeInstanceOf(FerryError);
      expect(err.code).toBe('FERRY_E_DELIVERY_FILE_WRITE');
      expect(err.retryable).toBe(true);
      expect(err.message).not.toMatch(/Secretname|SECRET-MRN/);
    }
  });
});

describe('deliveryPayloadJson', () => {
  const { deliveryPayload, deliveryPayloadJson } = jest.requireActual('./common') as typeof import('./common');
  const message = {
    id: 'm1',
    seq: 1,
    sourceId: 's',
    contentType: 'x',
    headers: { messageType: 'ADT^A01', controlId: 'C1' },
    receivedAt: new Date(0),
    status: 'routed' as const,
  };
  const bundle = {
    resourceType: 'Bundle' as const,
    type: 'transaction' as const,
    entry: [{ resource: { resourceType: 'Patient' as const, id: 'p' } }],
  };

  it.each([false, true])(
    'is the same text as serialising deliveryPayload (envelope %s), from the object or the stored text',
    (envelope) => {
      const fromObject = { deliveryId: 'd1', attempt: 1, routeId: 'r', bundle, message };
      const fromText = { ...fromObject, bundleJson: JSON.stringify(bundle) };
      const expected = JSON.stringify(deliveryPayload(fromObject, envelope));
      expect(deliveryPayloadJson(fromObject, envelope)).toBe(expected);
      expect(deliveryPayloadJson(fromText, envelope)).toBe(expected);
    },
  );
});
