import { FerryError } from '../errors';

/** One problem found in a config, with the path it is at (`routes[0].to[1]`). */
export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends FerryError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[], file?: string) {
    super(
      'CONFIG_INVALID',
      `${file ? `${file}: ` : ''}${problems.length} problem${problems.length === 1 ? '' : 's'} in config:\n` +
        problems.map((p) => `  ${p.path ? `${p.path}: ` : ''}${p.message}`).join('\n'),
      { kind: 'config', details: { problems } },
    );
    this.problems = problems;
  }
}

/** `base.key` or `base[i]`: the path of a value inside the config. */
export function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return base ? `${base}.${key}` : key;
}
