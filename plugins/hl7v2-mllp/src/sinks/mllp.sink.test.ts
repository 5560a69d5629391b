import path from 'node:path';
import type { FerryError } from '@ferry/core';
import { configure, validateWithSchema, type ConfigProblem, type Delivery } from '@ferry/core';
import { silentLogger } from '../../../../core/src/logging/logger';
import { buildAck } from '../ack/ack.builder';
import { readRawHeader } from '../ack/msh';
import { adt, Receiver } from '../mllp/__fixtures__/support';
import { oruBundle, siuBundle } from '../fhir-to-v2/__fixtures__/bundles';
import { controlIdFor } from '../fhir-to-v2/fhir-to-v2';
import { MllpSink, normalizeHl7 } from './mllp.sink';
import { mllpSinkSchema, type MllpSinkConfig, type MllpSinkInput } from '../mllp/mllp.schema';

const ackFor = (code: 'AA' | 'AE' | 'AR' | 'CA') => (m: string) => [
  buildAck(readRawHeader(Buffer.from(m, 'latin1')), code),
];

function sinkFor(port: number, cfg: MllpSinkInput = {}): MllpSink {
  const config: MllpSinkInput = {
    host: '127.0.0.1',
    port,
    connectTimeoutMs: 1000,
    // long enough for a loaded CI machine; the ACK-timeout test sets its own short one
    ackTimeoutMs: 5000,
    connections: 1,
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    onReject: 'dead',
    body: 'original',
    maxMessageSize: 1e6,
    tls: {
      enabled: false,
      cert: '',
      key: '',
      passphrase: '',
      ca: '',
      requestCert: false,
      rejectUnauthorized: true,
      servername: '',
    },
    ...cfg,
  };
  return new MllpSink({ id: 'out', config, logger: silentLogger() });
}

function delivery(body: string | Buffer, contentType = 'application/hl7-v2'): Delivery {
  return {
    deliveryId: 'd1',
    attempt: 1,
    routeId: 'r1',
    bundle: { resourceType: 'Bundle', type: 'collection' },
    message: {
      id: 'm1',
      seq: 1,
      sourceId: 's',
      contentType,
      body: typeof body === 'string' ? Buffer.from(body, 'latin1') : body,
      headers: {},
      receivedAt: new Date(),
      status: 'routed',
    },
  };
}

async function failure(p: Promise<unknown>): Promise<FerryError> {
  try {
    await p;
  } catch (e) {
    return e as FerryError;
  }
  throw new Error('expected a failure');
}

describe('MllpSink', () => {
  const receivers: Receiver[] = [];
  const sinks: MllpSink[] = [];
  const setup = async (cfg: MllpSinkInput = {}) => {
    const r = new Receiver();
    await r.listen();
    const s = sinkFor(r.port, cfg);
    await s.start();
    receivers.push(r);
    sinks.push(s);
    return { r, s };
  };
  afterAll(async () => {
    for (const s of sinks) await s.stop();
    for (const r of receivers) await r.close();
  });

  it('format hl7v2: the Bundle is sent as HL7 v2 built with the receiver profile; control id stable across retries', async () => {
    const { r, s } = await setup({
      format: 'hl7v2',
      profile: { sendingFacility: 'GHH', receivingApplication: 'LIS', applicationAckType: 'NE' },
    });
    const d = { ...delivery('{}', 'application/fhir+json'), bundle: oruBundle() };
    await s.deliver(d);
    await s.deliver({ ...d, attempt: 2 });
    expect(r.received).toHaveLength(2);
    expect(r.received[0]).toBe(r.received[1]);
    const msh = readRawHeader(Buffer.from(r.received[0], 'utf8'))!;
    expect(msh).toMatchObject({
      messageType: 'ORU^R01^ORU_R01',
      controlId: controlIdFor('m1|out'),
      sendingFacility: 'GHH',
      receivingApplication: 'LIS',
      version: '2.5.1',
      charset: 'UNICODE UTF-8',
    });
    expect(r.received[0].split('\r').map((l) => l.slice(0, 3))).toEqual([
      'MSH',
      'PID',
      'OBR',
      'OBX',
      'OBX',
      'OBX',
      'OBX',
      'NTE',
      'SPM',
      '',
    ]);
  });

  it('format hl7v2: a Bundle that cannot be expressed is dead with the reason; nothing is sent', async () => {
    const { r, s } = await setup({ format: 'hl7v2' });
    const b = siuBundle();
    delete (b.entry!.find((e) => e.resource?.resourceType === 'Appointment')!.resource as { identifier?: unknown })
      .identifier;
    const err = await failure(s.deliver({ ...delivery('{}', 'application/fhir+json'), bundle: b }));
    expect(err).toMatchObject({ retryable: false, kind: 'input', code: 'FERRY_E_DELIVERY_MLLP_FHIR_TO_V2' });
    expect(err.message).toBe(
      'message m1: cannot express the Bundle in HL7 v2: Appointment.identifier is required for SCH-1/SCH-2 (placer/filler appointment id)',
    );
    expect(r.received).toEqual([]);
    expect(r.connections).toBe(0);
  });

  it('format hl7v2: the profile is checked with the sink config (strict keys, named errors)', () => {
    const check = (cfg: object) => {
      const problems: ConfigProblem[] = [];
      const out = validateWithSchema<MllpSinkConfig>(mllpSinkSchema, cfg, 'sinks.lab', problems);
      return { out, problems: problems.map((p) => `${p.path}: ${p.message}`) };
    };
    expect(
      check({
        format: 'hl7v2',
        profile: { version: '2.3', segments: { NK1: false }, codeTables: { 'OBX-3': { codes: { a: 'b' } } } },
      }).problems,
    ).toEqual([]);
    expect(check({ format: 'hl7v2', profile: { sendingApp: 'X' } }).problems).toEqual([
      expect.stringMatching(/^sinks\.lab\.profile\.sendingApp: unknown hl7v2 profile key/),
    ]);
    expect(check({ format: 'fhir' }).problems).toEqual([expect.stringMatching(/^sinks\.lab\.format: /)]);
    // FHIRPath rules and Z-segments: every problem, each by its path
    expect(
      check({
        format: 'hl7v2',
        profile: {
          version: '9',
          messageTypeRules: [
            { when: 'entry.(', type: 'ADT^A28' },
            { when: 'true', type: 'A28' },
          ],
          zSegments: [{ segment: 'ZPI', resource: 'Patient', fields: { 1: 'name.(' } }],
        },
      }).problems.map((p) => p.split(': ')[0]),
    ).toEqual([
      'sinks.lab.profile.version',
      'sinks.lab.profile.messageTypeRules[0].when',
      'sinks.lab.profile.messageTypeRules[1].type',
      'sinks.lab.profile.zSegments[0].fields.1',
    ]);
    expect(check({}).out.format).toBe('passthrough');
  });

  it('config/examples/fhir-to-hl7v2.yaml validates', async () => {
    const { config } = await configure({
      configFile: path.resolve(__dirname, '../../../../config/examples/fhir-to-hl7v2.yaml'),
      env: { ATHENA_CLIENT_ID: 'x', ATHENA_CLIENT_SECRET: 'y' },
    });
    expect(Object.keys(config.sinks)).toEqual(['scheduling', 'lab']);
  });

  it('AA -> delivered, over one persistent connection, original bytes sent', async () => {
    const { r, s } = await setup();
    for (const id of ['X1', 'X2', 'X3']) await s.deliver(delivery(adt(id)));
    expect(r.received).toEqual([adt('X1'), adt('X2'), adt('X3')]);
    expect(r.connections).toBe(1);
  });

  it('AE -> retryable, AR -> permanent (dead), AR with onReject: retry -> retryable', async () => {
    const { r, s } = await setup();
    r.reply = ackFor('AE');
    const ae = await failure(s.deliver(delivery(adt('E1'))));
    expect(ae).toMatchObject({ retryable: true, code: 'FERRY_E_DELIVERY_MLLP_ERROR_ACK' });
    r.reply = ackFor('AR');
    const ar = await failure(s.deliver(delivery(adt('R1'))));
    expect(ar).toMatchObject({ retryable: false, kind: 'input', code: 'FERRY_E_DELIVERY_MLLP_REJECTED' });
    const { r: r2, s: s2 } = await setup({ onReject: 'retry' });
    r2.reply = ackFor('AR');
    expect(await failure(s2.deliver(delivery(adt('R2'))))).toMatchObject({ retryable: true });
  });

  it('ACK timeout -> retryable; the next delivery reconnects and succeeds', async () => {
    const { r, s } = await setup({ ackTimeoutMs: 300 });
    r.reply = () => 'silent';
    const t = await failure(s.deliver(delivery(adt('T1'))));
    expect(t).toMatchObject({ retryable: true });
    expect(t.message).toMatch(/no ACK/);
    r.reply = ackFor('AA');
    await s.deliver(delivery(adt('T2')));
    expect(r.connections).toBe(2);
  });

  it('skips ACKs for other control ids (stale or late application ACKs)', async () => {
    const { r, s } = await setup();
    r.reply = (m) => {
      const h = readRawHeader(Buffer.from(m, 'latin1'))!;
      return [buildAck({ ...h, controlId: 'OLD' }, 'AA'), buildAck(h, 'CA'), buildAck(h, 'AA')];
    };
    await s.deliver(delivery(adt('K1')));
    r.reply = ackFor('AR');
    // the late AA for K1 must not be taken for K2's answer
    expect(await failure(s.deliver(delivery(adt('K2'))))).toMatchObject({ retryable: false });
  });

  it('enhanced mode: after CA, waits for the application ACK the message asks for (MSH-16 AL)', async () => {
    const { r, s } = await setup();
    const enhanced = (id: string, m16: string) => adt(id, { msh15: 'AL', msh16: m16 });
    r.reply = (m) => {
      const h = readRawHeader(Buffer.from(m, 'latin1'))!;
      return [buildAck(h, 'CA'), buildAck(h, h.controlId.startsWith('BAD') ? 'AR' : 'AA')];
    };
    await s.deliver(delivery(enhanced('EN1', 'AL')));
    expect(await failure(s.deliver(delivery(enhanced('BAD1', 'AL'))))).toMatchObject({
      retryable: false,
      code: 'FERRY_E_DELIVERY_MLLP_REJECTED',
    });
    // MSH-16 NE: the CA is the outcome; the trailing AR (sent anyway by this receiver) is skipped later
    await s.deliver(delivery(enhanced('BAD2', 'NE')));
    await s.deliver(delivery(adt('AFTER')));
  });

  it('receiver down -> retryable with reconnect backoff; delivers once it is up', async () => {
    const probe = new Receiver();
    await probe.listen();
    const port = probe.port;
    await probe.close();
    const s = sinkFor(port);
    sinks.push(s);
    const e1 = await failure(s.deliver(delivery(adt('U1'))));
    expect(e1).toMatchObject({ retryable: true, code: 'FERRY_E_DELIVERY_MLLP_CONNECT' });
    const r = new Receiver();
    receivers.push(r);
    await r.listen(port);
    await s.deliver(delivery(adt('U1')));
    expect(r.received).toHaveLength(1);
  });

  it('refuses what it cannot send: no body, or not HL7 v2 -> permanent', async () => {
    const { s } = await setup();
    const d = delivery('x');
    delete d.message.body;
    expect(await failure(s.deliver(d))).toMatchObject({ retryable: false, code: 'FERRY_E_DELIVERY_MLLP_NO_BODY' });
    expect(await failure(s.deliver(delivery('{}', 'application/fhir+json')))).toMatchObject({
      retryable: false,
      code: 'FERRY_E_DELIVERY_MLLP_NOT_HL7',
    });
  });

  it('body: normalized re-encodes with standard delimiters, CR ends and UTF-8', async () => {
    const { r, s } = await setup({ body: 'normalized' });
    const odd = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from(
        'MSH#*@!%#APP#FAC#R#RF#2024##ADT*A04#N1#P#2.5\nPID#1##42*!F! and |**HOSP*MR##M\u00fcller*J\n',
        'utf8',
      ),
    ]);
    await s.deliver(delivery(odd));
    expect(r.received[0]).toBe(
      Buffer.from(
        'MSH|^~\\&|APP|FAC|R|RF|2024||ADT^A04|N1|P|2.5\rPID|1||42^# and \\F\\^^HOSP^MR||M\u00fcller^J\r',
        'utf8',
      ).toString('latin1'),
    );
    expect(normalizeHl7(Buffer.from(adt('Z')))).toEqual(Buffer.from(adt('Z')));
  });

  it('several connections carry deliveries in parallel', async () => {
    const { r, s } = await setup({ connections: 3 });
    await Promise.all(Array.from({ length: 9 }, (_, i) => s.deliver(delivery(adt(`P${i}`)))));
    expect(r.received).toHaveLength(9);
    expect(r.connections).toBe(3);
  });
});
