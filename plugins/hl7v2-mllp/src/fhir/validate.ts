import { ensureFhirDefinitions } from '@ferry/core';
import type * as Medplum from '@medplum/core';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';

export { ensureFhirDefinitions };

export interface BundleIssue {
  /** Index of the entry, -1 for the Bundle itself. */
  entry: number;
  resourceType: string;
  issue: OperationOutcomeIssue;
}

/** Validates one resource against FHIR R4 base; returns its issues (empty when valid). */
export function validateFhirResource(resource: Resource): OperationOutcomeIssue[] {
  ensureFhirDefinitions();
  // @medplum/core is loaded on first validation, not with the plugin (a conversion alone does not need it)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { OperationOutcomeError, validateResource } = require('@medplum/core') as typeof Medplum;
  try {
    return validateResource(resource).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  } catch (e) {
    if (e instanceof OperationOutcomeError) return (e.outcome.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
    throw e;
  }
}

/** Validates the Bundle and each entry's resource with @medplum/core validateResource. */
export function validateBundle(bundle: Bundle): BundleIssue[] {
  const out: BundleIssue[] = [];
  const { entry, ...shell } = bundle;
  for (const issue of validateFhirResource({ ...shell, entry: (entry ?? []).map((e) => ({ ...e, resource: undefined })) } as Bundle))
    out.push({ entry: -1, resourceType: 'Bundle', issue });
  (entry ?? []).forEach((e, i) => {
    if (!e.resource) return;
    for (const issue of validateFhirResource(e.resource)) out.push({ entry: i, resourceType: e.resource.resourceType, issue });
  });
  return out;
}
