import { PassThrough } from 'node:stream';
import type winston from 'winston';
import { createLogger } from './logger';

/** The lines a logger made with `createLogger` writes, parsed. */
function capture(): { logger: winston.Logger; lines: () => Record<string, unknown>[]; raw: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const raw = () => Buffer.concat(chunks).toString('utf8');
  return {
    logger: createLogger({ level: 'debug' }, stream),
    raw,
    lines: () =>
      raw()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

describe('createLogger (JSON lines)', () => {
  it('writes what timestamp + errors + json wrote: level, message, fields, an ISO timestamp, one line each', async () => {
    const { logger, lines, raw } = capture();
    logger
      .child({ component: 'x' })
      .info('message routed', { messageId: 'm1', routes: ['a'], deliveries: 2, none: undefined });
    logger.warn('plain');
    await new Promise((r) => setImmediate(r));
    expect(lines()).toEqual([
      {
        component: 'x',
        level: 'info',
        message: 'message routed',
        messageId: 'm1',
        routes: ['a'],
        deliveries: 2,
        timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      },
      { level: 'warn', message: 'plain', timestamp: expect.any(String) },
    ]);
    expect(raw().split('\n')).toHaveLength(3); // two lines and the final newline
  });

  it('what JSON.stringify cannot do (a cycle, a BigInt) goes through logform as before; an Error logs its message, not its stack', async () => {
    const { logger, lines } = capture();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    logger.info('cycle', { cyclic });
    logger.info('big', { n: 12345678901234567890n });
    logger.error(new Error('it broke'));
    logger.error('failed', new Error('inner'));
    await new Promise((r) => setImmediate(r));
    const [cycle, big, err, inner] = lines();
    expect(cycle).toMatchObject({ message: 'cycle', cyclic: { a: 1, self: '[Circular]' } });
    expect(big).toMatchObject({ message: 'big', n: '12345678901234567890' });
    expect(err).toMatchObject({ level: 'error', message: 'it broke' });
    expect(JSON.stringify(err)).not.toContain('at ');
    expect(inner).toMatchObject({ level: 'error', message: expect.stringContaining('inner') });
    for (const l of lines()) expect(l.timestamp).toEqual(expect.any(String));
  });
});
