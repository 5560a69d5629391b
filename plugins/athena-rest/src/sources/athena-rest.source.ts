/**
 * `type: athena-rest` source: polls athena's changed-data feeds per practice (and per department
 * when configured), subscribing itself on the 403 "not subscribed" answer (reference 1.5).
 *
 * Never losing an event although a plain GET dequeues it (reference 1.5.3, 5): before each
 * dequeuing GET the source durably writes an "in flight since T" checkpoint; the fetched records
 * are stored page by page and the last page's `submit` clears the marker in the same store
 * transaction. If the engine dies between the GET and that commit, the marker is still there at
 * the next start and the source re-reads the window with `showprocessedstartdatetime` /
 * `showprocessedenddatetime` before polling again. Replayed records carry the same control id
 * (a digest of their content), so the engine's duplicate policy drops those it already had.
 */
import { inject, injectable } from 'tsyringe';
import { coreTokens, FerryError, type InboundMessage } from '@ferry/core';
import type { SourceContext } from '@ferry/core';
import {
  AthenaConnection,
  vendorConnectionsToken,
  type VendorConnections,
  athenaConnectionSchema,
  isNotSubscribed,
  PollingSource,
  formatAthenaDate,
  formatAthenaDateTime,
  isValidTimeZone,
} from '@ferry/fhir-vendor-kit';
import { AthenaContentType, athenaHeaders, type AthenaEnvelope, type AthenaKind } from '../to-fhir/athena-records';
import { CHART_SECTIONS, chartRecords, type AthenaChartSection } from '../to-fhir/athena-chart';
import { defineSchema, type SchemaType } from '@ferry/core';

/** Feeds this source understands, with the list key of their envelope and the record kind. */
export const ATHENA_FEEDS = {
  patients: { listKey: 'patients', kind: 'patient' },
  appointments: { listKey: 'appointments', kind: 'appointment' },
  labresults: { listKey: 'labresults', kind: 'labresult' },
  providers: { listKey: 'providers', kind: 'provider' },
  // Chart-backed feeds (reference 1.4 feed types): the event names a patient, the data is the chart section.
  problems: { listKey: 'problems', kind: 'problem' },
  prescriptions: { listKey: 'prescriptions', kind: 'medication' },
} as const satisfies Record<string, { listKey: string; kind: AthenaKind }>;
export type AthenaFeed = keyof typeof ATHENA_FEEDS;

/** Feeds whose events only name a patient: what changed is read from this chart section. */
export const CHART_FEEDS: Partial<Record<AthenaFeed, AthenaChartSection>> = {
  problems: 'problems',
  prescriptions: 'medications',
};

const arrayOf = (allowed?: readonly string[]) => (v: unknown) => {
  if (!Array.isArray(v)) throw new Error('must be a list');
  for (const x of v) {
    if (typeof x !== 'string' && typeof x !== 'number') throw new Error('must be a list of strings');
    if (allowed && !allowed.includes(String(x)))
      throw new Error(`unknown value '${x}' (allowed: ${allowed.join(', ')})`);
  }
};
const timeZone = (v: unknown) => {
  if (typeof v !== 'string' || !isValidTimeZone(v)) throw new Error(`not an IANA time zone: ${String(v)}`);
};

export const athenaRestSourceSchema = defineSchema({
  ...athenaConnectionSchema,
  feeds: {
    doc: `Changed-data feeds to poll: ${Object.keys(ATHENA_FEEDS).join(', ')}`,
    format: arrayOf(Object.keys(ATHENA_FEEDS)),
    default: ['patients', 'appointments'] as AthenaFeed[],
  },
  departmentIds: {
    doc: 'Poll per department (departmentid param); empty = practice-wide',
    format: arrayOf(),
    default: [] as (string | number)[],
  },
  chartSections: {
    doc: `Chart sections read for every patient a polled feed names (${Object.keys(CHART_SECTIONS).join(', ')}); the reference lists no changed feed for allergies and vitals`,
    format: arrayOf(Object.keys(CHART_SECTIONS)),
    default: [] as AthenaChartSection[],
  },
  pollIntervalMs: { doc: 'Pause between polls of all feeds', format: 'nat', default: 30_000 },
  pageLimit: { doc: 'limit per page', format: 'nat', default: 1000 },
  pageDelayMs: { doc: 'Pause between pages (Metriport uses 1 s)', format: 'nat', default: 0 },
  maxPagesPerPoll: { doc: 'Pages read per feed per poll before storing and moving on', format: 'nat', default: 50 },
  autoSubscribe: {
    doc: 'POST the feed subscription when the feed answers 403 "not subscribed"',
    format: Boolean,
    default: true,
  },
  subscriptionEvents: {
    doc: 'Event names for the subscription (empty = all events)',
    format: arrayOf(),
    default: [] as string[],
  },
  serverTimeZone: {
    doc: "Zone of athena's showprocessed*datetime params [U]",
    format: timeZone,
    default: 'America/New_York',
  },
  replayMarginMs: {
    doc: 'Extra window re-read before an interrupted poll (clock skew, second resolution)',
    format: 'nat',
    default: 60_000,
  },
  emitDepartments: {
    doc: 'Also emit each department (-> Location) at start and on refresh',
    format: Boolean,
    default: false,
  },
  departmentRefreshMs: {
    doc: 'How often the department list (time zones) is re-read',
    format: 'nat',
    default: 3_600_000,
  },
  backfill: {
    enabled: {
      doc: 'Once, read booked appointments in a date window (appointments/booked)',
      format: Boolean,
      default: false,
    },
    daysBack: { doc: 'Window start, days before today', format: 'nat', default: 7 },
    daysAhead: { doc: 'Window end, days after today', format: 'nat', default: 30 },
  },
});

export type AthenaRestSourceConfig = SchemaType<typeof athenaRestSourceSchema>;

interface FeedCheckpoint {
  /** ISO instant: a dequeuing GET started then and its records are not all stored yet. */
  inflightSince?: string;
  /** ISO instant of the last completed poll. */
  lastCommitAt?: string;
}

@injectable()
export class AthenaRestSource extends PollingSource<AthenaRestSourceConfig> {
  readonly conn: AthenaConnection;
  private readonly cfg: AthenaRestSourceConfig;
  private departments = new Map<string, Record<string, any>>();
  private departmentsAt = 0;
  private readonly subscribedAt = new Map<string, number>();

  constructor(
    @inject(coreTokens.SourceContext) ctx: SourceContext<AthenaRestSourceConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    super(ctx, 'athena poll failed');
    this.cfg = ctx.config;
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
  }

  protected nextWaitMs(): number {
    return this.cfg.pollIntervalMs;
  }

  /** One pass over every feed and department (also used directly by tests). */
  async pollOnce(): Promise<void> {
    this.chartRead = new Set();
    this.labChart = new Map();
    await this.refreshDepartments();
    if (this.cfg.backfill.enabled) await this.backfill();
    const depts = this.cfg.departmentIds.length ? this.cfg.departmentIds.map(String) : [undefined];
    for (const feed of this.cfg.feeds) {
      for (const dept of depts) {
        if (this.signal.aborted) return;
        await this.pollFeed(feed, dept);
      }
    }
  }

  private async refreshDepartments(force = false): Promise<void> {
    if (!force && this.departments.size && Date.now() - this.departmentsAt < this.cfg.departmentRefreshMs) return;
    const all: Record<string, any>[] = [];
    for await (const page of this.conn.pages(
      '/departments',
      'departments',
      { limit: this.cfg.pageLimit, showalldepartments: 'true' },
      { signal: this.signal },
    ))
      all.push(...page.items);
    this.departments = new Map(all.map((d) => [String(d.departmentid), d]));
    this.departmentsAt = Date.now();
    this.ctx.logger.info('athena departments loaded', { source: this.ctx.id, departments: all.length });
    if (this.cfg.emitDepartments && all.length) {
      await this.ctx.submit(all.map((d) => this.message('department', 'departments', d)));
    }
  }

  private async department(id: unknown): Promise<Record<string, any> | undefined> {
    if (id === undefined || id === null || id === '') return undefined;
    let d = this.departments.get(String(id));
    // An unknown department (new since the last refresh): re-read the list, at most once a minute.
    if (!d && Date.now() - this.departmentsAt > 60_000) {
      await this.refreshDepartments(true);
      d = this.departments.get(String(id));
    }
    return d;
  }

  private message(
    kind: AthenaKind,
    feed: string,
    record: Record<string, any>,
    department?: Record<string, any>,
  ): InboundMessage {
    const env: AthenaEnvelope = {
      practiceid: this.conn.practiceId,
      kind,
      feed,
      record,
      ...(department ? { department } : {}),
    };
    return {
      contentType: AthenaContentType[kind],
      body: Buffer.from(JSON.stringify(env)),
      headers: athenaHeaders(env),
    };
  }

  /**
   * `/labresults/changed` names a result but carries no analytes, LOINC or description (reference
   * 1.4): those are read from the chart (`GET /chart/{patientid}/labresults`, `departmentid`
   * required) — one read per patient and department of the page, all its pages, through the
   * practice's rate limit — and merged into the record. A result the chart does not show (hidden,
   * deleted since) goes on as the feed gave it, counted in a warning.
   */
  private async withChartLabResults(
    records: Record<string, any>[],
    dept: string | undefined,
  ): Promise<Record<string, any>[]> {
    const groups = new Map<string, { pid: string; dept: string }>();
    for (const r of records) {
      const pid = r.patientid === undefined || r.patientid === null ? '' : String(r.patientid);
      const d = r.departmentid ?? dept ?? this.cfg.departmentIds[0];
      if (pid && d !== undefined && d !== null && d !== '') groups.set(`${pid}|${d}`, { pid, dept: String(d) });
    }
    const chart = new Map<string, Record<string, any>>();
    for (const [key, { pid, dept: d }] of groups) {
      // Read once per patient and department in a pass, again only when a result is not in what was read.
      const cached = this.labChart.get(key);
      const wanted = records.filter(
        (r) => `${r.patientid}|${r.departmentid ?? dept ?? this.cfg.departmentIds[0]}` === key,
      );
      if (cached && wanted.every((r) => cached.has(String(r.labresultid)))) {
        for (const [id, c] of cached) chart.set(id, c);
        continue;
      }
      const read = new Map<string, Record<string, any>>();
      for await (const page of this.conn.pages<Record<string, any>>(
        `/chart/${pid}/labresults`,
        'results',
        { departmentid: d, showhidden: 'true', limit: this.cfg.pageLimit },
        { signal: this.signal, pageDelayMs: this.cfg.pageDelayMs },
      )) {
        for (const c of page.items) read.set(String(c.labresultid), c);
      }
      this.labChart.set(key, read);
      for (const [id, c] of read) chart.set(id, c);
    }
    let missing = 0;
    const out = records.map((r) => {
      const c = chart.get(String(r.labresultid));
      if (!c) {
        missing++;
        return r;
      }
      const merged: Record<string, any> = { ...r };
      for (const k of ['labresultloinc', 'description', 'labresultdatetime', 'analytes'])
        if (c[k] !== undefined && c[k] !== null) merged[k] = c[k];
      return merged;
    });
    if (missing)
      this.ctx.logger.warn('athena lab results not in the chart; stored without analytes', {
        source: this.ctx.id,
        departmentid: dept,
        count: missing,
      });
    return out;
  }

  /** Chart sections already read in this pass (`pid|dept|section`): a patient on several feeds is read once. */
  private chartRead = new Set<string>();
  /** Lab results of the chart read in this pass, per `pid|dept`. */
  private labChart = new Map<string, Map<string, Record<string, any>>>();

  /**
   * The chart sections of each patient a feed page names (reference 1.4 `GET /chart/{patientid}/
   * {section}`, `departmentid` required), every page, one message per chart record. Stored with
   * the feed page (same submit), so the feed's crash safety covers them.
   */
  private async chartMessages(
    records: Record<string, any>[],
    sections: AthenaChartSection[],
    dept: string | undefined,
  ): Promise<InboundMessage[]> {
    const out: InboundMessage[] = [];
    for (const r of records) {
      const pid =
        r.patientid === undefined || r.patientid === null || r.patientid === '' ? undefined : String(r.patientid);
      const d = r.departmentid ?? r.primarydepartmentid ?? dept ?? this.cfg.departmentIds[0];
      if (!pid || d === undefined || d === null || d === '') continue;
      for (const section of sections) {
        const key = `${pid}|${d}|${section}`;
        if (this.chartRead.has(key)) continue;
        this.chartRead.add(key);
        const department = await this.department(d);
        for await (const page of this.conn.pages(
          `/chart/${pid}/${section}`,
          section,
          { departmentid: String(d), limit: this.cfg.pageLimit },
          { signal: this.signal, pageDelayMs: this.cfg.pageDelayMs },
        )) {
          for (const item of chartRecords(section, page.items))
            out.push(
              this.message(
                CHART_SECTIONS[section],
                `chart/${section}`,
                { ...item, patientid: pid, departmentid: String(d) },
                department,
              ),
            );
        }
      }
    }
    return out;
  }

  private async toMessages(feed: AthenaFeed, records: Record<string, any>[], dept?: string): Promise<InboundMessage[]> {
    const kind = ATHENA_FEEDS[feed].kind;
    const chartSection = CHART_FEEDS[feed];
    if (chartSection) return this.chartMessages(records, [...new Set([chartSection, ...this.cfg.chartSections])], dept);
    if (kind === 'labresult' && records.length) records = await this.withChartLabResults(records, dept);
    const out: InboundMessage[] = this.cfg.chartSections.length
      ? await this.chartMessages(records, this.cfg.chartSections, dept)
      : [];
    for (const r of records) {
      const needsDept = kind === 'appointment' || kind === 'labresult';
      out.push(this.message(kind, `${feed}/changed`, r, needsDept ? await this.department(r.departmentid) : undefined));
    }
    return out;
  }

  private checkpointKey(feed: string, dept: string | undefined): string {
    return `changed:${feed}:${dept ?? 'all'}`;
  }

  private async readCheckpoint(key: string): Promise<FeedCheckpoint> {
    const v = await this.ctx.getCheckpoint(key);
    if (!v) return {};
    try {
      return JSON.parse(v) as FeedCheckpoint;
    } catch {
      return {};
    }
  }

  private async pollFeed(feed: AthenaFeed, dept: string | undefined): Promise<void> {
    const key = this.checkpointKey(feed, dept);
    const cp = await this.readCheckpoint(key);
    if (cp.inflightSince) await this.recover(feed, dept, key, cp.inflightSince);

    const startedAt = new Date();
    // Durable BEFORE the dequeuing GET: if we die after it, the next start knows what to re-read.
    await this.ctx.setCheckpoint(
      key,
      JSON.stringify({ ...cp, inflightSince: startedAt.toISOString() } satisfies FeedCheckpoint),
    );
    const path = `/${feed}/changed`;
    const query = { departmentid: dept, limit: this.cfg.pageLimit };
    const done = JSON.stringify({ lastCommitAt: startedAt.toISOString() } satisfies FeedCheckpoint);
    let total = 0;
    try {
      for await (const page of this.conn.pages(path, ATHENA_FEEDS[feed].listKey, query, {
        signal: this.signal,
        pageDelayMs: this.cfg.pageDelayMs,
        maxPages: this.cfg.maxPagesPerPoll,
      })) {
        const messages = await this.toMessages(feed, page.items, dept);
        total += messages.length;
        if (!page.hasNext && messages.length) {
          // The last page and the cleared marker commit together.
          await this.ctx.submit(messages, { checkpoint: { sourceId: this.ctx.id, key, value: done } });
        } else if (messages.length) {
          await this.ctx.submit(messages);
        }
        if (!page.hasNext && !messages.length) await this.ctx.setCheckpoint(key, done);
      }
    } catch (e) {
      if (isNotSubscribed(e)) {
        await this.ctx.setCheckpoint(key, JSON.stringify({ lastCommitAt: cp.lastCommitAt } satisfies FeedCheckpoint));
        await this.subscribe(feed);
        return;
      }
      throw e;
    }
    if (total)
      this.ctx.logger.info('athena feed polled', { source: this.ctx.id, feed, departmentid: dept, records: total });
  }

  /** Re-read what a dequeuing GET interrupted before its commit may have taken off the queue. */
  private async recover(feed: AthenaFeed, dept: string | undefined, key: string, since: string): Promise<void> {
    const from = Date.parse(since) - this.cfg.replayMarginMs;
    const to = Date.now() + 1000;
    const tz = this.cfg.serverTimeZone;
    this.ctx.logger.warn('athena poll was interrupted before its commit; re-reading the processed window', {
      source: this.ctx.id,
      feed,
      departmentid: dept,
      since,
    });
    const path = `/${feed}/changed`;
    const query = {
      departmentid: dept,
      limit: this.cfg.pageLimit,
      showprocessedstartdatetime: formatAthenaDateTime(from, tz),
      showprocessedenddatetime: formatAthenaDateTime(to, tz),
    };
    const done = JSON.stringify({ lastCommitAt: new Date().toISOString() } satisfies FeedCheckpoint);
    let total = 0;
    for await (const page of this.conn.pages(path, ATHENA_FEEDS[feed].listKey, query, {
      signal: this.signal,
      pageDelayMs: this.cfg.pageDelayMs,
    })) {
      const messages = await this.toMessages(feed, page.items, dept);
      total += messages.length;
      if (!page.hasNext) {
        if (messages.length)
          await this.ctx.submit(messages, { checkpoint: { sourceId: this.ctx.id, key, value: done } });
        else await this.ctx.setCheckpoint(key, done);
      } else if (messages.length) await this.ctx.submit(messages);
    }
    this.ctx.logger.info('athena processed window re-read', {
      source: this.ctx.id,
      feed,
      departmentid: dept,
      records: total,
    });
  }

  private async subscribe(feed: AthenaFeed): Promise<void> {
    if (!this.cfg.autoSubscribe) {
      throw new FerryError(
        'CONFIG_ATHENA_NOT_SUBSCRIBED',
        `athena feed ${feed} is not subscribed and autoSubscribe is off`,
        { kind: 'config', retryable: false },
      );
    }
    const last = this.subscribedAt.get(feed);
    // Activation takes up to 5 min in production, 10-15 in preview (reference 1.5.1): ask once per 5 min.
    if (last && Date.now() - last < 300_000) {
      this.ctx.logger.info('athena feed subscription not active yet', { source: this.ctx.id, feed });
      return;
    }
    const form = this.cfg.subscriptionEvents.length ? { eventname: this.cfg.subscriptionEvents } : {};
    await this.conn.write('POST', `/${feed}/changed/subscription`, form, { signal: this.signal });
    this.subscribedAt.set(feed, Date.now());
    this.ctx.logger.info('athena feed subscribed; events flow once it is active', { source: this.ctx.id, feed });
  }

  /** Once per department: booked appointments in a date window (reference 1.4 appointments/booked). */
  private async backfill(): Promise<void> {
    const depts = this.cfg.departmentIds.length ? this.cfg.departmentIds.map(String) : [...this.departments.keys()];
    for (const dept of depts) {
      const key = `backfill:appointments:${dept}`;
      if (await this.ctx.getCheckpoint(key)) continue;
      const d = this.departments.get(dept);
      const tz = d?.timezonename && isValidTimeZone(d.timezonename) ? d.timezonename : this.cfg.serverTimeZone;
      const now = Date.now();
      const query = {
        departmentid: dept,
        startdate: formatAthenaDate(now - this.cfg.backfill.daysBack * 86_400_000, tz),
        enddate: formatAthenaDate(now + this.cfg.backfill.daysAhead * 86_400_000, tz),
        limit: this.cfg.pageLimit,
      };
      const value = JSON.stringify({ window: [query.startdate, query.enddate], at: new Date(now).toISOString() });
      let total = 0;
      for await (const page of this.conn.pages('/appointments/booked', 'appointments', query, {
        signal: this.signal,
        pageDelayMs: this.cfg.pageDelayMs,
      })) {
        const messages = page.items.map((r) => this.message('appointment', 'appointments/booked', r, d));
        total += messages.length;
        if (!page.hasNext) {
          if (messages.length) await this.ctx.submit(messages, { checkpoint: { sourceId: this.ctx.id, key, value } });
          else await this.ctx.setCheckpoint(key, value);
        } else if (messages.length) await this.ctx.submit(messages);
      }
      this.ctx.logger.info('athena appointment backfill done', {
        source: this.ctx.id,
        departmentid: dept,
        records: total,
      });
    }
  }
}
