/** Transform `epic-fhir`: Epic FHIR R4 resources to canonical FHIR R4 (the vendor kit's normaliser with Epic's profile). */
import { coreTokens } from '@ferry/core';
import { VendorFhirTransform, type NormalizeConfig } from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { epicProfile } from '../epic-profile';

@injectable()
export class EpicFhirTransform extends VendorFhirTransform {
  readonly name = 'epic-fhir';
  constructor(@inject(coreTokens.PluginConfig) cfg: Partial<NormalizeConfig>) {
    super(epicProfile, cfg, { mrnSystems: epicProfile.mrnSystems, canonicalMrnSystem: epicProfile.canonicalMrnSystem });
  }
}
