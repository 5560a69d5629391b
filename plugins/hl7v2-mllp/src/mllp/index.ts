export * from './framing';
export * from './mllp.schema';
export * from './mllp.server';
export * from './mllp.client';
