import 'reflect-metadata';
import {
  type ContentDefinitions,
  type FromFhirOptions,
  type MessageHeaders,
  type MessageTransform,
  type StoredMessage,
  type TransformContext,
  ContentType,
  FerryError,
  coreTokens,
} from '@ferry/core';
import type { Bundle } from '@medplum/fhirtypes';
import { inject, injectable } from 'tsyringe';
import { splitHl7Batch } from '../hl7v2/batch';
import { decodeHl7Bytes } from '../hl7v2/charset';
import { SEGMENT_FIELD_DEFINITIONS, TYPE_COMPONENT_DEFINITIONS } from '../hl7v2/definitions.generated';
import { headersOf } from '../hl7v2/headers';
import { parseHl7 } from '../hl7v2/parser';
import { type ConversionOptions, conversionOptions } from '../v2-to-fhir/conversion.schema';
import { convertMessage } from '../v2-to-fhir/convert';
import type { IssueReporter } from '../v2-to-fhir/quality';
import { FhirToV2, unresolvedPatientReferences } from '../fhir-to-v2/fhir-to-v2';
import { receiverProfile } from '../fhir-to-v2/profile';

const NO_PROFILE = {};

/** The plugin config as the transform reads it (`plugins.hl7v2-mllp`); only `conversion` is used here. */
export interface Hl7v2TransformConfig {
  conversion?: Partial<ConversionOptions>;
}

/**
 * `application/hl7-v2` -> canonical FHIR R4 Bundle. Reads with Ferry's fast parser and maps with
 * the v2-to-FHIR IG maps (see CONVERSION.md).
 */
@injectable()
export class Hl7v2Transform implements MessageTransform {
  readonly name = 'hl7v2-to-fhir';
  readonly options: ConversionOptions;

  constructor(@inject(coreTokens.PluginConfig) config?: Hl7v2TransformConfig) {
    this.options = conversionOptions(config?.conversion);
  }

  canHandle(contentType: string): boolean {
    return contentType.split(';')[0].trim().toLowerCase() === ContentType.hl7v2;
  }

  /** Field and component names and data types from the v2-to-FHIR IG's tables (hl7v2/definitions.generated.ts). */
  definitions(): ContentDefinitions {
    return { segments: SEGMENT_FIELD_DEFINITIONS, types: TYPE_COMPONENT_DEFINITIONS };
  }

  extractHeaders(body: Buffer): MessageHeaders {
    return headersOf(parseHl7(decodeHl7Bytes(body, this.options.charsetFallback).text));
  }

  split(body: Buffer): Buffer[] {
    return splitHl7Batch(body);
  }

  toFhir(message: StoredMessage & { body: Buffer }, ctx?: TransformContext): Bundle {
    const report = ctx?.reportIssue;
    return this.convert(message.body, report ? (i) => report.call(ctx, i) : undefined, message.sourceId);
  }

  readonly outputFormats = ['hl7v2'] as const;

  /**
   * Canonical Bundle -> HL7 v2 message text(s) (`ferry convert --to hl7v2`, the file and http sinks'
   * `format: hl7v2`; see FHIR-TO-V2.md). One converter per profile object (a sink's profile is checked once).
   */
  fromFhir(bundle: Bundle, opts: FromFhirOptions): string[] {
    if (opts.format !== 'hl7v2')
      throw new FerryError('INPUT_FORMAT', `hl7v2-to-fhir writes hl7v2, not ${opts.format}`, { kind: 'input' });
    const key = typeof opts.profile === 'object' && opts.profile ? opts.profile : NO_PROFILE;
    let conv = this.writers.get(key);
    if (!conv) {
      conv = new FhirToV2(opts.profile);
      this.writers.set(key, conv);
    }
    return conv.convert(bundle, { controlIdSeed: opts.seed, now: opts.now }).map((m) => m.text);
  }

  private readonly writers = new WeakMap<object, FhirToV2>();

  /** The Patient references PID needs that the Bundle lacks (see `unresolvedPatientReferences`). */
  missingReferences(bundle: Bundle, format: string): string[] {
    return format === 'hl7v2' ? unresolvedPatientReferences(bundle) : [];
  }

  /** The receiver profile's problems, each by its path inside the profile (the config loader reports them). */
  outputProfileProblems(format: string, profile: unknown): { path: string; message: string }[] {
    if (format !== 'hl7v2') return [{ path: '', message: `hl7v2-to-fhir writes hl7v2, not ${format}` }];
    try {
      receiverProfile(profile);
      return [];
    } catch (e) {
      const listed = (e as FerryError).details?.problems as { path: string; message: string }[] | undefined;
      return listed?.length ? listed : [{ path: '', message: (e as Error).message }];
    }
  }

  /**
   * Bytes of one message -> Bundle (no store needed: used by `ferry convert` and the bench). With
   * `report`, each value the conversion cannot use is reported (see quality.ts). `sourceId` picks the
   * source's zone from `sourceTimezones` for times sent without an offset.
   */
  convert(body: Buffer, report?: IssueReporter, sourceId?: string): Bundle {
    const msg = parseHl7(decodeHl7Bytes(body, this.options.charsetFallback).text);
    try {
      return convertMessage(msg, this.options, sourceId, report);
    } catch (e) {
      if (e instanceof FerryError) throw e;
      // a bug in a map must not look like bad input: internal, not retryable, no message text in the error
      throw new FerryError('INTERNAL_HL7_CONVERSION', `HL7 v2 -> FHIR conversion failed: ${(e as Error).message}`, {
        kind: 'internal',
        retryable: false,
        cause: e,
        details: { messageType: `${msg.msh.get(9, 0, 1)}^${msg.msh.get(9, 0, 2)}`, controlId: msg.msh.get(10) },
      });
    }
  }
}
