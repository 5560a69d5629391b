/** The athena simulator's FHIR R4 API (`/fhir/r4/...`): capability, searches with `ah-practice`, reads, writes. */
import type { IncomingMessage } from 'node:http';
import type { AthenaSimulator, Json } from './athena-simulator';

/** Search parameters per type from the captured CapabilityStatement (reference 2.3); `_id` is always allowed. */
export const FHIR_SEARCH_PARAMS: Record<string, string[]> = {
  Appointment: ['base-appointment-id', 'group-appointment-id'],
  Condition: ['patient', 'category', 'code', 'encounter', '_lastUpdated'],
  DiagnosticReport: ['patient', 'category', 'code', 'date', 'result'],
  DocumentReference: ['patient', 'category', 'type', 'date', 'encounter'],
  Encounter: ['patient', 'date', 'location', 'practitioner'],
  MedicationRequest: ['patient', 'intent', 'status', 'authoredon'],
  Observation: ['patient', 'category', 'code', 'date', 'encounter'],
  Patient: ['identifier', 'name', 'family', 'given', 'birthdate', 'gender'],
  Provenance: ['target'],
};
/** Parameters every search may carry: athena's custom ones and paging (reference 2.2, 2.3). */
const FHIR_COMMON_PARAMS = [
  '_id',
  'ah-practice',
  'ah-department',
  'ah-brand',
  'ah-provider-group',
  'ah-chart-sharing-group',
  '_security',
  '_count',
  'cursor',
];

export function fhirApi(
  sim: AthenaSimulator,
  path: string,
  req: IncomingMessage,
  u: URL,
  body: string,
  send: (s: number, b: unknown, h?: Record<string, string>) => void,
): void {
  const oo = (status: number, code: string, text: string, severity = 'error') =>
    send(status, { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] });
  const method = req.method ?? 'GET';
  if (path === '/metadata') {
    return send(200, {
      resourceType: 'CapabilityStatement',
      url: 'https://fhir.athena.io/CapabilityStatement/ah-r4-base',
      status: 'active',
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['json'],
      date: '2026-01-01',
    });
  }
  let m: RegExpExecArray | null;
  let params = u.searchParams;
  let type: string | undefined;
  if ((m = /^\/([A-Za-z]+)\/_search$/.exec(path)) && method === 'POST') {
    type = m[1];
    params = new URLSearchParams(body);
  } else if ((m = /^\/([A-Za-z]+)$/.exec(path)) && method === 'GET') type = m[1];
  if (type) {
    const practice = params.get('ah-practice');
    if (!practice) return oo(400, 'required', 'The ah-practice search parameter is required.');
    const pid = practice.replace(/^Organization\//, '').replace(/^a-1\.Practice-/, '');
    let list = [...(sim.fhir.get(type)?.values() ?? [])].filter((r) => r._practice === pid);
    if (sim.opts.enforceSearchParams) {
      const allowed = [...FHIR_COMMON_PARAMS, ...(FHIR_SEARCH_PARAMS[type] ?? [])];
      for (const k of params.keys())
        if (!allowed.includes(k)) return oo(400, 'not-supported', `Search parameter ${k} is not supported for ${type}`);
    }
    for (const [k, v] of params) {
      if (k === '_lastUpdated') {
        const pm = /^(gt|ge|lt|le|eq)?(.+)$/.exec(v)!;
        const t = Date.parse(pm[2]);
        if (Number.isNaN(t)) return oo(400, 'invalid', `Invalid _lastUpdated: ${v}`);
        const op = pm[1] ?? 'eq';
        list = list.filter((r) => {
          const lu = Date.parse(r.meta.lastUpdated);
          return op === 'gt' ? lu > t : op === 'ge' ? lu >= t : op === 'lt' ? lu < t : op === 'le' ? lu <= t : lu === t;
        });
      } else if (k === '_id') list = list.filter((r) => v.split(',').includes(r.id));
      else if (k === 'patient' || k === 'subject')
        list = list.filter(
          (r) =>
            r.subject?.reference === `Patient/${v.replace(/^Patient\//, '')}` ||
            r.patient?.reference === `Patient/${v.replace(/^Patient\//, '')}`,
        );
      else if (k === 'family')
        list = list.filter((r) =>
          r.name?.some((n: Json) =>
            String(n.family ?? '')
              .toLowerCase()
              .startsWith(v.toLowerCase()),
          ),
        );
      else if (k === 'identifier')
        list = list.filter((r) => r.identifier?.some((i: Json) => `${i.system}|${i.value}` === v || i.value === v));
      else if (!['ah-practice', '_count', 'cursor', '_sort'].includes(k))
        return oo(400, 'not-supported', `Unsupported search parameter: ${k}`);
    }
    list.sort((a, b) => Date.parse(a.meta.lastUpdated) - Date.parse(b.meta.lastUpdated) || (a.id < b.id ? -1 : 1));
    const count = Math.min(
      1000,
      Math.max(1, Number(params.get('_count') ?? sim.opts.fhirDefaultCount) || sim.opts.fhirDefaultCount),
    );
    const cursor = params.get('cursor');
    let start = 0;
    if (cursor) {
      start = list.findIndex((r) => r.id === cursor);
      if (start < 0) return oo(400, 'invalid', 'Invalid cursor');
    }
    const page = list.slice(start, start + count);
    const self = `${sim.fhirBase}/${type}?${params.toString()}`;
    const link = [{ relation: 'self', url: self }];
    if (start + count < list.length) {
      const nq = new URLSearchParams(params);
      nq.set('cursor', list[start + count].id);
      nq.set('_count', String(count));
      link.push({ relation: 'next', url: `${sim.fhirBase}/${type}?${nq.toString()}` });
    }
    return send(200, {
      resourceType: 'Bundle',
      type: 'searchset',
      total: list.length,
      link,
      entry: page.map((r) => ({
        fullUrl: `${sim.fhirBase}/${type}/${r.id}`,
        resource: strip(r),
        search: { mode: 'match' },
      })),
    });
  }
  if ((m = /^\/([A-Za-z]+)\/([A-Za-z0-9.-]+)$/.exec(path)) && method === 'GET') {
    const r = sim.fhir.get(m[1])?.get(m[2]);
    return r ? send(200, strip(r)) : oo(404, 'not-found', `${m[1]}/${m[2]} not found`);
  }
  if ((m = /^\/([A-Za-z]+)$/.exec(path)) && method === 'POST') {
    // Writes the captured CapabilityStatement lists: QuestionnaireResponse create (reference 2.3).
    if (m[1] !== 'QuestionnaireResponse') return oo(405, 'not-supported', `create is not supported for ${m[1]}`);
    let res: Json;
    try {
      res = JSON.parse(body);
    } catch {
      return oo(400, 'structure', 'Body is not JSON');
    }
    if (res.resourceType !== m[1]) return oo(400, 'invalid', 'resourceType does not match the URL');
    const subj = /^Patient\/a-(\d+)\.E-(\d+)$/.exec(res.subject?.reference ?? '');
    if (!subj)
      return oo(422, 'business-rule', 'subject must reference an athena Patient (a-{practiceid}.E-{patientid})');
    if (!res.status) return oo(500, 'required', 'QuestionnaireResponse.status is required', 'fatal');
    const id = `a-${subj[1]}.qr-${++sim.seq}`;
    const stored = sim.putFhir(subj[1], m[1], id, res);
    return send(201, strip(stored), { Location: `${sim.fhirBase}/${m[1]}/${id}/_history/1` });
  }
  return oo(404, 'not-found', `Unknown FHIR path ${path}`);
}

function strip(r: Json): Json {
  const { _practice, _unversioned, ...rest } = r;
  void _practice;
  if (_unversioned) delete rest.meta;
  return JSON.parse(JSON.stringify(rest));
}
