/** The testkit's contract suites over the hl7v2-mllp plugin's MLLP source and sink and its HL7 v2 transform, on real sockets. */
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import { buildAck } from '../ack/ack.builder';
import { readRawHeader } from '../ack/msh';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { extractHeaders, splitHl7Batch } from '../hl7v2';
import { adt, field, frame, RawClient, Receiver } from './__fixtures__/support';
import { MllpSink } from '../sinks/mllp.sink';
import type { MllpSinkConfig, MllpSourceConfig } from './mllp.schema';
import { MllpSource } from '../sources/mllp.source';

const TLS_OFF = {
  enabled: false,
  cert: '',
  key: '',
  passphrase: '',
  ca: '',
  requestCert: false,
  rejectUnauthorized: true,
  servername: '',
};
let n = 0;
/** An ADT^A01 whose MRN is the marker (PHI: must reach the store, never a log line); the control id is not. */
const message = (marker: string, controlId = `CTR${++n}`) => adt(controlId, { mrn: marker });
const clients: RawClient[] = [];
const sent = new Map<string, string>();

runSourceContract<MllpSourceConfig>('mllp', {
  config: () =>
    ({
      host: '127.0.0.1',
      port: 0,
      maxConnections: 10,
      idleTimeoutMs: 0,
      maxMessageSize: 1024 * 1024,
      maxPendingFrames: 16,
      shutdownGraceMs: 1000,
      ackMode: 'auto',
      contentType: 'application/hl7-v2',
      tls: TLS_OFF,
    }) as MllpSourceConfig,
  context: { extractHeaders: (_ct, body) => extractHeaders(body), split: (_ct, body) => splitHl7Batch(body) },
  create: (ctx) => new MllpSource(ctx),
  async deliver(source, marker, again) {
    // A sender resends the same message (same control id) after a negative ACK.
    const text = again ? sent.get(marker)! : message(marker);
    sent.set(marker, text);
    const c = await RawClient.connect((source as MllpSource).address()!.port);
    clients.push(c);
    c.write(frame(text));
    return { acked: c.waitAcks(1, 15_000).then((acks) => field(acks[0] ?? '', 'MSA', 1) === 'AA') };
  },
  ports: (source) => [(source as MllpSource).address()?.port].filter((p): p is number => !!p),
  teardown: async () => clients.forEach((c) => c.close()),
});

const receiver = new Receiver();
const ackOnce = (code: 'AE' | 'AR' | 'silent') => {
  const normal = receiver.reply;
  receiver.reply = (m) => {
    receiver.reply = normal;
    return code === 'silent' ? 'silent' : [buildAck(readRawHeader(Buffer.from(m, 'latin1')), code)];
  };
};

runSinkContract<MllpSinkConfig>('mllp', {
  setup: () => receiver.listen(),
  teardown: () => receiver.close(),
  config: () =>
    ({
      host: '127.0.0.1',
      port: receiver.port,
      connectTimeoutMs: 1000,
      // Longer than the contract's call timeout: only the delivery's signal can end a hung call in time.
      ackTimeoutMs: 10_000,
      connections: 1,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      onReject: 'dead',
      body: 'original',
      maxMessageSize: 1e6,
      tls: TLS_OFF,
    }) as MllpSinkConfig,
  create: (ctx) => new MllpSink(ctx),
  bundle: () => ({ resourceType: 'Bundle', type: 'collection' }),
  message: (marker) => ({ contentType: 'application/hl7-v2', body: Buffer.from(message(marker), 'latin1') }),
  fault: (kind) => ackOnce(kind === 'retryable' ? 'AE' : kind === 'dead' ? 'AR' : 'silent'),
  // The receiving system knows a message by its control id (MSH-10): a replay is the same message.
  received: (marker) =>
    new Set(receiver.received.filter((m) => m.includes(marker)).map((m) => field(m, 'MSH', 10))).size,
});

runTransformContract('hl7v2', {
  create: () => new Hl7v2Transform(),
  samples: (marker) => [{ contentType: 'application/hl7-v2', body: message(marker, 'CTR-T1') }],
  invalid: [{ contentType: 'application/hl7-v2', body: 'this is not HL7' }],
});
