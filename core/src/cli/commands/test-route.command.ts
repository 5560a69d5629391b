import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { EngineConfig } from '../../config/engine.schema';
import { fhirpathTest } from '../../fhir/fhirpath';
import type { MessageTransform } from '../../plugin/api';
import { configure } from '../../engine/configure';
import { FerryError } from '../../errors';
import { silentLogger } from '../../logging/logger';
import type { CliCommand } from '../../plugin/api';
import { MessagePipeline } from '../../pipeline/process-message';
import { resolveConfigPath } from '../config-path';
import { sniffContentType } from '../convert';

const out = (s: string) => process.stdout.write(`${s}\n`);

/** One message file through a config's routes (no store, no sink). */
export async function traceMessageFile(
  config: EngineConfig,
  transforms: MessageTransform[],
  messageFile: string,
  o: { source?: string; contentType?: string },
) {
  let body: Buffer;
  try {
    body = readFileSync(messageFile);
  } catch (e) {
    throw new FerryError(
      'INPUT_MESSAGE_FILE',
      `cannot read ${messageFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { kind: 'input' },
    );
  }
  return traceMessage(config, transforms, body, {
    source: o.source,
    contentType: o.contentType ?? sniffContentType(messageFile, body),
  });
}

/**
 * One message through a config's routes (no store, no sink): the same for `ferry test-route` and
 * the admin API's route tester (POST /api/routes/test).
 */
export async function traceMessage(
  config: EngineConfig,
  transforms: MessageTransform[],
  body: Buffer,
  o: { source?: string; contentType: string },
) {
  const contentType = o.contentType;
  const sources = Object.keys(config.sources);
  const sourceId = o.source ?? (sources.length === 1 ? sources[0] : 'test');
  const pipeline = new MessagePipeline(transforms, config.routes, config.baseDir);
  const t = pipeline.transformFor(contentType);
  const impl = transforms.find((x) => x.name === t);
  const headers = impl?.extractHeaders ? impl.extractHeaders(body) : {};
  const trace = await pipeline.trace(
    { id: 'test-route', seq: 0, sourceId, contentType, body, headers, receivedAt: new Date(), status: 'received' },
    silentLogger(),
  );
  return { trace, contentType, sourceId, headers };
}

/** Runs the config's `tests:`; answers one line per failed expectation (empty: all passed) and a line per test. */
export async function runRouteTests(
  config: EngineConfig,
  transforms: MessageTransform[],
): Promise<{ lines: string[]; failed: number }> {
  const dir = config.file ? path.dirname(config.file) : process.cwd();
  const lines: string[] = [];
  let failed = 0;
  for (const t of config.tests) {
    const problems: string[] = [];
    try {
      const { trace } = await traceMessageFile(config, transforms, path.resolve(dir, t.message), {
        source: t.source,
        contentType: t.contentType,
      });
      const routes = trace.routes.filter((r) => r.matched).map((r) => r.route);
      const sinkBundles = trace.routes.flatMap((r) => Object.entries(r.sinks));
      const sinks = [...new Set(sinkBundles.map(([s]) => s))];
      const same = (a: string[], b: string[]) => [...a].sort().join(',') === [...b].sort().join(',');
      if (t.expect.routes && !same(routes, t.expect.routes))
        problems.push(`routes: expected [${t.expect.routes.join(', ')}], got [${routes.join(', ')}]`);
      if (t.expect.sinks && !same(sinks, t.expect.sinks))
        problems.push(`sinks: expected [${t.expect.sinks.join(', ')}], got [${sinks.join(', ')}]`);
      for (const r of trace.routes)
        for (const st of r.steps)
          if (st.result === 'failed') problems.push(`route ${r.route}: step ${st.step} failed: ${st.error}`);
      const bundles = sinkBundles.length ? sinkBundles : [['(converted)', trace.bundle] as const];
      for (const expr of t.expect.fhirpath ?? [])
        for (const [sink, b] of bundles)
          if (!fhirpathTest(expr, b)) problems.push(`fhirpath ${expr}: false for the Bundle of ${sink}`);
    } catch (e) {
      problems.push((e as Error).message);
    }
    if (problems.length) failed++;
    lines.push(`${problems.length ? 'FAIL' : 'ok'}  ${t.name}`, ...problems.map((p) => `      ${p}`));
  }
  return { lines, failed };
}

/**
 * `ferry test-route <message-file>`: what the config's routes do with one message -- which routes
 * match (for the others the `from` / `when` clause that failed), each step's result and the Bundle
 * each sink would get. Opens no store and calls no sink.
 */
export const testRouteCommand: CliCommand = {
  name: 'test-route <message-file>',
  description:
    'show which routes take a message (and for the others which from/when clause failed), each step result and the Bundle per sink; touches no store or sink',
  options: [
    { flags: '--source <id>', description: 'the source it arrives on (default: the only source, else "test")' },
    { flags: '--content-type <type>', description: 'content type (default: from the file name and its first bytes)' },
    { flags: '--json', description: 'print the whole trace as JSON' },
  ],
  async run(args, o, ctx) {
    const file = resolveConfigPath(o.config as string | undefined) ?? ctx.configFile;
    if (!file)
      throw new FerryError(
        'CONFIG_NO_FILE',
        'no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml',
        { kind: 'config' },
      );
    const { config, host } = await configure({ configFile: file });
    const transforms = host.transforms().map((t) => t.container.resolve(t.impl));
    const { trace, contentType, sourceId, headers } = await traceMessageFile(config, transforms, args[0], {
      source: o.source as string | undefined,
      contentType: o.contentType as string | undefined,
    });
    const messageFile = args[0];
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
