/**
 * athena chart sections -> canonical FHIR R4 (reference 1.4: `GET /chart/{patientid}/problems|
 * medications|allergies|vitals`, `departmentid` required, "per-resource envelopes").
 *
 * The reference names the endpoints but not their item fields; the fields read here are athena's
 * chart fields as its API answers them and as the simulator models them **[U]**:
 * - problem: `problemid`, `name`, `code` + `codeset` (SNOMED), `events[{eventtype START|END,
 *   startdate MM/DD/YYYY, status CHRONIC|ACUTE|RESOLVED…}]` -> `Condition` (problem-list-item);
 * - medication: `medicationentryid`, `medication` (name), `rxnorm`, `unstructuredsig`,
 *   `events[{type START|END|ENTER|HIDE, eventdate}]` -> `MedicationStatement`;
 * - allergy: `allergenid`, `allergenname`, `onsetdate`, `deactivatedate`, `criticality`,
 *   `reactions[{reactionname, snomedcode, severity}]` -> `AllergyIntolerance`;
 * - vital (one reading of a vitals group): `readingid`, `clinicalelementid`, `value`, `unit`,
 *   `code` + `codeset` (LOINC), `readingtaken` (department-local MM/DD/YYYY HH:mm:ss) ->
 *   `Observation` (vital-signs);
 * - vaccine (`GET /chart/{patientid}/vaccines`, listed in 1.4; fields not in the reference **[U]**,
 *   as athena's public API documents them): `vaccineid`, `description`, `cvx`, `administerdate`
 *   (MM/DD/YYYY), `status` (ADMINISTERED | REFUSED | …), `type` (ADMINISTERED | HISTORICAL),
 *   `lotnumber`, `manufacturer`, `expirationdate`, `amount` + `units`, `route`, `site`,
 *   `refusedreason`, `refuseddate` -> `Immunization`.
 * Every resource names its patient by the canonical athena patient identifier and carries an
 * identifier in `urn:athenahealth:athenanet:{kind}:{practice}`, the conditional-update key.
 */
import { inputError } from '@ferry/core';
import type {
  AllergyIntolerance,
  CodeableConcept,
  Condition,
  DocumentReference,
  Identifier,
  Immunization,
  MedicationStatement,
  Observation,
  Patient,
  Reference,
} from '@medplum/fhirtypes';
import { athenaDateTimeToFhir, athenaDateToFhir } from '@ferry/fhir-vendor-kit';

export type AthenaChartKind = 'problem' | 'medication' | 'allergy' | 'vital' | 'vaccine';

/** Chart section (endpoint) -> record kind. */
export const CHART_SECTIONS = {
  problems: 'problem',
  medications: 'medication',
  allergies: 'allergy',
  vitals: 'vital',
  vaccines: 'vaccine',
} as const satisfies Record<string, AthenaChartKind>;
export type AthenaChartSection = keyof typeof CHART_SECTIONS;

const str = (v: unknown): string | undefined =>
  v === undefined || v === null || v === '' ? undefined : String(v).trim() || undefined;
const safeId = (s: string) => s.replace(/[^A-Za-z0-9\-.]/g, '-').slice(0, 64);
const chartSystem = (kind: AthenaChartKind, p: string) => `urn:athenahealth:athenanet:${kind}:${p}`;
const SNOMED = 'http://snomed.info/sct';
const LOINC = 'http://loinc.org';
const RXNORM = 'http://www.nlm.nih.gov/research/umls/rxnorm';
const CVX = 'http://hl7.org/fhir/sid/cvx';

/** The entity id of a chart record (allergen ids are codes, not rows: they are made per patient). */
export function chartEntityId(kind: AthenaChartKind, r: Record<string, any>): string | undefined {
  switch (kind) {
    case 'problem':
      return str(r.problemid);
    case 'medication':
      return str(r.medicationentryid) ?? str(r.medicationid);
    case 'allergy':
      return str(r.allergenid) && str(r.patientid) ? `${str(r.patientid)}-${str(r.allergenid)}` : undefined;
    case 'vital':
      return str(r.readingid);
    case 'vaccine':
      return str(r.vaccineid);
  }
}

function patientRef(p: string, r: Record<string, any>): Reference<Patient> {
  const pid = str(r.patientid);
  if (!pid) throw inputError('ATHENA_NO_PATIENT', 'athena chart record without patientid');
  return { type: 'Patient', identifier: { system: `urn:athenahealth:athenanet:patient:${p}`, value: pid } };
}

function ids(kind: AthenaChartKind, p: string, r: Record<string, any>): { id: string; identifier: Identifier[] } {
  const eid = chartEntityId(kind, r);
  if (!eid) throw inputError('ATHENA_NO_ID', `athena ${kind} without its id`);
  return { id: safeId(`athena-${p}-${kind}-${eid}`), identifier: [{ system: chartSystem(kind, p), value: eid }] };
}

const events = (r: Record<string, any>): Record<string, any>[] => (Array.isArray(r.events) ? r.events : []);
const eventType = (e: Record<string, any>) => String(e.eventtype ?? e.type ?? '').toUpperCase();

export function athenaProblemToFhir(p: string, r: Record<string, any>): Condition {
  const start = events(r).find((e) => eventType(e) === 'START');
  const end = events(r).find((e) => eventType(e) === 'END');
  const resolved = !!end || events(r).some((e) => String(e.status ?? '').toUpperCase() === 'RESOLVED');
  const coding =
    str(r.code) && /snomed/i.test(String(r.codeset ?? 'SNOMED'))
      ? [{ system: SNOMED, code: str(r.code)!, display: str(r.name) }]
      : undefined;
  return {
    resourceType: 'Condition',
    ...ids('problem', p, r),
    clinicalStatus: {
      coding: [
        { system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: resolved ? 'resolved' : 'active' },
      ],
    },
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/condition-category',
            code: 'problem-list-item',
            display: 'Problem List Item',
          },
        ],
      },
    ],
    code: { text: str(r.name) ?? str(r.code) ?? 'Problem', coding },
    subject: patientRef(p, r),
    onsetDateTime: athenaDateToFhir(start?.startdate ?? start?.onsetdate, 'events.startdate'),
    abatementDateTime: end ? athenaDateToFhir(end.startdate ?? end.enddate, 'events.enddate') : undefined,
    note: str(start?.note) ? [{ text: str(start?.note)! }] : undefined,
  };
}

export function athenaMedicationToFhir(p: string, r: Record<string, any>): MedicationStatement {
  const start = events(r).find((e) => eventType(e) === 'START');
  const end = events(r).find((e) => eventType(e) === 'END');
  const name = str(r.medication) ?? str(r.medicationname);
  if (!name && !str(r.rxnorm))
    throw inputError('ATHENA_NO_MEDICATION', 'athena medication without a name or RxNorm code');
  const concept: CodeableConcept = {
    text: name,
    coding: str(r.rxnorm) ? [{ system: RXNORM, code: str(r.rxnorm)!, display: name }] : undefined,
  };
  const startDate = athenaDateToFhir(start?.eventdate, 'events.eventdate');
  const endDate = end ? athenaDateToFhir(end.eventdate, 'events.eventdate') : undefined;
  return {
    resourceType: 'MedicationStatement',
    ...ids('medication', p, r),
    status: end ? 'completed' : 'active',
    medicationCodeableConcept: concept,
    subject: patientRef(p, r),
    effectivePeriod: startDate || endDate ? { start: startDate, end: endDate } : undefined,
    dosage: str(r.unstructuredsig) ? [{ text: str(r.unstructuredsig) }] : undefined,
  };
}

const SEVERITY: Record<string, 'mild' | 'moderate' | 'severe'> = {
  mild: 'mild',
  moderate: 'moderate',
  severe: 'severe',
};

export function athenaAllergyToFhir(p: string, r: Record<string, any>): AllergyIntolerance {
  const inactive = !!str(r.deactivatedate);
  const crit = str(r.criticality)?.toLowerCase();
  return {
    resourceType: 'AllergyIntolerance',
    ...ids('allergy', p, r),
    clinicalStatus: {
      coding: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical',
          code: inactive ? 'inactive' : 'active',
        },
      ],
    },
    verificationStatus: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification', code: 'confirmed' }],
    },
    code: { text: str(r.allergenname) ?? `Allergen ${str(r.allergenid)}` },
    criticality: crit === 'high' ? 'high' : crit === 'low' ? 'low' : undefined,
    patient: patientRef(p, r),
    onsetDateTime: athenaDateToFhir(r.onsetdate, 'onsetdate'),
    reaction: (Array.isArray(r.reactions) ? r.reactions : [])
      .filter((x: Record<string, any>) => str(x.reactionname) || str(x.snomedcode))
      .map((x: Record<string, any>) => ({
        manifestation: [
          {
            text: str(x.reactionname),
            coding: str(x.snomedcode)
              ? [{ system: SNOMED, code: str(x.snomedcode)!, display: str(x.reactionname) }]
              : undefined,
          },
        ],
        severity: SEVERITY[str(x.severity)?.toLowerCase() ?? ''],
      })),
  };
}

export function athenaVitalToFhir(
  p: string,
  r: Record<string, any>,
  department: Record<string, any> | undefined,
): Observation {
  const value = str(r.value);
  const n = value !== undefined && /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : undefined;
  const text = str(r.clinicalelementid) ?? str(r.key) ?? 'Vital sign';
  const loinc = str(r.code) && /loinc/i.test(String(r.codeset ?? '')) ? str(r.code) : undefined;
  return {
    resourceType: 'Observation',
    ...ids('vital', p, r),
    status: 'final',
    category: [
      {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/observation-category',
            code: 'vital-signs',
            display: 'Vital Signs',
          },
        ],
      },
    ],
    code: { text, coding: loinc ? [{ system: LOINC, code: loinc, display: text }] : undefined },
    subject: patientRef(p, r),
    effectiveDateTime: athenaDateTimeToFhir(r.readingtaken, str(department?.timezonename), 'readingtaken'),
    ...(n !== undefined
      ? {
          valueQuantity: {
            value: n,
            unit: str(r.unit),
            ...(str(r.unit) ? { system: 'http://unitsofmeasure.org', code: str(r.unit) } : {}),
          },
        }
      : value
        ? { valueString: value }
        : {}),
  };
}

/** A chart vaccine (fields [U], see the header): refused -> `not-done`, historical -> not the primary source. */
export function athenaVaccineToFhir(p: string, r: Record<string, any>): Immunization {
  const status = str(r.status)?.toUpperCase();
  const refused = status === 'REFUSED' || !!str(r.refusedreason);
  const deleted = status === 'DELETED' || !!str(r.deleteddate);
  const name = str(r.description) ?? str(r.vaccinename);
  if (!name && !str(r.cvx)) throw inputError('ATHENA_NO_VACCINE', 'athena vaccine without a description or CVX code');
  const when = athenaDateToFhir(
    refused ? (r.refuseddate ?? r.administerdate) : r.administerdate,
    refused ? 'refuseddate' : 'administerdate',
  );
  const amount = str(r.amount) !== undefined && /^\d+(\.\d+)?$/.test(str(r.amount)!) ? Number(r.amount) : undefined;
  return {
    resourceType: 'Immunization',
    ...ids('vaccine', p, r),
    status: deleted ? 'entered-in-error' : refused ? 'not-done' : 'completed',
    statusReason: refused && str(r.refusedreason) ? { text: str(r.refusedreason) } : undefined,
    vaccineCode: {
      text: name ?? `CVX ${str(r.cvx)}`,
      coding: str(r.cvx) ? [{ system: CVX, code: str(r.cvx)!, display: name }] : undefined,
    },
    patient: patientRef(p, r),
    ...(when ? { occurrenceDateTime: when } : { occurrenceString: 'unknown' }),
    primarySource: str(r.type) ? str(r.type)!.toUpperCase() !== 'HISTORICAL' : undefined,
    manufacturer: str(r.manufacturer) ? { display: str(r.manufacturer) } : undefined,
    lotNumber: str(r.lotnumber),
    expirationDate: athenaDateToFhir(r.expirationdate, 'expirationdate'),
    site: str(r.site) ? { text: str(r.site) } : undefined,
    route: str(r.route) ? { text: str(r.route) } : undefined,
    doseQuantity: amount !== undefined ? { value: amount, unit: str(r.units) } : undefined,
  };
}

/**
 * A patient document (reference 1.4 `GET /patients/{patientid}/documents/admin`, `POST
 * /documents/clinicaldocument`; the item fields are not in the reference **[U]**): `adminid` /
 * `clinicaldocumentid` (athena's document ids share one space per practice), `documentclass`
 * (ADMIN, CLINICALDOCUMENT, …), `documentsubclass`, `description` / `documentdescription`,
 * `documentdate` (MM/DD/YYYY), `createddatetime` (department-local), `status` (REVIEW, CLOSED, …),
 * `contenttype`, `deleteddatetime` -> `DocumentReference` (the bytes are not carried).
 */
export function athenaDocumentToFhir(
  p: string,
  r: Record<string, any>,
  department: Record<string, any> | undefined,
): DocumentReference {
  const docId = str(r.clinicaldocumentid) ?? str(r.adminid) ?? str(r.documentid);
  if (!docId) throw inputError('ATHENA_NO_ID', 'athena document without its id');
  const cls = str(r.documentclass)?.toUpperCase();
  const sub = str(r.documentsubclass)?.toUpperCase();
  const tz = str(department?.timezonename);
  const created = tz ? athenaDateTimeToFhir(r.createddatetime, tz, 'createddatetime') : undefined;
  const docDate = athenaDateToFhir(r.documentdate, 'documentdate');
  const title = str(r.description) ?? str(r.documentdescription) ?? str(r.documentsubclassdescription);
  return {
    resourceType: 'DocumentReference',
    id: safeId(`athena-${p}-document-${docId}`),
    identifier: [{ system: `urn:athenahealth:athenanet:document:${p}`, value: docId }],
    status: str(r.deleteddatetime) ? 'entered-in-error' : 'current',
    docStatus: str(r.status)?.toUpperCase() === 'CLOSED' ? 'final' : 'preliminary',
    type: sub
      ? {
          text: str(r.documentsubclassdescription) ?? sub,
          coding: [{ system: 'urn:athenahealth:athenanet:documentsubclass', code: sub }],
        }
      : { text: cls ?? 'Document' },
    category: cls ? [{ coding: [{ system: 'urn:athenahealth:athenanet:documentclass', code: cls }] }] : undefined,
    subject: patientRef(p, r),
    date: created,
    description: title,
    // An attachment needs some content for FHIR: the title falls back to the subclass or class.
    content: [
      { attachment: { contentType: str(r.contenttype), title: title ?? sub ?? cls ?? `athena document ${docId}` } },
    ],
    context:
      docDate || str(r.departmentid)
        ? {
            period: docDate ? { start: docDate } : undefined,
            related: str(r.departmentid)
              ? [
                  {
                    type: 'Location',
                    identifier: { system: `urn:athenahealth:athenanet:department:${p}`, value: str(r.departmentid)! },
                  },
                ]
              : undefined,
          }
        : undefined,
  };
}

/** One chart record in canonical form. */
export function athenaChartToFhir(
  kind: AthenaChartKind,
  p: string,
  r: Record<string, any>,
  department?: Record<string, any>,
): Condition | MedicationStatement | AllergyIntolerance | Observation | Immunization {
  const res =
    kind === 'problem'
      ? athenaProblemToFhir(p, r)
      : kind === 'medication'
        ? athenaMedicationToFhir(p, r)
        : kind === 'allergy'
          ? athenaAllergyToFhir(p, r)
          : kind === 'vaccine'
            ? athenaVaccineToFhir(p, r)
            : athenaVitalToFhir(p, r, department);
  // Absent optional fields are left out (the validator refuses properties set to undefined).
  return JSON.parse(JSON.stringify(res));
}

/** The records of one chart section page: medications may come as arrays of arrays, vitals as groups of readings. */
export function chartRecords(section: AthenaChartSection, items: unknown[]): Record<string, any>[] {
  const flat = items
    .flatMap((x) => (Array.isArray(x) ? x : [x]))
    .filter((x): x is Record<string, any> => !!x && typeof x === 'object');
  if (section !== 'vitals') return flat;
  return flat.flatMap((g) => {
    const readings = (Array.isArray(g.readings) ? g.readings : []).flatMap((x: unknown) =>
      Array.isArray(x) ? x : [x],
    );
    return readings
      .filter((x: unknown) => !!x && typeof x === 'object')
      .map((x: Record<string, any>) => ({ key: g.key, ...x }));
  });
}
