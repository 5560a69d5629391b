/** What the segment maps share: the handler type and small helpers over fields and arrays. */
import type { HumanName, Identifier, Reference } from '@medplum/fhirtypes';
import type { Hl7Rep, Hl7Segment } from '../../hl7v2/parser';
import type { ConvertContext } from '../convert';
import { c, valued, xpn } from '../datatypes';

export type Handler = (seg: Hl7Segment, ctx: ConvertContext) => void;
export type Ref = Reference<any>;

/** `arr` plus the defined items, as a new array (`arr` itself is never changed; returned as is when nothing is added). */
export const push = <T>(arr: T[] | undefined, ...items: (T | undefined)[]): T[] | undefined => {
  let out = arr;
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    if (v === undefined) continue;
    if (out === arr) out = arr ? arr.slice() : [];
    out!.push(v);
  }
  return out;
};

/** The defined results of `f` over every repetition of field `n`. */
export const all = <T>(seg: Hl7Segment, n: number, f: (r: Hl7Rep) => T | undefined): T[] => {
  const out: T[] = [];
  const reps = seg.reps(n);
  for (let i = 0; i < reps.length; i++) {
    const v = f(reps[i]);
    if (v !== undefined) out.push(v);
  }
  return out;
};

/**
 * Every name of an XPN field: each repetition's HumanName (XPN[HumanName]) and, when XPN.15 "called by" is
 * valued, an additional HumanName `use: nickname` with it as given name (XPN[HumanName] rows 18-19: XPN.15 ->
 * [2].given, [2].use = "nickname", for resource attributes that allow several names).
 */
export const names = (seg: Hl7Segment, n: number, ctx: ConvertContext): HumanName[] => {
  const out: HumanName[] = [];
  for (const r of seg.reps(n)) {
    const name = xpn(r, ctx);
    if (name) out.push(name);
    const calledBy = c(r, 15);
    if (valued(calledBy)) out.push({ use: 'nickname', given: [calledBy.trim()] });
  }
  return out;
};

/**
 * The key a deterministic id is derived from: system|value, and for an identifier without a system
 * (no assigning authority) the sending facility/application stands in, so two senders' bare "12345"
 * never become the same resource.
 */
export const idKey = (id: Identifier | undefined, ctx: ConvertContext) =>
  id?.value ? `${id.system ?? `scope:${ctx.scope}`}|${id.value}` : undefined;

/** Text for an XHTML narrative div. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
