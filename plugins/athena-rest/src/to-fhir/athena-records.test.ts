import type { Appointment, DiagnosticReport, Location, Observation, Patient, Practitioner } from '@medplum/fhirtypes';
import { validateBundle } from '@ferry/core';
import {
  athenaDateTimeToFhir,
  athenaDateToFhir,
  formatAthenaDateTime,
  wallTimeToInstant,
} from '@ferry/fhir-vendor-kit';
import { AthenaContentType, athenaEnvelopeToBundle, athenaHeaders, type AthenaEnvelope } from './athena-records';
import { AthenaRestTransform } from '../transforms/athena-rest.transform';

const P = '195900';
const pacific = {
  departmentid: '21',
  name: 'San Diego Clinic',
  timezone: -8,
  timezoneoffset: -8,
  timezonename: 'US/Pacific',
};
const eastern = { departmentid: '1', name: 'Boston', timezone: -4, timezoneoffset: -5, timezonename: 'US/Eastern' };
const msg = (env: AthenaEnvelope) => ({
  id: 'm1',
  seq: 1,
  sourceId: 's',
  contentType: AthenaContentType[env.kind],
  headers: {},
  receivedAt: new Date(),
  status: 'received' as const,
  body: Buffer.from(JSON.stringify(env)),
});
const t = new AthenaRestTransform();
const noLog = { logger: undefined as never };

describe('athena time', () => {
  it('parses MM/DD/YYYY (also JSON-escaped) and refuses garbage', () => {
    expect(athenaDateToFhir('01/15/1985')).toBe('1985-01-15');
    expect(athenaDateToFhir(JSON.parse('"02\\/27\\/2009"'))).toBe('2009-02-27');
    expect(() => athenaDateToFhir('1985-1-15x')).toThrow(/MM\/DD\/YYYY/);
    expect(athenaDateToFhir('')).toBeUndefined();
  });

  it('converts department-local wall time with the IANA zone, across DST, never the server zone', () => {
    // US/Pacific: PST (-8) until 2026-03-08 02:00, PDT (-7) after; back to PST on 2026-11-01 02:00.
    expect(wallTimeToInstant({ y: 2026, mo: 3, d: 7, h: 9, mi: 30, s: 0 }, 'US/Pacific').toISOString()).toBe(
      '2026-03-07T17:30:00.000Z',
    );
    expect(wallTimeToInstant({ y: 2026, mo: 3, d: 9, h: 9, mi: 30, s: 0 }, 'US/Pacific').toISOString()).toBe(
      '2026-03-09T16:30:00.000Z',
    );
    // gap: 02:30 does not exist on 03/08 -> read as 03:30 PDT
    expect(wallTimeToInstant({ y: 2026, mo: 3, d: 8, h: 2, mi: 30, s: 0 }, 'US/Pacific').toISOString()).toBe(
      '2026-03-08T10:30:00.000Z',
    );
    // overlap: 01:30 on 11/01 happens twice -> first (PDT) occurrence
    expect(wallTimeToInstant({ y: 2026, mo: 11, d: 1, h: 1, mi: 30, s: 0 }, 'US/Pacific').toISOString()).toBe(
      '2026-11-01T08:30:00.000Z',
    );
    expect(wallTimeToInstant({ y: 2026, mo: 11, d: 2, h: 1, mi: 30, s: 0 }, 'US/Pacific').toISOString()).toBe(
      '2026-11-02T09:30:00.000Z',
    );
    expect(formatAthenaDateTime(Date.parse('2026-07-04T16:05:09Z'), 'America/New_York')).toBe('07/04/2026 12:05:09');
    expect(athenaDateTimeToFhir('2023-08-10T14:59-0400', undefined)).toBe('2023-08-10T14:59:00-04:00');
    expect(() => athenaDateTimeToFhir('08/10/2023 14:59:00', undefined)).toThrow(/time zone/);
  });
});

describe('athena REST -> canonical FHIR', () => {
  it('maps a patient (reference fixture shape) to a valid Patient with per-practice identifiers', () => {
    const record = {
      patientid: '1',
      firstname: 'Mike',
      lastname: 'Smithfoo',
      dob: '01/15/1985',
      sex: 'M',
      status: 'active',
      departmentid: '1',
      email: 'foo@example.org',
      mobilephone: '8608105503',
      homephone: '8605555555',
      address1: '100 Main St',
      city: 'BOSTON',
      state: 'MA',
      zip: '02210',
      countrycode3166: 'US',
      maritalstatus: 'S',
      ssn: '*****3333',
      portalaccessgiven: true,
      balances: [{ balance: '-25.15', providergroupid: 1 }],
    };
    const bundle = t.toFhir(msg({ practiceid: P, kind: 'patient', record }), noLog) as any;
    expect(validateBundle(bundle)).toBeUndefined();
    expect(bundle.type).toBe('transaction');
    const pat = bundle.entry[0].resource as Patient;
    expect(pat.identifier).toEqual([
      expect.objectContaining({ system: 'urn:athenahealth:athenanet:patient:195900', value: '1' }),
      { system: 'https://fhir.athena.io/sid/ah-patient', value: 'a-195900.E-1' },
    ]);
    expect(pat).toMatchObject({
      id: 'athena-195900-patient-1',
      active: true,
      gender: 'male',
      birthDate: '1985-01-15',
      name: [{ use: 'official', family: 'Smithfoo', given: ['Mike'] }],
    });
    expect(pat.telecom).toEqual([
      { system: 'phone', value: '8605555555', use: 'home' },
      { system: 'phone', value: '8608105503', use: 'mobile' },
      { system: 'email', value: 'foo@example.org' },
    ]);
    expect(pat.address?.[0]).toMatchObject({
      line: ['100 Main St'],
      city: 'BOSTON',
      state: 'MA',
      postalCode: '02210',
      country: 'US',
    });
    expect(pat.maritalStatus?.coding?.[0]).toMatchObject({ code: 'S' });
    expect(JSON.stringify(pat)).not.toContain('3333'); // the masked SSN is not carried
    expect(bundle.entry[0].request).toEqual({
      method: 'PUT',
      url: `Patient?identifier=${encodeURIComponent('urn:athenahealth:athenanet:patient:195900|1')}`,
    });
    // deterministic: same input, byte-identical output
    expect(JSON.stringify(t.toFhir(msg({ practiceid: P, kind: 'patient', record }), noLog))).toBe(
      JSON.stringify(bundle),
    );
  });

  it('places a US/Pacific appointment at the right UTC instant on both sides of a DST change', () => {
    const appt = (date: string) => ({
      appointmentid: '3132',
      date,
      starttime: '09:30',
      duration: 30,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '1',
      providerid: 1,
      appointmenttypeid: '11',
      appointmenttype: 'FOLLOW UP 30 - Virtual',
    });
    const before = t.toFhir(
      msg({ practiceid: P, kind: 'appointment', record: appt('03/07/2026'), department: pacific }),
      noLog,
    ) as any;
    const after = t.toFhir(
      msg({ practiceid: P, kind: 'appointment', record: appt('03/09/2026'), department: pacific }),
      noLog,
    ) as any;
    const a1 = before.entry[0].resource as Appointment;
    const a2 = after.entry[0].resource as Appointment;
    expect(a1.start).toBe('2026-03-07T17:30:00.000Z');
    expect(a1.end).toBe('2026-03-07T18:00:00.000Z');
    expect(a2.start).toBe('2026-03-09T16:30:00.000Z');
    expect(a1).toMatchObject({
      status: 'booked',
      minutesDuration: 30,
      serviceType: [{ text: 'FOLLOW UP 30 - Virtual' }],
    });
    expect(a1.participant.map((p) => p.actor?.identifier)).toEqual([
      { system: 'urn:athenahealth:athenanet:patient:195900', value: '1' },
      { system: 'urn:athenahealth:athenanet:provider:195900', value: '1' },
      { system: 'urn:athenahealth:athenanet:department:195900', value: '21' },
    ]);
    expect(validateBundle(before)).toBeUndefined();
    // The same wall time in an Eastern department is 3 hours earlier in UTC.
    const east = t.toFhir(
      msg({
        practiceid: P,
        kind: 'appointment',
        record: { ...appt('03/09/2026'), departmentid: '1' },
        department: eastern,
      }),
      noLog,
    ) as any;
    expect(east.entry[0].resource.start).toBe('2026-03-09T13:30:00.000Z');
    // cancelled
    const x = t.toFhir(
      msg({
        practiceid: P,
        kind: 'appointment',
        record: { ...appt('03/09/2026'), appointmentstatus: 'x', cancelreasonname: 'PATIENT CANCELLED' },
        department: pacific,
      }),
      noLog,
    ) as any;
    expect(x.entry[0].resource).toMatchObject({
      status: 'cancelled',
      cancelationReason: { text: 'PATIENT CANCELLED' },
    });
    // no department zone: a clear input error, not a guess
    expect(() => t.toFhir(msg({ practiceid: P, kind: 'appointment', record: appt('03/09/2026') }), noLog)).toThrow(
      expect.objectContaining({ code: 'FERRY_E_INPUT_ATHENA_NO_TIMEZONE', kind: 'input' }),
    );
  });

  it('maps a changed lab result (int ids, ISO datetime) to a DiagnosticReport with Observations', () => {
    const record = {
      labresultid: 1083579,
      patientid: 71111,
      status: 'FINAL',
      observationdatetime: '2023-08-10T14:59:00-04:00',
      labresultloinc: '49580-4',
      description: 'HIV (1+2) Ab',
      analytes: [
        { analyteid: 907435, analytename: 'Result', value: 'Nonreactive' },
        {
          analyteid: 907436,
          analytename: 'Glucose',
          value: '105',
          units: 'mg/dL',
          abnormalflag: 'high',
          referencerange: '70-99',
          loinc: '2345-7',
          analytedatetime: '08/10/2023 14:59:00',
        },
      ],
    };
    const b = t.toFhir(msg({ practiceid: P, kind: 'labresult', record, department: eastern }), noLog) as any;
    expect(validateBundle(b)).toBeUndefined();
    const rep = b.entry[0].resource as DiagnosticReport;
    const o = b.entry.slice(1).map((e: any) => e.resource as Observation);
    expect(rep).toMatchObject({
      status: 'final',
      identifier: [{ value: '1083579' }],
      code: { coding: [{ system: 'http://loinc.org', code: '49580-4' }] },
      effectiveDateTime: '2023-08-10T14:59:00-04:00',
    });
    expect(rep.subject?.identifier).toEqual({ system: 'urn:athenahealth:athenanet:patient:195900', value: '71111' });
    expect(rep.result).toEqual(b.entry.slice(1).map((e: any) => ({ reference: e.fullUrl })));
    expect(o[0].valueString).toBe('Nonreactive');
    expect(o[1]).toMatchObject({
      valueQuantity: { value: 105, unit: 'mg/dL' },
      interpretation: [{ coding: [{ code: 'H' }] }],
      referenceRange: [{ text: '70-99' }],
      effectiveDateTime: '2023-08-10T18:59:00.000Z',
    });
  });

  it('maps departments to Locations and providers to Practitioners', () => {
    const loc = (
      t.toFhir(
        msg({
          practiceid: P,
          kind: 'department',
          record: {
            ...pacific,
            address: '1 Harbor Dr',
            city: 'SAN DIEGO',
            state: 'CA',
            zip: '92101',
            phone: '6195550100',
          },
        }),
        noLog,
      ) as any
    ).entry[0].resource as Location;
    expect(loc).toMatchObject({
      name: 'San Diego Clinic',
      extension: [{ valueCode: 'US/Pacific' }],
      address: { city: 'SAN DIEGO' },
    });
    const b = t.toFhir(
      msg({
        practiceid: P,
        kind: 'provider',
        record: { providerid: 7, firstname: 'Grace', lastname: 'Hopper', npi: 1679576722, providertype: 'NP' },
      }),
      noLog,
    ) as any;
    expect(validateBundle(b)).toBeUndefined();
    const pr = b.entry[0].resource as Practitioner;
    expect(pr.identifier).toEqual([
      { system: 'urn:athenahealth:athenanet:provider:195900', value: '7' },
      { system: 'http://hl7.org/fhir/sid/us-npi', value: '1679576722' },
    ]);
  });

  it('maps chart vaccines to valid Immunizations: completed, refused (not-done), historical, deleted (fields [U])', () => {
    const imm = (record: Record<string, unknown>) => {
      const b = t.toFhir(msg({ practiceid: P, kind: 'vaccine', record: { patientid: '5', ...record } }), noLog) as any;
      expect(validateBundle(b)).toBeUndefined();
      return b.entry[0].resource;
    };
    expect(
      imm({
        vaccineid: '1',
        description: 'Tdap',
        cvx: '115',
        administerdate: '01/02/2026',
        type: 'HISTORICAL',
        amount: '0.5',
        units: 'mL',
      }),
    ).toMatchObject({
      id: 'athena-195900-vaccine-1',
      status: 'completed',
      primarySource: false,
      occurrenceDateTime: '2026-01-02',
      doseQuantity: { value: 0.5, unit: 'mL' },
      patient: { identifier: { value: '5' } },
    });
    expect(imm({ vaccineid: '2', cvx: '187', status: 'REFUSED', refusedreason: 'declined' })).toMatchObject({
      status: 'not-done',
      statusReason: { text: 'declined' },
      occurrenceString: 'unknown',
      vaccineCode: { text: 'CVX 187' },
    });
    expect(imm({ vaccineid: '3', description: 'MMR', status: 'DELETED' }).status).toBe('entered-in-error');
    expect(() =>
      athenaEnvelopeToBundle({ practiceid: P, kind: 'vaccine', record: { patientid: '5', vaccineid: '4' } }),
    ).toThrow(/description or CVX/);
  });

  it('maps athena documents to valid DocumentReferences (created time in the department zone, fields [U])', () => {
    const b = t.toFhir(
      msg({
        practiceid: P,
        kind: 'document',
        department: pacific,
        record: {
          patientid: '5',
          adminid: '77',
          documentclass: 'ADMIN',
          documentsubclass: 'ADMIN_CONSENT',
          description: 'HIPAA consent',
          status: 'CLOSED',
          createddatetime: '07/01/2026 08:00:00',
          documentdate: '07/01/2026',
          departmentid: '21',
        },
      }),
      noLog,
    ) as any;
    expect(validateBundle(b)).toBeUndefined();
    expect(b.entry[0].resource).toMatchObject({
      resourceType: 'DocumentReference',
      id: 'athena-195900-document-77',
      status: 'current',
      docStatus: 'final',
      date: '2026-07-01T15:00:00.000Z',
      type: { coding: [{ code: 'ADMIN_CONSENT' }] },
      context: { period: { start: '2026-07-01' }, related: [{ identifier: { value: '21' } }] },
    });
    expect(
      athenaHeaders({
        practiceid: P,
        kind: 'document',
        record: { patientid: '5', clinicaldocumentid: '9', description: 'secret' },
      }),
    ).toMatchObject({ messageType: 'athena.document', controlId: expect.stringMatching(/^document:9:/) });
    const gone = t.toFhir(
      msg({
        practiceid: P,
        kind: 'document',
        record: { patientid: '5', clinicaldocumentid: '9', deleteddatetime: '07/02/2026 08:00:00' },
      }),
      noLog,
    ) as any;
    expect(gone.entry[0].resource).toMatchObject({ status: 'entered-in-error', docStatus: 'preliminary' });
    expect(gone.entry[0].resource.date).toBeUndefined(); // no department: no time zone for a local time
  });

  it('gives routing headers without PHI and a content-derived control id', () => {
    const env: AthenaEnvelope = {
      practiceid: P,
      kind: 'patient',
      feed: 'patients/changed',
      record: { patientid: '5', firstname: 'Ann', lastname: 'Lee' },
    };
    const h = athenaHeaders(env);
    expect(h).toMatchObject({
      messageType: 'athena.patient',
      sendingFacility: P,
      orderingKey: 'urn:athenahealth:athenanet:patient:195900|5',
    });
    expect(JSON.stringify(h)).not.toMatch(/Ann|Lee/);
    expect(athenaHeaders({ ...env, record: { lastname: 'Lee', firstname: 'Ann', patientid: '5' } }).controlId).toBe(
      h.controlId,
    );
    expect(athenaHeaders({ ...env, record: { ...env.record, lastname: 'Li' } }).controlId).not.toBe(h.controlId);
    expect(() => athenaEnvelopeToBundle({ practiceid: P, kind: 'patient', record: {} })).toThrow(/patientid/);
    expect(t.canHandle('application/vnd.athena.patient+json; charset=utf-8')).toBe(true);
    expect(t.canHandle('application/json')).toBe(false);
  });
});
