/**
 * Live configuration (issue #19): plugins added to `plugins:` load on a reload where they can --
 * their source and sink types at once, their transforms too unless transform workers run --
 * otherwise the reload names what needs a restart and applies nothing. Real engine, real SQLite.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '@ferry/core';
import { CSV_TYPE, memorySinkDeliveries } from '../plugins/csv-patient';
import { tallies } from '../plugins/tally-sink';

const csvPlugin = path.resolve(__dirname, '../plugins/csv-patient');
const tallyPlugin = path.resolve(__dirname, '../plugins/tally-sink');
const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'ferry-live-plugins-'));
const write = (file: string, cfg: Record<string, unknown>) => writeFileSync(file, JSON.stringify(cfg, null, 2));
const adt = (ctl: string) =>
  `MSH|^~\\&|A|B|C|D|20240101120000||ADT^A08^ADT_A01|${ctl}|P|2.5.1\rPID|1||MRN1^^^HOSP^MR||DOE^JANE||19800101|F\r`;

describe('live configuration: plugins', () => {
  it('without transform workers: an added plugin serves its sink type and its transform at once', async () => {
    const dir = tmp();
    const file = path.join(dir, 'ferry.yaml');
    const base = {
      store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
      processing: { pollIntervalMs: 20, transformWorkers: 0 },
      admin: { enabled: false },
      log: { level: 'error' },
      sinks: { a: { type: 'file', dir: path.join(dir, 'a'), format: 'ndjson' } },
      routes: [],
    };
    write(file, base);
    const engine = await Engine.create({ configFile: file });
    await engine.start();
    try {
      // Not there yet: a CSV message has no transform.
      await engine.submit('feed', [{ contentType: CSV_TYPE, body: Buffer.from('M0,Doe,Jane,1980-01-01,female') }]);
      await engine.waitForIdle(10_000);
      expect((await engine.store.listMessages({ limit: 10 }))[0]).toMatchObject({
        status: 'failed',
        error: { code: 'FERRY_E_INPUT_NO_TRANSFORM' },
      });

      write(file, {
        ...base,
        plugins: [{ package: csvPlugin, config: { system: 'urn:live' } }],
        sinks: { ...base.sinks, mem: { type: 'memory' } },
        routes: [{ id: 'csv', when: { messageType: ['CSV^*'] }, to: ['mem'] }],
      });
      const r = await engine.reload('test');
      expect(r).toMatchObject({
        applied: true,
        version: 2,
        changes: { plugins: { added: [csvPlugin] }, sinks: { added: ['mem'] }, routes: { added: ['csv'] } },
      });
      await engine.submit('feed', [{ contentType: CSV_TYPE, body: Buffer.from('M1,Doe,John,1970-01-01,male') }]);
      await engine.waitForIdle(10_000);
      const got = memorySinkDeliveries.get('mem') ?? [];
      expect(got.map((d) => d.bundle.entry?.[0].resource)).toEqual([
        expect.objectContaining({ resourceType: 'Patient', identifier: [{ system: 'urn:live', value: 'M1' }] }),
      ]);

      // Removing it, or changing its config, needs a restart: named, nothing applied.
      write(file, {
        ...base,
        plugins: [{ package: csvPlugin, config: { system: 'urn:other' } }],
        sinks: { ...base.sinks, mem: { type: 'memory' } },
        routes: [{ id: 'csv', to: ['mem'] }],
      });
      expect(await engine.reload('test')).toEqual({
        applied: false,
        version: 2,
        restartRequired: [`plugins: ${csvPlugin} config changed`],
      });
      write(file, base);
      expect(await engine.reload('test')).toEqual({
        applied: false,
        version: 2,
        restartRequired: [`plugins: ${csvPlugin} removed (a loaded plugin is not unloaded)`],
      });
      expect(engine.configVersion).toBe(2);
      expect(engine.config.routes.map((x) => x.id)).toEqual(['csv']);
    } finally {
      await engine.stop();
    }
  });

  it('with transform workers: a sink-only plugin loads live; one that adds transforms is refused, named, nothing applied', async () => {
    const dir = tmp();
    const file = path.join(dir, 'ferry.yaml');
    const base = {
      store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
      plugins: ['@ferry/plugin-hl7v2-mllp'],
      processing: { pollIntervalMs: 20, transformWorkers: 1 },
      admin: { enabled: false },
      log: { level: 'error' },
      sinks: { a: { type: 'file', dir: path.join(dir, 'a'), format: 'ndjson' } },
      routes: [{ id: 'all', to: ['a'] }],
    };
    write(file, base);
    const engine = await Engine.create({ configFile: file });
    await engine.start();
    try {
      expect(engine.transformWorkers).toBe(1);
      const withCsv = {
        ...base,
        plugins: [...base.plugins, csvPlugin],
        sinks: { ...base.sinks, mem: { type: 'memory' } },
        routes: [{ id: 'all', to: ['a', 'mem'] }],
      };
      write(file, withCsv);
      expect(await engine.reload('test')).toEqual({
        applied: false,
        version: 1,
        restartRequired: ['plugins: csv-patient adds transforms, which the transform workers load only at start'],
      });
      expect(engine.sinkViews().map((s) => s.id)).toEqual(['a']);

      const withTally = {
        ...base,
        plugins: [...base.plugins, tallyPlugin],
        sinks: { ...base.sinks, t: { type: 'tally', label: 'live' } },
        routes: [{ id: 'all', to: ['a', 't'] }],
      };
      write(file, withTally);
      const r = await engine.reload('test');
      expect(r).toMatchObject({
        applied: true,
        version: 2,
        changes: { plugins: { added: [tallyPlugin] }, sinks: { added: ['t'] } },
      });
      await engine.submit('feed', [{ contentType: 'application/hl7-v2', body: Buffer.from(adt('T-1')) }]);
      await engine.waitForIdle(10_000);
      expect(tallies.get('t')).toEqual(['live:T-1']);
      // the new config stands: the same file again changes nothing
      expect(await engine.reload('test')).toMatchObject({ applied: true, version: 2, unchanged: true });
    } finally {
      await engine.stop();
    }
  });
});
