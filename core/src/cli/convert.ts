import type { Bundle } from '@medplum/fhirtypes';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { FerryError } from '../errors';
import { validateBundle } from '../fhir/validate';
import { silentLogger } from '../logging/logger';
import { ContentType, type StoredMessage } from '../model/message';
import type { MessageTransform } from '../plugin/api';
import { findTransform } from '../pipeline/process-message';

/** Guess a content type from the file name and its first bytes. */
export function sniffContentType(file: string, body: Buffer): string {
  const ext = path.extname(file).toLowerCase();
  if (['.hl7', '.er7', '.hl7v2', '.txt'].includes(ext)) return ContentType.hl7v2;
  if (ext === '.json' || ext === '.ndjson') return ContentType.fhirJson;
  const head = body.subarray(0, 8).toString('utf8').replace(/^\uFEFF/, '').trimStart();
  if (/^(MSH|FHS|BHS)/.test(head)) return ContentType.hl7v2;
  if (head.startsWith('{')) return ContentType.fhirJson;
  throw new FerryError('INPUT_UNKNOWN_CONTENT', `cannot tell the content type of ${file}; pass --content-type`, { kind: 'input' });
}

const silent = silentLogger();

export interface ConvertResult {
  bundles: Bundle[];
  issues: { index: number; outcome: NonNullable<ReturnType<typeof validateBundle>> }[];
}

/** Convert one file (one message or a batch) with the registered transforms. */
export async function convertFile(file: string, transforms: MessageTransform[], opts: { contentType?: string; validate?: boolean }): Promise<ConvertResult> {
  let body: Buffer;
  try {
    body = readFileSync(file);
  } catch (e) {
    throw new FerryError('INPUT_FILE_UNREADABLE', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { kind: 'input' });
  }
  if (!body.length) throw new FerryError('INPUT_EMPTY_MESSAGE', `${file} is empty`, { kind: 'input' });
  const contentType = opts.contentType ?? sniffContentType(file, body);
  const transform = findTransform(transforms, contentType);
  if (!transform) throw new FerryError('INPUT_NO_TRANSFORM', `no transform registered for ${contentType} (is its plugin loaded?)`, { kind: 'input' });
  const parts = transform.split ? transform.split(body) : [body];
  const receivedAt = statSync(file).mtime;
  const result: ConvertResult = { bundles: [], issues: [] };
  for (const [i, part] of parts.entries()) {
    const message: StoredMessage & { body: Buffer } = {
      id: `${path.basename(file)}#${i + 1}`,
      seq: i + 1,
      sourceId: 'cli',
      contentType,
      body: part,
      headers: transform.extractHeaders ? transform.extractHeaders(part) : {},
      receivedAt,
      status: 'received',
    };
    const bundle = await transform.toFhir(message, { logger: silent });
    result.bundles.push(bundle);
    if (opts.validate) {
      const outcome = validateBundle(bundle);
      if (outcome) result.issues.push({ index: i, outcome });
    }
  }
  return result;
}

/**
 * `ferry convert --to <format> [--profile p.yaml] bundle.json`: a canonical Bundle (or a JSON array of
 * Bundles) -> the messages of a transform that writes that format (hl7v2: the hl7v2-mllp plugin).
 */
export function convertBundleFile(file: string, transforms: MessageTransform[], opts: { to: string; profile?: string }): string[] {
  const writer = transforms.find((t) => t.outputFormats?.includes(opts.to) && t.fromFhir);
  if (!writer) {
    const known = transforms.flatMap((t) => t.outputFormats ?? []);
    throw new FerryError('INPUT_NO_WRITER', `no transform writes ${opts.to} (is its plugin loaded?${known.length ? ` known: ${known.join(', ')}` : ''})`, { kind: 'input' });
  }
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8');
    } catch (e) {
      throw new FerryError('INPUT_FILE_UNREADABLE', `cannot read ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { kind: 'input' });
    }
  };
  let profile: unknown;
  if (opts.profile) {
    try {
      profile = YAML.parse(read(opts.profile));
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw new FerryError('INPUT_BAD_PROFILE', `${opts.profile} is not YAML/JSON: ${(e as Error).message}`, { kind: 'input' });
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
    if ((b as Bundle)?.resourceType !== 'Bundle') throw new FerryError('INPUT_NOT_BUNDLE', `${file}${bundles.length > 1 ? ` item ${i + 1}` : ''} is not a FHIR Bundle`, { kind: 'input' });
    out.push(...writer.fromFhir!(b as Bundle, { format: opts.to, profile, seed: `${path.basename(file)}#${i + 1}` }));
  });
  return out;
}
