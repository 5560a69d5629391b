export * from './charset';
export * from './delimiters';
export * from './escape';
export * from './parser';
export * from './batch';
export * from './headers';
export * from './hl7-standard.bridge';
