import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { readAck } from '../ack/ack.builder';
import { sendCommand } from '../cli/send.command';
import { silentLogger } from '../../../../core/src/logging/logger';
import { adt, frame, RawClient } from '../mllp/__fixtures__/support';
import { makePki, type TestPki } from '../mllp/__fixtures__/certs';
import { sourceHarness } from '../mllp/__fixtures__/source-harness';
import { MllpSink } from '../sinks/mllp.sink';
import type { MllpSourceInput } from '../mllp/mllp.schema';

const h = sourceHarness();
const { startSource, connect, clients } = h;
afterAll(() => h.close());

/**
 * The ACKs a client the server refuses gets for one message: none. Under TLS 1.3 the handshake completes
 * client-side before the server's verdict, so the client may get a connection, send, and be closed unanswered;
 * or the handshake fails client-side and there is no connection to send on (no ACK either).
 */
async function acksOnRefusedConnection(connecting: Promise<RawClient>, message: string): Promise<string[]> {
  const c = await connecting.catch(() => undefined);
  if (!c) return [];
  clients.push(c);
  c.write(frame(message));
  await c.waitClose(3000);
  return c.acks;
}

describe('MllpSource over TLS', () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = makePki();
  });
  afterAll(() => fs.rmSync(pki.dir, { recursive: true, force: true }));

  const tlsCfg = (t: MllpSourceInput['tls']): MllpSourceInput['tls'] => ({
    enabled: true,
    cert: '',
    key: '',
    passphrase: '',
    ca: '',
    requestCert: false,
    rejectUnauthorized: true,
    servername: '',
    ...t,
  });

  it('serves MLLP over TLS with certificates read from files', async () => {
    const { port } = await startSource({ tls: tlsCfg({ cert: pki.serverCert, key: pki.serverKey }) });
    const c = await connect(port, { ca: fs.readFileSync(pki.caCert) });
    c.write(frame(adt('T1')));
    const [ack] = await c.waitAcks(1);
    expect(readAck(ack)).toMatchObject({ code: 'AA', controlId: 'T1' });
  });

  it('mutual TLS: a trusted client certificate is accepted; none or an untrusted one is refused', async () => {
    const { ctx, port, src } = await startSource({
      tls: tlsCfg({
        cert: fs.readFileSync(pki.serverCert, 'utf8'),
        key: pki.serverKey,
        ca: pki.caCert,
        requestCert: true,
      }),
    });
    const ca = fs.readFileSync(pki.caCert);
    const good = await connect(port, {
      ca,
      cert: fs.readFileSync(pki.clientCert),
      key: fs.readFileSync(pki.clientKey),
    });
    good.write(frame(adt('M1')));
    expect(readAck((await good.waitAcks(1))[0])).toMatchObject({ code: 'AA', controlId: 'M1' });
    expect(ctx.submitted[0].headers?.tlsPeerCN).toBe('client');

    for (const opts of [{ ca }, { ca, cert: fs.readFileSync(pki.rogueCert), key: fs.readFileSync(pki.rogueKey) }]) {
      // TLS 1.3: the handshake completes client-side before the server's verdict arrives; the
      // server then closes the connection without reading anything.
      // (A handshake refused client-side is no connection at all: nothing sent, nothing answered.)
      expect(await acksOnRefusedConnection(RawClient.connect(port, opts), adt('NOPE'))).toEqual([]);
    }
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['M1']);
    expect(src.stats()!.tlsFailures).toBeGreaterThanOrEqual(2);
  });

  it('mutual TLS with allowedClientNames: a trusted certificate with an unlisted CN is closed unanswered', async () => {
    const tlsOf = (names: string[]) =>
      tlsCfg({
        cert: fs.readFileSync(pki.serverCert, 'utf8'),
        key: pki.serverKey,
        ca: pki.caCert,
        requestCert: true,
        allowedClientNames: names,
      });
    const clientOpts = {
      ca: fs.readFileSync(pki.caCert),
      cert: fs.readFileSync(pki.clientCert),
      key: fs.readFileSync(pki.clientKey),
    };
    const listed = await startSource({ tls: tlsOf(['client']) });
    const ok = await connect(listed.port, clientOpts);
    ok.write(frame(adt('CN1')));
    expect(readAck((await ok.waitAcks(1))[0])).toMatchObject({ code: 'AA', controlId: 'CN1' });

    const other = await startSource({ tls: tlsOf(['lab-gateway']) });
    expect(await acksOnRefusedConnection(RawClient.connect(other.port, clientOpts), adt('CN2'))).toEqual([]);
    expect(other.ctx.submitted).toHaveLength(0);
    expect(other.src.stats()!.clientNameRefused).toBe(1);
    await expect(
      startSource({ tls: tlsCfg({ cert: pki.serverCert, key: pki.serverKey, allowedClientNames: ['client'] }) }),
    ).rejects.toThrow(/needs tls.requestCert/);
  });

  it('the mllp sink and ferry send speak mutual TLS to it', async () => {
    const { ctx, port } = await startSource({
      tls: tlsCfg({ cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert, requestCert: true }),
    });
    const sink = new MllpSink({
      id: 'tls-out',
      logger: silentLogger(),
      config: {
        host: '127.0.0.1',
        port,
        connectTimeoutMs: 2000,
        ackTimeoutMs: 2000,
        connections: 1,
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
        onReject: 'dead',
        body: 'original',
        maxMessageSize: 1e6,
        tls: tlsCfg({ cert: pki.clientCert, key: pki.clientKey, ca: pki.caCert }),
      },
    });
    const message = {
      id: 'm',
      seq: 1,
      sourceId: 's',
      contentType: 'application/hl7-v2',
      body: Buffer.from(adt('SINK1')),
      headers: {},
      receivedAt: new Date(),
      status: 'routed' as const,
    };
    await sink.deliver({
      deliveryId: 'd',
      attempt: 1,
      routeId: 'r',
      bundle: { resourceType: 'Bundle', type: 'collection' },
      message,
    });
    await sink.stop();

    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-send-tls-')), 'm.hl7');
    fs.writeFileSync(file, adt('CLI1'));
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const cmd = sendCommand(out);
    const ok = await cmd.run(
      [`127.0.0.1:${port}`, file],
      { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey },
      { logger: silentLogger(), transforms: [] },
    );
    expect(text).toMatch(/CLI1\tAA/);
    expect(ok).toBe(0);
    // without a client certificate the handshake is refused: not AA, exit 1
    const refused = await cmd.run(
      [`127.0.0.1:${port}`, file],
      { ca: pki.caCert, timeout: '1500' },
      { logger: silentLogger(), transforms: [] },
    );
    expect(refused).toBe(1);
    expect(ctx.submitted.map((m) => m.headers?.controlId)).toEqual(['SINK1', 'CLI1']);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});
