/** The athena facade provider's scheduling: appointment and open-slot searches, $book, $cancel, $checkin (REST). */
import { facadeError, type FacadeCallContext, type FacadeRecord } from '@ferry/core';
import type { AthenaFacadeProvider } from './athena.provider';
import { dateRange } from './athena-dates';
import { callAthena } from './athena-errors';

function refId(v: string | undefined, re: RegExp): string | undefined {
  if (!v) return undefined;
  const m = re.exec(v.replace(/^.*\//, ''));
  return m?.[1] ?? (/^\d+$/.test(v) ? v : undefined);
}

/** Booked appointments (or open slots with status=proposed) over one or every department, department by department. */
export async function restAppointments(
  athena: AthenaFacadeProvider,
  params: Record<string, string[]>,
  page: { cursor?: string; count: number },
  ctx: FacadeCallContext,
) {
  const range = dateRange(params.date);
  const status = params.status?.[0];
  if (status && status !== 'booked' && status !== 'proposed')
    throw facadeError('invalid', 'status: booked (default) or proposed (open slots)');
  const endpoint = status === 'proposed' ? '/appointments/open' : '/appointments/booked';
  const loc = params.location?.[0];
  const deptId = refId(loc, new RegExp(`^athena-${athena.p}-department-(\\d+)$`));
  if (loc && !deptId)
    throw facadeError('invalid', 'location: Location/athena-{practice}-department-{id} or a department id');
  const providerId = refId(params.practitioner?.[0], new RegExp(`^athena-${athena.p}-provider-(\\d+)$`));
  const depts = deptId
    ? [await athena.department(deptId, ctx.signal)].filter((d): d is Record<string, any> => !!d)
    : await athena.departmentList(ctx.signal);
  let { d, o } = page.cursor ? (JSON.parse(page.cursor) as { d: number; o: number }) : { d: 0, o: 0 };
  for (; d < depts.length; d++, o = 0) {
    const dept = depts[d];
    const q: Record<string, string> = {
      departmentid: String(dept.departmentid),
      ...range,
      limit: String(page.count),
      offset: String(o),
    };
    if (providerId) q.providerid = providerId;
    const body = await callAthena(() => athena.conn.get<any>(endpoint, q, { signal: ctx.signal }));
    const items: Record<string, any>[] = body?.appointments ?? [];
    if (!items.length && !body?.next) continue;
    const records = items.map((r) => athena.restRecord('appointment', r, dept));
    const next = body?.next ? { d, o: o + items.length } : d + 1 < depts.length ? { d: d + 1, o: 0 } : undefined;
    return { records, next: next ? JSON.stringify(next) : undefined };
  }
  return { records: [] };
}

export async function bookAppointment(
  athena: AthenaFacadeProvider,
  vendorId: string,
  request: { patient: string; appointmentType?: string },
  ctx: FacadeCallContext,
): Promise<FacadeRecord> {
  const pat = await ctx.resolve(request.patient);
  if (!pat || pat.type !== 'Patient')
    throw facadeError('invalid', `patient: ${request.patient.slice(0, 80)} is not a patient of this connection`);
  const form: Record<string, string> = { patientid: pat.vendorId };
  if (request.appointmentType) form.appointmenttypeid = request.appointmentType;
  const out = await callAthena(() =>
    athena.conn.write<Record<string, any>[]>('PUT', `/appointments/${encodeURIComponent(vendorId)}`, form, {
      signal: ctx.signal,
    }),
  );
  const rec = Array.isArray(out) && out[0]?.appointmentid ? out[0] : undefined;
  if (rec) return athena.restRecord('appointment', rec, await athena.department(rec.departmentid, ctx.signal));
  return (await athena.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
}

export async function cancelAppointment(
  athena: AthenaFacadeProvider,
  vendorId: string,
  request: { reason?: string },
  ctx: FacadeCallContext,
): Promise<FacadeRecord> {
  const cur = await athena.read('Appointment', vendorId, { ...ctx, path: 'rest' });
  if (!cur) throw facadeError('not-found', 'appointment not found at athena');
  const rec = JSON.parse(cur.body.toString('utf8')).record as Record<string, any>;
  if (!rec.patientid) throw facadeError('conflict', 'the appointment is an open slot: nothing to cancel');
  await callAthena(() =>
    athena.conn.write(
      'PUT',
      `/appointments/${encodeURIComponent(vendorId)}/cancel`,
      { patientid: String(rec.patientid), ...(request.reason ? { cancellationreason: request.reason } : {}) },
      { signal: ctx.signal },
    ),
  );
  return (await athena.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
}

/**
 * Check-in (`POST /appointments/{id}/checkin`: not in the reference [U]; athena's public API has
 * it): only a booked appointment (`appointmentstatus` f) can be checked in -- an open slot, a
 * cancelled or an already checked-in appointment is a conflict, refused before the call (and
 * athena's own refusal is mapped the same way). Answers the appointment read back (status 2 ->
 * `arrived`).
 */
export async function checkinAppointment(
  athena: AthenaFacadeProvider,
  vendorId: string,
  ctx: FacadeCallContext,
): Promise<FacadeRecord> {
  const cur = await athena.read('Appointment', vendorId, { ...ctx, path: 'rest' });
  if (!cur) throw facadeError('not-found', 'appointment not found at athena');
  const st = String(
    (JSON.parse(cur.body.toString('utf8')).record as Record<string, any>).appointmentstatus ?? '',
  ).toLowerCase();
  if (st === 'o') throw facadeError('conflict', 'the appointment is an open slot: book it before checking in');
  if (st === 'x') throw facadeError('conflict', 'the appointment is cancelled: it cannot be checked in');
  if (st === '2' || st === '3' || st === '4')
    throw facadeError('conflict', `the appointment is already checked in (athena appointmentstatus ${st})`);
  await callAthena(() =>
    athena.conn.write('POST', `/appointments/${encodeURIComponent(vendorId)}/checkin`, {}, { signal: ctx.signal }),
  );
  return (await athena.read('Appointment', vendorId, { ...ctx, path: 'rest' }))!;
}
