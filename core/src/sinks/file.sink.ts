import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { inject, injectable } from 'tsyringe';
import { configError, retryableDeliveryError } from '../errors';
import type { Delivery, MessageSink, SinkContext } from '../plugin/api';
import { coreTokens, createToken } from '../plugin/tokens';
import {
  deliveryPayload,
  deliveryPayloadJson,
  formatName,
  nonEmptyString,
  OWN_FORMATS,
  safeFileName,
  writtenMessages,
} from './common';
import { fileModes, mkdirPrivate, type FileModes } from '../util/file-modes';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';

/** `sinks.<id>` keys of a `type: file` sink. */
export const fileSinkSchema = defineSchema({
  dir: {
    doc: 'Output directory (created when missing); relative paths resolve against the working directory',
    format: nonEmptyString('dir'),
    default: '',
  },
  format: {
    doc: 'ndjson: one line per bundle appended to `file`; json: one file per message, <message id>.json; hl7v2 (with the hl7v2-mllp plugin): the Bundle as HL7 v2 with `profile`, one file per message, <message id>.hl7',
    format: formatName(OWN_FORMATS.file),
    default: 'ndjson',
  },
  profile: {
    doc: 'format hl7v2 (or another plugin-written format): the receiver profile, checked by the plugin when the config loads (FHIR-TO-V2.md)',
    format: Object,
    default: {},
  },
  file: {
    doc: 'ndjson: file name inside dir; {date} becomes the UTC date (YYYY-MM-DD) for daily files',
    format: nonEmptyString('file'),
    default: 'bundles.ndjson',
  },
  fsync: {
    doc: 'fsync before a delivery counts as done (ndjson: one fsync per group of lines written together)',
    format: Boolean,
    default: true,
  },
  envelope: {
    doc: 'Wrap each bundle as { messageId, deliveryId, routeId, sourceId, messageType, controlId, receivedAt, bundle }',
    format: Boolean,
    default: false,
  },
  indent: {
    doc: 'json: spaces of indentation (0 = compact); ndjson lines are always compact',
    format: 'nat',
    default: 2,
  },
});

export type FileSinkConfig = SchemaType<typeof fileSinkSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type FileSinkInput = SchemaInput<typeof fileSinkSchema>;

// ---------------------------------------------------------------------------------------------
// NDJSON: one writer per file in this engine (NdjsonWriters). Lines from concurrent deliveries are queued and
// written together by a single write loop (whole lines, in queue order), then fsynced once
// (group commit). A line is never split across two writes by another line, so lines cannot
// interleave or tear, even when several sink instances point at the same file.

interface PendingLine {
  data: Buffer;
  fsync: boolean;
  resolve(): void;
  reject(e: unknown): void;
}

export class NdjsonWriter {
  refs = 0;
  private queue: PendingLine[] = [];
  private running: Promise<void> | undefined;
  private handle: fsp.FileHandle | undefined;
  /** Lines written (tests, metrics). */
  written = 0;
  writes = 0;

  constructor(
    readonly file: string,
    private readonly modes: FileModes,
  ) {}

  append(data: Buffer, fsync: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ data, fsync, resolve, reject });
      if (!this.running) this.running = this.drain().finally(() => (this.running = undefined));
    });
  }

  private async open(): Promise<fsp.FileHandle> {
    if (this.handle) return this.handle;
    await mkdirPrivate(path.dirname(this.file), this.modes);
    const h = await fsp.open(this.file, 'a+', this.modes.file);
    // a file made before (or by someone else) loses the bits the umask forbids: it holds PHI
    const st = await h.stat();
    if (st.mode & this.modes.umask) await h.chmod(st.mode & 0o777 & ~this.modes.umask);
    // A crash in the middle of a write can leave a partial last line: start on a fresh line so
    // the next record is whole (the torn one is then a single unparseable line, easy to spot).
    const { size } = st;
    if (size > 0) {
      const last = Buffer.alloc(1);
      await h.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) await writeAll(h, Buffer.from('\n'));
    }
    this.handle = h;
    return h;
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue;
      this.queue = [];
      try {
        const h = await this.open();
        await writeAll(h, Buffer.concat(batch.map((b) => b.data)));
        this.writes++;
        if (batch.some((b) => b.fsync)) await h.sync();
        this.written += batch.length;
        for (const b of batch) b.resolve();
      } catch (e) {
        // The file may now end with part of this batch: drop the handle so the next open
        // re-checks the tail and starts on a fresh line.
        await this.closeHandle().catch(() => undefined);
        for (const b of batch) b.reject(e);
      }
    }
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    if (h) await h.close();
  }

  async close(): Promise<void> {
    while (this.running) await this.running;
    await this.closeHandle();
  }
}

async function writeAll(h: fsp.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await h.write(buf, off, buf.length - off, null);
    off += bytesWritten;
  }
}

/**
 * The NDJSON writers of one engine, one per file: sinks of the engine writing the same file share its
 * writer (its queue keeps their lines whole). A service of the core plugin (`reg.provide`), so two
 * engines in one process do not share writers; closed when the engine stops.
 */
export class NdjsonWriters {
  private readonly byFile = new Map<string, NdjsonWriter>();

  acquire(file: string, modes: FileModes): NdjsonWriter {
    let w = this.byFile.get(file);
    if (!w) {
      w = new NdjsonWriter(file, modes);
      this.byFile.set(file, w);
    }
    w.refs++;
    return w;
  }

  async release(w: NdjsonWriter): Promise<void> {
    if (--w.refs > 0) return;
    if (this.byFile.get(w.file) === w) this.byFile.delete(w.file);
    await w.close();
  }

  /** Files with a writer open (tests). */
  files(): string[] {
    return [...this.byFile.keys()];
  }

  /** Closes every writer still open (their sinks stopped first; nothing is left queued). */
  async dispose(): Promise<void> {
    const all = [...this.byFile.values()];
    this.byFile.clear();
    await Promise.all(all.map((w) => w.close()));
  }
}

/** The engine's NDJSON writers (`NdjsonWriters`), in the core plugin's container. */
export const ndjsonWritersToken = createToken<NdjsonWriters>('ferry.core.ndjsonWriters');

async function fsyncDir(dir: string): Promise<void> {
  let h: fsp.FileHandle | undefined;
  try {
    h = await fsp.open(dir, 'r');
    await h.sync();
  } catch (e) {
    // Some platforms/filesystems refuse fsync on a directory; the rename itself is still atomic.
    if (!['EISDIR', 'EINVAL', 'EPERM', 'EBADF'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await h?.close();
  }
}

/**
 * Writes canonical bundles to files: NDJSON (one compact line per bundle, appended) or one
 * pretty JSON file per message written atomically (temp file + fsync + rename + fsync of the
 * directory) and named after the message id, so a redelivery replaces the file instead of
 * adding a second one. NDJSON is append-only: a redelivery appends the line again (at-least-once);
 * turn on `envelope` to get the message and delivery ids on every line for de-duplication.
 */
@injectable()
export class FileSink implements MessageSink {
  private readonly cfg: FileSinkConfig;
  private readonly dir: string;
  private writer: NdjsonWriter | undefined;
  private readonly modes: FileModes;

  constructor(
    @inject(coreTokens.SinkContext) private readonly ctx: SinkContext<FileSinkInput>,
    @inject(ndjsonWritersToken) private readonly writers: NdjsonWriters,
  ) {
    this.cfg = withSchemaDefaults(fileSinkSchema, ctx.config);
    this.dir = path.resolve(this.cfg.dir);
    this.modes = ctx.files ?? fileModes();
    if (!OWN_FORMATS.file.includes(this.cfg.format) && !ctx.fromFhir)
      throw configError(
        'SINK_FORMAT',
        `sinks.${ctx.id}.format: ${this.cfg.format} needs a loaded plugin that writes it`,
      );
  }

  /** NDJSON: every line in flight joins one write and one fsync, so more in flight = fewer fsyncs. */
  get preferredConcurrency(): number | undefined {
    return this.cfg.format === 'ndjson' ? 256 : undefined;
  }

  async start(): Promise<void> {
    await mkdirPrivate(this.dir, this.modes);
    this.ctx.logger.info('file sink ready', { sink: this.ctx.id, format: this.cfg.format, fsync: this.cfg.fsync });
  }

  async stop(): Promise<void> {
    const w = this.writer;
    this.writer = undefined;
    if (w) await this.writers.release(w);
  }

  /** The NDJSON file a delivery made now goes to. */
  currentFile(now = new Date()): string {
    return path.join(this.dir, this.cfg.file.replace(/\{date\}/g, now.toISOString().slice(0, 10)));
  }

  async deliver(d: Delivery): Promise<void> {
    // converted before anything is written: a Bundle that cannot be expressed is dead (not retried), with the reason
    const written = OWN_FORMATS.file.includes(this.cfg.format)
      ? []
      : await writtenMessages(`file sink ${this.ctx.id}`, 'FILE', this.ctx, d, this.cfg.format, this.cfg.profile);
    try {
      if (this.cfg.format === 'ndjson') await this.appendLine(deliveryPayloadJson(d, this.cfg.envelope));
      else if (this.cfg.format === 'json')
        await this.writeFile(
          `${safeFileName(d.message.id)}.json`,
          JSON.stringify(deliveryPayload(d, this.cfg.envelope), null, this.cfg.indent || undefined) + '\n',
        );
      // a plugin-written format (hl7v2): the messages one after the other (segments end with CR, each message with CR LF), one file per message
      else
        await this.writeFile(
          `${safeFileName(d.message.id)}.${this.cfg.format === 'hl7v2' ? 'hl7' : this.cfg.format}`,
          written.map((m) => m.replace(/\r?$/, '\r') + '\n').join(''),
        );
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      throw retryableDeliveryError(
        'FILE_WRITE',
        `file sink ${this.ctx.id}: cannot write: ${code}`,
        { errno: code, dir: this.dir },
        e,
      );
    }
    this.ctx.logger.debug('bundle written', { sink: this.ctx.id, messageId: d.message.id, deliveryId: d.deliveryId });
  }

  private async appendLine(json: string): Promise<void> {
    const file = this.currentFile();
    if (this.writer?.file !== file) {
      const old = this.writer;
      this.writer = this.writers.acquire(file, this.modes);
      // not awaited: the old day's file closes once its queue is written; this line goes to the new one
      if (old) void this.writers.release(old);
    }
    // Compact JSON never holds a raw newline (they are escaped inside strings), so one record is one line.
    await this.writer.append(Buffer.from(json + '\n', 'utf8'), this.cfg.fsync);
  }

  private async writeFile(name: string, text: string): Promise<void> {
    await mkdirPrivate(this.dir, this.modes);
    const final = path.join(this.dir, name);
    // Dot-prefixed temp name: readers and the file source ignore dotfiles.
    const tmp = path.join(this.dir, `.${name}.${randomUUID()}.tmp`);
    const data = Buffer.from(text, 'utf8');
    const h = await fsp.open(tmp, 'wx', this.modes.file);
    try {
      await writeAll(h, data);
      if (this.cfg.fsync) await h.sync();
    } finally {
      await h.close();
    }
    try {
      await fsp.rename(tmp, final);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    if (this.cfg.fsync) await fsyncDir(this.dir);
  }
}
