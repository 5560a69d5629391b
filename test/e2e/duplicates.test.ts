/**
 * Proof: duplicates are judged by content, on real sockets with the corpus. ADT-A01-01.hl7 and
 * ADT-A02-01.hl7 carry the same sender (ADTApp / GHHSFacility) and control id (MSG00001): both
 * are stored and delivered, the second marked `control-id-reused` and counted on /metrics. A
 * byte-identical resend, and one differing only in MSH-7, are duplicates: answered with the
 * original's ACK, not stored, not delivered again.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';
import { MllpDeframer, readAck, type MllpSource } from '@ferry/plugin-hl7v2-mllp';

const CORPUS = path.resolve(__dirname, '../../../shared/corpus/hl7v2-msft');
const haveCorpus = existsSync(path.join(CORPUS, 'ADT-A01-01.hl7')) && existsSync(path.join(CORPUS, 'ADT-A02-01.hl7'));
if (!haveCorpus) console.warn(`skipped: the HL7 v2 corpus is not at ${CORPUS}`);

const VT = Buffer.from([0x0b]);
const END = Buffer.from([0x1c, 0x0d]);

/** One MLLP connection: send a frame, wait for its ACK. */
class Client {
  private d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  private acks: string[] = [];
  private constructor(private s: net.Socket) {
    s.on('data', (c) => {
      for (const ev of this.d.push(c)) if (ev.kind === 'frame') this.acks.push(ev.payload.toString('latin1'));
    });
    s.on('error', () => undefined);
  }
  static connect(port: number): Promise<Client> {
    return new Promise((res, rej) => {
      const s = net.connect(port, '127.0.0.1', () => res(new Client(s)));
      s.once('error', rej);
    });
  }
  async send(msg: Buffer): Promise<string> {
    this.s.write(Buffer.concat([VT, msg, END]));
    const deadline = Date.now() + 10_000;
    while (!this.acks.length) {
      if (Date.now() > deadline) throw new Error('no ACK');
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.acks.shift()!;
  }
  close(): void {
    this.s.destroy();
  }
}

/** An ACK without what is its own (MSH-7 its time, MSH-10 its control id): what it says about the message. */
function ackContent(ack: string): string {
  return ack
    .split('\r')
    .filter(Boolean)
    .map((seg) => {
      if (!seg.startsWith('MSH')) return seg;
      const f = seg.split('|');
      f[6] = '';
      f[9] = '';
      return f.join('|');
    })
    .join('\r');
}

/** The message with MSH-7 (its send time) replaced. */
function withMsh7(body: Buffer, ts: string): Buffer {
  const text = body.toString('latin1');
  const eol = text.search(/\r|\n/);
  const f = text.slice(0, eol).split('|');
  f[6] = ts;
  return Buffer.from(f.join('|') + text.slice(eol), 'latin1');
}

(haveCorpus ? describe : describe.skip)('duplicates by content (MLLP, corpus, real store)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-dup-e2e-'));
  const out = path.join(dir, 'out');
  let engine: Engine;
  let client: Client;
  /** What the A01 was answered when it was first received. */
  let originalAck = '';

  beforeAll(async () => {
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        processing: { pollIntervalMs: 50, transformWorkers: 0 },
        admin: { enabled: true, host: '127.0.0.1', port: 0, metricsPublic: true }, // /metrics for scrapers; the API needs a token
        // The defaults: policy ignore, a one-day window, MSH-7 left out of the content.
        sources: {
          feed: { type: 'mllp', host: '127.0.0.1', port: 0 },
          // FHIR JSON over HTTP: the same rule, its control id the resource id, meta.lastUpdated left out.
          api: { type: 'http', host: '127.0.0.1', port: 0, duplicates: { ignoreFields: ['meta.lastUpdated'] } },
        },
        sinks: { out: { type: 'file', dir: out, format: 'ndjson', envelope: true } },
        routes: [{ id: 'all', from: ['feed', 'api'], to: ['out'] }],
      },
    });
    await engine.start();
    client = await Client.connect(engine.source<MllpSource>('feed')!.address()!.port);
  });
  afterAll(async () => {
    client?.close();
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const delivered = () =>
    existsSync(path.join(out, 'bundles.ndjson'))
      ? readFileSync(path.join(out, 'bundles.ndjson'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { messageId: string; controlId: string; messageType: string })
      : [];

  it('A01 then A02 with the same sender and control id: both acknowledged, stored and delivered; the A02 marked and counted', async () => {
    const a01 = readFileSync(path.join(CORPUS, 'ADT-A01-01.hl7'));
    const a02 = readFileSync(path.join(CORPUS, 'ADT-A02-01.hl7'));
    const ack1 = await client.send(a01);
    originalAck = ack1;
    const ack2 = await client.send(a02);
    expect(readAck(ack1)).toMatchObject({ code: 'AA', controlId: 'MSG00001' });
    expect(readAck(ack2)).toMatchObject({ code: 'AA', controlId: 'MSG00001' });
    await engine.waitForIdle(20_000);

    const stored = await engine.store.listMessages({ sourceId: 'feed' });
    expect(stored.map((m) => m.headers.messageType)).toEqual(['ADT^A01', 'ADT^A02']);
    expect(stored.map((m) => m.status)).toEqual(['delivered', 'delivered']);
    expect(stored[1].duplicateOf).toBeUndefined();
    const ev = await engine.store.events(stored[1].id);
    expect(ev.find((e) => e.status === 'control-id-reused')?.detail).toContain(stored[0].id);
    expect(delivered().map((l) => `${l.controlId} ${l.messageType}`)).toEqual(['MSG00001 ADT^A01', 'MSG00001 ADT^A02']);

    const metrics = await (await fetch(`${engine.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/ferry_control_id_reused_total\{source="feed"\} 1/);
  });

  it("a byte-identical resend, and one differing only in MSH-7, get the original's ACK and are neither stored nor delivered again", async () => {
    const a01 = readFileSync(path.join(CORPUS, 'ADT-A01-01.hl7'));
    const [original] = await engine.store.listMessages({ sourceId: 'feed', limit: 1 });
    const before = (await engine.store.listMessages({ sourceId: 'feed' })).length;
    const same = await client.send(a01);
    const resent = await client.send(withMsh7(a01, '20991231235959'));
    expect(originalAck).not.toBe('');
    // The original's ACK: every segment and field the same, but the ACK's own time and control id.
    expect(ackContent(same)).toBe(ackContent(originalAck));
    expect(ackContent(resent)).toBe(ackContent(originalAck));
    await engine.waitForIdle(20_000);

    expect((await engine.store.listMessages({ sourceId: 'feed' })).length).toBe(before);
    expect(
      (await engine.store.events(original.id)).filter((e) => e.status === 'duplicate').map((e) => e.detail),
    ).toEqual(['ignored', 'ignored']);
    expect(delivered()).toHaveLength(2);
    const metrics = await (await fetch(`${engine.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/ferry_duplicates_total\{source="feed",outcome="ignored"\} 2/);
    expect(metrics).toMatch(/ferry_control_id_reused_total\{source="feed"\} 1/);
  });

  it('FHIR JSON over HTTP by the same rule: a changed resource with the same id is new, a resend with only meta.lastUpdated changed is a duplicate', async () => {
    const url = (engine.source('api') as unknown as { url: string }).url;
    const post = async (doc: object) => {
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify(doc),
      });
      expect(r.status).toBeLessThan(300);
      return (await r.json()) as { id: string; duplicate?: boolean };
    };
    const patient = (gender: string, lastUpdated: string) => ({
      resourceType: 'Patient',
      id: 'dup-p1',
      meta: { lastUpdated },
      gender,
      identifier: [{ system: 'urn:x', value: 'X1' }],
    });
    const a = await post(patient('female', '2025-01-01T00:00:00Z'));
    const b = await post(patient('male', '2025-01-02T00:00:00Z'));
    const c = await post(patient('male', '2025-01-03T00:00:00Z'));
    expect(a.duplicate).toBeUndefined();
    expect(b.duplicate).toBeUndefined();
    expect(b.id).not.toBe(a.id);
    expect(c).toEqual({ id: b.id, duplicate: true });
    expect((await engine.store.events(b.id)).map((e) => e.status)).toContain('control-id-reused');
    expect((await engine.store.listMessages({ sourceId: 'api' })).map((m) => m.id)).toEqual([a.id, b.id]);
  });
});
