/**
 * A transform worker thread: loads the plugins the config names, runs transform -> routes ->
 * steps (`MessagePipeline`) for batches of messages the engine sends, and answers with
 * processing reports (bundles as JSON text). No store access, no sockets: the engine's thread
 * keeps every write and every acknowledgement.
 */
import 'reflect-metadata';
import { parentPort, workerData } from 'node:worker_threads';
import type { StoredMessage } from '../model/message';
import { createLogger } from '../logging/logger';
import { corePlugin } from '../plugin/core.plugin';
import { PluginHost } from '../plugin/plugin-host';
import type { PluginDefinition } from '../plugin/api';
import { warmFhirValidator } from '../fhir/validate';
import { MessagePipeline, type ProcessingReport } from './process-message';
import { PROGRESS_MS, type TransformWorkerData, type WorkerReply, type WorkerRequest } from './transform-pool';

async function main(): Promise<void> {
  const data = workerData as TransformWorkerData;
  const logger = createLogger(data.log).child({ component: 'transform-worker' });
  let pipeline: MessagePipeline;
  let impls: import('../plugin/api').MessageTransform[];
  /** The compilation of `pipeline` (0: the routes the worker was started with; see RouteGeneration). */
  let key = 0;
  let transforms: string[];
  try {
    const host = new PluginHost(logger);
    const defs: PluginDefinition[] = [
      corePlugin,
      ...data.plugins.map((ref) => PluginHost.resolveDefinition(ref, data.pluginBaseDir)),
    ];
    await host.load(defs, (def) => data.pluginConfig[def.manifest.id] ?? {});
    impls = host.transforms().map((t) => t.container.resolve(t.impl));
    transforms = impls.map((t) => t.name);
    pipeline = new MessagePipeline(impls, data.routes, data.baseDir, {
      validate: data.validate,
      dataQuality: data.dataQuality,
    });
    if (data.validate) warmFhirValidator();
  } catch (e) {
    parentPort!.postMessage({ type: 'failed', message: (e as Error).message } satisfies WorkerReply);
    return;
  }
  parentPort!.postMessage({ type: 'ready', transforms } satisfies WorkerReply);
  parentPort!.on('message', (req: WorkerRequest) => {
    void (async () => {
      const reports: ProcessingReport[] = [];
      try {
        // A reload: the batch carries the routes of the config it is routed by (see RouteGeneration).
        const g = req.generation;
        if (g && g.key !== key) {
          pipeline = new MessagePipeline(impls, g.routes, data.baseDir, {
            validate: data.validate,
            dataQuality: g.dataQuality,
          });
          key = g.key;
        }
        // One pipeline for the whole batch, even if a later batch brings another version meanwhile.
        const batchPipeline = pipeline;
        let beat = Date.now();
        for (const m of req.messages) {
          const now = Date.now();
          if (now - beat >= PROGRESS_MS) {
            // still going (the pool's timeout is for a worker that stops finishing messages)
            parentPort!.postMessage({ type: 'progress', id: req.id, done: reports.length } satisfies WorkerReply);
            beat = now;
          }
          // A Buffer arrives as a plain Uint8Array: view the same bytes as a Buffer again.
          const body = m.body ? Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength) : undefined;
          const message: StoredMessage = { ...m, body };
          const log = logger.child({
            messageId: m.id,
            source: m.sourceId,
            controlId: m.headers.controlId,
            messageType: m.headers.messageType,
          });
          reports.push(await batchPipeline.process(message, log));
        }
        parentPort!.postMessage({ type: 'done', id: req.id, reports } satisfies WorkerReply);
      } catch (e) {
        parentPort!.postMessage({ type: 'error', id: req.id, message: (e as Error).message } satisfies WorkerReply);
      }
    })();
  });
}

void main();
