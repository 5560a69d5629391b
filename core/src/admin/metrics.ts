import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BacklogInfo } from '../store/message-store';

/** What the store gauges show (`EngineMetrics.storeState`). */
export interface StoreState {
  reachable: boolean;
  backlog?: BacklogInfo;
  messages?: Record<string, number>;
}

/** The engine's Prometheus metrics, on a registry of its own (several engines may share a process in tests). */
export class EngineMetrics {
  readonly registry = new Registry();
  readonly received = new Counter({
    name: 'ferry_messages_received_total',
    help: 'Messages durably stored, by source',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly controlIdReused = new Counter({
    name: 'ferry_control_id_reused_total',
    help: 'Messages stored whose sender and control id are those of a message received within the duplicate window but whose content differs (not duplicates: stored and processed), by source',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly duplicates = new Counter({
    name: 'ferry_duplicates_total',
    help: 'Duplicates received (same sender, control id and content within the window), by source and what was done (ignored, rejected, accepted)',
    labelNames: ['source', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly processed = new Counter({
    name: 'ferry_messages_processed_total',
    help: 'Messages transformed and routed, by source and outcome (routed, unrouted, filtered, failed)',
    labelNames: ['source', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly processingBatch = new Histogram({
    name: 'ferry_processing_batch_messages',
    help: 'Messages per processing batch (claimed, transformed, routed and recorded together; see processing.batchSize and processing.lingerMs)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'ferry_messages_failed_total',
    help: 'Messages that failed in the transform or a route step, by source',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly dataQualityIssues = new Counter({
    name: 'ferry_data_quality_issues_total',
    help: "Values the conversion could not use, by source, message type, location (PID-7), reason (invalid-date...) and severity (error: failed by the source's dataQuality policy; warning: delivered)",
    labelNames: ['source', 'type', 'location', 'reason', 'severity'] as const,
    registers: [this.registry],
  });
  readonly routed = new Counter({
    name: 'ferry_route_matches_total',
    help: 'Messages matched by a route, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly routeFiltered = new Counter({
    name: 'ferry_route_filtered_total',
    help: 'Messages a route matched whose steps filtered them out (no delivery from that route), by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: 'ferry_deliveries_total',
    help: 'Delivery attempts by route, sink and outcome (delivered, retry, dead)',
    labelNames: ['route', 'sink', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: 'ferry_delivery_duration_seconds',
    help: 'Time a sink took to deliver one bundle',
    labelNames: ['sink'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly endToEnd = new Histogram({
    name: 'ferry_message_delivery_latency_seconds',
    help: 'From receipt to successful delivery, by sink',
    labelNames: ['sink'] as const,
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600],
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'ferry_deliveries_in_flight',
    help: 'Deliveries being attempted now',
    registers: [this.registry],
  });
  readonly sinkPaused = new Gauge({
    name: 'ferry_sink_paused',
    help: "1 while a sink's deliveries are paused by its circuit breaker (it failed circuitBreaker.failureThreshold attempts in a row; probed until it takes one), else 0",
    labelNames: ['sink'] as const,
    registers: [this.registry],
  });
  readonly sinkHeld = new Gauge({
    name: 'ferry_sink_held',
    help: '1 while an operator holds the sink (POST /api/sinks/:id/hold, ferry sink hold): its deliveries wait, unattempted; else 0',
    labelNames: ['sink'] as const,
    registers: [this.registry],
  });
  readonly sinkPauses = new Counter({
    name: 'ferry_sink_pauses_total',
    help: "Times a sink's circuit breaker paused its deliveries",
    labelNames: ['sink'] as const,
    registers: [this.registry],
  });

  /** Filled by the engine: each running source's own stats. */
  sourceStats: () => { source: string; stats: object | undefined }[] = () => [];
  readonly sourceStat = new Gauge({
    name: 'ferry_source_stat',
    help: "A source's own counters and gauges (e.g. MLLP connections, frames, junkBytes), by source and stat",
    labelNames: ['source', 'stat'] as const,
    registers: [this.registry],
    collect: () => {
      this.sourceStat.reset();
      for (const { source, stats } of this.sourceStats())
        for (const [stat, v] of Object.entries(stats ?? {}))
          if (typeof v === 'number' && Number.isFinite(v)) this.sourceStat.set({ source, stat }, v);
    },
  });

  /**
   * Filled by the engine: what the store holds of open work and of messages needing attention,
   * read when metrics are scraped (at most once a second, shared by the gauges below).
   * Undefined when the store could not answer.
   */
  storeState: () => Promise<StoreState | undefined> = async () => undefined;
  private storeRead?: { at: number; state: Promise<StoreState | undefined> };
  private readStore(): Promise<StoreState | undefined> {
    const now = Date.now();
    if (!this.storeRead || now - this.storeRead.at > 1000)
      this.storeRead = { at: now, state: this.storeState().catch(() => undefined) };
    return this.storeRead.state;
  }
  readonly storeUp = new Gauge({
    name: 'ferry_store_up',
    help: 'Whether the message store answered the last scrape (1) or not (0: unreachable, or cannot write)',
    registers: [this.registry],
    collect: async () => {
      const st = await this.readStore();
      this.storeUp.set(st?.reachable ? 1 : 0);
    },
  });
  readonly storeBacklog = new Gauge({
    name: 'ferry_store_backlog',
    help: 'Open work in the store: unprocessed_messages (received, not yet routed), deliveries_due (pending, or failed and due), deliveries_scheduled (failed, waiting for a later retry), deliveries_leased (being made)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
    collect: async () => {
      this.storeBacklog.reset();
      const b = (await this.readStore())?.backlog;
      if (!b) return;
      this.storeBacklog.set({ kind: 'unprocessed_messages' }, b.unprocessedMessages);
      this.storeBacklog.set({ kind: 'deliveries_due' }, b.deliveriesDue);
      this.storeBacklog.set({ kind: 'deliveries_scheduled' }, b.deliveriesScheduled);
      this.storeBacklog.set({ kind: 'deliveries_leased' }, b.deliveriesLeased);
    },
  });
  readonly storeMessages = new Gauge({
    name: 'ferry_store_messages',
    help: 'Stored messages by status, for the statuses that need work or attention: received, transformed, routed (deliveries open), failed (transform or route step), dead (a delivery gave up)',
    labelNames: ['status'] as const,
    registers: [this.registry],
    collect: async () => {
      this.storeMessages.reset();
      const m = (await this.readStore())?.messages;
      for (const [status, n] of Object.entries(m ?? {})) this.storeMessages.set({ status }, n);
    },
  });

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'ferry_process_' });
  }
}
