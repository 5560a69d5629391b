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

// ---------------------------------------------------------------------------------------------------
// what R4 requires of primitives beyond medplum's checks (both the walk and the generated checks use these)

/** R4 `integer`, `positiveInt` and `unsignedInt` are 32-bit: larger values must be `decimal`. */
export const INT32_MIN = -2147483648;
export const INT32_MAX = 2147483647;
export const INT32_RANGE_TEXT = 'Expected number to be a 32-bit integer (-2147483648 to 2147483647)';

/** The primitive types whose values carry a calendar date (R4: "Dates SHALL be valid dates"). */
export const DATED_TYPES: ReadonlySet<string> = new Set(['date', 'dateTime', 'instant']);
export const CALENDAR_TEXT = 'Invalid date: that day does not exist in its month';

/**
 * `String.prototype.charCodeAt`, called as `charCode.call(s, i)` on values. A `s.charCodeAt(i)` first loads
 * the method through an inline cache keyed by the string's representation (flat or concatenated, one- or
 * two-byte, sliced, internalized...); values from the converter come in all of them, so that cache goes
 * megamorphic and every character costs a generic load and call (≈ 8 ns measured on corpus strings). A
 * call of the known builtin is inlined as a plain character read whatever the representation. Other
 * modules copy it into a module constant of their own (an imported binding is read from the exports object).
 */
export const charCode = String.prototype.charCodeAt;

/**
 * Whether the day of a `date`, `dateTime` or `instant` that already matches its format (YYYY, YYYY-MM,
 * YYYY-MM-DD, then the time) exists: 2024-02-29 does, 2023-02-29 and 2024-04-31 do not (Gregorian
 * leap years). The format's own regex allows every day from 01 to 31 in every month.
 */
export function calendarDay(s: string): boolean {
  if (s.length < 10 || charCode.call(s, 7) !== 45) return true; // no day part
  const d = (charCode.call(s, 8) - 48) * 10 + (charCode.call(s, 9) - 48);
  if (d <= 28) return true;
  const m = (charCode.call(s, 5) - 48) * 10 + (charCode.call(s, 6) - 48);
  if (m !== 2) return d <= (m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31);
  if (d > 29) return false;
  const y =
    (charCode.call(s, 0) - 48) * 1000 +
    (charCode.call(s, 1) - 48) * 100 +
    (charCode.call(s, 2) - 48) * 10 +
    (charCode.call(s, 3) - 48);
  return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
}
