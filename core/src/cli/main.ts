#!/usr/bin/env node
import 'reflect-metadata';
import { Command } from 'commander';
import { ConfigError } from '../config/load-config';
import { Engine } from '../engine/engine';
import { configure } from '../engine/configure';
import { FerryError } from '../errors';
import { createLogger, silentLogger } from '../logging/logger';
import type { CliCommand, MessageTransform } from '../plugin/api';
import { corePlugin } from '../plugin/core.plugin';
import { PluginHost } from '../plugin/plugin-host';
import { coreCommands } from './commands';
import { bundledPlugins, resolveConfigPath } from './config-path';
import { convertBundleFile, convertFile } from './convert';

const out = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
const err = (s: string) => process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);

/** The bundled plugins (core first), registered with default config. */
async function bundledHost(): Promise<PluginHost> {
  const host = new PluginHost(silentLogger());
  const defs = bundledPlugins.flatMap((p) => {
    try {
      return [PluginHost.resolveDefinition(p, process.cwd())];
    } catch {
      return [];
    }
  });
  await host.load([corePlugin, ...defs], () => ({}));
  return host;
}

/** Plugins for CLI commands: those the config names, or the bundled ones when there is no usable config. */
async function loadHost(configFile: string | undefined): Promise<{ host: PluginHost; configFile?: string }> {
  if (configFile) {
    try {
      return { host: (await configure({ configFile })).host, configFile };
    } catch {
      /* fall back to the bundled plugins */
    }
  }
  return { host: await bundledHost() };
}

/** Commands of the configured plugins, plus those of bundled plugins the config does not load. */
async function pluginCommands(configFile: string | undefined): Promise<CliCommand[]> {
  const seen = new Set<string>();
  const out: CliCommand[] = [];
  const add = (list: CliCommand[]) => {
    for (const c of list) {
      const name = c.name.split(' ')[0];
      if (!seen.has(name)) out.push(c);
      seen.add(name);
    }
  };
  const loaded = await loadHost(configFile).catch(() => undefined);
  if (loaded) add(loaded.host.commands().map((c) => c.command));
  if (loaded?.configFile) add((await bundledHost().catch(() => undefined))?.commands().map((c) => c.command) ?? []);
  return out;
}

function transformsOf(host: PluginHost): MessageTransform[] {
  return host.transforms().map((t) => t.container.resolve(t.impl));
}

function reportError(e: unknown): number {
  if (e instanceof ConfigError) err(e.message);
  else if (e instanceof FerryError) err(`error ${e.code}: ${e.message}`);
  else err(`error: ${(e as Error)?.stack ?? String(e)}`);
  return e instanceof FerryError && e.kind === 'config' ? 2 : 1;
}

async function start(configArg: string | undefined): Promise<number> {
  const configFile = resolveConfigPath(configArg);
  if (!configFile) {
    err('no config: pass -c <file>, set FERRY_CONFIG, or create ./config/ferry.yaml');
    return 2;
  }
  let engine: Engine;
  try {
    engine = await Engine.create({ configFile });
    await engine.start();
  } catch (e) {
    return reportError(e);
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      engine.logger.info('shutting down', { signal });
      const hard = setTimeout(() => {
        engine.logger.error('shutdown took longer than 10 s; exiting');
        resolve(1);
      }, 9_500);
      hard.unref();
      engine
        .stop()
        .then(() => resolve(0))
        .catch((e) => resolve(reportError(e)))
        .finally(() => clearTimeout(hard));
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('ferry')
    .description('Ferry: an HL7 v2 / FHIR R4 integration engine')
    .version(require('../../package.json').version)
    .showHelpAfterError()
    .exitOverride();
  let code = 0;
  const set = async (p: Promise<number>): Promise<void> => {
    code = await p;
  };

  program
    .command('start')
    .description('start the engine (sources, pipeline, sinks, admin)')
    .option('-c, --config <file>', 'config file (default: $FERRY_CONFIG or ./config/ferry.yaml)')
    .action((o: { config?: string }) => set(start(o.config)));

  program
    .command('validate-config')
    .description('check a config file; print every problem with its path')
    .argument('<file>', 'YAML config file')
    .action((file: string) =>
      set(
        configure({ configFile: file }).then(
          ({ config }) => {
            out(`${file}: OK (${Object.keys(config.sources).length} sources, ${Object.keys(config.sinks).length} sinks, ${config.routes.length} routes)`);
            return 0;
          },
          (e) => reportError(e),
        ),
      ),
    );

  program
    .command('convert')
    .description('print the canonical FHIR R4 Bundle of a message file (a JSON array for a batch)')
    .argument('<file>', 'message file (HL7 v2, FHIR JSON, or a vendor payload)')
    .option('-c, --config <file>', 'config whose plugins to use (default: $FERRY_CONFIG, ./config/ferry.yaml or the bundled plugins)')
    .option('--content-type <type>', 'content type (default: from the file name and its first bytes)')
    .option('--validate', 'validate every resource; print issues on stderr and exit 1 if any')
    .option('--to <format>', 'the other way: a FHIR Bundle (JSON) -> this format (hl7v2), one message per paragraph')
    .option('--profile <file>', 'with --to: receiver profile (YAML/JSON), e.g. the `profile` of an mllp sink')
    .action((file: string, o: { config?: string; contentType?: string; validate?: boolean; to?: string; profile?: string }) =>
      set(
        (async () => {
          const { host } = await loadHost(resolveConfigPath(o.config));
          if (o.to) {
            // segment ends printed as newlines (readable; `ferry send` and the file source accept them)
            out(convertBundleFile(file, transformsOf(host), { to: o.to, profile: o.profile }).map((m) => m.replace(/\r/g, '\n').trimEnd()).join('\n\n'));
            return 0;
          }
          const r = await convertFile(file, transformsOf(host), { contentType: o.contentType, validate: o.validate });
          out(JSON.stringify(r.bundles.length === 1 ? r.bundles[0] : r.bundles, null, 2));
          for (const i of r.issues) {
            err(`message ${i.index + 1}: ${i.outcome.issue?.length} validation issue(s)`);
            for (const issue of i.outcome.issue ?? []) err(`  ${issue.severity} ${issue.expression?.join(',') ?? ''}: ${issue.details?.text ?? issue.diagnostics ?? issue.code}`);
          }
          if (o.validate && !r.issues.length) err(`valid: ${r.bundles.length} bundle(s)`);
          return r.issues.length ? 1 : 0;
        })().catch(reportError),
      ),
    );

  // Core and plugin commands share one shape (CliCommand).
  const pre = new Command().allowUnknownOption().helpOption(false).option('-c, --config <file>');
  pre.parseOptions(argv.slice(2));
  const wantsExtra = argv[2] && !['start', 'validate-config', 'convert', '--help', '-h', '--version', '-V', 'help'].includes(argv[2]);
  const extra: CliCommand[] = [...coreCommands];
  const configFile = resolveConfigPath(pre.opts().config);
  if (wantsExtra || argv.length <= 2 || argv.includes('--help') || argv.includes('help')) {
    extra.push(...(await pluginCommands(configFile)));
  }
  for (const c of extra) {
    const [name, ...args] = c.name.split(' ');
    const cmd = program.command(name).description(c.description);
    for (const a of args) cmd.argument(a);
    if (!c.options?.some((o) => o.flags.startsWith('-c,'))) cmd.option('-c, --config <file>', 'config file');
    for (const o of c.options ?? []) cmd.option(o.flags, o.description, o.default as string | boolean | undefined);
    cmd.action((...a: unknown[]) => {
      const command = a[a.length - 1] as Command;
      const opts = command.opts();
      const positional = command.args;
      return set(
        (async () => {
          const file = resolveConfigPath(opts.config as string | undefined) ?? configFile;
          const { host } = await loadHost(file);
          return c.run(positional, opts, { configFile: file, logger: createLogger({ level: 'warn' }), transforms: transformsOf(host) });
        })().catch(reportError),
      );
    });
  }

  try {
    await program.parseAsync(argv);
  } catch (e) {
    const ce = e as { code?: string; exitCode?: number };
    if (ce.code === 'commander.helpDisplayed' || ce.code === 'commander.version' || ce.code === 'commander.help') return 0;
    if (typeof ce.exitCode === 'number') return ce.exitCode || 1;
    return reportError(e);
  }
  return code;
}

if (require.main === module) {
  main(process.argv).then(
    (code) => process.exit(code),
    (e) => {
      err(String((e as Error)?.stack ?? e));
      process.exit(1);
    },
  );
}
