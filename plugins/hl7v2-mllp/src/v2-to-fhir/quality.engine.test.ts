/**
 * Data-quality issues on a real engine: MLLP over real TCP, the real SQLite store, a transform
 * worker thread, the admin API. A PID-7 of `Quibblesworth-DOB` is an issue at PID-7
 * (Patient.birthDate) under both policies: `warn` delivers the message and records the issue;
 * `fail` fails it (input error, replayable) and its enhanced-mode application ACK is AE with an
 * ERR at PID-7 (table 0357 code 102). The value itself is nowhere: not in the issues, the API,
 * the metrics or the logs.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, Engine, hashToken, newTokenSecret, type ConfigToken, type DataQualityIssue } from '@ferry/core';
import { MllpDeframer } from '../mllp/framing';
import type { MllpSource } from '../sources/mllp.source';

const GARBAGE = 'Quibblesworth-DOB';
const adt = (ctl: string, dob: string, enhanced = false) =>
  [
    `MSH|^~\\&|ADT|GHH|EHR|RCV|20240102103000+0100||ADT^A01^ADT_A01|${ctl}|P|2.5.1${enhanced ? '|||AL|AL' : ''}`,
    'EVN|A01|20240102103000+0100',
    `PID|1||${ctl}-MRN^^^MRN^MR||Doe^Jane||${dob}|F`,
    'PV1|1|I|W^1^2',
  ].join('\r') + '\r';

/** Sends one framed message and collects `count` ACK frames. */
async function send(port: number, msg: string, count: number): Promise<string[]> {
  const sock = net.connect(port, '127.0.0.1');
  const d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  const acks: string[] = [];
  try {
    await new Promise<void>((res, rej) => sock.once('connect', res).once('error', rej));
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<void>((res, rej) => {
      sock.on('data', (c) => {
        for (const ev of d.push(c)) if (ev.kind === 'frame') acks.push(ev.payload.toString('latin1'));
        if (acks.length >= count) res();
      });
      timer = setTimeout(() => rej(new Error(`only ${acks.length} of ${count} ACKs`)), 10_000);
    });
    sock.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(msg, 'latin1'), Buffer.from([0x1c, 0x0d])]));
    try {
      await done;
    } finally {
      clearTimeout(timer);
    }
    return acks;
  } finally {
    sock.destroy();
  }
}

const segs = (ack: string) =>
  ack
    .split('\r')
    .filter(Boolean)
    .map((l) => l.split('|'));

describe('data-quality issues on a real engine', () => {
  let dir: string;
  let engine: Engine;
  let logs = '';
  let tokenEntry: ConfigToken;
  let authHeader = '';
  beforeAll(async () => {
    // The admin API needs a token: an admin one (it sees everything, so the no-value checks below bite hardest).
    const t = newTokenSecret();
    tokenEntry = { id: t.id, name: 'test-admin', roles: ['admin'], hash: await hashToken(t.secret) };
    authHeader = `Bearer ${t.secret}`;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dq-'));
    const stream = new PassThrough();
    stream.on('data', (c) => (logs += c.toString('utf8')));
    engine = await Engine.create({
      logger: createLogger({ level: 'debug' }, stream),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sources: {
          lenient: { type: 'mllp', host: '127.0.0.1', port: 0 },
          strict: {
            type: 'mllp',
            host: '127.0.0.1',
            port: 0,
            dataQuality: { policy: 'warn', fields: { 'PID-7': 'fail' } },
          },
        },
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'json' } },
        routes: [{ id: 'all', from: ['lenient', 'strict'], to: ['out'] }],
        processing: { transformWorkers: 1 },
        admin: { enabled: true, host: '127.0.0.1', port: 0, auth: { tokens: [tokenEntry] } },
      },
    });
    await engine.start();
    // the conversion runs on a transform worker thread: the issues cross back in its report
    expect(engine.transformWorkers).toBe(1);
  }, 60_000);
  afterAll(async () => {
    await engine?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const port = (id: string) => engine.source<MllpSource>(id)!.address()!.port;
  const api = async (p: string) =>
    (await fetch(`${engine.adminUrl}${p}`, { headers: { authorization: authHeader } })).json() as Promise<any>;
  const byControlId = async (ctl: string) =>
    (await engine.store.listMessages({ limit: 50 })).find((m) => m.headers.controlId === ctl)!;

  test('warn (the default): AA, delivered, the issue at PID-7 stored, on the admin API and /metrics', async () => {
    const [ack] = await send(port('lenient'), adt('W1', GARBAGE), 1);
    expect(segs(ack).find((s) => s[0] === 'MSA')?.[1]).toBe('AA');
    await engine.waitForIdle(20_000);
    const m = await byControlId('W1');
    expect(m.status).toBe('delivered');
    const got = await api(`/api/messages/${m.id}`);
    expect(got.issues).toEqual([
      expect.objectContaining({
        severity: 'warning',
        location: 'PID-7',
        occurrence: 1,
        sequence: 3,
        path: 'Patient.birthDate',
        code: 'invalid-date',
        hl7ErrorCode: '102',
      }),
    ]);
    expect(got.events.filter((e: { status: string }) => e.status === 'data-quality')).toHaveLength(1);
    // The bundle went out without a birth date, and the issue says so.
    const out = fs.readdirSync(path.join(dir, 'out')).map((f) => fs.readFileSync(path.join(dir, 'out', f), 'utf8'));
    expect(out.some((b) => b.includes('W1-MRN'))).toBe(true);
    const metrics = await (
      await fetch(`${engine.adminUrl}/metrics`, { headers: { authorization: authHeader } })
    ).text();
    expect(metrics).toMatch(
      /ferry_data_quality_issues_total\{source="lenient",type="ADT\^A01",location="PID-7",reason="invalid-date",severity="warning"\} 1/,
    );
    expect(JSON.stringify(got.issues) + JSON.stringify(got.events) + metrics).not.toContain('Quibblesworth');
  }, 60_000);

  test('a clean message has no issues', async () => {
    await send(port('lenient'), adt('W2', '19800515'), 1);
    await engine.waitForIdle(20_000);
    const got = await api(`/api/messages/${(await byControlId('W2')).id}`);
    expect(got.status).toBe('delivered');
    expect(got.issues).toEqual([]);
  }, 60_000);

  test('fail for PID-7: enhanced mode CA then AE with ERR at PID-7 (102); the message fails, replayable, with the issue', async () => {
    const acks = await send(port('strict'), adt('F1', GARBAGE, true), 2);
    expect(segs(acks[0]).find((s) => s[0] === 'MSA')?.[1]).toBe('CA');
    const app = segs(acks[1]);
    expect(app.find((s) => s[0] === 'MSA')?.[1]).toBe('AE');
    const err = app.find((s) => s[0] === 'ERR')!;
    expect(err[2]).toBe('PID^1^7');
    expect(err[3]).toBe('102^Data type error^HL70357');
    expect(err[4]).toBe('E');
    expect(acks.join('')).not.toContain('Quibblesworth');
    await engine.waitForIdle(20_000);
    const m = await byControlId('F1');
    expect(m.status).toBe('failed');
    expect(m.error?.code).toBe('FERRY_E_INPUT_DATA_QUALITY');
    expect(m.error?.outcome?.issue?.[0]).toMatchObject({
      severity: 'error',
      location: ['PID-7'],
      expression: ['Patient.birthDate'],
    });
    const got = await api(`/api/messages/${m.id}`);
    expect(got.issues.map((i: DataQualityIssue) => [i.location, i.severity, i.code])).toEqual([
      ['PID-7', 'error', 'invalid-date'],
    ]);
    // Replayable: the message is kept whole (a fixed config or map converts it on replay).
    expect((await engine.store.getMessage(m.id, { body: true }))?.body?.toString('latin1')).toContain('PID|1||F1-MRN');
    expect(JSON.stringify(m.error) + JSON.stringify(got)).not.toContain('Quibblesworth');
    // The same message sent again is a duplicate (same sender, control id, content): it gets the original's
    // ACKs -- CA, then the same AE naming PID-7 -- and is not stored again.
    const again = await send(port('strict'), adt('F1', GARBAGE, true), 2);
    expect(segs(again[0]).find((s) => s[0] === 'MSA')?.[1]).toBe('CA');
    const app2 = segs(again[1]);
    expect(app2.find((s) => s[0] === 'MSA')?.[1]).toBe('AE');
    expect(app2.find((s) => s[0] === 'ERR')!.slice(2, 5)).toEqual(['PID^1^7', '102^Data type error^HL70357', 'E']);
    await engine.waitForIdle(20_000);
    expect((await engine.store.listMessages({ limit: 100 })).filter((x) => x.headers.controlId === 'F1')).toHaveLength(
      1,
    );
  }, 60_000);

  test('fail in original mode: AA (durably taken in, as original mode means), the message failed with the issue', async () => {
    const [ack] = await send(port('strict'), adt('F0', GARBAGE), 1);
    expect(segs(ack).find((s) => s[0] === 'MSA')?.[1]).toBe('AA');
    await engine.waitForIdle(20_000);
    const m = await byControlId('F0');
    expect(m.status).toBe('failed');
    expect((await api(`/api/messages/${m.id}`)).issues).toEqual([
      expect.objectContaining({ location: 'PID-7', severity: 'error' }),
    ]);
  }, 60_000);

  test("a failed message replayed with the data unchanged fails again; the API shows that processing's issues only", async () => {
    const m = await byControlId('F1');
    const r = await fetch(`${engine.adminUrl}/api/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: authHeader },
      body: JSON.stringify({ ids: [m.id] }),
    });
    expect(r.status).toBe(200);
    await engine.waitForIdle(20_000);
    const got = await api(`/api/messages/${m.id}`);
    expect(got.status).toBe('failed');
    expect(got.issues).toHaveLength(1);
    expect(got.events.filter((e: { status: string }) => e.status === 'data-quality')).toHaveLength(2);
  }, 60_000);

  test('fail for PID-7 only: a bad date elsewhere is a warning, the message delivered, the ACK AA', async () => {
    const msg = adt('F2', '19800515', true).replace('EVN|A01|20240102103000+0100', 'EVN|A01|Quibblesworth-EVN');
    const acks = await send(port('strict'), msg, 2);
    expect(acks.map((a) => segs(a).find((s) => s[0] === 'MSA')?.[1])).toEqual(['CA', 'AA']);
    await engine.waitForIdle(20_000);
    const got = await api(`/api/messages/${(await byControlId('F2')).id}`);
    expect(got.status).toBe('delivered');
    expect(got.issues).toEqual([
      expect.objectContaining({ location: 'EVN-2', severity: 'warning', code: 'invalid-date' }),
    ]);
  }, 60_000);

  test('the logs name locations and reasons, never the values', () => {
    expect(logs).toContain('data quality issues');
    expect(logs).toContain('PID-7:invalid-date');
    expect(logs).not.toContain('Quibblesworth');
  });

  test('after a fix (the policy relaxed, the engine restarted on the same store) the replayed message is delivered, the issue a warning', async () => {
    const { id } = await byControlId('F1');
    await engine.stop();
    engine = await Engine.create({
      logger: createLogger(
        { level: 'debug' },
        new PassThrough().on('data', (c) => (logs += c.toString('utf8'))),
      ),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        sources: { strict: { type: 'mllp', host: '127.0.0.1', port: 0, dataQuality: { policy: 'warn' } } },
        sinks: { out: { type: 'file', dir: path.join(dir, 'out'), format: 'json' } },
        routes: [{ id: 'all', from: ['strict'], to: ['out'] }],
        processing: { transformWorkers: 0 },
        admin: { enabled: true, host: '127.0.0.1', port: 0, auth: { tokens: [tokenEntry] } },
      },
    });
    await engine.start();
    const r = await fetch(`${engine.adminUrl}/api/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: authHeader },
      body: JSON.stringify({ ids: [id] }),
    });
    expect(r.status).toBe(200);
    await engine.waitForIdle(20_000);
    const got = await api(`/api/messages/${id}`);
    expect(got.status).toBe('delivered');
    expect(got.issues).toEqual([expect.objectContaining({ location: 'PID-7', severity: 'warning' })]);
    expect(logs).not.toContain('Quibblesworth');
  }, 60_000);
});
