import { FerryError } from '../errors';
import { silentLogger } from '../logging/logger';
import { retryTransient } from './retry-transient';

const transient = () => new FerryError('TRANSIENT_STORE_CONNECTION', 'connection lost', { kind: 'transient' });

describe('retryTransient', () => {
  it('tries again after transient failures and returns the first success', async () => {
    let n = 0;
    const v = await retryTransient(async () => (++n < 3 ? Promise.reject(transient()) : 'ok'), { what: 'x', logger: silentLogger(), firstDelayMs: 1 });
    expect(v).toBe('ok');
    expect(n).toBe(3);
  });

  it('throws other errors at once, and the last transient one after the attempts', async () => {
    let n = 0;
    const bad = new FerryError('INTERNAL_STORE_NO_DELIVERY', 'no delivery', { kind: 'internal' });
    await expect(retryTransient(async () => Promise.reject((n++, bad)), { what: 'x', logger: silentLogger(), firstDelayMs: 1 })).rejects.toBe(bad);
    expect(n).toBe(1);
    n = 0;
    await expect(retryTransient(async () => Promise.reject((n++, transient())), { what: 'x', logger: silentLogger(), attempts: 4, firstDelayMs: 1 })).rejects.toMatchObject({ code: 'FERRY_E_TRANSIENT_STORE_CONNECTION' });
    expect(n).toBe(4);
    // Not a FerryError: not known to be transient.
    n = 0;
    await expect(retryTransient(async () => Promise.reject((n++, new Error('boom'))), { what: 'x', logger: silentLogger(), firstDelayMs: 1 })).rejects.toThrow('boom');
    expect(n).toBe(1);
  });
});
