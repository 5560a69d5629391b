/** The testkit's contract suites over the athena-fhir plugin's source, sink and transform, against the athenaOne simulator. */
import type { PollingSource } from '@ferry/fhir-vendor-kit';
import { runSinkContract, runSourceContract, runTransformContract } from '@ferry/testkit';
import { AthenaSimulator, configFor, PRACTICE, seedPractice } from '../../../test/simulators/athena';
import { AthenaFhirSink, athenaFhirSinkSchema, type AthenaFhirSinkConfig } from './sinks/athena-fhir.sink';
import { AthenaFhirSource, athenaFhirSourceSchema, type AthenaFhirSourceConfig } from './sources/athena-fhir.source';
import { ATHENA_FHIR_CONTENT_TYPE } from './to-fhir/athena-fhir-canonical';
import { AthenaFhirTransform } from './transforms/athena-fhir.transform';

let sim: AthenaSimulator | undefined;
let n = 0;
const setup = async () => {
  if (sim) return;
  sim = await AthenaSimulator.start({ fhirDefaultCount: 50 });
  seedPractice(sim);
};
afterAll(async () => {
  await sim?.stop();
});
const retry = { maxAttempts: 2, initialDelayMs: 20, maxDelayMs: 100, maxRetryAfterMs: 1000 };
/** A Condition whose note is the marker (content that must never reach a log). */
const condition = (marker: string) => ({
  resourceType: 'Condition',
  clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
  code: { text: 'Hypertension' },
  note: [{ text: marker }],
  subject: { reference: `Patient/a-${PRACTICE}.E-500` },
  recordedDate: '2026-01-02',
});

runSourceContract<AthenaFhirSourceConfig>('athena-fhir', {
  setup,
  config: () =>
    configFor(athenaFhirSourceSchema, sim!, { resources: ['Condition'], pollIntervalMs: 50, callRetry: retry }),
  create: (ctx) => new AthenaFhirSource(ctx),
  async deliver(_source, marker, again) {
    if (!again) sim!.putFhir(PRACTICE, 'Condition', `a-${PRACTICE}.problem-c${++n}`, condition(marker));
  },
  poke: (s) => (s as PollingSource<AthenaFhirSourceConfig>).pollNow(),
});

runSinkContract<AthenaFhirSinkConfig>('athena-fhir', {
  setup,
  config: () => configFor(athenaFhirSinkSchema, sim!, { callRetry: retry }),
  create: (ctx) => new AthenaFhirSink(ctx),
  bundle: (marker) => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: {
          resourceType: 'QuestionnaireResponse',
          status: 'completed',
          subject: { reference: `Patient/a-${PRACTICE}.E-500` },
          item: [{ linkId: '1', answer: [{ valueString: marker }] }],
        } as any,
      },
    ],
  }),
  nonIdempotent: 'athena FHIR has no conditional create and no QuestionnaireResponse search',
  fault(kind) {
    if (kind === 'hang') sim!.setLatency(4000, { method: 'POST', match: /QuestionnaireResponse$/ });
    // Throttled for longer than the sink waits: retryable. A business-rule refusal: dead.
    else
      sim!.inject(
        kind === 'retryable'
          ? { status: 429, retryAfter: '2', match: /QuestionnaireResponse$/ }
          : { status: 422, match: /QuestionnaireResponse$/ },
      );
  },
  received: (marker) =>
    sim!.fhirResources('QuestionnaireResponse').filter((r) => JSON.stringify(r.item ?? []).includes(marker)).length,
  teardown: async () => sim?.setLatency(0),
});

runTransformContract('athena-fhir', {
  create: () => new AthenaFhirTransform(),
  samples: (marker) => [
    {
      contentType: ATHENA_FHIR_CONTENT_TYPE,
      body: JSON.stringify({
        practiceid: PRACTICE,
        resource: {
          ...condition(marker),
          id: `a-${PRACTICE}.problem-1`,
          meta: { lastUpdated: '2026-01-02T00:00:00Z' },
        },
      }),
    },
  ],
  invalid: [{ contentType: ATHENA_FHIR_CONTENT_TYPE, body: '{"practiceid": "1"}' }],
});
