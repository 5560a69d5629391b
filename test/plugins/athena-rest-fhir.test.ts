/**
 * athena-rest and athena-fhir together: one athenaOne environment read through both APIs. These
 * checks need both plugins, so they live here rather than in either plugin (a plugin imports no
 * other plugin; scripts/check-plugin-imports.js).
 */
import type { MessageStore } from '@ferry/core';
import { VendorConnections } from '@ferry/fhir-vendor-kit';
import {
  athenaFhirToBundle,
  AthenaFhirSource,
  athenaFhirSourceSchema,
  type AthenaFhirSourceConfig,
} from '@ferry/plugin-athena-fhir';
import {
  AthenaRestSource,
  athenaRestSourceSchema,
  athenaEnvelopeToBundle,
  type AthenaRestSourceConfig,
} from '@ferry/plugin-athena-rest';
import {
  AthenaSimulator,
  configFor,
  openStore,
  PRACTICE,
  referencePatient,
  seedPractice,
  sourceContext,
  tempDir,
} from '../simulators/athena';

let sim: AthenaSimulator;
let store: MessageStore;
beforeAll(async () => {
  sim = await AthenaSimulator.start({ fhirDefaultCount: 50 });
  seedPractice(sim);
  store = await openStore(tempDir());
});
afterAll(async () => {
  await store.close();
  await sim.stop();
});

describe('athena-rest and athena-fhir', () => {
  it('the REST transform of a patient conditionally updates the same target as the FHIR transform', () => {
    const b = athenaFhirToBundle({ practiceid: '14523', resource: referencePatient as any });
    const rest = athenaEnvelopeToBundle({
      practiceid: '14523',
      kind: 'patient',
      record: { patientid: '857', firstname: 'Phr', lastname: 'Testuser', dob: '01/01/2000' },
    });
    expect(rest.entry![0].request!.url).toBe(b.entry![0].request!.url);
    expect(rest.entry![0].fullUrl).toBe(b.entry![0].fullUrl);
  });

  it('does not share a token across scopes: a REST source and a FHIR source with a wider scope on one client each get their own', async () => {
    sim.opts.clients['scope-client'] = 'scope-secret';
    sim.subscribe(PRACTICE, 'patients', 'scope-client');
    sim.putFhir(PRACTICE, 'Location', `a-${PRACTICE}.Department-77`, { name: 'Scope test', status: 'active' });
    const before = sim.tokensIssued;
    const creds = { clientId: 'scope-client', clientSecret: 'scope-secret' };
    // one engine's tokens, as both plugins get them injected (vendorConnectionsToken)
    const shared = new VendorConnections();
    const rest = new AthenaRestSource(
      sourceContext(
        'athena-rest-scope',
        store,
        configFor<AthenaRestSourceConfig>(athenaRestSourceSchema, sim, {
          ...creds,
          scope: 'athena/service/Athenanet.MDP.*',
          feeds: ['patients'],
        }),
      ),
      shared,
    );
    const fhirSrc = new AthenaFhirSource(
      sourceContext(
        'athena-fhir-scope',
        store,
        configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
          ...creds,
          scope: 'athena/service/Athenanet.MDP.* system/Location.read',
          resources: ['Location'],
        }),
      ),
      shared,
    );
    await rest.pollOnce(); // fetches the narrower token first
    await fhirSrc.pollOnce(); // would get 403 "lacks system/Location.read" with a shared token
    expect(sim.tokensIssued - before).toBe(2);
    expect(fhirSrc.typeStates()[0].state).toBe('ok');
    // the same scopes spelled in another order are the same token
    const again = new AthenaFhirSource(
      sourceContext(
        'athena-fhir-scope2',
        store,
        configFor<AthenaFhirSourceConfig>(athenaFhirSourceSchema, sim, {
          ...creds,
          scope: 'system/Location.read  athena/service/Athenanet.MDP.*',
          resources: ['Location'],
        }),
      ),
      shared,
    );
    await again.pollOnce();
    expect(sim.tokensIssued - before).toBe(2);
  });
});
