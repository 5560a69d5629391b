import { FerryError } from '../../errors';
import type { SinkHold } from '../message-store';
import { SqlProcessingPart } from './processing';
import type { Row } from './sql-exec';

/** Sink holds: an operator's pause of a sink (its deliveries wait), until a time or released. */
export abstract class SqlHoldsPart extends SqlProcessingPart {
  async holdSink(sinkId: string, opts: { until?: Date; reason?: string } = {}): Promise<SinkHold> {
    this.assertOpen();
    if (typeof sinkId !== 'string' || !sinkId)
      throw new FerryError('INPUT_SINK_ID', 'a sink id is required', { kind: 'input' });
    const now = this.now();
    // The caller's clock -> the database's.
    const until = opts.until === undefined ? null : opts.until.getTime() + this.clockOffsetMs;
    if (until !== null && !Number.isFinite(until))
      throw new FerryError('INPUT_HOLD_UNTIL', 'the end of a hold must be a valid time', { kind: 'input' });
    await this.tx(
      (x) =>
        x.run(
          `INSERT INTO sink_holds (sink_id, held_at, until_at, reason) VALUES (?, ?, ?, ?)
           ON CONFLICT (sink_id) DO UPDATE SET held_at = excluded.held_at, until_at = excluded.until_at, reason = excluded.reason`,
          [sinkId, now, until, opts.reason ?? null],
        ),
      { durable: true },
    );
    return this.toHold({ sink_id: sinkId, held_at: now, until_at: until, reason: opts.reason ?? null });
  }

  async releaseSink(sinkId: string): Promise<boolean> {
    this.assertOpen();
    return (await this.tx((x) => x.run('DELETE FROM sink_holds WHERE sink_id = ?', [sinkId]), { durable: true })) > 0;
  }

  async sinkHolds(): Promise<SinkHold[]> {
    this.assertOpen();
    const rows = await this.readLoop((x) =>
      x.all(
        'SELECT sink_id, held_at, until_at, reason FROM sink_holds WHERE until_at IS NULL OR until_at > ? ORDER BY sink_id',
        [this.now()],
      ),
    );
    return rows.map((r) => this.toHold(r));
  }

  private toHold(r: Row): SinkHold {
    const h: SinkHold = { sinkId: r.sink_id as string, since: new Date(Number(r.held_at) - this.clockOffsetMs) };
    if (r.until_at !== null && r.until_at !== undefined) h.until = new Date(Number(r.until_at) - this.clockOffsetMs);
    if (r.reason !== null && r.reason !== undefined) h.reason = r.reason as string;
    return h;
  }
}
