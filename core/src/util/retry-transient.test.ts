import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import { retryTransient } from './retry-transient';

const transient = () => new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient' });
const opts = { what: 'x', logger: silentLogger(), firstDelayMs: 1, maxDelayMs: 4 };

describe('retryTransient', () => {
  it('tries again after transient failures and returns the first success', async () => {
    let n = 0;
    const v = await retryTransient(async () => (++n < 3 ? Promise.reject(transient()) : 'ok'), { ...opts, budgetMs: 1000 });
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
    await expect(retryTransient(async () => Promise.reject((n++, new Error('boom'))), { ...opts, budgetMs: 1000 })).rejects.toThrow('boom');
    expect(n).toBe(1);
    n = 0;
    const t0 = Date.now();
    await expect(retryTransient(async () => Promise.reject((n++, transient())), { ...opts, budgetMs: 60 })).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
    const took = Date.now() - t0;
    expect(took).toBeLessThan(200);
    expect(n).toBeGreaterThan(5); // 1, 2, 4, 4, 4 ... ms apart
  });
});
