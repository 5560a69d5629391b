/**
 * A third-party plugin defined only under test/: it proves a plugin works without touching core.
 * Content type `text/x-patient-csv`: one line `mrn,family,given,birthDate,gender` -> a Patient bundle.
 * Sink type `memory`: keeps delivered bundles in a process-wide list (for assertions), and can be
 * told to fail.
 */
import type { Bundle, Patient } from '@medplum/fhirtypes';
import { createHash } from 'node:crypto';
import { inject, injectable } from 'tsyringe';
import {
  coreTokens,
  definePlugin,
  defineErrors,
  type Delivery,
  type MessageHeaders,
  type MessageSink,
  type MessageTransform,
  type SinkContext,
  type StoredMessage,
} from '@ferry/core';

export const CSV_TYPE = 'text/x-patient-csv';

/** This plugin's own error codes, merged into Ferry's catalogue (FERRY_E_INPUT_CSV_SHAPE, …). */
const errors = defineErrors({
  INPUT_CSV_SHAPE: {
    kind: 'input',
    description: 'A csv-patient line is not mrn,family,given,birthDate,gender: fix the sender.',
  },
  DELIVERY_MEMORY_REFUSED: {
    kind: 'input',
    retryable: false,
    description: 'The memory sink was told to refuse (failMode: permanent).',
  },
  DELIVERY_MEMORY_DOWN: { kind: 'transient', description: 'The memory sink was told to fail (failFirst): retried.' },
});

@injectable()
export class CsvPatientTransform implements MessageTransform {
  readonly name = 'csv-patient';
  constructor(@inject(coreTokens.PluginConfig) private readonly config: { system: string }) {}
  canHandle(ct: string): boolean {
    return ct === CSV_TYPE;
  }
  private fields(body: Buffer): string[] {
    const line = body.toString('utf8').trim();
    const f = line.split(',');
    if (f.length !== 5 || !f[0]) throw errors.error('INPUT_CSV_SHAPE', 'expected mrn,family,given,birthDate,gender');
    return f;
  }
  extractHeaders(body: Buffer): MessageHeaders {
    const [mrn] = this.fields(body);
    return {
      messageType: 'CSV^PATIENT',
      controlId: createHash('sha1').update(body).digest('hex').slice(0, 12),
      orderingKey: `${this.config.system}|${mrn}`,
    };
  }
  split(body: Buffer): Buffer[] {
    return body
      .toString('utf8')
      .split(/\r?\n/)
      .filter((l) => l.trim())
      .map((l) => Buffer.from(l));
  }
  toFhir(message: StoredMessage & { body: Buffer }): Bundle {
    const [mrn, family, given, birthDate, gender] = this.fields(message.body);
    const patient: Patient = {
      resourceType: 'Patient',
      id: createHash('sha1').update(`${this.config.system}|${mrn}`).digest('hex').slice(0, 16),
      identifier: [{ system: this.config.system, value: mrn }],
      name: [{ family, given: [given] }],
      birthDate,
      gender: gender as Patient['gender'],
    };
    return {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ fullUrl: `urn:uuid:${patient.id}`, resource: patient }],
    };
  }
}

/** Process-wide record of what the memory sinks received, by sink id. */
export const memorySinkDeliveries = new Map<string, Delivery[]>();
/** Calls of a memory sink (`hangFirst`) that were told through their signal to give up, by sink id. */
export const memorySinkAborted = new Map<string, number>();

@injectable()
export class MemorySink implements MessageSink {
  private calls = 0;
  constructor(
    @inject(coreTokens.SinkContext)
    private readonly ctx: SinkContext<{ failFirst: number; failMode: string; delayMs: number; hangFirst: number }>,
  ) {}
  async deliver(d: Delivery): Promise<void> {
    this.calls++;
    if (this.calls <= this.ctx.config.hangFirst) {
      // Never answers by itself (a server that stopped mid-response); gives up when told to.
      await new Promise<void>((_, reject) =>
        d.signal?.addEventListener(
          'abort',
          () => (
            memorySinkAborted.set(this.ctx.id, (memorySinkAborted.get(this.ctx.id) ?? 0) + 1),
            reject(d.signal!.reason)
          ),
        ),
      );
    }
    if (this.ctx.config.delayMs) await new Promise((r) => setTimeout(r, this.ctx.config.delayMs));
    if (this.calls <= this.ctx.config.failFirst) {
      if (this.ctx.config.failMode === 'permanent')
        throw errors.error('DELIVERY_MEMORY_REFUSED', 'memory sink refuses (configured)');
      throw errors.error('DELIVERY_MEMORY_DOWN', 'memory sink unavailable (configured)');
    }
    const list = memorySinkDeliveries.get(this.ctx.id) ?? [];
    list.push(d);
    memorySinkDeliveries.set(this.ctx.id, list);
  }
}

export default definePlugin<{ system: string }>({
  manifest: { id: 'csv-patient', version: '1.0.0', engine: '>=0.1.0 <1' },
  configSchema: { system: { doc: 'Identifier system of the MRN', format: String, default: 'urn:test:mrn' } },
  register(reg) {
    reg.addTransform(CsvPatientTransform);
    reg.addSinkType('memory', MemorySink, {
      failFirst: { doc: 'Fail this many deliveries first', format: 'nat', default: 0 },
      failMode: { doc: 'retryable | permanent', format: ['retryable', 'permanent'], default: 'retryable' },
      delayMs: { doc: 'Take this long over each delivery (a slow downstream system)', format: 'nat', default: 0 },
      hangFirst: {
        doc: 'Never answer this many deliveries first (until their signal is aborted)',
        format: 'nat',
        default: 0,
      },
    });
  },
});
