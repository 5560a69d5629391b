/** Test harness: real SQLite store + source/sink contexts without the engine. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger, SqliteMessageStore, validateWithSchema, type ConfigProblem, type InboundMessage, type MessageStore, type SinkContext, type SourceContext } from '@ferry/core';
import type { AthenaSimulator } from '../../../../test/simulators/athena';

export function tempDir(prefix = 'ferry-athena-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function openStore(dir: string): Promise<MessageStore> {
  const store = new SqliteMessageStore({ path: path.join(dir, 'ferry.db'), logger: silentLogger() });
  await store.open();
  return store;
}

export const TEST_SCOPE = ['athena/service/Athenanet.MDP.*', ...['Patient', 'Location', 'Practitioner', 'Condition', 'Observation', 'Encounter', 'DiagnosticReport'].map((t) => `system/${t}.read`), 'system/QuestionnaireResponse.write'].join(' ');

/** Validated config with defaults, pointed at the simulator with fast retries. */
export function configFor<T>(schema: any, sim: AthenaSimulator, extra: Record<string, unknown> = {}): T {
  const problems: ConfigProblem[] = [];
  const cfg = validateWithSchema<T>(
    schema,
    {
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
    },
    'test',
    problems,
  );
  if (problems.length) throw new Error(`config problems: ${JSON.stringify(problems)}`);
  return cfg;
}

export interface TestSourceContext<C> extends SourceContext<C> {
  submitted: InboundMessage[];
  /** Replace to simulate a crash before the store commit. */
  beforeSubmit?: (messages: InboundMessage[]) => Promise<void>;
  abort: AbortController;
}

export function sourceContext<C>(id: string, store: MessageStore, config: C): TestSourceContext<C> {
  const abort = new AbortController();
  const ctx: TestSourceContext<C> = {
    id,
    config,
    logger: silentLogger(),
    signal: abort.signal,
    abort,
    submitted: [],
    async submit(messages, opts) {
      if (ctx.beforeSubmit) await ctx.beforeSubmit(messages);
      const res = await store.insert(
        messages.map((m) => ({ ...m, sourceId: id })),
        { duplicates: { policy: 'ignore', windowMs: 86_400_000 }, checkpoint: opts?.checkpoint },
      );
      ctx.submitted.push(...messages);
      return res;
    },
    getCheckpoint: (key) => store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => store.setCheckpoint(id, key, value),
    extractHeaders: () => ({}),
    split: (_ct, body) => [body],
  };
  return ctx;
}

export function sinkContext<C>(id: string, config: C): SinkContext<C> {
  return { id, config, logger: silentLogger() };
}
