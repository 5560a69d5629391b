import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FhirJsonTransform } from '../fhir/fhir-json.transform';
import { silentLogger } from '../logging/logger';
import type { StoredMessage } from '../model/message';
import { MessagePipeline } from './process-message';

const route = {
  id: 'r',
  from: ['s'],
  when: { messageType: [], fhirpath: '' },
  steps: [],
  to: ['sink'],
  ordering: 'none' as const,
};
const msg = (o: unknown): StoredMessage => ({
  id: 'm1',
  seq: 1,
  sourceId: 's',
  contentType: 'application/fhir+json',
  headers: {},
  receivedAt: new Date(0),
  status: 'received',
  body: Buffer.from(JSON.stringify(o)),
});

describe('MessagePipeline: canonical validation (processing.validate, on by default)', () => {
  const patient = { resourceType: 'Patient', birthDate: 'Quibblesworth', name: [{ family: 'Doe' }] };

  it('fails an invalid canonical Bundle with its OperationOutcome (paths, no values), keeping the bundle', async () => {
    const p = new MessagePipeline([new FhirJsonTransform()], [route], __dirname);
    const report = await p.process(msg(patient), silentLogger());
    expect(report.outcome.status).toBe('failed');
    const err = (report.outcome as any).error;
    expect(err.code).toBe('FERRY_E_INPUT_FHIR_INVALID');
    expect(err.message).toBe(
      'canonical bundle is not valid FHIR R4: 1 issue(s) (first: Bundle.entry[0].resource.birthDate: Invalid date format)',
    );
    expect(err.message).not.toContain('Quibblesworth');
    expect(err.outcome).toEqual({
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'error',
          code: 'structure',
          details: { text: 'Invalid date format' },
          expression: ['Bundle.entry[0].resource.birthDate'],
        },
      ],
    });
    expect(report.transformed?.bundleJson).toContain('Quibblesworth');
  });

  it('routes a valid one, and an invalid one when validation is turned off', async () => {
    const on = new MessagePipeline([new FhirJsonTransform()], [route], __dirname);
    expect((await on.process(msg({ ...patient, birthDate: '1970-01-01' }), silentLogger())).outcome.status).toBe(
      'routed',
    );
    const off = new MessagePipeline([new FhirJsonTransform()], [route], __dirname, { validate: false });
    expect((await off.process(msg(patient), silentLogger())).outcome.status).toBe('routed');
  });

  it('validates a bundle a script step changed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-validate-'));
    fs.writeFileSync(
      path.join(dir, 'breaks.js'),
      "module.exports = (b) => { b.entry[0].resource.gender = 'robot'; return b; };",
    );
    const p = new MessagePipeline([new FhirJsonTransform()], [{ ...route, steps: [{ script: 'breaks.js' }] }], dir);
    const report = await p.process(msg({ ...patient, birthDate: '1970-01-01' }), silentLogger());
    expect(report.outcome.status).toBe('failed');
    expect(report.failedRoute).toBe('r');
    expect((report.outcome as any).error.message).toMatch(
      /^bundle from route r's steps is not valid FHIR R4: 1 issue\(s\) \(first: Bundle.entry\[0\].resource.gender: Value is not in the required value set\)$/,
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a `validate` step on the unchanged canonical Bundle is not run twice; with processing.validate off it is the check', async () => {
    const withStep = { ...route, steps: [{ validate: true as const }] };
    const off = new MessagePipeline([new FhirJsonTransform()], [withStep], __dirname, { validate: false });
    const r = await off.process(msg(patient), silentLogger());
    expect(r.outcome.status).toBe('failed');
    expect(r.failedRoute).toBe('r');
    const on = new MessagePipeline([new FhirJsonTransform()], [withStep], __dirname);
    expect((await on.process(msg({ ...patient, birthDate: '1970-01-01' }), silentLogger())).outcome.status).toBe(
      'routed',
    );
  });
});
