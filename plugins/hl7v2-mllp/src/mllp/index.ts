export * from './framing';
export * from './mllp.schema';
export * from './mllp.server';
export * from './mllp.source';
export * from './register';
export * from '../ack/ack.builder';
export * from '../ack/msh';
