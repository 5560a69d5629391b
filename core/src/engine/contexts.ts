/**
 * What a source or a sink instance sees of the engine (`SourceContext`, `SinkContext`), built from the
 * engine's public members: storing, checkpoints, headers, data quality, references, writing formats.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import { errorFields } from '../logging/logger';
import { ACK_EVENT, type DataQualityPolicy, type InboundMessage, type MessageHeaders } from '../model/message';
import type { MessageTransform, SinkContext, SourceContext } from '../plugin/api';
import { assessDataQuality, findTransform } from '../pipeline/process-message';
import type { DuplicateOptions, InsertOptions, InsertResult, MessageStore } from '../store/message-store';
import type { FileModes } from '../util/file-modes';
import { writeFormat } from './references';

/** The engine as its components' contexts use it. */
export interface ContextEngine {
  readonly store: MessageStore;
  readonly transforms: MessageTransform[];
  readonly fileModes: FileModes;
  submit(
    sourceId: string,
    messages: InboundMessage[],
    opts?: { duplicates?: DuplicateOptions; checkpoint?: InsertOptions['checkpoint'] },
  ): Promise<InsertResult[]>;
  extractHeaders(contentType: string, body: Buffer): MessageHeaders;
  resolveReferences(refs: string[], opts: { messageId: string; sinkId: string }): Promise<Resource[]>;
}

/** A source instance's context: its messages stored under its id, with its duplicates and data-quality policies. */
export function sourceContext(
  engine: ContextEngine,
  s: {
    id: string;
    config: Record<string, unknown>;
    logger: Logger;
    signal: AbortSignal;
    duplicates?: DuplicateOptions;
    dataQuality: DataQualityPolicy;
  },
): SourceContext {
  const { id, logger, duplicates, dataQuality } = s;
  return {
    id,
    config: s.config,
    logger,
    signal: s.signal,
    files: engine.fileModes,
    submit: (messages, opts) => engine.submit(id, messages, { ...opts, duplicates }),
    getCheckpoint: (key) => engine.store.getCheckpoint(id, key),
    setCheckpoint: (key, value) => engine.store.setCheckpoint(id, key, value),
    extractHeaders: (contentType, body) => engine.extractHeaders(contentType, body),
    split: (contentType, body) => {
      const t = findTransform(engine.transforms, contentType);
      return t?.split ? t.split(body) : [body];
    },
    dataQualityCanFail: dataQuality.policy === 'fail' || Object.values(dataQuality.fields).includes('fail'),
    dataQualityIssues: (m) =>
      assessDataQuality(
        engine.transforms,
        {
          id: 'intake',
          seq: 0,
          sourceId: id,
          contentType: m.contentType,
          body: m.body,
          headers: m.headers ?? {},
          receivedAt: m.receivedAt ?? new Date(),
          status: 'received',
        },
        dataQuality,
        logger,
      ),
    auditEntries: (filter) => engine.store.auditEntries(filter),
    recordAcks: (acks) => {
      if (!acks.length || !engine.store.recordEvents) return;
      engine.store
        .recordEvents(acks.map((a) => ({ messageId: a.messageId, status: ACK_EVENT, detail: a.ack })))
        .catch((e) =>
          logger.warn('the ACK sent was not recorded with its message', { messages: acks.length, ...errorFields(e) }),
        );
    },
  };
}

/** A sink instance's context: formats written by the loaded plugins, references looked up for its deliveries. */
export function sinkContext(
  engine: ContextEngine,
  s: { id: string; config: Record<string, unknown>; logger: Logger },
): SinkContext {
  const { id } = s;
  return {
    id,
    config: s.config,
    logger: s.logger,
    files: engine.fileModes,
    fromFhir: (bundle, opts) =>
      writeFormat(engine.transforms, bundle, opts, (refs) =>
        engine.resolveReferences(refs, { messageId: opts.messageId ?? '', sinkId: id }),
      ),
    resolveReferences: (refs, opts) => engine.resolveReferences(refs, { ...opts, sinkId: id }),
  };
}
