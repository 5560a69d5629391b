import { SinkCircuit } from './circuit';

const policy = { failureThreshold: 3, openMs: 1000, maxOpenMs: 5000 };

describe('SinkCircuit', () => {
  it('pauses after failureThreshold retryable failures in a row, and an answer in between resets the count', () => {
    const c = new SinkCircuit(policy);
    expect(c.failed('a', 0, 'NETWORK')).toBeUndefined();
    expect(c.failed('b', 0, 'NETWORK')).toBeUndefined();
    expect(c.answered(0)).toBeUndefined(); // taken (or refused for good): the sink is up
    expect(c.failed('c', 0, 'NETWORK')).toBeUndefined();
    expect(c.failed('d', 0, 'NETWORK')).toBeUndefined();
    expect(c.allowance(8, 0)).toBe(8);
    expect(c.failed('e', 10, 'UNAVAILABLE')).toEqual({ change: 'opened', pauseMs: 1000 });
    expect(c.view().state).toBe('open');
    expect(c.allowance(8, 10)).toBe(0);
    expect(c.allowance(8, 1009)).toBe(0);
    expect(c.wakeAt()).toBe(1010);
    expect(c.view()).toMatchObject({
      state: 'open',
      consecutiveFailures: 3,
      failedProbes: 0,
      lastErrorCode: 'UNAVAILABLE',
      pausedSince: new Date(10),
      nextProbeAt: new Date(1010),
    });
  });

  it('lets one probe go when the pause is over; a failed probe doubles the pause up to maxOpenMs; a taken one resumes', () => {
    const c = new SinkCircuit(policy);
    for (const id of ['a', 'b', 'c']) c.failed(id, 0, 'NETWORK');
    // Calls already under way when it opened: their failures change nothing.
    expect(c.failed('late', 500, 'NETWORK')).toBeUndefined();
    let now = 1000;
    const pauses: number[] = [];
    for (let i = 0; i < 5; i++) {
      expect(c.allowance(8, now)).toBe(1);
      c.probing(`p${i}`);
      expect(c.view().state).toBe('half-open');
      expect(c.allowance(8, now)).toBe(0); // one probe at a time
      expect(c.wakeAt()).toBeUndefined();
      expect(c.isProbe(`p${i}`)).toBe(true);
      const r = c.failed(`p${i}`, now, 'NETWORK')!;
      expect(r.change).toBe('probe-failed');
      pauses.push(r.pauseMs);
      now += r.pauseMs;
    }
    expect(pauses).toEqual([2000, 4000, 5000, 5000, 5000]);
    expect(c.view().failedProbes).toBe(5);
    expect(c.allowance(8, now)).toBe(1);
    c.probing('ok');
    expect(c.answered(now + 20)).toEqual({ pausedMs: now + 20, failedProbes: 5 });
    expect(c.view()).toEqual({ state: 'closed', consecutiveFailures: 0, failedProbes: 0 });
    expect(c.allowance(8, now)).toBe(8);
    // The next pause starts from openMs again.
    for (const id of ['x', 'y', 'z']) c.failed(id, now, 'NETWORK');
    expect(c.view().nextProbeAt).toEqual(new Date(now + 1000));
  });

  it('honours a longer Retry-After; a probe whose outcome was never reported lets another go; threshold 0 never pauses', () => {
    const c = new SinkCircuit(policy);
    c.failed('a', 0, 'THROTTLED');
    c.failed('b', 0, 'THROTTLED');
    expect(c.failed('c', 0, 'THROTTLED', 30_000)).toEqual({ change: 'opened', pauseMs: 30_000 });
    expect(c.allowance(4, 29_999)).toBe(0);
    expect(c.allowance(4, 30_000)).toBe(1);
    c.probing('p');
    c.settled('p');
    expect(c.allowance(4, 30_000)).toBe(1);
    // Half-open with nothing claimed (nothing due): no timer to wake for -- the sink's deliveries
    // falling due wake the dispatcher.
    expect(c.wakeAt()).toBeUndefined();

    const off = new SinkCircuit({ ...policy, failureThreshold: 0 });
    for (let i = 0; i < 100; i++) expect(off.failed(`d${i}`, 0, 'NETWORK')).toBeUndefined();
    expect(off.allowance(8, 0)).toBe(8);
  });
  it('slow start: one delivery at a time until the sink first answers, each a probe; failures count towards the threshold as usual', () => {
    const c = new SinkCircuit(policy, { slowStart: true });
    expect(c.view()).toEqual({ state: 'closed', consecutiveFailures: 0, failedProbes: 0, starting: true });
    expect(c.allowance(256, 0)).toBe(1);
    c.probing('a');
    expect(c.claimable(0)).toBe(false);
    expect(c.allowance(256, 0)).toBe(0); // one out at a time
    expect(c.isProbe('a')).toBe(true); // not counted towards maxAttempts: the sink's health is not known yet
    expect(c.failed('a', 0, 'NETWORK')).toBeUndefined();
    expect(c.allowance(256, 0)).toBe(1); // the next may go
    c.probing('b');
    c.settled('b'); // its call ended without an outcome: another may go
    expect(c.allowance(256, 0)).toBe(1);
    c.probing('c');
    expect(c.failed('c', 0, 'NETWORK')).toBeUndefined();
    c.allowance(256, 0);
    c.probing('d');
    expect(c.failed('d', 0, 'NETWORK')).toEqual({ change: 'opened', pauseMs: 1000 }); // the third failure in a row
    expect(c.view()).toMatchObject({ state: 'open', starting: true });
    // Paused and probed as usual; the probe taken ends both the pause and the slow start.
    expect(c.allowance(256, 1000)).toBe(1);
    c.probing('p');
    expect(c.isStarting()).toBe(true);
    expect(c.answered(1010)).toEqual({ pausedMs: 1010, failedProbes: 0 });
    expect(c.isStarting()).toBe(false);
    expect(c.allowance(256, 1010)).toBe(256);
    // A sink that answers at once: full concurrency after its first delivery; refused for good counts as an answer.
    const ok = new SinkCircuit(policy, { slowStart: true });
    ok.allowance(8, 0);
    ok.probing('x');
    expect(ok.answered(5)).toBeUndefined();
    expect(ok.view()).toEqual({ state: 'closed', consecutiveFailures: 0, failedProbes: 0 });
    expect(ok.allowance(8, 5)).toBe(8);
    // Off with the breaker.
    expect(new SinkCircuit({ ...policy, failureThreshold: 0 }, { slowStart: true }).allowance(8, 0)).toBe(8);
  });
});
