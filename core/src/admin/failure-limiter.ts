/**
 * Failed authentications per remote address: after `maxFailures` within `windowMs` the address is
 * refused (429, Retry-After) until the window has passed, whatever it sends.
 */
export class FailureLimiter {
  private readonly byAddress = new Map<string, { since: number; failures: number; blockedUntil?: number }>();
  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
    private readonly maxAddresses = 10_000,
  ) {}

  /** Seconds until the address may try again, when it is blocked now. */
  blocked(address: string): number | undefined {
    const e = this.byAddress.get(address);
    if (!e?.blockedUntil) return undefined;
    const left = e.blockedUntil - this.now();
    if (left <= 0) {
      this.byAddress.delete(address);
      return undefined;
    }
    return Math.ceil(left / 1000);
  }

  /** Counts a failure; true when it is the one that blocks the address. */
  fail(address: string): boolean {
    if (!this.maxFailures) return false;
    const now = this.now();
    let e = this.byAddress.get(address);
    if (!e || now - e.since > this.windowMs) {
      if (!e && this.byAddress.size >= this.maxAddresses) this.evict(now);
      e = { since: now, failures: 0 };
      this.byAddress.set(address, e);
    }
    e.failures++;
    if (e.failures >= this.maxFailures && !e.blockedUntil) {
      e.blockedUntil = now + this.windowMs;
      return true;
    }
    return false;
  }

  private evict(now: number): void {
    for (const [a, e] of this.byAddress)
      if (now - e.since > this.windowMs && !(e.blockedUntil && e.blockedUntil > now)) this.byAddress.delete(a);
    // Still full (a flood from many addresses): forget the oldest.
    while (this.byAddress.size >= this.maxAddresses)
      this.byAddress.delete(this.byAddress.keys().next().value as string);
  }
}
