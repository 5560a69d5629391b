/**
 * One error type for the whole engine. Translate only at the edges: to an HL7 ACK code
 * (input -> AR, transient -> AE), to a FHIR OperationOutcome, to an HTTP status.
 */
export const ErrorKind = {
  config: 'config',
  input: 'input',
  transient: 'transient',
  internal: 'internal',
} as const;
export type ErrorKind = (typeof ErrorKind)[keyof typeof ErrorKind];

export interface FerryErrorOptions {
  kind: ErrorKind;
  /** Defaults to `kind === 'transient'`. */
  retryable?: boolean;
  cause?: unknown;
  /** Extra structured detail (never PHI): paths, status codes, OperationOutcome issues. */
  details?: Record<string, unknown>;
}

export class FerryError extends Error {
  readonly code: string;
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;

  constructor(code: string, message: string, opts: FerryErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = code.startsWith('FERRY_E_') ? code : `FERRY_E_${code}`;
    this.kind = opts.kind;
    this.retryable = opts.retryable ?? opts.kind === 'transient';
    this.details = opts.details;
  }

  static is(e: unknown): e is FerryError {
    return e instanceof FerryError;
  }

  /** Wrap anything thrown into a FerryError, keeping FerryErrors as they are. */
  static from(e: unknown, code = 'INTERNAL_UNEXPECTED', kind: ErrorKind = 'internal'): FerryError {
    if (e instanceof FerryError) return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new FerryError(code, msg, { kind, cause: e });
  }
}

/** Convenience constructors. */
export const configError = (code: string, message: string, details?: Record<string, unknown>) =>
  new FerryError(`CONFIG_${code}`, message, { kind: 'config', details });
export const inputError = (code: string, message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new FerryError(`INPUT_${code}`, message, { kind: 'input', details, cause });
export const transientError = (code: string, message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new FerryError(`TRANSIENT_${code}`, message, { kind: 'transient', details, cause });

/** A failed delivery the sink says must not be retried (4xx, AR, validation). */
export const permanentDeliveryError = (code: string, message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new FerryError(`DELIVERY_${code}`, message, { kind: 'input', retryable: false, details, cause });
/** A failed delivery the sink says may succeed later (5xx, timeout, 429, network). */
export const retryableDeliveryError = (code: string, message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new FerryError(`DELIVERY_${code}`, message, { kind: 'transient', retryable: true, details, cause });
