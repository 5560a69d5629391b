/**
 * The audit trail emitted as FHIR R4 AuditEvents: a `type: audit` source routed through the core
 * fhir sink to a real (test) FHIR server, which validates each resource.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { Engine, silentLogger } from '@ferry/core';
import { roleTokens, startFhirServer, type FhirTestServer, type RoleTokens } from '../support';

describe('audit trail as FHIR AuditEvents', () => {
  let roles: RoleTokens;
  let fhir: FhirTestServer;
  let engine: Engine;

  beforeAll(async () => {
    roles = await roleTokens();
    fhir = await startFhirServer();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-audit-events-'));
    engine = await Engine.create({
      logger: silentLogger(),
      config: {
        store: { kind: 'sqlite', path: path.join(dir, 'ferry.db') },
        processing: { pollIntervalMs: 50, transformWorkers: 0 },
        sources: { 'audit-trail': { type: 'audit', pollIntervalMs: 100, from: 'start' } },
        sinks: { siem: { type: 'fhir', baseUrl: fhir.baseUrl } },
        routes: [{ id: 'audit-to-fhir', from: ['audit-trail'], steps: ['validate'], to: ['siem'] }],
        admin: { enabled: true, port: 0, auth: { tokens: roles.tokens } },
      },
    });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop();
    await fhir?.stop();
  });

  it('every entry -- the admin API, another process, a refusal -- reaches the FHIR server as a valid AuditEvent, once', async () => {
    const base = engine.adminUrl!;
    expect((await fetch(`${base}/api/config`, { headers: roles.auth('admin') })).status).toBe(200);
    expect((await fetch(`${base}/api/audit`, { headers: roles.auth('viewer') })).status).toBe(403);
    // As `ferry replay` from another process would write it.
    await engine.store.appendAudit([
      {
        principal: 'cli:alice',
        action: 'replay',
        messageIds: ['01MSGA', '01MSGB'],
        result: 'ok',
        detail: 'reprocess 2',
      },
    ]);
    const want = (await engine.store.auditEntries()).length;
    let events: AuditEvent[] = [];
    for (let i = 0; i < 100 && events.length < want; i++) {
      await new Promise((r) => setTimeout(r, 100));
      events = await fhir.search<AuditEvent>('AuditEvent');
    }
    expect(events).toHaveLength(want);
    const byAction = new Map(events.map((e) => [e.subtype?.[0].code, e]));
    expect(byAction.get('config.read')).toMatchObject({
      action: 'R',
      outcome: '0',
      agent: [
        {
          who: { identifier: { value: expect.stringMatching(/^token:\w+ \(test-admin\)$/) } },
          role: [{ text: 'admin' }],
          network: { address: '127.0.0.1' },
        },
      ],
    });
    expect(byAction.get('access.denied')).toMatchObject({ outcome: '4', agent: [{ role: [{ text: 'viewer' }] }] });
    const replay = byAction.get('replay')!;
    expect(replay).toMatchObject({
      action: 'E',
      agent: [{ type: { coding: [{ code: 'humanuser' }] }, who: { identifier: { value: 'cli:alice' } } }],
    });
    expect(replay.entity?.map((x) => x.what?.identifier?.value)).toEqual(['01MSGA', '01MSGB']);
    expect(engine.source('audit-trail')!.stats?.()).toMatchObject({ emitted: want });
  });
});
