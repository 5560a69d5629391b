import 'reflect-metadata';

export * from './errors';
export * from './model/message';
export * from './plugin/api';
export * from './plugin/tokens';
export * from './store/message-store';
export * from './vendor';
