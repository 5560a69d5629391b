/**
 * One error type for the whole engine. Translate only at the edges: to an HL7 ACK code
 * (input -> AR, transient -> AE), to a FHIR OperationOutcome, to an HTTP status -- each read from
 * the error catalogue (./catalogue.ts), where every code is declared once.
 */
import {
  ERROR_CATALOGUE,
  ErrorKind,
  KIND_DEFAULTS,
  errorSpec,
  type CodeSuffix,
  type ErrorAck,
  type ErrorCode,
  type ErrorSpec,
  type FerryErrorCode,
} from './catalogue';

export {
  ERROR_CATALOGUE,
  ErrorKind,
  KIND_DEFAULTS,
  errorSpec,
  type CodeSuffix,
  type ErrorAck,
  type ErrorCode,
  type ErrorSpec,
  type FerryErrorCode,
};

export interface FerryErrorOptions {
  /** Defaults to the catalogue entry's kind. */
  kind?: ErrorKind;
  /** Defaults to the catalogue entry's flag; when `kind` is given and this is not, to `kind === 'transient'`. */
  retryable?: boolean;
  cause?: unknown;
  /** Extra structured detail (never PHI): paths, status codes, OperationOutcome issues. */
  details?: Record<string, unknown>;
}

/** Codes plugins declared with `defineErrors` (full FERRY_E_ form) -> their entry. */
const pluginCatalogue = new Map<string, ErrorSpec>();

/** A code a plugin declared with `defineErrors` (branded so that a bare string is not one). */
export type PluginErrorCode = string & { readonly __pluginErrorCode: true };

/** What `new FerryError` takes: a catalogue code (with or without FERRY_E_), a plugin's declared code. */
export type ErrorCodeArg = ErrorCode | FerryErrorCode | PluginErrorCode;

const full = (code: string): string => (code.startsWith('FERRY_E_') ? code : `FERRY_E_${code}`);

/** The catalogue entry of a code (`FERRY_E_X` or `X`; core or plugin-declared), undefined when unlisted. */
export function lookupError(code: string): ErrorSpec | undefined {
  const bare = code.startsWith('FERRY_E_') ? code.slice(8) : code;
  return (ERROR_CATALOGUE as Record<string, ErrorSpec>)[bare] ?? pluginCatalogue.get(full(code));
}

export class FerryError extends Error {
  readonly code: FerryErrorCode | PluginErrorCode;
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCodeArg, message: string, opts: FerryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = full(code) as FerryErrorCode | PluginErrorCode;
    const spec = lookupError(this.code);
    this.kind = opts.kind ?? spec?.kind ?? 'internal';
    this.retryable = opts.retryable ?? (opts.kind === undefined && spec ? spec.retryable : this.kind === 'transient');
    this.details = opts.details;
  }

  static is(e: unknown): e is FerryError {
    return e instanceof FerryError;
  }

  /** Wrap anything thrown into a FerryError, keeping FerryErrors as they are. */
  static from(e: unknown, code: ErrorCodeArg = 'INTERNAL_UNEXPECTED', kind: ErrorKind = 'internal'): FerryError {
    if (e instanceof FerryError) return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new FerryError(code, msg, { kind, cause: e });
  }
}

/** The HTTP status for an error at an HTTP edge: the catalogue's, else the kind's default. */
export function httpStatusOf(e: FerryError): number {
  return lookupError(e.code)?.http ?? KIND_DEFAULTS[e.kind].http;
}

/** The HL7 v2 ACK code for an error: the catalogue's (input AR, else AE), else by the error's kind. */
export function ackCodeOf(e: FerryError): ErrorAck {
  return lookupError(e.code)?.ack ?? KIND_DEFAULTS[e.kind].ack;
}

/** Convenience constructors; each takes the codes under its prefix, without the prefix. */
export const configError = (code: CodeSuffix<'CONFIG_'>, message: string, details?: Record<string, unknown>) =>
  new FerryError(`CONFIG_${code}`, message, { kind: 'config', details });
export const inputError = (
  code: CodeSuffix<'INPUT_'>,
  message: string,
  details?: Record<string, unknown>,
  cause?: unknown,
) => new FerryError(`INPUT_${code}`, message, { kind: 'input', details, cause });
export const transientError = (
  code: CodeSuffix<'TRANSIENT_'>,
  message: string,
  details?: Record<string, unknown>,
  cause?: unknown,
) => new FerryError(`TRANSIENT_${code}`, message, { kind: 'transient', details, cause });

/** A failed delivery the sink says must not be retried (4xx, AR, validation). */
export const permanentDeliveryError = (
  code: CodeSuffix<'DELIVERY_'>,
  message: string,
  details?: Record<string, unknown>,
  cause?: unknown,
) => new FerryError(`DELIVERY_${code}`, message, { kind: 'input', retryable: false, details, cause });
/** A failed delivery the sink says may succeed later (5xx, timeout, 429, network). */
export const retryableDeliveryError = (
  code: CodeSuffix<'DELIVERY_'>,
  message: string,
  details?: Record<string, unknown>,
  cause?: unknown,
) => new FerryError(`DELIVERY_${code}`, message, { kind: 'transient', retryable: true, details, cause });

/** What a plugin declares for one of its codes: the kind, and optionally the other catalogue fields. */
export interface PluginErrorDeclaration {
  kind: ErrorKind;
  description: string;
  retryable?: boolean;
  http?: number;
  ack?: ErrorAck;
}

/**
 * A plugin's own error codes, merged into the catalogue (`lookupError`, the HTTP/ACK edges see
 * them). Codes are UPPER_SNAKE and must not collide with the core catalogue or another plugin's
 * declaration (a collision throws at load). Returns typed constructors:
 *
 *   const errors = defineErrors({ ACME_REJECTED: { kind: 'input', description: 'acme refused the order: fix it' } });
 *   throw errors.error('ACME_REJECTED', `acme answered ${status}`, { details: { status } });
 */
export function defineErrors<const T extends Record<string, PluginErrorDeclaration>>(decls: T) {
  const codes = {} as { [K in keyof T & string]: PluginErrorCode };
  for (const [code, d] of Object.entries(decls)) {
    if (!/^[A-Z][A-Z0-9_]*[A-Z0-9]$/.test(code))
      throw new FerryError(
        'CONFIG_PLUGIN_INVALID',
        `defineErrors: ${code}: codes are UPPER_SNAKE (e.g. ACME_REJECTED)`,
        { kind: 'config' },
      );
    const spec = errorSpec(d.kind, d.description, { retryable: d.retryable, http: d.http, ack: d.ack });
    const key = full(code);
    const known = lookupError(key);
    // The same declaration again (a module loaded twice) is fine; another one is a collision.
    if (known && JSON.stringify(known) !== JSON.stringify(spec)) {
      throw new FerryError(
        'CONFIG_PLUGIN_INVALID',
        `defineErrors: ${key} is declared already (in the core catalogue or by another plugin)`,
        { kind: 'config' },
      );
    }
    pluginCatalogue.set(key, spec);
    (codes as Record<string, PluginErrorCode>)[code] = key as PluginErrorCode;
  }
  return {
    codes,
    /** A FerryError with one of these codes; kind and retryable from the declaration unless given. */
    error: (code: keyof T & string, message: string, opts: FerryErrorOptions = {}) =>
      new FerryError(codes[code], message, opts),
  };
}

/** The codes plugins declared (for docs and tests), in the FERRY_E_ form. */
export function pluginErrorCodes(): ReadonlyMap<string, ErrorSpec> {
  return pluginCatalogue;
}
