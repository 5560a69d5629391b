#!/usr/bin/env node
import 'reflect-metadata';
import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { Command } from 'commander';
import { statSync } from 'node:fs';
import type { Engine } from '../engine/engine';
import { FerryError } from '../errors';
import { ContentType } from '../model/message';
import type { CliCommand, MessageTransform, PluginDefinition } from '../plugin/api';
import type { PluginHost } from '../plugin/plugin-host';
import { bundledPlugins, resolveConfigPath } from './config-path';

/*
 * Start-up: every module below is loaded when its command runs, not here. `ferry convert` loads only the plugin
 * its input needs (the engine, stores, sinks, sources, FHIRPath and validation stay unloaded), which is most of
 * a call's time when a user converts file after file.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- lazy: each command loads only the modules it needs */
const lazy = {
  configure: () => require('../engine/configure') as typeof import('../engine/configure'),
  engine: () => require('../engine/engine') as typeof import('../engine/engine'),
  logger: () => require('../logging/logger') as typeof import('../logging/logger'),
  host: () => require('../plugin/plugin-host') as typeof import('../plugin/plugin-host'),
  corePlugin: () => (require('../plugin/core.plugin') as typeof import('../plugin/core.plugin')).corePlugin,
  commands: () => (require('./commands') as typeof import('./commands')).coreCommands,
  convert: () => require('./convert') as typeof import('./convert'),
  validate: () => require('../fhir/validate') as typeof import('../fhir/validate'),
};
/* eslint-enable @typescript-eslint/no-require-imports */

const out = (s: string) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
const err = (s: string) => process.stderr.write(s.endsWith('\n') ? s : `${s}\n`);

/** The bundled plugins (core first), registered with default config. */
async function bundledHost(): Promise<PluginHost> {
  return hostOf([lazy.corePlugin(), ...resolveBundled(bundledPlugins)]);
}

function resolveBundled(refs: string[]): PluginDefinition[] {
  const { PluginHost } = lazy.host();
  return refs.flatMap((p) => {
    try {
      return [PluginHost.resolveDefinition(p, process.cwd())];
    } catch {
      return [];
    }
  });
}

async function hostOf(defs: PluginDefinition[]): Promise<PluginHost> {
  const { PluginHost } = lazy.host();
  const host = new PluginHost(lazy.convert().quietLogger);
  await host.load(defs, () => ({}));
  return host;
}

/**
 * `ferry convert`'s transforms, loaded as inputs need them: the config's plugins (validated, without the
 * engine) when there is a usable config, else the bundled HL7 v2 plugin, then the core (FHIR JSON), then the
 * vendor plugins; the core first for FHIR JSON. One conversion loads one plugin.
 */
function transformSource(
  configFile: string | undefined,
): (contentType: string) => Promise<MessageTransform | undefined> {
  const loaded: MessageTransform[] = [];
  const add = (host: PluginHost) => loaded.push(...transformsOf(host));
  let configured = false;
  const steps: { name: string; run: () => Promise<void> }[] = [];
  if (configFile)
    steps.push({
      name: 'config',
      run: async () => {
        try {
          add(await lazy.configure().configurePlugins({ configFile, logger: lazy.convert().quietLogger }));
          configured = true;
        } catch {
          /* an unusable config: the bundled plugins, as the other commands do */
        }
      },
    });
  steps.push({
    name: 'hl7v2',
    run: async () => void (configured || add(await hostOf(resolveBundled(bundledPlugins.slice(0, 1))))),
  });
  steps.push({ name: 'core', run: async () => void add(await hostOf([lazy.corePlugin()])) });
  steps.push({
    name: 'vendors',
    run: async () => void (configured || add(await hostOf(resolveBundled(bundledPlugins.slice(1))))),
  });
  return async (contentType) => {
    const { findTransform } = lazy.convert();
    if (contentType.split(';')[0].trim().toLowerCase() === ContentType.fhirJson) {
      const core = steps.findIndex((s) => s.name === 'core');
      const first = steps.findIndex((s) => s.name !== 'config');
      if (core > first) steps.splice(first, 0, ...steps.splice(core, 1));
    }
    for (;;) {
      const t = findTransform(loaded, contentType);
      if (t) return t;
      const next = steps.shift();
      if (!next) return undefined;
      await next.run();
    }
  };
}

/** `ferry convert [inputs...]`: one file as before (JSON, an array for a batch); several / a folder / --ndjson: NDJSON, streamed. */
async function convertCommand(
  args: string[],
  o: { config?: string; contentType?: string; validate?: boolean; ndjson?: boolean },
): Promise<number> {
  const { expandInputs, convertInput } = lazy.convert();
  const files = expandInputs(args);
  const isDir = (a: string) => {
    try {
      return a !== '-' && statSync(a).isDirectory();
    } catch {
      return false;
    }
  };
  const ndjson = !!o.ndjson || files.length > 1 || args.some(isDir);
  let skipped = 0;
  const transformFor = transformSource(resolveConfigPath(o.config));
  const validate = o.validate ? lazy.validate().validateBundle : undefined;
  let failed = 0;
  let invalid = 0;
  let bundles = 0;
  for (const { path: file, fromFolder } of files) {
    const name = file === '-' ? 'stdin' : file;
    const single: Bundle[] = [];
    const report = (index: number, outcome: OperationOutcome) => {
      invalid++;
      err(`${files.length > 1 ? `${name} ` : ''}message ${index + 1}: ${outcome.issue?.length} validation issue(s)`);
      for (const issue of outcome.issue ?? [])
        err(
          `  ${issue.severity} ${issue.expression?.join(',') ?? ''}: ${issue.details?.text ?? issue.diagnostics ?? issue.code}`,
        );
    };
    try {
      await convertInput(
        file,
        transformFor,
        { contentType: o.contentType, validate },
        (bundle, index, outcome, dataQuality) => {
          bundles++;
          if (ndjson) process.stdout.write(`${JSON.stringify(bundle)}\n`);
          else single.push(bundle);
          // Values the conversion could not use: where and why (never the values).
          if (dataQuality.length) {
            err(
              `${files.length > 1 ? `${name} ` : ''}message ${index + 1}: ${dataQuality.length} data-quality issue(s)`,
            );
            for (const i of dataQuality)
              err(
                `  ${i.severity ?? 'warning'} ${i.location}${i.occurrence && i.occurrence > 1 ? `[${i.occurrence}]` : ''}${i.path ? ` (${i.path})` : ''}: ${i.code}: ${i.text}`,
              );
          }
          if (outcome) report(index, outcome);
        },
      );
      if (!ndjson) out(JSON.stringify(single.length === 1 ? single[0] : single, null, 2));
    } catch (e) {
      // a file of a folder that is no message (a README, a LICENSE): said and skipped, not a failure
      if (fromFolder && e instanceof FerryError && e.code === 'FERRY_E_INPUT_UNKNOWN_CONTENT') {
        skipped++;
        err(`${name}: skipped (not a message this command knows; name it with --content-type to convert it)`);
        continue;
      }
      failed++;
      // several inputs: one bad file is reported and the others still convert
      if (files.length === 1) throw e;
      err(
        e instanceof FerryError
          ? `${name}: error ${e.code}: ${e.message}`
          : `${name}: error: ${(e as Error)?.message ?? String(e)}`,
      );
    }
  }
  if (files.length > 1)
    err(
      `${bundles} bundle(s) from ${files.length - failed - skipped} of ${files.length} input(s)${failed ? `; ${failed} failed` : ''}${skipped ? `; ${skipped} skipped` : ''}`,
    );
  if (o.validate && !invalid && !failed) err(`valid: ${bundles} bundle(s)`);
  return failed || invalid ? 1 : 0;
}

/** Plugins for CLI commands: those the config names, or the bundled ones when there is no usable config. */
async function loadHost(configFile: string | undefined): Promise<{ host: PluginHost; configFile?: string }> {
  if (configFile) {
    try {
      return { host: (await lazy.configure().configure({ configFile })).host, configFile };
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
  if (e instanceof FerryError && e.code === 'FERRY_E_CONFIG_INVALID')
    err(e.message); // ConfigError
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
    engine = await lazy.engine().Engine.create({ configFile });
    // Whatever this process creates (store, outputs, anything a plugin writes) is private by default.
    process.umask(engine.fileModes.umask);
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
    // Live configuration: re-read, validate and apply the config file (the engine logs the outcome).
    const onHup = () => {
      if (stopping) return;
      engine.logger.info('reloading the config', { signal: 'SIGHUP' });
      engine.reload('signal').catch((e) => engine.logger.error('config reload failed', lazy.logger().errorFields(e)));
    };
    process.on('SIGHUP', onHup);
  });
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('ferry')
    .description('Ferry: an HL7 v2 / FHIR R4 integration engine')
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- core's package.json, read at run time
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
    .option(
      '--test',
      "also run the config's `tests:` (message files through the routes; no store, no sink): exit 1 if one fails",
    )
    .action((file: string, o: { test?: boolean }) =>
      set(
        lazy
          .configure()
          .configure({ configFile: file })
          .then(
            async ({ config, host }) => {
              out(
                `${file}: OK (${Object.keys(config.sources).length} sources, ${Object.keys(config.sinks).length} sinks, ${config.routes.length} routes${Object.keys(config.connections).length ? `, ${Object.keys(config.connections).length} connections` : ''})`,
              );
              for (const w of config.warnings) out(`  warning: ${w.path}: ${w.message}`);
              if (!o.test) return 0;
              /* eslint-disable @typescript-eslint/no-require-imports -- lazy: route tests load only with --test */
              const { runRouteTests } =
                require('./commands/test-route.command') as typeof import('./commands/test-route.command');
              /* eslint-enable @typescript-eslint/no-require-imports */
              const r = await runRouteTests(config, transformsOf(host));
              for (const l of r.lines) out(l);
              out(`${config.tests.length - r.failed} of ${config.tests.length} route tests passed`);
              return r.failed ? 1 : 0;
            },
            (e) => reportError(e),
          ),
      ),
    );

  program
    .command('convert')
    .description(
      'print the canonical FHIR R4 Bundle of each message: one file as JSON (a JSON array for a batch); several files, a folder or --ndjson as NDJSON (one Bundle per line, written as converted)',
    )
    .argument('[inputs...]', 'message files or folders (HL7 v2, FHIR JSON, or a vendor payload); - or nothing: stdin')
    .option(
      '-c, --config <file>',
      'config whose plugins to use (default: $FERRY_CONFIG, ./config/ferry.yaml or the bundled plugins)',
    )
    .option('--content-type <type>', 'content type (default: from the file name and its first bytes)')
    .option('--ndjson', 'one Bundle per line, also for a single input')
    .option(
      '--validate',
      'validate every resource; print issues on stderr and exit 1 if any (data-quality issues -- values the conversion could not use -- are printed on stderr always)',
    )
    .option('--to <format>', 'the other way: a FHIR Bundle (JSON) -> this format (hl7v2), one message per paragraph')
    .option('--profile <file>', 'with --to: receiver profile (YAML/JSON), e.g. the `profile` of an mllp sink')
    .action(
      (
        inputs: string[],
        o: {
          config?: string;
          contentType?: string;
          validate?: boolean;
          ndjson?: boolean;
          to?: string;
          profile?: string;
        },
      ) =>
        set(
          (o.to
            ? (async () => {
                if (inputs.length !== 1)
                  throw new FerryError(
                    'INPUT_ARGUMENTS',
                    'convert --to takes one Bundle file (a Bundle or a JSON array of Bundles)',
                    { kind: 'input' },
                  );
                const { host } = await loadHost(resolveConfigPath(o.config));
                // segment ends printed as newlines (readable; `ferry send` and the file source accept them)
                out(
                  lazy
                    .convert()
                    .convertBundleFile(inputs[0], transformsOf(host), { to: o.to!, profile: o.profile })
                    .map((m) => m.replace(/\r/g, '\n').trimEnd())
                    .join('\n\n'),
                );
                return 0;
              })()
            : convertCommand(inputs, o)
          ).catch(reportError),
        ),
    );

  // Core and plugin commands share one shape (CliCommand).
  const pre = new Command().allowUnknownOption().helpOption(false).option('-c, --config <file>');
  pre.parseOptions(argv.slice(2));
  const wantsExtra =
    argv[2] && !['start', 'validate-config', 'convert', '--help', '-h', '--version', '-V', 'help'].includes(argv[2]);
  const extra: CliCommand[] = [];
  const configFile = resolveConfigPath(pre.opts().config);
  if (wantsExtra || argv.length <= 2 || argv.includes('--help') || argv.includes('help')) {
    extra.push(...lazy.commands(), ...(await pluginCommands(configFile)));
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
          return c.run(positional, opts, {
            configFile: file,
            logger: lazy.logger().createLogger({ level: 'warn' }),
            transforms: transformsOf(host),
          });
        })().catch(reportError),
      );
    });
  }

  try {
    await program.parseAsync(argv);
  } catch (e) {
    const ce = e as { code?: string; exitCode?: number };
    if (ce.code === 'commander.helpDisplayed' || ce.code === 'commander.version' || ce.code === 'commander.help')
      return 0;
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
