export * from './fhir-server';
export * from './tcp-proxy';
