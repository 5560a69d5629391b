/**
 * Epic -> HL7 v2 end to end (issue #23): the engine started from YAML exports a Patient and its vital
 * signs from the Epic simulator (SMART backend JWT auth for real), converts them to canonical FHIR, and
 * the MLLP sink with `format: hl7v2` sends them to a real v2 receiver over TCP that parses each message
 * and answers AA. Epic Observations reference their Patient by literal id only (`Patient/<id>`, no
 * identifier): the sink takes the store's newest canonical Patient with that id (the read is audited)
 * to write PID. The Patient arrives first (ADT^A31, strict patient order), then one ORU^R01 per vital.
 * A polled Observation whose Patient Ferry never stored: the poll source reads the Patient from Epic
 * (`GET Patient/<id>`, audited as vendor.read, not stored); one Epic does not have either is a dead
 * delivery naming Observation.subject and PID-3.
 */
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { exportJWK } from 'jose';
import { createLogger, Engine } from '@ferry/core';
import { buildAck, encodeFrame, MllpDeframer, parseHl7, readRawHeader } from '@ferry/plugin-hl7v2-mllp';
import { EpicSimulator, EPIC_MRN_OID, epicVital, seedEpicSandbox } from '../simulators/epic/epic-simulator';

/** A v2 receiver: parses every message (AR when it cannot), answers AA. */
class V2Receiver {
  readonly received: string[] = [];
  port = 0;
  private readonly sockets = new Set<net.Socket>();
  private readonly server = net.createServer((s) => {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    const d = new MllpDeframer({ maxMessageSize: 1e6 });
    s.on('data', (chunk) => {
      for (const ev of d.push(chunk)) {
        if (ev.kind !== 'frame') continue;
        const text = ev.payload.toString('utf8');
        let code: 'AA' | 'AR' = 'AA';
        try {
          parseHl7(text);
          this.received.push(text);
        } catch {
          code = 'AR';
        }
        s.write(encodeFrame(buildAck(readRawHeader(ev.payload), code)));
      }
    });
  });
  async listen() {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  async close() {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('Epic Patient + Observations -> HL7 v2 over MLLP (engine from YAML, Epic simulator)', () => {
  const sim = new EpicSimulator({ pageSize: 5, bulkPollsUntilDone: 1, bulkRetryAfterSec: 0 });
  const rx = new V2Receiver();
  let engine: Engine | undefined;
  let dir: string;
  let patientId: string;
  const stranger = 'eSTRANGERpatientNotExported3';
  const walkIn = 'eWALKINpatientOnlyAtEpic00003';

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-epic-v2-'));
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'epic-key.pem');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const pub = await exportJWK(createPublicKey(privateKey));
    sim.registerClient('ferry-e2e', { keys: [{ ...pub, kid: 'e2e-1', alg: 'RS384', use: 'sig' }] });
    await sim.start();
    patientId = seedEpicSandbox(sim).patientId;
    for (let i = 0; i < 3; i++) sim.store.put(epicVital(patientId, i));
    sim.store.put(epicVital(stranger, 0));
    // a patient Epic has but Ferry never exported (not in the cohort), with one vital
    sim.store.put({
      resourceType: 'Patient',
      id: walkIn,
      active: true,
      identifier: [{ use: 'usual', type: { text: 'EPI' }, system: EPIC_MRN_OID, value: '204444' }],
      name: [{ use: 'official', family: 'Nguyen', given: ['Bao'] }],
      gender: 'male',
      birthDate: '1990-01-02',
    });
    sim.store.put(epicVital(walkIn, 5));
    sim.groups.set('ferry-cohort', [patientId]);
    await rx.listen();
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins:
  - package: '@ferry/plugin-epic'
    config: { mrnSystems: ['${EPIC_MRN_OID}'], canonicalMrnSystem: 'urn:example:mrn' }
  - '@ferry/plugin-hl7v2-mllp'
sources:
  epic-bulk:
    type: epic-bulk-export
    baseUrl: ${sim.baseUrl}
    clientId: ferry-e2e
    auth: { privateKeyFile: ${keyFile}, kid: e2e-1 }
    bulk: { groupId: ferry-cohort, types: [Patient, Observation], intervalMs: 0, pollMinMs: 50 }
  epic-stranger:
    type: epic-fhir-poll
    baseUrl: ${sim.baseUrl}
    clientId: ferry-e2e
    auth: { privateKeyFile: ${keyFile}, kid: e2e-1 }
    patients: ['${stranger}', '${walkIn}']
    resources: [{ type: Observation, category: vital-signs }]
    intervalMs: 300
sinks:
  v2:
    type: mllp
    host: 127.0.0.1
    port: ${rx.port}
    connections: 1
    ackTimeoutMs: 5000
    format: hl7v2
    profile:
      sendingApplication: FERRY
      receivingApplication: VITALS
      identifierSystems: { MRN: 'urn:example:mrn' }
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0, maxAttempts: 3 }
routes:
  - id: epic-to-v2
    from: [epic-bulk, epic-stranger]
    when: { messageType: ['Patient', 'Observation'] }
    ordering: strict
    to: [v2]
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`,
    );
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      logger: createLogger({ level: process.env.E2E_LOG ? 'debug' : 'error' }),
    });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await rx.close();
    await sim.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const until = async (what: () => boolean | Promise<boolean>, ms = 20_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await what()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('timed out');
  };
  const seg = (text: string, name: string) =>
    text
      .split('\r')
      .find((l) => l.startsWith(`${name}|`))
      ?.split('|') ?? [];

  it('the Patient as ADT, then each vital as ORU^R01 with PID from the stored Patient; ACKed AA, in patient order; the read audited', async () => {
    await until(() => rx.received.filter((m) => seg(m, 'MSH')[8] === 'ORU^R01^ORU_R01').length >= 3);
    await engine!.waitForIdle(15_000);
    const ours = rx.received.filter((m) => /\b203713\b/.test(seg(m, 'PID')[3] ?? ''));
    const types = ours.map((m) => seg(m, 'MSH')[8]);
    // patient order: the ADT for the Patient before its results
    expect(types[0]).toMatch(/^ADT\^A(28|31)\^ADT_A05$/);
    expect(types.slice(1)).toEqual(['ORU^R01^ORU_R01', 'ORU^R01^ORU_R01', 'ORU^R01^ORU_R01']);
    for (const oru of ours.slice(1)) {
      expect(seg(oru, 'MSH').slice(2, 5)).toEqual(['FERRY', '', 'VITALS']);
      expect(seg(oru, 'PID')[3]).toContain('203713^^^MRN');
      expect(seg(oru, 'PID')[5]).toBe('Lopez^Camila^Maria^^^^L');
      expect(seg(oru, 'PID')[7]).toBe('19870912');
      expect(seg(oru, 'OBX')[3]).toMatch(/8867-4\^Pulse\^LN/);
      expect(seg(oru, 'OBX')[11]).toBe('F');
    }
    expect(
      ours
        .slice(1)
        .map((m) => seg(m, 'OBX')[5])
        .sort(),
    ).toEqual(['70', '71', '72']);
    // every delivery of the exported messages delivered; the engine's read of the stored Patient audited (ids only)
    const bulk = await engine!.store.listMessages({ sourceId: 'epic-bulk', limit: 100 });
    for (const m of bulk) {
      const ds = await engine!.store.deliveries(m.id);
      expect(ds.map((d) => `${d.sinkId}:${d.status}${d.lastError ? ` ${d.lastError.message}` : ''}`)).toEqual([
        'v2:delivered',
      ]);
    }
    const audit = (await engine!.store.auditEntries({})).filter(
      (a) =>
        a.action === 'message.bundle.read' &&
        a.principal === 'engine' &&
        a.messageIds?.some((id) => bulk.some((b) => b.id === id)),
    );
    expect(audit.length).toBeGreaterThanOrEqual(3);
    const patientMsg = bulk.find((m) => m.headers.messageType === 'Patient')!;
    expect(
      audit.every((a) => a.target === 'sink:v2' && a.messageIds?.length === 1 && a.messageIds[0] === patientMsg.id),
    ).toBe(true);
    expect(audit.map((a) => a.detail).join(' ')).not.toMatch(/Lopez|203713/);
  });

  it('an Observation whose Patient Ferry never stored: the Patient read from Epic (audited, not stored); not at Epic either: dead, naming Observation.subject and PID-3', async () => {
    await until(() => rx.received.some((x) => /\b204444\b/.test(seg(x, 'PID')[3] ?? '')));
    const walkInOru = rx.received.find((x) => /\b204444\b/.test(seg(x, 'PID')[3] ?? ''))!;
    expect(seg(walkInOru, 'MSH')[8]).toBe('ORU^R01^ORU_R01');
    expect(seg(walkInOru, 'PID')[5]).toBe('Nguyen^Bao^^^^^L');
    expect(seg(walkInOru, 'OBX')[5]).toBe('75');
    const vendorReads = (await engine!.store.auditEntries({})).filter((a) => a.action === 'vendor.read');
    expect(vendorReads.map((a) => [a.principal, a.target, a.result])).toContainEqual([
      'engine',
      'source:epic-stranger',
      'ok',
    ]);
    expect(vendorReads.map((a) => a.detail).join(' ')).not.toMatch(/Nguyen|204444/);
    // the fetched Patient is not a stored message
    expect((await engine!.store.listMessages({ messageType: 'Patient', limit: 10 })).map((m) => m.sourceId)).toEqual([
      'epic-bulk',
    ]);

    await until(async () => {
      const ms = await engine!.store.listMessages({ sourceId: 'epic-stranger', limit: 10 });
      for (const m of ms) if ((await engine!.store.deliveries(m.id)).some((d) => d.status === 'dead')) return true;
      return false;
    });
    const ms = await engine!.store.listMessages({ sourceId: 'epic-stranger', limit: 10 });
    const m = ms.find((x) => x.headers.orderingKey === `Patient/epic-${stranger}`)!;
    const [d] = await engine!.store.deliveries(m.id);
    expect(d.status).toBe('dead');
    expect(d.attempts).toBe(1);
    expect(d.lastError?.message).toBe(
      `message ${m.id}: cannot express the Bundle in HL7 v2: Observation.subject (Patient/epic-${stranger}: not in the Bundle, not found in the store nor at the source's EHR, and the reference has no identifier) is required for PID-3 (patient identifier list)`,
    );
    expect(rx.received.some((x) => x.includes(stranger))).toBe(false);
  });
});
