/**
 * `type: athena-fhir` source: incremental polling of athena FHIR R4, each resource type with the
 * strategy the reference (vendor-apis.md 2.3, the captured CapabilityStatement) says it supports:
 *
 * - `lastUpdated` — types whose search lists `_lastUpdated` (Condition): `_lastUpdated=ge{mark}`,
 *   the mark committed with the last page's messages.
 * - `changedPatients` — Patient (its search lists `_id`, `identifier`, demographics, no
 *   `_lastUpdated`): the ids come from athena's `patients` changed-data feed (reference 1.5), read
 *   with `Patient?_id=` in chunks.
 * - `byPatient` — patient-compartment types searchable by `patient` but not by `_lastUpdated`
 *   (Observation, DiagnosticReport, DocumentReference, Encounter, MedicationRequest, ...): each
 *   patient named by the changed feeds that concern the type (patients + labresults for results,
 *   + appointments for encounters, + prescriptions for medication requests) is searched whole.
 * - `full` — everything else (Location, Practitioner, Organization, ...): the search is re-read
 *   whole each poll.
 * Re-read, unchanged resources have the same control id (version, lastUpdated or content digest)
 * and are dropped as duplicates; a changed one is a new message.
 *
 * The feeds are read crash-safe (an "in flight since" mark before the dequeuing GET, athena's
 * processed window re-read after a crash) and the patient ids they name are kept per type in a
 * durable pending list until that type has been searched for them. One failing type does not stop
 * the others; each type's state is on `stats()` (/metrics `ferry_source_stat`) and `typeStates()`.
 * Every search carries `ah-practice`; `next` links (athena's `cursor`) are followed verbatim.
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, errorFields, FerryError, type InboundMessage, type SourceContext } from '@ferry/core';
import {
  AthenaConnection,
  vendorConnectionsToken,
  type VendorConnections,
  athenaConnectionSchema,
  formatAthenaDateTime,
  isNotSubscribed,
  PollingSource,
} from '@ferry/fhir-vendor-kit';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { AthenaFhirClient } from '../client/athena-fhir.client';
import {
  ATHENA_FHIR_CONTENT_TYPE,
  athenaFhirHeaders,
  restPatientToFhirId,
  type AthenaFhirEnvelope,
} from '../to-fhir/athena-fhir-canonical';
import { defineSchema, type SchemaType } from '@ferry/core';

/** How a resource type is polled incrementally (see the module comment). */
export type AthenaFhirStrategy = 'lastUpdated' | 'changedPatients' | 'byPatient' | 'full';

/** Search parameters the captured CapabilityStatement lists per type (reference 2.3). */
export const ATHENA_FHIR_SEARCH_PARAMS: Record<string, string[]> = {
  Appointment: ['_id', 'base-appointment-id', 'group-appointment-id'],
  Condition: ['patient', 'category', 'code', 'encounter', '_lastUpdated'],
  DiagnosticReport: ['patient', 'category', 'code', 'date', 'result'],
  DocumentReference: ['patient', 'category', 'type', 'date', 'encounter'],
  Encounter: ['patient', 'date', 'location', 'practitioner'],
  MedicationRequest: ['patient', 'intent', 'status', 'authoredon'],
  Observation: ['patient', 'category', 'code', 'date', 'encounter'],
  Patient: ['_id', 'identifier', 'name', 'family', 'given', 'birthdate', 'gender'],
  Provenance: ['target'],
};

/** The changed-data feeds (reference 1.4) whose events name patients whose `type` data may have changed. */
export const ATHENA_FHIR_TRIGGER_FEEDS: Record<string, string[]> = {
  Observation: ['patients', 'labresults'],
  DiagnosticReport: ['patients', 'labresults'],
  Encounter: ['patients', 'appointments'],
  MedicationRequest: ['patients', 'prescriptions'],
};

/** The strategy for a type, from what its search supports (reference 2.3). */
export function athenaFhirStrategy(type: string, params: Record<string, string> = {}): AthenaFhirStrategy {
  const supported = ATHENA_FHIR_SEARCH_PARAMS[type] ?? [];
  if (supported.includes('_lastUpdated')) return 'lastUpdated';
  if (type === 'Patient') return 'changedPatients';
  // A type searchable by patient, unless the configuration pins the patient itself.
  if (supported.includes('patient') && !params.patient && !params.subject) return 'byPatient';
  return 'full';
}

/** State of one resource type, for /metrics and the admin API (ids and counts only, no PHI). */
export interface AthenaFhirTypeState {
  type: string;
  strategy: AthenaFhirStrategy;
  /** 'ok' | 'failing' | 'pending' (not polled yet). */
  state: 'ok' | 'failing' | 'pending';
  consecutiveFailures: number;
  lastSuccessAt?: string;
  lastErrorCode?: string;
  lastErrorAt?: string;
  /** Resources stored by the last successful poll of the type. */
  lastStored: number;
  /** Patients waiting to be searched (changedPatients / byPatient). */
  pendingPatients: number;
}

const listOfStrings = (v: unknown) => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !/^[A-Z][A-Za-z]+$/.test(x)))
    throw new Error('must be a list of FHIR resource types');
};
const isMapping = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);
const objectOf = (v: unknown) => {
  const msg = 'must be a mapping of resource type -> { param: value }';
  if (!isMapping(v)) throw new Error(msg);
  for (const params of Object.values(v)) {
    if (!isMapping(params) || Object.values(params).some((x) => typeof x !== 'string' && typeof x !== 'number'))
      throw new Error(msg);
  }
};
const isoOrEmpty = (v: unknown) => {
  if (typeof v !== 'string' || (v && Number.isNaN(Date.parse(v))))
    throw new Error('must be an ISO-8601 instant or empty');
};

export const athenaFhirSourceSchema = defineSchema({
  ...athenaConnectionSchema,
  resources: { doc: 'Resource types to poll', format: listOfStrings, default: ['Patient'] as string[] },
  searchParams: {
    doc: 'Extra search parameters per resource type, e.g. { Observation: { category: laboratory } }',
    format: objectOf,
    default: {} as Record<string, Record<string, string>>,
  },
  pageSize: { doc: '_count per page', format: 'nat', default: 100 },
  pollIntervalMs: { doc: 'Pause between polls', format: 'nat', default: 60_000 },
  overlapMs: {
    doc: 'Re-read this much before the high-water mark (clock skew between athena hosts)',
    format: 'nat',
    default: 5_000,
  },
  initialSince: {
    doc: 'First poll reads resources updated since this instant (empty = initialLookbackHours)',
    format: isoOrEmpty,
    default: '',
  },
  initialLookbackHours: {
    doc: 'When initialSince is empty: how far back the first poll reads',
    format: 'nat',
    default: 24,
  },
  athenaExtensions: {
    doc: 'drop or keep athena ah-* extensions in the canonical form',
    format: ['drop', 'keep'],
    default: 'drop',
  },
  serverTimeZone: {
    doc: "Zone of athena's showprocessed*datetime params, used to re-read a feed window after a crash [U]",
    format: String,
    default: 'America/New_York',
  },
});

export type AthenaFhirSourceConfig = SchemaType<typeof athenaFhirSourceSchema>;

interface FeedMark {
  inflightSince?: string;
}

@injectable()
export class AthenaFhirSource extends PollingSource<AthenaFhirSourceConfig> {
  readonly conn: AthenaConnection;
  readonly fhir: AthenaFhirClient;
  private readonly cfg: AthenaFhirSourceConfig;
  private readonly states = new Map<string, AthenaFhirTypeState>();
  private readonly subscribedAt = new Map<string, number>();

  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<AthenaFhirSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'athena FHIR poll failed');
    this.cfg = ctx.config;
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
    this.fhir = new AthenaFhirClient(this.conn);
    for (const type of this.cfg.resources) {
      this.states.set(type, {
        type,
        strategy: this.strategy(type),
        state: 'pending',
        consecutiveFailures: 0,
        lastStored: 0,
        pendingPatients: 0,
      });
    }
  }

  /** Each resource type's strategy and state (the admin API's source view). */
  typeStates(): AthenaFhirTypeState[] {
    return [...this.states.values()].map((s) => ({ ...s }));
  }

  /** The admin API's view (`GET /api/sources`): each type's strategy and state. */
  describe(): { resourceTypes: AthenaFhirTypeState[] } {
    return { resourceTypes: this.typeStates() };
  }

  /** Numbers for /metrics (`ferry_source_stat{source, stat}`): per type `<Type>.up` (1 ok, 0 failing), failures in a row, last stored, pending patients. */
  stats(): Record<string, number> {
    const out: Record<string, number> = { polls: this.polls };
    for (const s of this.states.values()) {
      out[`${s.type}.up`] = s.state === 'failing' ? 0 : 1;
      out[`${s.type}.consecutiveFailures`] = s.consecutiveFailures;
      out[`${s.type}.lastStored`] = s.lastStored;
      out[`${s.type}.pendingPatients`] = s.pendingPatients;
      if (s.lastSuccessAt) out[`${s.type}.lastSuccessSeconds`] = Math.floor(Date.parse(s.lastSuccessAt) / 1000);
    }
    return out;
  }

  protected nextWaitMs(): number {
    return this.cfg.pollIntervalMs;
  }

  strategy(type: string): AthenaFhirStrategy {
    return athenaFhirStrategy(type, this.cfg.searchParams[type]);
  }

  /**
   * One pass over every configured type. Each type is isolated: a failing one (a missing scope, a
   * 4xx, an outage of its feed) is recorded in its state and the others are polled; the pass then
   * fails with an error naming the failed types (so the outage log and readiness see it).
   */
  async pollOnce(): Promise<void> {
    const failed: string[] = [];
    let firstError: unknown;
    const fail = (type: string, e: unknown) => {
      const st = this.states.get(type)!;
      st.state = 'failing';
      st.consecutiveFailures++;
      st.lastErrorCode = FerryError.from(e).code;
      st.lastErrorAt = new Date().toISOString();
      failed.push(type);
      firstError ??= e;
      this.ctx.logger.debug('athena FHIR poll of a resource type failed', {
        source: this.ctx.id,
        resourceType: type,
        ...errorFields(e),
      });
    };
    // The changed feeds the feed-driven types need, read once per pass.
    const feedTypes = this.cfg.resources.filter((t) => ['changedPatients', 'byPatient'].includes(this.strategy(t)));
    if (feedTypes.length) {
      try {
        await this.readFeeds(feedTypes);
      } catch (e) {
        if (this.signal.aborted) throw e;
        // The pending lists stay; the types are retried with them next pass.
        for (const t of feedTypes) fail(t, e);
      }
    }
    for (const type of this.cfg.resources) {
      if (this.signal.aborted) return;
      if (failed.includes(type)) continue;
      const st = this.states.get(type)!;
      try {
        st.lastStored = await this.pollType(type);
        st.state = 'ok';
        st.consecutiveFailures = 0;
        st.lastSuccessAt = new Date().toISOString();
      } catch (e) {
        if (this.signal.aborted) throw e;
        fail(type, e);
      }
    }
    if (firstError) {
      const fe = FerryError.from(firstError);
      if (failed.length === this.cfg.resources.length) throw fe;
      throw new FerryError(
        fe.code,
        `${failed.length} of ${this.cfg.resources.length} resource types failed to poll (${failed.join(', ')}); first: ${fe.message}`,
        {
          kind: fe.kind,
          retryable: fe.retryable,
          cause: fe,
          details: { failedTypes: failed },
        },
      );
    }
  }

  private message(resource: Resource): InboundMessage {
    const env: AthenaFhirEnvelope = {
      practiceid: this.conn.practiceId,
      resource,
      athenaExtensions: this.cfg.athenaExtensions,
    };
    return {
      contentType: ATHENA_FHIR_CONTENT_TYPE,
      body: Buffer.from(JSON.stringify(env)),
      headers: athenaFhirHeaders(env),
    };
  }

  private async pollType(type: string): Promise<number> {
    switch (this.strategy(type)) {
      case 'lastUpdated':
        return this.pollLastUpdated(type);
      case 'changedPatients':
      case 'byPatient':
        return this.pollPending(type);
      case 'full':
        return this.pollSearch(type, { ...(this.cfg.searchParams[type] ?? {}) });
    }
  }

  private resourcesOf(bundle: Bundle, type: string): Resource[] {
    return (bundle.entry ?? [])
      .filter((e) => e.search?.mode !== 'outcome' && e.resource && e.resource.resourceType === type)
      .map((e) => e.resource as Resource);
  }

  /** Every page of one search, stored page by page; `last` (checkpoint) goes with the last page. */
  private async pollSearch(
    type: string,
    params: Record<string, string | number>,
    last?: { key: string; value: () => string },
    onPage?: (resources: Resource[]) => void,
  ): Promise<number> {
    let bundle = await this.fhir.search(type, { ...params, _count: this.cfg.pageSize }, this.signal);
    let total = 0;
    for (;;) {
      const resources = this.resourcesOf(bundle, type);
      const next = bundle.link?.find((l) => l.relation === 'next')?.url;
      const messages = resources.map((r) => this.message(r));
      total += messages.length;
      onPage?.(resources);
      if (!next) {
        if (messages.length)
          await this.ctx.submit(
            messages,
            last ? { checkpoint: { sourceId: this.ctx.id, key: last.key, value: last.value() } } : undefined,
          );
        else if (last) await this.ctx.setCheckpoint(last.key, last.value());
        break;
      }
      if (messages.length) await this.ctx.submit(messages);
      const nextBundle = await this.fhir.nextPage(bundle, this.signal);
      if (!nextBundle) break;
      bundle = nextBundle;
    }
    return total;
  }

  /** `_lastUpdated=ge{mark - overlap}`; the new mark (highest meta.lastUpdated) commits with the last page. */
  private async pollLastUpdated(type: string): Promise<number> {
    const key = `lastUpdated:${type}`;
    const stored = await this.ctx.getCheckpoint(key);
    const since =
      stored ??
      (this.cfg.initialSince || new Date(Date.now() - this.cfg.initialLookbackHours * 3_600_000).toISOString());
    const from = new Date(Date.parse(since) - (stored ? this.cfg.overlapMs : 0)).toISOString();
    let high = Date.parse(since);
    const seen = (resources: Resource[]) => {
      for (const r of resources) {
        const lu = Date.parse(r.meta?.lastUpdated ?? '');
        if (!Number.isNaN(lu) && lu > high) high = lu;
      }
    };
    const total = await this.pollSearch(
      type,
      { ...(this.cfg.searchParams[type] ?? {}), _lastUpdated: `ge${from}` },
      { key, value: () => new Date(high).toISOString() },
      seen,
    );
    if (total)
      this.ctx.logger.info('athena FHIR polled', {
        source: this.ctx.id,
        resourceType: type,
        strategy: 'lastUpdated',
        resources: total,
      });
    return total;
  }

  private pendingKey(type: string): string {
    return `pending:${type}`;
  }

  private async pending(type: string): Promise<string[]> {
    const raw = await this.ctx.getCheckpoint(this.pendingKey(type));
    try {
      const v = raw ? JSON.parse(raw) : [];
      return Array.isArray(v) ? v.map(String) : [];
    } catch {
      return [];
    }
  }

  /** Search the type for every patient on its pending list; the list is emptied once all are stored. */
  private async pollPending(type: string): Promise<number> {
    const ids = await this.pending(type);
    const st = this.states.get(type)!;
    st.pendingPatients = ids.length;
    if (!ids.length) return 0;
    let total = 0;
    const extra = this.cfg.searchParams[type] ?? {};
    if (type === 'Patient') {
      for (let i = 0; i < ids.length; i += 50) {
        total += await this.pollSearch(type, {
          ...extra,
          _id: ids
            .slice(i, i + 50)
            .map((id) => restPatientToFhirId(this.conn.practiceId, id))
            .join(','),
        });
      }
    } else {
      for (const id of ids)
        total += await this.pollSearch(type, { ...extra, patient: restPatientToFhirId(this.conn.practiceId, id) });
    }
    await this.ctx.setCheckpoint(this.pendingKey(type), '[]');
    st.pendingPatients = 0;
    if (total)
      this.ctx.logger.info('athena FHIR polled', {
        source: this.ctx.id,
        resourceType: type,
        strategy: this.strategy(type),
        patients: ids.length,
        resources: total,
      });
    return total;
  }

  /**
   * Read the changed feeds the feed-driven types need and add the patients they name to each
   * type's pending list. A plain GET dequeues (reference 1.5): an "in flight since" mark is written
   * before it and cleared only once the ids are on the pending lists; a mark found at start means
   * a read was interrupted, and athena's processed window since then is re-read first.
   */
  private async readFeeds(types: string[]): Promise<void> {
    const feeds = new Map<string, string[]>();
    for (const t of types)
      for (const f of this.strategy(t) === 'changedPatients'
        ? ['patients']
        : (ATHENA_FHIR_TRIGGER_FEEDS[t] ?? ['patients']))
        feeds.set(f, [...(feeds.get(f) ?? []), t]);
    for (const [feed, feedTypes] of feeds) {
      if (this.signal.aborted) return;
      const key = `feed:${feed}`;
      const raw = await this.ctx.getCheckpoint(key);
      const mark: FeedMark = raw ? JSON.parse(raw) : {};
      const ids = new Set<string>();
      if (mark.inflightSince) {
        this.ctx.logger.warn('athena feed read was interrupted; re-reading the processed window', {
          source: this.ctx.id,
          feed,
          since: mark.inflightSince,
        });
        const tz = this.cfg.serverTimeZone;
        await this.collect(feed, ids, {
          showprocessedstartdatetime: formatAthenaDateTime(Date.parse(mark.inflightSince) - 60_000, tz),
          showprocessedenddatetime: formatAthenaDateTime(Date.now() + 1000, tz),
        });
      }
      await this.ctx.setCheckpoint(key, JSON.stringify({ inflightSince: new Date().toISOString() } satisfies FeedMark));
      try {
        await this.collect(feed, ids, {});
      } catch (e) {
        if (!isNotSubscribed(e)) throw e;
        await this.subscribe(feed);
      }
      for (const t of feedTypes) {
        const merged = new Set([...(await this.pending(t)), ...ids]);
        this.states.get(t)!.pendingPatients = merged.size;
        await this.ctx.setCheckpoint(this.pendingKey(t), JSON.stringify([...merged]));
      }
      await this.ctx.setCheckpoint(key, '{}');
    }
  }

  private async collect(feed: string, ids: Set<string>, extra: Record<string, string>): Promise<void> {
    for await (const page of this.conn.pages(
      `/${feed}/changed`,
      feed,
      { limit: 1000, ...extra },
      { signal: this.signal },
    )) {
      for (const r of page.items as Record<string, unknown>[])
        if (r.patientid !== undefined && r.patientid !== null && r.patientid !== '') ids.add(String(r.patientid));
    }
  }

  private async subscribe(feed: string): Promise<void> {
    const last = this.subscribedAt.get(feed);
    // Activation takes up to 5 min in production, 10-15 in preview (reference 1.5.1): ask once per 5 min.
    if (last && Date.now() - last < 300_000) return;
    await this.conn.write('POST', `/${feed}/changed/subscription`, {}, { signal: this.signal });
    this.subscribedAt.set(feed, Date.now());
    this.ctx.logger.info('athena feed subscribed for FHIR polling; events flow once it is active', {
      source: this.ctx.id,
      feed,
    });
  }
}
