import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';

/** Content types the engine knows by name. Plugins may add others. */
export const ContentType = {
  hl7v2: 'application/hl7-v2',
  fhirJson: 'application/fhir+json',
  json: 'application/json',
} as const;

/** Headers extracted from a message at intake, used for routing, ordering and duplicate detection. */
export interface MessageHeaders {
  /** e.g. `ADT^A01` (HL7 v2: MSH-9.1^MSH-9.2) or a FHIR resource type. */
  messageType?: string;
  /** e.g. `A01`. */
  trigger?: string;
  /** HL7 MSH-10 or a vendor event id. */
  controlId?: string;
  sendingApplication?: string;
  sendingFacility?: string;
  receivingApplication?: string;
  receivingFacility?: string;
  /** HL7 MSH-12. */
  version?: string;
  /** Messages with the same key are delivered to each sink in arrival order. */
  orderingKey?: string;
  [name: string]: string | undefined;
}

/** What a source hands to the engine. */
export interface InboundMessage {
  contentType: string;
  body: Buffer;
  headers?: MessageHeaders;
  receivedAt?: Date;
}

export const MessageStatus = {
  received: 'received',
  transformed: 'transformed',
  routed: 'routed',
  delivered: 'delivered',
  filtered: 'filtered',
  unrouted: 'unrouted',
  /** Transform or a route step failed; kept with its OperationOutcome, replayable. */
  failed: 'failed',
  /** At least one delivery is dead. */
  dead: 'dead',
} as const;
export type MessageStatus = (typeof MessageStatus)[keyof typeof MessageStatus];

export const DeliveryStatus = {
  pending: 'pending',
  delivered: 'delivered',
  /** Failed, retry scheduled at nextAttemptAt. */
  failed: 'failed',
  dead: 'dead',
} as const;
export type DeliveryStatus = (typeof DeliveryStatus)[keyof typeof DeliveryStatus];

/** A message as the store holds it. */
export interface StoredMessage {
  id: string;
  seq: number;
  sourceId: string;
  contentType: string;
  /** Absent when pruned or when not asked for. */
  body?: Buffer;
  headers: MessageHeaders;
  receivedAt: Date;
  status: MessageStatus;
  /** The canonical FHIR R4 bundle, once transformed (when asked for). */
  bundle?: Bundle;
  error?: StoredError;
  /** When the message is a duplicate that was kept (policy accept), the id it duplicates. */
  duplicateOf?: string;
  /** The config version that last routed it (see Live configuration); absent before it is routed. */
  configVersion?: number;
}

export interface StoredError {
  code: string;
  message: string;
  retryable?: boolean;
  outcome?: OperationOutcome;
}

export interface StoredDelivery {
  id: string;
  messageId: string;
  routeId: string;
  sinkId: string;
  status: DeliveryStatus;
  attempts: number;
  /**
   * Of `attempts`, those made as the probe of a paused sink (see the dispatcher's circuit
   * breaker): they do not count towards the retry policy's `maxAttempts`. Absent when none.
   */
  probeAttempts?: number;
  orderingKey: string;
  strictOrder: boolean;
  createdAt: Date;
  nextAttemptAt?: Date;
  lastError?: StoredError;
  deliveredAt?: Date;
}

export interface MessageEvent {
  messageId: string;
  at: Date;
  /** The new status, or `delivery:<status>`. */
  status: string;
  sinkId?: string;
  routeId?: string;
  detail?: string;
}

/**
 * A value of a message the conversion could not use (a date that is not a date, a number that is
 * not a number, a code outside a required binding, a truncated value, a segment nobody maps).
 * Never carries the value itself (it may be PHI): where it is and why, only.
 */
export interface DataQualityIssue {
  /**
   * After the source's `dataQuality` policy: `error` (policy `fail`: the message fails, input
   * error, replayable) or `warning` (policy `warn`: delivered, the issue recorded). A transform
   * reports `warning` unless it knows better; the policy decides.
   */
  severity: 'error' | 'warning';
  /**
   * Where, in the source format: HL7 v2 `SEG-field[-component]` (`PID-7`, `PID-11-5`, `ZPD` for a
   * whole segment); a vendor transform its JSON path (`patient.dob`). Policies match on it.
   */
  location: string;
  /** HL7 v2: which occurrence of the segment (1-based), when there can be several. */
  occurrence?: number;
  /** HL7 v2: which repetition of the field (1-based), when the field repeats. */
  repetition?: number;
  /** HL7 v2: the segment's position in the message (1-based, MSH = 1; ERR-2 / ERL). */
  sequence?: number;
  /** The FHIR element that lost the value (`Patient.birthDate`), when known. */
  path?: string;
  /** Reason, machine-readable: `invalid-date`, `invalid-number`, `unknown-code`, `truncated`, `unknown-segment`... */
  code: string;
  /** Reason for people; never the value. */
  text: string;
  /** HL7 table 0357 error condition for an ERR segment (102 data type error, 103 table value not found...). */
  hl7ErrorCode?: string;
}

/** A source's `dataQuality` policy (derived from sourceCommonSchema; exported from here too for the model's users). */
export type { DataQualityPolicy } from '../config/engine.schema';

/** The event status under which each issue is stored with its message (detail: the issue as JSON). */
export const DATA_QUALITY_EVENT = 'data-quality';
/** The event holding the acknowledgment a source sent for a message (its text in `detail`). */
export const ACK_EVENT = 'ack';

/** The data-quality issues among a message's events (the latest processing's: a replay records them again). */
export function issuesOf(events: MessageEvent[]): DataQualityIssue[] {
  let start = 0;
  // A replay starts with a 'received' event: the issues after the last one are the current processing's.
  for (let i = 0; i < events.length; i++) if (events[i].status === 'received') start = i;
  const out: DataQualityIssue[] = [];
  for (const e of events.slice(start)) {
    if (e.status !== DATA_QUALITY_EVENT || !e.detail) continue;
    try {
      out.push(JSON.parse(e.detail) as DataQualityIssue);
    } catch {
      // not ours
    }
  }
  return out;
}
