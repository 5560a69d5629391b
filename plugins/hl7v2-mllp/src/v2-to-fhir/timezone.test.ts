/**
 * `defaultTimezone` / `sourceTimezones` (issue #22 item 10): IANA zones resolved per timestamp (DST), fixed
 * offsets still accepted. IG DTM[dateTime] / TS[dateTime]: the offset is kept when sent; FHIR requires one with a time.
 */
import type { Appointment, Bundle, Patient } from '@medplum/fhirtypes';
import { parseHl7 } from '../hl7v2/parser';
import { conversionConfigSchema, conversionOptions } from './conversion.schema';
import { convertMessage } from './convert';
import { parseDtm, toDateTime, toInstant } from './dates';
import { Hl7v2Transform } from '../transforms/hl7v2-to-fhir.transform';
import { isTimezone, zoneResolver } from './timezone';

const NY = zoneResolver('America/New_York');
const dt = (v: string, zone: string) => toDateTime(v, zoneResolver(zone));

describe('zoneResolver: IANA zones per timestamp', () => {
  test('New York: 10:00 in January is -05:00, in July -04:00 (the issue: 10:00 must not become 05:00 local)', () => {
    expect(toDateTime('202401151000', NY)).toBe('2024-01-15T10:00:00-05:00');
    expect(toDateTime('202407151000', NY)).toBe('2024-07-15T10:00:00-04:00');
    expect(Date.parse(toDateTime('202407151000', NY)!)).toBe(Date.parse('2024-07-15T14:00:00Z'));
  });
  test('DST edges (2024-03-10 02:00 -> 03:00, 2024-11-03 02:00 -> 01:00)', () => {
    expect(toDateTime('202403100159', NY)).toBe('2024-03-10T01:59:00-05:00');
    expect(toDateTime('202403100300', NY)).toBe('2024-03-10T03:00:00-04:00');
    // the skipped hour: the offset before the change (names 03:30 EDT)
    expect(Date.parse(toDateTime('202403100230', NY)!)).toBe(Date.parse('2024-03-10T03:30:00-04:00'));
    // the repeated hour: its first occurrence (EDT)
    expect(toDateTime('202411030130', NY)).toBe('2024-11-03T01:30:00-04:00');
    expect(toDateTime('202411030200', NY)).toBe('2024-11-03T02:00:00-05:00');
  });
  test('other zones: half-hour offsets, southern hemisphere, UTC-like', () => {
    expect(dt('202401151000', 'Asia/Kolkata')).toBe('2024-01-15T10:00:00+05:30');
    expect(dt('202401151000', 'Australia/Sydney')).toBe('2024-01-15T10:00:00+11:00');
    expect(dt('202407151000', 'Australia/Sydney')).toBe('2024-07-15T10:00:00+10:00');
    expect(dt('202407151000', 'Europe/London')).toBe('2024-07-15T10:00:00+01:00');
    expect(dt('202401151000', 'Europe/London')).toBe('2024-01-15T10:00:00+00:00');
  });
  test('an offset sent with the time is kept; dates without a time take none; instants zero-fill then resolve', () => {
    expect(toDateTime('202407151000-0700', NY)).toBe('2024-07-15T10:00:00-07:00');
    expect(toDateTime('20240715', NY)).toBe('2024-07-15');
    expect(toInstant('20240715', NY)).toBe('2024-07-15T00:00:00-04:00');
    expect(toInstant('2024011510', NY)).toBe('2024-01-15T10:00:00-05:00');
  });
  test('fixed offsets stay strings; unknown zones are refused with a clear message', () => {
    expect(zoneResolver('Z')).toBe('Z');
    expect(zoneResolver('-05:00')).toBe('-05:00');
    expect(toDateTime('202407151000', '-05:00')).toBe('2024-07-15T10:00:00-05:00');
    expect(isTimezone('America/New_York')).toBe(true);
    expect(isTimezone('Mars/Olympus')).toBe(false);
    expect(isTimezone('+15:00')).toBe(false);
    expect(() => zoneResolver('Mars/Olympus')).toThrow(/unknown time zone "Mars\/Olympus"/);
    expect(() => conversionOptions({ defaultTimezone: 'EST5EDT-nope' })).toThrow(/conversion.defaultTimezone/);
    expect(() => conversionOptions({ sourceTimezones: { adt: 'Nowhere/City' } })).toThrow(
      /conversion.sourceTimezones.adt/,
    );
    expect(() => conversionConfigSchema.conversion.defaultTimezone.format('Mars/Olympus')).toThrow(/IANA/);
    expect(() => conversionConfigSchema.conversion.defaultTimezone.format('America/Chicago')).not.toThrow();
    expect(parseDtm('202401151000')?.tz).toBeUndefined();
  });
});

describe('conversion with defaultTimezone / sourceTimezones', () => {
  const msg = (msh7: string) =>
    [
      `MSH|^~\\&|Sched|Clinic|EHR|Hosp|${msh7}||SIU^S12^SIU_S12|C1|P|2.5.1`,
      'SCH|A1^SCHED|A1^SCHED|||||ROUTINE^Routine^HL70276||60|min|^^^202407151000^202407151100',
      'PID|1||12345^^^MRN^MR||Everyman^Adam||198001150830|M',
    ].join('\r');
  const convert = (text: string, opts: object, sourceId?: string): Bundle =>
    convertMessage(parseHl7(text), opts, sourceId);
  const appt = (b: Bundle) =>
    b.entry!.map((e) => e.resource!).find((r) => r.resourceType === 'Appointment') as Appointment;
  const patient = (b: Bundle) => b.entry!.map((e) => e.resource!).find((r) => r.resourceType === 'Patient') as Patient;

  test('IANA default: a July 10:00 appointment is 10:00-04:00, a January birth time -05:00 (per timestamp)', () => {
    const b = convert(msg('20240701090000'), { defaultTimezone: 'America/New_York' });
    expect(appt(b).start).toBe('2024-07-15T10:00:00-04:00');
    expect(appt(b).end).toBe('2024-07-15T11:00:00-04:00');
    const birthTime = (patient(b) as Patient & { _birthDate?: { extension: { valueDateTime: string }[] } })._birthDate!
      .extension[0].valueDateTime;
    expect(birthTime).toBe('1980-01-15T08:30:00-05:00');
    expect(b.timestamp).toBe('2024-07-01T09:00:00-04:00');
  });
  test("an IANA zone wins over MSH-7's single offset for times sent without one (DST differs per timestamp)", () => {
    const b = convert(msg('20240701090000-0400'), { defaultTimezone: 'America/New_York' });
    const birthTime = (patient(b) as Patient & { _birthDate?: { extension: { valueDateTime: string }[] } })._birthDate!
      .extension[0].valueDateTime;
    expect(birthTime).toBe('1980-01-15T08:30:00-05:00');
    expect(b.timestamp).toBe('2024-07-01T09:00:00-04:00');
  });
  test("a fixed default: MSH-7's offset first (HL7 v2), then the fixed offset; no config: Z", () => {
    expect(appt(convert(msg('20240701090000+0200'), { defaultTimezone: '-05:00' })).start).toBe(
      '2024-07-15T10:00:00+02:00',
    );
    expect(appt(convert(msg('20240701090000'), { defaultTimezone: '-05:00' })).start).toBe('2024-07-15T10:00:00-05:00');
    expect(appt(convert(msg('20240701090000'), {})).start).toBe('2024-07-15T10:00:00Z');
  });
  test('sourceTimezones: the zone of the source the message came in on (Hl7v2Transform.toFhir passes its sourceId)', () => {
    const t = new Hl7v2Transform({
      conversion: {
        defaultTimezone: 'UTC',
        sourceTimezones: { 'mllp-chicago': 'America/Chicago', 'file-berlin': 'Europe/Berlin' },
      },
    });
    const body = Buffer.from(msg('20240701090000'));
    const at = (sourceId: string) =>
      appt(
        t.toFhir({
          id: 'm1',
          seq: 1,
          sourceId,
          contentType: 'application/hl7-v2',
          body,
          headers: {},
          receivedAt: new Date(0),
          status: 'received',
        }),
      ).start;
    expect(at('mllp-chicago')).toBe('2024-07-15T10:00:00-05:00');
    expect(at('file-berlin')).toBe('2024-07-15T10:00:00+02:00');
    expect(at('other')).toBe('2024-07-15T10:00:00+00:00');
  });
});
