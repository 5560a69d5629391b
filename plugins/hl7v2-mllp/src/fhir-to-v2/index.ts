export * from './profile';
export * from './datatypes';
export * from './fhir-to-v2';
export * from './roundtrip';
