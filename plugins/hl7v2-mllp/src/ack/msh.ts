/**
 * The few MSH fields an acknowledgment needs, read raw (still escaped, in the sender's own
 * delimiters) so that what the ACK echoes back is byte-for-byte what the sender sent. This is not
 * the HL7 codec (see ../hl7v2): it never decodes escapes or character sets, and it works on a
 * message too broken for the codec, so that even a rejected message gets an ACK naming its control id.
 */
export interface RawMsh {
  /** MSH-1 */
  fieldSep: string;
  /** MSH-2 (component, repetition, escape, subcomponent [, truncation]) */
  encodingChars: string;
  componentSep: string;
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  /** MSH-9 raw, e.g. `ADT^A01^ADT_A01` */
  messageType: string;
  /** MSH-9.1 */
  messageCode: string;
  /** MSH-9.2 */
  trigger: string;
  /** MSH-10 */
  controlId: string;
  /** MSH-11 */
  processingId: string;
  /** MSH-12 */
  version: string;
  /** MSH-15 accept acknowledgment type (AL, NE, ER, SU), empty when absent. */
  acceptAckType: string;
  /** MSH-16 application acknowledgment type. */
  appAckType: string;
  /** MSH-18 */
  charset: string;
  /** Field 11 read as FHS-11 / BHS-11: the file / batch control id (only meaningful for FHS/BHS). */
  batchControlId: string;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** The start of the first MSH segment of `body` (skipping a BOM and blank lines), or -1. */
function mshStart(body: Buffer): number {
  let i = 0;
  if (body.length >= 3 && body.subarray(0, 3).equals(BOM)) i = 3;
  while (i < body.length && (body[i] === 0x0d || body[i] === 0x0a || body[i] === 0x20 || body[i] === 0x09)) i++;
  return i;
}

/**
 * Read the MSH segment of a message (or of the first message of a batch when `segment` is 'MSH'
 * and the body starts with FHS/BHS: the caller decides). Returns undefined when the body does not
 * start with a usable MSH (or FHS/BHS when `allowBatchHeader`).
 */
export function readRawHeader(body: Buffer, segment: 'MSH' | 'FHS' | 'BHS' = 'MSH'): RawMsh | undefined {
  const start = mshStart(body);
  if (body.length - start < 8) return undefined;
  const text = body.toString('latin1', start, Math.min(body.length, start + 8192));
  if (!text.startsWith(segment)) return undefined;
  return parseHeaderSegment(text);
}

/** Find the first segment named `name` anywhere in the body (segment ends: CR, LF or CRLF). */
export function findSegmentStart(body: Buffer, name: string): number {
  const start = mshStart(body);
  if (body.toString('latin1', start, start + name.length) === name) return start;
  const needle = Buffer.from(name, 'latin1');
  let i = start;
  for (;;) {
    const at = body.indexOf(needle, i);
    if (at < 0) return -1;
    const prev = body[at - 1];
    if (prev === 0x0d || prev === 0x0a) return at;
    i = at + 1;
  }
}

/** Parse one header segment line (MSH, FHS or BHS: same layout for fields 1-12). */
export function parseHeaderSegment(text: string): RawMsh | undefined {
  const fieldSep = text[3];
  if (!fieldSep || /[A-Za-z0-9\r\n]/.test(fieldSep)) return undefined;
  const end = text.search(/[\r\n]/);
  const line = end < 0 ? text : text.slice(0, end);
  const parts = line.split(fieldSep);
  // parts[0] = 'MSH', parts[1] = MSH-2 (MSH-1 is the separator itself), parts[n] = MSH-(n+1)
  const encodingChars = parts[1] ?? '';
  if (encodingChars.length < 1) return undefined;
  const componentSep = encodingChars[0];
  const f = (n: number) => parts[n - 1] ?? '';
  const type = f(9);
  const comps = type.split(componentSep);
  return {
    fieldSep,
    encodingChars,
    componentSep,
    sendingApplication: f(3),
    sendingFacility: f(4),
    receivingApplication: f(5),
    receivingFacility: f(6),
    messageType: type,
    messageCode: comps[0] ?? '',
    trigger: comps[1] ?? '',
    controlId: f(10),
    processingId: f(11),
    version: f(12).split(componentSep)[0] ?? '',
    acceptAckType: f(15).trim().toUpperCase(),
    appAckType: f(16).trim().toUpperCase(),
    charset: f(18),
    batchControlId: f(11),
  };
}
