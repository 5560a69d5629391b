/** The testkit's contract suites over the cerner plugin's source, sink and transform, against the Oracle Health simulator. */
import { connConfig, resourceMessage, type PollSourceConfig, type WriteBackConfig } from '@ferry/fhir-vendor-kit';
import { contractFaults, heldWith } from '../../../test/simulators/epic/sim-common';
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import {
  CernerSimulator,
  CERNER_TENANT,
  cernerVital,
  seedCernerSandbox,
} from '../../../test/simulators/cerner/cerner-simulator';
import { cernerProfile, CernerFhirTransform, CernerPollSource, CernerWriteBackSink } from './index';
import type { PollingSource } from '@ferry/fhir-vendor-kit';

const SCOPES = ['system/Patient.read', 'system/Observation.read', 'system/Observation.write'];
const sim = new CernerSimulator({
  pageSize: 50,
  clients: [{ clientId: 'contract', secret: 'contract-secret', scopes: SCOPES }],
});
let patientId = '';
let n = 0;
const conn = () =>
  connConfig(
    { baseUrl: sim.baseUrl, clientId: 'contract', http: { timeoutMs: 5000, maxAttempts: 2, maxRetryAfterMs: 1000 } },
    { method: 'client_secret_basic', clientSecret: 'contract-secret', scopes: SCOPES },
  );
const setup = async () => {
  if (patientId) return;
  await sim.start();
  patientId = seedCernerSandbox(sim).patientId;
};
let stopped = false;
const teardown = async () => {
  if (stopped) return;
  stopped = true;
  await sim.stop();
};
/** A vital sign whose interpretation text carries the marker (content, as a name or a note would be). */
const vital = (marker: string) => {
  const v = cernerVital(CERNER_TENANT, patientId, 5000 + n++);
  return {
    ...v,
    id: `VS-contract-${n}`,
    identifier: [{ system: 'urn:contract', value: marker }],
    note: [{ text: marker }],
  };
};

runSourceContract<PollSourceConfig>('cerner-fhir-poll', {
  setup,
  config: () => ({
    ...conn(),
    intervalMs: 50,
    patients: [patientId],
    resources: [{ type: 'Observation' }],
    pageSize: 50,
    initialSince: '',
  }),
  create: (ctx) => new CernerPollSource(ctx),
  async deliver(_source, marker, again) {
    if (!again) sim.store.put(vital(marker));
  },
  poke: (s) => (s as PollingSource<PollSourceConfig>).pollNow(),
});

runSinkContract<WriteBackConfig>('cerner-fhir-write', {
  setup,
  config: () => ({ ...conn(), resourceTypes: ['Observation'], mrnSystem: '', canonicalMrnSystem: 'urn:ferry:id:mrn' }),
  create: (ctx) => new CernerWriteBackSink(ctx),
  bundle: (marker) => ({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [
      {
        resource: {
          resourceType: 'Observation',
          status: 'final',
          identifier: [{ system: 'urn:contract', value: marker }],
          code: { text: 'Pulse' },
          note: [{ text: marker }],
          subject: { reference: `Patient/cerner-${patientId}` },
          valueQuantity: { value: 70 },
        },
      },
    ],
  }),
  ...contractFaults(sim.server, '/Observation'),
  received: (marker) => heldWith(sim.store, 'Observation', marker),
});

runTransformContract('cerner-fhir', {
  create: () => new CernerFhirTransform({}),
  samples(marker) {
    const m = resourceMessage(JSON.stringify(vital(marker)), cernerProfile, 'https://fhir.example.org/r4');
    return [{ contentType: m.contentType, body: m.body }];
  },
  invalid: [{ contentType: cernerProfile.contentType, body: 'not json' }],
});

afterAll(teardown);
