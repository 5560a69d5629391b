/**
 * FHIR -> HL7 v2 end to end: the engine started from YAML polls athena (simulator) for appointments
 * and lab results, converts them to canonical FHIR, and an MLLP sink with `format: hl7v2` sends
 * SIU^S12/S15 and ORU^R01 to a real v2 receiver over TCP, which checks each message and answers AA.
 * One connection: the receiver gets each patient's messages in the order athena reported them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createLogger, Engine } from '@ferry/core';
import { buildAck, encodeFrame, MllpDeframer, parseHl7, readRawHeader } from '@ferry/plugin-hl7v2-mllp';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';

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

describe('athena appointments and lab results -> HL7 v2 over MLLP (engine from YAML)', () => {
  let sim: AthenaSimulator;
  let engine: Engine | undefined;
  const rx = new V2Receiver();
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-v2out-'));
    sim = await AthenaSimulator.start();
    seedPractice(sim);
    sim.upsertPatient(PRACTICE, samplePatient(0, { patientid: '100' }));
    for (const feed of ['appointments', 'labresults']) sim.subscribe(PRACTICE, feed, 'ferry-client');
    await rx.listen();
    writeFileSync(
      path.join(dir, 'ferry.yaml'),
      `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-athena-rest', '@ferry/plugin-hl7v2-mllp']
sources:
  athena:
    type: athena-rest
    baseUrl: ${sim.url}
    clientId: ferry-client
    clientSecret: ferry-secret
    practiceId: '${PRACTICE}'
    feeds: [appointments, labresults]
    pollIntervalMs: 200
    rateLimit: { qps: 200 }
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
      sendingFacility: CLINIC
      receivingApplication: SCHED
      identifierSystems: { ATHENA: 'urn:athenahealth:athenanet:patient:${PRACTICE}', APPT: 'urn:athenahealth:athenanet:appointment:${PRACTICE}' }
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
routes:
  - id: athena-to-v2
    from: [athena]
    when: { messageType: ['athena.appointment', 'athena.labresult'] }
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
    await sim?.stop();
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
  /** Fields of the first `name` segment: index n is field n (MSH: index n is MSH-(n+1), MSH-1 being the separator). */
  const seg = (text: string, name: string) =>
    text
      .split('\r')
      .find((l) => l.startsWith(`${name}|`))
      ?.split('|') ?? [];

  it('an athena appointment arrives as SIU^S12, its cancellation as SIU^S15, a lab result as ORU^R01; all ACKed AA, in order', async () => {
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '7001',
      date: '03/07/2026',
      starttime: '09:30',
      duration: 30,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '100',
      providerid: '1',
      appointmenttypeid: '11',
      appointmenttype: 'FOLLOW UP',
    });
    await until(() => rx.received.length >= 1);
    sim.upsertAppointment(
      PRACTICE,
      {
        appointmentid: '7001',
        date: '03/07/2026',
        starttime: '09:30',
        duration: 30,
        departmentid: '21',
        appointmentstatus: 'x',
        patientid: '100',
        providerid: '1',
        appointmenttypeid: '11',
        appointmenttype: 'FOLLOW UP',
        cancelreasonname: 'Patient request',
      },
      'CancelAppointment',
    );
    sim.addLabResult(PRACTICE, '100', {
      labresultid: 9001,
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-02-10T09:00:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      analytes: [{ analytename: 'Glucose', value: '105', units: 'mg/dL', loinc: '2345-7', referencerange: '70-99' }],
    });
    await until(() => rx.received.length >= 3);
    await engine!.waitForIdle(15_000);

    const types = rx.received.map((m) => seg(m, 'MSH')[8]);
    expect(types.slice(0, 2)).toEqual(['SIU^S12^SIU_S12', 'SIU^S15^SIU_S12']);
    expect(types).toContain('ORU^R01^ORU_R01');
    const [s12, s15] = rx.received;
    expect(seg(s12, 'MSH').slice(2, 5)).toEqual(['FERRY', 'CLINIC', 'SCHED']);
    expect(seg(s12, 'SCH')[2]).toBe('7001^APPT');
    // 09:30 at the US/Pacific department = 17:30 UTC
    expect(seg(s12, 'SCH')[11]).toBe('^^M30^20260307173000.000+0000^20260307180000.000+0000');
    expect(seg(s12, 'SCH')[25]).toBe('Booked^^HL70278');
    expect(seg(s15, 'SCH')[25]).toBe('Cancelled^^HL70278');
    expect(seg(s12, 'PID')[3]).toBe('100^^^ATHENA');
    expect(seg(s12, 'AIS')[3]).toMatch(/^11\^FOLLOW UP\^/);
    const oru = rx.received.find((m) => seg(m, 'MSH')[8] === 'ORU^R01^ORU_R01')!;
    expect(seg(oru, 'PID')[3]).toBe('100^^^ATHENA');
    expect(seg(oru, 'OBX').slice(2, 7)).toEqual(['NM', seg(oru, 'OBX')[3], '', '105', seg(oru, 'OBX')[6]]);
    expect(seg(oru, 'OBX')[3]).toMatch(/^2345-7\^/);
    expect(seg(oru, 'OBX')[7]).toBe('70-99');
    // every control id distinct; every delivery delivered (the receiver answered AA)
    expect(new Set(rx.received.map((m) => seg(m, 'MSH')[9])).size).toBe(rx.received.length);
    const msgs = await engine!.store.listMessages({ sourceId: 'athena', limit: 100 });
    const routed = [];
    for (const m of msgs) routed.push(...(await engine!.store.deliveries(m.id)));
    expect(routed.length).toBeGreaterThanOrEqual(3);
    expect(
      routed
        .map((d) => `${d.sinkId}:${d.status}${d.lastError ? ` ${d.lastError.message}` : ''}`)
        .every((s) => s === 'v2:delivered'),
    ).toBe(true);
  });
});
