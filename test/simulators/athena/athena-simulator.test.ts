/** The simulator keeps the reference's rules (vendor-apis.md §1–2), checked with plain fetch. */
import type { Bundle, Patient } from '@medplum/fhirtypes';
import { AthenaSimulator, PRACTICE, samplePatient, seedPractice, type Json } from '.';

// Shapes of the answers read below (vendor-apis.md §1): only the fields these tests look at.
interface TokenAnswer {
  access_token: string;
  token_type: string;
  /** A string or a number, depending on the answer. */
  expires_in: string | number;
}
interface AthenaError {
  error: string;
  detailedmessage?: string;
}
/** `limit`/`offset` paging: the list under `key`, relative `next`/`previous` links. */
type AthenaPage<K extends string, T = Json> = { [key in K]: T[] } & {
  totalcount: number;
  next?: string;
  previous?: string;
};
interface Department {
  departmentid: string;
  timezonename: string;
}
interface Provider {
  /** A number in athena's list (mixed types). */
  providerid: number;
}
interface AthenaAppointment {
  appointmentid: string;
}
type Departments = AthenaPage<'departments', Department>;
type ChangedAppointments = AthenaPage<'appointments', AthenaAppointment>;
interface SubscriptionStatus {
  status: 'ACTIVE' | 'PARTIAL' | 'INACTIVE';
  subscriptions: { eventname: string }[];
}

/** A response body, typed as what the endpoint answers (JSON is not checked at run time). */
const json = async <T>(r: Response): Promise<T> => (await r.json()) as T;

let sim: AthenaSimulator;
let token: string;
beforeAll(async () => {
  sim = await AthenaSimulator.start({ defaultLimit: 2 });
  seedPractice(sim);
  const res = await fetch(sim.tokenUrl, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from('ferry-client:ferry-secret').toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials&scope=athena%2Fservice%2FAthenanet.MDP.*%20system%2FPatient.read',
  });
  const body = await json<TokenAnswer>(res);
  expect(body).toMatchObject({ token_type: 'Bearer', expires_in: '3600' }); // expires_in as a string
  token = body.access_token;
});
afterAll(() => sim.stop());

const get = async <T>(path: string): Promise<{ status: number; body: T }> => {
  const r = await fetch(`${sim.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: r.status, body: await json<T>(r) };
};

describe('athena simulator', () => {
  it('refuses bad credentials and missing bearers like athena', async () => {
    const bad = await fetch(sim.tokenUrl, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from('ferry-client:nope').toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    expect(bad.status).toBe(401);
    const r = await fetch(`${sim.url}/v1/${PRACTICE}/departments`);
    expect(r.status).toBe(401);
    expect((await json<AthenaError>(r)).error).toBe('Developer Inactive');
    expect((await get<AthenaError>('/v1/195900/nowhere')).body.error).toMatch(/Service not registered/);
  });

  it('wraps single reads in arrays, pages lists with relative next links including /v1/{practiceid}', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(1, { patientid: '1' }));
    const one = await get<Json[]>(`/v1/${PRACTICE}/patients/1`);
    expect(Array.isArray(one.body)).toBe(true);
    const page1 = await get<Departments>(`/v1/${PRACTICE}/departments?limit=1`);
    expect(page1.body).toMatchObject({ totalcount: 2, next: `/v1/${PRACTICE}/departments?limit=1&offset=1` });
    const page2 = await get<Departments>(page1.body.next!); // checked just above
    expect(page2.body.departments[0].timezonename).toBe('US/Pacific');
    expect(page2.body.next).toBeUndefined();
    expect(page2.body.previous).toBe(`/v1/${PRACTICE}/departments?limit=1&offset=0`);
    // providers carry numeric ids (mixed types)
    expect(
      typeof (await get<AthenaPage<'providers', Provider>>(`/v1/${PRACTICE}/providers`)).body.providers[0].providerid,
    ).toBe('number');
  });

  it('models the changed feed: 403 until subscribed, peek with leaveunprocessed, dequeue, re-read the processed window', async () => {
    const f = await get<AthenaError>(`/v1/${PRACTICE}/appointments/changed`);
    expect(f.status).toBe(403);
    expect(f.body.detailedmessage).toContain('Changed messages require setup (subscription) that has not been done.');
    const sub = await fetch(`${sim.url}/v1/${PRACTICE}/appointments/changed/subscription`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    });
    expect(await sub.json()).toEqual({ success: true });
    expect((await get<SubscriptionStatus>(`/v1/${PRACTICE}/appointments/changed/subscription`)).body.status).toBe(
      'ACTIVE',
    );
    sim.upsertAppointment(PRACTICE, {
      appointmentid: '1',
      date: '01/02/2026',
      starttime: '09:00',
      departmentid: '1',
      appointmentstatus: 'f',
      patientid: '1',
    });
    const peek = await get<ChangedAppointments>(`/v1/${PRACTICE}/appointments/changed?leaveunprocessed=true`);
    expect(peek.body.appointments).toHaveLength(1);
    const deq = await get<ChangedAppointments>(`/v1/${PRACTICE}/appointments/changed`);
    expect(deq.body.appointments).toHaveLength(1);
    expect((await get<ChangedAppointments>(`/v1/${PRACTICE}/appointments/changed`)).body.appointments).toHaveLength(0);
    const now = Date.now();
    const fmt = (ms: number) =>
      new Intl.DateTimeFormat('en-US', {
        timeZone: 'America/New_York',
        hourCycle: 'h23',
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
      })
        .format(new Date(ms))
        .replace(',', '');
    const win = await get<ChangedAppointments>(
      `/v1/${PRACTICE}/appointments/changed?showprocessedstartdatetime=${encodeURIComponent(fmt(now - 60_000))}&showprocessedenddatetime=${encodeURIComponent(fmt(now + 1000))}`,
    );
    expect(win.body.appointments.map((a) => a.appointmentid)).toEqual(['1']);
  });

  it('answers 200 {success:false} on a refused write, and FHIR searches need ah-practice', async () => {
    const r = await fetch(`${sim.url}/v1/${PRACTICE}/patients/1/documents/labresult`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'observationdate=01/02/2026',
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ success: false, errormessage: 'departmentid is required' });
    expect((await get('/fhir/r4/Patient?family=Patient1')).status).toBe(400);
    const ok = await get<Bundle<Patient>>(`/fhir/r4/Patient?ah-practice=Organization/a-1.Practice-${PRACTICE}`);
    expect(ok.body.entry?.[0]?.resource?.id).toBe(`a-${PRACTICE}.E-1`);
  });

  it('keeps the per-type search parameters of the CapabilityStatement (2.3) and the token scopes (1.2, 2.1)', async () => {
    const practice = `ah-practice=a-1.Practice-${PRACTICE}`;
    // Patient lists no _lastUpdated: a server that follows the reference refuses it
    const lu = await get<{ issue: { details: { text: string } }[] }>(
      `/fhir/r4/Patient?${practice}&_lastUpdated=ge2026-01-01T00:00:00Z`,
    );
    expect(lu.status).toBe(400);
    expect(lu.body.issue[0].details.text).toMatch(/_lastUpdated is not supported for Patient/);
    expect((await get(`/fhir/r4/Patient?${practice}&_id=a-${PRACTICE}.E-1`)).status).toBe(200);
    // the token has no system/Condition.read
    const cond = await get<{ issue: { details: { text: string } }[] }>(
      `/fhir/r4/Condition?${practice}&_lastUpdated=ge2026-01-01T00:00:00Z`,
    );
    expect(cond.status).toBe(403);
    expect(cond.body.issue[0].details.text).toBe('The access token lacks system/Condition.read');
  });

  it('serves chart sections with departmentid required and paging (1.4), and lab results in the documented shape', async () => {
    sim.upsertPatient(PRACTICE, samplePatient(7, { patientid: '77' }));
    sim.setChart(PRACTICE, '77', 'problems', [
      { problemid: '1', name: 'A' },
      { problemid: '2', name: 'B' },
      { problemid: '3', name: 'C' },
    ]);
    expect((await get(`/v1/${PRACTICE}/chart/77/problems`)).status).toBe(400);
    const page = await get<AthenaPage<'problems'>>(`/v1/${PRACTICE}/chart/77/problems?departmentid=1`);
    expect(page.body.problems).toHaveLength(2); // defaultLimit 2
    expect(page.body.next).toBe(`/v1/${PRACTICE}/chart/77/problems?departmentid=1&limit=2&offset=2`);
    sim.addLabResult(PRACTICE, '77', {
      departmentid: '1',
      observationdatetime: '2026-02-10T09:00:00-05:00',
      labresultloinc: '2345-7',
      description: 'Glucose',
      accessionid: 'X-1',
      analytes: [{ analytename: 'Glucose', value: 99 }],
    });
    const labs = await get<AthenaPage<'results'>>(`/v1/${PRACTICE}/chart/77/labresults?departmentid=1`);
    expect(Object.keys(labs.body.results[0]).sort()).toEqual([
      'analytes',
      'description',
      'labresultdatetime',
      'labresultid',
      'labresultloinc',
    ]); // no accessionid
    expect(labs.body.results[0]).toMatchObject({
      labresultdatetime: '02/10/2026 09:00:00',
      analytes: [{ analytename: 'Glucose', value: '99', analytedatetime: '02/10/2026 09:00:00' }],
    });
  });

  it('serves vaccines, admin documents and clinical document creates (1.4), and check-in ([U], refusal style configurable)', async () => {
    const post = async <T>(path: string, form: Record<string, string>): Promise<{ status: number; body: T }> => {
      const r = await fetch(`${sim.url}/v1/${PRACTICE}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form).toString(),
      });
      return { status: r.status, body: await json<T>(r) };
    };
    sim.upsertPatient(PRACTICE, samplePatient(8, { patientid: '88' }));
    sim.setChart(PRACTICE, '88', 'vaccines', [
      { vaccineid: '5', description: 'Tdap', cvx: '115', administerdate: '01/02/2026' },
    ]);
    expect((await get(`/v1/${PRACTICE}/chart/88/vaccines`)).status).toBe(400);
    expect(
      (await get<AthenaPage<'vaccines'>>(`/v1/${PRACTICE}/chart/88/vaccines?departmentid=1`)).body.vaccines,
    ).toEqual([{ vaccineid: '5', description: 'Tdap', cvx: '115', administerdate: '01/02/2026' }]);

    sim.addDocument(PRACTICE, '88', { documentclass: 'ADMIN', documentsubclass: 'ADMIN_CONSENT', departmentid: '1' });
    expect((await get(`/v1/${PRACTICE}/patients/88/documents/admin`)).status).toBe(400);
    const admins = await get<AthenaPage<'admins'>>(`/v1/${PRACTICE}/patients/88/documents/admin?departmentid=1`);
    expect(admins.body.admins).toHaveLength(1);
    expect(admins.body.admins[0]).toMatchObject({
      documentclass: 'ADMIN',
      documentsubclass: 'ADMIN_CONSENT',
      adminid: expect.any(String),
      patientid: '88',
    });
    const refused = await post<{ success: boolean; errormessage: string }>('/documents/clinicaldocument', {
      patientid: '88',
      departmentid: '1',
      documentsubclass: 'NOPE',
    });
    expect(refused).toEqual({ status: 200, body: { success: false, errormessage: 'Invalid documentsubclass: NOPE' } });
    const made = await post<{ success: string; clinicaldocumentid: string }>('/documents/clinicaldocument', {
      patientid: '88',
      departmentid: '1',
      documentsubclass: 'letter',
      attachmentcontents: 'aGk=',
      attachmenttype: 'text/plain',
    });
    expect(made.body).toEqual({ success: 'true', clinicaldocumentid: expect.stringMatching(/^\d+$/) });
    const back = await get<Json[]>(
      `/v1/${PRACTICE}/patients/88/documents/clinicaldocument/${made.body.clinicaldocumentid}`,
    );
    expect(back.body[0]).toMatchObject({
      documentclass: 'CLINICALDOCUMENT',
      documentsubclass: 'LETTER',
      contenttype: 'text/plain',
      pagecount: 1,
    });
    expect(back.body[0].attachmentcontents).toBeUndefined();
    // A clinical document is not an admin document.
    expect(
      (await get<AthenaPage<'admins'>>(`/v1/${PRACTICE}/patients/88/documents/admin?departmentid=1`)).body.admins,
    ).toHaveLength(1);

    const day = '01/05/2026';
    const booked = String(
      sim.upsertAppointment(PRACTICE, {
        date: day,
        starttime: '09:00',
        departmentid: '1',
        appointmentstatus: 'f',
        patientid: '88',
      }).appointmentid,
    );
    const open = String(
      sim.upsertAppointment(PRACTICE, { date: day, starttime: '10:00', departmentid: '1', appointmentstatus: 'o' })
        .appointmentid,
    );
    expect(await post(`/appointments/${booked}/checkin`, {})).toEqual({ status: 200, body: { success: 'true' } });
    expect(sim.practice(PRACTICE).appointments.get(booked)).toMatchObject({
      appointmentstatus: '2',
      checkindatetime: expect.any(String),
    });
    expect((await post<Json>(`/appointments/${booked}/checkin`, {})).body).toEqual({
      success: false,
      errormessage: 'The appointment is already checked in.',
    });
    sim.opts.checkinRefusal = 'http-400';
    try {
      expect(await post(`/appointments/${open}/checkin`, {})).toEqual({
        status: 400,
        body: {
          error: 'The appointment is an open slot and cannot be checked in.',
          detailedmessage: 'The appointment is an open slot and cannot be checked in.',
        },
      });
    } finally {
      sim.opts.checkinRefusal = 'success-false';
    }
  });

  it('injects faults: 429 with/without Retry-After, 5xx bursts, 401 on the Nth call, server-side QPS', async () => {
    sim.inject({ status: 429, retryAfter: '2' });
    sim.inject({ status: 503, times: 2 });
    const a = await fetch(`${sim.url}/v1/${PRACTICE}/departments`, { headers: { authorization: `Bearer ${token}` } });
    expect([a.status, a.headers.get('retry-after')]).toEqual([429, '2']);
    expect((await get(`/v1/${PRACTICE}/departments`)).status).toBe(503);
    expect((await get(`/v1/${PRACTICE}/departments`)).status).toBe(503);
    sim.failNthCall(2);
    expect((await get(`/v1/${PRACTICE}/departments`)).status).toBe(200);
    expect((await get(`/v1/${PRACTICE}/departments`)).status).toBe(401);
    sim.setQps(2, undefined, 403);
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await get(`/v1/${PRACTICE}/departments`)).status);
    expect(statuses.filter((s) => s === 403).length).toBeGreaterThan(0); // legacy "Developer Over Qps"
    sim.setQps(undefined);
  });
});
