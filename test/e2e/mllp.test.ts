/**
 * The MLLP listener and sender inside the real engine: config `plugins: ['@ferry/plugin-hl7v2-mllp']`,
 * an `mllp` source on port 0, the real SQLite store, ACK only after commit, duplicates per the
 * store's policy, AE when the store fails, and an engine-to-engine hop through the `mllp` sink.
 */
import { mkdtempSync, readFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, Engine, silentLogger, SqliteMessageStore } from '@ferry/core';
import { MllpDeframer, readAck, type MllpSource } from '@ferry/plugin-hl7v2-mllp';
import { makePki } from '../../plugins/hl7v2-mllp/src/mllp/__fixtures__/certs';
import { roleTokens } from '../support';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'ferry-mllp-e2e-'));
const VT = Buffer.from([0x0b]);
const END = Buffer.from([0x1c, 0x0d]);
const frame = (s: string) => Buffer.concat([VT, Buffer.from(s, 'latin1'), END]);

function adt(ctl: string, mrn = '12345', trigger = 'A01'): string {
  return (
    [
      `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^${trigger}^ADT_A01|${ctl}|P|2.5.1`,
      `EVN|${trigger}|20240101120000`,
      `PID|1||${mrn}^^^HOSP^MR||DOE^JANE||19800101|F`,
      'PV1|1|I|WARD1^101^A',
    ].join('\r') + '\r'
  );
}

/** A minimal independent MLLP client: send one frame, wait for the next ACK. */
class Client {
  private d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  private acks: string[] = [];
  private wake?: () => void;
  closed = false;
  constructor(private s: net.Socket) {
    s.on('data', (c) => {
      for (const ev of this.d.push(c)) if (ev.kind === 'frame') this.acks.push(ev.payload.toString('latin1'));
      this.wake?.();
    });
    s.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    s.on('error', () => undefined);
  }
  static connect(port: number, tlsOpts?: tls.ConnectionOptions): Promise<Client> {
    return new Promise((res, rej) => {
      const s = tlsOpts
        ? tls.connect({ port, host: '127.0.0.1', ...tlsOpts }, () => res(new Client(s)))
        : net.connect(port, '127.0.0.1', () => res(new Client(s)));
      s.once('error', rej);
    });
  }
  async send(msg: string, timeoutMs = 5000): Promise<string> {
    this.s.write(frame(msg));
    const deadline = Date.now() + timeoutMs;
    while (!this.acks.length) {
      if (this.closed || Date.now() > deadline) throw new Error('no ACK');
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 50);
      });
    }
    return this.acks.shift()!;
  }
  /** Write several frames at once (pipelining), then collect as many ACKs. */
  async sendMany(msgs: string[], timeoutMs = 10_000): Promise<string[]> {
    this.s.write(Buffer.concat(msgs.map(frame)));
    const deadline = Date.now() + timeoutMs;
    while (this.acks.length < msgs.length) {
      if (this.closed || Date.now() > deadline) throw new Error(`got ${this.acks.length}/${msgs.length} ACKs`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 50);
      });
    }
    return this.acks.splice(0, msgs.length);
  }
  close() {
    this.s.destroy();
  }
}

function config(dir: string, extra: Record<string, unknown> = {}, source: Record<string, unknown> = {}) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { pollIntervalMs: 50 },
    admin: { enabled: false },
    sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0, ...source } },
    sinks: { archive: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
    routes: [{ id: 'adt', from: ['feed'], when: { messageType: ['ADT^*'] }, to: ['archive'] }],
    ...extra,
  };
}

const portOf = (e: Engine, id = 'feed') => e.source<MllpSource>(id)!.address()!.port;

describe('MLLP in the engine', () => {
  const engines: Engine[] = [];
  const clients: Client[] = [];
  const start = async (cfg: Record<string, unknown>) => {
    const e = await Engine.create({ config: cfg, logger: silentLogger() });
    engines.push(e);
    await e.start();
    return e;
  };
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const e of engines.splice(0).reverse()) await e.stop();
  });

  it('AA only once the message is committed: the ACKed message is in the SQLite file, byte for byte', async () => {
    const dir = tmp();
    const e = await start(config(dir));
    const c = await Client.connect(portOf(e));
    clients.push(c);
    const ack = await c.send(adt('E2E1'));
    expect(readAck(ack)).toMatchObject({ code: 'AA', controlId: 'E2E1' });
    // read the committed row back through a second store on the same file
    const [m] = await e.store.listMessages({ sourceId: 'feed' });
    const stored = await e.store.getMessage(m.id, { body: true });
    expect(stored!.body!.toString('latin1')).toBe(adt('E2E1'));
    expect(stored!.headers).toMatchObject({
      messageType: 'ADT^A01',
      controlId: 'E2E1',
      sendingApplication: 'SENDAPP',
      sendingFacility: 'SENDFAC',
    });
  });

  it("the listener's own counters are on /metrics as ferry_source_stat", async () => {
    const dir = tmp();
    // Opened to scrapers by the explicit setting; the rest of the admin API still needs a token.
    const e = await start(
      config(dir, {
        admin: { enabled: true, port: 0, metricsPublic: true, auth: { tokens: (await roleTokens()).tokens } },
      }),
    );
    const c = await Client.connect(portOf(e));
    clients.push(c);
    expect(readAck(await c.send(adt('MET1')))).toMatchObject({ code: 'AA' });
    expect((await fetch(`${e.adminUrl}/api/stats`)).status).toBe(401);
    const text = await (await fetch(`${e.adminUrl}/metrics`)).text();
    expect(text).toMatch(/ferry_source_stat\{source="feed",stat="frames"\} 1/);
    expect(text).toMatch(/ferry_source_stat\{source="feed",stat="connections"\} 1/);
    expect(text).toMatch(/ferry_messages_received_total\{source="feed"\} 1/);
  });

  it('1,000 messages on one connection through the real store (pipelined 50 at a time): every MSA-2 right, in order', async () => {
    const dir = tmp();
    const e = await start(config(dir, { routes: [] }));
    const c = await Client.connect(portOf(e));
    clients.push(c);
    let wrong = 0;
    for (let w = 0; w < 1000; w += 50) {
      const ids = Array.from({ length: 50 }, (_, k) => `N${w + k}`);
      const acks = await c.sendMany(ids.map((id, k) => adt(id, String((w + k) % 50))));
      acks.forEach((a, k) => {
        const r = readAck(a);
        if (r?.code !== 'AA' || r.controlId !== ids[k]) wrong++;
      });
    }
    expect(wrong).toBe(0);
    expect((await e.store.stats()).messages).toBeDefined();
    expect((await e.store.listMessages({ sourceId: 'feed', limit: 2000 })).length).toBe(1000);
  });

  it('duplicates under the default policy (ignore) are acknowledged AA again and stored once', async () => {
    const dir = tmp();
    const e = await start(config(dir, { routes: [] }));
    const c = await Client.connect(portOf(e));
    clients.push(c);
    expect(readAck(await c.send(adt('DUP')))!.code).toBe('AA');
    expect(readAck(await c.send(adt('DUP')))!.code).toBe('AA');
    expect(await e.store.listMessages({ sourceId: 'feed' })).toHaveLength(1);
  });

  it('duplicates under policy reject are answered AR 205 and not stored', async () => {
    const dir = tmp();
    const e = await start(config(dir, { routes: [] }, { duplicates: { policy: 'reject', windowMs: 60_000 } }));
    const c = await Client.connect(portOf(e));
    clients.push(c);
    expect(readAck(await c.send(adt('RJ')))!.code).toBe('AA');
    expect(readAck(await c.send(adt('RJ')))).toMatchObject({ code: 'AR', controlId: 'RJ', errCode: '205' });
    // pipelined: the duplicate between two new messages (one submit) is the only one refused
    const acks = await c.sendMany([adt('RJ2'), adt('RJ'), adt('RJ3')]);
    expect(acks.map((a) => `${readAck(a)!.controlId}:${readAck(a)!.code}`)).toEqual(['RJ2:AA', 'RJ:AR', 'RJ3:AA']);
    expect((await e.store.listMessages({ sourceId: 'feed' })).map((m) => m.headers.controlId).sort()).toEqual([
      'RJ',
      'RJ2',
      'RJ3',
    ]);
  });

  it('AE when the store cannot commit; nothing acknowledged that was not stored; the outage logged once, not per message', async () => {
    const dir = tmp();
    const stream = new PassThrough();
    let logs = '';
    stream.on('data', (d) => (logs += d));
    const e = await Engine.create({
      config: config(dir, { routes: [] }),
      logger: createLogger({ level: 'info' }, stream),
    });
    engines.push(e);
    await e.start();
    const c = await Client.connect(portOf(e));
    clients.push(c);
    expect(readAck(await c.send(adt('OK1')))!.code).toBe('AA');
    await e.store.close(); // the database goes away under the running listener
    expect(readAck(await c.send(adt('LOST1')))).toMatchObject({ code: 'AE', controlId: 'LOST1', errCode: '207' });
    for (let i = 2; i <= 5; i++) expect(readAck(await c.send(adt(`LOST${i}`)))!.code).toBe('AE');
    await e.store.open(); // back
    expect(readAck(await c.send(adt('OK2')))!.code).toBe('AA');
    await new Promise((r) => setTimeout(r, 50));
    const lines = logs
      .split('\n')
      .filter((l) => l.includes('message not stored'))
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => `${l.level} ${l.message}`)).toEqual([
      'error message not stored: answered AE',
      'info message not stored: answered AE: recovered',
    ]);
    expect(lines[0]).toMatchObject({ source: 'feed', controlId: 'LOST1' });
    expect(lines[1]).toMatchObject({ source: 'feed', failures: 5 });
  });

  it('logs at info and above carry ids, codes and counts, never names, MRNs or bodies', async () => {
    const dir = tmp();
    const stream = new PassThrough();
    let logs = '';
    stream.on('data', (d) => (logs += d));
    const e = await Engine.create({
      config: config(dir, {}, { maxMessageSize: 4000, duplicates: { policy: 'reject', windowMs: 60_000 } }),
      logger: createLogger({ level: 'info' }, stream),
    });
    engines.push(e);
    await e.start();
    const c = await Client.connect(portOf(e));
    clients.push(c);
    const phiMsg = adt('PHI1', 'MRN98765').replace('DOE^JANE', 'ZZTESTNAME^QQGIVEN');
    await c.send(phiMsg);
    await c.send(phiMsg); // rejected duplicate
    await c.send(phiMsg.replace('PID|', 'P!D|')); // unparseable
    await c.send(phiMsg + 'NTE|1||' + 'x'.repeat(5000) + '\r'); // oversized
    c.close();
    await e.waitForIdle(10_000);
    await new Promise((r) => setTimeout(r, 100));
    const mllpLines = logs.split('\n').filter((l) => /mllp|"source":"feed"/.test(l));
    expect(mllpLines.length).toBeGreaterThan(0);
    for (const secret of ['ZZTESTNAME', 'QQGIVEN', 'MRN98765', 'PID|', 'xxxxxxxxxx'])
      expect(mllpLines.filter((l) => l.includes(secret))).toEqual([]);
  });

  it('stopping under load: every message answered AA is in the database afterwards', async () => {
    const dir = tmp();
    const e = await Engine.create({
      config: config(dir, { routes: [] }, { shutdownGraceMs: 1000 }),
      logger: silentLogger(),
    });
    await e.start();
    const port = portOf(e);
    const acked: string[] = [];
    let stop = false;
    const senders = Array.from({ length: 4 }, async (_, k) => {
      const c = await Client.connect(port);
      clients.push(c);
      for (let i = 0; !stop || i < 5; i++) {
        const id = `S${k}-${i}`;
        let ack: string;
        try {
          ack = await c.send(adt(id), 3000);
        } catch {
          return; // closed by the stopping engine: a clear close, not an ACK
        }
        if (readAck(ack)?.code === 'AA') acked.push(id);
        else if (readAck(ack)?.code !== 'AE') throw new Error(`unexpected ${ack}`);
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await e.stop();
    await Promise.all(senders);
    expect(acked.length).toBeGreaterThan(0);
    const store = new SqliteMessageStore({ path: path.join(dir, 'ferry.db'), logger: silentLogger() });
    await store.open();
    try {
      const stored = new Set(
        (await store.listMessages({ sourceId: 'feed', limit: 100_000 })).map((m) => m.headers.controlId),
      );
      expect(acked.filter((id) => !stored.has(id))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('routes an MLLP message to the file sink (needs the HL7 v2 transform)', async () => {
    const dir = tmp();
    const e = await start(config(dir));
    expect(e.transforms.some((t) => t.canHandle('application/hl7-v2'))).toBe(true);
    const c = await Client.connect(portOf(e));
    clients.push(c);
    expect(readAck(await c.send(adt('R1')))!.code).toBe('AA');
    await e.waitForIdle(10_000);
    const file = path.join(dir, 'out', 'bundles.ndjson');
    expect(existsSync(file)).toBe(true);
    expect(JSON.parse(readFileSync(file, 'utf8').trim().split('\n')[0]).resourceType).toBe('Bundle');
  });

  it('mutual TLS from cert_FILE / key_FILE / ca_FILE: a trusted client is served, an untrusted one refused', async () => {
    const pki = makePki();
    try {
      const dir = tmp();
      // a YAML file, as users write it: the loader reads the *_FILE paths (from the environment here)
      const file = path.join(dir, 'ferry.yaml');
      writeFileSync(
        file,
        [
          `store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }`,
          "plugins: ['@ferry/plugin-hl7v2-mllp']",
          'admin: { enabled: false }',
          'sources:',
          '  feed:',
          '    type: mllp',
          '    host: 127.0.0.1',
          '    port: 0',
          '    tls: { cert_FILE: "${TEST_CERT}", key_FILE: "${TEST_KEY}", ca_FILE: "${TEST_CA}", requestCert: true }',
          '',
        ].join('\n'),
      );
      const e = await Engine.create({
        configFile: file,
        env: { ...process.env, TEST_CERT: pki.serverCert, TEST_KEY: pki.serverKey, TEST_CA: pki.caCert },
        logger: silentLogger(),
      });
      engines.push(e);
      await e.start();
      const ca = readFileSync(pki.caCert);
      const good = await Client.connect(portOf(e), {
        ca,
        cert: readFileSync(pki.clientCert),
        key: readFileSync(pki.clientKey),
      });
      clients.push(good);
      expect(readAck(await good.send(adt('TLS1')))).toMatchObject({ code: 'AA', controlId: 'TLS1' });
      const bad = await Client.connect(portOf(e), {
        ca,
        cert: readFileSync(pki.rogueCert),
        key: readFileSync(pki.rogueKey),
      }).catch(() => undefined);
      if (bad) clients.push(bad);
      // TLS 1.3: the handshake may complete client-side before the server's verdict (then the message goes
      // unanswered) or fail there (then there is nothing to send on). No ACK either way.
      const answer = bad
        ? await bad.send(adt('TLS2'), 2000).then(
            () => 'an ACK',
            (e: Error) => e.message,
          )
        : 'no ACK';
      expect(answer).toMatch(/no ACK/);
      expect((await e.store.listMessages({ sourceId: 'feed' })).map((m) => m.headers.controlId)).toEqual(['TLS1']);
    } finally {
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });

  it('engine to engine through the mllp sink: the original bytes arrive, AA marks the delivery done', async () => {
    const dirB = tmp();
    const b = await start(config(dirB, { routes: [] }));
    const dirA = tmp();
    const a = await start(
      config(dirA, {
        sinks: {
          downstream: {
            type: 'mllp',
            host: '127.0.0.1',
            port: portOf(b),
            ackTimeoutMs: 2000,
            retry: { initialDelayMs: 50 },
          },
        },
        routes: [{ id: 'fwd', from: ['feed'], when: { messageType: ['ADT^*'] }, to: ['downstream'] }],
      }),
    );
    expect(a.transforms.some((t) => t.canHandle('application/hl7-v2'))).toBe(true);
    const c = await Client.connect(portOf(a));
    clients.push(c);
    const body = adt('HOP1', '777', 'A08');
    expect(readAck(await c.send(body))!.code).toBe('AA');
    await a.waitForIdle(10_000);
    const [m] = await a.store.listMessages({ sourceId: 'feed' });
    expect((await a.store.deliveries(m.id)).map((d) => d.status)).toEqual(['delivered']);
    const [got] = await b.store.listMessages({ sourceId: 'feed' });
    expect((await b.store.getMessage(got.id, { body: true }))!.body!.toString('latin1')).toBe(body);
  });
});
