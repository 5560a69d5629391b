/**
 * Runtime state lives in services of an engine's containers (`reg.provide`), not in module-level Maps:
 * two engines in one process (these tests, an embedding) do not share NDJSON writers, OAuth tokens,
 * rate-limit buckets or running exports, and each engine disposes its own when it stops.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Bundle } from '@medplum/fhirtypes';
import type { DependencyContainer } from 'tsyringe';
import { createToken, definePlugin, Engine, silentLogger, type PluginDefinition } from '@ferry/core';
import { VendorConnections, vendorConnectionsToken } from '@ferry/fhir-vendor-kit';
import { athenaRestPlugin } from '@ferry/plugin-athena-rest';
import { athenaFhirPlugin } from '@ferry/plugin-athena-fhir';
import { ndjsonWritersToken } from '../../core/src/sinks/file.sink';

/** A plugin with one service of its own and one shared with every plugin of the engine, each counting its disposals. */
class Counter {
  disposed = 0;
  dispose(): void {
    this.disposed++;
  }
}
const ownToken = createToken<Counter>('test.engine-services.own');
const sharedToken = createToken<Counter>('test.engine-services.shared');
/** Each plugin container a service plugin was registered in, in load order. */
const containers: { id: string; container: DependencyContainer }[] = [];
const servicePlugin = (id: string): PluginDefinition =>
  definePlugin({
    manifest: { id, version: '1.0.0', engine: '^0.1.0' },
    configSchema: {},
    register(reg) {
      containers.push({ id, container: reg.container });
      reg.provide(ownToken, () => new Counter());
      reg.provide(sharedToken, () => new Counter(), { shared: true });
    },
  });

const bundle = (id: string): Bundle => ({
  resourceType: 'Bundle',
  type: 'collection',
  entry: [{ resource: { resourceType: 'Patient', id } }],
});

jest.setTimeout(120_000);

describe('engine services', () => {
  const dirs: string[] = [];
  const engines: Engine[] = [];
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  async function engine(file: string, plugins: PluginDefinition[] = []): Promise<Engine> {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-services-'));
    dirs.push(dir);
    const e = await Engine.create({
      logger: silentLogger(),
      plugins,
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { pollIntervalMs: 20, transformWorkers: 0, validate: false },
        admin: { enabled: false },
        sinks: {
          out: { type: 'file', dir: path.dirname(file), file: path.basename(file), format: 'ndjson', fsync: false },
        },
        routes: [{ id: 'all', to: ['out'] }],
      },
    });
    engines.push(e);
    return e;
  }
  const coreContainer = (e: Engine) => e.host.sinkTypes().find((s) => s.type === 'file')!.container;

  it('two engines writing the same NDJSON file each have their own writer, closed at their stop', async () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'ferry-services-out-'));
    dirs.push(out);
    const file = path.join(out, 'bundles.ndjson');
    const a = await engine(file);
    const b = await engine(file);
    const wa = coreContainer(a).resolve(ndjsonWritersToken);
    const wb = coreContainer(b).resolve(ndjsonWritersToken);
    expect(wa).not.toBe(wb);
    // one instance per engine: every resolve in an engine gives the same writers
    expect(coreContainer(a).resolve(ndjsonWritersToken)).toBe(wa);
    await a.start();
    await b.start();
    await a.submit('intake', [
      { contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(bundle('a1'))) },
    ]);
    await b.submit('intake', [
      { contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(bundle('b1'))) },
    ]);
    await a.waitForIdle();
    await b.waitForIdle();
    expect(wa.files()).toEqual([file]);
    expect(wb.files()).toEqual([file]);
    await a.stop();
    expect(wa.files()).toEqual([]);
    expect(wb.files()).toEqual([file]);
    await b.submit('intake', [
      { contentType: 'application/fhir+json', body: Buffer.from(JSON.stringify(bundle('b2'))) },
    ]);
    await b.waitForIdle();
    const ids = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as Bundle).entry![0].resource!.id);
    expect(ids.sort()).toEqual(['a1', 'b1', 'b2']);
  });

  it('a plugin service is one per plugin and engine, a shared one one per engine; each engine disposes its own', async () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'ferry-services-out-'));
    dirs.push(out);
    containers.length = 0;
    const a = await engine(path.join(out, 'a.ndjson'), [servicePlugin('svc-one'), servicePlugin('svc-two')]);
    await engine(path.join(out, 'b.ndjson'), [servicePlugin('svc-one')]); // its containers are read below
    const [oneA, twoA, oneB] = containers.map((c) => c.container);
    // own: one per plugin (its container), not in the engine's container
    const ownOneA = oneA.resolve(ownToken);
    expect(ownOneA).toBeInstanceOf(Counter);
    expect(oneA.resolve(ownToken)).toBe(ownOneA);
    expect(twoA.resolve(ownToken)).not.toBe(ownOneA);
    expect(oneB.resolve(ownToken)).not.toBe(ownOneA);
    expect(a.host.container.isRegistered(ownToken)).toBe(false);
    // shared: one per engine, whichever plugin asks
    const sharedA = a.host.container.resolve(sharedToken);
    expect(oneA.resolve(sharedToken)).toBe(sharedA);
    expect(twoA.resolve(sharedToken)).toBe(sharedA);
    expect(oneB.resolve(sharedToken)).not.toBe(sharedA);
    const sharedB = oneB.resolve(sharedToken);
    await a.start();
    await a.stop();
    expect(ownOneA.disposed).toBe(1);
    expect(sharedA.disposed).toBe(1);
    expect(sharedB.disposed).toBe(0);
  });

  it('the athena plugins of one engine share one VendorConnections; another engine has its own', async () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'ferry-services-out-'));
    dirs.push(out);
    const a = await engine(path.join(out, 'a.ndjson'), [athenaRestPlugin, athenaFhirPlugin]);
    const b = await engine(path.join(out, 'b.ndjson'), [athenaRestPlugin, athenaFhirPlugin]);
    const byType = (e: Engine, type: string) =>
      e.host
        .sourceTypes()
        .find((s) => s.type === type)!
        .container.resolve(vendorConnectionsToken);
    const restA = byType(a, 'athena-rest');
    expect(restA).toBeInstanceOf(VendorConnections);
    expect(byType(a, 'athena-fhir')).toBe(restA);
    const restB = byType(b, 'athena-rest');
    expect(restB).not.toBe(restA);
    expect(restA.tokenCache(60_000)).not.toBe(restB.tokenCache(60_000));
    restA.activeExports.add('athena|client');
    await a.start();
    await a.stop();
    // disposed with its engine: nothing of it left
    expect(restA.activeExports.size).toBe(0);
  });
});
