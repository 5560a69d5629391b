/** Transform `cerner-fhir`: Cerner FHIR R4 resources to canonical FHIR R4 (the vendor kit's normaliser with Cerner's profile). */
import { coreTokens } from '@ferry/core';
import { VendorFhirTransform, type NormalizeConfig } from '@ferry/fhir-vendor-kit';
import { inject, injectable } from 'tsyringe';
import { cernerProfile } from '../cerner-profile';

@injectable()
export class CernerFhirTransform extends VendorFhirTransform {
  readonly name = 'cerner-fhir';
  constructor(@inject(coreTokens.PluginConfig) cfg: Partial<NormalizeConfig>) {
    super(cernerProfile, cfg, {
      mrnSystems: cernerProfile.mrnSystems,
      canonicalMrnSystem: cernerProfile.canonicalMrnSystem,
    });
  }
}
