/** Where the validator is (`At`) and what it has found so far (`Ctx`), shared by the walk and the invariants. */
import {
  createStructureIssue,
  deepEquals,
  deepIncludes,
  type InternalSchemaElement,
  type TypedValue,
} from '@medplum/core';
import type { OperationOutcomeIssue } from '@medplum/fhirtypes';

/**
 * Where a value is, built into a string only when an issue is reported: `path` is the instance path
 * (`Patient.name[0].given[1]`), `crawl` the element path medplum's crawler uses for some issues
 * (`Patient.name.given`); a root's both are its string.
 */
export class At {
  private s: string | undefined;
  constructor(
    readonly up: At | undefined,
    readonly key: string,
    readonly idx: number,
    root?: string,
  ) {
    this.s = root;
  }
  static root(path: string): At {
    return new At(undefined, '', -1, path);
  }
  get path(): string {
    return (this.s ??= this.up!.path + '.' + this.key + (this.idx >= 0 ? '[' + this.idx + ']' : ''));
  }
  get crawl(): string {
    return this.up ? this.up.crawl + '.' + this.key : this.s!;
  }
}

export class Abort extends Error {
  constructor(readonly issue: OperationOutcomeIssue) {
    super(issue.details?.text);
  }
}

export interface Ctx {
  issues: OperationOutcomeIssue[];
  resources: unknown[];
  root: TypedValue | undefined;
  bindings: boolean;
  entriesAsResources: boolean;
  /**
   * Set when the walk met a null or undefined value, or skipped a subtree it does not descend into
   * (unknown keys, a second choice-of-type key, primitive extensions): only then does the exact null
   * check (checkNulls, medplum's checkObjectForNull) run over the resource. Valid data never sets it.
   */
  nulls: boolean;
}

export function isResourceObject(v: unknown): v is { resourceType: unknown } {
  return !!v && typeof v === 'object' && 'resourceType' in (v as object);
}

export function structure(ctx: Ctx, path: string, text: string): void {
  ctx.issues.push(createStructureIssue(path, text));
}

/** An element's fixed or pattern value (medplum's check). */
export function specifiedOk(value: TypedValue | TypedValue[], element: InternalSchemaElement): boolean {
  if (element.pattern && !deepIncludes(value, element.pattern)) return false;
  if (element.fixed && !deepEquals(value, element.fixed)) return false;
  return true;
}
