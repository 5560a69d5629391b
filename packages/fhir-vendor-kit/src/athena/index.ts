export * from './athena-connection';
export * from './athena-time';
export * from './athena-ids';
