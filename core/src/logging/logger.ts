import winston from 'winston';

export interface LogConfig {
  level: string;
  /** `json` (default) or `pretty` for a terminal. */
  format: 'json' | 'pretty';
}

/**
 * The root logger. JSON lines on stderr (stdout stays free for CLI output such as `ferry convert`).
 * Rule: at info and above log ids, control ids, types and counts -- never names, MRNs or bodies.
 */
export function createLogger(cfg: Partial<LogConfig> = {}, stream?: NodeJS.WritableStream): winston.Logger {
  const format =
    cfg.format === 'pretty'
      ? winston.format.combine(winston.format.timestamp(), winston.format.colorize(), winston.format.simple())
      : winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), winston.format.json());
  const transport = stream
    ? new winston.transports.Stream({ stream })
    : new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) });
  return winston.createLogger({ level: cfg.level ?? 'info', format, transports: [transport] });
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): winston.Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}

/** Error fields safe to log: code, kind and message of a FerryError or Error -- no stack, no payload. */
export function errorFields(e: unknown): Record<string, unknown> {
  if (e && typeof e === 'object') {
    const err = e as { code?: unknown; kind?: unknown; message?: unknown; retryable?: unknown };
    return { errorCode: err.code, errorKind: err.kind, error: err.message, retryable: err.retryable };
  }
  return { error: String(e) };
}
