/**
 * `format: hl7v2` on the core file and http sinks (issue #23): the core sinks call the hl7v2-mllp
 * plugin's converter through the sink context's `fromFhir` hook (the transform's `outputFormats` /
 * `fromFhir`), never its code. The engine started from YAML polls the athena simulator; a lab result
 * is written as an HL7 v2 file (0600, one per message, replaced on a replay) and POSTed to a real HTTP
 * receiver as application/hl7-v2. A bad profile on either sink is refused when the config loads,
 * every problem by its path.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { configure, createLogger, Engine, silentLogger, type ConfigError } from '@ferry/core';
import { parseHl7 } from '@ferry/plugin-hl7v2-mllp';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../simulators/athena';

describe('file and http sinks with format: hl7v2 (engine from YAML, athena simulator)', () => {
  let sim: AthenaSimulator;
  let engine: Engine | undefined;
  let dir: string;
  let server: http.Server;
  let port = 0;
  const posted: { contentType?: string; body: string; deliveryId?: string }[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-v2sinks-'));
    sim = await AthenaSimulator.start();
    seedPractice(sim);
    sim.upsertPatient(PRACTICE, samplePatient(0, { patientid: '100' }));
    sim.subscribe(PRACTICE, 'labresults', 'ferry-client');
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        posted.push({
          contentType: req.headers['content-type'],
          body: Buffer.concat(chunks).toString('utf8'),
          deliveryId: req.headers['x-ferry-delivery-id'] as string,
        });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as { port: number }).port;
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
    feeds: [labresults]
    pollIntervalMs: 200
    rateLimit: { qps: 200 }
sinks:
  lab-files:
    type: file
    dir: ${path.join(dir, 'out')}
    format: hl7v2
    profile: { sendingApplication: FERRY, receivingApplication: LISFILE, identifierSystems: { ATHENA: 'urn:athenahealth:athenanet:patient:${PRACTICE}' } }
  lab-http:
    type: http
    url: http://127.0.0.1:${port}/v2
    format: hl7v2
    profile:
      receivingApplication: LISHTTP
      identifierSystems: { ATHENA: 'urn:athenahealth:athenanet:patient:${PRACTICE}' }
      messageTypeRules: [{ when: "entry.resource.ofType(Observation).exists()", type: 'ORU^R01' }]
    retry: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 }
routes:
  - id: labs
    from: [athena]
    to: [lab-files, lab-http]
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
    await new Promise<void>((r) => server.close(() => r()));
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
  const seg = (text: string, name: string) =>
    text
      .split('\r')
      .find((l) => l.startsWith(`${name}|`))
      ?.split('|') ?? [];

  it('a lab result becomes an ORU^R01 file (0600, <message id>.hl7) and an ORU^R01 POST (application/hl7-v2); same control id on a replay', async () => {
    sim.addLabResult(PRACTICE, '100', {
      labresultid: 9101,
      departmentid: '1',
      status: 'FINAL',
      observationdatetime: '2026-02-10T09:00:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      analytes: [{ analytename: 'Glucose', value: '105', units: 'mg/dL', loinc: '2345-7', referencerange: '70-99' }],
    });
    const out = path.join(dir, 'out');
    await until(() => posted.length >= 1 && readdirSync(out).some((f) => f.endsWith('.hl7')));
    await engine!.waitForIdle(15_000);
    const [file] = readdirSync(out).filter((f) => f.endsWith('.hl7'));
    const [msg] = await engine!.store.listMessages({ sourceId: 'athena', limit: 10 });
    expect(file).toBe(`${msg.id}.hl7`);
    expect(statSync(path.join(out, file)).mode & 0o777).toBe(0o600);
    const text = readFileSync(path.join(out, file), 'utf8');
    expect(text.endsWith('\r\n')).toBe(true);
    const parsed = parseHl7(text.trimEnd());
    expect(parsed.msh.get(9)).toBe('ORU');
    expect(seg(text, 'MSH')[4]).toBe('LISFILE');
    expect(seg(text, 'PID')[3]).toBe('100^^^ATHENA');
    expect(seg(text, 'OBX')[3]).toMatch(/^2345-7\^/);
    expect(seg(text, 'OBX')[5]).toBe('105');

    expect(posted[0].contentType).toBe('application/hl7-v2');
    expect(seg(posted[0].body, 'MSH')[4]).toBe('LISHTTP');
    expect(seg(posted[0].body, 'MSH')[8]).toBe('ORU^R01^ORU_R01');
    expect(seg(posted[0].body, 'OBX')[5]).toBe('105');
    // the two sinks seed their control ids with their own id: different
    const fileCid = seg(text, 'MSH')[9];
    expect(seg(posted[0].body, 'MSH')[9]).not.toBe(fileCid);
    const deliveries = await engine!.store.deliveries(msg.id);
    expect(deliveries.map((d) => `${d.sinkId}:${d.status}`).sort()).toEqual([
      'lab-files:delivered',
      'lab-http:delivered',
    ]);

    // a replay writes the same file again (replaced, same control id) and posts the same control id
    await engine!.store.replay({ ids: [msg.id] });
    await until(() => posted.length >= 2);
    await engine!.waitForIdle(15_000);
    expect(readdirSync(out).filter((f) => f.endsWith('.hl7'))).toEqual([file]);
    expect(seg(readFileSync(path.join(out, file), 'utf8'), 'MSH')[9]).toBe(fileCid);
    expect(seg(posted[1].body, 'MSH')[9]).toBe(seg(posted[0].body, 'MSH')[9]);
  });

  it('a bad profile on a file or http sink is refused when the config loads, every problem by path; hl7v2 without the plugin too', async () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      `
plugins: ['@ferry/plugin-hl7v2-mllp']
store: { kind: sqlite, path: ${path.join(dir, 'bad.db')} }
sinks:
  f: { type: file, dir: ${dir}, format: hl7v2, profile: { version: '9', messageTypeRules: [{ when: 'entry.(', type: ADT^A28 }] } }
  h: { type: http, url: 'http://127.0.0.1:1/x', format: hl7v2, profile: { zSegments: [{ segment: PID, resource: Patient, fields: { 1: id } }] } }
routes: []
admin: { enabled: false }
`,
    );
    const err = (await configure({ configFile: bad, env: {}, logger: silentLogger() }).catch((e) => e)) as ConfigError;
    expect(err.problems.map((p) => p.path)).toEqual([
      'sinks.f.profile.version',
      'sinks.f.profile.messageTypeRules[0].when',
      'sinks.h.profile.zSegments[0].segment',
    ]);
    writeFileSync(
      bad,
      `store: { kind: sqlite, path: ${path.join(dir, 'bad.db')} }\nsinks:\n  f: { type: file, dir: ${dir}, format: hl7v2 }\n  g: { type: file, dir: ${dir}, format: 'JSON!' }\nroutes: []\nadmin: { enabled: false }\n`,
    );
    const err2 = (await configure({ configFile: bad, env: {}, logger: silentLogger() }).catch((e) => e)) as ConfigError;
    expect(err2.problems.map((p) => `${p.path}: ${p.message}`)).toEqual([
      expect.stringMatching(/^sinks\.f\.format: "hl7v2": not one of ndjson, json, and no loaded plugin writes it/),
      expect.stringMatching(/^sinks\.g\.format: must be one of ndjson, json or a format a loaded plugin writes/),
    ]);
  });
});
