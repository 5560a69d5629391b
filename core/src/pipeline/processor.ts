import type { Bundle, Patient } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import type { RouteConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import { errorFields } from '../logging/logger';
import type { StoredMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import { compileRoute, matchRoutes, type CompiledRoute } from '../routing/router';
import type { MessageStore, PlannedDelivery } from '../store/message-store';
import { compileStep, type CompiledStep } from './steps';
import { WakeableSleep } from '../util/wakeable-sleep';

export interface ProcessorOptions {
  owner: string;
  batchSize: number;
  leaseMs: number;
  pollIntervalMs: number;
  baseDir: string;
}

interface RuntimeRoute extends CompiledRoute {
  steps: CompiledStep[];
}

/** Finds the transform for a content type. */
export function findTransform(transforms: MessageTransform[], contentType: string): MessageTransform | undefined {
  const base = contentType.split(';')[0].trim().toLowerCase();
  return transforms.find((t) => t.canHandle(base));
}

/** The default ordering key: the canonical Patient's first identifier (system|value). */
export function patientOrderingKey(bundle: Bundle): string | undefined {
  for (const e of bundle.entry ?? []) {
    if (e.resource?.resourceType === 'Patient') {
      const id = (e.resource as Patient).identifier?.find((i) => i.value);
      if (id) return `${id.system ?? ''}|${id.value}`;
    }
  }
  return undefined;
}

/**
 * Takes stored messages in arrival order and runs them through transform -> routes -> steps,
 * recording every outcome in the store. Delivery order per ordering key is the store's job
 * (claimDeliveries), so a batch may be processed concurrently.
 */
export class Processor {
  private readonly routes: RuntimeRoute[];
  private running = false;
  private loopPromise?: Promise<void>;
  private readonly sleeper = new WakeableSleep();
  private kicked = false;
  onRouted?: () => void;

  constructor(
    private readonly store: MessageStore,
    private readonly transforms: MessageTransform[],
    routes: RouteConfig[],
    private readonly logger: Logger,
    private readonly metrics: EngineMetrics,
    private readonly opts: ProcessorOptions,
  ) {
    this.routes = routes.map((r) => ({ ...compileRoute(r), steps: r.steps.map((s) => compileStep(s, opts.baseDir)) }));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loopPromise = this.loop();
  }

  /** New work is in the store: run now rather than at the next poll. */
  kick(): void {
    this.kicked = true;
    this.sleeper.wake();
  }

  /** Stop claiming; resolves when the message in hand is finished. */
  async stop(): Promise<void> {
    this.running = false;
    this.sleeper.wake();
    await this.loopPromise;
  }

  private async loop(): Promise<void> {
    while (this.running) {
      this.kicked = false;
      let claimed: StoredMessage[] = [];
      try {
        claimed = await this.store.claimReceived(this.opts.owner, this.opts.batchSize, this.opts.leaseMs);
        // The batch is processed together: transforms run back to back and their store writes
        // queue up and group-commit, instead of one commit round trip per message. The store keeps
        // per-key delivery order whatever order these commit in (a strict delivery waits for every
        // older message of its key to be routed). A claimed batch is always finished (it is leased
        // to us), even when stopping.
        await Promise.all(claimed.map((m) => this.processOne(m)));
        if (claimed.length) this.onRouted?.();
      } catch (e) {
        this.logger.error('processing loop error', errorFields(e));
      }
      if (this.running && claimed.length < this.opts.batchSize && !this.kicked) await this.sleep(this.opts.pollIntervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return this.sleeper.sleep(ms);
  }

  /** Transform, route and record one message. Never throws for a message's own fault. */
  async processOne(message: StoredMessage): Promise<void> {
    const log = this.logger.child({ messageId: message.id, source: message.sourceId, controlId: message.headers.controlId, messageType: message.headers.messageType });
    const full = message.body ? message : await this.store.getMessage(message.id, { body: true });
    if (!full?.body) {
      await this.fail(message, new FerryError('INPUT_BODY_MISSING', 'message body is missing (pruned?)', { kind: 'input' }), log);
      return;
    }
    const transform = findTransform(this.transforms, full.contentType);
    if (!transform) {
      await this.fail(message, new FerryError('INPUT_NO_TRANSFORM', `no transform registered for content type ${full.contentType}`, { kind: 'input' }), log);
      return;
    }
    let bundle: Bundle;
    try {
      bundle = await transform.toFhir(full as StoredMessage & { body: Buffer }, { logger: log });
      if (!bundle || bundle.resourceType !== 'Bundle') throw new FerryError('INTERNAL_TRANSFORM_RESULT', `transform ${transform.name} did not return a Bundle`, { kind: 'internal' });
    } catch (e) {
      await this.fail(message, FerryError.from(e, 'INPUT_TRANSFORM_FAILED', 'input'), log);
      return;
    }
    const orderingKey = message.headers.orderingKey || patientOrderingKey(bundle) || `source:${message.sourceId}`;
    await this.store.recordTransformed(message.id, bundle, orderingKey);

    const matched = matchRoutes(this.routes, message, bundle) as RuntimeRoute[];
    if (!matched.length) {
      await this.store.recordRouting(message.id, { status: 'unrouted' });
      this.metrics.processed.inc({ source: message.sourceId, outcome: 'unrouted' });
      log.info('message unrouted');
      return;
    }
    const deliveries: PlannedDelivery[] = [];
    const filteredBy: string[] = [];
    for (const route of matched) {
      this.metrics.routed.inc({ route: route.config.id });
      let current = bundle;
      let filtered: string | undefined;
      try {
        for (const step of route.steps) {
          const r = await step.run(current, message);
          if ('filtered' in r) {
            filtered = r.filtered;
            break;
          }
          current = r.bundle;
        }
      } catch (e) {
        const err = FerryError.from(e, 'INPUT_STEP_FAILED', 'input');
        await this.fail(message, err, log.child({ route: route.config.id }));
        return;
      }
      if (filtered) {
        filteredBy.push(`${route.config.id}: ${filtered}`);
        continue;
      }
      for (const sinkId of route.config.to)
        deliveries.push({
          routeId: route.config.id,
          sinkId,
          bundle: current,
          strictOrder: route.config.ordering === 'strict',
          // No step ran: the bundle is the transform result as recorded (the store references it).
          unchanged: route.steps.length === 0 && current === bundle,
        });
    }
    if (deliveries.length) {
      await this.store.recordRouting(message.id, { status: 'routed', deliveries });
      this.metrics.processed.inc({ source: message.sourceId, outcome: 'routed' });
      log.info('message routed', { routes: matched.map((r) => r.config.id), deliveries: deliveries.length });
    } else {
      await this.store.recordRouting(message.id, { status: 'filtered', detail: filteredBy.join('; ') });
      this.metrics.processed.inc({ source: message.sourceId, outcome: 'filtered' });
      log.info('message filtered', { routes: matched.map((r) => r.config.id) });
    }
  }

  private async fail(message: StoredMessage, err: FerryError, log: Logger): Promise<void> {
    const outcome = (err.details?.outcome as any) ?? {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: err.kind === 'input' ? 'invalid' : 'exception', details: { text: err.message } }],
    };
    await this.store.recordFailed(message.id, { code: err.code, message: err.message, retryable: err.retryable, outcome });
    this.metrics.processed.inc({ source: message.sourceId, outcome: 'failed' });
    this.metrics.failed.inc({ source: message.sourceId });
    log.warn('message failed', { errorCode: err.code, errorKind: err.kind });
  }
}
