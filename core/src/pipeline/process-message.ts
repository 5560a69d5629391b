import type { Bundle, Patient } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import type { RouteConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import { validateBundle } from '../fhir/validate';
import type { StoredMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import { compileRoute, matchRoutes, type CompiledRoute } from '../routing/router';
import type { ProcessedMessage } from '../store/message-store';
import { compileStep, type CompiledStep } from './steps';

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
 * One message's processing, ready for the store (`recordProcessed`) plus what the engine logs and
 * counts about it. Plain data: it crosses from a transform worker thread unchanged.
 */
export interface ProcessingReport extends ProcessedMessage {
  /** Routes whose `from` and `when` matched. */
  routes: string[];
  /** For a failure: the route whose step failed, if any. */
  failedRoute?: string;
  errorKind?: string;
}

interface RuntimeRoute extends CompiledRoute {
  steps: CompiledStep[];
}

/**
 * Transform -> routes -> steps for one message, with no store access: the same code runs on the
 * engine's thread and in transform worker threads. Bundles leave it as JSON text (what the store
 * keeps and the sinks write), serialised once.
 */
export interface PipelineOptions {
  /** Validate canonical Bundles (processing.validate; default true). */
  validate?: boolean;
}

/** The error of an invalid canonical Bundle: its OperationOutcome travels in details (stored with the failure). */
export function invalidBundleError(outcome: NonNullable<ReturnType<typeof validateBundle>>, what = 'canonical bundle'): FerryError {
  const issues = outcome.issue ?? [];
  const first = issues[0];
  // paths and the validator's own texts only: never values (PHI)
  const where = first ? ` (first: ${first.expression?.[0] ?? '?'}: ${first.details?.text ?? first.code})` : '';
  return new FerryError('INPUT_FHIR_INVALID', `${what} is not valid FHIR R4: ${issues.length} issue(s)${where}`, { kind: 'input', details: { outcome } });
}

export class MessagePipeline {
  private readonly routes: RuntimeRoute[];
  private readonly validate: boolean;

  constructor(
    private readonly transforms: MessageTransform[],
    routes: RouteConfig[],
    baseDir: string,
    options: PipelineOptions = {},
  ) {
    this.validate = options.validate !== false;
    this.routes = routes.map((r) => ({ ...compileRoute(r), steps: r.steps.map((s) => compileStep(s, baseDir)) }));
  }

  /** The transform this pipeline would use for a content type (its name), if any. */
  transformFor(contentType: string): string | undefined {
    return findTransform(this.transforms, contentType)?.name;
  }

  /** Never throws for a message's own fault: failures come back as `failed` reports. */
  async process(message: StoredMessage, log: Logger): Promise<ProcessingReport> {
    const id = message.id;
    if (!message.body) return failed(id, new FerryError('INPUT_BODY_MISSING', 'message body is missing (pruned?)', { kind: 'input' }));
    const transform = findTransform(this.transforms, message.contentType);
    if (!transform) return failed(id, new FerryError('INPUT_NO_TRANSFORM', `no transform registered for content type ${message.contentType}`, { kind: 'input' }));
    let bundle: Bundle;
    try {
      bundle = await transform.toFhir(message as StoredMessage & { body: Buffer }, { logger: log });
      if (!bundle || bundle.resourceType !== 'Bundle') throw new FerryError('INTERNAL_TRANSFORM_RESULT', `transform ${transform.name} did not return a Bundle`, { kind: 'internal' });
    } catch (e) {
      return failed(id, FerryError.from(e, 'INPUT_TRANSFORM_FAILED', 'input'));
    }
    const bundleJson = JSON.stringify(bundle);
    const orderingKey = message.headers.orderingKey || patientOrderingKey(bundle) || `source:${message.sourceId}`;
    const transformed = { bundleJson, orderingKey };
    if (this.validate) {
      const outcome = validateBundle(bundle);
      if (outcome) return { ...failed(id, invalidBundleError(outcome)), transformed, routes: [] };
    }

    const matched = matchRoutes(this.routes, message, bundle) as RuntimeRoute[];
    const routes = matched.map((r) => r.config.id);
    if (!matched.length) return { id, transformed, outcome: { status: 'unrouted' }, routes };
    const deliveries: NonNullable<Extract<ProcessedMessage['outcome'], { status: 'routed' }>['deliveries']> = [];
    const filteredBy: string[] = [];
    for (const route of matched) {
      let current = bundle;
      let filtered: string | undefined;
      try {
        for (const step of route.steps) {
          // the canonical Bundle was validated already (processing.validate): a `validate` step on it is a no-op
          if (step.describe === 'validate' && this.validate && current === bundle) continue;
          const r = await step.run(current, message);
          if ('filtered' in r) {
            filtered = r.filtered;
            break;
          }
          current = r.bundle;
        }
      } catch (e) {
        return { ...failed(id, FerryError.from(e, 'INPUT_STEP_FAILED', 'input')), transformed, routes, failedRoute: route.config.id };
      }
      if (filtered) {
        filteredBy.push(`${route.config.id}: ${filtered}`);
        continue;
      }
      if (current !== bundle && this.validate) {
        const outcome = validateBundle(current);
        if (outcome) return { ...failed(id, invalidBundleError(outcome, `bundle from route ${route.config.id}'s steps`)), transformed, routes, failedRoute: route.config.id };
      }
      // No step changed it: the delivery references the message's bundle (no second copy).
      const changed = current !== bundle ? JSON.stringify(current) : undefined;
      for (const sinkId of route.config.to)
        deliveries.push({
          routeId: route.config.id,
          sinkId,
          strictOrder: route.config.ordering === 'strict',
          ...(changed === undefined || changed === bundleJson ? { unchanged: true } : { bundleJson: changed }),
        });
    }
    if (deliveries.length) return { id, transformed, outcome: { status: 'routed', deliveries }, routes };
    return { id, transformed, outcome: { status: 'filtered', detail: filteredBy.join('; ') }, routes };
  }
}

function failed(id: string, err: FerryError): ProcessingReport {
  const outcome = (err.details?.outcome as any) ?? {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: err.kind === 'input' ? 'invalid' : 'exception', details: { text: err.message } }],
  };
  return { id, outcome: { status: 'failed', error: { code: err.code, message: err.message, retryable: err.retryable, outcome } }, routes: [], errorKind: err.kind };
}
