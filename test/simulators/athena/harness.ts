/** The athena suites' harness, on @ferry/testkit: a real SQLite store and source/sink contexts pointed at the athena simulator. */
import { openSqliteStore, sinkContext, sourceHarness, tempDir, validatedConfig } from '@ferry/testkit';
import type { InboundMessage, MessageStore, SourceContext } from '@ferry/core';
import type { AthenaSimulator } from './athena-simulator';

export { sinkContext, tempDir };

export const openStore = (dir: string): Promise<MessageStore> => openSqliteStore(dir);

export const TEST_SCOPE = [
  'athena/service/Athenanet.MDP.*',
  ...['Patient', 'Location', 'Practitioner', 'Condition', 'Observation', 'Encounter', 'DiagnosticReport'].map(
    (t) => `system/${t}.read`,
  ),
  'system/QuestionnaireResponse.write',
].join(' ');

/** Validated config with defaults, pointed at the simulator with fast retries. */
export function configFor<T>(schema: any, sim: AthenaSimulator, extra: Record<string, unknown> = {}): T {
  return validatedConfig<T>(schema, {
    baseUrl: sim.url,
    clientId: 'ferry-client',
    clientSecret: 'ferry-secret',
    practiceId: '195900',
    // REST plus the FHIR reads/writes the suites use: the simulator enforces scopes (reference 1.2, 2.1).
    scope: TEST_SCOPE,
    callRetry: { maxAttempts: 5, initialDelayMs: 20, maxDelayMs: 200, maxRetryAfterMs: 5000 },
    rateLimit: { qps: 200 },
    timeoutMs: 2000,
    ...extra,
  });
}

export interface TestSourceContext<C> extends SourceContext<C> {
  /** Messages committed to the store. */
  submitted: InboundMessage[];
  /** Replace to simulate a crash before the store commit. */
  beforeSubmit?: (messages: InboundMessage[]) => Promise<void>;
  abort: AbortController;
}

/** The testkit's source harness (duplicates ignored, as the athena sources are configured), with a crash hook. */
export function sourceContext<C>(id: string, store: MessageStore, config: C): TestSourceContext<C> {
  const h = sourceHarness(store, id, config, { duplicates: 'ignore' });
  const submit = h.ctx.submit;
  const ctx: TestSourceContext<C> = Object.assign(h.ctx, {
    submitted: h.stored,
    abort: h.abort,
    submit: async (messages: InboundMessage[], o?: Parameters<typeof submit>[1]) => {
      if (ctx.beforeSubmit) await ctx.beforeSubmit(messages);
      return submit(messages, o);
    },
  });
  return ctx;
}
