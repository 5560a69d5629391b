import type { Bundle } from '@medplum/fhirtypes';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice } from '../../../../test/simulators/athena';
import { configFor, sinkContext } from '../../../../test/simulators/athena';
import { athenaEnvelopeToBundle } from '../to-fhir/athena-records';
import { AthenaRestSink, athenaRestSinkSchema, type AthenaRestSinkConfig } from './athena-rest.sink';

let sim: AthenaSimulator;
beforeAll(async () => {
  sim = await AthenaSimulator.start();
  seedPractice(sim);
});
afterAll(async () => {
  await sim.stop();
});

const sink = (extra: Record<string, unknown> = {}) =>
  new AthenaRestSink(
    sinkContext(
      'athena-out',
      configFor<AthenaRestSinkConfig>(athenaRestSinkSchema, sim, { departmentId: '1', ...extra }),
    ),
  );
let seq = 0;
const delivery = (bundle: Bundle, attempt = 1) => ({
  deliveryId: `d${++seq}`,
  attempt,
  routeId: 'r',
  bundle,
  message: {
    id: 'm',
    seq: 1,
    sourceId: 's',
    contentType: 'x',
    headers: {},
    receivedAt: new Date(),
    status: 'routed' as const,
  },
});

/** A canonical Patient bundle from elsewhere (no athena id). */
const newPatient = (given: string, family: string, birthDate = '1990-02-03'): Bundle => ({
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [
    {
      fullUrl: 'urn:uuid:11111111-1111-4111-8111-111111111111',
      resource: {
        resourceType: 'Patient',
        identifier: [{ system: 'urn:oid:1.2.3', value: `${given}-mrn` }],
        name: [{ use: 'official', family, given: [given] }],
        gender: 'female',
        birthDate,
        telecom: [{ system: 'phone', value: '6175550000', use: 'home' }],
        address: [{ line: ['1 Elm St'], city: 'Boston', state: 'MA', postalCode: '02110' }],
      },
    },
  ],
});

describe('athena-rest sink', () => {
  it('creates a patient with a form-encoded POST, and a redelivery reconciles by reading instead of creating again', async () => {
    const s = sink();
    await s.deliver(delivery(newPatient('Jane', 'Roe')));
    expect(s.lastReport!.patients.created).toHaveLength(1);
    const post = sim.apiRequests('/patients').find((r) => r.method === 'POST')!;
    expect(post.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(Object.fromEntries(new URLSearchParams(post.body))).toMatchObject({
      firstname: 'Jane',
      lastname: 'Roe',
      dob: '02/03/1990',
      sex: 'F',
      departmentid: '1',
      zip: '02110',
    });
    const id = s.lastReport!.patients.created[0];
    await s.deliver(delivery(newPatient('Jane', 'Roe'), 2));
    expect(s.lastReport!.patients).toEqual({ created: [], updated: [id] });
    expect([...sim.practice(PRACTICE).patients.values()].filter((p) => p.lastname === 'Roe')).toHaveLength(1);
  });

  it('a create whose answer is lost (timeout) is not blindly retried; the next attempt finds it and updates', async () => {
    const slow = sink({ timeoutMs: 150 });
    sim.setLatency(400, { method: 'POST', match: /\/patients$/ });
    try {
      const err = await slow.deliver(delivery(newPatient('Tim', 'Out'))).catch((e) => e);
      expect(err).toMatchObject({ code: 'FERRY_E_DELIVERY_ATHENA', retryable: true });
      // the search (GET) may be retried; the POST went out exactly once
      expect(
        sim
          .apiRequests('/patients')
          .filter((r) => r.method === 'POST' && new URLSearchParams(r.body).get('lastname') === 'Out'),
      ).toHaveLength(1);
    } finally {
      sim.setLatency(0);
    }
    const s = sink();
    await s.deliver(delivery(newPatient('Tim', 'Out'), 2));
    expect(s.lastReport!.patients.created).toEqual([]);
    expect(s.lastReport!.patients.updated).toHaveLength(1);
    expect([...sim.practice(PRACTICE).patients.values()].filter((p) => p.lastname === 'Out')).toHaveLength(1);
  });

  it('updates a patient that carries its athena identifier (REST or FHIR id scheme) with PUT', async () => {
    const rec = sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '700' }));
    const bundle = athenaEnvelopeToBundle({
      practiceid: PRACTICE,
      kind: 'patient',
      record: { ...rec, city: 'CAMBRIDGE' },
    });
    const s = sink();
    await s.deliver(delivery(bundle));
    expect(s.lastReport!.patients.updated).toEqual(['700']);
    expect(sim.practice(PRACTICE).patients.get('700')!.city).toBe('CAMBRIDGE');
    const fhirId: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: {
            resourceType: 'Patient',
            identifier: [{ system: 'https://fhir.athena.io/sid/ah-patient', value: `a-${PRACTICE}.E-700` }],
            name: [{ family: 'Patient1', given: ['Test1'] }],
            birthDate: '1985-01-15',
            address: [{ city: 'SOMERVILLE' }],
          },
        },
      ],
    };
    await s.deliver(delivery(fhirId));
    expect(sim.practice(PRACTICE).patients.get('700')!.city).toBe('SOMERVILLE');
  });

  it('books an open slot and cancels it; repeated writes are recognised by reading the appointment first', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(2, { patientid: '701' }));
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '8001',
      date: '04/01/2026',
      starttime: '10:00',
      duration: 20,
      departmentid: '21',
      appointmentstatus: 'o',
      providerid: '1',
      appointmenttypeid: '11',
    });
    const appt = (status: 'f' | 'x') =>
      athenaEnvelopeToBundle({
        practiceid: PRACTICE,
        kind: 'appointment',
        record: {
          appointmentid: '8001',
          date: '04/01/2026',
          starttime: '10:00',
          duration: 20,
          departmentid: '21',
          appointmentstatus: status,
          patientid: '701',
          providerid: '1',
          appointmenttypeid: '11',
          cancelreasonname: 'PATIENT CANCELLED',
        },
        department: { timezonename: 'US/Pacific' },
      });
    const s = sink();
    await s.deliver(delivery(appt('f')));
    expect(s.lastReport!.appointments.booked).toEqual(['8001']);
    expect(sim.practice(PRACTICE).appointments.get('8001')).toMatchObject({ appointmentstatus: 'f', patientid: '701' });
    await s.deliver(delivery(appt('f'), 2));
    expect(s.lastReport!.appointments.unchanged).toEqual(['8001']);
    await s.deliver(delivery(appt('x')));
    expect(s.lastReport!.appointments.cancelled).toEqual(['8001']);
    expect(sim.practice(PRACTICE).appointments.get('8001')!.appointmentstatus).toBe('x');
    await s.deliver(delivery(appt('x'), 2));
    expect(s.lastReport!.appointments.unchanged).toEqual(['8001']);
    expect(sim.apiRequests('/appointments/8001/cancel')).toHaveLength(1);
  });

  it('treats 200 {success:false} as a permanent failure and 4xx as non-retryable', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(3, { patientid: '702' }));
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '8002',
      date: '04/02/2026',
      starttime: '10:00',
      duration: 20,
      departmentid: '21',
      appointmentstatus: 'f',
      patientid: '999',
      providerid: '1',
    });
    const b = athenaEnvelopeToBundle({
      practiceid: PRACTICE,
      kind: 'appointment',
      record: {
        appointmentid: '8002',
        date: '04/02/2026',
        starttime: '10:00',
        departmentid: '21',
        appointmentstatus: 'x',
        patientid: '702',
      },
      department: { timezonename: 'US/Pacific' },
    });
    const err = await sink()
      .deliver(delivery(b))
      .catch((e) => e);
    expect(err).toMatchObject({
      code: 'FERRY_E_DELIVERY_ATHENA',
      retryable: false,
      details: { cause: 'FERRY_E_ATHENA_WRITE_REFUSED' },
    });
    expect(JSON.stringify(err.message)).not.toMatch(/patient does not match/); // vendor text kept out of the message
    // unknown patient on update -> 404 -> permanent
    const ghost = athenaEnvelopeToBundle({
      practiceid: PRACTICE,
      kind: 'patient',
      record: { patientid: '123456', firstname: 'No', lastname: 'Body', dob: '01/01/2000' },
    });
    await expect(sink().deliver(delivery(ghost))).rejects.toMatchObject({ retryable: false, details: { status: 404 } });
    // a 503 on a read is retried inside the call; a 503 storm ends retryable
    sim.inject({ status: 503, times: 10, match: /\/patients\/702$/ });
    const p702 = athenaEnvelopeToBundle({
      practiceid: PRACTICE,
      kind: 'patient',
      record: { patientid: '702', firstname: 'Test3', lastname: 'Patient3', dob: '01/15/1985' },
    });
    await expect(
      sink({ callRetry: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 20, maxRetryAfterMs: 100 } }).deliver(
        delivery(p702),
      ),
    ).rejects.toMatchObject({ retryable: true });
    sim.faults.length = 0;
  });

  it('posts a lab result document once, even when the delivery is repeated', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(4, { patientid: '703' }));
    const bundle = athenaEnvelopeToBundle({
      practiceid: 'ext-lab',
      kind: 'labresult',
      record: {
        labresultid: 'L-77',
        patientid: '703',
        status: 'final',
        observationdatetime: '2026-02-10T09:00:00-05:00',
        labresultloinc: '2345-7',
        description: 'Glucose',
        analytes: [{ analyteid: 'A1', analytename: 'Glucose', value: '99', units: 'mg/dL', loinc: '2345-7' }],
      },
    });
    // point the subject at the athena patient
    for (const e of bundle.entry!)
      (e.resource as any).subject = {
        identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: '703' },
      };
    const s = sink();
    await s.deliver(delivery(bundle));
    expect(s.lastReport!.labresults.created).toHaveLength(1);
    const post = sim.apiRequests('/patients/703/documents/labresult')[0];
    const form = Object.fromEntries(new URLSearchParams(post.body));
    expect(form).toMatchObject({ departmentid: '1', labresultloinc: '2345-7', observationdate: '02/10/2026' });
    expect(JSON.parse(form.analytes)).toEqual([
      expect.objectContaining({ analytename: 'Glucose', value: 99, units: 'mg/dL', loinc: '2345-7' }),
    ]);
    expect(form.accessionid).toBeUndefined(); // not in the reference's shapes (1.4, 1.10)
    await s.deliver(delivery(bundle, 2));
    expect(s.lastReport!.labresults.existing).toHaveLength(1);
    expect(sim.apiRequests('/patients/703/documents/labresult')).toHaveLength(1);
    // the chart answers only the documented fields: the guard matched on LOINC, date and analytes
    const chart = sim.apiRequests('/chart/703/labresults').at(-1)!;
    expect(chart.query.get('startdate')).toBe('02/10/2026');
  });

  it('a replayed lab result write-back whose first answer was lost is not posted twice; another value the same day is', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(5, { patientid: '704' }));
    const result = (value: string) => {
      const b = athenaEnvelopeToBundle({
        practiceid: 'ext-lab',
        kind: 'labresult',
        record: {
          labresultid: `L-${value}`,
          patientid: '704',
          status: 'final',
          observationdatetime: '2026-03-11T09:00:00-05:00',
          labresultloinc: '718-7',
          description: 'Hemoglobin',
          analytes: [{ analyteid: 'A1', analytename: 'Hemoglobin', value, units: 'g/dL', loinc: '718-7' }],
        },
      });
      for (const e of b.entry!)
        (e.resource as any).subject = {
          identifier: { system: `urn:athenahealth:athenanet:patient:${PRACTICE}`, value: '704' },
        };
      return b;
    };
    const posts = () => sim.apiRequests('/patients/704/documents/labresult').filter((r) => r.method === 'POST').length;
    sim.setLatency(400, { method: 'POST', match: /documents\/labresult$/ });
    try {
      await expect(sink({ timeoutMs: 150 }).deliver(delivery(result('13.2')))).rejects.toMatchObject({
        retryable: true,
      });
    } finally {
      sim.setLatency(0);
    }
    await new Promise((r) => setTimeout(r, 400)); // athena finished the write the client gave up on
    expect(posts()).toBe(1);
    const s = sink();
    await s.deliver(delivery(result('13.2'), 2));
    expect(s.lastReport!.labresults).toMatchObject({ created: [], existing: [expect.any(String)] });
    expect(posts()).toBe(1);
    await s.deliver(delivery(result('11.9')));
    expect(s.lastReport!.labresults.created).toHaveLength(1);
    expect(posts()).toBe(2);
    expect(sim.practice(PRACTICE).labresults.get('704')).toHaveLength(2);
  });
});
