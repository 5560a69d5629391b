/**
 * `type: athena-fhir` sink: the FHIR writes athena's R4 API accepts. The captured
 * CapabilityStatement (reference 2.3) lists `QuestionnaireResponse` create; other types are read
 * only and are skipped (or refused with `strict: true`). Canonical references (identifier
 * references with the athena patient system, or REST ids) are mapped back to athena ids
 * (`Patient/a-{practiceid}.E-{patientid}`). A create is not idempotent and athena offers no
 * search to reconcile it, so a create whose outcome is unknown (timeout, 5xx) is failed
 * permanently for an operator to check rather than blindly repeated; a 429 is retried.
 */
import { inject, injectable } from 'tsyringe';
import {
  coreTokens,
  FerryError,
  permanentDeliveryError,
  retryableDeliveryError,
  type Delivery,
  type MessageSink,
  type SinkContext,
} from '@ferry/core';
import {
  AH_PATIENT_SYSTEM,
  AthenaConnection,
  vendorConnectionsToken,
  type VendorConnections,
  athenaConnectionSchema,
  athenaSystem,
} from '@ferry/fhir-vendor-kit';
import type { Reference, Resource } from '@medplum/fhirtypes';
import { AthenaFhirClient } from '../client/athena-fhir.client';
import { restPatientToFhirId } from '../to-fhir/athena-fhir-canonical';
import { defineSchema, type SchemaType } from '@ferry/core';

const listOfStrings = (v: unknown) => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new Error('must be a list of resource types');
};

export const athenaFhirSinkSchema = defineSchema({
  ...athenaConnectionSchema,
  writableTypes: {
    doc: 'Resource types created on athena FHIR (the API accepts QuestionnaireResponse)',
    format: listOfStrings,
    default: ['QuestionnaireResponse'] as string[],
  },
  strict: {
    doc: 'Fail a delivery that holds resources athena FHIR cannot write (default: skip them)',
    format: Boolean,
    default: false,
  },
});

export type AthenaFhirSinkConfig = SchemaType<typeof athenaFhirSinkSchema>;

@injectable()
export class AthenaFhirSink implements MessageSink {
  readonly conn: AthenaConnection;
  readonly fhir: AthenaFhirClient;
  private readonly cfg: AthenaFhirSinkConfig;
  lastCreated: string[] = [];

  constructor(
    @inject(coreTokens.SinkContext) private readonly ctx: SinkContext<AthenaFhirSinkConfig>,
    @inject(vendorConnectionsToken) shared?: VendorConnections,
  ) {
    this.cfg = ctx.config;
    this.conn = new AthenaConnection(ctx.config, ctx.logger, shared);
    this.fhir = new AthenaFhirClient(this.conn);
  }

  /** Canonical reference -> athena reference (`Patient/a-{p}.E-{id}`), or undefined when not mappable. */
  athenaReference(ref: Reference | undefined): Reference | undefined {
    if (!ref) return undefined;
    const p = this.conn.practiceId;
    if (ref.reference && /^Patient\/a-\d+\.E-\d+$/.test(ref.reference)) return { reference: ref.reference };
    const i = ref.identifier;
    if (i?.system === athenaSystem('patient', p) && i.value)
      return { reference: `Patient/${restPatientToFhirId(p, i.value)}` };
    if (i?.system === AH_PATIENT_SYSTEM && i.value) return { reference: `Patient/${i.value}` };
    return undefined;
  }

  /**
   * Deliveries whose create was abandoned with its outcome unknown (the engine aborted the attempt
   * at deliveryTimeoutMs, or the call timed out): the engine retries them, and a second POST could
   * create a second QuestionnaireResponse, so their next attempt fails permanently instead. Kept
   * in memory (the last 10,000), so it covers retries within this process run.
   */
  private readonly abandoned = new Set<string>();

  async deliver(delivery: Delivery): Promise<void> {
    if (this.abandoned.has(delivery.deliveryId))
      throw permanentDeliveryError(
        'ATHENA_FHIR_OUTCOME_UNKNOWN',
        'an earlier attempt of this delivery was abandoned before athena answered; the create may have happened and cannot be reconciled by a search, so it is not repeated',
        { deliveryId: delivery.deliveryId },
      );
    const created: string[] = [];
    let skipped = 0;
    for (const e of delivery.bundle.entry ?? []) {
      const r = e.resource as (Resource & { subject?: Reference; id?: string; meta?: unknown }) | undefined;
      if (!r) continue;
      if (!this.cfg.writableTypes.includes(r.resourceType)) {
        if (this.cfg.strict)
          throw permanentDeliveryError(
            'ATHENA_FHIR_NOT_WRITABLE',
            `athena FHIR does not accept ${r.resourceType} writes`,
          );
        skipped++;
        continue;
      }
      const body = structuredClone(r);
      delete body.id;
      delete body.meta;
      if ('subject' in body) {
        const mapped = this.athenaReference(body.subject);
        if (!mapped)
          throw permanentDeliveryError('ATHENA_FHIR_NO_PATIENT', `${r.resourceType}: subject is not an athena patient`);
        body.subject = mapped;
      }
      try {
        // The engine's signal: the attempt ran past deliveryTimeoutMs (the create is not retried meanwhile).
        const res = await this.fhir.create(body, delivery.signal);
        created.push(`${res.resourceType}/${res.id}`);
      } catch (err) {
        const fe = this.classify(err);
        if (delivery.signal?.aborted || fe.code === 'FERRY_E_DELIVERY_ATHENA_FHIR_OUTCOME_UNKNOWN') {
          this.abandoned.add(delivery.deliveryId);
          if (this.abandoned.size > 10_000) this.abandoned.delete(this.abandoned.values().next().value!);
        }
        throw fe;
      }
    }
    this.lastCreated = created;
    this.ctx.logger.info('athena FHIR writes done', {
      sink: this.ctx.id,
      deliveryId: delivery.deliveryId,
      created: created.length,
      skipped,
    });
  }

  private classify(e: unknown): FerryError {
    const fe = FerryError.from(e);
    const details = { ...(fe.details ?? {}), body: undefined, cause: fe.code };
    if (fe.details?.outcomeUnknown) {
      return permanentDeliveryError(
        'ATHENA_FHIR_OUTCOME_UNKNOWN',
        `${fe.message}; the create may have happened and cannot be reconciled by a search, so it is not repeated`,
        details,
        fe,
      );
    }
    return fe.retryable
      ? retryableDeliveryError('ATHENA_FHIR', fe.message, details, fe)
      : permanentDeliveryError('ATHENA_FHIR', fe.message, details, fe);
  }
}
