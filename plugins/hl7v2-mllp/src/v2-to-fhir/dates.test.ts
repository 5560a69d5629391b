import fc from 'fast-check';
import { parseDtm, toDate, toDateTime, toInstant, toTime } from './dates';

describe('DTM -> FHIR dates (DTM[dateTime] / TS[dateTime])', () => {
  test.each([
    ['1980', '1980'],
    ['198005', '1980-05'],
    ['19800515', '1980-05-15'],
    ['1980051512', '1980-05-15T12:00:00+01:00'],
    ['198005151230', '1980-05-15T12:30:00+01:00'],
    ['19800515123045', '1980-05-15T12:30:45+01:00'],
    ['19800515123045.1234', '1980-05-15T12:30:45.1234+01:00'],
    ['198005151230-0500', '1980-05-15T12:30:00-05:00'],
    ['20210817151943.4+0200', '2021-08-17T15:19:43.4+02:00'],
    ['198808181126+0215', '1988-08-18T11:26:00+02:15'],
    ['20240229', '2024-02-29'],
  ])('%s -> %s (precision and offset kept; default offset +01:00)', (v, out) => {
    expect(toDateTime(v, '+01:00')).toBe(out);
  });
  test.each(['', '19', '20230229', '20241301', '2024010125', '20240101+2500', 'abcd', '2024-01-01', '20240101123'])(
    'invalid %p -> undefined',
    (v) => {
      expect(toDateTime(v)).toBeUndefined();
    },
  );
  test('date, instant, time', () => {
    expect(toDate('198005151230+0100')).toBe('1980-05-15');
    expect(toDate('1980')).toBe('1980');
    expect(toInstant('198005', 'Z')).toBe('1980-05-01T00:00:00Z');
    expect(toTime('1230')).toBe('12:30:00');
  });
  test('property: any valid date/time round-trips to its digits', () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date('1900-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }),
        fc.integer({ min: 2, max: 7 }),
        (d, parts) => {
          const iso = d.toISOString();
          const dtm = (
            iso.slice(0, 4) +
            iso.slice(5, 7) +
            iso.slice(8, 10) +
            iso.slice(11, 13) +
            iso.slice(14, 16) +
            iso.slice(17, 19)
          ).slice(0, parts * 2);
          const p = parseDtm(dtm)!;
          expect(p).toBeDefined();
          expect(toDateTime(dtm, 'Z')!.replace(/\D/g, '').startsWith(dtm)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });
});
