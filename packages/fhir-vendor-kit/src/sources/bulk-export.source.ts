/**
 * {@link BulkExportSource}, shared by the Epic and Cerner plugins: FHIR Bulk Data `$export` (Group,
 * Patient or system level) with `_since` = the `transactionTime` of the last successful export. The
 * job (status URL, manifest, file index, lines done) is a checkpoint committed WITH each batch of
 * messages, so a killed engine resumes the same job where it stopped: nothing lost, nothing stored twice.
 *
 * Each vendor resource becomes one message (`application/vnd.<vendor>.fhir+json`, the resource as
 * JSON), normalised later by the vendor's transform.
 */
import {
  defineSchema,
  errorFields,
  FerryError,
  type InboundMessage,
  type SchemaType,
  type SourceContext,
} from '@ferry/core';
import { BulkExportClient, type ExportManifest } from '../bulk-client';
import { connectionSchema } from '../connection';
import type { VendorProfile } from '../normalize';
import { LoopSource, resourceMessage } from './vendor-source';
import type { VendorConnections } from '../vendor-connections';

export function bulkSourceSchema(
  defaults: Parameters<typeof connectionSchema>[0],
  levels: string[] = ['group', 'patient', 'system'],
) {
  return defineSchema({
    ...connectionSchema(defaults),
    bulk: {
      level: { doc: 'Export level', format: levels, default: 'group' },
      groupId: { doc: 'Group id (level group)', format: String, default: '' },
      types: { doc: '_type: resource types to export ([] = server default)', format: Array, default: [] as string[] },
      typeFilter: { doc: '_typeFilter entries', format: Array, default: [] as string[] },
      intervalMs: {
        doc: 'Start a new (incremental, _since) export this long after the last finished; 0 = once',
        format: 'nat',
        default: 24 * 3600_000,
      },
      pollMinMs: { doc: 'Shortest wait between status polls', format: 'nat', default: 1000 },
      pollMaxMs: {
        doc: 'Longest wait between status polls (Retry-After is clamped to it)',
        format: 'nat',
        default: 600_000,
      },
      batchSize: { doc: 'Resources stored per transaction', format: 'nat', default: 500 },
      deleteWhenDone: { doc: 'DELETE the job once every file is stored', format: Boolean, default: true },
    },
  });
}

export type BulkSourceConfig = Omit<SchemaType<ReturnType<typeof bulkSourceSchema>>, 'bulk'> & {
  bulk: SchemaType<ReturnType<typeof bulkSourceSchema>>['bulk'] & { level: 'group' | 'patient' | 'system' };
};

interface BulkJobCheckpoint {
  statusUrl: string;
  since?: string;
  manifest?: Pick<ExportManifest, 'transactionTime' | 'requiresAccessToken' | 'output'>;
  /** Index of the file being read, and lines of it already stored. */
  file: number;
  line: number;
}

/** Bulk Data export (see the module comment). */
export class BulkExportSource extends LoopSource<BulkSourceConfig> {
  readonly bulk: BulkExportClient;
  static readonly JOB = 'bulk:job';
  static readonly SINCE = 'bulk:since';

  constructor(ctx: SourceContext<BulkSourceConfig>, profile: VendorProfile, shared?: VendorConnections) {
    super(ctx, profile, shared);
    const b = ctx.config.bulk;
    this.bulk = new BulkExportClient(this.conn, {
      pollMinMs: b.pollMinMs,
      pollMaxMs: b.pollMaxMs,
      batchSize: b.batchSize,
    });
  }

  protected intervalMs(): number {
    return this.ctx.config.bulk.intervalMs;
  }

  private async saveJob(job: BulkJobCheckpoint | undefined): Promise<void> {
    await this.ctx.setCheckpoint(BulkExportSource.JOB, job ? JSON.stringify(job) : '');
  }

  /** Run (or resume) one export to the end; returns the number of resources stored. */
  async cycle(): Promise<number> {
    const b = this.ctx.config.bulk;
    const release = this.bulk.acquireSlot();
    try {
      const raw = await this.ctx.getCheckpoint(BulkExportSource.JOB);
      let job: BulkJobCheckpoint | undefined = raw ? JSON.parse(raw) : undefined;
      if (job)
        this.ctx.logger.info(`${this.profile.vendor} bulk export resuming`, {
          source: this.ctx.id,
          file: job.file,
          line: job.line,
          haveManifest: !!job.manifest,
        });
      if (!job) {
        const since = (await this.ctx.getCheckpoint(BulkExportSource.SINCE)) || undefined;
        const statusUrl = await this.bulk.kickoff(
          { level: b.level, groupId: b.groupId, types: b.types, typeFilter: b.typeFilter, since },
          this.signal,
        );
        job = { statusUrl, since, file: 0, line: 0 };
        await this.saveJob(job);
        this.ctx.logger.info(`${this.profile.vendor} bulk export started`, {
          source: this.ctx.id,
          since: since ?? null,
          level: b.level,
        });
      }
      if (!job.manifest) {
        let manifest: ExportManifest;
        try {
          manifest = await this.bulk.waitForManifest(job.statusUrl, {
            signal: this.signal,
            onProgress: (p) =>
              this.ctx.logger.debug('bulk export in progress', {
                source: this.ctx.id,
                progress: p.progress,
                polls: p.polls,
                waitMs: p.waitMs,
              }),
          });
        } catch (e) {
          if (FerryError.is(e) && e.details?.status === 404) {
            // The job is gone (expired / deleted): start over next cycle with the same _since.
            await this.saveJob(undefined);
          }
          throw e;
        }
        job.manifest = {
          transactionTime: manifest.transactionTime,
          requiresAccessToken: manifest.requiresAccessToken,
          output: manifest.output.map((o) => ({ type: o.type, url: o.url, count: o.count })),
        };
        await this.saveJob(job);
        this.ctx.logger.info(`${this.profile.vendor} bulk export ready`, {
          source: this.ctx.id,
          files: manifest.output.length,
          errorFiles: manifest.error.length,
        });
        if (manifest.error.length) await this.logErrorFiles(manifest);
      }
      let stored = 0;
      let badLines = 0;
      const m = job.manifest;
      while (job.file < m.output.length) {
        const out = m.output[job.file];
        try {
          for await (const lines of this.bulk.lines(out.url, {
            requiresAccessToken: m.requiresAccessToken,
            skip: job.line,
            signal: this.signal,
          })) {
            const messages: InboundMessage[] = [];
            for (const l of lines) {
              try {
                messages.push(resourceMessage(l, this.profile, this.facility));
              } catch {
                badLines++;
              }
            }
            const next: BulkJobCheckpoint = { ...job, line: job.line + lines.length };
            const checkpoint = { sourceId: this.ctx.id, key: BulkExportSource.JOB, value: JSON.stringify(next) };
            if (messages.length) await this.ctx.submit(messages, { checkpoint });
            else await this.ctx.setCheckpoint(BulkExportSource.JOB, checkpoint.value);
            job = next;
            stored += messages.length;
          }
        } catch (e) {
          if (FerryError.is(e) && [404, 410].includes(e.details?.status as number)) {
            // The files expired before we finished: export again from the same _since next cycle
            // (what was already stored comes again; the source's duplicate policy drops it).
            this.ctx.logger.warn(
              `${this.profile.vendor} bulk export files expired before the download finished; restarting the export`,
              { source: this.ctx.id, file: job.file },
            );
            await this.saveJob(undefined);
          }
          throw e;
        }
        job = { ...job, file: job.file + 1, line: 0 };
        await this.saveJob(job);
      }
      await this.ctx.setCheckpoint(BulkExportSource.SINCE, m.transactionTime);
      await this.saveJob(undefined);
      if (b.deleteWhenDone) await this.bulk.deleteJob(job.statusUrl);
      this.ctx.logger.info(`${this.profile.vendor} bulk export finished`, {
        source: this.ctx.id,
        stored,
        badLines,
        transactionTime: m.transactionTime,
      });
      return stored;
    } finally {
      release();
    }
  }

  private async logErrorFiles(manifest: ExportManifest): Promise<void> {
    for (const f of manifest.error) {
      let issues = 0;
      try {
        for await (const lines of this.bulk.lines(f.url, {
          requiresAccessToken: manifest.requiresAccessToken,
          signal: this.signal,
        }))
          issues += lines.length;
      } catch (e) {
        this.ctx.logger.warn('bulk export error file unreadable', { source: this.ctx.id, ...errorFields(e) });
      }
      this.ctx.logger.warn('bulk export reported errors', { source: this.ctx.id, operationOutcomes: issues });
    }
  }
}
