/**
 * Storing what a source submits: each message checked (a body, a content type), its headers from the
 * transform of its content type when the source gave none, the rows inserted as one commit with the
 * source's duplicates policy and checkpoint, duplicates and reused control ids counted and logged (ids,
 * never content), a submission of nothing but refused duplicates refused.
 */
import type { Logger } from 'winston';
import type { EngineMetrics } from '../admin/metrics';
import { FerryError, inputError } from '../errors';
import type { InboundMessage, MessageHeaders } from '../model/message';
import type { DuplicateOptions, InsertOptions, InsertResult, MessageStore } from '../store/message-store';

export async function storeSubmitted(
  engine: {
    store: MessageStore;
    logger: Logger;
    metrics: EngineMetrics;
    extractHeaders(contentType: string, body: Buffer): MessageHeaders;
  },
  sourceId: string,
  messages: InboundMessage[],
  opts: { duplicates?: DuplicateOptions; checkpoint?: InsertOptions['checkpoint'] },
): Promise<InsertResult[]> {
  for (const m of messages) {
    if (!Buffer.isBuffer(m.body) || m.body.length === 0) throw inputError('EMPTY_MESSAGE', 'message body is empty');
    if (!m.contentType) throw inputError('NO_CONTENT_TYPE', 'message has no content type');
  }
  const rows = messages.map((m) => ({
    sourceId,
    contentType: m.contentType,
    body: m.body,
    headers: m.headers ?? engine.extractHeaders(m.contentType, m.body),
    receivedAt: m.receivedAt,
  }));
  let results: InsertResult[];
  try {
    results = await engine.store.insert(rows, { duplicates: opts.duplicates, checkpoint: opts.checkpoint });
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw new FerryError('TRANSIENT_STORE_WRITE', `could not store message: ${(e as Error).message}`, {
      kind: 'transient',
      cause: e,
    });
  }
  if (opts.duplicates?.policy === 'reject') for (const r of results) if (r.duplicate && !r.stored) r.rejected = true;
  let reused = 0;
  for (let i = 0; i < results.length; i++) {
    const r = results[i];
    if (r.reusesControlIdOf) {
      reused++;
      // Ids and control ids only: never content.
      engine.logger.info('control id reused with other content: stored as a new message', {
        source: sourceId,
        messageId: r.id,
        controlId: rows[i]?.headers.controlId,
        earlierMessageId: r.reusesControlIdOf,
      });
    } else if (r.duplicate)
      engine.metrics.duplicates.inc({
        source: sourceId,
        outcome: r.stored ? 'accepted' : r.rejected ? 'rejected' : 'ignored',
      });
  }
  if (reused) engine.metrics.controlIdReused.inc({ source: sourceId }, reused);
  if (opts.duplicates?.policy === 'reject') {
    // Nothing new at all: refuse the submission (HTTP 409, file to error/, HL7 AR).
    if (results.length && results.every((r) => r.rejected))
      throw new FerryError(
        'INPUT_DUPLICATE_REJECTED',
        `duplicate message${results.length > 1 ? 's' : ''} refused (policy reject): already received as ${results.map((r) => r.duplicateOf).join(', ')}`,
        {
          kind: 'input',
          details: { duplicateOf: results.map((r) => r.duplicateOf) },
        },
      );
  }
  return results;
}
