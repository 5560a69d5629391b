import type { CliCommand } from '../../plugin/api';
import { pruneCommand } from './prune.command';
import { replayCommand } from './replay.command';
import { sinkCommand } from './sink.command';
import { tokenCommand } from './token.command';
import { auditCommand } from './audit.command';
import { configCommand } from './config.command';
import { reloadCommand } from './reload.command';
import { testRouteCommand } from './test-route.command';
import { pluginCommand } from './plugin-new.command';

/** Core sub-commands beyond start/validate-config/convert (each in its own `*.command.ts`). */
export const coreCommands: CliCommand[] = [
  replayCommand,
  pruneCommand,
  sinkCommand,
  tokenCommand,
  auditCommand,
  configCommand,
  reloadCommand,
  testRouteCommand,
  pluginCommand,
];
