import { Engine, silentLogger } from '@ferry/core';
import { readdirSync } from 'node:fs';
import path from 'node:path';

/** The example configs of the epic and cerner plugins validate against every registered schema. */
describe('config/examples/epic-*.yaml and cerner-*.yaml', () => {
  const dir = path.resolve(__dirname, '../../../config/examples');
  const files = readdirSync(dir).filter((f) => /^(epic|cerner)-.*\.yaml$/.test(f));
  const env = {
    EPIC_BASE_URL: 'https://fhir.example.org/api/FHIR/R4',
    EPIC_CLIENT_ID: 'client',
    EPIC_KEY_FILE: '/dev/null',
    CERNER_BASE_URL: 'https://fhir-ehr.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d',
    CERNER_CLIENT_ID: 'client',
    CERNER_CLIENT_SECRET: 'secret',
    FHIR_BASE_URL: 'https://fhir.example.org/fhir/R4',
  };
  it('there are examples for both vendors', () => {
    expect(files.some((f) => f.startsWith('epic-'))).toBe(true);
    expect(files.some((f) => f.startsWith('cerner-'))).toBe(true);
  });
  it.each(files)('%s is a valid configuration', async (f) => {
    await expect(Engine.create({ configFile: path.join(dir, f), env, logger: silentLogger() })).resolves.toBeDefined();
  });
  it('reports a wrong key by its path', async () => {
    const err = await Engine.create({
      config: {
        plugins: ['@ferry/plugin-cerner'],
        sources: {
          c: { type: 'cerner-bulk-export', baseUrl: 'x', clientId: 'y', bulk: { level: 'system', groupid: 'g' } },
        },
      },
      env,
      logger: silentLogger(),
    }).catch((e) => e);
    expect(err.message).toMatch(/sources\.c\.bulk\.level/);
    expect(err.message).toMatch(/sources\.c\.baseUrl: .*http\(s\) URL/);
    expect(err.message).toMatch(/sources\.c\.bulk\.groupid: unknown key/);
  });
});
