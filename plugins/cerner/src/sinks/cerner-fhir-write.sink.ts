/** `type: cerner-fhir-write`: the vendor kit's write-back sink with Cerner's writable types; updates with `PUT` + `If-Match`. */
import { coreTokens, type SinkContext } from '@ferry/core';
import {
  WriteBackSink,
  type WriteBackConfig,
  vendorConnectionsToken,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { CERNER_WRITE_TYPES } from '../cerner-profile';

@injectable()
export class CernerWriteBackSink extends WriteBackSink {
  constructor(
    @inject(coreTokens.SinkContext) ctx: SinkContext<WriteBackConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'cerner', 'cerner', CERNER_WRITE_TYPES, true, shared);
  }
}
