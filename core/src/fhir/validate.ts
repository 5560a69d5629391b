import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { validateFhirResource, type FhirValidateOptions } from './validator';

export { ensureFhirDefinitions } from './definitions';
export { validateFhirResource, precompileFhirTypes, isFhirResourceType, type FhirValidateOptions } from './validator';

/**
 * Validates a canonical Bundle against FHIR R4 base with Ferry's compiled validator (core/src/fhir/validator):
 * the Bundle's own elements and invariants, and every entry's resource as a resource of its own (its
 * resource-level invariants, contained references resolved within it). Paths are
 * `Bundle.entry[2].resource.birthDate`. Returns an OperationOutcome listing every error, or undefined when valid.
 */
export function validateBundle(bundle: Bundle, options: FhirValidateOptions = {}): OperationOutcome | undefined {
  const issues = validateFhirResource(bundle, { entriesAsResources: true, ...options });
  return issues.length ? { resourceType: 'OperationOutcome', issue: issues } : undefined;
}

/**
 * Loads what validation needs (the R4 definitions, the required value sets, the plans of the common
 * types) now rather than on the first message: ≈ 1 s of CPU, spent by the engine and each transform
 * worker at start when processing.validate is on.
 */
export function warmFhirValidator(): void {
  validateFhirResource({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [
      {
        fullUrl: 'urn:uuid:00000000-0000-4000-8000-000000000000',
        resource: { resourceType: 'Patient', gender: 'unknown', extension: [{ url: 'http://x', valueString: 'x' }] },
      },
    ],
  });
}

/** Validates any resource (a Bundle's entries as resources of their own); an OperationOutcome or undefined when valid. */
export function validateResourceOutcome(
  resource: unknown,
  options: FhirValidateOptions = {},
): OperationOutcome | undefined {
  const issues = validateFhirResource(resource, { entriesAsResources: true, ...options });
  return issues.length ? { resourceType: 'OperationOutcome', issue: issues } : undefined;
}
