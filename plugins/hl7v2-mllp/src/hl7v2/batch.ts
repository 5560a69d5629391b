import { hasUtf8Bom } from './charset';

/**
 * Splits an HL7 v2 body into messages, at byte level (delimiters and segment ids are 7-bit, so this
 * is safe for every ASCII-compatible charset and keeps each message's bytes untouched):
 * FHS/BHS/BTS/FTS envelope segments are dropped, every MSH starts a new message. A body with a single
 * message (and no envelope) is returned as is, without copying.
 */
export function splitHl7Batch(body: Buffer): Buffer[] {
  const starts: number[] = [];
  const ends: number[] = [];
  let envelope = false;
  let current = -1;
  const len = body.length;
  const i = hasUtf8Bom(body) ? 3 : 0;
  let lineStart = i;
  let msgCount = 0;
  const isSeg = (at: number, a: number, b: number, c: number) =>
    body[at] === a && body[at + 1] === b && body[at + 2] === c;
  while (lineStart < len) {
    // find end of line
    let j = lineStart;
    while (j < len && body[j] !== 0x0d && body[j] !== 0x0a) j++;
    if (j > lineStart) {
      const l = lineStart;
      if (isSeg(l, 0x4d, 0x53, 0x48)) {
        // MSH
        if (current >= 0) ends.push(l);
        starts.push(l);
        current = l;
        msgCount++;
      } else if (
        isSeg(l, 0x46, 0x48, 0x53) || // FHS
        isSeg(l, 0x42, 0x48, 0x53) || // BHS
        isSeg(l, 0x42, 0x54, 0x53) || // BTS
        isSeg(l, 0x46, 0x54, 0x53) // FTS
      ) {
        envelope = true;
        if (current >= 0) {
          ends.push(l);
          current = -1;
        }
      }
    }
    lineStart = j + 1;
  }
  if (current >= 0) ends.push(len);
  if (msgCount <= 1 && !envelope) return [body];
  if (msgCount === 0) return [];
  const out: Buffer[] = [];
  for (let k = 0; k < starts.length; k++) out.push(body.subarray(starts[k], ends[k]));
  return out;
}

/** Splits HL7 v2 text into message texts (same rules as splitHl7Batch). */
export function splitHl7BatchText(text: string): string[] {
  return splitHl7Batch(Buffer.from(text, 'utf8')).map((b) => b.toString('utf8'));
}
