import type { AthenaSimulator, Json } from './athena-simulator';

/** The shared preview practice id (reference 1.1). */
export const PRACTICE = '195900';

/** Departments: one in US/Eastern (as in the reference fixture) and one in US/Pacific. */
export const DEPARTMENTS: Json[] = [
  {
    departmentid: '1',
    name: 'Boston Primary Care',
    timezone: -5,
    timezoneoffset: -5,
    timezonename: 'US/Eastern',
    address: '100 Main St',
    city: 'BOSTON',
    state: 'MA',
    zip: '02210',
    phone: '6175550100',
    clinicals: 'ON',
  },
  {
    departmentid: '21',
    name: 'San Diego Clinic',
    timezone: -8,
    timezoneoffset: -8,
    timezonename: 'US/Pacific',
    address: '1 Harbor Dr',
    city: 'SAN DIEGO',
    state: 'CA',
    zip: '92101',
    phone: '6195550100',
    clinicals: 'ON',
  },
];

export const PROVIDERS: Json[] = [
  {
    providerid: 1,
    firstname: 'Ada',
    lastname: 'Lovelace',
    displayname: 'Ada Lovelace MD',
    providertype: 'MD',
    specialty: 'Family Medicine',
    npi: 1234567893,
    entitytype: 'Person',
  },
  {
    providerid: 7,
    firstname: 'Grace',
    lastname: 'Hopper',
    displayname: 'Grace Hopper NP',
    providertype: 'NP',
    npi: '1679576722',
    entitytype: 'Person',
  },
];

/** A patient shaped like the go-athenahealth fixture (reference 1.10). */
export function samplePatient(i: number, over: Json = {}): Json {
  return {
    firstname: `Test${i}`,
    lastname: `Patient${i}`,
    dob: '01/15/1985',
    sex: i % 2 ? 'M' : 'F',
    status: 'active',
    departmentid: '1',
    primarydepartmentid: '1',
    primaryproviderid: '1',
    email: `p${i}@example.org`,
    mobilephone: '8608105503',
    homephone: '8605555555',
    address1: `${100 + i} Main St`,
    city: 'BOSTON',
    state: 'MA',
    zip: '02210',
    countrycode3166: 'US',
    maritalstatus: 'S',
    registrationdate: '05/28/2020',
    ssn: '*****3333',
    portalaccessgiven: true,
    ...over,
  };
}

/** Departments and providers for PRACTICE; subscriptions are left to the test. */
export function seedPractice(sim: AthenaSimulator, practiceId = PRACTICE): void {
  for (const d of DEPARTMENTS) sim.addDepartment(practiceId, d);
  for (const p of PROVIDERS) sim.addProvider(practiceId, p);
}

/** The real preview shape from the reference (2.6). */
export const referencePatient = {
  resourceType: 'Patient',
  id: 'a-14523.E-857',
  meta: { lastUpdated: '2022-05-02T14:38:21.000-04:00' },
  extension: [
    {
      url: 'https://fhir.athena.io/StructureDefinition/ah-brand',
      valueReference: { reference: 'Organization/a-14523.Brand-1' },
    },
    {
      url: 'https://fhir.athena.io/StructureDefinition/ah-chart-sharing-group',
      valueReference: { reference: 'Organization/a-14523.CSG-1' },
    },
    {
      url: 'https://fhir.athena.io/StructureDefinition/ah-provider-group',
      valueReference: { reference: 'Organization/a-14523.PG-1' },
    },
    { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex', valueCode: 'UNK' },
  ],
  identifier: [{ system: 'https://fhir.athena.io/sid/ah-patient', value: 'a-14523.E-857' }],
  name: [{ use: 'official', family: 'Testuser', given: ['Phr'], period: { start: '2021-03-28' } }],
  telecom: [{ system: 'phone', value: '(617) 402-8874', use: 'home' }],
  gender: 'male',
  birthDate: '2000-01-01',
  address: [
    { use: 'home', line: ['311 ARSENAL ST'], city: 'WATERTOWN', state: 'MA', postalCode: '02472', country: 'USA' },
  ],
};
