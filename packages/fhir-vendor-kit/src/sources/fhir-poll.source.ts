/**
 * {@link FhirPollSource}, shared by the Epic and Cerner plugins: incremental polling per resource
 * type (and Observation category), by `_lastUpdated=ge<checkpoint>`, one search per patient for
 * patient-compartment types. The checkpoint (`poll:<Type>[:<category>]` = newest `meta.lastUpdated`
 * seen + the ids seen at that instant) is committed in the same store transaction as the last page's
 * messages; a crash before that re-reads from the old checkpoint (re-read resources are the same
 * `controlId`, which the source's duplicate policy catches).
 *
 * Each vendor resource becomes one message (`application/vnd.<vendor>.fhir+json`, the resource as
 * JSON), normalised later by the vendor's transform.
 */
import {
  defineSchema,
  errorFields,
  FerryError,
  type InboundMessage,
  type SchemaType,
  type SourceContext,
} from '@ferry/core';
import { connectionSchema } from '../connection';
import { FhirClient } from '../fhir-client';
import { canonicalId, type VendorProfile } from '../normalize';
import { LoopSource, resourceMessage } from './vendor-source';
import type { VendorConnections } from '../vendor-connections';

export interface PollResourceSpec {
  type: string;
  /** Observation / Condition / DiagnosticReport category (Epic requires one for Observation). */
  category?: string;
  /** Extra search parameters (e.g. Epic Appointment `service-category`). */
  params?: Record<string, string>;
}

/** Convict format (a function) of `resources`. */
function resourcesFormat(v: unknown): void {
  {
    if (!Array.isArray(v)) throw new Error('must be a list of { type, category?, params? }');
    v.forEach((x, i) => {
      if (
        !x ||
        typeof x !== 'object' ||
        typeof (x as PollResourceSpec).type !== 'string' ||
        !/^[A-Z][A-Za-z]+$/.test((x as PollResourceSpec).type)
      )
        throw new Error(`[${i}] needs a FHIR resource type, e.g. { type: Observation, category: vital-signs }`);
      const extra = Object.keys(x).filter((k) => !['type', 'category', 'params'].includes(k));
      if (extra.length) throw new Error(`[${i}] unknown key(s) ${extra.join(', ')}`);
    });
  }
}

export function pollSourceSchema(defaults: Parameters<typeof connectionSchema>[0]) {
  return defineSchema({
    ...connectionSchema(defaults),
    intervalMs: { doc: 'Wait between polls', format: 'nat', default: 60_000 },
    patients: { doc: 'Vendor patient ids whose compartment is polled', format: Array, default: [] as string[] },
    resources: {
      doc: 'Resource types to poll: [{ type, category?, params? }]',
      format: resourcesFormat,
      default: [{ type: 'Patient' }] as PollResourceSpec[],
    },
    pageSize: { doc: '_count per page (Cerner caps at 200)', format: 'nat', default: 100 },
    initialSince: { doc: "First poll reads changes since this instant ('' = everything)", format: String, default: '' },
  });
}

export type PollSourceConfig = SchemaType<ReturnType<typeof pollSourceSchema>>;

interface PollCheckpoint {
  since: string;
  /** Ids seen with meta.lastUpdated == since (the next `ge` search returns them again). */
  ids: string[];
}

/** Incremental FHIR polling (see the module comment). */
export class FhirPollSource extends LoopSource<PollSourceConfig> {
  protected readonly fhir: FhirClient;

  /**
   * @param checkSpec the vendor's required search shapes: a message for a resource spec the vendor
   *   would refuse (checked at startup, so a bad config fails once and clearly, not every poll).
   */
  constructor(
    ctx: SourceContext<PollSourceConfig>,
    profile: VendorProfile,
    checkSpec?: (spec: PollResourceSpec) => string | undefined,
    shared?: VendorConnections,
  ) {
    super(ctx, profile, shared);
    this.fhir = new FhirClient(this.conn);
    const problems = ctx.config.resources.map((spec, i) => [i, checkSpec?.(spec)] as const).filter(([, m]) => m);
    if (problems.length)
      throw new FerryError(
        'CONFIG_POLL_RESOURCES',
        problems.map(([i, m]) => `sources.${ctx.id}.resources[${i}]: ${m}`).join('; '),
        { kind: 'config', retryable: false },
      );
  }

  protected intervalMs(): number {
    return this.ctx.config.intervalMs;
  }

  static checkpointKey(spec: PollResourceSpec): string {
    const params = Object.entries(spec.params ?? {})
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    return `poll:${spec.type}${spec.category ? `:${spec.category}` : ''}${params ? `?${params}` : ''}`;
  }

  /** Each resource spec's state (`Type` or `Type:category`): for /metrics and the admin API, no PHI. */
  private readonly specStates = new Map<
    string,
    {
      spec: string;
      state: 'ok' | 'failing' | 'pending';
      consecutiveFailures: number;
      lastStored: number;
      lastSuccessAt?: string;
      lastErrorCode?: string;
      lastErrorAt?: string;
    }
  >();

  private specState(spec: PollResourceSpec) {
    const name = spec.category ? `${spec.type}:${spec.category}` : spec.type;
    let st = this.specStates.get(name);
    if (!st) this.specStates.set(name, (st = { spec: name, state: 'pending', consecutiveFailures: 0, lastStored: 0 }));
    return st;
  }

  /** The admin API's view (`GET /api/sources`): each resource spec's state. */
  describe(): { resourceTypes: object[] } {
    return { resourceTypes: this.ctx.config.resources.map((s) => ({ ...this.specState(s) })) };
  }

  /** /metrics `ferry_source_stat`: per spec `<spec>.up` (1 ok, 0 failing), failures in a row, last stored. */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.ctx.config.resources.map((x) => this.specState(x))) {
      out[`${s.spec}.up`] = s.state === 'failing' ? 0 : 1;
      out[`${s.spec}.consecutiveFailures`] = s.consecutiveFailures;
      out[`${s.spec}.lastStored`] = s.lastStored;
    }
    return out;
  }

  /**
   * A Patient a delivery needs that Ferry never stored (`Patient/<prefix>-<vendor id>`, an Observation's
   * subject): read from the vendor (`GET Patient/<id>`) as the raw message a poll would submit. Not this
   * tenant's prefix, a hashed id, or the vendor does not have it (a non-retryable answer): undefined.
   */
  async fetchReference(reference: string, signal?: AbortSignal): Promise<InboundMessage | undefined> {
    const m = /^Patient\/(.+)$/.exec(reference);
    const prefix = `${this.profile.idPrefix}-`;
    if (!m || !m[1].startsWith(prefix)) return undefined;
    const id = m[1].slice(prefix.length);
    if (canonicalId(this.profile.idPrefix, id) !== m[1]) return undefined;
    try {
      const { resource } = await this.fhir.read('Patient', id, signal ?? this.signal);
      return resource?.resourceType === 'Patient' ? resourceMessage(resource, this.profile, this.facility) : undefined;
    } catch (e) {
      if (FerryError.is(e) && e.retryable === false) return undefined;
      throw e;
    }
  }

  /** One pass over every configured resource type; returns the number of messages stored. */
  async cycle(): Promise<number> {
    let total = 0;
    let firstError: unknown;
    const failed: string[] = [];
    for (const spec of this.ctx.config.resources) {
      if (this.signal.aborted) break;
      // One failing resource type (a missing scope, a 4xx) does not hold the others back.
      const st = this.specState(spec);
      try {
        st.lastStored = await this.pollSpec(spec);
        total += st.lastStored;
        st.state = 'ok';
        st.consecutiveFailures = 0;
        st.lastSuccessAt = new Date().toISOString();
      } catch (e) {
        if (this.signal.aborted) throw e;
        st.state = 'failing';
        st.consecutiveFailures++;
        st.lastErrorCode = FerryError.from(e).code;
        st.lastErrorAt = new Date().toISOString();
        failed.push(spec.category ? `${spec.type}:${spec.category}` : spec.type);
        firstError ??= e;
        // Each at debug: the cycle's failure (which names them) is what the loop logs, once per run of failures.
        this.ctx.logger.debug(`${this.profile.vendor} poll of a resource type failed`, {
          source: this.ctx.id,
          resourceType: spec.type,
          category: spec.category,
          ...errorFields(e),
        });
      }
    }
    if (firstError) {
      if (failed.length === this.ctx.config.resources.length) throw firstError;
      const fe = FerryError.from(firstError);
      throw new FerryError(
        fe.code,
        `${failed.length} of ${this.ctx.config.resources.length} resource types failed to poll (${failed.join(', ')}); first: ${fe.message}`,
        {
          kind: fe.kind,
          retryable: fe.retryable,
          cause: fe,
          details: { stored: total, failedTypes: failed },
        },
      );
    }
    return total;
  }

  private queries(spec: PollResourceSpec, since: string | undefined): Record<string, string | string[]>[] {
    const base: Record<string, string | string[]> = {
      ...(spec.params ?? {}),
      _count: String(this.ctx.config.pageSize),
    };
    if (spec.category) base.category = spec.category;
    // `date` and `_lastUpdated` may not be combined (Epic 4112, Cerner 400): a spec with its own
    // date window is re-read whole each poll, unchanged resources dropped as duplicates.
    if (since && !spec.params?.date) base._lastUpdated = `ge${since}`;
    const patients = this.ctx.config.patients;
    if (spec.type === 'Patient') {
      const out: Record<string, string | string[]>[] = [];
      for (let i = 0; i < patients.length; i += 50) out.push({ ...base, _id: patients.slice(i, i + 50).join(',') });
      return out;
    }
    return patients.map((p) => ({ ...base, patient: p }));
  }

  private async pollSpec(spec: PollResourceSpec): Promise<number> {
    const key = FhirPollSource.checkpointKey(spec);
    const raw = await this.ctx.getCheckpoint(key);
    const cp: PollCheckpoint | undefined = raw
      ? JSON.parse(raw)
      : this.ctx.config.initialSince
        ? { since: this.ctx.config.initialSince, ids: [] }
        : undefined;
    const skip = new Set(cp?.ids ?? []);
    const sinceMs = cp?.since ? Date.parse(cp.since) : -Infinity;
    let newest = cp?.since ?? '';
    let newestIds = new Set(cp?.ids ?? []);
    let pending: InboundMessage[] = [];
    let stored = 0;
    const flush = async (withCheckpoint: boolean) => {
      const checkpoint = withCheckpoint
        ? {
            sourceId: this.ctx.id,
            key,
            value: JSON.stringify({ since: newest, ids: [...newestIds] } satisfies PollCheckpoint),
          }
        : undefined;
      if (pending.length) {
        await this.ctx.submit(pending, checkpoint ? { checkpoint } : undefined);
        stored += pending.length;
      } else if (checkpoint && newest) await this.ctx.setCheckpoint(key, checkpoint.value);
      pending = [];
    };
    for (const q of this.queries(spec, cp?.since)) {
      for await (const page of this.fhir.search(spec.type, q, { signal: this.signal })) {
        for (const r of page.resources) {
          const lu = r.meta?.lastUpdated ?? '';
          const luMs = lu ? Date.parse(lu) : NaN;
          const rid = `${r.resourceType}/${r.id}`;
          if (cp && !Number.isNaN(luMs)) {
            // Servers may ignore _lastUpdated silently (Epic 4122): filter here too.
            if (luMs < sinceMs) continue;
            if (luMs === sinceMs && skip.has(rid)) continue;
          }
          if (!Number.isNaN(luMs)) {
            const newestMs = newest ? Date.parse(newest) : -Infinity;
            if (luMs > newestMs) {
              newest = lu;
              newestIds = new Set([rid]);
            } else if (luMs === newestMs) newestIds.add(rid);
          }
          pending.push(resourceMessage(r, this.profile, this.facility));
        }
        if (pending.length >= 500) await flush(false);
      }
    }
    await flush(true);
    if (stored)
      this.ctx.logger.info(`${this.profile.vendor} poll stored resources`, {
        source: this.ctx.id,
        resourceType: spec.type,
        category: spec.category,
        count: stored,
      });
    return stored;
  }
}
