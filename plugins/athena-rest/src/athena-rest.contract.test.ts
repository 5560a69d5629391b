/** The testkit's contract suites over the athena-rest plugin's source, sink and transform, against the athenaOne simulator. */
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import type { PollingSource } from '@ferry/fhir-vendor-kit';
import { AthenaSimulator, configFor, PRACTICE, samplePatient, seedPractice } from '../../../test/simulators/athena';
import { AthenaRestSink, athenaRestSinkSchema, type AthenaRestSinkConfig } from './sinks/athena-rest.sink';
import { AthenaRestSource, athenaRestSourceSchema, type AthenaRestSourceConfig } from './sources/athena-rest.source';
import { AthenaContentType } from './to-fhir/athena-records';
import { AthenaRestTransform } from './transforms/athena-rest.transform';

let sim: AthenaSimulator | undefined;
let n = 0;
let clients = 0;
const setup = async () => {
  if (sim) return;
  sim = await AthenaSimulator.start();
  seedPractice(sim);
  sim.subscribe(PRACTICE, 'patients');
};
afterAll(async () => {
  await sim?.stop();
});
/** An athena patient whose last name is the marker (a name: content that must never reach a log). */
const patient = (marker: string) => samplePatient(++n, { patientid: String(9000 + n), lastname: marker });
const retry = { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 100, maxRetryAfterMs: 1000 };

runSourceContract<AthenaRestSourceConfig>('athena-rest', {
  setup,
  // Each run its own client, so its own changed-data queue (a queue is per client): runs do not take each other's events.
  config: () => {
    const clientId = `contract-${++clients}`;
    sim!.opts.clients[clientId] = 'contract-secret';
    sim!.subscribe(PRACTICE, 'patients', clientId);
    return configFor(athenaRestSourceSchema, sim!, {
      clientId,
      clientSecret: 'contract-secret',
      feeds: ['patients'],
      pollIntervalMs: 50,
      callRetry: retry,
    });
  },
  create: (ctx) => new AthenaRestSource(ctx),
  async deliver(_source, marker, again) {
    if (!again) sim!.upsertPatient(PRACTICE, patient(marker));
  },
  poke: (s) => (s as PollingSource<AthenaRestSourceConfig>).pollNow(),
});

runSinkContract<AthenaRestSinkConfig>('athena-rest', {
  setup,
  config: () => configFor(athenaRestSinkSchema, sim!, { departmentId: '1', callRetry: retry }),
  create: (ctx) => new AthenaRestSink(ctx),
  bundle: (marker) => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:11111111-1111-4111-8111-111111111111',
        resource: {
          resourceType: 'Patient',
          identifier: [{ system: 'urn:oid:1.2.3', value: `${marker}-mrn` }],
          name: [{ use: 'official', family: marker, given: ['Contract'] }],
          gender: 'female',
          birthDate: '1990-02-03',
        },
      },
    ],
  }),
  fault(kind) {
    if (kind === 'hang') sim!.setLatency(4000);
    // Every attempt of the call (the sink's own retries included) fails.
    else
      sim!.inject({
        status: kind === 'retryable' ? 503 : 400,
        times: kind === 'retryable' ? retry.maxAttempts : 1,
        match: /\/patients$/,
      });
  },
  received: (marker) => [...sim!.practice(PRACTICE).patients.values()].filter((p) => p.lastname === marker).length,
  teardown: async () => sim?.setLatency(0),
});

runTransformContract('athena-rest', {
  create: () => new AthenaRestTransform(),
  samples: (marker) => [
    {
      contentType: AthenaContentType.patient,
      body: JSON.stringify({ practiceid: PRACTICE, kind: 'patient', feed: 'patients', record: patient(marker) }),
    },
  ],
  invalid: [{ contentType: AthenaContentType.patient, body: '{"practiceid": "1", "kind": "patient"' }],
});
