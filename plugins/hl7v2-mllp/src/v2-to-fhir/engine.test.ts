/**
 * The conversion inside the real engine: a file source picks up an HL7 v2 batch, the store keeps
 * each message with the headers the transform extracted, the processor converts with
 * Hl7v2Transform, a validate step checks the Bundle, and the file sink writes it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine, silentLogger } from '@ferry/core';

const ADT = (ctrl: string, mrn: string) =>
  [
    `MSH|^~\\&|ADT|GHH|EHR|RCV|20240102103000+0100||ADT^A01^ADT_A01|${ctrl}|P|2.5.1`,
    'EVN|A01|20240102103000+0100',
    `PID|1||${mrn}^^^MRN^MR||Doe^Jane||19800515|F`,
    `PV1|1|I|W^1^2|||||||||||||||||V-${ctrl}^^^MRN^VN`,
  ].join('\r');
const ORU = [
  'MSH|^~\\&|LAB|GHH|EHR|RCV|20240102120000+0100||ORU^R01^ORU_R01|L1|P|2.5.1',
  'PID|1||111^^^MRN^MR||Doe^Jane',
  'OBR|1||F1^LAB|718-7^Hemoglobin^LN|||20240102080000+0100|||||||||||||||20240102113000+0100||HM|F',
  'OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|12-16|N|||F',
].join('\r');

describe('engine: file source -> Hl7v2Transform -> validate -> file sink', () => {
  let dir: string;
  let engine: Engine | undefined;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-hl7conv-'));
    fs.mkdirSync(path.join(dir, 'inbox'));
  });
  afterAll(async () => {
    await engine?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a batch file becomes one valid canonical Bundle per message, with HL7 headers stored', async () => {
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: [
          {
            package: '@ferry/plugin-hl7v2-mllp',
            config: { conversion: { identifierSystems: { MRN: 'urn:oid:1.2.3.4' } } },
          },
        ],
        sources: {
          drop: {
            type: 'file',
            dir: path.join(dir, 'inbox'),
            pattern: '*.hl7',
            pollIntervalMs: 50,
            stableMs: 50,
            batch: true,
          },
        },
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'json' } },
        routes: [
          { id: 'v2', from: ['drop'], when: { messageType: ['ADT^*', 'ORU^R01'] }, steps: ['validate'], to: ['out'] },
        ],
        // Not needed here (it bound the default 8080 and would make an initial admin token).
        admin: { enabled: false },
      },
    });
    await engine.start();
    const batch = ['FHS|^~\\&|ADT', 'BHS|^~\\&|ADT', ADT('A1', '111'), ADT('A2', '222'), ORU, 'BTS|3', 'FTS|1'].join(
      '\r',
    );
    fs.writeFileSync(path.join(dir, 'inbox', 'feed.hl7'), batch);
    const deadline = Date.now() + 20_000;
    let files: string[] = [];
    while (Date.now() < deadline) {
      files = fs.existsSync(path.join(dir, 'out'))
        ? fs.readdirSync(path.join(dir, 'out')).filter((f) => f.endsWith('.json'))
        : [];
      if (files.length >= 3) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(files).toHaveLength(3);
    await engine.waitForIdle(10_000); // statuses are recorded just after the sink wrote the files
    const bundles = files.map((f) => JSON.parse(fs.readFileSync(path.join(dir, 'out', f), 'utf8')));
    const patients = bundles.flatMap((b) =>
      b.entry
        .filter((e: { resource?: { resourceType: string } }) => e.resource?.resourceType === 'Patient')
        .map((e: { resource: { identifier: { system: string; value: string }[] } }) => e.resource.identifier[0]),
    );
    expect(patients.map((i: { value: string }) => i.value).sort()).toEqual(['111', '111', '222']);
    expect(new Set(patients.map((i: { system: string }) => i.system))).toEqual(new Set(['urn:oid:1.2.3.4']));
    const report = bundles
      .flatMap((b) => b.entry)
      .find((e: { resource?: { resourceType: string } }) => e.resource?.resourceType === 'DiagnosticReport');
    expect(report.resource.status).toBe('final');
    const stored = await engine.store.listMessages({ limit: 10 });
    const types = stored.map((m) => `${m.headers.messageType} ${m.headers.orderingKey} ${m.status}`).sort();
    expect(types).toEqual(['ADT^A01 MRN|111 delivered', 'ADT^A01 MRN|222 delivered', 'ORU^R01 MRN|111 delivered']);
  });
});
