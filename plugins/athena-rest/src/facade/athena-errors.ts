/** The athena facade provider's error mapping: athena's refusals as facade issues. */
import { FerryError, facadeError } from '@ferry/core';
import { athenaErrorText } from '@ferry/fhir-vendor-kit';

/** Vendor calls with their refusals mapped (404 -> not found, other 4xx -> invalid with athena's reason). */
export async function callAthena<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!FerryError.is(e)) throw e;
    if (e.details?.facadeIssue) throw e;
    const status = e.details?.status as number | undefined;
    if (status === 404) throw facadeError('not-found', 'not found at athena', {}, e);
    if (e.code === 'FERRY_E_ATHENA_WRITE_REFUSED') {
      const text = String(e.details?.errormessage ?? '');
      if (
        /not open|already (booked|scheduled|checked in|cancel)|cannot be checked in|slot.*(taken|unavailable)/i.test(
          text,
        )
      )
        throw facadeError('conflict', `athena refused: ${text}`, { vendorMessage: text }, e);
      throw facadeError('invalid', `athena refused: ${text}`, { vendorMessage: text }, e);
    }
    if (status && status >= 400 && status < 500 && status !== 401 && status !== 403 && status !== 429) {
      const text = athenaErrorText(e);
      if (/already (checked in|cancel)|cannot be checked in/i.test(text))
        throw facadeError('conflict', `athena refused: ${text}`, { vendorMessage: text }, e);
      throw facadeError(
        'invalid',
        `athena refused the request (${status})${text ? `: ${text}` : ''}`,
        { vendorMessage: text },
        e,
      );
    }
    throw e;
  }
}
