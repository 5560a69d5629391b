import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
// fhir-kit-client 1.9.x: 2.x is ESM-only (its exports map has no `require` condition) and cannot be
// loaded by the CommonJS build of @ferry/core nor by jest.
import Client from 'fhir-kit-client';
import { inject, injectable } from 'tsyringe';
import { configError, FerryError, permanentDeliveryError, retryableDeliveryError } from '../errors';
import type { Delivery, MessageSink, SinkContext } from '../plugin/api';
import { coreTokens } from '../plugin/tokens';
import { SinkAuth, sinkAuthSchema } from './auth';
import { parseRetryAfter } from '../vendor/http-client';
import { headerMap, httpUrl, networkDeliveryError, requestSignal } from './common';
import { classifyFhirFailure, isTooManyEntries, issuesOf, summarize } from './fhir-outcome';
import {
  applyResolvedReferences,
  conditionalReferencesOf,
  CONDITIONAL,
  dependencyOrder,
  forEachReference,
  identifierOfQuery,
  tokenParam,
  toTransaction,
  typeIdOf,
  type Ident,
} from './fhir-transaction';
import { redact } from './http.sink';
import { defineSchema, withSchemaDefaults, type SchemaInput, type SchemaType } from '../config/schema-type';
import { ReferenceCache } from './reference-cache';

// The transaction and outcome helpers moved out of this file; importers of './fhir.sink' keep them.
export {
  applyResolvedReferences,
  conditionalReferencesOf,
  dependencyOrder,
  deterministicUuid,
  toTransaction,
  type TransactionOptions,
} from './fhir-transaction';
export { classifyFhirFailure } from './fhir-outcome';
export { ReferenceCache } from './reference-cache';

/** `sinks.<id>` keys of a `type: fhir` sink. */
export const fhirSinkSchema = defineSchema({
  baseUrl: { doc: 'FHIR R4 base URL, e.g. https://fhir.example.org/fhir/R4', format: httpUrl, default: '' },
  auth: sinkAuthSchema,
  timeoutMs: { doc: 'Timeout of one transaction request', format: 'nat', default: 30_000 },
  headers: { doc: 'Extra request headers', format: headerMap, default: {} as Record<string, string> },
  excludeResourceTypes: {
    doc: 'Resource types not written (e.g. MessageHeader, Provenance)',
    format: Array,
    default: [] as string[],
  },
  maxTransactionEntries: {
    doc: 'Most entries in one transaction (0 = no limit). Larger messages are written as several transactions in dependency order. Medplum servers need 8; a server answering "too many entries" gets chunks of 8 automatically.',
    format: 'nat',
    default: 0,
  },
  identity: {
    doc: 'How resources are keyed on the server: `identifier` = conditional update on the first identifier (server-assigned ids; references to resources of earlier messages must carry Reference.identifier), `id` = update by the canonical id (`PUT Type/<id>`, needs a server that allows update-as-create with client ids; references by `Type/id` stay valid across messages)',
    format: ['identifier', 'id'],
    default: 'identifier',
  },
  conditionalReferences: {
    doc: '`resolve` = the sink resolves conditional references (`Patient?identifier=sys|val`) by a search before the transaction (works with every server); `server` = sent as they are, for servers that resolve them in transactions (HAPI, Firely, Smile; not Medplum)',
    format: ['resolve', 'server'],
    default: 'resolve',
  },
  unresolvedReferences: {
    doc: 'A conditional reference that matches nothing on the server: `retry` = retryable failure (the referenced resource may come in a later message), `identifier` = write it as a logical reference (Reference.identifier only)',
    format: ['retry', 'identifier'],
    default: 'retry',
  },
});

export type FhirSinkConfig = SchemaType<typeof fhirSinkSchema>;
/** A config given in code: keys left out take the schema's defaults. */
export type FhirSinkInput = SchemaInput<typeof fhirSinkSchema>;

/**
 * Writes each message's bundle to a FHIR R4 server as ONE transaction (all or nothing) of
 * conditional updates (or updates by canonical id under `identity: id`), so a redelivery creates
 * nothing new. References to resources written by earlier messages are resolved through
 * `Reference.identifier` (conditional references, resolved by a search unless the server is
 * trusted to do it). Uses fhir-kit-client.
 */
@injectable()
export class FhirSink implements MessageSink {
  private readonly cfg: FhirSinkConfig;
  private readonly client: Client;
  private readonly auth: SinkAuth;
  private readonly exclude: Set<string>;
  private warnedCap = false;
  /** Conditional reference -> `Type/id` (exposed for tests and metrics). */
  readonly references = new ReferenceCache();

  constructor(@inject(coreTokens.SinkContext) private readonly ctx: SinkContext<FhirSinkInput>) {
    this.cfg = withSchemaDefaults(fhirSinkSchema, ctx.config);
    if (!this.cfg.baseUrl) throw configError('SINK_URL', `sinks.${ctx.id}.baseUrl: required`);
    if (!['identifier', 'id'].includes(this.cfg.identity))
      throw configError('SINK_CONFIG', `sinks.${ctx.id}.identity: must be identifier or id`);
    this.auth = new SinkAuth(this.cfg.auth, `sinks.${ctx.id}`, this.cfg.timeoutMs);
    this.exclude = new Set(this.cfg.excludeResourceTypes);
    this.client = new Client({
      baseUrl: this.cfg.baseUrl.replace(/\/+$/, ''),
      customHeaders: {
        ...Object.fromEntries(Object.entries(this.cfg.headers).map(([k, v]) => [k, String(v)])),
        'content-type': 'application/fhir+json',
      },
    });
  }

  async deliver(d: Delivery): Promise<void> {
    let tx = toTransaction(d.bundle, d.message.id, { exclude: this.exclude, identity: this.cfg.identity });
    if (!tx.entry?.length) {
      this.ctx.logger.debug('nothing to write', { sink: this.ctx.id, messageId: d.message.id });
      return;
    }
    let cached: string[] = [];
    if (this.cfg.conditionalReferences === 'resolve') {
      const conditional = conditionalReferencesOf(tx);
      if (conditional.literal.size || conditional.logical.size) {
        const r = await this.resolveReferences(conditional.literal, conditional.logical, d);
        cached = r.cached;
        tx = applyResolvedReferences(tx, r.resolved);
      }
    }
    try {
      await this.writeMessage(tx, d);
    } catch (e) {
      // A cached target may be gone (merged, deleted): search again next time.
      for (const k of cached) this.references.delete(k);
      throw e;
    }
  }

  private async writeMessage(tx: Bundle, d: Delivery): Promise<void> {
    const entries = tx.entry ?? [];
    const max = this.cfg.maxTransactionEntries;
    if (max > 0 && entries.length > max) return this.deliverInChunks(entries, d, max);
    try {
      const response = await this.write(tx, d);
      this.checkEntries(response);
      this.learn(entries, response);
    } catch (e) {
      if (!(FerryError.is(e) && isTooManyEntries(e))) throw e;
      if (!this.warnedCap) {
        this.warnedCap = true;
        this.ctx.logger.warn(
          'the FHIR server caps transaction size; writing in chunks of 8 (set maxTransactionEntries to skip the failed first try)',
          { sink: this.ctx.id },
        );
      }
      await this.deliverInChunks(entries, d, 8);
      return;
    }
    this.ctx.logger.debug('transaction written', {
      sink: this.ctx.id,
      messageId: d.message.id,
      entries: entries.length,
    });
  }

  /** Remember where the conditional updates just written landed (their URL and every identifier of the resource). */
  private learn(sent: BundleEntry[], response: Bundle): void {
    (response.entry ?? []).forEach((re, j) => {
      const req = sent[j];
      const to =
        typeIdOf(re.response?.location) ??
        (re.resource?.id ? `${re.resource.resourceType}/${re.resource.id}` : undefined);
      if (!to || !req?.resource) return;
      const type = req.resource.resourceType;
      if (!to.startsWith(`${type}/`)) return;
      const url = req.request?.url ?? '';
      if (CONDITIONAL.test(url)) this.references.set(url, to);
      const ids =
        (re.resource?.resourceType === type ? (re.resource as { identifier?: Ident[] }).identifier : undefined) ??
        (req.resource as { identifier?: Ident[] }).identifier;
      for (const i of Array.isArray(ids) ? ids : [])
        if (i?.system && i?.value) this.references.set(`${type}?${tokenParam(i.system, i.value)}`, to);
    });
  }

  /**
   * `Type?query` -> `Type/id` for every conditional reference, from the cache or a search
   * (`_count=2`: one match resolves; none is retryable or a logical reference per
   * `unresolvedReferences`; several fail the message for good, as a FHIR server would).
   */
  private async resolveReferences(
    literal: Set<string>,
    logical: Set<string>,
    d: Delivery,
  ): Promise<{ resolved: Map<string, string | null>; cached: string[] }> {
    const resolved = new Map<string, string | null>();
    const cached: string[] = [];
    const missing: string[] = [];
    const ambiguous: string[] = [];
    for (const c of new Set([...literal, ...logical])) {
      const hit = this.references.get(c);
      if (hit) {
        resolved.set(c, hit);
        cached.push(c);
        continue;
      }
      const type = CONDITIONAL.exec(c)![1];
      let found: Bundle;
      try {
        found = await this.search(`${c}&_count=2`, d);
      } catch (e) {
        // A logical reference the server cannot search (e.g. a type without an identifier search
        // parameter) stays as it came; a conditional one fails the message like the server would.
        if (literal.has(c) || !FerryError.is(e) || e.retryable) throw e;
        resolved.set(c, null);
        continue;
      }
      const wanted = identifierOfQuery(c);
      // Checked here too: a lenient server ignores a search parameter it does not know and answers
      // every resource of the type.
      const matches = (found.entry ?? []).filter(
        (e) =>
          e.resource?.resourceType === type &&
          (e.search?.mode ?? 'match') === 'match' &&
          e.resource.id &&
          (!wanted ||
            ((e.resource as { identifier?: Ident[] }).identifier ?? []).some(
              (i) => i?.system === wanted.system && i?.value === wanted.value,
            )),
      );
      if (matches.length === 1) {
        const to = `${type}/${matches[0].resource!.id}`;
        resolved.set(c, to);
        this.references.set(c, to);
        continue;
      }
      // A logical reference that does not resolve stays as it came; a conditional one must resolve.
      resolved.set(c, null);
      if (!literal.has(c)) continue;
      if (matches.length === 0) missing.push(type);
      else ambiguous.push(type);
    }
    // Types only: the identifier values are MRNs and the like.
    if (ambiguous.length)
      throw permanentDeliveryError(
        'FHIR_REFERENCE_AMBIGUOUS',
        `fhir sink ${this.ctx.id}: ${ambiguous.length} conditional reference(s) match several resources on the server (${[...new Set(ambiguous)].join(', ')})`,
        {
          types: ambiguous,
        },
      );
    if (missing.length && this.cfg.unresolvedReferences === 'retry')
      throw retryableDeliveryError(
        'FHIR_REFERENCE_UNRESOLVED',
        `fhir sink ${this.ctx.id}: ${missing.length} referenced resource(s) not on the server yet (${[...new Set(missing)].join(', ')}); retrying, the message that carries them may not be written yet`,
        { types: missing },
      );
    if (missing.length)
      this.ctx.logger.debug('conditional references left logical', {
        sink: this.ctx.id,
        messageId: d.message.id,
        types: missing,
      });
    return { resolved, cached };
  }

  /**
   * For servers that cap transaction size (Medplum: 8 conditional writes): several transactions in
   * dependency order (referenced resources first); references to entries already written are
   * rewritten to the `Type/id` the server answered. Each chunk is all-or-nothing and idempotent
   * (conditional updates), so a retry after a partial failure converges; the message as a whole
   * is no longer atomic.
   */
  private async deliverInChunks(entries: BundleEntry[], d: Delivery, max: number): Promise<void> {
    const resolved = new Map<string, string>();
    const ordered = dependencyOrder(entries);
    for (let i = 0; i < ordered.length; i += max) {
      const chunk = ordered.slice(i, i + max).map((e) => {
        const c = structuredClone(e);
        forEachReference(c.resource, (ref) => {
          const to = resolved.get(ref.reference);
          if (to) ref.reference = to;
        });
        return c;
      });
      const response = await this.write({ resourceType: 'Bundle', type: 'transaction', entry: chunk }, d);
      this.checkEntries(response);
      this.learn(chunk, response);
      (response.entry ?? []).forEach((re, j) => {
        const ref =
          typeIdOf(re.response?.location) ??
          (re.resource?.id ? `${re.resource.resourceType}/${re.resource.id}` : undefined);
        if (ref && chunk[j]?.fullUrl) resolved.set(chunk[j].fullUrl!, ref);
      });
    }
    this.ctx.logger.debug('transactions written', {
      sink: this.ctx.id,
      messageId: d.message.id,
      entries: entries.length,
      transactions: Math.ceil(entries.length / max),
    });
  }

  /** One transaction, with one retry after a 401 when the token can be renewed. */
  private write(tx: Bundle, d: Delivery): Promise<Bundle> {
    return this.exchange(`transaction to ${redact(this.cfg.baseUrl)}`, d, (options) =>
      this.client.transaction({ body: tx as never, options: options as never }),
    );
  }

  /** A search (`Type?query`), with the same auth, retry-after-401 and error classification as a transaction. */
  private search(query: string, d: Delivery): Promise<Bundle> {
    return this.exchange(
      `search of ${query.slice(0, query.indexOf('?'))} on ${redact(this.cfg.baseUrl)}`,
      d,
      (options) => this.client.request(query, { options: options as never }),
    );
  }

  private async exchange(
    what: string,
    d: Delivery,
    call: (options: { signal: AbortSignal; headers: Record<string, string> }) => Promise<unknown>,
  ): Promise<Bundle> {
    let result = await this.send(what, d, call);
    if (result.kind === 'unauthorized' && this.auth.invalidate(result.authorization))
      result = await this.send(what, d, call);
    if (result.kind === 'ok') return result.response;
    throw result.error;
  }

  private checkEntries(response: Bundle): void {
    const statuses = (response.entry ?? []).map((e) => e.response?.status ?? '');
    const bad = statuses.filter((s) => !/^2\d\d/.test(s));
    if (bad.length)
      throw permanentDeliveryError(
        'FHIR_ENTRY_FAILED',
        `fhir sink ${this.ctx.id}: ${bad.length} of ${statuses.length} entries failed (${bad.join(', ')})`,
        { statuses },
      );
  }

  private async send(
    what: string,
    d: Delivery,
    call: (options: { signal: AbortSignal; headers: Record<string, string> }) => Promise<unknown>,
  ): Promise<
    | { kind: 'ok'; response: Bundle }
    | { kind: 'unauthorized'; authorization?: string; error: FerryError }
    | { kind: 'error'; error: FerryError }
  > {
    const where = `fhir sink ${this.ctx.id}`;
    const signal = requestSignal(this.cfg.timeoutMs, d);
    let authorization: string | undefined;
    try {
      authorization = await this.auth.authorization(signal);
      const response = (await call({
        signal,
        headers: {
          ...(authorization ? { authorization } : {}),
          'x-ferry-message-id': d.message.id,
          'x-ferry-delivery-id': d.deliveryId,
        },
      })) as Bundle;
      if (!response || response.resourceType !== 'Bundle')
        return {
          kind: 'error',
          error: retryableDeliveryError(
            'FHIR_BAD_RESPONSE',
            `${where}: ${what} answered something that is not a Bundle`,
          ),
        };
      return { kind: 'ok', response };
    } catch (e) {
      if (FerryError.is(e)) return { kind: 'error', error: e };
      const resp = (e as { response?: { status?: number; data?: unknown } }).response;
      if (!resp || typeof resp.status !== 'number')
        return { kind: 'error', error: networkDeliveryError(where, what, e, this.cfg.timeoutMs) };
      const status = resp.status;
      const issues = issuesOf(resp.data);
      const headers = (e as { config?: { headers?: Headers } }).config?.headers;
      const retryAfterMs = parseRetryAfter(headers?.get?.('retry-after'));
      const summary = summarize(issues);
      const msg = `${where}: ${what} answered HTTP ${status}${summary ? ` (${summary})` : ''}`;
      const details: Record<string, unknown> = {
        status,
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        ...(issues.length ? { outcome: resp.data } : {}),
      };
      const error = classifyFhirFailure(status, issues)
        ? retryableDeliveryError(status === 429 ? 'THROTTLED' : 'FHIR_UNAVAILABLE', msg, details)
        : permanentDeliveryError(status === 401 || status === 403 ? 'UNAUTHORIZED' : 'FHIR_REJECTED', msg, details);
      if (status === 401) return { kind: 'unauthorized', authorization, error };
      return { kind: 'error', error };
    }
  }
}
