/** The vendor transform: one raw vendor resource message -> the canonical FHIR R4 bundle. */
import {
  defineSchema,
  inputError,
  type MessageHeaders,
  type SchemaType,
  type MessageTransform,
  type StoredMessage,
  type TransformContext,
} from '@ferry/core';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { normalizeResource, toCanonicalBundle, vendorHeaders, type VendorProfile } from '../normalize';

export function normalizeConfigSchema(defaultMrnSystems: string[]) {
  return defineSchema({
    mrnSystems: {
      doc: "Identifier systems holding the MRN at this organisation's tenant(s) (they differ per customer)",
      format: Array,
      default: defaultMrnSystems,
    },
    canonicalMrnSystem: {
      doc: 'The identifier system MRNs are re-labelled with in canonical FHIR',
      format: String,
      default: 'urn:ferry:id:mrn',
    },
  });
}

export type NormalizeConfig = SchemaType<ReturnType<typeof normalizeConfigSchema>>;

export abstract class VendorFhirTransform implements MessageTransform {
  abstract readonly name: string;
  protected readonly profile: VendorProfile;

  constructor(
    profile: Omit<VendorProfile, 'mrnSystems' | 'canonicalMrnSystem'>,
    cfg: Partial<NormalizeConfig> | undefined,
    defaults: NormalizeConfig,
  ) {
    this.profile = {
      ...profile,
      mrnSystems: cfg?.mrnSystems ?? defaults.mrnSystems,
      canonicalMrnSystem: cfg?.canonicalMrnSystem ?? defaults.canonicalMrnSystem,
    };
  }

  canHandle(contentType: string): boolean {
    return contentType.split(';')[0].trim().toLowerCase() === this.profile.contentType;
  }

  private parse(body: Buffer): Resource {
    try {
      return JSON.parse(body.toString('utf8'));
    } catch (e) {
      throw inputError('VENDOR_JSON', `${this.profile.vendor}: the message body is not JSON`, undefined, e);
    }
  }

  toFhir(message: StoredMessage & { body: Buffer }, ctx: TransformContext): Bundle {
    const prefix = message.headers?.idPrefix;
    const n = normalizeResource(
      this.parse(message.body),
      prefix && /^[A-Za-z0-9.]+$/.test(prefix) ? { ...this.profile, idPrefix: prefix } : this.profile,
    );
    if (n.replacedBy)
      ctx.logger.info(`${this.profile.vendor} patient merged into another record`, {
        messageId: message.id,
        patient: n.resource.id,
        replacedBy: n.replacedBy,
      });
    return toCanonicalBundle(n);
  }

  extractHeaders(body: Buffer): MessageHeaders {
    return vendorHeaders(this.parse(body), this.profile);
  }
}
