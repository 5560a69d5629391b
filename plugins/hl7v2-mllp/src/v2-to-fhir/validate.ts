import { ensureFhirDefinitions, validateFhirResource as validateWithFerry } from '@ferry/core';
import type { Bundle, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';

export { ensureFhirDefinitions };

export interface BundleIssue {
  /** Index of the entry, -1 for the Bundle itself. */
  entry: number;
  resourceType: string;
  issue: OperationOutcomeIssue;
}

/** Validates one resource against FHIR R4 base (Ferry's compiled validator); returns its errors (empty when valid). */
export function validateFhirResource(resource: Resource): OperationOutcomeIssue[] {
  return validateWithFerry(resource, { entriesAsResources: true });
}

const ENTRY = /^Bundle\.entry\[(\d+)\]/;

/** Validates the Bundle and each entry's resource (as a resource of its own); issues by entry. */
export function validateBundle(bundle: Bundle): BundleIssue[] {
  return validateWithFerry(bundle, { entriesAsResources: true }).map((issue) => {
    const m = ENTRY.exec(issue.expression?.[0] ?? '');
    const entry = m ? Number(m[1]) : -1;
    const resourceType = m ? (bundle.entry?.[entry]?.resource?.resourceType ?? 'Bundle') : 'Bundle';
    return { entry, resourceType, issue };
  });
}
