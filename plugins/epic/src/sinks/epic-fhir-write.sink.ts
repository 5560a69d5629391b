/** `type: epic-fhir-write`: the vendor kit's write-back sink with Epic's writable types (create only, no update). */
import { coreTokens, type SinkContext } from '@ferry/core';
import {
  WriteBackSink,
  type WriteBackConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { EPIC_WRITE_TYPES } from '../epic-profile';

@injectable()
export class EpicWriteBackSink extends WriteBackSink {
  constructor(
    @inject(coreTokens.SinkContext) ctx: SinkContext<WriteBackConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'epic', 'epic', EPIC_WRITE_TYPES, false, shared);
  }
}
