/**
 * The pipeline feeds the facade's store: what a source bound to a served connection (`connection:
 * <id>` on a vendor source) delivered is recorded as if the facade had read it -- the identity of each
 * resource (with the patient's link key) and, when the connection serves from the store
 * (`facade.cache.storeMaxAgeSeconds`), its canonical copy -- so a facade read soon after a poll is
 * answered without a vendor call, and equals what the pipeline delivered.
 *
 * Only the resources a facade read of that id would answer the same way are kept: the first resource
 * of a type in the message's canonical Bundle (as the facade takes it from a vendor record), when the
 * decision rule reads that type on that connection from records of the message's own content type
 * (same vendor path, same transform); its vendor id the identity table's, else the provider's id
 * scheme (a canonical id neither knows is skipped). A copy is as old as its message (`receivedAt`),
 * and never replaces a newer one (a replayed message, or a read that went to the vendor meanwhile).
 *
 * Off the message path: the processor hands each recorded batch over and goes on; the feed writes in
 * the background, batch by batch, one transaction each for identities and copies. A failure loses only
 * the cache entries (logged by counts and error code); a backlog beyond MAX_QUEUED is dropped (counted).
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import { errorFields } from '../logging/logger';
import type { StoredMessage } from '../model/message';
import type { FacadeIdentity, FacadeResourceCopy, FacadeStore } from '../store/message-store';
import { linkKeyOf, type FacadeService } from './facade.service';

/** A message the pipeline converted, with its canonical Bundle as stored. */
export interface PipelineConverted {
  message: Pick<StoredMessage, 'sourceId' | 'contentType' | 'receivedAt'>;
  bundleJson: string;
}

/** Messages waiting to be recorded at most; more are dropped (the facade then reads them from the vendor). */
export const MAX_QUEUED = 10_000;
const BATCH = 256;

const baseType = (ct: string) => ct.split(';')[0].trim().toLowerCase();

export class FacadePipelineFeed {
  private queue: { connection: string; item: PipelineConverted }[] = [];
  private running?: Promise<void>;
  /** Messages dropped because the queue was full, since the last warning. */
  private dropped = 0;

  constructor(
    private readonly service: Pick<FacadeService, 'connections' | 'choose'>,
    private readonly store: FacadeStore | undefined,
    private readonly logger: Logger,
    /** The connection a source is bound to (`sources.<id>.connection`), if any. */
    private readonly connectionOf: (sourceId: string) => string | undefined,
  ) {}

  /** Takes a processed batch (cheap: a map lookup per message); recording happens later. */
  offer(items: PipelineConverted[]): void {
    if (!this.store) return;
    for (const item of items) {
      const connection = this.connectionOf(item.message.sourceId);
      if (!connection || !this.service.connections.has(connection)) continue;
      if (this.queue.length >= MAX_QUEUED) {
        this.dropped++;
        continue;
      }
      this.queue.push({ connection, item });
    }
    if (this.queue.length && !this.running)
      this.running = this.drain().finally(() => {
        this.running = undefined;
      });
  }

  /** Resolves when everything offered so far is recorded (or given up). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    // Let the batches of this event-loop turn join.
    await new Promise((r) => setImmediate(r));
    while (this.queue.length) {
      const batch = this.queue.splice(0, BATCH);
      let resources = 0;
      try {
        const { identities, copies } = await this.rows(batch);
        resources = identities.length;
        await this.store!.facadeIdentify(identities);
        await this.store!.facadeResourcesPut(copies);
      } catch (e) {
        // Only the cache is missing: the facade reads those resources from the vendor instead.
        this.logger.warn('facade: resources the pipeline converted not recorded for the facade', {
          messages: batch.length,
          resources,
          ...errorFields(e),
        });
      }
      if (this.dropped) {
        this.logger.warn('facade: pipeline backlog full; converted resources not recorded for the facade', {
          messages: this.dropped,
        });
        this.dropped = 0;
      }
    }
  }

  /** The identities and copies of a batch, by the rule in the header. */
  private async rows(
    batch: { connection: string; item: PipelineConverted }[],
  ): Promise<{ identities: FacadeIdentity[]; copies: FacadeResourceCopy[] }> {
    const identities: FacadeIdentity[] = [];
    const copies: FacadeResourceCopy[] = [];
    for (const { connection, item } of batch) {
      const c = this.service.connections.get(connection);
      if (!c) continue;
      const bundle = JSON.parse(item.bundleJson) as Bundle;
      const ct = baseType(item.message.contentType);
      const seen = new Set<string>();
      for (const e of bundle.entry ?? []) {
        const r = e.resource as Resource | undefined;
        if (!r?.id || seen.has(r.resourceType)) continue;
        seen.add(r.resourceType);
        const cap = this.service.choose(c, r.resourceType, 'read');
        if (!cap || baseType(cap.contentType) !== ct) continue;
        const known = await this.store!.facadeIdentityOf(c.id, r.resourceType, r.id);
        const vendorId = known?.vendorId ?? c.provider.vendorId(r.resourceType, r.id);
        if (!vendorId) continue;
        const mrn = r.resourceType === 'Patient' ? linkKeyOf(r, c.entry.facade.identity?.linkSystems ?? []) : undefined;
        identities.push({ connectionId: c.id, resourceType: r.resourceType, vendorId, canonicalId: r.id, mrn });
        // A copy in memory (ttlSeconds) may be older than this message: the next read looks further.
        c.memo.delete(`${r.resourceType}/${r.id}`);
        if (c.entry.facade.cache.storeMaxAgeSeconds > 0)
          copies.push({
            connectionId: c.id,
            resourceType: r.resourceType,
            canonicalId: r.id,
            resource: JSON.stringify(r),
            fetchedAt: item.message.receivedAt,
          });
      }
    }
    return { identities, copies };
  }
}
