import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import type { DataQualityIssue, DataQualityPolicy } from '../model/message';
import type { ReportedIssue } from '../plugin/api';

/** The policy of a source without a `dataQuality` entry: every issue recorded, nothing failed. */
export const DEFAULT_DATA_QUALITY: DataQualityPolicy = { policy: 'warn', fields: {} };

/** `SEG-n-c` -> [`SEG-n-c`, `SEG-n`, `SEG`]; another location (a vendor's JSON path) -> itself. */
function keysOf(location: string): string[] {
  const m = /^([A-Z][A-Z0-9]{2})(?:-(\d+)(?:-(\d+))?)?$/.exec(location);
  if (!m) return [location];
  const out = [location];
  if (m[3]) out.push(`${m[1]}-${m[2]}`);
  if (m[2]) out.push(m[1]);
  return out;
}

/** What the policy does with an issue at `location`: the most specific field entry, else the policy. */
export function actionFor(policy: DataQualityPolicy, location: string): 'warn' | 'fail' {
  for (const k of keysOf(location)) {
    const a = policy.fields[k];
    if (a) return a;
  }
  return policy.policy;
}

/** The issues a transform reported, with the severity the source's policy gives them. */
export function applyDataQualityPolicy(
  reported: ReportedIssue[],
  policy: DataQualityPolicy = DEFAULT_DATA_QUALITY,
): DataQualityIssue[] {
  return reported.map((r) => ({ ...r, severity: actionFor(policy, r.location) === 'fail' ? 'error' : 'warning' }));
}

/** True when one of the issues fails the message (policy `fail`). */
export function failsMessage(issues: DataQualityIssue[] | undefined): boolean {
  return !!issues?.some((i) => i.severity === 'error');
}

/** The OperationOutcome of a message failed for its data (locations and reasons only). */
export function dataQualityOutcome(issues: DataQualityIssue[]): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: issues.map((i): OperationOutcomeIssue => {
      const out: OperationOutcomeIssue = {
        severity: i.severity,
        code: i.code === 'unknown-code' ? 'code-invalid' : i.code === 'unknown-segment' ? 'not-supported' : 'value',
        details: { text: `${i.location}: ${i.text}` },
        location: [i.location],
      };
      if (i.path) out.expression = [i.path];
      return out;
    }),
  };
}

/** `PID-7 (invalid-date), OBX-5 (invalid-number)`: for error messages and logs (no values). */
export function issueSummary(issues: DataQualityIssue[], max = 5): string {
  const shown = issues.slice(0, max).map((i) => `${i.location} (${i.code})`);
  return shown.join(', ') + (issues.length > max ? ` and ${issues.length - max} more` : '');
}

/**
 * A source's `dataQuality.fields` entry checked strictly: keys are `SEG-n`, `SEG-n-c`, a whole
 * segment `SEG`, or a vendor transform's location (letters, digits, `.`, `_`, `[]`); values warn | fail.
 */
export function checkDataQualityFields(v: unknown): void {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new Error('must be a mapping of location -> warn | fail');
  for (const [k, a] of Object.entries(v as Record<string, unknown>)) {
    if (a !== 'warn' && a !== 'fail') throw new Error(`${k}: must be warn or fail (got ${JSON.stringify(a)})`);
    if (!/^[A-Z][A-Z0-9]{2}(-[1-9]\d*(-[1-9]\d*)?)?$/.test(k) && !/^[a-z][A-Za-z0-9_.[\]]*$/.test(k))
      throw new Error(
        `${k}: not a location (HL7 v2: SEG-n or SEG-n-c such as PID-7 or PID-11-5, or a segment such as ZPD; a vendor transform: its field path)`,
      );
  }
}
