/** A segment being written (its fields by number), and what the segment writers share. */
import { inputError } from '@ferry/core';
import type { Hl7WriteField } from '../hl7v2/parser';
import { type Comps, V2Writer } from './datatypes';
import type { ReceiverProfile } from './profile';

export class Seg {
  readonly fields: Hl7WriteField[] = [];
  constructor(readonly name: string) {}
  set(n: number, v: Hl7WriteField | undefined): this {
    if (v === undefined || v === null) return this;
    this.fields[n] = v;
    return this;
  }
  reps(n: number, vs: (Comps | undefined)[]): this {
    const r = vs.filter((x): x is Comps => !!x);
    if (r.length) this.fields[n] = { reps: r };
    return this;
  }
}

export function missing(element: string, field: string): Error {
  return inputError('FHIR_TO_V2_MISSING', `cannot express the Bundle in HL7 v2: ${element} is required for ${field}`, {
    element,
    field,
  });
}

export const first = <T>(xs: T[] | undefined): T | undefined => xs?.[0];

/** What the segment writers read: the receiver profile, its value writer, and whether it takes a segment. */
export class V2Out {
  readonly w: V2Writer;
  constructor(readonly profile: ReceiverProfile) {
    this.w = new V2Writer(profile);
  }

  on(seg: keyof ReceiverProfile['segments']): boolean {
    return this.profile.segments[seg] !== false;
  }
}
