/**
 * The contract between the FHIR facade (core) and a vendor plugin. A plugin registers one provider
 * per connection kind (`reg.registerFacadeProvider('athena', { connectionSchema, create })`); the
 * facade core does everything vendor-neutral -- routing, scopes, rate limits, the canonical
 * transform, paging cursors, caching, idempotency, identity, audit -- and asks the provider only
 * for raw vendor records.
 *
 * A provider answers **raw records exactly as the plugin's sources store them** (content type,
 * body, headers): the facade runs them through the engine's registered transform for that content
 * type, so a resource read through the facade is the one the pipeline delivers for the same
 * vendor record.
 */
import type { Appointment, Resource } from '@medplum/fhirtypes';
import type { Logger } from '../plugin/api';
import { FerryError } from '../errors';
import type { MessageHeaders } from '../model/message';

/** What the facade can do with a resource type. `book` / `cancel` / `checkin` are the scheduling operations. */
export type FacadeInteraction = 'read' | 'search' | 'create' | 'update' | 'book' | 'cancel' | 'checkin';
export const FACADE_INTERACTIONS: readonly FacadeInteraction[] = [
  'read',
  'search',
  'create',
  'update',
  'book',
  'cancel',
  'checkin',
];
/** The interactions that are operations (`POST .../{type}/{id}/$<name>`). */
export const FACADE_OPERATIONS: readonly FacadeInteraction[] = ['book', 'cancel', 'checkin'];

/** One thing a provider can do on one of its paths (vendor APIs: `fhir`, `rest`). */
export interface FacadeCapability {
  type: string;
  interaction: FacadeInteraction;
  /** The vendor API serving it (`fhir`, `rest`): what the decision rule chooses between. */
  path: string;
  /** The content type of the records it answers: the facade needs a transform for it, or the path is unavailable. */
  contentType: string;
  /** Search parameters understood (FHIR names), for the CapabilityStatement and to refuse the others (400). */
  searchParams?: string[];
  /** Why this path serves it (README table, CapabilityStatement documentation). */
  note?: string;
}

/** A raw vendor record, as the plugin's source would store it. */
export interface FacadeRecord {
  contentType: string;
  body: Buffer;
  headers?: MessageHeaders;
  /** The vendor's id of the primary resource. */
  vendorId: string;
}

export interface FacadeSearchResult {
  records: FacadeRecord[];
  /** The vendor's paging position for the next page (opaque to the core; signed into the `next` link). */
  next?: string;
  total?: number;
}

export interface FacadeCallContext {
  /** The path the decision rule chose for this call. */
  path: string;
  signal?: AbortSignal;
  /** The vendor id a canonical reference (`Patient/athena-195900-patient-1`) stands for at this connection. */
  resolve(reference: string): Promise<{ type: string; vendorId: string } | undefined>;
}

export interface FacadeProviderContext<C = any> {
  /** The connection id (`connections.<id>`). */
  readonly id: string;
  readonly kind: string;
  /** The validated connection entry (without `kind` and `facade`). */
  readonly config: Readonly<C>;
  readonly logger: Logger;
}

export interface FacadeProvider {
  /** `athena`, `epic`, `cerner`. */
  readonly vendor: string;
  capabilities(): FacadeCapability[];
  /**
   * The default decision rule: for `Type.interaction` (or `Type.*`, or `*`), the paths to try in
   * order -- the first one available (capable, with a transform loaded) serves it. A connection's
   * `facade.paths` overrides it per entry.
   */
  defaultPaths(): Record<string, string[]>;
  /** The vendor id a canonical id of this connection stands for (undefined: not one of its ids). */
  vendorId(type: string, canonicalId: string): string | undefined;
  read(type: string, vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord | undefined>;
  /** `params`: FHIR search parameters (control parameters `_count`, `_cursor` removed). */
  search(
    type: string,
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ): Promise<FacadeSearchResult>;
  create?(type: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord>;
  update?(type: string, vendorId: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord>;
  /** Book the open slot `vendorId` (an open appointment) for the patient the appointment names. */
  book?(
    vendorId: string,
    request: { patient: string; appointmentType?: string; appointment?: Appointment },
    ctx: FacadeCallContext,
  ): Promise<FacadeRecord>;
  cancel?(vendorId: string, request: { reason?: string }, ctx: FacadeCallContext): Promise<FacadeRecord>;
  /** Check the patient of a booked appointment in (arrived); a slot or a cancelled appointment is a `conflict`. */
  checkin?(vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord>;
  close?(): Promise<void>;
}

/** How a vendor's refusal maps to FHIR: OperationOutcome issue code and HTTP status, and the Ferry error code. */
export const FacadeIssue = {
  /** The slot is taken, a version conflict. */
  conflict: { code: 'conflict', status: 409, errorCode: 'INPUT_FACADE_CONFLICT' },
  /** The patient exists already. */
  duplicate: { code: 'duplicate', status: 409, errorCode: 'INPUT_FACADE_DUPLICATE' },
  /** The vendor refused the content (missing or bad field). */
  invalid: { code: 'invalid', status: 422, errorCode: 'INPUT_FACADE_INVALID' },
  'not-found': { code: 'not-found', status: 404, errorCode: 'INPUT_FACADE_NOT_FOUND' },
  'not-supported': { code: 'not-supported', status: 501, errorCode: 'INPUT_FACADE_NOT_SUPPORTED' },
  /** A resource the body names (not the URL's) does not exist there: `$link` to an unknown patient. */
  unresolved: { code: 'not-found', status: 422, errorCode: 'INPUT_FACADE_UNRESOLVED' },
} as const;
export type FacadeIssueKind = keyof typeof FacadeIssue;

/** An error a provider throws for a vendor refusal the client must see as such (never retried). */
export function facadeError(
  kind: FacadeIssueKind,
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): FerryError {
  return new FerryError(FacadeIssue[kind].errorCode, message, {
    kind: 'input',
    retryable: false,
    cause,
    details: { ...details, facadeIssue: kind },
  });
}
