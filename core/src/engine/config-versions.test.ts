import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configSecrets, redactConfig, secretFingerprints } from '../admin/redact';
import { diffConfigs } from '../config/config-diff';
import { silentLogger } from '../logging/logger';
import { Engine } from './engine';

describe('config versions: secrets by fingerprint', () => {
  it('fingerprints each secret by path: stable, different when rotated, never the value', async () => {
    const cfg = { sinks: { h: { auth: { password: 'hunter2', token: '' } }, s: { url: 'postgres://u:pw1@db/x' } } };
    expect(configSecrets(cfg)).toEqual([
      { path: 'sinks.h.auth.password', value: 'hunter2' },
      { path: 'sinks.s.url', value: 'pw1' },
    ]);
    const a = await secretFingerprints(cfg);
    const b = await secretFingerprints(cfg);
    expect([...a.values()]).toEqual([...b.values()]);
    expect(a.get('sinks.h.auth.password')).toMatch(/^\(redacted, fingerprint [0-9a-f]{12}\)$/);
    const rotated = await secretFingerprints({
      sinks: { ...cfg.sinks, h: { auth: { password: 'hunter3', token: '' } } },
    });
    expect(rotated.get('sinks.h.auth.password')).not.toBe(a.get('sinks.h.auth.password'));
    expect(rotated.get('sinks.s.url')).toBe(a.get('sinks.s.url'));
    // the same secret under another path gives another fingerprint (salted by its path)
    const moved = await secretFingerprints({ other: { password: 'hunter2' } });
    expect(moved.get('other.password')).not.toBe(a.get('sinks.h.auth.password'));
    // the display (GET /api/config) is unchanged
    expect(redactConfig(cfg)).toEqual({
      sinks: { h: { auth: { password: '(redacted)', token: '' } }, s: { url: 'postgres://u:(redacted)@db/x' } },
    });
  });

  it('a reload with only a rotated secret is a new version; its diff shows that secret changed, by fingerprint', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-config-versions-'));
    const file = path.join(dir, 'ferry.yaml');
    const cfg = (password: string) => ({
      store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
      processing: { transformWorkers: 0 },
      admin: { enabled: false },
      sinks: {
        h: { type: 'http', url: 'http://127.0.0.1:9/in', auth: { type: 'basic', username: 'ferry', password } },
      },
      routes: [{ id: 'r', to: ['h'] }],
    });
    const env = { ...process.env, SINK_PASSWORD: 'old-Secret-1' };
    writeFileSync(file, JSON.stringify(cfg('${SINK_PASSWORD}')));
    const engine = await Engine.create({ configFile: file, env, logger: silentLogger() });
    await engine.start();
    try {
      expect(engine.configVersion).toBe(1);
      // the same file and secret again: no new version
      expect(await engine.reload('test')).toMatchObject({ applied: true, version: 1, unchanged: true });
      env.SINK_PASSWORD = 'new-Secret-2';
      const r = await engine.reload('ops');
      expect(r).toMatchObject({ applied: true, version: 2, changes: { sinks: { restarted: ['h'] } } });
      const v1 = await engine.store.configVersion!(1);
      const v2 = await engine.store.configVersion!(2);
      expect(v2).toMatchObject({ appliedBy: 'ops' });
      for (const v of [v1, v2]) {
        expect(v!.config).not.toMatch(/Secret-/);
      }
      const changes = diffConfigs(JSON.parse(v1!.config!), JSON.parse(v2!.config!));
      expect(changes).toEqual([
        {
          path: 'sinks.h.auth.password',
          change: 'changed',
          before: expect.stringMatching(/^\(redacted, fingerprint [0-9a-f]{12}\)$/),
          after: expect.stringMatching(/^\(redacted, fingerprint [0-9a-f]{12}\)$/),
        },
      ]);
      expect(changes[0].before).not.toBe(changes[0].after);
    } finally {
      await engine.stop();
    }
  });
});
