/** The athena simulator's proprietary REST API ("v1", `/v1/{practiceid}/...`): reads, writes, changed-data feeds. */
import type { AthenaSimulator, FeedEvent, IssuedToken, Json, PracticeData } from './athena-simulator';
import { fromAthenaDateTime, toAthenaDateTime } from './wall-time';

const FEEDS = [
  'patients',
  'appointments',
  'labresults',
  'providers',
  'prescriptions',
  'problems',
  'documents/patientcase',
] as const;
const APPOINTMENT_EVENTS = [
  'ScheduleAppointment',
  'CheckIn',
  'CheckOut',
  'UpdateAppointment',
  'CancelAppointment',
  'FreezeAppointment',
  'UnfreezeAppointment',
  'DeleteAppointment',
];
const NOT_SUBSCRIBED = 'Changed messages require setup (subscription) that has not been done.';

export function restApi(
  sim: AthenaSimulator,
  p: string,
  path: string,
  method: string,
  u: URL,
  body: string,
  tok: IssuedToken,
  send: (s: number, b: unknown, h?: Record<string, string>) => void,
): void {
  const d = sim.practice(p);
  const q = u.searchParams;
  const form = new URLSearchParams(body);
  const isWrite = method !== 'GET';
  if (isWrite && body && !form.toString()) return send(400, { error: 'Invalid body' });
  let m: RegExpExecArray | null;

  if (method === 'GET' && path === '/departments')
    return send(200, page(sim, p, '/departments', 'departments', d.departments, q));
  if (method === 'GET' && path === '/providers')
    return send(200, page(sim, p, '/providers', 'providers', d.providers, q));

  // Changed-data feeds & subscriptions
  if ((m = /^\/(.+)\/changed\/subscription(\/events)?$/.exec(path)))
    return subscription(sim, d, m[1], !!m[2], method, form, tok, send);
  if ((m = /^\/(.+)\/changed$/.exec(path)) && method === 'GET') return changed(sim, p, d, m[1], q, tok, send);

  // Patients
  if (path === '/patients' && method === 'GET') {
    const fn = q.get('firstname')?.toLowerCase();
    const ln = q.get('lastname')?.toLowerCase();
    const dob = q.get('dob');
    if (!fn && !ln && !dob && !q.get('departmentid'))
      return send(400, {
        error: 'Additional fields are required.',
        detailedmessage: 'A search needs at least one of firstname, lastname, dob, departmentid.',
      });
    const list = [...d.patients.values()].filter(
      (x) =>
        (!fn || String(x.firstname).toLowerCase() === fn) &&
        (!ln || String(x.lastname).toLowerCase() === ln) &&
        (!dob || x.dob === dob) &&
        (!q.get('departmentid') || String(x.departmentid) === q.get('departmentid')),
    );
    return send(200, page(sim, p, '/patients', 'patients', list, q));
  }
  if (path === '/patients' && method === 'POST') {
    for (const k of ['departmentid', 'firstname', 'lastname', 'dob'])
      if (!form.get(k))
        return send(400, { error: `Missing required field: ${k}`, detailedmessage: `${k} is required` });
    if (!/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('dob')!))
      return send(400, { error: 'Invalid DOB', detailedmessage: 'dob must be MM/DD/YYYY' });
    const rec = sim.upsertPatient(p, { ...Object.fromEntries(form), status: 'active' });
    return send(200, [{ patientid: rec.patientid }]);
  }
  if ((m = /^\/patients\/(\d+)$/.exec(path))) {
    const pat = d.patients.get(m[1]);
    if (!pat) return send(404, { error: 'The patient is not found.', detailedmessage: 'Invalid patientid' });
    if (method === 'GET') return send(200, [pat]);
    if (method === 'PUT') {
      if (form.get('dob') && !/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('dob')!))
        return send(400, { error: 'Invalid DOB' });
      const rec = sim.upsertPatient(p, { ...Object.fromEntries(form), patientid: m[1] });
      return send(200, [{ patientid: rec.patientid }]);
    }
  }

  // Appointments
  if (path === '/appointments/booked' && method === 'GET') {
    const from = fromAthenaDateTime(q.get('startdate') ?? '', 'UTC');
    const to = fromAthenaDateTime(q.get('enddate') ?? '', 'UTC');
    if (from === undefined || to === undefined || !q.get('departmentid'))
      return send(400, {
        error: 'Additional fields are required.',
        detailedmessage: 'departmentid, startdate and enddate (MM/DD/YYYY) are required',
      });
    const list = [...d.appointments.values()].filter((a) => {
      const t = fromAthenaDateTime(a.date, 'UTC') ?? -1;
      return String(a.departmentid) === q.get('departmentid') && t >= from && t <= to && a.appointmentstatus !== 'o';
    });
    return send(200, page(sim, p, '/appointments/booked', 'appointments', list, q));
  }
  if (path === '/appointments/open' && method === 'GET') {
    // Open slots are appointments with status `o` (reference 1.4 appointmentstatus, AddAppointmentSlot
    // events). The endpoint is not in the reference's table [U]: modelled like /appointments/booked
    // (departmentid required, optional startdate/enddate/providerid/appointmenttypeid, limit/offset paging).
    if (!q.get('departmentid'))
      return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
    const from = q.get('startdate') ? fromAthenaDateTime(q.get('startdate')!, 'UTC') : undefined;
    const to = q.get('enddate') ? fromAthenaDateTime(q.get('enddate')!, 'UTC') : undefined;
    if ((q.get('startdate') && from === undefined) || (q.get('enddate') && to === undefined))
      return send(400, { error: 'Invalid date', detailedmessage: 'startdate and enddate are MM/DD/YYYY' });
    const list = [...d.appointments.values()].filter((a) => {
      const t = fromAthenaDateTime(a.date, 'UTC') ?? -1;
      return (
        a.appointmentstatus === 'o' &&
        String(a.departmentid) === q.get('departmentid') &&
        (from === undefined || t >= from) &&
        (to === undefined || t <= to) &&
        (!q.get('providerid') || String(a.providerid) === q.get('providerid')) &&
        (!q.get('appointmenttypeid') || String(a.appointmenttypeid) === q.get('appointmenttypeid'))
      );
    });
    return send(200, page(sim, p, '/appointments/open', 'appointments', list, q));
  }
  if ((m = /^\/appointments\/(\d+)$/.exec(path)) && method === 'GET') {
    const a = d.appointments.get(m[1]);
    return a ? send(200, [a]) : send(404, { error: 'The appointment is not found.' });
  }
  if ((m = /^\/appointments\/(\d+)$/.exec(path)) && method === 'PUT') {
    // Book an open slot.
    const a = d.appointments.get(m[1]);
    if (!a) return send(404, { error: 'The appointment is not found.' });
    if (!form.get('patientid')) return send(400, { error: 'Missing required field: patientid' });
    if (a.appointmentstatus !== 'o')
      return send(200, { success: false, errormessage: 'The appointment slot is not open.' });
    if (!d.patients.has(String(form.get('patientid')))) return send(400, { error: 'Invalid patientid' });
    const rec = sim.upsertAppointment(
      p,
      {
        ...a,
        appointmentstatus: 'f',
        patientid: form.get('patientid'),
        appointmenttypeid: form.get('appointmenttypeid') ?? a.appointmenttypeid,
      },
      'ScheduleAppointment',
    );
    return send(200, [rec]);
  }
  if ((m = /^\/appointments\/(\d+)\/cancel$/.exec(path)) && method === 'PUT') {
    const a = d.appointments.get(m[1]);
    if (!a) return send(404, { error: 'The appointment is not found.' });
    if (!form.get('patientid')) return send(400, { error: 'Missing required field: patientid' });
    if (a.appointmentstatus === 'x')
      return send(200, { success: false, errormessage: 'The appointment is already cancelled.' });
    if (String(a.patientid) !== form.get('patientid'))
      return send(200, { success: false, errormessage: 'The patient does not match the appointment.' });
    sim.upsertAppointment(
      p,
      {
        ...a,
        appointmentstatus: 'x',
        cancelreasonname: form.get('cancellationreason') ?? 'PATIENT CANCELLED',
        cancelleddatetime: toAthenaDateTime(sim.now(), sim.opts.serverTimeZone),
      },
      'CancelAppointment',
    );
    return send(200, { status: 'x' });
  }

  if ((m = /^\/appointments\/(\d+)\/checkin$/.exec(path)) && method === 'POST') {
    // Not in the reference [U]: athena's public API checks in a booked appointment of today.
    const a = d.appointments.get(m[1]);
    if (!a) return send(404, { error: 'The appointment is not found.' });
    const why =
      a.appointmentstatus === 'o'
        ? 'The appointment is an open slot and cannot be checked in.'
        : a.appointmentstatus === 'x'
          ? 'The appointment is cancelled and cannot be checked in.'
          : a.appointmentstatus !== 'f'
            ? 'The appointment is already checked in.'
            : undefined;
    if (why)
      return sim.opts.checkinRefusal === 'http-400'
        ? send(400, { error: why, detailedmessage: why })
        : send(200, { success: false, errormessage: why });
    sim.upsertAppointment(
      p,
      { ...a, appointmentstatus: '2', checkindatetime: toAthenaDateTime(sim.now(), sim.opts.serverTimeZone) },
      'CheckIn',
    );
    return send(200, { success: 'true' });
  }

  // Documents (reference 1.4; list key, fields and the read-back are [U])
  if ((m = /^\/patients\/(\d+)\/documents\/admin$/.exec(path)) && method === 'GET') {
    if (!q.get('departmentid'))
      return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
    if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
    const list = (d.documents.get(m[1]) ?? [])
      .filter((x) => x.documentclass === 'ADMIN' && !x.deleteddatetime)
      .map((x) => sim.documentView(x));
    return send(200, page(sim, p, path, 'admins', list, q));
  }
  if ((m = /^\/patients\/(\d+)\/documents\/clinicaldocument\/(\d+)$/.exec(path)) && method === 'GET') {
    const doc = (d.documents.get(m[1]) ?? []).find(
      (x) => x.documentclass === 'CLINICALDOCUMENT' && String(x.clinicaldocumentid) === m![2],
    );
    return doc ? send(200, [sim.documentView(doc)]) : send(404, { error: 'The document is not found.' });
  }
  if (path === '/documents/clinicaldocument' && method === 'POST') {
    for (const k of ['patientid', 'departmentid', 'documentsubclass'])
      if (!form.get(k)) return send(200, { success: false, errormessage: `${k} is required` });
    if (!d.patients.has(form.get('patientid')!))
      return send(200, { success: false, errormessage: 'Invalid patientid' });
    if (!d.departments.some((x) => String(x.departmentid) === form.get('departmentid')))
      return send(200, { success: false, errormessage: 'Invalid departmentid' });
    if (!sim.opts.clinicalDocumentSubclasses.includes(form.get('documentsubclass')!.toUpperCase()))
      return send(200, { success: false, errormessage: `Invalid documentsubclass: ${form.get('documentsubclass')}` });
    if (form.get('attachmentcontents') && !/^[A-Za-z0-9+/=\s]+$/.test(form.get('attachmentcontents')!))
      return send(200, { success: false, errormessage: 'attachmentcontents must be base64' });
    const rec = sim.addDocument(p, form.get('patientid')!, {
      documentclass: 'CLINICALDOCUMENT',
      documentsubclass: form.get('documentsubclass')!.toUpperCase(),
      departmentid: form.get('departmentid'),
      description: form.get('internalnote') ?? undefined,
      documentdate: form.get('documentdate') ?? undefined,
      contenttype: form.get('attachmenttype') ?? undefined,
      attachmentcontents: form.get('attachmentcontents') ?? undefined,
    });
    return send(200, { success: 'true', clinicaldocumentid: String(rec.clinicaldocumentid) });
  }

  // Chart sections (reference 1.4): departmentid required, limit/offset paging
  if ((m = /^\/chart\/(\d+)\/(problems|medications|allergies|vitals|vaccines)$/.exec(path)) && method === 'GET') {
    if (!q.get('departmentid'))
      return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
    if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
    return send(200, page(sim, p, path, m[2], d.chart.get(`${m[1]}|${m[2]}`) ?? [], q));
  }

  // Lab results
  if ((m = /^\/chart\/(\d+)\/labresults$/.exec(path)) && method === 'GET') {
    if (!q.get('departmentid'))
      return send(400, { error: 'Additional fields are required.', detailedmessage: 'departmentid is required' });
    return send(200, {
      ...page(
        sim,
        p,
        path,
        'results',
        (d.labresults.get(m[1]) ?? [])
          .filter((r) => !q.get('labresultid') || String(r.labresultid) === q.get('labresultid'))
          .map((r) => sim.chartLabResult(r)),
        q,
      ),
    });
  }
  if ((m = /^\/patients\/(\d+)\/documents\/labresult$/.exec(path)) && method === 'POST') {
    if (!d.patients.has(m[1])) return send(404, { error: 'The patient is not found.' });
    if (!form.get('departmentid')) return send(200, { success: false, errormessage: 'departmentid is required' });
    if (form.get('observationdate') && !/^\d{2}\/\d{2}\/\d{4}$/.test(form.get('observationdate')!))
      return send(200, { success: false, errormessage: 'Invalid observationdate' });
    const rec = sim.addLabResult(p, m[1], {
      departmentid: form.get('departmentid'),
      labresultloinc: form.get('labresultloinc') ?? undefined,
      description: form.get('internalnote') ?? form.get('description') ?? undefined,
      observationdatetime: form.get('observationdate')
        ? `${form.get('observationdate')} ${form.get('observationtime') ? `${form.get('observationtime')}:00` : '00:00:00'}`
        : undefined,
      analytes: form.get('analytes') ? JSON.parse(form.get('analytes')!) : undefined,
      facilityid: form.get('facilityid') ?? undefined,
    });
    return send(200, { success: 'true', labresultid: String(rec.labresultid) });
  }

  return send(404, { error: 'Service not registered with API gateway.' });
}

/** A `limit`/`offset` page with relative `next`/`previous` URLs including `/v1/{practiceid}`. */
function page(
  sim: AthenaSimulator,
  p: string,
  path: string,
  key: string,
  all: Json[],
  q: URLSearchParams,
  extra: Json = {},
): Json {
  const limit = Math.min(
    sim.opts.maxLimit,
    Math.max(1, Number(q.get('limit') ?? sim.opts.defaultLimit) || sim.opts.defaultLimit),
  );
  const offset = Math.max(0, Number(q.get('offset') ?? 0) || 0);
  const items = all.slice(offset, offset + limit);
  const out: Json = { [key]: items, totalcount: all.length, ...extra };
  const link = (o: number) => {
    const nq = new URLSearchParams(q);
    nq.set('limit', String(limit));
    nq.set('offset', String(o));
    return `/v1/${p}${path}?${nq.toString()}`;
  };
  if (offset + limit < all.length) out.next = link(offset + limit);
  if (offset > 0) out.previous = link(Math.max(0, offset - limit));
  return out;
}

function subscription(
  sim: AthenaSimulator,
  d: PracticeData,
  feed: string,
  events: boolean,
  method: string,
  form: URLSearchParams,
  tok: IssuedToken,
  send: (s: number, b: unknown) => void,
): void {
  if (!(FEEDS as readonly string[]).includes(feed))
    return send(404, { error: 'Service not registered with API gateway.' });
  const key = `${tok.clientId}|${feed}`;
  if (events)
    return send(200, {
      subscriptions: (feed === 'appointments' ? APPOINTMENT_EVENTS : [`${feed}Changed`]).map((eventname) => ({
        eventname,
      })),
    });
  if (method === 'POST') {
    if (!d.subscriptions.has(key))
      d.subscriptions.set(key, { requestedAt: sim.now(), eventnames: form.getAll('eventname') });
    return send(200, { success: true });
  }
  if (method === 'DELETE') {
    d.subscriptions.delete(key);
    return send(200, { success: true });
  }
  const sub = d.subscriptions.get(key);
  if (!sub) return send(200, { status: 'INACTIVE', subscriptions: [] });
  const active = sim.now() >= sub.requestedAt + sim.opts.subscriptionDelayMs;
  return send(200, {
    status: active ? 'ACTIVE' : 'PARTIAL',
    subscriptions: (sub.eventnames.length
      ? sub.eventnames
      : feed === 'appointments'
        ? APPOINTMENT_EVENTS
        : [`${feed}Changed`]
    ).map((eventname) => ({ eventname })),
  });
}

function changed(
  sim: AthenaSimulator,
  p: string,
  d: PracticeData,
  feed: string,
  q: URLSearchParams,
  tok: IssuedToken,
  send: (s: number, b: unknown) => void,
): void {
  if (!(FEEDS as readonly string[]).includes(feed))
    return send(404, { error: 'Service not registered with API gateway.' });
  const key = `${tok.clientId}|${feed}`;
  const sub = d.subscriptions.get(key);
  if (!sub || sim.now() < sub.requestedAt + sim.opts.subscriptionDelayMs)
    return send(403, { error: NOT_SUBSCRIBED, detailedmessage: NOT_SUBSCRIBED });
  const queue = d.queues.get(key) ?? [];
  const dept = q.get('departmentid');
  const startS = q.get('showprocessedstartdatetime');
  const endS = q.get('showprocessedenddatetime');
  let selected: FeedEvent[];
  let dequeue = false;
  if (startS || endS) {
    const start = startS ? fromAthenaDateTime(startS, sim.opts.serverTimeZone) : 0;
    const end = endS ? fromAthenaDateTime(endS, sim.opts.serverTimeZone) : sim.now();
    if (start === undefined || end === undefined)
      return send(400, {
        error: 'Invalid datetime',
        detailedmessage: 'showprocessed*datetime must be MM/DD/YYYY HH:mm:ss',
      });
    // Processed in [start, end] (second resolution: the end second is included).
    selected = queue.filter((e) => e.processedAt !== undefined && e.processedAt >= start && e.processedAt < end + 1000);
  } else {
    selected = queue.filter((e) => e.processedAt === undefined);
    dequeue = q.get('leaveunprocessed') !== 'true';
  }
  if (dept) selected = selected.filter((e) => e.departmentid === dept);
  const key2 = feed === 'documents/patientcase' ? 'patientcases' : feed;
  const limit = Math.min(
    sim.opts.maxLimit,
    Math.max(1, Number(q.get('limit') ?? sim.opts.defaultLimit) || sim.opts.defaultLimit),
  );
  const offset = Math.max(0, Number(q.get('offset') ?? 0) || 0);
  const pageEvents = selected.slice(offset, offset + limit);
  const out: Json = { [key2]: pageEvents.map((e) => e.record), totalcount: selected.length };
  if (offset + limit < selected.length) {
    const nq = new URLSearchParams(q);
    nq.set('limit', String(limit));
    // Dequeued events leave the unprocessed list, so the next page of a dequeuing read starts again at 0.
    nq.set('offset', String(dequeue ? 0 : offset + limit));
    out.next = `/v1/${p}/${feed}/changed?${nq.toString()}`;
  }
  if (dequeue) for (const e of pageEvents) e.processedAt = sim.now();
  send(200, out);
}
