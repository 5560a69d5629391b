/** Code shared by the Epic and Cerner plugins (@ferry/plugin-cerner imports it from @ferry/plugin-epic). */
export * from './keys';
export * from './connection';
export * from './fhir-client';
export * from './bulk-client';
export * from './normalize';
export * from './sources';
export * from './transform';
export * from './writeback.sink';
