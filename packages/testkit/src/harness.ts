/**
 * Run one component (a source, a transform or a sink) against real parts, without the engine:
 * a real SQLite store in a temporary folder, the contexts the engine would inject, a logger that
 * captures what the component logs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import {
  createLogger,
  FerryError,
  silentLogger,
  SqliteMessageStore,
  validateWithSchema,
  type ConfigProblem,
  type ConfigSchema,
  type InboundMessage,
  type InsertResult,
  type MessageStore,
  type SinkContext,
  type SourceContext,
} from '@ferry/core';
import type { Logger } from 'winston';

/** A fresh temporary folder (0700); remove it with `fs.rmSync(dir, { recursive: true, force: true })`. */
export function tempDir(prefix = 'ferry-testkit-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A real SQLite message store in `dir` (a new temporary folder when absent), opened. */
export async function openSqliteStore(dir: string = tempDir(), file = 'ferry.db'): Promise<SqliteMessageStore> {
  const store = new SqliteMessageStore({ path: path.join(dir, file), logger: silentLogger() });
  await store.open();
  return store;
}

/** A plugin config entry validated against its schema with defaults filled in, as the engine does; throws listing every problem. */
export function validatedConfig<T>(schema: ConfigSchema, value: Record<string, unknown>, at = 'test'): T {
  const problems: ConfigProblem[] = [];
  const cfg = validateWithSchema<T>(schema, value, at, problems);
  if (problems.length) throw new Error(`config problems: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`);
  return cfg;
}

export interface LogLine {
  level: string;
  message: string;
  [k: string]: unknown;
}

/** A real winston logger (JSON lines, the engine's format) whose output is kept in `lines`. */
export function captureLogger(level = 'debug'): { logger: Logger; lines: LogLine[]; text: () => string } {
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) {
        raw.push(l);
        try {
          lines.push(JSON.parse(l));
        } catch {
          lines.push({ level: 'unknown', message: l });
        }
      }
      cb();
    },
  });
  return { logger: createLogger({ level: level as any }, stream), lines, text: () => raw.join('\n') };
}

export interface SourceHarnessOptions {
  /** Duplicate policy of the inserts (default: accept every message). */
  duplicates?: 'accept' | 'ignore' | 'off';
  /** The n-th submit (1-based) kills the "process": the batch is not committed, the signal aborts. */
  killOnSubmit?: number;
  logger?: Logger;
  /** What the engine derives from the content type's transform (a source that splits batches or reads headers needs them). */
  extractHeaders?: SourceContext['extractHeaders'];
  split?: SourceContext['split'];
}

/** One submit as the harness saw it: when it was called and when (if) the store committed it. */
export interface SubmitRecord {
  messages: InboundMessage[];
  calledAt: number;
  committedAt?: number;
  error?: FerryError;
}

export interface SourceHarness<C> {
  ctx: SourceContext<C>;
  abort: AbortController;
  store: MessageStore;
  /** Every submit, in order. */
  submits: SubmitRecord[];
  /** Messages committed to the store. */
  stored: InboundMessage[];
  /** While set, submit waits for this promise before inserting (hold the commit to see what the source does meanwhile). */
  gate?: Promise<void>;
  /** While true, submit fails as the engine's does when the store is down (transient, retryable), committing nothing. */
  storeDown: boolean;
  /** Resolves when `n` messages have been committed (or rejects after `timeoutMs`). */
  waitForStored(n: number, timeoutMs?: number): Promise<InboundMessage[]>;
}

/** A SourceContext over a real store, recording every submit and when it committed. */
export function sourceHarness<C>(
  store: MessageStore,
  id: string,
  config: C,
  opts: SourceHarnessOptions = {},
): SourceHarness<C> {
  const abort = new AbortController();
  const h: SourceHarness<C> = {
    abort,
    store,
    submits: [],
    stored: [],
    storeDown: false,
    ctx: undefined as unknown as SourceContext<C>,
    waitForStored: (n, timeoutMs = 10_000) =>
      waitFor(
        () => (h.stored.length >= n ? h.stored : undefined),
        timeoutMs,
        `${n} stored messages (have ${h.stored.length})`,
      ),
  };
  const dup = opts.duplicates ?? 'accept';
  h.ctx = {
    id,
    config,
    logger: opts.logger ?? silentLogger(),
    signal: abort.signal,
    async submit(messages, o): Promise<InsertResult[]> {
      const rec: SubmitRecord = { messages, calledAt: Date.now() };
      h.submits.push(rec);
      if (opts.killOnSubmit !== undefined && h.submits.length >= opts.killOnSubmit) {
        // The process dies: this batch is never committed and nothing after it runs.
        abort.abort();
        throw (rec.error = new FerryError('TRANSIENT_KILLED', 'killed', { kind: 'transient' }));
      }
      if (h.gate) await h.gate;
      if (h.storeDown)
        throw (rec.error = new FerryError('TRANSIENT_STORE_CLOSED', 'the message store is not open', {
          kind: 'transient',
        }));
      const res = await store.insert(
        messages.map((m) => ({ ...m, sourceId: id })),
        {
          checkpoint: o?.checkpoint,
          duplicates:
            dup === 'off'
              ? undefined
              : dup === 'ignore'
                ? { policy: 'ignore', windowMs: 86_400_000 }
                : { policy: 'accept', windowMs: 0 },
        },
      );
      rec.committedAt = Date.now();
      h.stored.push(...messages);
      return res;
    },
    getCheckpoint: (key) => store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => store.setCheckpoint(id, key, value),
    extractHeaders: opts.extractHeaders ?? (() => ({})),
    split: opts.split ?? ((_ct, body) => [body]),
  };
  return h;
}

/** The SinkContext the engine injects. */
export function sinkContext<C>(id: string, config: C, logger: Logger = silentLogger()): SinkContext<C> {
  return { id, config, logger };
}

/** Poll `probe` until it returns something (not undefined/false), or fail after `timeoutMs` naming `what`. */
export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
