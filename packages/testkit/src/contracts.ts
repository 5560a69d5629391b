/**
 * Contract suites: one call in a plugin's `*.contract.test.ts` runs the checks every source, sink
 * and transform must pass (PLUGINS.md "Contract suites"). They drive the component through the
 * plugin's own adapter (how to make the outside world send a message, fail, or hang), against a
 * real SQLite store, and capture everything the component logs at info and above.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  FerryError,
  silentLogger,
  validateBundle,
  type Delivery,
  type MessageSink,
  type MessageSource,
  type MessageStore,
  type MessageTransform,
  type SinkContext,
  type SourceContext,
  type StoredMessage,
} from '@ferry/core';
import type { Bundle } from '@medplum/fhirtypes';
import {
  captureLogger,
  openSqliteStore,
  sourceHarness,
  tempDir,
  waitFor,
  type LogLine,
  type SourceHarness,
} from './harness';

/** A marker unique to one contract message: it must reach the store and never a log line. */
export const contractMarker = (i: number) =>
  `ZZCONTRACT${randomUUID().replace(/-/g, '').slice(0, 10).toUpperCase()}${i}`;

function noMarkerIn(lines: LogLine[], markers: string[]): void {
  const text = lines.map((l) => JSON.stringify(l)).join('\n');
  const leaked = markers.filter((m) => text.includes(m));
  expect(leaked).toEqual([]);
}

async function settles<T>(p: Promise<T>, ms: number): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, ms));
  return done;
}

async function portRefuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
}

// ---------------------------------------------------------------------------------------------
// Sources

export interface SourceContractOptions<C> {
  /** Build the source the way the engine would (`new MySource(ctx)`). */
  create(ctx: SourceContext<C>): MessageSource | Promise<MessageSource>;
  /** A validated config for one run (fresh each call: port 0, its own simulator tenant...). */
  config(): C | Promise<C>;
  /**
   * Make the outside world hand the started source one new message whose content carries `marker`.
   * A push source (it acknowledges a sender) returns `{ acked }`, the sender's wait for the
   * acknowledgement: `true` when positive, `false` when negative (e.g. an HL7 AE). A pull source
   * returns nothing.
   * `again` is true when the same message is sent again after a failure (a sender's resend).
   */
  deliver(source: MessageSource, marker: string, again: boolean): Promise<{ acked: Promise<boolean> } | void>;
  /** The engine's header extraction and batch split for the source's content types (default: none, one message a body). */
  context?: Pick<SourceContext<C>, 'extractHeaders' | 'split'>;
  /** A pull source: poll now (`pollNow()`), so the tests need not wait for the interval. */
  poke?(source: MessageSource): void;
  /** The ports the source listens on (checked refused after stop). */
  ports?(source: MessageSource): number[];
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
  /** Longest wait for one message to be stored (default 10 s). */
  timeoutMs?: number;
}

export function runSourceContract<C>(name: string, o: SourceContractOptions<C>): void {
  describe(`source contract: ${name}`, () => {
    const logs: LogLine[] = [];
    const markers: string[] = [];
    const stores: MessageStore[] = [];
    const running: MessageSource[] = [];
    const timeout = o.timeoutMs ?? 10_000;

    beforeAll(async () => {
      await o.setup?.();
    });
    afterAll(async () => {
      for (const s of running) await s.stop().catch(() => undefined);
      for (const s of stores) await s.close().catch(() => undefined);
      await o.teardown?.();
    });

    /** A started source on a new store, or (a restart) on `reuse`'s store with its id and config. */
    async function started(reuse?: { store: MessageStore; id: string; config: C }) {
      const store = reuse?.store ?? (await openSqliteStore(tempDir('ferry-contract-')));
      if (!reuse) stores.push(store);
      const cap = captureLogger('info');
      const h = sourceHarness<C>(store, reuse?.id ?? `contract-${stores.length}`, reuse?.config ?? (await o.config()), {
        logger: cap.logger,
        ...o.context,
      });
      // Lines are shared with the PHI check at the end.
      cap.lines.push = (...l: LogLine[]) => logs.push(...l);
      const source = await o.create(h.ctx);
      running.push(source);
      await source.start();
      const stop = async () => {
        if (!running.includes(source)) return;
        running.splice(running.indexOf(source), 1);
        await source.stop();
      };
      return { h, source, store, stop };
    }

    const mark = (i: number) => {
      const m = contractMarker(i);
      markers.push(m);
      return m;
    };
    const has = (msgs: { body: Buffer }[], marker: string) =>
      msgs.some((m) => m.body.toString('utf8').includes(marker));
    const storedWith = (h: SourceHarness<C>, marker: string) =>
      h.stored.filter((m) => m.body.toString('utf8').includes(marker)).length;

    it('acknowledges only after the store commit; a crash before the commit loses nothing', async () => {
      const { h, source, store, stop } = await started();
      let release!: () => void;
      let crash!: (e: unknown) => void;
      h.gate = new Promise<void>((res, rej) => ((release = res), (crash = rej)));
      h.gate.catch(() => undefined);
      try {
        const marker = mark(1);
        const ack = (await o.deliver(source, marker, false))?.acked;
        o.poke?.(source);
        await waitFor(
          () => h.submits.some((s) => has(s.messages, marker)),
          timeout,
          'the source to submit the message',
        );
        if (ack) {
          // A push source: its sender has no acknowledgement while the commit is pending; it gets one after.
          expect(await settles(ack, 300)).toBe(false);
          release();
          h.gate = undefined;
          expect(await ack).toBe(true);
          const committed = h.submits.find((s) => s.committedAt && has(s.messages, marker))?.committedAt;
          expect(committed).toBeDefined();
          expect(storedWith(h, marker)).toBe(1);
        } else {
          // A pull source: the process dies before the commit; a new one on the same store must read the message again.
          crash(new FerryError('TRANSIENT_KILLED', 'killed before the commit', { kind: 'transient' }));
          h.gate = undefined;
          h.storeDown = true;
          await stop();
          expect(storedWith(h, marker)).toBe(0);
          const next = await started({ store, id: h.ctx.id, config: h.ctx.config as C });
          try {
            o.poke?.(next.source);
            await waitFor(() => storedWith(next.h, marker) > 0, timeout, 'the restarted source to store the message');
          } finally {
            await next.stop();
          }
        }
      } finally {
        release();
        await stop();
      }
    });

    it('survives the store being unavailable and stores the message once it is back', async () => {
      const { h, source, stop } = await started();
      try {
        h.storeDown = true;
        const marker = mark(2);
        const ack = (await o.deliver(source, marker, false))?.acked;
        o.poke?.(source);
        await waitFor(() => h.submits.some((s) => s.error), timeout, 'a submit refused by the unavailable store');
        if (ack) expect(await ack).toBe(false);
        expect(storedWith(h, marker)).toBe(0);
        h.storeDown = false;
        const again = (await o.deliver(source, marker, true))?.acked;
        o.poke?.(source);
        await waitFor(() => storedWith(h, marker) > 0, timeout, 'the message stored after the store came back');
        if (again) expect(await again).toBe(true);
      } finally {
        await stop();
      }
    });

    it('stops cleanly: drains, submits nothing after stop, releases its ports', async () => {
      const { h, source, stop } = await started();
      try {
        const marker = mark(3);
        const ack = (await o.deliver(source, marker, false))?.acked;
        o.poke?.(source);
        await waitFor(() => storedWith(h, marker) > 0, timeout, 'the message to be stored');
        if (ack) expect(await ack).toBe(true);
        const ports = o.ports?.(source) ?? [];
        const t0 = Date.now();
        await stop();
        expect(Date.now() - t0).toBeLessThan(timeout);
        const n = h.submits.length;
        o.poke?.(source);
        await new Promise((r) => setTimeout(r, 200));
        expect(h.submits.length).toBe(n);
        for (const p of ports) expect(await portRefuses(p)).toBe(true);
      } finally {
        await stop();
      }
    });

    it('logs no message content (info and above)', () => {
      expect(markers.length).toBeGreaterThan(0);
      noMarkerIn(logs, markers);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Sinks

export interface SinkContractOptions<C> {
  create(ctx: SinkContext<C>): MessageSink | Promise<MessageSink>;
  config(): C | Promise<C>;
  /** A canonical Bundle for the sink whose content carries `marker` (see `deliveryOf`). */
  bundle(marker: string): Bundle;
  /** The stored message behind the delivery (a sink that sends the original body reads it), carrying `marker`. */
  message?(marker: string): Partial<StoredMessage>;
  /** Make the remote's next answer a failure: `retryable` (5xx, 429, an HL7 AE), `dead` (a 4xx, an AR), `hang` (no answer). */
  fault(kind: 'retryable' | 'dead' | 'hang'): void | Promise<void>;
  /** How many records the remote holds for `marker`, as the remote identifies records (replays of one delivery must leave one). */
  received(marker: string): number | Promise<number>;
  /**
   * Set (to the reason) when the remote offers no way to make a write idempotent or to reconcile
   * it (no conditional create, no search): the sink must then fail an attempt whose outcome is
   * unknown (a hung or 5xx create) as dead for an operator, never repeat it: the next attempt of
   * a delivery abandoned at the timeout must fail dead. The timeout check tests that instead of
   * "replays leave one record".
   */
  nonIdempotent?: string;
  /** The call timeout the test gives the delivery (its signal) and that the sink must honour (default 1 s). */
  callTimeoutMs?: number;
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

/** A Delivery as the dispatcher hands it to a sink. */
export function deliveryOf(
  bundle: Bundle,
  o: { attempt?: number; deliveryId?: string; signal?: AbortSignal; message?: Partial<StoredMessage> } = {},
): Delivery {
  const json = JSON.stringify(bundle);
  return {
    deliveryId: o.deliveryId ?? randomUUID(),
    attempt: o.attempt ?? 1,
    routeId: 'contract',
    bundle,
    bundleJson: json,
    signal: o.signal,
    message: {
      id: randomUUID(),
      seq: 1,
      sourceId: 'contract',
      contentType: 'application/fhir+json',
      headers: {},
      receivedAt: new Date(),
      status: 'routed',
      body: Buffer.from(json),
      ...o.message,
    } as StoredMessage,
  };
}

export function runSinkContract<C>(name: string, o: SinkContractOptions<C>): void {
  describe(`sink contract: ${name}`, () => {
    const cap = captureLogger('info');
    const markers: string[] = [];
    let sink: MessageSink;
    const callTimeout = o.callTimeoutMs ?? 1000;
    const mark = (i: number) => {
      const m = contractMarker(i);
      markers.push(m);
      return m;
    };

    beforeAll(async () => {
      await o.setup?.();
      sink = await o.create({ id: 'contract-sink', config: await o.config(), logger: cap.logger });
      await sink.start?.();
    });
    afterAll(async () => {
      await sink?.stop?.();
      await o.teardown?.();
    });

    it('delivers', async () => {
      const m = mark(1);
      await sink.deliver(deliveryOf(o.bundle(m), { message: o.message?.(m) }));
      expect(await o.received(m)).toBe(1);
    });

    it('classifies a transient failure as retryable, and the retry delivers', async () => {
      const m = mark(2);
      const d = deliveryOf(o.bundle(m), { message: o.message?.(m) });
      await o.fault('retryable');
      const err = await sink.deliver(d).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeDefined();
      // Anything not a FerryError is retried by the engine; a FerryError must say retryable.
      if (FerryError.is(err)) expect(err.retryable).toBe(true);
      await sink.deliver({ ...d, attempt: 2 });
      expect(await o.received(m)).toBe(1);
    });

    it('classifies a rejection as dead (not retryable)', async () => {
      const m = mark(3);
      await o.fault('dead');
      const err = await sink.deliver(deliveryOf(o.bundle(m), { message: o.message?.(m) })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(FerryError.is(err)).toBe(true);
      expect((err as FerryError).retryable).toBe(false);
    });

    if (!o.nonIdempotent)
      it('is idempotent under replay: the same delivery twice leaves one record', async () => {
        const m = mark(4);
        const d = deliveryOf(o.bundle(m), { message: o.message?.(m) });
        await sink.deliver(d);
        await sink.deliver({ ...d, attempt: 2 });
        expect(await o.received(m)).toBe(1);
      });

    it(
      o.nonIdempotent
        ? `honours the call timeout; a hung write (outcome unknown) is dead, never repeated (${o.nonIdempotent})`
        : 'honours the call timeout (ends a hung call, retryable)',
      async () => {
        const m = mark(5);
        await o.fault('hang');
        const t0 = Date.now();
        const d = deliveryOf(o.bundle(m), { signal: AbortSignal.timeout(callTimeout), message: o.message?.(m) });
        const err = await sink.deliver(d).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(Date.now() - t0).toBeLessThan(callTimeout + 3000);
        expect(err).toBeDefined();
        if (o.nonIdempotent) {
          // The engine retries an attempt it gave up on; the sink must not write a second time.
          const again = await sink.deliver({ ...d, attempt: 2, signal: undefined }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(FerryError.is(again) && again.retryable).toBe(false);
          await new Promise((r) => setTimeout(r, 300));
          expect(await o.received(m)).toBeLessThanOrEqual(1);
        } else if (FerryError.is(err)) expect(err.retryable).toBe(true);
      },
    );

    it('logs no message content (info and above)', () => {
      noMarkerIn(cap.lines, markers);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Transforms

export interface TransformSample {
  contentType: string;
  body: Buffer | string;
}

export interface TransformContractOptions {
  create(): MessageTransform | Promise<MessageTransform>;
  /** Messages the transform handles, each carrying `marker` somewhere in its content (a name, a note). */
  samples(marker: string): TransformSample[];
  /** Input it must refuse with a FerryError of kind `input` (never crash, never an invalid Bundle). */
  invalid?: TransformSample[];
}

function stored(s: TransformSample, i: number): StoredMessage & { body: Buffer } {
  const body = Buffer.isBuffer(s.body) ? s.body : Buffer.from(s.body, 'utf8');
  return {
    id: `contract-${i}`,
    seq: i + 1,
    sourceId: 'contract',
    contentType: s.contentType,
    body,
    headers: {},
    receivedAt: new Date('2026-01-01T00:00:00Z'),
    status: 'received',
  };
}

export function runTransformContract(name: string, o: TransformContractOptions): void {
  describe(`transform contract: ${name}`, () => {
    const cap = captureLogger('info');
    const marker = contractMarker(0);
    let t: MessageTransform;
    beforeAll(async () => {
      t = await o.create();
    });
    const ctx = () => ({ logger: cap.logger, reportIssue: () => undefined });

    it('handles each sample content type', () => {
      const samples = o.samples(marker);
      expect(samples.length).toBeGreaterThan(0);
      for (const s of samples) expect(t.canHandle(s.contentType)).toBe(true);
    });

    it('is deterministic: the same message gives the same Bundle', async () => {
      for (const [i, s] of o.samples(marker).entries()) {
        const a = await t.toFhir(stored(s, i), ctx());
        await new Promise((r) => setTimeout(r, 5));
        const b = await t.toFhir(stored(s, i), ctx());
        expect(JSON.stringify(b)).toBe(JSON.stringify(a));
      }
    });

    it('outputs valid FHIR R4 (the compiled validator)', async () => {
      for (const [i, s] of o.samples(marker).entries()) {
        const bundle = await t.toFhir(stored(s, i), ctx());
        expect(bundle.resourceType).toBe('Bundle');
        expect(
          validateBundle(bundle)?.issue?.filter((x) => x.severity === 'error' || x.severity === 'fatal') ?? [],
        ).toEqual([]);
      }
    });

    it('refuses bad input with an input error', async () => {
      const bad = o.invalid ?? [];
      for (const [i, s] of bad.entries()) {
        const err = await Promise.resolve()
          .then(() => t.toFhir(stored(s, 100 + i), { logger: silentLogger() }))
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(FerryError.is(err) && err.kind).toBe('input');
      }
    });

    it('logs no message content (info and above)', () => {
      noMarkerIn(cap.lines, [marker]);
    });
  });
}
