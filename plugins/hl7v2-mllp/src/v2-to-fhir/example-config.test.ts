import * as path from 'node:path';
import { configure } from '@ferry/core';
import type { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';

describe('config/examples/hl7v2-to-fhir.yaml', () => {
  test('validates, and the registered transform gets the conversion config', async () => {
    const { host, config } = await configure({
      configFile: path.resolve(__dirname, '../../../../config/examples/hl7v2-to-fhir.yaml'),
      env: {},
    });
    expect(config.sources.hospital.dataQuality).toEqual({ policy: 'warn', fields: { 'PID-7': 'fail' } });
    const reg = host.transforms().find((t) => t.plugin === 'hl7v2-mllp');
    expect(reg).toBeDefined();
    const t = reg!.container.resolve(reg!.impl) as Hl7v2Transform;
    expect(t.canHandle('application/hl7-v2')).toBe(true);
    expect(t.options).toMatchObject({
      charsetFallback: 'windows-1252',
      zSegments: 'extension',
      defaultTimezone: '-05:00',
    });
    expect(t.options.identifierSystems.MRN).toBe('urn:oid:2.16.840.1.113883.19.5');
  });

  test('a bad conversion key is reported with its path', async () => {
    await expect(
      configure({
        config: { plugins: [{ package: '@ferry/plugin-hl7v2-mllp', config: { conversion: { zSegments: 'keep' } } }] },
        env: {},
      }),
    ).rejects.toThrow(/zSegments/);
  });
});
