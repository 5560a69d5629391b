import type { Bundle, Patient } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import type { RouteConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import { validateBundle } from '../fhir/validate';
import type { DataQualityIssue, DataQualityPolicy, StoredMessage } from '../model/message';
import type { MessageTransform, ReportedIssue } from '../plugin/api';
import { compileRoute, explainRoute, matchRoutes, type CompiledRoute, type RouteExplanation } from '../routing/router';
import type { ProcessedMessage } from '../store/message-store';
import { applyDataQualityPolicy, dataQualityOutcome, failsMessage, issueSummary } from './data-quality';
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
  /** Of those, the ones whose steps filtered the message out. */
  filteredRoutes?: string[];
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
  /** Each source's `dataQuality` policy, by source id (absent: warn). */
  dataQuality?: Record<string, DataQualityPolicy>;
}

/** The error of an invalid canonical Bundle: its OperationOutcome travels in details (stored with the failure). */
export function invalidBundleError(
  outcome: NonNullable<ReturnType<typeof validateBundle>>,
  what = 'canonical bundle',
): FerryError {
  const issues = outcome.issue ?? [];
  const first = issues[0];
  // paths and the validator's own texts only: never values (PHI)
  const where = first ? ` (first: ${first.expression?.[0] ?? '?'}: ${first.details?.text ?? first.code})` : '';
  return new FerryError('INPUT_FHIR_INVALID', `${what} is not valid FHIR R4: ${issues.length} issue(s)${where}`, {
    kind: 'input',
    details: { outcome },
  });
}

/** `MessagePipeline.trace`: the Bundle, and per route its match, steps and the Bundle per sink. */
export interface RouteTrace {
  bundle: Bundle;
  routes: (RouteExplanation & {
    steps: { step: string; result: 'passed' | 'changed' | 'filtered' | 'failed'; error?: string }[];
    sinks: Record<string, Bundle>;
  })[];
}

export class MessagePipeline {
  private readonly routes: RuntimeRoute[];
  private readonly validate: boolean;
  /** Each source's `dataQuality` policy, by source id (absent: warn). */
  private readonly dataQuality: Record<string, DataQualityPolicy>;

  constructor(
    private readonly transforms: MessageTransform[],
    routes: RouteConfig[],
    baseDir: string,
    options: PipelineOptions = {},
  ) {
    this.validate = options.validate !== false;
    this.dataQuality = options.dataQuality ?? {};
    this.routes = routes.map((r) => ({ ...compileRoute(r), steps: r.steps.map((s) => compileStep(s, baseDir)) }));
  }

  /** The transform this pipeline would use for a content type (its name), if any. */
  transformFor(contentType: string): string | undefined {
    return findTransform(this.transforms, contentType)?.name;
  }

  /** Never throws for a message's own fault: failures come back as `failed` reports. */
  async process(message: StoredMessage, log: Logger): Promise<ProcessingReport> {
    const id = message.id;
    if (!message.body)
      return failed(id, new FerryError('INPUT_BODY_MISSING', 'message body is missing (pruned?)', { kind: 'input' }));
    const transform = findTransform(this.transforms, message.contentType);
    if (!transform)
      return failed(
        id,
        new FerryError('INPUT_NO_TRANSFORM', `no transform registered for content type ${message.contentType}`, {
          kind: 'input',
        }),
      );
    let bundle: Bundle;
    const reported: ReportedIssue[] = [];
    const reportIssue = (i: ReportedIssue) => {
      if (reported.length < MAX_ISSUES) reported.push(cleanIssue(i));
    };
    let issues: DataQualityIssue[] | undefined;
    try {
      bundle = await transform.toFhir(message as StoredMessage & { body: Buffer }, { logger: log, reportIssue });
      if (!bundle || bundle.resourceType !== 'Bundle')
        throw new FerryError('INTERNAL_TRANSFORM_RESULT', `transform ${transform.name} did not return a Bundle`, {
          kind: 'internal',
        });
    } catch (e) {
      issues = reported.length ? applyDataQualityPolicy(reported, this.dataQuality[message.sourceId]) : undefined;
      return withIssues(failed(id, FerryError.from(e, 'INPUT_TRANSFORM_FAILED', 'input')), issues);
    }
    if (reported.length) {
      issues = applyDataQualityPolicy(reported, this.dataQuality[message.sourceId]);
      if (failsMessage(issues)) {
        const errors = issues.filter((i) => i.severity === 'error');
        const err = new FerryError(
          'INPUT_DATA_QUALITY',
          `values the conversion cannot use, failed by the source's dataQuality policy: ${issueSummary(errors)}`,
          {
            kind: 'input',
            details: { outcome: dataQualityOutcome(issues) },
          },
        );
        return withIssues(failed(id, err), issues);
      }
    }
    return withIssues(await this.route(id, message, bundle), issues);
  }

  /**
   * What this pipeline does with a message, touching no store and no sink (`ferry test-route`):
   * the transform's Bundle, each route's match (or the clause that failed), each step's result and
   * the Bundle each sink would get. Throws what the transform throws.
   */
  async trace(message: StoredMessage & { body: Buffer }, log: Logger): Promise<RouteTrace> {
    const transform = findTransform(this.transforms, message.contentType);
    if (!transform)
      throw new FerryError('INPUT_NO_TRANSFORM', `no transform registered for content type ${message.contentType}`, {
        kind: 'input',
      });
    const bundle = await transform.toFhir(message, { logger: log, reportIssue: () => undefined });
    const routes: RouteTrace['routes'] = [];
    for (const r of this.routes) {
      const x: RouteTrace['routes'][number] = { ...explainRoute(r, message, bundle), steps: [], sinks: {} };
      routes.push(x);
      if (!x.matched) continue;
      let current = bundle;
      let stopped = false;
      for (const step of r.steps) {
        try {
          const out = await step.run(current, message);
          if ('filtered' in out) {
            x.steps.push({ step: step.describe, result: 'filtered' });
            stopped = true;
            break;
          }
          x.steps.push({ step: step.describe, result: out.bundle === current ? 'passed' : 'changed' });
          current = out.bundle;
        } catch (e) {
          x.steps.push({ step: step.describe, result: 'failed', error: (e as Error).message });
          stopped = true;
          break;
        }
      }
      if (!stopped) for (const sink of r.config.to) x.sinks[sink] = current;
    }
    return { bundle, routes };
  }

  private async route(id: string, message: StoredMessage, bundle: Bundle): Promise<ProcessingReport> {
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
    const filteredRoutes: string[] = [];
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
        return {
          ...failed(id, FerryError.from(e, 'INPUT_STEP_FAILED', 'input')),
          transformed,
          routes,
          failedRoute: route.config.id,
        };
      }
      if (filtered) {
        filteredBy.push(`${route.config.id}: ${filtered}`);
        filteredRoutes.push(route.config.id);
        continue;
      }
      if (current !== bundle && this.validate) {
        const outcome = validateBundle(current);
        if (outcome)
          return {
            ...failed(id, invalidBundleError(outcome, `bundle from route ${route.config.id}'s steps`)),
            transformed,
            routes,
            failedRoute: route.config.id,
          };
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
    const filteredOf = filteredRoutes.length ? { filteredRoutes } : {};
    if (deliveries.length) return { id, transformed, outcome: { status: 'routed', deliveries }, routes, ...filteredOf };
    return { id, transformed, outcome: { status: 'filtered', detail: filteredBy.join('; ') }, routes, ...filteredOf };
  }
}

/**
 * The data-quality issues of a message not yet processed, under a source's policy: its transform
 * run for them alone (the MLLP source's enhanced-mode application ACK names fail-level fields).
 * A transform that throws gives the issues reported until then.
 */
export async function assessDataQuality(
  transforms: MessageTransform[],
  message: StoredMessage & { body: Buffer },
  policy: DataQualityPolicy | undefined,
  log: Logger,
): Promise<DataQualityIssue[]> {
  const transform = findTransform(transforms, message.contentType);
  if (!transform) return [];
  const reported: ReportedIssue[] = [];
  try {
    await transform.toFhir(message, {
      logger: log,
      reportIssue: (i) => void (reported.length < MAX_ISSUES && reported.push(cleanIssue(i))),
    });
  } catch {
    // the processing reports the failure itself
  }
  return applyDataQualityPolicy(reported, policy);
}

/** Issues kept per message (a transform reporting every value of a broken feed must not flood the store). */
const MAX_ISSUES = 100;

function withIssues(r: ProcessingReport, issues: DataQualityIssue[] | undefined): ProcessingReport {
  if (issues?.length) r.issues = issues;
  return r;
}

/** Only the known keys of a reported issue, texts bounded: it is stored and logged as given. */
function cleanIssue(i: ReportedIssue): ReportedIssue {
  const out: ReportedIssue = {
    location: String(i.location).slice(0, 80),
    code: String(i.code).slice(0, 40),
    text: String(i.text).slice(0, 200),
  };
  if (i.severity === 'error' || i.severity === 'warning') out.severity = i.severity;
  for (const k of ['occurrence', 'repetition', 'sequence'] as const) if (Number.isInteger(i[k])) out[k] = i[k];
  if (i.path) out.path = String(i.path).slice(0, 120);
  if (i.hl7ErrorCode) out.hl7ErrorCode = String(i.hl7ErrorCode).slice(0, 4);
  return out;
}

function failed(id: string, err: FerryError): ProcessingReport {
  const outcome = (err.details?.outcome as any) ?? {
    resourceType: 'OperationOutcome',
    issue: [
      { severity: 'error', code: err.kind === 'input' ? 'invalid' : 'exception', details: { text: err.message } },
    ],
  };
  return {
    id,
    outcome: { status: 'failed', error: { code: err.code, message: err.message, retryable: err.retryable, outcome } },
    routes: [],
    errorKind: err.kind,
  };
}
