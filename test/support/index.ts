export * from './fhir-server';
