/**
 * The FHIR facade's provider for Oracle Health (Cerner) connections (`kind: cerner`): the generic
 * vendor FHIR provider of @ferry/fhir-vendor-kit with Cerner's profile (content type, MRN system,
 * id prefix) and writable types. Cerner requires a patient on clinical searches (vendor-apis.md 4.3),
 * which the provider passes on as the client gives it. Updates (`PUT` with `If-Match`, a stale
 * version answered 409 `conflict`) on every type Millennium writes (4.3), Patient and Appointment included.
 */
import type { FacadeProviderRegistration } from '@ferry/core';
import {
  connectionSchema,
  VENDOR_FHIR_FACADE_PARAMS,
  vendorFhirFacadeProvider,
  type NormalizeConfig,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { CERNER_MRN_OID, CERNER_WRITE_TYPES, cernerProfile } from '../cerner-profile';

/** @param connections the engine's `VendorConnections` (absent: each provider has its own). */
export function cernerFacadeProvider(
  pluginConfig: Partial<NormalizeConfig>,
  connections?: () => VendorConnections,
): FacadeProviderRegistration {
  return vendorFhirFacadeProvider(
    {
      profile: cernerProfile,
      connections,
      params: VENDOR_FHIR_FACADE_PARAMS,
      writeTypes: CERNER_WRITE_TYPES.filter((t) => t !== 'Appointment' && t !== 'Encounter'),
      updateTypes: CERNER_WRITE_TYPES,
      updateNote: 'Millennium updates with If-Match; a stale version is 409 (vendor-apis.md 4.3)',
    },
    () => ({
      mrnSystems: pluginConfig.mrnSystems ?? [CERNER_MRN_OID],
      canonicalMrnSystem: pluginConfig.canonicalMrnSystem ?? cernerProfile.canonicalMrnSystem,
    }),
    connectionSchema({ method: 'client_secret_basic', refreshSkewSec: 120 }),
    { sourceTypes: ['cerner-fhir-poll', 'cerner-bulk-export'], sinkTypes: ['cerner-fhir-write'] },
  );
}
