import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import { retryTransient } from './retry-transient';

const transient = () => new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient' });
const opts = { what: 'x', logger: silentLogger(), firstDelayMs: 1, maxDelayMs: 4 };

describe('retryTransient', () => {
  it('tries again after transient failures and returns the first success', async () => {
    let n = 0;
    const v = await retryTransient(async () => (++n < 3 ? Promise.reject(transient()) : 'ok'), {
      ...opts,
      budgetMs: 1000,
    });
    expect(v).toBe('ok');
    expect(n).toBe(3);
  });

  it('throws other errors at once, and the last transient one when the budget is spent', async () => {
    let n = 0;
    const bad = new FerryError('INTERNAL_STORE_NO_DELIVERY', 'no delivery', { kind: 'internal' });
    await expect(retryTransient(async () => Promise.reject((n++, bad)), { ...opts, budgetMs: 1000 })).rejects.toBe(bad);
    expect(n).toBe(1);
    // Not a FerryError: not known to be transient.
    n = 0;
    await expect(
      retryTransient(async () => Promise.reject((n++, new Error('boom'))), { ...opts, budgetMs: 1000 }),
    ).rejects.toThrow('boom');
    expect(n).toBe(1);
  });

  it('spends the budget on a fake clock: waits 1, 2, 4, 4 ... ms, gives up before the next wait would pass it', async () => {
    jest.useFakeTimers();
    try {
      const t0 = Date.now();
      const at: number[] = [];
      const p = retryTransient(async () => Promise.reject((at.push(Date.now() - t0), transient())), {
        ...opts,
        budgetMs: 60,
      }).catch((e: unknown) => e);
      await jest.advanceTimersByTimeAsync(1000);
      expect(await p).toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
      // tries at 0, 1, 3, 7, 11 ... 59 ms; 59 + 4 > 60: the last failure is thrown
      expect(at).toEqual([0, 1, 3, ...Array.from({ length: 14 }, (_, i) => 7 + 4 * i)]);
    } finally {
      jest.useRealTimers();
    }
  });
});
