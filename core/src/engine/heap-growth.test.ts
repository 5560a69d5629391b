/** processing.heapGrowthPercent reaches V8 when the engine starts (process-wide: the engine thread and its workers). */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import { silentLogger } from '../logging/logger';
import { Engine } from './engine';

jest.setTimeout(60_000);

describe('processing.heapGrowthPercent', () => {
  let dir: string;
  let flags: jest.SpyInstance;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-heap-growth-'));
    // recorded, not applied: the test worker's own heap keeps its settings
    flags = jest.spyOn(v8, 'setFlagsFromString').mockImplementation(() => undefined);
  });
  afterEach(() => {
    flags.mockRestore();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startWith(processing: Record<string, unknown>): Promise<Engine> {
    const engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        admin: { enabled: false },
        processing: { transformWorkers: 0, validate: false, ...processing },
      },
    });
    await engine.start();
    return engine;
  }

  it.each([
    [{}, '--heap-growing-percent=50'],
    [{ heapGrowthPercent: 35 }, '--heap-growing-percent=35'],
    [{ heapGrowthPercent: 0 }, '--heap-growing-percent=0'],
  ])('with processing %j the engine sets %s when it starts', async (processing, flag) => {
    const engine = await startWith(processing);
    try {
      expect(flags.mock.calls.filter(([f]) => String(f).startsWith('--heap-growing-percent'))).toEqual([[flag]]);
    } finally {
      await engine.stop();
    }
  });
});
