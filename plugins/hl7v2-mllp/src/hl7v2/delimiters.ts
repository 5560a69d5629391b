import { STANDARD_HL7_DELIMITERS, type Hl7Delimiters } from '@ferry/core';

/** HL7 v2 delimiters, read from MSH-1 / MSH-2 (any characters, not only the standard `|^~\&`); core's type, shared with its escape codec. */
export type Delimiters = Hl7Delimiters;

export const STANDARD_DELIMITERS: Readonly<Delimiters> = STANDARD_HL7_DELIMITERS;

export function encodingCharacters(d: Delimiters): string {
  return d.component + d.repetition + d.escape + d.subcomponent + d.truncation;
}
