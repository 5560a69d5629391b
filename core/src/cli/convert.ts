import type { Bundle } from '@medplum/fhirtypes';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../errors';
import { validateBundle } from '../fhir/validate';
import { silentLogger } from '../logging/logger';
import { ContentType, type StoredMessage } from '../model/message';
import type { MessageTransform, ReportedIssue } from '../plugin/api';
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
  /** Per message (0-based index): the values its transform could not use (locations and reasons, never values). */
  dataQuality: { index: number; issues: ReportedIssue[] }[];
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
  const result: ConvertResult = { bundles: [], issues: [], dataQuality: [] };
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
    const reported: ReportedIssue[] = [];
    const bundle = await transform.toFhir(message, { logger: silent, reportIssue: (issue) => void reported.push(issue) });
    result.bundles.push(bundle);
    if (reported.length) result.dataQuality.push({ index: i, issues: reported });
    if (opts.validate) {
      const outcome = validateBundle(bundle);
      if (outcome) result.issues.push({ index: i, outcome });
    }
  }
  return result;
}
