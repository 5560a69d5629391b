/** HL7 v2 delimiters, read from MSH-1 / MSH-2 (any characters, not only the standard `|^~\&`). */
export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  /** '' when MSH-2 declares no escape character. */
  escape: string;
  /** '' when MSH-2 declares no subcomponent separator. */
  subcomponent: string;
  /** v2.7+ truncation character (MSH-2.5), '' when absent. */
  truncation: string;
}

export const STANDARD_DELIMITERS: Readonly<Delimiters> = Object.freeze({
  field: '|',
  component: '^',
  repetition: '~',
  escape: '\\',
  subcomponent: '&',
  truncation: '',
});

export function encodingCharacters(d: Delimiters): string {
  return d.component + d.repetition + d.escape + d.subcomponent + d.truncation;
}
