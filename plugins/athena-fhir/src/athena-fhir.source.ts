/**
 * `type: athena-fhir` source: incremental polling of athena FHIR R4 searches by `_lastUpdated`
 * (reference 2.3). Every search carries `ah-practice`; pages are `_count` sized and the `next`
 * link (athena's `cursor`) is followed verbatim. The cursor (`_lastUpdated` high-water mark) is
 * committed in the store together with the last page's messages, so a crash re-reads rather than
 * skips; re-read resources carry the same control id (id + version) and are dropped as duplicates.
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, errorFields, FerryError, OutageLog, type InboundMessage, type MessageSource, type SourceContext } from '@ferry/core';
import { AthenaConnection, athenaConnectionSchema, type AthenaConnectionConfig } from '@ferry/plugin-athena-rest';
import type { Resource } from '@medplum/fhirtypes';
import { AthenaFhirClient } from './athena-fhir.client';
import { ATHENA_FHIR_CONTENT_TYPE, athenaFhirHeaders, type AthenaFhirEnvelope } from './athena-fhir.to-fhir';

const listOfStrings = (v: unknown) => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !/^[A-Z][A-Za-z]+$/.test(x))) throw new Error('must be a list of FHIR resource types');
};
const objectOf = (v: unknown) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('must be a mapping of resource type -> { param: value }');
};
const isoOrEmpty = (v: unknown) => {
  if (typeof v !== 'string' || (v && Number.isNaN(Date.parse(v)))) throw new Error('must be an ISO-8601 instant or empty');
};

export const athenaFhirSourceSchema = {
  ...athenaConnectionSchema,
  resources: { doc: 'Resource types to poll', format: listOfStrings, default: ['Patient'] as string[] },
  searchParams: { doc: 'Extra search parameters per resource type, e.g. { Observation: { category: laboratory } }', format: objectOf, default: {} as Record<string, Record<string, string>> },
  pageSize: { doc: '_count per page', format: 'nat', default: 100 },
  pollIntervalMs: { doc: 'Pause between polls', format: 'nat', default: 60_000 },
  overlapMs: { doc: 'Re-read this much before the high-water mark (clock skew between athena hosts)', format: 'nat', default: 5_000 },
  initialSince: { doc: 'First poll reads resources updated since this instant (empty = initialLookbackHours)', format: isoOrEmpty, default: '' },
  initialLookbackHours: { doc: 'When initialSince is empty: how far back the first poll reads', format: 'nat', default: 24 },
  athenaExtensions: { doc: 'drop or keep athena ah-* extensions in the canonical form', format: ['drop', 'keep'], default: 'drop' },
};

export interface AthenaFhirSourceConfig extends AthenaConnectionConfig {
  resources: string[];
  searchParams: Record<string, Record<string, string>>;
  pageSize: number;
  pollIntervalMs: number;
  overlapMs: number;
  initialSince: string;
  initialLookbackHours: number;
  athenaExtensions: 'drop' | 'keep';
}

@injectable()
export class AthenaFhirSource implements MessageSource {
  readonly conn: AthenaConnection;
  readonly fhir: AthenaFhirClient;
  private readonly cfg: AthenaFhirSourceConfig;
  private readonly abort = new AbortController();
  private running = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  polls = 0;
  lastError?: FerryError;

  constructor(@inject(coreTokens.SourceContext) private readonly ctx: SourceContext<AthenaFhirSourceConfig>) {
    this.cfg = ctx.config;
    this.signal = AbortSignal.any([this.abort.signal, ctx.signal]);
    this.conn = new AthenaConnection(ctx.config, ctx.logger);
    this.fhir = new AthenaFhirClient(this.conn);
    this.pollFailures = new OutageLog(ctx.logger, 'athena FHIR poll failed', { source: ctx.id });
  }

  /** A run of failed polls: told once, counted each minute. */
  private readonly pollFailures: OutageLog;

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort(new Error('source stopping'));
    this.wake?.();
    await this.loop?.catch(() => undefined);
  }

  isReady(): boolean {
    return this.running && !(this.lastError && this.lastError.kind === 'config');
  }

  /** Aborted by stop() or by the engine. */
  private readonly signal: AbortSignal;

  private async run(): Promise<void> {
    while (this.running && !this.signal.aborted) {
      try {
        await this.pollOnce();
        this.lastError = undefined;
        this.pollFailures.ok();
      } catch (e) {
        if (this.signal.aborted) break;
        this.lastError = FerryError.from(e);
        this.pollFailures.failed(errorFields(e));
      }
      this.polls++;
      if (!this.running) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.cfg.pollIntervalMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  async pollOnce(): Promise<void> {
    for (const type of this.cfg.resources) {
      if (this.signal.aborted) return;
      await this.pollType(type);
    }
  }

  private message(resource: Resource): InboundMessage {
    const env: AthenaFhirEnvelope = { practiceid: this.conn.practiceId, resource, athenaExtensions: this.cfg.athenaExtensions };
    return { contentType: ATHENA_FHIR_CONTENT_TYPE, body: Buffer.from(JSON.stringify(env)), headers: athenaFhirHeaders(env) };
  }

  private async pollType(type: string): Promise<void> {
    const key = `lastUpdated:${type}`;
    const stored = await this.ctx.getCheckpoint(key);
    const since = stored ?? (this.cfg.initialSince || new Date(Date.now() - this.cfg.initialLookbackHours * 3_600_000).toISOString());
    const from = new Date(Date.parse(since) - (stored ? this.cfg.overlapMs : 0)).toISOString();
    let high = Date.parse(since);
    let bundle = await this.fhir.search(type, { ...(this.cfg.searchParams[type] ?? {}), _lastUpdated: `ge${from}`, _count: this.cfg.pageSize }, this.signal);
    let total = 0;
    let pages = 0;
    for (;;) {
      pages++;
      const resources = (bundle.entry ?? [])
        .filter((e) => e.search?.mode !== 'outcome' && e.resource && e.resource.resourceType === type)
        .map((e) => e.resource as Resource);
      for (const r of resources) {
        const lu = Date.parse(r.meta?.lastUpdated ?? '');
        if (!Number.isNaN(lu) && lu > high) high = lu;
      }
      const next = bundle.link?.find((l) => l.relation === 'next')?.url;
      const messages = resources.map((r) => this.message(r));
      total += messages.length;
      if (!next) {
        const value = new Date(high).toISOString();
        if (messages.length) await this.ctx.submit(messages, { checkpoint: { sourceId: this.ctx.id, key, value } });
        else if (value !== stored) await this.ctx.setCheckpoint(key, value);
        break;
      }
      if (messages.length) await this.ctx.submit(messages);
      const nextBundle = await this.fhir.nextPage(bundle, this.signal);
      if (!nextBundle) break;
      bundle = nextBundle;
    }
    if (total) this.ctx.logger.info('athena FHIR polled', { source: this.ctx.id, resourceType: type, resources: total, pages });
  }
}
