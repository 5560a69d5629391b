/** A sleep that another part of the engine can cut short (new work arrived, stopping). */
export class WakeableSleep {
  private waker?: () => void;

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        self.waker = undefined;
        resolve();
      }
      this.waker = done;
    });
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    this.waker?.();
  }
}
