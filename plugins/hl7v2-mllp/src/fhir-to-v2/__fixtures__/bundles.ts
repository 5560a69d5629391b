import type { Bundle, Resource } from '@medplum/fhirtypes';

/** Hand-written canonical Bundles for the FHIR -> v2 tests (as a vendor poll source would produce them). */
const bundle = (...rs: Resource[]): Bundle => ({
  resourceType: 'Bundle',
  type: 'transaction',
  entry: rs.map((r) => ({
    fullUrl: `urn:uuid:${r.id}`,
    resource: r,
    request: { method: 'PUT', url: `${r.resourceType}/${r.id}` },
  })),
});

export const patient: Resource = {
  resourceType: 'Patient',
  id: 'p1',
  identifier: [
    {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
      system: 'urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14',
      value: 'E1234',
      assigner: { display: 'EPIC' },
    },
    {
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS' }] },
      system: 'http://hl7.org/fhir/sid/us-ssn',
      value: '123-45-6789',
    },
  ],
  name: [{ use: 'official', family: "O'Brien|Smith", given: ['Anne', 'Marie'] }],
  gender: 'female',
  birthDate: '1980-05-15',
  address: [
    { use: 'home', line: ['12 Main St', 'Apt 4^B'], city: 'Madison', state: 'WI', postalCode: '53703', country: 'US' },
  ],
  telecom: [
    { system: 'phone', value: '608-555-0100', use: 'home' },
    { system: 'email', value: 'anne@example.org' },
    { system: 'phone', value: '608-555-0199', use: 'work' },
  ],
  maritalStatus: {
    coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'M', display: 'Married' }],
  },
} as Resource;

export const practitioner: Resource = {
  resourceType: 'Practitioner',
  id: 'dr1',
  identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' }],
  name: [{ family: 'Welby', given: ['Marcus'], prefix: ['Dr'] }],
} as Resource;

export const room: Resource = {
  resourceType: 'Location',
  id: 'loc-room',
  name: '4E-12',
  physicalType: { coding: [{ code: 'ro' }] },
  partOf: { reference: 'urn:uuid:loc-ward' },
} as Resource;
export const ward: Resource = { resourceType: 'Location', id: 'loc-ward', name: '4EAST' } as Resource;

export function adtBundle(status: string = 'in-progress'): Bundle {
  return bundle(
    patient,
    practitioner,
    room,
    ward,
    {
      resourceType: 'Encounter',
      id: 'e1',
      status,
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
      subject: { reference: 'urn:uuid:p1' },
      identifier: [{ type: { coding: [{ code: 'VN' }] }, system: 'urn:ferry:id:EPIC', value: 'V100' }],
      participant: [
        {
          type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'ATND' }] }],
          individual: { reference: 'urn:uuid:dr1' },
        },
      ],
      location: [{ location: { reference: 'urn:uuid:loc-room' } }],
      period: { start: '2026-03-01T08:30:00-06:00' },
      diagnosis: [
        {
          condition: { reference: 'urn:uuid:c1' },
          use: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/diagnosis-role', code: 'AD' }] },
          rank: 1,
        },
      ],
    } as Resource,
    {
      resourceType: 'RelatedPerson',
      id: 'rp1',
      patient: { reference: 'urn:uuid:p1' },
      relationship: [
        { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'SPS', display: 'spouse' }] },
      ],
      name: [{ family: "O'Brien", given: ['Tom'] }],
      telecom: [{ system: 'phone', value: '608-555-0101', use: 'home' }],
    } as Resource,
    {
      resourceType: 'AllergyIntolerance',
      id: 'a1',
      patient: { reference: 'urn:uuid:p1' },
      category: ['medication'],
      code: {
        coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '7980', display: 'Penicillin G' }],
      },
      reaction: [{ manifestation: [{ text: 'Hives' }], severity: 'severe' }],
      onsetDateTime: '2010-06',
    } as Resource,
    {
      resourceType: 'Condition',
      id: 'c1',
      subject: { reference: 'urn:uuid:p1' },
      code: {
        coding: [
          { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'J18.9', display: 'Pneumonia, unspecified organism' },
        ],
      },
      onsetDateTime: '2026-02-27',
    } as Resource,
  );
}

export function oruBundle(): Bundle {
  return bundle(
    patient,
    {
      resourceType: 'DiagnosticReport',
      id: 'dr1r',
      status: 'final',
      identifier: [{ type: { coding: [{ code: 'FILL' }] }, system: 'urn:ferry:id:LAB', value: 'F-778' }],
      code: {
        coding: [{ system: 'http://loinc.org', code: '58410-2', display: 'CBC panel - Blood by Automated count' }],
      },
      subject: { reference: 'urn:uuid:p1' },
      effectiveDateTime: '2026-03-02T07:15:00.123456-06:00',
      issued: '2026-03-02T09:00:00Z',
      result: [
        { reference: 'urn:uuid:o1' },
        { reference: 'urn:uuid:o2' },
        { reference: 'urn:uuid:o3' },
        { reference: 'urn:uuid:o4' },
      ],
      specimen: [{ reference: 'urn:uuid:s1' }],
    } as Resource,
    {
      resourceType: 'Observation',
      id: 'o1',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '718-7', display: 'Hemoglobin' }] },
      subject: { reference: 'urn:uuid:p1' },
      valueQuantity: { value: 10.2, unit: 'g/dL', system: 'http://unitsofmeasure.org', code: 'g/dL' },
      referenceRange: [{ low: { value: 12 }, high: { value: 16 } }],
      interpretation: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'L', display: 'Low' },
          ],
        },
      ],
      effectiveDateTime: '2026-03-02T07:15:00-06:00',
    } as Resource,
    {
      resourceType: 'Observation',
      id: 'o2',
      status: 'preliminary',
      code: { coding: [{ system: 'http://loinc.org', code: '8251-1', display: 'Service comment' }] },
      valueString: 'Sample slightly hemolysed | re-draw advised ^ see note',
    } as Resource,
    {
      resourceType: 'Observation',
      id: 'o3',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '882-1', display: 'ABO and Rh group' }] },
      valueCodeableConcept: {
        coding: [{ system: 'http://snomed.info/sct', code: '278149003', display: 'Blood group A Rh(D) positive' }],
      },
    } as Resource,
    {
      resourceType: 'Observation',
      id: 'o4',
      status: 'corrected',
      code: { coding: [{ system: 'http://loinc.org', code: '11502-2', display: 'Laboratory report' }] },
      valueString: 'Line one\nLine two',
      note: [{ text: 'Corrected at 09:00' }],
    } as Resource,
    {
      resourceType: 'Specimen',
      id: 's1',
      identifier: [{ type: { coding: [{ code: 'FILL' }] }, system: 'urn:ferry:id:LAB', value: 'SP-1' }],
      type: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0487', code: 'BLD', display: 'Whole blood' }],
      },
      collection: { collectedDateTime: '2026-03-02T07:10:00-06:00' },
    } as Resource,
  );
}

export function siuBundle(status: string = 'booked'): Bundle {
  return bundle(patient, practitioner, ward, {
    resourceType: 'Appointment',
    id: 'ap1',
    status,
    identifier: [{ system: 'urn:ferry:id:ATHENA', value: '998877' }],
    serviceType: [{ coding: [{ system: 'urn:ferry:cs:ATHENA-APPTTYPE', code: '82', display: 'Office visit' }] }],
    appointmentType: {
      coding: [
        { system: 'http://terminology.hl7.org/CodeSystem/v2-0276', code: 'ROUTINE', display: 'Routine appointment' },
      ],
    },
    start: '2026-03-10T14:00:00-05:00',
    end: '2026-03-10T14:30:00-05:00',
    minutesDuration: 30,
    comment: 'Bring insurance card',
    participant: [
      { actor: { reference: 'urn:uuid:p1' }, status: 'accepted' },
      {
        actor: { reference: 'urn:uuid:dr1' },
        status: 'accepted',
        type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'ATND' }] }],
      },
      { actor: { reference: 'urn:uuid:loc-ward' }, status: 'accepted' },
    ],
  } as Resource);
}

export function vxuBundle(): Bundle {
  return bundle(
    patient,
    practitioner,
    {
      resourceType: 'Organization',
      id: 'mfr',
      name: 'Sanofi Pasteur',
      identifier: [{ system: 'http://hl7.org/fhir/sid/mvx', value: 'PMC' }],
    } as Resource,
    {
      resourceType: 'Immunization',
      id: 'im1',
      status: 'completed',
      identifier: [{ type: { coding: [{ code: 'FILL' }] }, system: 'urn:ferry:id:IIS', value: '13696' }],
      vaccineCode: { coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: '115', display: 'Tdap' }] },
      patient: { reference: 'urn:uuid:p1' },
      occurrenceDateTime: '2026-03-02T10:15:00-06:00',
      primarySource: true,
      lotNumber: 'L-42',
      expirationDate: '2027-01-31',
      manufacturer: { reference: 'urn:uuid:mfr' },
      doseQuantity: { value: 0.5, unit: 'mL', system: 'http://unitsofmeasure.org', code: 'mL' },
      route: { coding: [{ system: 'http://ncimeta.nci.nih.gov', code: 'C28161', display: 'Intramuscular' }] },
      site: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0163', code: 'LD', display: 'Left Deltoid' }],
      },
      performer: [
        {
          function: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0443', code: 'AP' }] },
          actor: { reference: 'urn:uuid:dr1' },
        },
      ],
    } as Resource,
  );
}

export function ormBundle(): Bundle {
  return bundle(patient, practitioner, {
    resourceType: 'ServiceRequest',
    id: 'sr1',
    status: 'active',
    intent: 'order',
    priority: 'stat',
    identifier: [
      { type: { coding: [{ code: 'PLAC' }] }, system: 'urn:ferry:id:EHR', value: 'ORD-9' },
      { type: { coding: [{ code: 'FILL' }] }, system: 'urn:ferry:id:LAB', value: 'LAB-9' },
    ],
    code: { coding: [{ system: 'http://loinc.org', code: '24331-1', display: 'Lipid panel' }] },
    subject: { reference: 'urn:uuid:p1' },
    occurrenceDateTime: '2026-03-03T08:00:00-06:00',
    authoredOn: '2026-03-02T10:00:00-06:00',
    requester: { reference: 'urn:uuid:dr1' },
    note: [{ text: 'Fasting 12 h' }],
  } as Resource);
}

export function mdmBundle(): Bundle {
  return bundle(patient, practitioner, {
    resourceType: 'DocumentReference',
    id: 'doc1',
    status: 'current',
    docStatus: 'final',
    masterIdentifier: { system: 'urn:ferry:id:DOCS', value: 'D-77' },
    type: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0270', code: 'DS', display: 'Discharge summary' }],
    },
    subject: { reference: 'urn:uuid:p1' },
    date: '2026-03-04T16:20:00-06:00',
    author: [{ reference: 'urn:uuid:dr1' }],
    content: [
      {
        attachment: {
          contentType: 'text/plain',
          data: Buffer.from('Discharged home.\nFollow up in 2 weeks | clinic').toString('base64'),
        },
      },
    ],
  } as Resource);
}
