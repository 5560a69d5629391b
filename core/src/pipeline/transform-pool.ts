import { existsSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'winston';
import type { LogConfig } from '../logging/logger';
import type { RouteConfig } from '../config/engine.schema';
import { errorFields } from '../logging/logger';
import type { DataQualityPolicy, StoredMessage } from '../model/message';
import type { ProcessingReport } from './process-message';

/** What a transform worker is started with (plain data: it is cloned into the thread). */
export interface TransformWorkerData {
  /** Plugin package names or paths from the config (in-memory plugins cannot cross threads). */
  plugins: string[];
  pluginConfig: Record<string, Record<string, unknown>>;
  /** Where plugin packages are resolved from (the engine resolves them from the same place). */
  pluginBaseDir: string;
  routes: RouteConfig[];
  /** Each source's `dataQuality` policy, by source id. */
  dataQuality?: Record<string, DataQualityPolicy>;
  /** processing.validate */
  validate: boolean;
  /** Relative script paths resolve against it. */
  baseDir: string;
  log: Partial<LogConfig>;
}

/**
 * The routes (and data-quality policies) a batch is routed by, with the config version they
 * belong to: a reload swaps them between batches, and each batch carries its own, so a worker
 * routes every message of a batch by one config, old or new (it rebuilds its pipeline when the
 * compilation changes).
 */
export interface RouteGeneration {
  version: number;
  /** Which compilation (0: the routes the workers start with): a reload with the same version may still bring new scripts. */
  key: number;
  routes: RouteConfig[];
  dataQuality?: Record<string, DataQualityPolicy>;
}

export type WorkerRequest = { id: number; messages: StoredMessage[]; generation?: RouteGeneration };
export type WorkerReply =
  | { type: 'ready'; transforms: string[] }
  | { type: 'failed'; message: string }
  | { type: 'done'; id: number; reports: ProcessingReport[] }
  /** A batch under way: `done` of its messages processed (sent at most every PROGRESS_MS). */
  | { type: 'progress'; id: number; done: number }
  | { type: 'error'; id: number; message: string };

/** The compiled worker script (under ts-jest the sources run from src/, the worker from dist/). */
export function transformWorkerScript(): string | undefined {
  const here = path.join(__dirname, 'transform-worker.js');
  if (existsSync(here)) return here;
  const built = path.resolve(__dirname, '../../dist/pipeline/transform-worker.js');
  return existsSync(built) ? built : undefined;
}

/** How often a worker busy with a batch says it is still making progress (see TransformPool.process). */
export const PROGRESS_MS = 100;

/** A batch a worker did not answer in time: its messages are not retried on the engine thread. */
export class TransformTimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`transform worker did not answer within ${timeoutMs} ms`);
  }
}

interface Slot {
  worker: Worker;
  ready: boolean;
  pending: Map<number, { resolve(r: ProcessingReport[]): void; reject(e: Error): void; size: number }>;
  load: number;
  /** When the worker last finished a message or a batch (its batches' timeouts count from then). */
  alive: number;
}

/**
 * Worker threads that transform and route messages, so the CPU-heavy part of processing (parse,
 * convert, serialise) runs beside the engine's thread -- the one that owns the store, the
 * sockets and the sinks. A batch goes to the least loaded worker. A worker that dies is
 * replaced; the batches it held fail and the processor runs them on its own thread instead
 * (nothing is lost either way: the messages stay leased in the store until recorded).
 */
export class TransformPool {
  private slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  private constructor(
    private readonly script: string,
    private readonly data: TransformWorkerData,
    private readonly logger: Logger,
  ) {}

  /**
   * Starts `size` workers and waits until they have loaded the plugins. Resolves undefined (and
   * logs why) when workers cannot be used: processing then stays on the engine's thread.
   */
  static async start(size: number, data: TransformWorkerData, logger: Logger): Promise<TransformPool | undefined> {
    const script = transformWorkerScript();
    if (!script) {
      logger.warn('transform workers unavailable (worker script not built); processing on the engine thread');
      return undefined;
    }
    const pool = new TransformPool(script, data, logger);
    try {
      await Promise.all(Array.from({ length: size }, () => pool.spawn()));
    } catch (e) {
      logger.warn('transform workers could not start; processing on the engine thread', errorFields(e));
      await pool.close();
      return undefined;
    }
    logger.info('transform workers started', { workers: size, transforms: [...pool.known] });
    return pool;
  }

  /** Workers started (ready or starting). */
  get size(): number {
    return this.slots.length;
  }

  /** Workers ready for batches. */
  get ready(): number {
    return this.slots.filter((s) => s.ready).length;
  }

  /** Transforms the workers load (the same plugins in each). */
  private readonly known = new Set<string>();

  /** True when the workers have the transform of this name (one may be restarting: batches wait for it). */
  handles(transformName: string | undefined): boolean {
    return !!transformName && !this.closed && this.slots.length > 0 && this.known.has(transformName);
  }

  private spawn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const worker = new Worker(this.script, { workerData: this.data });
      const slot: Slot = { worker, ready: false, pending: new Map(), load: 0, alive: Date.now() };
      this.slots.push(slot);
      let started = false;
      worker.on('message', (msg: WorkerReply) => {
        slot.alive = Date.now();
        switch (msg.type) {
          case 'progress':
            return;
          case 'ready':
            slot.ready = true;
            for (const t of msg.transforms) this.known.add(t);
            started = true;
            resolve();
            this.readyWaiters.splice(0).forEach((w) => w());
            return;
          case 'failed':
            started = true;
            reject(new Error(`transform worker could not load the plugins: ${msg.message}`));
            void worker.terminate();
            return;
          case 'done':
          case 'error': {
            const p = slot.pending.get(msg.id);
            if (!p) return;
            slot.pending.delete(msg.id);
            slot.load -= p.size;
            if (msg.type === 'done') p.resolve(msg.reports);
            else p.reject(new Error(msg.message));
          }
        }
      });
      worker.on('error', (e) => this.logger.error('transform worker error', errorFields(e)));
      worker.on('exit', (code) => {
        this.slots = this.slots.filter((s) => s !== slot);
        for (const p of slot.pending.values()) p.reject(new Error(`transform worker exited (code ${code})`));
        slot.pending.clear();
        if (!started) {
          reject(new Error(`transform worker exited during start (code ${code})`));
          return;
        }
        if (this.closed) return;
        this.logger.warn('transform worker exited; starting another', { code });
        this.spawn().catch((e) => !this.closed && this.logger.error('transform worker restart failed', errorFields(e)));
      });
    });
  }

  /**
   * Processes messages on the least loaded worker; rejects if that worker fails. A batch whose
   * worker finishes no message for `timeoutMs` (a transform that never returns) ends that worker --
   * another starts -- and rejects with a TransformTimeoutError. The budget is per message, not per
   * batch: a large batch on a loaded machine, or one queued behind another, is not cut short while
   * its worker keeps finishing messages (it reports progress every PROGRESS_MS).
   */
  async process(messages: StoredMessage[], timeoutMs = 0, generation?: RouteGeneration): Promise<ProcessingReport[]> {
    // A worker being replaced: wait for it (bounded) rather than fail the batch over to the engine thread.
    if (!this.slots.some((s) => s.ready) && this.slots.length && !this.closed)
      await this.readyOrTimeout(Math.max(timeoutMs, 30_000));
    return this.send(messages, timeoutMs, generation);
  }

  private readyWaiters: (() => void)[] = [];

  private readyOrTimeout(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.readyWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private send(
    messages: StoredMessage[],
    timeoutMs: number,
    generation?: RouteGeneration,
  ): Promise<ProcessingReport[]> {
    const ready = this.slots.filter((s) => s.ready);
    if (!ready.length) return Promise.reject(new Error('no transform worker is running'));
    const slot = ready.reduce((a, b) => (b.load < a.load ? b : a));
    const id = this.nextId++;
    return new Promise<ProcessingReport[]>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          if (timer) clearTimeout(timer);
          f(v);
        };
      slot.pending.set(id, { resolve: done(resolve), reject: done(reject), size: messages.length });
      slot.load += messages.length;
      // an idle worker starts on this batch now: its silence counts from here
      if (slot.load === messages.length) slot.alive = Date.now();
      const watch = (): void => {
        const quiet = Date.now() - slot.alive;
        if (quiet < timeoutMs) {
          timer = setTimeout(watch, timeoutMs - quiet);
          return;
        }
        const p = slot.pending.get(id);
        if (!p) return;
        slot.pending.delete(id);
        slot.load -= p.size;
        this.logger.error('transform worker did not answer in time; replacing it', {
          messages: messages.length,
          timeoutMs,
        });
        reject(new TransformTimeoutError(timeoutMs));
        void slot.worker.terminate();
      };
      if (timeoutMs > 0) timer = setTimeout(watch, timeoutMs);
      slot.worker.postMessage({ id, messages, generation } satisfies WorkerRequest);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
