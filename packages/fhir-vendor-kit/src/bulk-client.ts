/**
 * FHIR Bulk Data `$export` client (Epic and Cerner): kick-off with `Prefer: respond-async`, status
 * polling that honours `Retry-After` and reports `X-Progress`, the manifest, NDJSON downloads
 * streamed line by line with bounded memory (one chunk in flight, batches of `batchSize` lines), a
 * redirect to pre-signed storage followed WITHOUT the Authorization header (Cerner 307 to S3), resume
 * inside a file after a dropped connection by skipping lines already handed out, DELETE of the job.
 * One export in flight per client and tenant (a second kick-off would get 429 from Cerner).
 */
import { abortableSleep, backoffDelay, FerryError, parseRetryAfter } from '@ferry/core';
import { randomUUID } from 'node:crypto';
import type { VendorConnection } from './connection';
import { refineVendorError } from './fhir-client';

export interface ExportRequest {
  /** 'group' (`Group/{id}/$export`), 'patient' (`Patient/$export`) or 'system' (`$export`). */
  level: 'group' | 'patient' | 'system';
  groupId?: string;
  types?: string[];
  since?: string;
  typeFilter?: string[];
  /** Extra kick-off parameters (`includeAssociatedData`, ...). */
  params?: Record<string, string>;
}

export interface ExportManifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: { type: string; url: string; count?: number }[];
  error: { type: string; url: string }[];
}

export interface BulkClientOptions {
  /** Shortest wait between status polls (also used when there is no Retry-After). */
  pollMinMs?: number;
  /** Longest wait between status polls (a longer Retry-After is clamped to this). */
  pollMaxMs?: number;
  /** Give up on a job after this long. */
  jobTimeoutMs?: number;
  /** Lines per yielded batch. */
  batchSize?: number;
  /** Attempts per file download (resumed where it stopped). */
  downloadAttempts?: number;
}

export class BulkExportClient {
  readonly pollMinMs: number;
  readonly pollMaxMs: number;
  readonly jobTimeoutMs: number;
  readonly batchSize: number;
  readonly downloadAttempts: number;

  constructor(
    readonly conn: VendorConnection,
    opts: BulkClientOptions = {},
  ) {
    this.pollMinMs = opts.pollMinMs ?? 1000;
    this.pollMaxMs = opts.pollMaxMs ?? 600_000;
    this.jobTimeoutMs = opts.jobTimeoutMs ?? 24 * 3600_000;
    this.batchSize = opts.batchSize ?? 500;
    this.downloadAttempts = opts.downloadAttempts ?? 4;
  }

  /** Claim the per-client+tenant export slot (throws a retryable error when another export runs). */
  acquireSlot(): () => void {
    if (this.conn.shared.activeExports.has(this.conn.clientKey))
      throw new FerryError(
        'VENDOR_EXPORT_BUSY',
        `${this.conn.vendor}: another bulk export is in progress for this client and tenant`,
        { kind: 'transient', retryable: true },
      );
    this.conn.shared.activeExports.add(this.conn.clientKey);
    return () => this.conn.shared.activeExports.delete(this.conn.clientKey);
  }

  /** Kick off an export; returns the status URL (Content-Location). */
  async kickoff(req: ExportRequest, signal?: AbortSignal): Promise<string> {
    const path =
      req.level === 'group'
        ? `Group/${encodeURIComponent(req.groupId ?? '')}/$export`
        : req.level === 'patient'
          ? 'Patient/$export'
          : '$export';
    if (req.level === 'group' && !req.groupId)
      throw new FerryError('CONFIG_BULK_GROUP', `${this.conn.vendor}: a Group export needs groupId`, {
        kind: 'config',
        retryable: false,
      });
    const query: Record<string, string> = { ...(req.params ?? {}) };
    if (req.types?.length) query._type = req.types.join(',');
    if (req.since) query._since = req.since;
    if (req.typeFilter?.length) query._typeFilter = req.typeFilter.join(',');
    try {
      const res = await this.conn.http.request({
        method: 'GET',
        url: path,
        query,
        signal,
        headers: { Accept: 'application/fhir+json', Prefer: 'respond-async' },
      });
      const loc = res.headers.get('content-location');
      if (res.status !== 202 || !loc)
        throw new FerryError(
          'VENDOR_BAD_RESPONSE',
          `${this.conn.vendor} $export kick-off answered ${res.status} without Content-Location`,
          { kind: 'input', retryable: false, details: { status: res.status } },
        );
      return new URL(loc, this.conn.baseUrl + '/').toString();
    } catch (e) {
      throw refineVendorError(e);
    }
  }

  /** Poll once: the manifest when done, else the wait the server asked for and its progress text. */
  async status(
    statusUrl: string,
    signal?: AbortSignal,
  ): Promise<{ done: true; manifest: ExportManifest } | { done: false; retryAfterMs?: number; progress?: string }> {
    try {
      const res = await this.conn.http.request({
        method: 'GET',
        url: statusUrl,
        signal,
        headers: { Accept: 'application/json' },
      });
      if (res.status === 202)
        return {
          done: false,
          retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
          progress: res.headers.get('x-progress') ?? undefined,
        };
      const m = res.json<ExportManifest>();
      if (!m || !Array.isArray(m.output) || !m.transactionTime)
        throw new FerryError(
          'VENDOR_BAD_RESPONSE',
          `${this.conn.vendor} export manifest lacks output/transactionTime`,
          { kind: 'input', retryable: false },
        );
      return {
        done: true,
        manifest: { ...m, error: m.error ?? [], requiresAccessToken: m.requiresAccessToken !== false },
      };
    } catch (e) {
      throw refineVendorError(e);
    }
  }

  /** Poll until the manifest is ready, waiting what `Retry-After` says (clamped to [pollMinMs, pollMaxMs]). */
  async waitForManifest(
    statusUrl: string,
    opts: { signal?: AbortSignal; onProgress?: (p: { progress?: string; polls: number; waitMs: number }) => void } = {},
  ): Promise<ExportManifest> {
    const started = Date.now();
    for (let polls = 1; ; polls++) {
      const s = await this.status(statusUrl, opts.signal);
      if (s.done) return s.manifest;
      const fallback = backoffDelay(polls, {
        initialDelayMs: this.pollMinMs,
        maxDelayMs: this.pollMaxMs,
        multiplier: 1.5,
        jitter: 0.1,
      });
      const waitMs = Math.min(this.pollMaxMs, Math.max(this.pollMinMs, s.retryAfterMs ?? fallback));
      opts.onProgress?.({ progress: s.progress, polls, waitMs });
      if (Date.now() + waitMs - started > this.jobTimeoutMs)
        throw new FerryError(
          'VENDOR_EXPORT_TIMEOUT',
          `${this.conn.vendor} export did not complete within ${this.jobTimeoutMs} ms`,
          { kind: 'transient', retryable: true },
        );
      await abortableSleep(waitMs, opts.signal);
    }
  }

  /** DELETE the job (tells the server the files can go); failures are logged, not thrown. */
  async deleteJob(statusUrl: string): Promise<void> {
    try {
      await this.conn.http.request({ method: 'DELETE', url: statusUrl, idempotent: true, accept: [404] });
    } catch (e) {
      this.conn.logger?.warn('bulk export job delete failed', {
        vendor: this.conn.vendor,
        errorCode: (e as FerryError).code,
      });
    }
  }

  /**
   * Stream one NDJSON file as batches of lines, starting after `skip` lines. Memory stays bounded:
   * the body is read chunk by chunk and only the current batch is held. A dropped connection is
   * resumed by downloading again and skipping the lines already yielded.
   */
  async *lines(
    url: string,
    opts: { requiresAccessToken: boolean; skip?: number; signal?: AbortSignal },
  ): AsyncGenerator<string[]> {
    let delivered = opts.skip ?? 0;
    for (let attempt = 1; ; attempt++) {
      let toSkip = delivered;
      try {
        const body = await this.open(url, opts.requiresAccessToken, opts.signal);
        const decoder = new TextDecoder('utf-8');
        let rest = '';
        let batch: string[] = [];
        const reader = body.getReader();
        try {
          for (;;) {
            const { value, done } = await reader.read();
            const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
            const parts = (rest + text).split('\n');
            rest = done ? '' : parts.pop()!;
            for (const p of parts) {
              const line = p.trim();
              if (!line) continue;
              if (toSkip > 0) {
                toSkip--;
                continue;
              }
              batch.push(line);
              if (batch.length >= this.batchSize) {
                const out = batch;
                batch = [];
                yield out;
                delivered += out.length;
              }
            }
            if (done) break;
          }
        } finally {
          reader.releaseLock();
          await body.cancel().catch(() => undefined);
        }
        if (batch.length) {
          yield batch;
          delivered += batch.length;
        }
        return;
      } catch (e) {
        if (opts.signal?.aborted) throw e;
        const fe = FerryError.is(e)
          ? e
          : new FerryError('VENDOR_NETWORK', `${this.conn.vendor} bulk file download failed: ${(e as Error).message}`, {
              kind: 'transient',
              retryable: true,
              cause: e,
            });
        if (!fe.retryable || attempt >= this.downloadAttempts) throw fe;
        this.conn.logger?.warn('bulk file download interrupted, resuming', {
          vendor: this.conn.vendor,
          attempt,
          linesDone: delivered,
          errorCode: fe.code,
        });
        await abortableSleep(
          backoffDelay(attempt, { initialDelayMs: 200, maxDelayMs: 10_000, multiplier: 2, jitter: 0.2 }),
          opts.signal,
        );
      }
    }
  }

  /** GET a file: bearer token when required, redirects followed by hand and never with Authorization. */
  private async open(
    url: string,
    requiresAccessToken: boolean,
    signal?: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>> {
    let target = url;
    let withAuth = requiresAccessToken;
    let replayed = false;
    for (let hops = 0; hops < 5;) {
      const headers: Record<string, string> = { Accept: 'application/fhir+ndjson', 'X-Request-Id': randomUUID() };
      let token: string | undefined;
      if (withAuth) headers.Authorization = `Bearer ${(token = await this.conn.accessToken(signal))}`;
      const res = await fetch(target, { headers, redirect: 'manual', signal });
      if ([301, 302, 303, 307, 308].includes(res.status)) {
        const loc = res.headers.get('location');
        await res.body?.cancel();
        if (!loc)
          throw new FerryError('VENDOR_BAD_RESPONSE', `${this.conn.vendor} bulk file redirect without Location`, {
            kind: 'input',
            retryable: false,
          });
        target = new URL(loc, target).toString();
        // Pre-signed storage URLs carry their own signature: forwarding the bearer token is refused
        // (and would leak it), so it is dropped on every redirect.
        withAuth = false;
        hops++;
        continue;
      }
      if (res.status === 401 && token && !replayed) {
        await res.body?.cancel();
        this.conn.invalidateToken(token);
        replayed = true;
        continue;
      }
      if (res.status < 200 || res.status >= 300 || !res.body) {
        const text = await res.text().catch(() => '');
        const retryable = res.status === 429 || res.status >= 500;
        throw refineVendorError(
          new FerryError(
            retryable ? 'VENDOR_UNAVAILABLE' : 'VENDOR_REJECTED',
            `${this.conn.vendor} bulk file GET answered HTTP ${res.status}`,
            {
              kind: retryable ? 'transient' : 'input',
              retryable,
              details: { vendor: this.conn.vendor, status: res.status, body: text.slice(0, 2000) },
            },
          ),
        );
      }
      return res.body as ReadableStream<Uint8Array>;
    }
    throw new FerryError('VENDOR_BAD_RESPONSE', `${this.conn.vendor} bulk file: too many redirects`, {
      kind: 'input',
      retryable: false,
    });
  }
}
