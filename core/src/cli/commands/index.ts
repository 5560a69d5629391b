import type { CliCommand } from '../../plugin/api';

/** Core sub-commands beyond start/validate-config/convert (each in its own `*.command.ts`). */
export const coreCommands: CliCommand[] = [];
