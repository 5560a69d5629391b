/**
 * Validation on by default, end to end: FHIR JSON by HTTP with an unknown resourceType is refused at
 * intake; an invalid Patient and an invalid converted message fail with their OperationOutcome, shown by
 * the admin API, deliver nothing, and are delivered by a replay once the cause (here the plugin's
 * configuration) is fixed.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '@ferry/core';
import { CSV_TYPE } from '../plugins/csv-patient';
import { roleTokens, type RoleTokens } from '../support';

const pluginPath = path.resolve(__dirname, '../plugins/csv-patient');

function config(dir: string, system: string, tokens: RoleTokens) {
  return {
    store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
    plugins: [{ package: pluginPath, config: { system } }],
    sources: { web: { type: 'http', port: 0 } },
    sinks: { archive: { type: 'file', dir: path.join(dir, 'out'), format: 'ndjson' } },
    routes: [{ id: 'all', to: ['archive'] }],
    processing: { pollIntervalMs: 50, transformWorkers: 0 },
    admin: { enabled: true, port: 0, auth: { tokens: tokens.tokens } },
    log: { level: 'error' },
  };
}

describe('FHIR validation on by default (processing.validate)', () => {
  let engine: Engine | undefined;
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
  });

  it('refuses or fails invalid input with a clear error, delivers nothing, and replays after a fix', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-validate-'));
    // errors with their text and replay: an operator who may read PHI (admin)
    const tokens = await roleTokens();
    const auth = tokens.auth('admin');
    // a misconfigured identifier system (a space is not allowed in a uri): every converted Patient is invalid
    engine = await Engine.create({ config: config(dir, 'urn:oid:1.2.3 4', tokens) });
    await engine.start();
    const url = (engine.source('web') as unknown as { url: string }).url;
    const post = (body: unknown) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });

    const refused = await post({ resourceType: 'NotAThing' });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: string }).error).toMatch(/unknown resourceType "NotAThing"/);

    expect(
      (await post({ resourceType: 'Patient', birthDate: 'Quibblesworth', name: [{ family: 'Doe' }] })).status,
    ).toBe(202);
    // what R4 forbids and medplum lets through: a day that does not exist, an integer beyond 32 bits
    expect(
      (await post({ resourceType: 'Patient', birthDate: '2023-02-29', multipleBirthInteger: 3_000_000_000 })).status,
    ).toBe(202);
    const [csv] = await engine.submit('intake', [
      { contentType: CSV_TYPE, body: Buffer.from('A100,Doe,Jane,1980-05-01,female') },
    ]);
    await engine.waitForIdle();

    const admin = engine.adminUrl!;
    const failed = (await (await fetch(`${admin}/api/messages?status=failed`, { headers: auth })).json()) as {
      id: string;
      sourceId: string;
    }[];
    expect(failed.map((m) => m.sourceId).sort()).toEqual(['intake', 'web', 'web']);
    const detail = async (id: string) =>
      (await (await fetch(`${admin}/api/messages/${id}`, { headers: auth })).json()) as {
        status: string;
        error: { code: string; message: string; outcome: any };
      };
    const webs = await Promise.all(failed.filter((m) => m.sourceId === 'web').map((m) => detail(m.id)));
    const web = webs.find((w) => w.error.outcome.issue.length === 1)!;
    expect(web.status).toBe('failed');
    expect(web.error.code).toBe('FERRY_E_INPUT_FHIR_INVALID');
    expect(web.error.outcome.issue).toEqual([
      {
        severity: 'error',
        code: 'structure',
        details: { text: 'Invalid date format' },
        expression: ['Bundle.entry[0].resource.birthDate'],
      },
    ]);
    expect(web.error.message).not.toContain('Quibblesworth');
    const impossible = webs.find((w) => w !== web)!;
    expect(impossible.error.code).toBe('FERRY_E_INPUT_FHIR_INVALID');
    expect(impossible.error.outcome.issue.map((i: any) => `${i.expression[0]}: ${i.details.text}`).sort()).toEqual([
      'Bundle.entry[0].resource.birthDate: Invalid date: that day does not exist in its month',
      'Bundle.entry[0].resource.multipleBirth[x]: Expected number to be a 32-bit integer (-2147483648 to 2147483647)',
    ]);
    const fromCsv = await detail(csv.id);
    expect(fromCsv.error.outcome.issue.map((i: any) => `${i.expression[0]}: ${i.details.text}`)).toEqual([
      'Bundle.entry[0].resource.identifier[0].system: Invalid uri format',
    ]);
    expect(
      existsSync(path.join(dir, 'out', 'bundles.ndjson')) &&
        readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8').trim(),
    ).toBeFalsy();
    await engine.stop();

    // the fix: the plugin's configuration; then replay the failed message
    engine = await Engine.create({ config: config(dir, 'urn:oid:1.2.3.4', tokens) });
    await engine.start();
    const replay = await fetch(`${engine.adminUrl}/api/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({ ids: [csv.id] }),
    });
    expect(await replay.json()).toMatchObject({ replayed: 1 });
    await engine.waitForIdle();
    expect((await engine.store.getMessage(csv.id))?.status).toBe('delivered');
    const lines = readFileSync(path.join(dir, 'out', 'bundles.ndjson'), 'utf8')
      .trim()
      .split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]).entry[0].resource.identifier[0].system).toBe('urn:oid:1.2.3.4');
  });
});
