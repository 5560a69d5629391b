/**
 * MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2):
 *   <VT = 0x0B> payload <FS = 0x1C><CR = 0x0D>
 * The deframer is a streaming parser: a frame may be split across any number of TCP reads, and one
 * read may carry several frames. Bytes outside a frame are discarded and counted. A frame larger
 * than `maxMessageSize` is discarded (only its first `headBytes` are kept so the caller can still
 * acknowledge it with the right control id) and the connection keeps going.
 */
export const VT = 0x0b;
export const FS = 0x1c;
export const CR = 0x0d;

const START = Buffer.from([VT]);
const END = Buffer.from([FS, CR]);

/** Wrap a payload in an MLLP frame. */
export function encodeFrame(payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  return Buffer.concat([START, body, END]);
}

export type DeframerEvent =
  | { kind: 'frame'; payload: Buffer }
  /** A frame over the size limit: discarded; `head` is its first bytes (for the ACK), `size` how many bytes it had. */
  | { kind: 'oversized'; head: Buffer; size: number };

export interface DeframerOptions {
  /** Largest payload accepted, in bytes. */
  maxMessageSize: number;
  /** How many leading bytes of an oversized frame are kept for its ACK. */
  headBytes?: number;
}

/**
 * Streaming MLLP deframer. Call `push(chunk)` with each TCP read; it returns the complete frames
 * (and oversized-frame notices) found so far, in order. Memory held per connection is bounded by
 * `maxMessageSize` (+ `headBytes` while discarding an oversized frame).
 */
export class MllpDeframer {
  /** Bytes seen outside any frame and discarded. */
  junkBytes = 0;
  /** Frames discarded for exceeding the size limit. */
  oversizedFrames = 0;
  /** Complete frames returned. */
  frames = 0;
  /** Frames abandoned because a new start block arrived before their end block. */
  truncatedFrames = 0;

  private readonly max: number;
  private readonly headBytes: number;
  private inFrame = false;
  /** Chunks of the current frame (when not oversized). */
  private parts: Buffer[] = [];
  private size = 0;
  /** When the current frame went over the limit: we only keep its head and count its size. */
  private oversized = false;
  private head: Buffer = Buffer.alloc(0);
  /** The previous chunk ended with FS inside a frame: the next byte decides if it was the end. */
  private pendingFs = false;

  constructor(opts: DeframerOptions) {
    this.max = opts.maxMessageSize;
    this.headBytes = opts.headBytes ?? 4096;
  }

  /** True while a frame has started and not ended (for idle/close decisions). */
  get midFrame(): boolean {
    return this.inFrame;
  }

  /** Bytes currently buffered for an incomplete frame. */
  get buffered(): number {
    return this.oversized ? this.head.length : this.size;
  }

  push(chunk: Buffer): DeframerEvent[] {
    const out: DeframerEvent[] = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (!this.inFrame) {
        const s = chunk.indexOf(VT, i);
        if (s < 0) {
          this.junkBytes += n - i;
          return out;
        }
        this.junkBytes += s - i;
        this.startFrame();
        i = s + 1;
        continue;
      }
      if (this.pendingFs) {
        this.pendingFs = false;
        if (chunk[i] === CR) {
          i += 1;
          this.endFrame(out);
          continue;
        }
        // A lone FS inside the payload: keep it as data.
        this.append(Buffer.from([FS]));
      }
      const e = chunk.indexOf(FS, i);
      const v = chunk.indexOf(VT, i);
      if (v >= 0 && (e < 0 || v < e)) {
        // A new start block inside a frame: the previous frame was truncated. Drop it, resync.
        this.junkBytes += this.size + (v - i);
        this.truncatedFrames += 1;
        this.startFrame();
        i = v + 1;
        continue;
      }
      if (e < 0) {
        this.appendChecked(chunk.subarray(i), out);
        return out;
      }
      if (e + 1 >= n) {
        // FS is the last byte of this read: decide on the next one.
        this.appendChecked(chunk.subarray(i, e), out);
        this.pendingFs = true;
        return out;
      }
      if (chunk[e + 1] === CR) {
        this.appendChecked(chunk.subarray(i, e), out);
        i = e + 2;
        this.endFrame(out);
        continue;
      }
      // FS not followed by CR: data.
      this.appendChecked(chunk.subarray(i, e + 1), out);
      i = e + 1;
    }
    return out;
  }

  /** Drop a partial frame (connection closed mid-frame). Returns how many bytes were lost. */
  reset(): number {
    const lost = this.inFrame ? this.size : 0;
    this.inFrame = false;
    this.parts = [];
    this.size = 0;
    this.oversized = false;
    this.head = Buffer.alloc(0);
    this.pendingFs = false;
    return lost;
  }

  private startFrame(): void {
    this.inFrame = true;
    this.parts = [];
    this.size = 0;
    this.oversized = false;
    this.head = Buffer.alloc(0);
    this.pendingFs = false;
  }

  private appendChecked(data: Buffer, _out: DeframerEvent[]): void {
    if (data.length === 0) return;
    this.append(data);
  }

  private append(data: Buffer): void {
    if (this.oversized) {
      this.size += data.length;
      return;
    }
    if (this.size + data.length > this.max) {
      // Keep only the head for the ACK and stop buffering.
      const all = Buffer.concat([...this.parts, data]);
      this.head = Buffer.from(all.subarray(0, this.headBytes));
      this.parts = [];
      this.oversized = true;
      this.size += data.length;
      return;
    }
    // Copy: the socket's buffer may be reused by the caller.
    this.parts.push(data);
    this.size += data.length;
  }

  private endFrame(out: DeframerEvent[]): void {
    if (this.oversized) {
      this.oversizedFrames += 1;
      out.push({ kind: 'oversized', head: this.head, size: this.size });
    } else {
      this.frames += 1;
      out.push({
        kind: 'frame',
        payload: this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size),
      });
    }
    this.inFrame = false;
    this.parts = [];
    this.size = 0;
    this.oversized = false;
    this.head = Buffer.alloc(0);
  }
}
