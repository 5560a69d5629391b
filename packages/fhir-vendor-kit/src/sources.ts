/**
 * Sources shared by the Epic and Cerner plugins:
 *
 * - {@link FhirPollSource}: incremental polling per resource type (and Observation category), by
 *   `_lastUpdated=ge<checkpoint>`, one search per patient for patient-compartment types. The
 *   checkpoint (`poll:<Type>[:<category>]` = newest `meta.lastUpdated` seen + the ids seen at that
 *   instant) is committed in the same store transaction as the last page's messages; a crash before
 *   that re-reads from the old checkpoint (re-read resources are the same `controlId`, which the
 *   source's duplicate policy catches).
 * - {@link BulkExportSource}: FHIR Bulk Data `$export` (Group, Patient or system level) with
 *   `_since` = the `transactionTime` of the last successful export. The job (status URL, manifest,
 *   file index, lines done) is a checkpoint committed WITH each batch of messages, so a killed engine
 *   resumes the same job where it stopped: nothing lost, nothing stored twice.
 *
 * Each vendor resource becomes one message (`application/vnd.<vendor>.fhir+json`, the resource as
 * JSON), normalised later by the vendor's transform.
 */
import { defineSchema, errorFields, FerryError, type InboundMessage, type SchemaType, type SourceContext } from '@ferry/core';
import type { Resource } from '@medplum/fhirtypes';
import { BulkExportClient, type ExportManifest } from './bulk-client';
import { connectionSchema, VendorConnection, type ConnectionConfig } from './connection';
import { FhirClient } from './fhir-client';
import { canonicalId, vendorHeaders, type VendorProfile } from './normalize';
import { PollingSource, retryBackoffMs, type PassFailure } from './poller';

export interface PollResourceSpec {
  type: string;
  /** Observation / Condition / DiagnosticReport category (Epic requires one for Observation). */
  category?: string;
  /** Extra search parameters (e.g. Epic Appointment `service-category`). */
  params?: Record<string, string>;
}



/** Convict format (a function) of `resources`. */
function resourcesFormat(v: unknown): void {
  {
    if (!Array.isArray(v)) throw new Error('must be a list of { type, category?, params? }');
    v.forEach((x, i) => {
      if (!x || typeof x !== 'object' || typeof (x as PollResourceSpec).type !== 'string' || !/^[A-Z][A-Za-z]+$/.test((x as PollResourceSpec).type))
        throw new Error(`[${i}] needs a FHIR resource type, e.g. { type: Observation, category: vital-signs }`);
      const extra = Object.keys(x).filter((k) => !['type', 'category', 'params'].includes(k));
      if (extra.length) throw new Error(`[${i}] unknown key(s) ${extra.join(', ')}`);
    });
  }
}

export function pollSourceSchema(defaults: Parameters<typeof connectionSchema>[0]) {
  return defineSchema({
    ...connectionSchema(defaults),
    intervalMs: { doc: 'Wait between polls', format: 'nat', default: 60_000 },
    patients: { doc: 'Vendor patient ids whose compartment is polled', format: Array, default: [] as string[] },
    resources: { doc: 'Resource types to poll: [{ type, category?, params? }]', format: resourcesFormat, default: [{ type: 'Patient' }] as PollResourceSpec[] },
    pageSize: { doc: '_count per page (Cerner caps at 200)', format: 'nat', default: 100 },
    initialSince: { doc: "First poll reads changes since this instant ('' = everything)", format: String, default: '' },
  });
}

export function bulkSourceSchema(defaults: Parameters<typeof connectionSchema>[0], levels: string[] = ['group', 'patient', 'system']) {
  return defineSchema({
    ...connectionSchema(defaults),
    bulk: {
      level: { doc: 'Export level', format: levels, default: 'group' },
      groupId: { doc: 'Group id (level group)', format: String, default: '' },
      types: { doc: '_type: resource types to export ([] = server default)', format: Array, default: [] as string[] },
      typeFilter: { doc: '_typeFilter entries', format: Array, default: [] as string[] },
      intervalMs: { doc: 'Start a new (incremental, _since) export this long after the last finished; 0 = once', format: 'nat', default: 24 * 3600_000 },
      pollMinMs: { doc: 'Shortest wait between status polls', format: 'nat', default: 1000 },
      pollMaxMs: { doc: 'Longest wait between status polls (Retry-After is clamped to it)', format: 'nat', default: 600_000 },
      batchSize: { doc: 'Resources stored per transaction', format: 'nat', default: 500 },
      deleteWhenDone: { doc: 'DELETE the job once every file is stored', format: Boolean, default: true },
    },
  });
}

export type PollSourceConfig = SchemaType<ReturnType<typeof pollSourceSchema>>;
export type BulkSourceConfig = Omit<SchemaType<ReturnType<typeof bulkSourceSchema>>, 'bulk'> & {
  bulk: SchemaType<ReturnType<typeof bulkSourceSchema>>['bulk'] & { level: 'group' | 'patient' | 'system' };
};

/** A vendor resource as an inbound message. */
export function resourceMessage(raw: string | Resource, profile: VendorProfile, facility: string): InboundMessage {
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
  const parsed = typeof raw === 'string' ? JSON.parse(raw) : raw;
  return { contentType: profile.contentType, body: Buffer.from(text, 'utf8'), headers: vendorHeaders(parsed, profile, facility) };
}

/** The Epic/Cerner sources: a {@link PollingSource} over a {@link VendorConnection} and a vendor profile. */
abstract class LoopSource<C extends ConnectionConfig> extends PollingSource<C> {
  protected readonly conn: VendorConnection;
  protected readonly profile: VendorProfile;

  constructor(ctx: SourceContext<C>, profile: VendorProfile) {
    super(ctx, `${profile.vendor} source cycle failed`);
    this.profile = ctx.config.idPrefix ? { ...profile, idPrefix: ctx.config.idPrefix } : profile;
    this.conn = new VendorConnection(profile.vendor, ctx.config as C, ctx.logger);
  }

  protected get facility(): string {
    return this.conn.baseUrl;
  }

  /** Ready while no cycle is failing (any failure, not only configuration: the vendor is the source). */
  override isReady(): boolean {
    return !this.signal.aborted && !this.lastError;
  }

  pollOnce(): Promise<number> {
    return this.cycle();
  }

  protected abstract cycle(): Promise<number>;
  protected abstract intervalMs(): number;

  protected nextWaitMs(failure?: PassFailure): number {
    return failure ? retryBackoffMs(this.intervalMs(), failure) : this.intervalMs();
  }
}

interface PollCheckpoint {
  since: string;
  /** Ids seen with meta.lastUpdated == since (the next `ge` search returns them again). */
  ids: string[];
}

/** Incremental FHIR polling (see the module comment). */
export class FhirPollSource extends LoopSource<PollSourceConfig> {
  protected readonly fhir: FhirClient;

  /**
   * @param checkSpec the vendor's required search shapes: a message for a resource spec the vendor
   *   would refuse (checked at startup, so a bad config fails once and clearly, not every poll).
   */
  constructor(ctx: SourceContext<PollSourceConfig>, profile: VendorProfile, checkSpec?: (spec: PollResourceSpec) => string | undefined) {
    super(ctx, profile);
    this.fhir = new FhirClient(this.conn);
    const problems = ctx.config.resources.map((spec, i) => [i, checkSpec?.(spec)] as const).filter(([, m]) => m);
    if (problems.length)
      throw new FerryError('CONFIG_POLL_RESOURCES', problems.map(([i, m]) => `sources.${ctx.id}.resources[${i}]: ${m}`).join('; '), { kind: 'config', retryable: false });
  }

  protected intervalMs(): number {
    return this.ctx.config.intervalMs;
  }

  static checkpointKey(spec: PollResourceSpec): string {
    const params = Object.entries(spec.params ?? {})
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    return `poll:${spec.type}${spec.category ? `:${spec.category}` : ''}${params ? `?${params}` : ''}`;
  }

  /** Each resource spec's state (`Type` or `Type:category`): for /metrics and the admin API, no PHI. */
  private readonly specStates = new Map<string, { spec: string; state: 'ok' | 'failing' | 'pending'; consecutiveFailures: number; lastStored: number; lastSuccessAt?: string; lastErrorCode?: string; lastErrorAt?: string }>();

  private specState(spec: PollResourceSpec) {
    const name = spec.category ? `${spec.type}:${spec.category}` : spec.type;
    let st = this.specStates.get(name);
    if (!st) this.specStates.set(name, (st = { spec: name, state: 'pending', consecutiveFailures: 0, lastStored: 0 }));
    return st;
  }

  /** The admin API's view (`GET /api/sources`): each resource spec's state. */
  describe(): { resourceTypes: object[] } {
    return { resourceTypes: this.ctx.config.resources.map((s) => ({ ...this.specState(s) })) };
  }

  /** /metrics `ferry_source_stat`: per spec `<spec>.up` (1 ok, 0 failing), failures in a row, last stored. */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.ctx.config.resources.map((x) => this.specState(x))) {
      out[`${s.spec}.up`] = s.state === 'failing' ? 0 : 1;
      out[`${s.spec}.consecutiveFailures`] = s.consecutiveFailures;
      out[`${s.spec}.lastStored`] = s.lastStored;
    }
    return out;
  }

  /**
   * A Patient a delivery needs that Ferry never stored (`Patient/<prefix>-<vendor id>`, an Observation's
   * subject): read from the vendor (`GET Patient/<id>`) as the raw message a poll would submit. Not this
   * tenant's prefix, a hashed id, or the vendor does not have it (a non-retryable answer): undefined.
   */
  async fetchReference(reference: string, signal?: AbortSignal): Promise<InboundMessage | undefined> {
    const m = /^Patient\/(.+)$/.exec(reference);
    const prefix = `${this.profile.idPrefix}-`;
    if (!m || !m[1].startsWith(prefix)) return undefined;
    const id = m[1].slice(prefix.length);
    if (canonicalId(this.profile.idPrefix, id) !== m[1]) return undefined;
    try {
      const { resource } = await this.fhir.read('Patient', id, signal ?? this.signal);
      return resource?.resourceType === 'Patient' ? resourceMessage(resource, this.profile, this.facility) : undefined;
    } catch (e) {
      if (FerryError.is(e) && e.retryable === false) return undefined;
      throw e;
    }
  }

  /** One pass over every configured resource type; returns the number of messages stored. */
  async cycle(): Promise<number> {
    let total = 0;
    let firstError: unknown;
    const failed: string[] = [];
    for (const spec of this.ctx.config.resources) {
      if (this.signal.aborted) break;
      // One failing resource type (a missing scope, a 4xx) does not hold the others back.
      const st = this.specState(spec);
      try {
        st.lastStored = await this.pollSpec(spec);
        total += st.lastStored;
        st.state = 'ok';
        st.consecutiveFailures = 0;
        st.lastSuccessAt = new Date().toISOString();
      } catch (e) {
        if (this.signal.aborted) throw e;
        st.state = 'failing';
        st.consecutiveFailures++;
        st.lastErrorCode = FerryError.from(e).code;
        st.lastErrorAt = new Date().toISOString();
        failed.push(spec.category ? `${spec.type}:${spec.category}` : spec.type);
        firstError ??= e;
        // Each at debug: the cycle's failure (which names them) is what the loop logs, once per run of failures.
        this.ctx.logger.debug(`${this.profile.vendor} poll of a resource type failed`, { source: this.ctx.id, resourceType: spec.type, category: spec.category, ...errorFields(e) });
      }
    }
    if (firstError) {
      if (failed.length === this.ctx.config.resources.length) throw firstError;
      const fe = FerryError.from(firstError);
      throw new FerryError(fe.code, `${failed.length} of ${this.ctx.config.resources.length} resource types failed to poll (${failed.join(', ')}); first: ${fe.message}`, {
        kind: fe.kind,
        retryable: fe.retryable,
        cause: fe,
        details: { stored: total, failedTypes: failed },
      });
    }
    return total;
  }

  private queries(spec: PollResourceSpec, since: string | undefined): Record<string, string | string[]>[] {
    const base: Record<string, string | string[]> = { ...(spec.params ?? {}), _count: String(this.ctx.config.pageSize) };
    if (spec.category) base.category = spec.category;
    // `date` and `_lastUpdated` may not be combined (Epic 4112, Cerner 400): a spec with its own
    // date window is re-read whole each poll, unchanged resources dropped as duplicates.
    if (since && !spec.params?.date) base._lastUpdated = `ge${since}`;
    const patients = this.ctx.config.patients;
    if (spec.type === 'Patient') {
      const out: Record<string, string | string[]>[] = [];
      for (let i = 0; i < patients.length; i += 50) out.push({ ...base, _id: patients.slice(i, i + 50).join(',') });
      return out;
    }
    return patients.map((p) => ({ ...base, patient: p }));
  }

  private async pollSpec(spec: PollResourceSpec): Promise<number> {
    const key = FhirPollSource.checkpointKey(spec);
    const raw = await this.ctx.getCheckpoint(key);
    const cp: PollCheckpoint | undefined = raw ? JSON.parse(raw) : this.ctx.config.initialSince ? { since: this.ctx.config.initialSince, ids: [] } : undefined;
    const skip = new Set(cp?.ids ?? []);
    const sinceMs = cp?.since ? Date.parse(cp.since) : -Infinity;
    let newest = cp?.since ?? '';
    let newestIds = new Set(cp?.ids ?? []);
    let pending: InboundMessage[] = [];
    let stored = 0;
    const flush = async (withCheckpoint: boolean) => {
      const checkpoint = withCheckpoint ? { sourceId: this.ctx.id, key, value: JSON.stringify({ since: newest, ids: [...newestIds] } satisfies PollCheckpoint) } : undefined;
      if (pending.length) {
        await this.ctx.submit(pending, checkpoint ? { checkpoint } : undefined);
        stored += pending.length;
      } else if (checkpoint && newest) await this.ctx.setCheckpoint(key, checkpoint.value);
      pending = [];
    };
    for (const q of this.queries(spec, cp?.since)) {
      for await (const page of this.fhir.search(spec.type, q, { signal: this.signal })) {
        for (const r of page.resources) {
          const lu = r.meta?.lastUpdated ?? '';
          const luMs = lu ? Date.parse(lu) : NaN;
          const rid = `${r.resourceType}/${r.id}`;
          if (cp && !Number.isNaN(luMs)) {
            // Servers may ignore _lastUpdated silently (Epic 4122): filter here too.
            if (luMs < sinceMs) continue;
            if (luMs === sinceMs && skip.has(rid)) continue;
          }
          if (!Number.isNaN(luMs)) {
            const newestMs = newest ? Date.parse(newest) : -Infinity;
            if (luMs > newestMs) {
              newest = lu;
              newestIds = new Set([rid]);
            } else if (luMs === newestMs) newestIds.add(rid);
          }
          pending.push(resourceMessage(r, this.profile, this.facility));
        }
        if (pending.length >= 500) await flush(false);
      }
    }
    await flush(true);
    if (stored) this.ctx.logger.info(`${this.profile.vendor} poll stored resources`, { source: this.ctx.id, resourceType: spec.type, category: spec.category, count: stored });
    return stored;
  }
}

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

  constructor(ctx: SourceContext<BulkSourceConfig>, profile: VendorProfile) {
    super(ctx, profile);
    const b = ctx.config.bulk;
    this.bulk = new BulkExportClient(this.conn, { pollMinMs: b.pollMinMs, pollMaxMs: b.pollMaxMs, batchSize: b.batchSize });
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
      if (job) this.ctx.logger.info(`${this.profile.vendor} bulk export resuming`, { source: this.ctx.id, file: job.file, line: job.line, haveManifest: !!job.manifest });
      if (!job) {
        const since = (await this.ctx.getCheckpoint(BulkExportSource.SINCE)) || undefined;
        const statusUrl = await this.bulk.kickoff({ level: b.level, groupId: b.groupId, types: b.types, typeFilter: b.typeFilter, since }, this.signal);
        job = { statusUrl, since, file: 0, line: 0 };
        await this.saveJob(job);
        this.ctx.logger.info(`${this.profile.vendor} bulk export started`, { source: this.ctx.id, since: since ?? null, level: b.level });
      }
      if (!job.manifest) {
        let manifest: ExportManifest;
        try {
          manifest = await this.bulk.waitForManifest(job.statusUrl, {
            signal: this.signal,
            onProgress: (p) => this.ctx.logger.debug('bulk export in progress', { source: this.ctx.id, progress: p.progress, polls: p.polls, waitMs: p.waitMs }),
          });
        } catch (e) {
          if (FerryError.is(e) && e.details?.status === 404) {
            // The job is gone (expired / deleted): start over next cycle with the same _since.
            await this.saveJob(undefined);
          }
          throw e;
        }
        job.manifest = { transactionTime: manifest.transactionTime, requiresAccessToken: manifest.requiresAccessToken, output: manifest.output.map((o) => ({ type: o.type, url: o.url, count: o.count })) };
        await this.saveJob(job);
        this.ctx.logger.info(`${this.profile.vendor} bulk export ready`, { source: this.ctx.id, files: manifest.output.length, errorFiles: manifest.error.length });
        if (manifest.error.length) await this.logErrorFiles(manifest);
      }
      let stored = 0;
      let badLines = 0;
      const m = job.manifest;
      while (job.file < m.output.length) {
        const out = m.output[job.file];
        try {
          for await (const lines of this.bulk.lines(out.url, { requiresAccessToken: m.requiresAccessToken, skip: job.line, signal: this.signal })) {
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
            this.ctx.logger.warn(`${this.profile.vendor} bulk export files expired before the download finished; restarting the export`, { source: this.ctx.id, file: job.file });
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
      this.ctx.logger.info(`${this.profile.vendor} bulk export finished`, { source: this.ctx.id, stored, badLines, transactionTime: m.transactionTime });
      return stored;
    } finally {
      release();
    }
  }

  private async logErrorFiles(manifest: ExportManifest): Promise<void> {
    for (const f of manifest.error) {
      let issues = 0;
      try {
        for await (const lines of this.bulk.lines(f.url, { requiresAccessToken: manifest.requiresAccessToken, signal: this.signal })) issues += lines.length;
      } catch (e) {
        this.ctx.logger.warn('bulk export error file unreadable', { source: this.ctx.id, ...errorFields(e) });
      }
      this.ctx.logger.warn('bulk export reported errors', { source: this.ctx.id, operationOutcomes: issues });
    }
  }
}
