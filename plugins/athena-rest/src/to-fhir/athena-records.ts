/**
 * athenaOne REST JSON -> canonical FHIR R4 (reference 1.4, 1.7, 1.10).
 *
 * Input is an envelope the athena-rest source writes: `{ practiceid, feed, record, department? }`
 * (the department carries `timezonename` for appointment wall times). Output is a `transaction`
 * Bundle whose entries are conditional updates on each resource's athena identifier, with
 * deterministic ids and `urn:uuid:` fullUrls, so the same input always gives the same Bundle.
 */
import { createHash } from 'node:crypto';
import { inputError, validateBundle, type MessageHeaders } from '@ferry/core';
import type {
  Address,
  Appointment,
  AppointmentParticipant,
  Bundle,
  BundleEntry,
  CodeableConcept,
  ContactPoint,
  DiagnosticReport,
  HumanName,
  Identifier,
  Location,
  Observation,
  Patient,
  Practitioner,
  Reference,
  Resource,
} from '@medplum/fhirtypes';
import {
  AH_PATIENT_SYSTEM,
  athenaDateTimeToFhir,
  athenaDateToFhir,
  athenaSystem,
  parseAthenaWallTime,
  stableUuid,
  wallTimeToInstant,
} from '@ferry/fhir-vendor-kit';
import { athenaChartToFhir, athenaDocumentToFhir, chartEntityId } from './athena-chart';

export const AthenaContentType = {
  patient: 'application/vnd.athena.patient+json',
  appointment: 'application/vnd.athena.appointment+json',
  labresult: 'application/vnd.athena.labresult+json',
  department: 'application/vnd.athena.department+json',
  provider: 'application/vnd.athena.provider+json',
  problem: 'application/vnd.athena.problem+json',
  medication: 'application/vnd.athena.medication+json',
  allergy: 'application/vnd.athena.allergy+json',
  vital: 'application/vnd.athena.vital+json',
  vaccine: 'application/vnd.athena.vaccine+json',
  document: 'application/vnd.athena.document+json',
} as const;
export type AthenaKind = keyof typeof AthenaContentType;

/** What the source stores for each record. */
export interface AthenaEnvelope {
  practiceid: string;
  kind: AthenaKind;
  /** The feed or endpoint it came from (`patients/changed`, `appointments/booked`...). */
  feed?: string;
  record: Record<string, any>;
  /** For appointments and lab results: the department (timezonename, name). */
  department?: Record<string, any>;
}

export const NPI_SYSTEM = 'http://hl7.org/fhir/sid/us-npi';
const TIMEZONE_EXT = 'http://hl7.org/fhir/StructureDefinition/timezone';

const str = (v: unknown): string | undefined =>
  v === undefined || v === null || v === '' ? undefined : String(v).trim() || undefined;
const num = (v: unknown): number | undefined => {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  return Number.isFinite(n) ? n : undefined;
};
const safeId = (s: string) => s.replace(/[^A-Za-z0-9\-.]/g, '-').slice(0, 64);

function identifierRef(
  type: 'Patient' | 'Practitioner' | 'Location',
  system: string,
  value: string,
  display?: string,
): Reference<any> {
  return { type, identifier: { system, value }, ...(display ? { display } : {}) };
}

function entryFor(resource: Resource & { identifier?: Identifier[] }, key: Identifier): BundleEntry {
  return {
    fullUrl: `urn:uuid:${stableUuid(`${key.system}|${key.value}`)}`,
    resource,
    request: {
      method: 'PUT',
      url: `${resource.resourceType}?identifier=${encodeURIComponent(`${key.system}|${key.value}`)}`,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Patient

const MARITAL: Record<string, { code: string; display: string; system?: string }> = {
  S: { code: 'S', display: 'Never Married' },
  M: { code: 'M', display: 'Married' },
  D: { code: 'D', display: 'Divorced' },
  W: { code: 'W', display: 'Widowed' },
  X: { code: 'L', display: 'Legally Separated' },
  P: { code: 'T', display: 'Domestic partner' },
  U: { code: 'UNK', display: 'unknown', system: 'http://terminology.hl7.org/CodeSystem/v3-NullFlavor' },
};

export function athenaPatientToFhir(p: string, r: Record<string, any>): Patient {
  const pid = str(r.patientid);
  if (!pid) throw inputError('ATHENA_NO_ID', 'athena patient without patientid');
  const names: HumanName[] = [];
  const given = [str(r.firstname), str(r.middlename)].filter((x): x is string => !!x);
  if (str(r.lastname) || given.length) {
    names.push({
      use: 'official',
      family: str(r.lastname),
      given: given.length ? given : undefined,
      suffix: str(r.suffix) ? [str(r.suffix)!] : undefined,
    });
  }
  if (str(r.preferredname)) names.push({ use: 'usual', given: [str(r.preferredname)!], family: str(r.lastname) });
  const telecom: ContactPoint[] = [];
  const phone = (v: unknown, use: ContactPoint['use']) => {
    const s = str(v);
    if (s) telecom.push({ system: 'phone', value: s, use });
  };
  phone(r.homephone, 'home');
  phone(r.mobilephone, 'mobile');
  phone(r.workphone, 'work');
  if (str(r.email)) telecom.push({ system: 'email', value: str(r.email) });
  const line = [str(r.address1), str(r.address2)].filter((x): x is string => !!x);
  const address: Address[] =
    line.length || str(r.city) || str(r.zip)
      ? [
          {
            use: 'home',
            line: line.length ? line : undefined,
            city: str(r.city),
            state: str(r.state),
            postalCode: str(r.zip),
            country: str(r.countrycode3166) ?? str(r.countrycode),
          },
        ]
      : [];
  const sex = str(r.sex)?.toUpperCase();
  const ms = MARITAL[str(r.maritalstatus)?.toUpperCase() ?? ''];
  const status = str(r.status)?.toLowerCase();
  const identifier: Identifier[] = [
    {
      use: 'usual',
      system: athenaSystem('patient', p),
      value: pid,
      type: {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical record number' },
        ],
      },
    },
    { system: AH_PATIENT_SYSTEM, value: `a-${p}.E-${pid}` },
  ];
  if (str(r.enterpriseid) && str(r.enterpriseid) !== pid)
    identifier.push({ system: `urn:athenahealth:athenanet:enterprise:${p}`, value: str(r.enterpriseid) });
  const deceased = athenaDateToFhir(r.deceaseddate, 'deceaseddate');
  return {
    resourceType: 'Patient',
    id: safeId(`athena-${p}-patient-${pid}`),
    identifier,
    active: status === undefined ? undefined : status === 'active' || status === 'prospective',
    name: names.length ? names : undefined,
    telecom: telecom.length ? telecom : undefined,
    gender: sex === 'M' ? 'male' : sex === 'F' ? 'female' : sex ? 'unknown' : undefined,
    birthDate: athenaDateToFhir(r.dob, 'dob'),
    ...(deceased ? { deceasedDateTime: deceased } : {}),
    address: address.length ? address : undefined,
    maritalStatus: ms
      ? {
          coding: [
            {
              system: ms.system ?? 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus',
              code: ms.code,
              display: ms.display,
            },
          ],
        }
      : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Appointment

/** athena `appointmentstatus` (reference 1.4) -> FHIR Appointment.status. */
export function appointmentStatus(s: unknown): Appointment['status'] {
  switch (str(s)?.toLowerCase()) {
    case 'x':
      return 'cancelled';
    case 'f':
      return 'booked';
    case 'o':
      return 'proposed';
    case '2':
      return 'arrived';
    case '3':
    case '4':
      return 'fulfilled';
    default:
      return 'booked';
  }
}

export function athenaAppointmentToFhir(
  p: string,
  r: Record<string, any>,
  department: Record<string, any> | undefined,
): Appointment {
  const aid = str(r.appointmentid);
  if (!aid) throw inputError('ATHENA_NO_ID', 'athena appointment without appointmentid');
  const tz = str(department?.timezonename);
  if (!tz) {
    throw inputError(
      'ATHENA_NO_TIMEZONE',
      `appointment ${aid}: department ${str(r.departmentid) ?? '?'} has no timezonename`,
      { departmentid: r.departmentid },
    );
  }
  const start = wallTimeToInstant(parseAthenaWallTime(r.date, r.starttime, 'date/starttime'), tz);
  const minutes = num(r.duration);
  const participant: AppointmentParticipant[] = [];
  if (str(r.patientid)) {
    participant.push({
      actor: identifierRef('Patient', athenaSystem('patient', p), str(r.patientid)!),
      required: 'required',
      status: 'accepted',
    });
  }
  if (str(r.providerid)) {
    participant.push({
      actor: identifierRef('Practitioner', athenaSystem('provider', p), str(r.providerid)!),
      required: 'required',
      status: 'accepted',
    });
  }
  if (str(r.departmentid)) {
    participant.push({
      actor: identifierRef('Location', athenaSystem('department', p), str(r.departmentid)!, str(department?.name)),
      required: 'required',
      status: 'accepted',
    });
  }
  if (!participant.length) participant.push({ status: 'needs-action', type: [{ text: 'open slot' }] });
  const status = appointmentStatus(r.appointmentstatus);
  const typeText = str(r.appointmenttype) ?? str(r.patientappointmenttypename);
  const serviceType: CodeableConcept[] | undefined =
    typeText || str(r.appointmenttypeid)
      ? [
          {
            text: typeText,
            coding: str(r.appointmenttypeid)
              ? [{ system: athenaSystem('appointmenttype', p), code: str(r.appointmenttypeid), display: typeText }]
              : undefined,
          },
        ]
      : undefined;
  return {
    resourceType: 'Appointment',
    id: safeId(`athena-${p}-appointment-${aid}`),
    identifier: [{ system: athenaSystem('appointment', p), value: aid }],
    status,
    serviceType,
    cancelationReason:
      status === 'cancelled' && str(r.cancelreasonname) ? { text: str(r.cancelreasonname) } : undefined,
    start: start.toISOString(),
    // FHIR app-2: start and end together. athena always sends a duration; without one the end is the start.
    end: new Date(start.getTime() + (minutes ?? 0) * 60_000).toISOString(),
    minutesDuration: minutes !== undefined && minutes > 0 ? Math.round(minutes) : undefined,
    participant,
  };
}

// ---------------------------------------------------------------------------------------------
// Lab results

const LAB_STATUS: Record<string, DiagnosticReport['status']> = {
  final: 'final',
  preliminary: 'preliminary',
  partial: 'partial',
  corrected: 'corrected',
  amended: 'amended',
  cancelled: 'cancelled',
  pending: 'registered',
  review: 'preliminary',
};

const INTERPRETATION: Record<string, string> = {
  high: 'H',
  h: 'H',
  low: 'L',
  l: 'L',
  abnormal: 'A',
  a: 'A',
  critical: 'AA',
  n: 'N',
  normal: 'N',
  hh: 'HH',
  ll: 'LL',
};

export function athenaLabResultToFhir(
  p: string,
  r: Record<string, any>,
  department: Record<string, any> | undefined,
): { report: DiagnosticReport; observations: Observation[] } {
  const lid = str(r.labresultid);
  if (!lid) throw inputError('ATHENA_NO_ID', 'athena lab result without labresultid');
  const pid = str(r.patientid);
  const tz = str(department?.timezonename);
  const when = athenaDateTimeToFhir(
    r.observationdatetime ?? r.labresultdatetime ?? r.resultdate,
    tz,
    'observationdatetime',
  );
  const status = LAB_STATUS[str(r.status ?? r.labresultstatus)?.toLowerCase() ?? ''] ?? 'unknown';
  const obsStatus: Observation['status'] =
    status === 'registered'
      ? 'registered'
      : status === 'partial'
        ? 'preliminary'
        : status === 'cancelled'
          ? 'cancelled'
          : status === 'unknown'
            ? 'unknown'
            : (status as Observation['status']);
  const subject = pid ? identifierRef('Patient', athenaSystem('patient', p), pid) : undefined;
  const loinc = str(r.labresultloinc) ?? str(r.loinc);
  const text = str(r.description) ?? str(r.labresultname) ?? (loinc ? `LOINC ${loinc}` : 'Lab result');
  const labCategory: CodeableConcept[] = [
    { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: 'LAB', display: 'Laboratory' }] },
  ];
  const observations: Observation[] = (Array.isArray(r.analytes) ? r.analytes : []).map(
    (a: Record<string, any>, i: number): Observation => {
      const aid = str(a.analyteid) ?? `${lid}-${i + 1}`;
      const aLoinc = str(a.loinc) ?? str(a.analyteloinc);
      const aText = str(a.analytename) ?? str(a.description) ?? `Analyte ${i + 1}`;
      const n = num(a.value);
      const flag = INTERPRETATION[str(a.abnormalflag)?.toLowerCase() ?? ''];
      const aWhen = athenaDateTimeToFhir(a.analytedatetime, tz, 'analytedatetime') ?? when;
      return {
        resourceType: 'Observation',
        id: safeId(`athena-${p}-analyte-${aid}`),
        identifier: [{ system: athenaSystem('analyte', p), value: aid }],
        status: obsStatus,
        category: [
          {
            coding: [
              {
                system: 'http://terminology.hl7.org/CodeSystem/observation-category',
                code: 'laboratory',
                display: 'Laboratory',
              },
            ],
          },
        ],
        code: {
          text: aText,
          coding: aLoinc ? [{ system: 'http://loinc.org', code: aLoinc, display: aText }] : undefined,
        },
        subject,
        effectiveDateTime: aWhen,
        ...(n !== undefined && /^\s*-?\d+(\.\d+)?\s*$/.test(String(a.value))
          ? {
              valueQuantity: {
                value: n,
                unit: str(a.units),
                ...(str(a.units) ? { system: 'http://unitsofmeasure.org', code: str(a.units) } : {}),
              },
            }
          : str(a.value)
            ? { valueString: str(a.value) }
            : {}),
        interpretation: flag
          ? [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: flag }] }]
          : undefined,
        referenceRange: str(a.referencerange) ? [{ text: str(a.referencerange) }] : undefined,
      };
    },
  );
  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    id: safeId(`athena-${p}-labresult-${lid}`),
    identifier: [{ system: athenaSystem('labresult', p), value: lid }],
    status,
    category: labCategory,
    code: { text, coding: loinc ? [{ system: 'http://loinc.org', code: loinc, display: text }] : undefined },
    subject,
    effectiveDateTime: when,
  };
  return { report, observations };
}

// ---------------------------------------------------------------------------------------------
// Departments and providers

export function athenaDepartmentToFhir(p: string, r: Record<string, any>): Location {
  const did = str(r.departmentid);
  if (!did) throw inputError('ATHENA_NO_ID', 'athena department without departmentid');
  const tz = str(r.timezonename);
  const line = [str(r.address), str(r.address2)].filter((x): x is string => !!x);
  return {
    resourceType: 'Location',
    id: safeId(`athena-${p}-department-${did}`),
    identifier: [{ system: athenaSystem('department', p), value: did }],
    status: 'active',
    name: str(r.name) ?? str(r.patientdepartmentname) ?? `Department ${did}`,
    mode: 'instance',
    ...(tz ? { extension: [{ url: TIMEZONE_EXT, valueCode: tz }] } : {}),
    telecom: str(r.phone) ? [{ system: 'phone', value: str(r.phone) }] : undefined,
    address:
      line.length || str(r.city)
        ? { line: line.length ? line : undefined, city: str(r.city), state: str(r.state), postalCode: str(r.zip) }
        : undefined,
  };
}

export function athenaProviderToFhir(p: string, r: Record<string, any>): Practitioner {
  const prid = str(r.providerid);
  if (!prid) throw inputError('ATHENA_NO_ID', 'athena provider without providerid');
  const identifier: Identifier[] = [{ system: athenaSystem('provider', p), value: prid }];
  if (str(r.npi)) identifier.push({ system: NPI_SYSTEM, value: str(r.npi) });
  const given = str(r.firstname);
  return {
    resourceType: 'Practitioner',
    id: safeId(`athena-${p}-provider-${prid}`),
    identifier,
    active: r.active === undefined ? true : r.active === true || r.active === 'true',
    name:
      str(r.lastname) || given
        ? [{ family: str(r.lastname), given: given ? [given] : undefined, text: str(r.displayname) }]
        : str(r.displayname)
          ? [{ text: str(r.displayname) }]
          : undefined,
    qualification: str(r.providertype) ? [{ code: { text: str(r.providertype) } }] : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// The transform

export function parseEnvelope(body: Buffer, kind?: AthenaKind): AthenaEnvelope {
  let env: any;
  try {
    env = JSON.parse(body.toString('utf8'));
  } catch {
    throw inputError('ATHENA_NOT_JSON', 'athena message body is not JSON');
  }
  if (
    !env ||
    typeof env !== 'object' ||
    typeof env.record !== 'object' ||
    env.record === null ||
    !str(env.practiceid)
  ) {
    throw inputError('ATHENA_BAD_ENVELOPE', 'athena message must be { practiceid, kind, record, department? }');
  }
  return { ...env, practiceid: String(env.practiceid), kind: kind ?? env.kind };
}

/** Builds the canonical Bundle for one envelope. */
export function athenaEnvelopeToBundle(env: AthenaEnvelope): Bundle {
  const p = env.practiceid;
  const entries: BundleEntry[] = [];
  const add = (res: Resource & { identifier?: Identifier[] }) => entries.push(entryFor(res, res.identifier![0]));
  switch (env.kind) {
    case 'patient':
      add(athenaPatientToFhir(p, env.record));
      break;
    case 'appointment':
      add(athenaAppointmentToFhir(p, env.record, env.department));
      break;
    case 'labresult': {
      const { report, observations } = athenaLabResultToFhir(p, env.record, env.department);
      const obsEntries = observations.map((o) => entryFor(o, o.identifier![0]));
      report.result = obsEntries.map((e) => ({ reference: e.fullUrl }));
      if (!report.result.length) delete report.result;
      add(report);
      entries.push(...obsEntries);
      break;
    }
    case 'department':
      add(athenaDepartmentToFhir(p, env.record));
      break;
    case 'provider':
      add(athenaProviderToFhir(p, env.record));
      break;
    case 'problem':
    case 'medication':
    case 'allergy':
    case 'vital':
    case 'vaccine':
      add(athenaChartToFhir(env.kind, p, env.record, env.department));
      break;
    case 'document':
      add(JSON.parse(JSON.stringify(athenaDocumentToFhir(p, env.record, env.department))));
      break;
    default:
      throw inputError('ATHENA_UNKNOWN_KIND', `unknown athena record kind ${String(env.kind)}`);
  }
  const bundle: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: entries };
  const outcome = validateBundle(bundle);
  if (outcome?.issue?.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
    throw inputError(
      'ATHENA_FHIR_INVALID',
      `canonical ${env.kind} bundle failed FHIR validation: ${outcome.issue.length} issue(s)`,
      { outcome },
    );
  }
  return bundle;
}

/** Routing/ordering headers for one envelope. */
export function athenaHeaders(env: AthenaEnvelope): MessageHeaders {
  const r = env.record;
  const p = env.practiceid;
  const id = str(r.patientid ?? r.appointmentid ?? r.labresultid ?? r.departmentid ?? r.providerid) ?? '?';
  const entityId =
    env.kind === 'patient'
      ? str(r.patientid)
      : env.kind === 'appointment'
        ? str(r.appointmentid)
        : env.kind === 'labresult'
          ? str(r.labresultid)
          : env.kind === 'department'
            ? str(r.departmentid)
            : env.kind === 'provider'
              ? str(r.providerid)
              : env.kind === 'document'
                ? (str(r.clinicaldocumentid) ?? str(r.adminid) ?? str(r.documentid))
                : chartEntityId(env.kind, r);
  const digest = createHash('sha256')
    .update(JSON.stringify(sortKeys(r)))
    .digest('hex')
    .slice(0, 16);
  const pid = str(r.patientid);
  return {
    messageType: `athena.${env.kind}`,
    trigger: env.feed,
    // Same record content => same control id, so a replayed feed event is recognised as a duplicate.
    controlId: `${env.kind}:${entityId ?? id}:${digest}`,
    sendingApplication: 'athenaOne',
    sendingFacility: p,
    orderingKey: pid ? `${athenaSystem('patient', p)}|${pid}` : `athena:${p}:${env.kind}:${entityId ?? id}`,
  };
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  return v;
}
