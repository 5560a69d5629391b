/**
 * Building blocks shared by the Epic and Cerner simulators (test/simulators/epic, test/simulators/cerner):
 * a node `http` server on 127.0.0.1 with a request log and fault injection, a resource store with a
 * settable clock, search paging sessions that expire, SMART backend-services JWT verification, and
 * Bulk Data jobs whose NDJSON files are generated and streamed on the fly.
 *
 * The parts are in sim-server.ts, resource-store.ts, sim-auth.ts and bulk-export.ts (re-exported
 * here); this file holds the simulator base class and the contract-suite hooks.
 *
 * Built from ../shared/docs/vendor-apis.md §0 (simulator knobs), §3 (Epic) and §4 (Cerner); each
 * vendor simulator decides status codes, URL shapes and error bodies itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createBulkJob, fileLineCount, type BulkFile, type BulkJob } from './bulk-export';
import { PagingSessions, ResourceStore, type Res } from './resource-store';
import type { IssuedToken } from './sim-auth';
import { sendJson, SimServer, type LoggedRequest } from './sim-server';

export * from './sim-server';
export * from './resource-store';
export * from './sim-auth';
export * from './bulk-export';

/**
 * The sink contract's fault hooks (runSinkContract in @ferry/testkit) on a SimServer: the next POST
 * to `path` answered 503 (retryable) or 422 (dead), or every answer held `hangMs` (a hung call);
 * `teardown` lifts the hold.
 */
export function contractFaults(server: SimServer, path: string, hangMs = 4000) {
  return {
    fault(kind: 'retryable' | 'dead' | 'hang'): void {
      if (kind === 'hang') server.latencyMs = hangMs;
      else
        server.inject({
          match: path,
          method: 'POST',
          status: kind === 'retryable' ? 503 : 422,
          times: 1,
          body: {
            resourceType: 'OperationOutcome',
            issue: [{ severity: 'error', code: kind === 'retryable' ? 'transient' : 'invalid' }],
          },
        });
    },
    async teardown(): Promise<void> {
      server.latencyMs = 0;
    },
  };
}

/** How many resources of `type` carry `marker` in an identifier (the sink contract's `received`). */
export const heldWith = (store: ResourceStore, type: string, marker: string): number =>
  store.all(type).filter((r) => JSON.stringify(r.identifier ?? []).includes(marker)).length;

/**
 * What the Epic and Cerner simulators share: the HTTP server (faults, latency, clock, request
 * log), the resource store, paging sessions, registered clients, issued tokens, seen JWT ids,
 * Groups, bulk jobs and synthetic volumes. A vendor subclass answers requests in `handle`.
 */
export abstract class FhirVendorSimulator<Client extends { clientId: string }> {
  readonly server: SimServer;
  readonly store: ResourceStore;
  readonly sessions: PagingSessions;
  readonly clients = new Map<string, Client>();
  readonly tokens = new Map<string, IssuedToken>();
  readonly seenJti = new Map<string, number>();
  readonly groups = new Map<string, string[]>();
  readonly jobs = new Map<string, BulkJob>();
  /** Synthetic resources added to Group exports without `_since` (volume tests). */
  readonly synthetic: Record<string, { count: number; make: (i: number) => Res }> = {};

  constructor(opts: { latencyMs?: number; now?: () => number; pagingTtlMs?: number; clients?: Client[] }) {
    this.server = new SimServer((req, res, url, body, log) => this.handle(req, res, url, body, log), {
      latencyMs: opts.latencyMs,
      now: opts.now,
    });
    this.store = new ResourceStore(() => this.server.now());
    this.sessions = new PagingSessions(() => this.server.now(), opts.pagingTtlMs ?? 10 * 60_000);
    for (const c of opts.clients ?? []) this.clients.set(c.clientId, c);
  }

  protected abstract handle(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    body: Buffer,
    log: LoggedRequest,
  ): Promise<void>;

  get requests(): LoggedRequest[] {
    return this.server.requests;
  }

  /** Start an export job over `members` and answer 202 with its status URL. */
  protected kickOff(
    res: ServerResponse,
    url: URL,
    token: IssuedToken,
    k: {
      types: string[];
      since?: string;
      members: string[];
      maxLinesPerFile: number;
      pollsUntilDone: number;
      statusUrl: (jobId: string) => string;
    },
  ): void {
    const job = createBulkJob({
      clientId: token.clientId,
      request: url.toString(),
      types: k.types,
      since: k.since,
      patients: new Set(k.members),
      maxLinesPerFile: k.maxLinesPerFile,
      pollsUntilDone: k.pollsUntilDone,
      synthetic: this.synthetic,
      store: this.store,
      now: this.server.now(),
    });
    this.jobs.set(job.id, job);
    res.writeHead(202, { 'content-location': k.statusUrl(job.id), 'content-length': '0' }).end();
  }

  /** A status poll: 202 with Retry-After and progress while the job runs (polls sooner than asked are counted), then the manifest. */
  protected jobStatus(
    res: ServerResponse,
    job: BulkJob,
    k: {
      retryAfterSec: number;
      progress: (job: BulkJob) => string;
      fileUrl: (f: BulkFile) => string;
      headers?: Record<string, string>;
    },
  ): void {
    const now = this.server.now();
    if (job.lastPollAt !== undefined && now - job.lastPollAt < k.retryAfterSec * 1000 - 50) job.earlyPolls++;
    job.lastPollAt = now;
    job.polls++;
    if (job.pollsLeft > 0) {
      job.pollsLeft--;
      res
        .writeHead(202, {
          'x-progress': k.progress(job),
          'retry-after': String(k.retryAfterSec),
          'content-length': '0',
        })
        .end();
      return;
    }
    sendJson(
      res,
      200,
      {
        transactionTime: job.transactionTime,
        request: job.request,
        requiresAccessToken: true,
        output: job.files.map((f) => ({ type: f.type, url: k.fileUrl(f), count: fileLineCount(f) })),
        error: [],
      },
      k.headers ?? {},
      'application/json',
    );
  }

  start(): Promise<void> {
    return this.server.start();
  }
  stop(): Promise<void> {
    return this.server.stop();
  }
}
