import { silentLogger } from '@ferry/core';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import epicPlugin, { epicJwksCommand } from '../index';
import { testKey } from '@ferry/fhir-vendor-kit';

describe('ferry epic jwks', () => {
  it('prints the public JWK Set of the keys in the config (no private parts)', async () => {
    const k = await testKey('prod-key-2026');
    const cfg = path.join(k.dir, 'ferry.yaml');
    writeFileSync(
      cfg,
      `sources:\n  epic:\n    type: epic-bulk-export\n    auth: { privateKeyFile: ${k.file}, kid: prod-key-2026 }\n`,
    );
    const out: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: any) => (out.push(String(s)), true));
    try {
      expect(await epicJwksCommand.run(['jwks'], {}, { configFile: cfg, logger: silentLogger(), transforms: [] })).toBe(
        0,
      );
    } finally {
      spy.mockRestore();
    }
    const jwks = JSON.parse(out.join(''));
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'RSA', kid: 'prod-key-2026', alg: 'RS384', use: 'sig' });
    expect(jwks.keys[0].d).toBeUndefined();
    expect(jwks.keys[0].p).toBeUndefined();
  });

  it('is registered by the plugin as `epic <action>`', () => {
    const cmds: string[] = [];
    void epicPlugin.register({
      addCommand: (c: any) => cmds.push(c.name),
      addSourceType() {},
      addSinkType() {},
      addTransform() {},
      registerFacadeProvider() {},
      provide() {},
      config: {},
    } as any);
    expect(cmds).toEqual(['epic <action>']);
  });
});
