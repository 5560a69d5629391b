import { inputError } from '@ferry/core';
import { splitLines } from './parser';

/** The part of hl7-standard's model that scripts use (the package ships no types). */
export interface Hl7StandardMessage {
  transform(cb?: (err?: Error) => void): void;
  build(): string;
  get(path: string, index?: number): unknown;
  set(path: string, value: unknown, index?: number): void;
  getSegment(name: string): unknown;
  getSegments(name?: string): unknown[];
  getSegmentsAfter(start: unknown, name: string, consecutive?: boolean, stop?: string | string[]): unknown[];
  createSegment(name: string): unknown;
  deleteSegment(segment: unknown): void;
  [key: string]: unknown;
}

type Hl7StandardCtor = new (data?: string, opts?: { lineEndings?: string }) => Hl7StandardMessage;
// loaded on first use: a conversion never needs it (only scripts and user transforms do), and `ferry convert`
// loads this module with the plugin at every call
let hl7Standard: Hl7StandardCtor | undefined;
// eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: loaded on first use (see above)
const HL7ctor = (): Hl7StandardCtor => (hl7Standard ??= require('hl7-standard') as Hl7StandardCtor);

/**
 * The hl7-standard model: what route scripts and user transforms see (get/set/getSegments...).
 * Ferry's own reader (parseHl7) is the conversion's read path; this bridge gives scripts the
 * familiar mutable model. Line ends are normalised to `\r` and a BOM is dropped first.
 */
export function toHl7Standard(text: string): Hl7StandardMessage {
  const normal = splitLines(text).join('\r');
  const HL7 = HL7ctor();
  const h = new HL7(normal);
  try {
    h.transform();
  } catch (e) {
    // hl7-standard's own message may quote message content: keep it on `cause` only (never logged at info)
    throw inputError('HL7_STANDARD_PARSE', 'hl7-standard could not parse the message', undefined, e);
  }
  return h;
}
