/**
 * The FHIR facade's provider for Epic connections (`kind: epic`): the vendor kit's generic FHIR R4
 * provider with Epic's profile (content type, MRN system, id prefix), writable types and required
 * search shapes (Appointment searches carry `service-category=appointment`, vendor-apis.md 3.3).
 * Updates (`PUT`) only where the reference lists Epic's update ("CRU"): Observation and
 * DocumentReference; Patient is read/search/create and Appointment read/search there, so a `PUT`
 * of either is `not-supported` (501), as is `$book` (no scheduling write in the reference).
 */
import type { FacadeProviderRegistration } from '@ferry/core';
import {
  connectionSchema,
  VENDOR_FHIR_FACADE_PARAMS,
  vendorFhirFacadeProvider,
  type NormalizeConfig,
  type VendorConnections,
} from '@ferry/fhir-vendor-kit';
import { EPIC_SANDBOX_MRN_OID, EPIC_WRITE_TYPES, epicProfile } from '../epic-profile';

/** @param connections the engine's `VendorConnections` (absent: each provider has its own). */
export function epicFacadeProvider(
  pluginConfig: Partial<NormalizeConfig>,
  connections?: () => VendorConnections,
): FacadeProviderRegistration {
  return vendorFhirFacadeProvider(
    {
      profile: epicProfile,
      connections,
      params: VENDOR_FHIR_FACADE_PARAMS,
      writeTypes: EPIC_WRITE_TYPES,
      updateTypes: ['Observation', 'DocumentReference'],
      updateNote: 'Epic lists update for Observation and DocumentReference only (vendor-apis.md 3.3)',
      defaults: { Appointment: { 'service-category': 'appointment' } },
    },
    () => ({
      mrnSystems: pluginConfig.mrnSystems ?? [EPIC_SANDBOX_MRN_OID],
      canonicalMrnSystem: pluginConfig.canonicalMrnSystem ?? epicProfile.canonicalMrnSystem,
    }),
    connectionSchema({ method: 'private_key_jwt', refreshSkewSec: 120 }),
    { sourceTypes: ['epic-fhir-poll', 'epic-bulk-export'], sinkTypes: ['epic-fhir-write'] },
  );
}
