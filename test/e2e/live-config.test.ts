/**
 * Live configuration (issue #19): a reload under continuous MLLP load with the real engine, the
 * real SQLite store, transform worker threads and real sockets -- the route's `when` changes and a
 * sink is added while 8 senders stream. Nothing lost, every ACK AA, no disconnect, and each
 * message routed wholly by the old or wholly by the new config. An invalid reload changes nothing.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '@ferry/core';
import { MllpDeframer, type MllpSource } from '@ferry/plugin-hl7v2-mllp';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'ferry-live-config-'));
const VT = Buffer.from([0x0b]);
const END = Buffer.from([0x1c, 0x0d]);
const frame = (s: string) => Buffer.concat([VT, Buffer.from(s, 'latin1'), END]);

/** Even numbers are women, odd men. */
function adt(ctl: string, i: number): string {
  return (
    [
      `MSH|^~\\&|SENDAPP|SENDFAC|FERRY|HOSP|20240101120000||ADT^A08^ADT_A01|${ctl}|P|2.5.1`,
      'EVN|A08|20240101120000',
      `PID|1||MRN${i}^^^HOSP^MR||DOE^JANE||19800101|${i % 2 ? 'M' : 'F'}`,
      'PV1|1|I|WARD1^101^A',
    ].join('\r') + '\r'
  );
}

/** One sender: a frame, its ACK, the next frame, until stopped. */
class Sender {
  private d = new MllpDeframer({ maxMessageSize: 1 << 20 });
  private waiting?: (ack: string) => void;
  closed = false;
  sent: { ctl: string; i: number; ack: string }[] = [];
  private constructor(private s: net.Socket) {
    s.on('data', (c) => {
      for (const ev of this.d.push(c)) if (ev.kind === 'frame') this.waiting?.(ev.payload.toString('latin1'));
    });
    s.on('close', () => (this.closed = true));
    s.on('error', () => undefined);
  }
  static connect(port: number): Promise<Sender> {
    return new Promise((res, rej) => {
      const s = net.connect(port, '127.0.0.1', () => res(new Sender(s)));
      s.once('error', rej);
    });
  }
  async run(prefix: string, next: () => number, until: () => boolean): Promise<void> {
    while (!until() && !this.closed) {
      const i = next();
      const ctl = `${prefix}-${i}`;
      const ack = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ACK for ${ctl}`)), 15_000);
        this.waiting = (a) => {
          clearTimeout(t);
          resolve(a);
        };
        this.s.write(frame(adt(ctl, i)));
      });
      this.sent.push({ ctl, i, ack });
    }
  }
  end(): void {
    this.s.end();
  }
}

function config(dir: string, variant: 'old' | 'new' | 'invalid'): Record<string, unknown> {
  const a = { type: 'file', dir: path.join(dir, 'a'), format: 'ndjson', envelope: true };
  const b = { type: 'file', dir: path.join(dir, 'b'), format: 'ndjson', envelope: true };
  const base = {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: ['@ferry/plugin-hl7v2-mllp'],
    processing: { pollIntervalMs: 20, batchSize: 16, transformWorkers: 1 },
    admin: { enabled: false },
    log: { level: 'error' },
    sources: { feed: { type: 'mllp', host: '127.0.0.1', port: 0 } },
  };
  const women = { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'female'" };
  const men = { fhirpath: "Bundle.entry.resource.ofType(Patient).gender = 'male'" };
  if (variant === 'old')
    return { ...base, sinks: { a }, routes: [{ id: 'r1', from: ['feed'], when: women, to: ['a'] }] };
  if (variant === 'new')
    return {
      ...base,
      sinks: { a, b },
      routes: [
        { id: 'r1', from: ['feed'], when: men, to: ['a'] },
        { id: 'r2', from: ['feed'], to: ['b'] },
      ],
    };
  // Two problems: a route to a sink that does not exist, and a FHIRPath that does not parse.
  return {
    ...base,
    sinks: { a },
    routes: [{ id: 'r1', from: ['feed'], when: { fhirpath: 'Bundle.entry.((' }, to: ['a', 'nowhere'] }],
  };
}

const write = (file: string, cfg: Record<string, unknown>) => writeFileSync(file, JSON.stringify(cfg, null, 2)); // JSON is YAML
const controlIds = (file: string): string[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).controlId as string)
    : [];

describe('live configuration', () => {
  jest.setTimeout(90_000);

  it('reloads under continuous MLLP load: route `when` changed and a sink added, nothing lost, all AA, no disconnect, each message routed by one config', async () => {
    const dir = tmp();
    const file = path.join(dir, 'ferry.yaml');
    write(file, config(dir, 'old'));
    const engine = await Engine.create({ configFile: file });
    await engine.start();
    const port = engine.source<MllpSource>('feed')!.address()!.port;
    const senders = await Promise.all(Array.from({ length: 8 }, () => Sender.connect(port)));
    let n = 0;
    let stop = false;
    try {
      const t0 = Date.now();
      const runs = senders.map((s, k) =>
        s.run(
          `S${k}`,
          () => n++,
          () => stop,
        ),
      );
      // Load before, during and after the reload.
      while (n < 500) await new Promise((r) => setTimeout(r, 10));
      write(file, config(dir, 'new'));
      const r = await engine.reload('test');
      const atReload = n;
      expect(r).toMatchObject({
        applied: true,
        version: 2,
        changes: { sinks: { added: ['b'] }, routes: { added: ['r2'], changed: ['r1'] }, sources: { restarted: [] } },
      });
      expect(engine.configVersion).toBe(2);
      while (n < atReload + 500) await new Promise((r) => setTimeout(r, 10));
      stop = true;
      await Promise.all(runs);
      // The offered rate (each sender waits for its ACK): printed, not asserted.
      console.log(
        `live-config load: ${n} messages on 8 connections in ${Date.now() - t0} ms = ${Math.round((n * 1000) / (Date.now() - t0))} msgs/s, reload at #${atReload}`,
      );
      await engine.waitForIdle(30_000);

      const sent = senders.flatMap((s) => s.sent);
      // Zero disconnects, every ACK AA.
      expect(senders.filter((s) => s.closed)).toHaveLength(0);
      expect(sent.filter((m) => !/\rMSA\|AA\|/.test(m.ack))).toEqual([]);
      expect(sent.length).toBeGreaterThanOrEqual(1000);
      // Zero lost: every message stored and finished (delivered, or unrouted under the old `when`).
      const stats = await engine.store.stats();
      const total = Object.values(stats.messages as Record<string, number>).reduce((a, b) => a + b, 0);
      expect(total).toBe(sent.length);
      expect(Object.keys(stats.messages).sort()).toEqual(expect.arrayContaining(['delivered']));
      expect(stats.messages).not.toHaveProperty('failed');

      // Each message wholly by one config: old = women -> a; new = men -> a and everyone -> b;
      // and the config version stored with it is the one whose routes it went by.
      const inA = new Set(controlIds(path.join(dir, 'a', 'bundles.ndjson')));
      const inB = new Set(controlIds(path.join(dir, 'b', 'bundles.ndjson')));
      const versionOf = new Map(
        (await engine.store.listMessages({ limit: 100_000 })).map((m) => [m.headers.controlId, m.configVersion]),
      );
      let byOld = 0;
      let byNew = 0;
      const mixed: string[] = [];
      for (const m of sent) {
        const male = m.i % 2 === 1;
        const newCfg = inB.has(m.ctl);
        if (newCfg) byNew++;
        else byOld++;
        const expectedInA = newCfg ? male : !male;
        if (inA.has(m.ctl) !== expectedInA || versionOf.get(m.ctl) !== (newCfg ? 2 : 1))
          mixed.push(`${m.ctl} v${versionOf.get(m.ctl)}`);
      }
      expect(mixed).toEqual([]);
      // Both versions stored, masked, with who applied them.
      const history = await engine.store.configVersions!();
      expect(history.map((h) => [h.version, h.appliedBy])).toEqual([
        [2, 'test'],
        [1, 'start'],
      ]);
      expect(history[0].hash).toMatch(/^[0-9a-f]{64}$/);
      expect(JSON.parse((await engine.store.configVersion!(2))!.config!).sinks.b.type).toBe('file');
      // Both configs routed some of the load.
      expect(byOld).toBeGreaterThan(0);
      expect(byNew).toBeGreaterThan(0);
    } finally {
      stop = true;
      senders.forEach((s) => s.end());
      await engine.stop();
    }
  });

  it('an invalid reload changes nothing and returns every problem; a processing/log change needs a restart', async () => {
    const dir = tmp();
    const file = path.join(dir, 'ferry.yaml');
    write(file, config(dir, 'old'));
    const engine = await Engine.create({ configFile: file });
    await engine.start();
    const port = engine.source<MllpSource>('feed')!.address()!.port;
    const sender = await Sender.connect(port);
    try {
      write(file, config(dir, 'invalid'));
      const r = await engine.reload('test');
      expect(r.applied).toBe(false);
      expect(r.version).toBe(1);
      expect(r.problems!.map((p) => p.path)).toEqual(expect.arrayContaining([expect.stringMatching(/^routes\[0\]/)]));
      expect(r.problems!.length).toBeGreaterThanOrEqual(2);
      expect(engine.configVersion).toBe(1);
      expect(engine.config.routes[0].to).toEqual(['a']);

      const old = config(dir, 'old');
      const restart = { ...old, processing: { ...(old.processing as object), batchSize: 4 }, log: { level: 'warn' } };
      write(file, restart);
      const r2 = await engine.reload('test');
      expect(r2).toMatchObject({ applied: false, version: 1 });
      expect(r2.restartRequired).toEqual(['processing', 'log']);

      // Still routing by the old config, on the same connection.
      let i = 0;
      await sender.run(
        'K',
        () => i++,
        () => i >= 4,
      );
      expect(sender.closed).toBe(false);
      expect(sender.sent.every((m) => /\rMSA\|AA\|/.test(m.ack))).toBe(true);
      await engine.waitForIdle(10_000);
      expect(controlIds(path.join(dir, 'a', 'bundles.ndjson')).sort()).toEqual(['K-0', 'K-2']);
    } finally {
      sender.end();
      await engine.stop();
    }
  });

  it.each([0, 1])(
    'a runaway script (a loop or an endless await) fails only its own message; an edited script is picked up by a reload (transform workers: %i)',
    async (workers) => {
      const dir = tmp();
      const script = path.join(dir, 'step.js');
      // Men run away (MRN3 awaiting a minute, the others looping); women pass. With the typed helpers.
      writeFileSync(
        script,
        `module.exports = async (b, m, ferry) => {
         if (ferry.resource('Patient').gender !== 'male') return b;
         if (ferry.v2.get('PID-3.1') === 'MRN3') await new Promise((r) => setTimeout(r, 60000));
         else for (;;) {}
         return b;
       };`,
      );
      const file = path.join(dir, 'ferry.yaml');
      const cfg = {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        plugins: ['@ferry/plugin-hl7v2-mllp'],
        processing: { pollIntervalMs: 20, batchSize: 8, transformWorkers: workers },
        admin: { enabled: false },
        log: { level: 'error' },
        sinks: { a: { type: 'file', dir: path.join(dir, 'a'), format: 'ndjson', envelope: true } },
        routes: [{ id: 'r', steps: [{ script, timeoutMs: 200 }], to: ['a'] }],
      };
      write(file, cfg);
      const engine = await Engine.create({ configFile: file });
      await engine.start();
      try {
        const t0 = Date.now();
        for (let i = 0; i < 6; i++)
          await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: Buffer.from(adt(`X-${i}`, i)) }]);
        await engine.waitForIdle(20_000);
        expect(Date.now() - t0).toBeLessThan(15_000);
        const all = await engine.store.listMessages({ limit: 100 });
        const failed = all.filter((m) => m.status === 'failed');
        expect(failed.map((m) => m.headers.controlId).sort()).toEqual(['X-1', 'X-3', 'X-5']);
        for (const m of failed)
          expect(m.error).toMatchObject({
            code: 'FERRY_E_INPUT_SCRIPT_TIMEOUT',
            message: expect.stringContaining('did not finish within 200 ms'),
          });
        expect(controlIds(path.join(dir, 'a', 'bundles.ndjson')).sort()).toEqual(['X-0', 'X-2', 'X-4']);

        // The script edited, the config file not: a reload loads the script again.
        writeFileSync(script, "module.exports = (b) => ({ ...b, meta: { tag: [{ code: 'v2' }] } });");
        const r = await engine.reload('test');
        expect(r.applied).toBe(true);
        await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: Buffer.from(adt('Y-1', 1)) }]);
        await engine.waitForIdle(20_000);
        const lines = readFileSync(path.join(dir, 'a', 'bundles.ndjson'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
        const y = lines.find((l) => l.controlId === 'Y-1');
        expect(y.bundle.meta.tag[0].code).toBe('v2');
      } finally {
        await engine.stop();
      }
    },
  );
});
