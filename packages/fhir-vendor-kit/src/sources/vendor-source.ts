/** What the vendor FHIR sources share: the resource-to-message mapping and the loop over a vendor connection. */
import type { InboundMessage, SourceContext } from '@ferry/core';
import type { Resource } from '@medplum/fhirtypes';
import { VendorConnection, type ConnectionConfig } from '../connection';
import { vendorHeaders, type VendorProfile } from '../normalize';
import { PollingSource, retryBackoffMs, type PassFailure } from '../poller';
import type { VendorConnections } from '../vendor-connections';

/** A vendor resource as an inbound message. */
export function resourceMessage(raw: string | Resource, profile: VendorProfile, facility: string): InboundMessage {
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
  const parsed = typeof raw === 'string' ? JSON.parse(raw) : raw;
  return {
    contentType: profile.contentType,
    body: Buffer.from(text, 'utf8'),
    headers: vendorHeaders(parsed, profile, facility),
  };
}

/** The Epic/Cerner sources: a {@link PollingSource} over a {@link VendorConnection} and a vendor profile. */
export abstract class LoopSource<C extends ConnectionConfig> extends PollingSource<C> {
  protected readonly conn: VendorConnection;
  protected readonly profile: VendorProfile;

  /** @param shared the engine's `VendorConnections` (`@inject(vendorConnectionsToken)`); absent: this source's own. */
  constructor(ctx: SourceContext<C>, profile: VendorProfile, shared?: VendorConnections) {
    super(ctx, `${profile.vendor} source cycle failed`);
    this.profile = ctx.config.idPrefix ? { ...profile, idPrefix: ctx.config.idPrefix } : profile;
    this.conn = new VendorConnection(profile.vendor, ctx.config as C, ctx.logger, { shared });
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
