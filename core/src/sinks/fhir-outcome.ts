/** How the FHIR sink reads a failed answer: OperationOutcome issues, retryable or not, a PHI-free summary. */
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import type { FerryError } from '../errors';
import { isRetryableStatus } from './common';

/** OperationOutcome issue codes that say "try again later". */
const TRANSIENT_ISSUES = new Set([
  'transient',
  'lock-error',
  'no-store',
  'timeout',
  'throttled',
  'incomplete',
  'conflict',
]);
/** Issue codes that say "this content will never be accepted". */
const INVALID_ISSUES = new Set([
  'invalid',
  'structure',
  'required',
  'value',
  'invariant',
  'business-rule',
  'code-invalid',
  'extension',
  'not-supported',
  'duplicate',
  'multiple-matches',
  'not-found',
  'deleted',
  'too-long',
  'security',
  'forbidden',
  'login',
  'unknown',
  'suppressed',
  'processing',
  'too-costly',
]);

/** Medplum's refusal of a large transaction with conditional writes. */
export function isTooManyEntries(e: FerryError): boolean {
  if (e.details?.status !== 400) return false;
  return issuesOf(e.details?.outcome).some((i) =>
    /too many entries|more update operations than allowed/i.test(`${i.details?.text ?? ''} ${i.diagnostics ?? ''}`),
  );
}

export function issuesOf(data: unknown): OperationOutcomeIssue[] {
  const d = data as OperationOutcome | undefined;
  return d && typeof d === 'object' && d.resourceType === 'OperationOutcome' && Array.isArray(d.issue) ? d.issue : [];
}

/** A short, PHI-free summary of an OperationOutcome: issue codes and FHIRPath expressions only. */
export function summarize(issues: OperationOutcomeIssue[]): string {
  return issues
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .slice(0, 5)
    .map((i) => `${i.code}${i.expression?.length ? ` @ ${i.expression.join(',')}` : ''}`)
    .join('; ');
}

/**
 * Classify a failed FHIR answer: 408/425/429/5xx are retryable unless every error issue says the
 * content is invalid; 4xx are permanent unless an issue is transient (e.g. a 409 version conflict
 * between concurrent writers, `lock-error`, `throttled`).
 */
export function classifyFhirFailure(status: number, issues: OperationOutcomeIssue[]): boolean {
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (isRetryableStatus(status)) return !(errors.length && errors.every((i) => INVALID_ISSUES.has(i.code)));
  if (status === 409 || status === 423) return errors.length === 0 || errors.some((i) => TRANSIENT_ISSUES.has(i.code));
  return errors.some((i) => TRANSIENT_ISSUES.has(i.code) && i.code !== 'conflict');
}
