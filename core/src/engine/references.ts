/**
 * What a delivery needs beyond its Bundle: the resources of literal references it lacks (from the store,
 * else from the system the message's source polls), and the Bundle written in a plugin's format.
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'winston';
import { configError } from '../errors';
import type { StoredMessage } from '../model/message';
import type { FromFhirOptions, MessageSource, MessageTransform } from '../plugin/api';
import { findTransform } from '../pipeline/process-message';
import type { MessageStore } from '../store/message-store';

/** A running source, as the engine keeps it. */
export interface SourceRuntime {
  id: string;
  type: string;
  source: MessageSource;
  abort: AbortController;
}

/**
 * The newest stored canonical resource for each literal reference (`Patient/epic-123`): a Patient is
 * found by its messages' ordering key (the vendor sources key a patient's messages by its canonical
 * reference). PHI read by the engine for a delivery: audited (`message.bundle.read`, principal engine).
 */
export async function resolveReferences(
  engine: { store: MessageStore; transforms: MessageTransform[]; logger: Logger; sources: readonly SourceRuntime[] },
  refs: string[],
  opts: { messageId: string; sinkId: string },
): Promise<Resource[]> {
  const out: Resource[] = [];
  const read: string[] = [];
  for (const ref of new Set(refs)) {
    const m = /^(Patient)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
    if (!m) continue;
    const candidates = await engine.store.listMessages({
      patient: ref,
      messageType: m[1],
      newestFirst: true,
      limit: 5,
    });
    for (const c of candidates) {
      const full = await engine.store.getMessage(c.id, { bundle: true });
      const r = full?.bundle?.entry?.map((e) => e.resource).find((x) => x && `${x.resourceType}/${x.id}` === ref);
      if (r) {
        out.push(r);
        read.push(c.id);
        break;
      }
    }
  }
  if (read.length)
    await engine.store.appendAudit([
      {
        principal: 'engine',
        action: 'message.bundle.read',
        target: `sink:${opts.sinkId}`,
        messageIds: read,
        result: 'ok',
        detail: `references of message ${opts.messageId} for the delivery (${read.length} found of ${refs.length})`,
      },
    ]);
  // not stored: read from the system the message's source polls (an Epic/Cerner poll source), transformed, not stored
  const left = [...new Set(refs)].filter((ref) => !out.some((r) => `${r.resourceType}/${r.id}` === ref));
  if (left.length && opts.messageId) {
    const msg = await engine.store.getMessage(opts.messageId);
    const src = msg && engine.sources.find((s) => s.id === msg.sourceId);
    if (src?.source.fetchReference) {
      let fetched = 0;
      for (const ref of left) {
        const inbound = await src.source.fetchReference(ref, src.abort.signal);
        const t = inbound && findTransform(engine.transforms, inbound.contentType);
        if (!inbound || !t) continue;
        const bundle = await t.toFhir(
          {
            id: `${opts.messageId}#${ref}`,
            seq: 0,
            sourceId: src.id,
            contentType: inbound.contentType,
            body: inbound.body,
            headers: inbound.headers ?? {},
            receivedAt: new Date(),
            status: 'received',
          } as StoredMessage & { body: Buffer },
          { logger: engine.logger },
        );
        const r = bundle.entry?.map((e) => e.resource).find((x) => x && `${x.resourceType}/${x.id}` === ref);
        if (r) {
          out.push(r);
          fetched++;
        }
      }
      await engine.store.appendAudit([
        {
          principal: 'engine',
          action: 'vendor.read',
          target: `source:${src.id}`,
          messageIds: [opts.messageId],
          result: 'ok',
          detail: `references for the delivery to sink ${opts.sinkId}: ${fetched} fetched of ${left.length}`,
        },
      ]);
    }
  }
  return out;
}

/**
 * A canonical Bundle in a plugin-written format: the loaded transform that lists `opts.format` in its
 * `outputFormats` writes it (`fromFhir`), after the references it needs and the Bundle lacks
 * (`missingReferences`) were looked up (`resolve`) and added. The hook the core file and http sinks use
 * for `format: hl7v2`.
 */
export async function writeFormat(
  transforms: MessageTransform[],
  bundle: Bundle,
  opts: FromFhirOptions,
  resolve?: (refs: string[]) => Promise<Resource[]>,
): Promise<string[]> {
  const writer = transforms.find((t) => t.outputFormats?.includes(opts.format) && t.fromFhir);
  if (!writer)
    throw configError(
      'SINK_FORMAT',
      `no loaded plugin writes ${opts.format} (writers: ${transforms.flatMap((t) => t.outputFormats ?? []).join(', ') || 'none'})`,
    );
  const missing = writer.missingReferences?.(bundle, opts.format) ?? [];
  const found = missing.length && resolve ? await resolve(missing) : [];
  return writer.fromFhir!(found.length ? withResources(bundle, found) : bundle, opts);
}

/** A copy of the Bundle with resources added (fullUrl Type/id, so literal references resolve). */
export function withResources(bundle: Bundle, resources: Resource[]): Bundle {
  return {
    ...bundle,
    entry: [...(bundle.entry ?? []), ...resources.map((r) => ({ fullUrl: `${r.resourceType}/${r.id}`, resource: r }))],
  };
}
