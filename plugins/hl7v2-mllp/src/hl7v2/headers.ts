import type { MessageHeaders } from '@ferry/core';
import { decodeHl7Bytes, type CharsetFallback } from './charset';
import { type Hl7Message, type Hl7Segment, parseHl7 } from './parser';

/** HD as one string: namespace id, else universal id. */
function hd(seg: Hl7Segment, n: number): string | undefined {
  return seg.get(n, 0, 1) || seg.get(n, 0, 2) || undefined;
}

/**
 * The ordering key: PID-3's first identifier with its assigning authority, `AUTH|12345`
 * (authority = CX-4.1 namespace, else CX-4.2 universal id; the id alone when there is none).
 * Messages about the same patient then share a key.
 */
export function orderingKeyOf(msg: Hl7Message): string | undefined {
  const pid = msg.segment('PID');
  if (!pid) return undefined;
  for (const rep of pid.reps(3)) {
    const id = rep[0]?.[0];
    if (!id) continue;
    const cx4 = rep[3];
    const auth = cx4?.[0] || cx4?.[1] || '';
    return auth ? `${auth}|${id}` : id;
  }
  const pid2 = pid.get(2);
  return pid2 || undefined;
}

/** Headers of a parsed message. */
export function headersOf(msg: Hl7Message): MessageHeaders {
  const msh = msg.msh;
  const code = msh.get(9, 0, 1);
  const trigger = msh.get(9, 0, 2);
  const h: MessageHeaders = {
    messageType: trigger ? `${code}^${trigger}` : code || undefined,
    trigger: trigger || undefined,
    messageStructure: msh.get(9, 0, 3) || undefined,
    controlId: msh.get(10) || undefined,
    sendingApplication: hd(msh, 3),
    sendingFacility: hd(msh, 4),
    receivingApplication: hd(msh, 5),
    receivingFacility: hd(msh, 6),
    dateTime: msh.get(7) || undefined,
    processingId: msh.get(11) || undefined,
    version: msh.get(12) || undefined,
    acceptAckType: msh.get(15) || undefined,
    applicationAckType: msh.get(16) || undefined,
    characterSet: msh.get(18) || undefined,
    orderingKey: orderingKeyOf(msg),
  };
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k];
  return h;
}

/** Headers for routing, ordering and duplicate detection, straight from the bytes. */
export function extractHeaders(body: Buffer, fallback: CharsetFallback = 'latin1'): MessageHeaders {
  return headersOf(parseHl7(decodeHl7Bytes(body, fallback).text));
}
