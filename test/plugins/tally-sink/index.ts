/**
 * A plugin with a sink type only (`tally`: counts deliveries by sink id, process-wide). It proves a
 * plugin added to `plugins:` loads on a reload while transform workers run (it adds no transform).
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, definePlugin, type Delivery, type MessageSink, type SinkContext } from '@ferry/core';

export const tallies = new Map<string, string[]>();

@injectable()
export class TallySink implements MessageSink {
  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<{ label: string }>) {}
  async deliver(d: Delivery): Promise<void> {
    const list = tallies.get(this.ctx.id) ?? [];
    list.push(`${this.ctx.config.label}:${d.message.headers.controlId}`);
    tallies.set(this.ctx.id, list);
  }
}

export default definePlugin({
  manifest: { id: 'tally-sink', version: '1.0.0', engine: '>=0.1.0 <1' },
  configSchema: {},
  register(reg) {
    reg.addSinkType('tally', TallySink, {
      label: { doc: 'Prefix of each tally entry', format: String, default: 'tally' },
    });
  },
});
