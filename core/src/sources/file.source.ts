import { watch, type FSWatcher, promises as fsp } from 'node:fs';
import path from 'node:path';
import { inject, injectable } from 'tsyringe';
import { FerryError, inputError } from '../errors';
import { OutageLog } from '../logging/outage-log';
import { ContentType, type InboundMessage } from '../model/message';
import type { MessageSource, SourceContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import { checkBody, globToRegExp, requiredString } from './common';
import { fileModes, mkdirPrivate, tighten, type FileModes } from '../util/file-modes';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';

/** `sources.<id>` keys of a `type: file` source. */
export const fileSourceSchema = defineSchema({
  dir: {
    doc: 'Directory watched for message files (created when missing)',
    format: requiredString('dir'),
    default: '',
  },
  contentType: {
    doc: 'Content type of every file; empty = by extension (.hl7 .er7 .txt -> application/hl7-v2, .json -> application/fhir+json)',
    format: String,
    default: '',
  },
  pattern: {
    doc: 'Glob on file names (*, ?, {a,b}); dotfiles and *.tmp/*.part/*.filepart/*~ are always ignored',
    format: String,
    default: '*',
  },
  pollIntervalMs: {
    doc: 'Directory scan interval (fs.watch also triggers a scan at once)',
    format: 'nat',
    default: 1000,
  },
  batch: {
    doc: 'Split a file into messages with the transform for its content type (HL7 FHS/BHS batches); false = one file, one message',
    format: Boolean,
    default: true,
  },
  stableMs: {
    doc: 'A file is read only once its size and mtime have not changed for this long (files still being written are left alone)',
    format: 'nat',
    default: 500,
  },
  doneDir: { doc: 'Where files go once stored (relative to dir)', format: String, default: 'done' },
  errorDir: {
    doc: 'Where rejected files go, each with a <name>.reason file (relative to dir)',
    format: String,
    default: 'error',
  },
  maxFileBytes: { doc: 'Larger files are rejected to errorDir', format: 'nat', default: 64 * 1024 * 1024 },
  keepDoneDays: {
    doc: 'Delete files from doneDir this many days after they were stored (0 = keep forever); errorDir is never pruned',
    format: 'nat',
    default: 0,
  },
});

export type FileSourceConfig = SchemaType<typeof fileSourceSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type FileSourceInput = SchemaInput<typeof fileSourceSchema>;

const EXTENSIONS: Record<string, string> = {
  '.hl7': ContentType.hl7v2,
  '.er7': ContentType.hl7v2,
  '.txt': ContentType.hl7v2,
  '.json': ContentType.fhirJson,
};
const IGNORED = /(^\.)|(\.(tmp|part|filepart|crdownload|swp)$)|(~$)/i;

/**
 * Watches a directory. Each file is one message, or a batch split by the transform for its content
 * type. A file is read once its size and mtime have been stable for `stableMs`; its messages are
 * submitted together and only when the store has committed them is the file moved to `done/`. A
 * file the engine refuses (bad content) goes to `error/` with a `<name>.reason` file. When the
 * store is unavailable the file stays where it is and is tried again on a later scan.
 * Files are taken oldest first (mtime, then name), one at a time, so arrival order is kept.
 */
@injectable()
export class FileSource implements MessageSource {
  private readonly cfg: FileSourceConfig;
  private readonly dir: string;
  private readonly doneDir: string;
  private readonly errorDir: string;
  private readonly match: RegExp;
  private readonly modes: FileModes;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescan = false;
  private lastPrune = 0;
  private running = false;
  /** First sighting of a file's (size, mtime), for the stability check. */
  private readonly seen = new Map<string, { size: number; mtimeMs: number; since: number }>();
  /** Files that failed transiently: not before this time. */
  private readonly backoff = new Map<string, number>();
  /** Counters (tests, metrics). */
  readonly counts = { files: 0, messages: 0, rejected: 0, transientFailures: 0 };

  /** While files cannot be stored (the store unavailable): told once, counted each minute. */
  private readonly notStored: OutageLog;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<FileSourceInput>) {
    this.notStored = new OutageLog(ctx.logger, 'file not stored; will retry', { source: ctx.id });
    this.cfg = withSchemaDefaults(fileSourceSchema, ctx.config);
    if (!this.cfg.dir) throw new FerryError('CONFIG_SOURCE_DIR', `sources.${ctx.id}.dir: required`, { kind: 'config' });
    this.dir = path.resolve(this.cfg.dir);
    this.doneDir = path.resolve(this.dir, this.cfg.doneDir || 'done');
    this.errorDir = path.resolve(this.dir, this.cfg.errorDir || 'error');
    this.match = globToRegExp(this.cfg.pattern || '*');
    this.modes = ctx.files ?? fileModes();
  }

  async start(): Promise<void> {
    await mkdirPrivate(this.dir, this.modes);
    await mkdirPrivate(this.doneDir, this.modes);
    await mkdirPrivate(this.errorDir, this.modes);
    this.running = true;
    try {
      this.watcher = watch(this.dir, { persistent: false }, () => this.scanSoon(20));
      this.watcher.on('error', (e) => {
        this.ctx.logger.warn('fs.watch failed; polling only', { source: this.ctx.id, error: (e as Error).message });
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (e) {
      this.ctx.logger.warn('fs.watch unavailable; polling only', { source: this.ctx.id, error: (e as Error).message });
    }
    this.timer = setInterval(() => this.scanSoon(0), Math.max(10, this.cfg.pollIntervalMs));
    this.ctx.logger.info('file source watching', {
      source: this.ctx.id,
      pattern: this.cfg.pattern,
      batch: this.cfg.batch,
    });
    this.scanSoon(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = this.soon = undefined;
    // Let the file in progress finish (its commit and move), then stop.
    while (this.scanning) await this.scanning;
  }

  isReady(): boolean {
    return this.running;
  }

  /** Scan now and resolve when the scan is done (tests). */
  async scanNow(): Promise<void> {
    while (this.scanning) await this.scanning;
    await this.runScan();
  }

  private scanSoon(ms: number): void {
    if (!this.running) return;
    if (this.scanning) {
      this.rescan = true;
      return;
    }
    if (this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.runScan();
    }, ms);
  }

  private runScan(): Promise<void> {
    if (this.scanning) {
      this.rescan = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      try {
        do {
          this.rescan = false;
          await this.scan();
        } while (this.rescan && this.running);
      } catch (e) {
        this.ctx.logger.error('file source scan failed', {
          source: this.ctx.id,
          error: (e as Error).message,
          errorCode: (e as NodeJS.ErrnoException).code,
        });
      } finally {
        this.scanning = undefined;
      }
    })();
    return this.scanning;
  }

  private async scan(): Promise<void> {
    if (this.cfg.keepDoneDays > 0 && Date.now() - this.lastPrune > 3600_000) {
      this.lastPrune = Date.now();
      await this.pruneDone().catch((e) =>
        this.ctx.logger.warn('pruning the done folder failed', {
          source: this.ctx.id,
          errorCode: (e as NodeJS.ErrnoException).code,
        }),
      );
    }
    const entries = await fsp.readdir(this.dir, { withFileTypes: true });
    const now = Date.now();
    const ready: { name: string; mtimeMs: number; size: number }[] = [];
    const present = new Set<string>();
    let waiting = false;
    for (const ent of entries) {
      if (!ent.isFile() || IGNORED.test(ent.name) || !this.match.test(ent.name)) continue;
      present.add(ent.name);
      if ((this.backoff.get(ent.name) ?? 0) > now) continue;
      let st;
      try {
        st = await fsp.stat(path.join(this.dir, ent.name));
      } catch {
        continue; // gone meanwhile
      }
      const prev = this.seen.get(ent.name);
      if (!prev || prev.size !== st.size || prev.mtimeMs !== st.mtimeMs) {
        this.seen.set(ent.name, { size: st.size, mtimeMs: st.mtimeMs, since: now });
        if (this.cfg.stableMs > 0) {
          waiting = true;
          continue;
        }
      } else if (now - prev.since < this.cfg.stableMs) {
        waiting = true;
        continue;
      }
      ready.push({ name: ent.name, mtimeMs: st.mtimeMs, size: st.size });
    }
    for (const k of this.seen.keys()) if (!present.has(k)) this.seen.delete(k);
    for (const k of this.backoff.keys()) if (!present.has(k)) this.backoff.delete(k);
    ready.sort((a, b) => a.mtimeMs - b.mtimeMs || a.name.localeCompare(b.name));
    for (const f of ready) {
      if (!this.running) break;
      await this.processFile(f.name, f.size);
    }
    if (waiting) this.scanSoon(Math.max(20, this.cfg.stableMs));
  }

  /** Delete files stored more than keepDoneDays ago (their mtime is set when they are moved). */
  private async pruneDone(): Promise<void> {
    const cutoff = Date.now() - this.cfg.keepDoneDays * 86_400_000;
    let removed = 0;
    for (const ent of await fsp.readdir(this.doneDir, { withFileTypes: true })) {
      if (!ent.isFile()) continue;
      const f = path.join(this.doneDir, ent.name);
      const st = await fsp.stat(f).catch(() => undefined);
      if (st && st.mtimeMs < cutoff) {
        await fsp.unlink(f).catch(() => undefined);
        removed++;
      }
    }
    if (removed)
      this.ctx.logger.info('done folder pruned', { source: this.ctx.id, removed, keepDoneDays: this.cfg.keepDoneDays });
  }

  private contentTypeFor(name: string): string | undefined {
    if (this.cfg.contentType) return this.cfg.contentType;
    return EXTENSIONS[path.extname(name).toLowerCase()];
  }

  private async processFile(name: string, size: number): Promise<void> {
    const file = path.join(this.dir, name);
    let messages: InboundMessage[];
    try {
      if (size > this.cfg.maxFileBytes)
        throw inputError('FILE_TOO_LARGE', `file is ${size} bytes, more than maxFileBytes ${this.cfg.maxFileBytes}`);
      const contentType = this.contentTypeFor(name);
      if (!contentType)
        throw inputError(
          'UNKNOWN_CONTENT_TYPE',
          `no content type for extension "${path.extname(name)}"; set contentType or use .hl7/.er7/.txt/.json`,
        );
      const body = await fsp.readFile(file);
      const reason = checkBody(contentType, body);
      if (reason) throw inputError('BAD_MESSAGE', reason);
      let parts: Buffer[];
      try {
        parts = this.cfg.batch ? this.ctx.split(contentType, body) : [body];
      } catch (e) {
        throw FerryError.is(e)
          ? e
          : inputError('BAD_BATCH', `cannot split the file into messages: ${(e as Error).message}`, undefined, e);
      }
      parts = parts.filter((p) => p.length > 0);
      if (!parts.length) throw inputError('EMPTY_BATCH', 'the file holds no message');
      const receivedAt = new Date();
      messages = parts.map((p, i) => {
        try {
          return { contentType, body: p, headers: this.ctx.extractHeaders(contentType, p), receivedAt };
        } catch (e) {
          throw FerryError.is(e)
            ? e
            : inputError('BAD_MESSAGE', `message ${i + 1} of the file: ${(e as Error).message}`, undefined, e);
        }
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // taken away meanwhile
      if (FerryError.is(e) && e.kind === 'input') return this.reject(name, e);
      return this.transientFailure(name, e);
    }

    let results;
    try {
      results = await this.ctx.submit(messages);
    } catch (e) {
      if (FerryError.is(e) && e.kind === 'input') return this.reject(name, e);
      return this.transientFailure(name, e);
    }
    this.seen.delete(name);
    this.backoff.delete(name);
    try {
      const moved = await moveAside(file, this.doneDir, name, this.modes);
      if (this.cfg.keepDoneDays > 0) {
        const now = new Date();
        await fsp.utimes(moved, now, now).catch(() => undefined); // retention counts from when it was stored
      }
    } catch (e) {
      // Stored but not moved: it would be submitted again; the store's duplicate check catches that.
      this.ctx.logger.error('file stored but could not be moved to done', {
        source: this.ctx.id,
        errorCode: (e as NodeJS.ErrnoException).code,
      });
      this.backoff.set(name, Date.now() + 60_000);
      return;
    }
    this.counts.files++;
    this.counts.messages += results.filter((r) => r.stored).length;
    const dups = results.filter((r) => r.duplicate && !r.stored).length;
    this.notStored.ok();
    this.ctx.logger.info('file stored', {
      source: this.ctx.id,
      messages: results.length,
      ids: results.slice(0, 20).map((r) => r.id),
      ...(dups ? { duplicates: dups } : {}),
    });
  }

  private async reject(name: string, e: FerryError): Promise<void> {
    this.seen.delete(name);
    this.counts.rejected++;
    try {
      const reason = [
        `file: ${name}`,
        `source: ${this.ctx.id}`,
        `time: ${new Date().toISOString()}`,
        `code: ${e.code}`,
        `reason: ${e.message}`,
        '',
      ].join('\n');
      // The .reason file is complete before the file appears beside it (a watcher of error/ never
      // reads it half written).
      await moveAside(path.join(this.dir, name), this.errorDir, name, this.modes, async (target) => {
        await fsp.writeFile(`${target}.reason`, reason, { mode: this.modes.file });
        return `${target}.reason`;
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.ctx.logger.error('could not move a rejected file to the error folder', {
        source: this.ctx.id,
        errorCode: (err as NodeJS.ErrnoException).code,
      });
      this.backoff.set(name, Date.now() + 60_000);
      return;
    }
    this.ctx.logger.warn('file rejected', { source: this.ctx.id, errorCode: e.code, error: e.message });
  }

  private transientFailure(name: string, e: unknown): void {
    this.counts.transientFailures++;
    const delay = Math.max(1000, this.cfg.pollIntervalMs * 2);
    this.backoff.set(name, Date.now() + delay);
    this.notStored.failed({
      errorCode: (e as FerryError).code ?? (e as NodeJS.ErrnoException).code,
      error: (e as Error).message,
      retryInMs: delay,
    });
    this.scanSoon(delay + 10);
  }
}

/**
 * Move `file` into `dir` under `name` (or `name.<n>` if taken: an earlier file is never
 * overwritten); returns the new path. A rename, so the file is never in both places.
 */
/**
 * Moves `file` into `dir` under `name` (or `name.1`, `name.2`, ... if taken). `companion` first
 * writes a file of its own for the target and returns its path; it is removed if the move fails.
 */
async function moveAside(
  file: string,
  dir: string,
  name: string,
  modes: FileModes,
  companion?: (target: string) => Promise<string>,
): Promise<string> {
  await mkdirPrivate(dir, modes);
  for (let n = 0; ; n++) {
    const target = path.join(dir, n === 0 ? name : `${name}.${n}`);
    const taken = await fsp.access(target).then(
      () => true,
      () => false,
    );
    if (taken) continue;
    const extra = await companion?.(target);
    try {
      await fsp.rename(file, target);
    } catch (e) {
      if (extra) await fsp.rm(extra, { force: true });
      throw e;
    }
    // the file keeps the mode its writer gave it: what Ferry keeps loses the bits the umask forbids
    await tighten(target, modes).catch(() => undefined);
    return target;
  }
}
