/**
 * The core sources and sinks end to end: the engine started from a YAML file on real ports, HL7 v2
 * POSTed to the http source and dropped into the file source's folder, converted by the hl7v2
 * plugin, and delivered to the NDJSON and JSON file sinks and to a real FHIR R4 server (the test
 * server from test/support), including an outage of that server.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, Engine, silentLogger } from '@ferry/core';
import { startFhirServer, type FhirTestServer } from '../support';

const adt = (ctrl: string, mrn: string, family: string, trigger = 'A01') =>
  [
    `MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|FERRY|FERRY|20261129083000||ADT^${trigger}^ADT_A01|${ctrl}|P|2.5.1`,
    `EVN|${trigger}|20261129083000`,
    `PID|1||${mrn}^^^GHH^MR||${family}^Ada^^^^^L||19800101|F|||1 Main St^^Springfield^IL^62701^USA`,
    `PV1|1|I|W^101^1^GHH||||1234^Welby^Marcus^^^Dr|||MED||||||||V${ctrl}^^^GHH^VN`,
  ].join('\r') + '\r';

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('core sources and sinks end to end (engine from YAML)', () => {
  let fhir: FhirTestServer;
  let engine: Engine | undefined;
  let dir: string;

  beforeAll(async () => {
    fhir = await startFhirServer();
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-io-'));
    const yaml = `
store: { kind: sqlite, path: ${path.join(dir, 'ferry.db')} }
plugins: ['@ferry/plugin-hl7v2-mllp']
sources:
  web: { type: http, host: 127.0.0.1, port: 0, path: /hl7, token: '\${WEB_TOKEN}' }
  drop: { type: file, dir: ${path.join(dir, 'in')}, pattern: '*.hl7', pollIntervalMs: 50, stableMs: 50 }
sinks:
  archive: { type: file, dir: ${path.join(dir, 'out')}, format: ndjson, envelope: true }
  perMessage: { type: file, dir: ${path.join(dir, 'json')}, format: json }
  ehr:
    type: fhir
    baseUrl: ${fhir.baseUrl}
    timeoutMs: 2000
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
routes:
  - id: adt
    from: [web, drop]
    when: { messageType: ['ADT^*'] }
    to: [archive, perMessage, ehr]
processing: { pollIntervalMs: 50 }
admin: { enabled: false }
`;
    writeFileSync(path.join(dir, 'ferry.yaml'), yaml);
    engine = await Engine.create({
      configFile: path.join(dir, 'ferry.yaml'),
      env: { ...process.env, WEB_TOKEN: 'e2e-token' },
      logger: silentLogger(),
    });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await fhir.stop();
  });

  const web = () => engine!.source('web') as unknown as { url: string; isReady(): boolean };
  const post = (body: string, token = 'e2e-token') =>
    fetch(web().url, {
      method: 'POST',
      headers: { 'content-type': 'application/hl7-v2', authorization: `Bearer ${token}` },
      body,
    });

  it('http source -> engine -> file sinks and FHIR sink; a second message for the patient creates no second Patient', async () => {
    expect(web().isReady()).toBe(true);
    const r1 = await post(adt('E2E-1', 'MRN-E2E-1', 'Lovelace'));
    expect(r1.status).toBe(202);
    const { id: id1 } = (await r1.json()) as { id: string };
    const r2 = await post(adt('E2E-2', 'MRN-E2E-1', 'Lovelace', 'A08'));
    expect(r2.status).toBe(202);
    const { id: id2 } = (await r2.json()) as { id: string };
    await engine!.waitForIdle(10_000);

    for (const id of [id1, id2]) {
      const ds = await engine!.store.deliveries(id);
      expect(ds.map((d) => `${d.sinkId}:${d.status}${d.lastError ? ` ${d.lastError.message}` : ''}`).sort()).toEqual([
        'archive:delivered',
        'ehr:delivered',
        'perMessage:delivered',
      ]);
    }
    expect(await fhir.count('Patient')).toBe(1);
    const [p] = await fhir.search<any>('Patient');
    expect(p.name[0].family).toBe('Lovelace');

    const lines = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.messageId).sort()).toEqual([id1, id2].sort());
    expect(lines.every((l) => l.bundle.resourceType === 'Bundle')).toBe(true);
    expect(readdirSync(path.join(dir, 'json')).sort()).toEqual([`${id1}.json`, `${id2}.json`].sort());
  });

  it('bad input and a missing token are refused at the source', async () => {
    expect((await post('PID|1||x\r')).status).toBe(400);
    expect((await post(adt('E2E-X', 'MRN-X', 'Nobody'), 'wrong')).status).toBe(401);
  });

  it('file source: a dropped batch file is stored, moved to done/ and delivered', async () => {
    const batch = `BHS|^~\\&|ADT1|GHH\r${adt('E2E-F1', 'MRN-E2E-F', 'Hopper')}${adt('E2E-F2', 'MRN-E2E-G', 'Hamilton')}BTS|2\r`;
    writeFileSync(path.join(dir, 'in', 'batch.hl7'), batch);
    const deadline = Date.now() + 5000;
    while (!existsSync(path.join(dir, 'in', 'done', 'batch.hl7'))) {
      if (Date.now() > deadline) throw new Error('file not picked up');
      await wait(25);
    }
    await engine!.waitForIdle(10_000);
    expect(await fhir.count('Patient')).toBe(3);
    const drop = await engine!.store.listMessages({ sourceId: 'drop' });
    expect(drop).toHaveLength(2);
    expect(drop.every((m) => m.status === 'delivered')).toBe(true);
  });

  it('FHIR server down: deliveries are retried and land once it is back, still one Patient per MRN', async () => {
    await fhir.pause();
    const r = await post(adt('E2E-O1', 'MRN-E2E-O', 'Outage'));
    expect(r.status).toBe(202);
    const { id } = (await r.json()) as { id: string };
    const deadline = Date.now() + 5000;
    let retried;
    for (;;) {
      retried = (await engine!.store.deliveries(id)).find((x) => x.sinkId === 'ehr' && x.attempts >= 2);
      if (retried) break;
      if (Date.now() > deadline) throw new Error('no retry seen');
      await wait(50);
    }
    expect(retried.status).not.toBe('dead');
    expect(retried.lastError?.retryable).toBe(true);
    await fhir.resume();
    await engine!.waitForIdle(10_000, { includeScheduled: true });
    const ehr = (await engine!.store.deliveries(id)).find((x) => x.sinkId === 'ehr');
    expect(ehr?.status).toBe('delivered');
    expect(await fhir.count('Patient', 'family=Outage')).toBe(1);
    expect(await fhir.count('Patient')).toBe(4);
  });
});

describe('core sources and sinks keep PHI out of info logs', () => {
  it('a message with a distinctive name and MRN, rejected inputs and a failing FHIR server leave no trace of them in the log', async () => {
    const fhir = await startFhirServer();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-io-phi-'));
    const out = new PassThrough();
    let log = '';
    out.on('data', (c) => (log += c.toString()));
    const engine = await Engine.create({
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sources: {
          web: { type: 'http', port: 0, path: '/hl7' },
          drop: { type: 'file', dir: path.join(dir, 'in'), pollIntervalMs: 50, stableMs: 50 },
        },
        sinks: {
          archive: { type: 'file', dir: path.join(dir, 'out') },
          ehr: { type: 'fhir', baseUrl: fhir.baseUrl, retry: { initialDelayMs: 50, maxDelayMs: 100, jitter: 0 } },
          hook: { type: 'http', url: `${fhir.baseUrl}/not-a-hook`, retry: { maxAttempts: 1 } },
        },
        routes: [{ id: 'all', to: ['archive', 'ehr', 'hook'] }],
        processing: { pollIntervalMs: 50 },
        admin: { enabled: false },
        log: { level: 'info' },
      },
      logger: createLogger({ level: 'info' }, out),
    });
    await engine.start();
    try {
      const url = (engine.source('web') as unknown as { url: string }).url;
      const send = (body: string, ct: string) => fetch(url, { method: 'POST', headers: { 'content-type': ct }, body });
      fhir.failNext(1, 400);
      expect((await send(adt('PHI-1', 'MRN-ZQX-98765', 'Quuxington'), 'application/hl7-v2')).status).toBe(202);
      expect((await send('PID|1||MRN-ZQX-98765^^^H^MR||Quuxington^Zed\r', 'application/hl7-v2')).status).toBe(400);
      expect(
        (await send('{"resourceType":"Patient","name":[{"family":"Quuxington"', 'application/fhir+json')).status,
      ).toBe(400);
      writeFileSync(path.join(dir, 'in', 'Quuxington-MRN-ZQX-98765.hl7'), 'PID|1||MRN-ZQX-98765||Quuxington\r');
      writeFileSync(path.join(dir, 'in', 'ok.hl7'), adt('PHI-2', 'MRN-ZQX-98765', 'Quuxington'));
      const deadline = Date.now() + 5000;
      while (
        !existsSync(path.join(dir, 'in', 'error', 'Quuxington-MRN-ZQX-98765.hl7.reason')) ||
        !existsSync(path.join(dir, 'in', 'done', 'ok.hl7'))
      ) {
        if (Date.now() > deadline) throw new Error('files not handled');
        await wait(25);
      }
      await engine.waitForIdle(10_000, { includeScheduled: true });
    } finally {
      await engine.stop();
      await fhir.stop();
    }
    expect(log.length).toBeGreaterThan(0);
    expect(log).toMatch(/"level":"(warn|error)"/); // the failures were logged...
    expect(log).not.toMatch(/Quuxington/); // ...without the name
    expect(log).not.toMatch(/ZQX-98765/); // ...or the MRN
  });
});
