/** FHIR dates and date searches in athena's form (MM/DD/YYYY, startdate/enddate). */
import { facadeError } from '@ferry/core';

export const fhirDateToAthena = (d: string): string => {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(d);
  if (!m) throw facadeError('invalid', `date: expected YYYY-MM-DD, got ${d.slice(0, 30)}`);
  return `${m[2]}/${m[3]}/${m[1]}`;
};
export const athenaDateOf = (d: string | undefined): string | undefined => {
  if (!d) return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(d);
  return m ? `${m[2]}/${m[3]}/${m[1]}` : undefined;
};

/** FHIR `date` parameters (`2026-12-07`, `ge2026-12-01`, `le2026-12-31`) -> athena startdate/enddate (days, inclusive). */
export function dateRange(values: string[] | undefined): { startdate: string; enddate: string } {
  if (!values?.length)
    throw facadeError(
      'invalid',
      'Appointment search needs date (YYYY-MM-DD, or ge/le bounds): athena lists appointments by date range (reference 1.4)',
    );
  let start: string | undefined;
  let end: string | undefined;
  for (const v of values) {
    const m = /^(eq|ge|gt|le|lt)?(\d{4}-\d{2}-\d{2})/.exec(v);
    if (!m) throw facadeError('invalid', `date: expected [eq|ge|le]YYYY-MM-DD, got ${v.slice(0, 30)}`);
    const p = m[1] ?? 'eq';
    if (p === 'eq') start = end = m[2];
    else if (p === 'ge' || p === 'gt') start = m[2];
    else end = m[2];
  }
  if (!start || !end) throw facadeError('invalid', 'date: give a day, or both a ge and an le bound');
  return { startdate: fhirDateToAthena(start), enddate: fhirDateToAthena(end) };
}
