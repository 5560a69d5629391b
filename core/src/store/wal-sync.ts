import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../errors';

/**
 * The durable commits' fsync of a SQLite store's WAL, off the engine's thread.
 *
 * A `synchronous=FULL` commit in WAL mode writes its frames and then fsyncs the WAL inside
 * `COMMIT`: better-sqlite3 being synchronous, the engine's thread stops for the whole fsync (0.2 ms
 * on a quiet disk, 2-3 ms on a busy one), and nothing else runs meanwhile -- not the processing of
 * the message before it, not the sink. Instead the durable transactions commit with
 * `synchronous=NORMAL` (frames written, not synced) and then wait here for an `fdatasync` of the
 * WAL file on libuv's thread pool: the same bytes reach the disk before the caller is answered
 * (an ACK is still sent only once its message is on disk), while the thread goes on with other work.
 *
 * Commits made while a sync is in flight share the next one (at most one in flight, one queued):
 * a sync started before a commit does not cover it.
 *
 * Why this is as durable as `FULL`: in WAL mode SQLite appends a transaction's frames (ending with
 * its commit frame) to the WAL, and `NORMAL` differs from `FULL` only in not syncing the WAL at each
 * commit (the WAL header is synced on a restart either way, and checkpoints sync as before). After
 * the `fdatasync` every frame written so far is on disk, as after a `FULL` commit's own sync.
 * `fdatasync` flushes the file's data whichever descriptor wrote it. The WAL file is kept (not
 * deleted) while the database is open on any connection, and this one is open as long as the store.
 */
export class WalSync {
  private fd?: number;
  /** An fdatasync in flight. */
  private running?: Promise<void>;
  /** The one after it, shared by every commit made meanwhile. */
  private queued?: Promise<void>;
  /** fdatasyncs made (tests and the benchmark). */
  syncs = 0;

  constructor(private readonly walFile: string) {}

  /** Opens the WAL file (once it exists: after the store's first commit); false when it cannot be. */
  open(): boolean {
    if (this.fd !== undefined) return true;
    try {
      this.fd = openSync(this.walFile, 'r');
    } catch {
      return false;
    }
    // Once: the WAL file's directory entry on disk too (fdatasync covers the file, not its name).
    try {
      const d = openSync(path.dirname(this.walFile), 'r');
      try {
        fsyncSync(d);
      } finally {
        closeSync(d);
      }
    } catch {
      // some filesystems refuse fsync on a directory; SQLite made the file before the first commit
    }
    return true;
  }

  /** Resolves once no sync is running or queued (failed ones included). */
  async settled(): Promise<void> {
    while (this.running || this.queued) await (this.queued ?? this.running)!.catch(() => undefined);
  }

  close(): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  /** Resolves once every commit made before the call is on disk. */
  durable(): Promise<void> {
    if (!this.running) return (this.running = this.sync());
    if (!this.queued) {
      const after = this.running.catch(() => undefined);
      this.queued = after.then(() => {
        this.queued = undefined;
        return (this.running = this.sync());
      });
    }
    return this.queued;
  }

  private sync(): Promise<void> {
    const fd = this.fd;
    const p: Promise<void> = new Promise<void>((resolve, reject) => {
      if (fd === undefined) {
        reject(new FerryError('TRANSIENT_STORE_CLOSED', 'the SQLite store is closed', { kind: 'transient' }));
        return;
      }
      this.syncs++;
      fdatasync(fd, (e) => (e ? reject(walSyncError(e, this.walFile)) : resolve()));
    }).finally(() => {
      if (this.running === p) this.running = undefined;
    });
    return p;
  }
}

/** A failed fdatasync of the WAL: transient (the caller's messages are refused, not acknowledged). */
function walSyncError(e: NodeJS.ErrnoException, file: string): FerryError {
  const full = e.code === 'ENOSPC' || e.code === 'EDQUOT';
  return new FerryError(
    full ? 'TRANSIENT_STORE_FULL' : 'TRANSIENT_STORE_IO',
    `${full ? 'the disk is full' : `an I/O error (${e.code ?? e.message})`} syncing ${file}`,
    { kind: 'transient', retryable: true, cause: e, details: { errno: e.code } },
  );
}
