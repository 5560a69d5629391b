/** The facade's answers: FerryErrors (and anything else thrown) as an HTTP status and OperationOutcome. */
import type { OperationOutcome } from '@medplum/fhirtypes';
import { FerryError, httpStatusOf } from '../errors';
import { AuthError } from '../admin/auth';
import { GuardError } from '../admin/guard';
import { FacadeIssue, type FacadeIssueKind } from './provider';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';

export function outcome(
  code: string,
  diagnostics: string,
  severity: 'error' | 'fatal' | 'warning' | 'information' = 'error',
  details?: Record<string, unknown>,
): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity,
        code: code as any,
        diagnostics,
        ...(details?.vendorMessage ? { details: { text: String(details.vendorMessage).slice(0, 300) } } : {}),
      },
    ],
  };
}

/** A FerryError (or anything) as an HTTP status and OperationOutcome. */
export function errorAnswer(e: unknown): { status: number; body: OperationOutcome; retryAfter?: number } {
  if (e instanceof AuthError) {
    const code = e.status === 401 ? 'login' : e.status === 429 ? 'throttled' : 'forbidden';
    return { status: e.status, body: outcome(code, e.message), retryAfter: e.retryAfterSec };
  }
  if (e instanceof GuardError)
    return { status: e.statusCode, body: outcome(e.statusCode === 421 ? 'security' : 'forbidden', e.message) };
  if (FerryError.is(e)) {
    const issue = e.details?.facadeIssue as FacadeIssueKind | undefined;
    if (issue && FacadeIssue[issue])
      return {
        status: FacadeIssue[issue].status,
        body: outcome(FacadeIssue[issue].code, e.message, 'error', e.details),
      };
    const status = typeof e.details?.status === 'number' ? (e.details.status as number) : undefined;
    if (e.code === 'FERRY_E_INPUT_FACADE_TIMEOUT')
      return { status: httpStatusOf(e), body: outcome('timeout', e.message) };
    if (e.kind === 'input' && e.code.startsWith('FERRY_E_INPUT_'))
      return { status: 400, body: outcome('invalid', e.message) };
    if (status === 404) return { status: 404, body: outcome('not-found', 'not found at the vendor') };
    if (status === 409 || status === 412) return { status: 409, body: outcome('conflict', e.message) };
    if (e.kind === 'input' && status && status >= 400 && status < 500)
      return { status: 422, body: outcome('invalid', e.message) };
    if (e.kind === 'input') return { status: 422, body: outcome('processing', e.message) };
    if (e.kind === 'transient')
      return { status: 502, body: outcome('transient', `the vendor cannot answer now: ${e.message}`), retryAfter: 1 };
    if (e.kind === 'config')
      return { status: 502, body: outcome('security', `the connection is not usable: ${e.message}`) };
  }
  const status = (e as { statusCode?: number }).statusCode;
  if (status && status >= 400 && status < 500)
    return { status, body: outcome(status === 413 ? 'too-long' : 'invalid', (e as Error).message) };
  return { status: 500, body: outcome('exception', 'internal error') };
}
