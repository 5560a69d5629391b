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
