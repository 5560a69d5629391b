/**
 * An application on Ferry's FHIR facade: today's appointments of a patient across an athena practice
 * and an Epic organisation -- one API, one token, two EHRs -- then a booking in the first open athena
 * slot, with an Idempotency-Key so a retry never books twice.
 *
 *   npm run build
 *   FERRY_FHIR_URL=http://127.0.0.1:8090 FERRY_TOKEN=ferry_... \
 *   ATHENA_CONNECTION=athena-clinic ATHENA_PATIENT=athena-195900-patient-1000 \
 *   EPIC_CONNECTION=epic-north EPIC_PATIENT=epic-erXuFYUfucBZaryVksYEcMg3 \
 *   node examples/dist/appointments.js [--date 2026-12-07] [--json]
 *
 * The token needs connection:<athena>:read, connection:<athena>:write and connection:<epic>:read.
 */
import type { Appointment, Bundle, OperationOutcome } from '@medplum/fhirtypes';

const env = (name: string, dflt?: string): string => {
  const v = process.env[name] ?? dflt;
  if (!v) throw new Error(`set ${name}`);
  return v;
};
const base = env('FERRY_FHIR_URL').replace(/\/+$/, '');
const token = env('FERRY_TOKEN');
const athena = { connection: env('ATHENA_CONNECTION', 'athena-clinic'), patient: env('ATHENA_PATIENT') };
const epic = { connection: env('EPIC_CONNECTION', 'epic-north'), patient: env('EPIC_PATIENT') };
const argv = process.argv.slice(2);
const day = argv.includes('--date') ? argv[argv.indexOf('--date') + 1] : new Date().toISOString().slice(0, 10);
const asJson = argv.includes('--json');

async function fhir<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const res = await fetch(path.startsWith('http') ? path : `${base}/fhir/${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/fhir+json',
      ...(body ? { 'content-type': 'application/fhir+json' } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const out = (await res.json()) as T | OperationOutcome;
  if (!res.ok)
    throw new Error(
      `${method} ${path}: ${res.status} ${(out as OperationOutcome).issue?.map((i) => `${i.code}: ${i.diagnostics}`).join('; ')}`,
    );
  return out as T;
}

/** Every page of a search (the facade maps each EHR's paging to Bundle.link next). */
async function searchAll(path: string): Promise<Appointment[]> {
  const out: Appointment[] = [];
  for (let url: string | undefined = path; url;) {
    const page: Bundle<Appointment> = await fhir<Bundle<Appointment>>('GET', url);
    out.push(...(page.entry ?? []).map((e) => e.resource!));
    url = page.link?.find((l) => l.relation === 'next')?.url;
  }
  return out;
}

const patientOf = (a: Appointment) =>
  a.participant.find((p) => p.actor?.reference?.startsWith('Patient/') || p.actor?.type === 'Patient')?.actor;
const isPatient = (a: Appointment, canonicalId: string, athenaIdentifier?: string) => {
  const actor = patientOf(a);
  return (
    actor?.reference === `Patient/${canonicalId}` ||
    (!!athenaIdentifier && actor?.identifier?.value === athenaIdentifier)
  );
};

async function main(): Promise<void> {
  // athena lists a day's appointments per department; Epic searches them per patient.
  const athenaPatientNumber = /-patient-(\d+)$/.exec(athena.patient)?.[1];
  const atAthena = (await searchAll(`${athena.connection}/Appointment?date=${day}`)).filter((a) =>
    isPatient(a, athena.patient, athenaPatientNumber),
  );
  const atEpic = await searchAll(`${epic.connection}/Appointment?patient=Patient/${epic.patient}&date=${day}`);
  const today = [
    ...atAthena.map((a) => ({ connection: athena.connection, a })),
    ...atEpic.map((a) => ({ connection: epic.connection, a })),
  ].sort((x, y) => String(x.a.start).localeCompare(String(y.a.start)));

  const slots = await searchAll(`${athena.connection}/Appointment?date=${day}&status=proposed`);
  let booked: Appointment | undefined;
  if (slots.length) {
    const params = {
      resourceType: 'Parameters',
      parameter: [{ name: 'patient', valueReference: { reference: `Patient/${athena.patient}` } }],
    };
    const key = `book-${athena.patient}-${slots[0].id}`;
    booked = await fhir<Appointment>('POST', `${athena.connection}/Appointment/${slots[0].id}/$book`, params, {
      'idempotency-key': key,
    });
  }

  if (asJson) {
    process.stdout.write(
      JSON.stringify({
        day,
        appointments: today.map((x) => ({
          connection: x.connection,
          id: x.a.id,
          start: x.a.start,
          status: x.a.status,
        })),
        booked: booked && { id: booked.id, status: booked.status, start: booked.start },
      }) + '\n',
    );
    return;
  }
  console.log(`Appointments on ${day}:`);
  for (const x of today)
    console.log(
      `  ${String(x.a.start).padEnd(26)} ${x.connection.padEnd(16)} ${String(x.a.status).padEnd(10)} ${x.a.id}`,
    );
  console.log(booked ? `Booked ${booked.id} at ${booked.start} (${booked.status})` : 'No open slot to book.');
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
