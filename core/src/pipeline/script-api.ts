/**
 * The typed API a route's `script` step gets (issue #19): shipped as `@ferry/core/script`
 * (core/script.d.ts), so an editor type-checks a script written in JavaScript:
 *
 * ```js
 * // @ts-check
 * /** @type {import('@ferry/core/script').ScriptStep} *\/
 * module.exports = (bundle, message, ferry) => { ... };
 * ```
 *
 * Types only: nothing here runs (the implementation is script-helpers.ts).
 */
import type { Bundle, Reference, Resource, ResourceType } from '@medplum/fhirtypes';

export type { Bundle, Reference, Resource, ResourceType };

/** The resource type named `T` (`'Patient'` -> Patient). */
export type ResourceOf<T extends ResourceType> = Extract<Resource, { resourceType: T }>;

/** What a script sees of the message it runs for (read-only; the body only through `ferry.v2`). */
export interface ScriptMessage {
  readonly id: string;
  readonly sourceId: string;
  readonly contentType: string;
  readonly receivedAt: Date;
  readonly headers: Readonly<{
    messageType?: string;
    trigger?: string;
    controlId?: string;
    sendingApplication?: string;
    sendingFacility?: string;
    receivingApplication?: string;
    receivingFacility?: string;
    version?: string;
    orderingKey?: string;
    [name: string]: string | undefined;
  }>;
}

/**
 * HL7 v2 access to the original message, by path: `SEG[n]-field[rep].component.subcomponent`.
 * Segment occurrence `[n]` and field repetition `[rep]` count from 1 (default 1); components and
 * subcomponents are optional. `MSH-9.1`, `PID-3[2].1`, `OBX[3]-5`, `PID-5.1.1`. Values come back
 * with HL7 escapes (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`) decoded; an absent value is `undefined`.
 */
export interface V2Message {
  /** The value at `path` (its first repetition unless one is named), or undefined. */
  get(path: string): string | undefined;
  /**
   * Every value `path` names: all repetitions of the field (unless one is named) in every
   * occurrence of the segment (unless one is named). `getAll('PID-3.1')` -> each identifier.
   */
  getAll(path: string): string[];
  /** How many times a segment occurs (`count('OBX')`). */
  count(segment: string): number;
  /** Segment names in order (`['MSH', 'EVN', 'PID', ...]`). */
  readonly segments: readonly string[];
}

/** The helpers given to every script call as its third argument. */
export interface ScriptHelpers {
  /**
   * Evaluates FHIRPath on `on` (default: the Bundle the script got) with the R4 model; each
   * expression is compiled once and cached. `ferry.fhirpath("Bundle.entry.resource.ofType(Patient).gender")`.
   */
  fhirpath(expression: string, on?: unknown): unknown[];
  /** FHIRPath truthiness: a non-empty result whose single boolean is not false. */
  fhirpathTest(expression: string, on?: unknown): boolean;
  /** The resources of a type in the Bundle, in entry order (the same objects: changes stay in the Bundle). */
  resources<T extends ResourceType>(type: T): ResourceOf<T>[];
  /** The first resource of a type in the Bundle, or undefined. */
  resource<T extends ResourceType>(type: T): ResourceOf<T> | undefined;
  /**
   * The Bundle's resource a reference points to: by an entry's `fullUrl` (`urn:uuid:...`) or by
   * `Type/id` (also the end of an absolute URL). Undefined when it is not in the Bundle.
   */
  resolve(reference: string | Reference | undefined): Resource | undefined;
  /** The original message as HL7 v2; undefined when it is not HL7 v2 (or its body was pruned). */
  readonly v2: V2Message | undefined;
}

/** What a script may return: the Bundle for the sinks (changed or not), or null/undefined to filter the message out. */
export type ScriptResult = Bundle | null | undefined;

/**
 * A script step: `module.exports = (bundle, message, ferry) => bundle | null`. It may be async;
 * the whole call -- synchronous part and everything awaited -- runs within the step's `timeoutMs`.
 */
export type ScriptStep = (
  bundle: Bundle,
  message: ScriptMessage,
  ferry: ScriptHelpers,
) => ScriptResult | Promise<ScriptResult>;
