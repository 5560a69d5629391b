import { readFileSync } from 'node:fs';
import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import { silentLogger } from '../../logging/logger';
import type { CliCommand } from '../../plugin/api';
import { MessagePipeline } from '../../pipeline/process-message';
import { resolveConfigPath } from '../config-path';
import { sniffContentType } from '../convert';

const out = (s: string) => process.stdout.write(`${s}\n`);

/**
 * `ferry test-route <message-file>`: what the config's routes do with one message -- which routes
 * match (for the others the `from` / `when` clause that failed), each step's result and the Bundle
 * each sink would get. Opens no store and calls no sink.
 */
export const testRouteCommand: CliCommand = {
  name: 'test-route <message-file>',
  description: 'show which routes take a message (and for the others which from/when clause failed), each step result and the Bundle per sink; touches no store or sink',
  options: [
    { flags: '--source <id>', description: 'the source it arrives on (default: the only source, else "test")' },
    { flags: '--content-type <type>', description: 'content type (default: from the file name and its first bytes)' },
    { flags: '--json', description: 'print the whole trace as JSON' },
  ],
  async run(args, o, ctx) {
    const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
    if (!file) throw new FerryError('CONFIG_NO_FILE', 'no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml', { kind: 'config' });
    const { config, host } = await configure({ configFile: file });
    const transforms = host.transforms().map((t) => t.container.resolve(t.impl));
    const messageFile = args[0];
    let body: Buffer;
    try {
      body = readFileSync(messageFile);
    } catch (e) {
      throw new FerryError('INPUT_MESSAGE_FILE', `cannot read ${messageFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { kind: 'input' });
    }
    const contentType = (o.contentType as string | undefined) ?? sniffContentType(messageFile, body);
    const sources = Object.keys(config.sources);
    const sourceId = (o.source as string | undefined) ?? (sources.length === 1 ? sources[0] : 'test');
    const pipeline = new MessagePipeline(transforms, config.routes, config.baseDir);
    const t = pipeline.transformFor(contentType);
    const impl = transforms.find((x) => x.name === t);
    const headers = impl?.extractHeaders ? impl.extractHeaders(body) : {};
    const trace = await pipeline.trace({ id: 'test-route', seq: 0, sourceId, contentType, body, headers, receivedAt: new Date(), status: 'received' }, silentLogger());
    if (o.json) {
      out(JSON.stringify(trace, null, 2));
      return 0;
    }
    out(`message ${messageFile}: ${contentType}, type ${headers.messageType ?? '(none)'}, source ${sourceId}`);
    for (const r of trace.routes) {
      if (!r.matched) {
        out(`route ${r.route}: no match -- ${r.failed}: ${r.detail}`);
        continue;
      }
      out(`route ${r.route}: matches`);
      for (const s of r.steps) out(`  step ${s.step}: ${s.result}${s.error ? ` (${s.error})` : ''}`);
      for (const [sink, bundle] of Object.entries(r.sinks)) out(`  -> sink ${sink}: ${JSON.stringify(bundle)}`);
    }
    const sinks = new Set(trace.routes.flatMap((r) => Object.keys(r.sinks)));
    out(sinks.size ? `delivered to: ${[...sinks].join(', ')}` : 'delivered to no sink');
    return 0;
  },
};
