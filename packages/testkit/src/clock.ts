/**
 * A fake clock for code that takes a `now: () => number` (rate limiters, token caches, pollers'
 * intervals): time moves only when the test says so. Timers registered through `setTimeout` run
 * in order as `advance` passes their due time.
 */
export class FakeClock {
  private timers: { due: number; seq: number; fn: () => void }[] = [];
  private seq = 0;

  constructor(private current = Date.parse('2026-01-01T00:00:00Z')) {}

  /** The current time in ms since the epoch (pass `() => clock.now()`). */
  now(): number {
    return this.current;
  }

  /** A timer on this clock; returns a function that cancels it. */
  setTimeout(fn: () => void, ms: number): () => void {
    const t = { due: this.current + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(t);
    return () => {
      this.timers = this.timers.filter((x) => x !== t);
    };
  }

  /** Resolves when the clock reaches `ms` from now. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  /** Move time forward, running each due timer at its own time (and awaiting what it started). */
  async advance(ms: number): Promise<void> {
    const end = this.current + ms;
    for (;;) {
      this.timers.sort((a, b) => a.due - b.due || a.seq - b.seq);
      const next = this.timers[0];
      if (!next || next.due > end) break;
      this.timers.shift();
      this.current = next.due;
      next.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.current = end;
  }

  /** Timers still waiting. */
  pending(): number {
    return this.timers.length;
  }
}
