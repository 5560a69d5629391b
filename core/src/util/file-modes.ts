import { chmodSync, mkdirSync, promises as fsp, statSync } from 'node:fs';

/**
 * Permissions of the files Ferry writes (the store and its WAL, file-sink output, file-source
 * rejected and archived files, the pid file): they hold PHI. From the `files.umask` setting
 * (default 0077): files 0600, folders 0700 -- only the account the engine runs as can read them.
 */
export interface FileModes {
  umask: number;
  /** Mode of a new file (0o666 without the umask bits). */
  file: number;
  /** Mode of a new folder (0o777 without the umask bits). */
  dir: number;
}

export const DEFAULT_UMASK = 0o077;

export function fileModes(umask: number = DEFAULT_UMASK): FileModes {
  return { umask, file: 0o666 & ~umask, dir: 0o777 & ~umask };
}

/** The modes an engine config asks for (`files.umask`, default 0077). */
export function fileModesOf(config: { files?: { umask?: string | number } }): FileModes {
  return fileModes(parseUmask(config.files?.umask ?? DEFAULT_UMASK));
}

/** `'0077'`, `'077'`, `'0o077'` or a number: the umask as a number (throws when it is not an octal 000..777). */
export function parseUmask(v: unknown): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0o777) return v;
  if (typeof v === 'string' && /^(0o?)?[0-7]{1,3}$/i.test(v.trim())) return parseInt(v.trim().replace(/^0o/i, ''), 8);
  throw new Error(`must be an octal umask such as "0077" or "0027", got ${JSON.stringify(v)}`);
}

/** A convict `format` for `files.umask`. */
export function umaskFormat(v: unknown): void {
  parseUmask(v);
}

/** Creates `dir` (and missing parents) with the folder mode; an existing folder is left as it is. */
export async function mkdirPrivate(dir: string, modes: FileModes): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: modes.dir });
}

export function mkdirPrivateSync(dir: string, modes: FileModes): void {
  mkdirSync(dir, { recursive: true, mode: modes.dir });
}

/** Takes from an existing file the permission bits the umask forbids (0644 -> 0600); a missing file is fine. */
export function tightenSync(file: string, modes: FileModes): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return;
  }
  if (mode & modes.umask) chmodSync(file, mode & ~modes.umask);
}

export async function tighten(file: string, modes: FileModes): Promise<void> {
  let mode: number;
  try {
    mode = (await fsp.stat(file)).mode & 0o777;
  } catch {
    return;
  }
  if (mode & modes.umask) await fsp.chmod(file, mode & ~modes.umask);
}
