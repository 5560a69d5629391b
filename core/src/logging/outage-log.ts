import type { Logger } from '../plugin/api';

/**
 * Logs a run of failures of the same kind once, not once per failure: the first at error level
 * with its fields, the ones after it at debug, a warning with the count every `summaryEveryMs`
 * while it lasts, and one info line when it ends. For a source whose store is unavailable:
 * every message refused meanwhile (and every resend of it) would otherwise be an error line.
 * Fields are the caller's: ids, codes and counts only.
 */
export class OutageLog {
  private since?: number;
  private count = 0;
  private windowCount = 0;
  private lastSummary = 0;

  constructor(
    private readonly logger: Logger,
    /** What fails, e.g. 'message not stored: answered AE'. */
    private readonly what: string,
    private readonly base: Record<string, unknown> = {},
    private readonly summaryEveryMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** True while failures are being counted (no success since the first). */
  get active(): boolean {
    return this.since !== undefined;
  }

  failed(fields: Record<string, unknown> = {}): void {
    const now = this.now();
    this.count++;
    this.windowCount++;
    if (this.since === undefined) {
      this.since = now;
      this.lastSummary = now;
      this.windowCount = 0;
      this.logger.error(this.what, { ...this.base, ...fields });
      return;
    }
    this.logger.debug(this.what, { ...this.base, ...fields });
    if (now - this.lastSummary >= this.summaryEveryMs) {
      this.logger.warn(`${this.what} (still failing)`, {
        ...this.base,
        ...fields,
        failures: this.count,
        inLastMs: now - this.lastSummary,
        lastWindow: this.windowCount,
        sinceMs: now - this.since,
      });
      this.lastSummary = now;
      this.windowCount = 0;
    }
  }

  ok(): void {
    if (this.since === undefined) return;
    this.logger.info(`${this.what}: recovered`, { ...this.base, failures: this.count, forMs: this.now() - this.since });
    this.since = undefined;
    this.count = 0;
    this.windowCount = 0;
  }
}
