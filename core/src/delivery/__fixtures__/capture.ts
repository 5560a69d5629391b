import { PassThrough } from 'node:stream';
import type { Logger } from 'winston';
import { createLogger } from '../../logging/logger';

export type Entry = { level: string; message: string; [k: string]: unknown };

/** A real logger (JSON lines, debug and up) whose entries are collected. */
export function capture(): { logs: Entry[]; logger: Logger } {
  const logs: Entry[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Entry);
  });
  return { logs, logger: createLogger({ level: 'debug' }, stream) };
}
