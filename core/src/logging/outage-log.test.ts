import { Writable } from 'node:stream';
import { createLogger } from './logger';
import { OutageLog } from './outage-log';

function capture() {
  const lines: { level: string; message: string; [k: string]: unknown }[] = [];
  const logger = createLogger(
    { level: 'debug' },
    new Writable({
      write(c: Buffer, _e, cb) {
        for (const l of c.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    }),
  );
  return { logger, lines };
}

describe('OutageLog', () => {
  it('logs the first failure as an error, the rest at debug, a count every summary interval and one line when it ends', async () => {
    const { logger, lines } = capture();
    let t = 0;
    const log = new OutageLog(logger, 'message not stored', { source: 's' }, 1000, () => t);
    log.ok(); // nothing to end
    for (let i = 0; i < 5; i++) {
      log.failed({ controlId: `C${i}` });
      t += 300; // 0, 300, 600, 900, 1200 ms
    }
    expect(log.active).toBe(true);
    log.ok();
    log.ok();
    log.failed({ controlId: 'C9' }); // a new run
    await new Promise((r) => setImmediate(r));
    const summary = lines.filter((l) => l.level !== 'debug').map((l) => `${l.level} ${l.message}`);
    expect(summary).toEqual([
      'error message not stored',
      'warn message not stored (still failing)',
      'info message not stored: recovered',
      'error message not stored',
    ]);
    expect(lines[0]).toMatchObject({ source: 's', controlId: 'C0' });
    expect(lines.filter((l) => l.level === 'debug')).toHaveLength(4);
    expect(lines.find((l) => l.level === 'warn')).toMatchObject({ failures: 5, sinceMs: 1200, lastWindow: 4 });
    expect(lines.find((l) => l.level === 'info')).toMatchObject({ failures: 5, forMs: 1500 });
  });
});
