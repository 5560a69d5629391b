import type { RateLimiter } from '@ferry/core';
import { createToken, TokenCache } from '@ferry/core';

/**
 * What the vendor connections of one engine share: OAuth token caches (one token per client and scope
 * set, refreshed single-flight), rate-limit buckets (one per practice or tenant) and the bulk exports
 * running (one at a time per client). One per engine: the vendor plugins provide it as a shared service
 * (`reg.provide(vendorConnectionsToken, () => new VendorConnections(), { shared: true })`) and their
 * components take it with `@inject(vendorConnectionsToken)`, so two engines in one process never share
 * a token or a bucket. A connection made without one (a tool, a test) gets its own.
 */
export class VendorConnections {
  private readonly tokenCaches = new Map<number, TokenCache>();
  private readonly limiters = new Map<string, RateLimiter>();
  /** The clients (`VendorConnection.clientKey`) with a bulk export under way. */
  readonly activeExports = new Set<string>();

  /** The token cache for a refresh skew (tokens are keyed inside by vendor, tenant, client and scopes). */
  tokenCache(skewMs: number): TokenCache {
    let c = this.tokenCaches.get(skewMs);
    if (!c) this.tokenCaches.set(skewMs, (c = new TokenCache({ skewMs })));
    return c;
  }

  /** The limiter under `key`, made by `create` the first time; `created` says whether this call made it. */
  limiter(key: string, create: () => RateLimiter): { limiter: RateLimiter; created: boolean } {
    const had = this.limiters.get(key);
    if (had) return { limiter: had, created: false };
    const limiter = create();
    this.limiters.set(key, limiter);
    return { limiter, created: true };
  }

  /** Forgets every token, bucket and export (the engine stopped). */
  dispose(): void {
    this.tokenCaches.clear();
    this.limiters.clear();
    this.activeExports.clear();
  }
}

/** The engine's `VendorConnections`, in the engine's container (a shared service). */
export const vendorConnectionsToken = createToken<VendorConnections>('ferry.vendor-kit.connections');
