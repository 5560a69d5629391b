import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../errors';
import { ContentType, type StoredMessage } from '../model/message';
import type { MessageTransform, ReportedIssue, TransformContext } from '../plugin/api';

/** Guess a content type from the file name and its first bytes. */
export function sniffContentType(file: string, body: Buffer): string {
  const ext = path.extname(file).toLowerCase();
  if (['.hl7', '.er7', '.hl7v2', '.txt'].includes(ext)) return ContentType.hl7v2;
  if (ext === '.json' || ext === '.ndjson') return ContentType.fhirJson;
  const head = body
    .subarray(0, 8)
    .toString('utf8')
    .replace(/^\uFEFF/, '')
    .trimStart();
  if (/^(MSH|FHS|BHS)/.test(head)) return ContentType.hl7v2;
  if (head.startsWith('{')) return ContentType.fhirJson;
  throw new FerryError('INPUT_UNKNOWN_CONTENT', `cannot tell the content type of ${file}; pass --content-type`, {
    kind: 'input',
  });
}

/** The transform for a content type (the pipeline's rule: the first whose canHandle accepts the base type). */
export function findTransform(transforms: MessageTransform[], contentType: string): MessageTransform | undefined {
  const base = contentType.split(';')[0].trim().toLowerCase();
  return transforms.find((t) => t.canHandle(base));
}

export interface ConvertResult {
  bundles: Bundle[];
  issues: { index: number; outcome: OperationOutcome }[];
  /** Per message (0-based index): the values its transform could not use (locations and reasons, never values). */
  dataQuality: { index: number; issues: ReportedIssue[] }[];
}

/** A logger that drops everything, without loading winston (for the CLI's conversions and their plugin hosts). */
export const quietLogger: TransformContext['logger'] = new Proxy({} as TransformContext['logger'], {
  get: (_t, k) =>
    k === 'child'
      ? () => quietLogger
      : k === 'isLevelEnabled'
        ? () => false
        : k === 'level'
          ? 'silent'
          : () => quietLogger,
});
const quiet = quietLogger;

/**
 * The transforms for a content type, loaded on demand: `transformsFor` is asked per input, so `ferry convert`
 * loads only the plugin(s) the input needs (see main.ts).
 */
export type TransformSource = (contentType: string) => Promise<MessageTransform | undefined>;

/** One input: a file path, or `-` for stdin. */
export function readInput(file: string): Buffer {
  try {
    return file === '-' ? readFileSync(0) : readFileSync(file);
  } catch (e) {
    throw new FerryError(
      'INPUT_FILE_UNREADABLE',
      `cannot read ${file === '-' ? 'stdin' : file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { kind: 'input' },
    );
  }
}

/**
 * The inputs of `ferry convert`: each argument a file, a folder (its files, sorted, hidden ones and
 * sub-folders skipped) or `-` (stdin); no argument: stdin. Files found in a folder are marked `fromFolder`.
 */
export interface ConvertInputRef {
  path: string;
  fromFolder: boolean;
}
export function expandInputs(args: string[]): ConvertInputRef[] {
  if (!args.length) return [{ path: '-', fromFolder: false }];
  const out: ConvertInputRef[] = [];
  for (const a of args) {
    let st: ReturnType<typeof statSync> | undefined;
    try {
      st = a === '-' ? undefined : statSync(a);
    } catch {
      st = undefined; // reported when read
    }
    if (st?.isDirectory()) {
      for (const f of readdirSync(a).sort()) {
        if (f.startsWith('.')) continue;
        const p = path.join(a, f);
        if (statSync(p).isFile()) out.push({ path: p, fromFolder: true });
      }
    } else out.push({ path: a, fromFolder: false });
  }
  return out;
}

/**
 * Convert one input (one message or a batch) with the transform for its content type; `onBundle` gets each
 * Bundle as soon as it is made (streaming), with its validation outcome when `validate` is on.
 */
export async function convertInput(
  file: string,
  transformFor: TransformSource,
  opts: { contentType?: string; validate?: (b: Bundle) => OperationOutcome | undefined },
  /** `dataQuality`: the values the transform could not use (locations and reasons, never values). */
  onBundle: (
    bundle: Bundle,
    index: number,
    outcome: OperationOutcome | undefined,
    dataQuality: ReportedIssue[],
  ) => void,
): Promise<number> {
  const body = readInput(file);
  const name = file === '-' ? 'stdin' : file;
  if (!body.length) throw new FerryError('INPUT_EMPTY_MESSAGE', `${name} is empty`, { kind: 'input' });
  const contentType = opts.contentType ?? sniffContentType(name, body);
  const transform = await transformFor(contentType);
  if (!transform)
    throw new FerryError('INPUT_NO_TRANSFORM', `no transform registered for ${contentType} (is its plugin loaded?)`, {
      kind: 'input',
    });
  const parts = transform.split ? transform.split(body) : [body];
  const receivedAt = file === '-' ? new Date() : statSync(file).mtime;
  for (const [i, part] of parts.entries()) {
    const message: StoredMessage & { body: Buffer } = {
      id: `${path.basename(name)}#${i + 1}`,
      seq: i + 1,
      sourceId: 'cli',
      contentType,
      body: part,
      headers: transform.extractHeaders ? transform.extractHeaders(part) : {},
      receivedAt,
      status: 'received',
    };
    const reported: ReportedIssue[] = [];
    const bundle = await transform.toFhir(message, {
      logger: quiet,
      reportIssue: (issue) => void reported.push(issue),
    });
    onBundle(bundle, i, opts.validate?.(bundle), reported);
  }
  return parts.length;
}

/** Convert one file (one message or a batch) with the given transforms (kept for callers of the former API). */
export async function convertFile(
  file: string,
  transforms: MessageTransform[],
  opts: { contentType?: string; validate?: boolean },
): Promise<ConvertResult> {
  /* eslint-disable @typescript-eslint/no-require-imports -- lazy: the validator loads only with --validate */
  const validateBundle = opts.validate
    ? (require('../fhir/validate') as typeof import('../fhir/validate')).validateBundle
    : undefined;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const result: ConvertResult = { bundles: [], issues: [], dataQuality: [] };
  await convertInput(
    file,
    async (ct) => findTransform(transforms, ct),
    { contentType: opts.contentType, validate: validateBundle },
    (b, index, outcome, dq) => {
      result.bundles.push(b);
      if (outcome) result.issues.push({ index, outcome });
      if (dq.length) result.dataQuality.push({ index, issues: dq });
    },
  );
  return result;
}

/**
 * `ferry convert --to <format> [--profile p.yaml] bundle.json`: a canonical Bundle (or a JSON array of
 * Bundles) -> the messages of a transform that writes that format (hl7v2: the hl7v2-mllp plugin).
 */
export function convertBundleFile(
  file: string,
  transforms: MessageTransform[],
  opts: { to: string; profile?: string },
): string[] {
  const writer = transforms.find((t) => t.outputFormats?.includes(opts.to) && t.fromFhir);
  if (!writer) {
    const known = transforms.flatMap((t) => t.outputFormats ?? []);
    throw new FerryError(
      'INPUT_NO_WRITER',
      `no transform writes ${opts.to} (is its plugin loaded?${known.length ? ` known: ${known.join(', ')}` : ''})`,
      { kind: 'input' },
    );
  }
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8');
    } catch (e) {
      throw new FerryError(
        'INPUT_FILE_UNREADABLE',
        `cannot read ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        { kind: 'input' },
      );
    }
  };
  let profile: unknown;
  if (opts.profile) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: yaml loads only for a profile
      profile = (require('yaml') as typeof import('yaml')).parse(read(opts.profile)); // loaded only for a profile
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw new FerryError('INPUT_BAD_PROFILE', `${opts.profile} is not YAML/JSON: ${(e as Error).message}`, {
        kind: 'input',
      });
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(read(file));
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw new FerryError('INPUT_BAD_JSON', `${file} is not JSON: ${(e as Error).message}`, { kind: 'input' });
  }
  const bundles = Array.isArray(parsed) ? parsed : [parsed];
  const out: string[] = [];
  bundles.forEach((b, i) => {
    if ((b as Bundle)?.resourceType !== 'Bundle')
      throw new FerryError(
        'INPUT_NOT_BUNDLE',
        `${file}${bundles.length > 1 ? ` item ${i + 1}` : ''} is not a FHIR Bundle`,
        { kind: 'input' },
      );
    out.push(...writer.fromFhir!(b as Bundle, { format: opts.to, profile, seed: `${path.basename(file)}#${i + 1}` }));
  });
  return out;
}
