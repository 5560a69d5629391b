export * from './fhir-server';
export * from './tcp-proxy';
export * from './admin-auth';
export * from './oidc-provider';
export * from './facade';
