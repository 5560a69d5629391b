/**
 * Write-back of canonical resources to the vendor (Epic: create Observation / DocumentReference /
 * Condition; Cerner: create, or update with `If-Match` when the resource came from that tenant).
 * Canonical ids and references (`epic-<id>`) are mapped back to the vendor's ids and the canonical
 * MRN system back to the tenant's MRN system. A 409 / 412 re-reads the current version (update) or
 * looks for the resource already created (create) and retries once.
 */
import {
  defineSchema,
  FerryError,
  permanentDeliveryError,
  retryableDeliveryError,
  type Delivery,
  type MessageSink,
  type SchemaType,
  type SinkContext,
} from '@ferry/core';
import type { Resource } from '@medplum/fhirtypes';
import { connectionSchema, VendorConnection } from '../connection';
import { FhirClient, etagVersion } from '../fhir-client';
import type { VendorConnections } from '../vendor-connections';

export function writeBackSchema(defaults: Parameters<typeof connectionSchema>[0], types: string[], mrnSystem: string) {
  return defineSchema({
    ...connectionSchema(defaults),
    resourceTypes: { doc: `Resource types written (supported: ${types.join(', ')})`, format: Array, default: types },
    mrnSystem: { doc: "The tenant's MRN identifier system", format: String, default: mrnSystem },
    canonicalMrnSystem: { doc: 'The canonical MRN system to map back', format: String, default: 'urn:ferry:id:mrn' },
  });
}

export type WriteBackConfig = SchemaType<ReturnType<typeof writeBackSchema>>;

export abstract class WriteBackSink implements MessageSink {
  protected readonly conn: VendorConnection;
  protected readonly fhir: FhirClient;
  protected readonly idPrefix: string;

  constructor(
    protected readonly ctx: SinkContext<WriteBackConfig>,
    protected readonly vendor: 'epic' | 'cerner',
    idPrefix: string,
    protected readonly supported: string[],
    protected readonly allowUpdate: boolean,
    /** The engine's `VendorConnections` (`@inject(vendorConnectionsToken)`); absent: this sink's own. */
    shared?: VendorConnections,
  ) {
    this.idPrefix = ctx.config.idPrefix || idPrefix;
    this.conn = new VendorConnection(vendor, ctx.config, ctx.logger, { shared });
    this.fhir = new FhirClient(this.conn);
    const bad = ctx.config.resourceTypes.filter((t) => !supported.includes(t));
    if (bad.length)
      throw new FerryError(
        'CONFIG_WRITEBACK_TYPES',
        `sinks.${ctx.id}.resourceTypes: ${vendor} does not accept writes of ${bad.join(', ')}`,
        { kind: 'config', retryable: false },
      );
  }

  /** `epic-abc` -> `abc`; undefined for ids that did not come from this vendor. */
  private vendorId(id: string | undefined): string | undefined {
    return id?.startsWith(`${this.idPrefix}-`) ? id.slice(this.idPrefix.length + 1) : undefined;
  }

  /** Canonical resource -> the vendor's form. Throws a permanent error when a reference cannot be mapped. */
  toVendor(r: Resource): { resource: Resource; vendorId?: string } {
    const out = structuredClone(r) as any;
    const vendorId = this.vendorId(out.id);
    if (vendorId) out.id = vendorId;
    else delete out.id;
    if (out.meta) {
      out.meta.tag = (out.meta.tag ?? []).filter((t: any) => !String(t.system ?? '').startsWith('urn:ferry:'));
      if (!out.meta.tag.length) delete out.meta.tag;
      delete out.meta.versionId;
      delete out.meta.lastUpdated;
      if (!Object.keys(out.meta).length) delete out.meta;
    }
    const unmapped: string[] = [];
    const walk = (n: any) => {
      if (Array.isArray(n)) return n.forEach(walk);
      if (!n || typeof n !== 'object') return;
      if (typeof n.reference === 'string') {
        const m = /^([A-Z][A-Za-z]+)\/(.+)$/.exec(n.reference);
        if (m) {
          const vid = this.vendorId(m[2]);
          if (vid) n.reference = `${m[1]}/${vid}`;
          else if (m[1] === 'Patient') unmapped.push(n.reference.split('/')[0]);
        }
      }
      for (const v of Object.values(n)) walk(v);
    };
    walk(out);
    if (unmapped.length)
      throw permanentDeliveryError(
        'WRITEBACK_UNMAPPED_REFERENCE',
        `${this.vendor} write-back: a Patient reference does not point to a ${this.vendor} patient`,
      );
    if (this.ctx.config.mrnSystem && Array.isArray(out.identifier))
      for (const i of out.identifier)
        if (i.system === this.ctx.config.canonicalMrnSystem) i.system = this.ctx.config.mrnSystem;
    return { resource: out, vendorId };
  }

  async deliver(d: Delivery): Promise<void> {
    const resources = (d.bundle.entry ?? [])
      .map((e) => e.resource)
      .filter((r): r is Resource => !!r && this.ctx.config.resourceTypes.includes(r.resourceType));
    if (!resources.length) {
      this.ctx.logger.debug('nothing to write back', { sink: this.ctx.id, messageId: d.message.id });
      return;
    }
    for (const r of resources) {
      const { resource, vendorId } = this.toVendor(r);
      try {
        if (vendorId && this.allowUpdate) await this.update(resource as Resource & { id: string }, d.signal);
        else if (d.attempt > 1 && (await this.exists(resource, d.signal))) {
          // A retry after an ambiguous failure: the earlier POST may have landed (reconcile by read).
          this.ctx.logger.info('write-back retry found the resource already created', {
            sink: this.ctx.id,
            resourceType: resource.resourceType,
            deliveryId: d.deliveryId,
          });
        } else await this.create(resource, d.signal);
      } catch (e) {
        throw this.deliveryError(e, resource.resourceType);
      }
    }
    this.ctx.logger.debug('written back', { sink: this.ctx.id, messageId: d.message.id, resources: resources.length });
  }

  private isConflict(e: unknown): boolean {
    return FerryError.is(e) && (e.details?.status === 409 || e.details?.status === 412);
  }

  /** `signal`: the engine's, aborted when the attempt runs past the sink's deliveryTimeoutMs. */
  private async update(resource: Resource & { id: string }, signal?: AbortSignal): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.fhir.read(resource.resourceType, resource.id, signal);
      const version = etagVersion(current.etag) ?? current.resource.meta?.versionId;
      try {
        await this.fhir.update(resource, version ? `W/"${version}"` : undefined, signal);
        return;
      } catch (e) {
        if (this.isConflict(e) && attempt === 1) {
          this.ctx.logger.info('write-back version conflict, re-reading and retrying once', {
            sink: this.ctx.id,
            resourceType: resource.resourceType,
          });
          continue;
        }
        throw e;
      }
    }
  }

  /** Is a resource with the same identifier already there for the same patient? (false when it has none) */
  private async exists(resource: Resource, signal?: AbortSignal): Promise<boolean> {
    const ident = (resource as { identifier?: { system?: string; value?: string }[] }).identifier?.find(
      (i) => i.system && i.value,
    );
    const patient = (resource as any).subject?.reference ?? (resource as any).patient?.reference;
    if (!ident || !patient) return false;
    const params: Record<string, string> = {
      patient: String(patient).replace(/^Patient\//, ''),
      identifier: `${ident.system}|${ident.value}`,
    };
    const category = (resource as any).category?.[0]?.coding?.[0]?.code;
    if (resource.resourceType === 'Observation' && category) params.category = category;
    // Vendors silently ignore search parameters they do not support (Epic 4122), so check the match here.
    const same = (r: Resource) =>
      ((r as { identifier?: { system?: string; value?: string }[] }).identifier ?? []).some(
        (i) => i.system === ident.system && String(i.value).trim() === ident.value,
      );
    for await (const page of this.fhir.search(resource.resourceType, params, { signal }))
      if (page.resources.some(same)) return true;
    return false;
  }

  private async create(resource: Resource, signal?: AbortSignal): Promise<void> {
    try {
      await this.fhir.create(resource, signal);
    } catch (e) {
      if (!this.isConflict(e)) throw e;
      // Already there (a redelivery) or a transient clash: look it up by identifier, else retry once.
      if (await this.exists(resource, signal)) {
        this.ctx.logger.info('write-back create conflicted; the resource already exists', {
          sink: this.ctx.id,
          resourceType: resource.resourceType,
        });
        return;
      }
      await this.fhir.create(resource, signal);
    }
  }

  private deliveryError(e: unknown, type: string): FerryError {
    const fe = FerryError.from(e);
    const details = { ...(fe.details ?? {}), body: undefined, resourceType: type };
    if (fe.code.startsWith('FERRY_E_DELIVERY_')) return fe;
    return fe.retryable
      ? retryableDeliveryError(
          'WRITEBACK_FAILED',
          `${this.vendor} write-back of ${type} failed: ${fe.message}`,
          details,
          fe,
        )
      : permanentDeliveryError(
          'WRITEBACK_REJECTED',
          `${this.vendor} write-back of ${type} refused: ${fe.message}`,
          details,
          fe,
        );
  }
}
