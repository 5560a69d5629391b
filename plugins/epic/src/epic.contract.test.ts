/** The testkit's contract suites over the epic plugin's source, sink and transform, against the Epic simulator. */
import {
  connConfig,
  resourceMessage,
  testKey,
  type PollingSource,
  type PollSourceConfig,
  type WriteBackConfig,
} from '@ferry/fhir-vendor-kit';
import { contractFaults, heldWith } from '../../../test/simulators/epic/sim-common';
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import { EpicSimulator, epicVital, seedEpicSandbox } from '../../../test/simulators/epic/epic-simulator';
import { epicProfile } from './epic-profile';
import { EpicWriteBackSink } from './sinks/epic-fhir-write.sink';
import { EpicPollSource } from './sources/epic-fhir-poll.source';
import { EpicFhirTransform } from './transforms/epic-fhir.transform';

const sim = new EpicSimulator({ pageSize: 50 });
let patientId = '';
let key: Awaited<ReturnType<typeof testKey>>;
let n = 0;
const conn = () =>
  connConfig(
    { baseUrl: sim.baseUrl, clientId: 'contract', http: { timeoutMs: 5000, maxAttempts: 2, maxRetryAfterMs: 1000 } },
    { privateKey: key.pem, kid: 'contract' },
  );
const setup = async () => {
  if (patientId) return;
  key = await testKey('contract');
  sim.registerClient('contract', key.jwks);
  await sim.start();
  patientId = seedEpicSandbox(sim).patientId;
};
afterAll(() => sim.stop());
/** A vital sign carrying the marker in an identifier and a note (content, as a name would be). */
const vital = (marker: string) => ({
  ...epicVital(patientId, 7000 + n++),
  identifier: [{ system: 'urn:contract', value: marker }],
  note: [{ text: marker }],
});

runSourceContract<PollSourceConfig>('epic-fhir-poll', {
  setup,
  config: () => ({
    ...conn(),
    intervalMs: 50,
    patients: [patientId],
    resources: [{ type: 'Observation', category: 'vital-signs' }],
    pageSize: 50,
    initialSince: '',
  }),
  create: (ctx) => new EpicPollSource(ctx),
  async deliver(_source, marker, again) {
    if (!again) sim.store.put(vital(marker));
  },
  poke: (s) => (s as PollingSource<PollSourceConfig>).pollNow(),
});

runSinkContract<WriteBackConfig>('epic-fhir-write', {
  setup,
  config: () => ({ ...conn(), resourceTypes: ['Observation'], mrnSystem: '', canonicalMrnSystem: 'urn:ferry:id:mrn' }),
  create: (ctx) => new EpicWriteBackSink(ctx),
  bundle: (marker) => ({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [
      {
        resource: {
          resourceType: 'Observation',
          status: 'final',
          identifier: [{ system: 'urn:contract', value: marker }],
          category: [
            { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
          ],
          code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }], text: 'Pulse' },
          note: [{ text: marker }],
          subject: { reference: `Patient/epic-${patientId}` },
          valueQuantity: { value: 72, unit: '/min' },
        },
      },
    ],
  }),
  ...contractFaults(sim.server, '/Observation'),
  received: (marker) => heldWith(sim.store, 'Observation', marker),
});

runTransformContract('epic-fhir', {
  create: () => new EpicFhirTransform({}),
  samples(marker) {
    const m = resourceMessage(JSON.stringify(vital(marker)), epicProfile, 'https://fhir.example.org/api/FHIR/R4');
    return [{ contentType: m.contentType, body: m.body }];
  },
  invalid: [{ contentType: epicProfile.contentType, body: '{"resourceType": 42}' }],
});
