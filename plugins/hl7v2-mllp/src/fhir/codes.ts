import type { CodeableConcept, Coding } from '@medplum/fhirtypes';
import { CODE_MAPS } from './maps/codesystems.generated';

/**
 * The IG's concept maps (generated from ../shared/v2-to-fhir/mappings/codesystems, see
 * maps/codesystems.generated.ts). `mapCode('AdministrativeSex', 'F')` -> female.
 */
export function mapCode(map: string, v2code: string | undefined): { code: string; display?: string; system?: string } | undefined {
  if (!v2code) return undefined;
  const m = CODE_MAPS[map];
  if (!m) throw new Error(`unknown concept map ${map}`);
  const e = m.entries[v2code] ?? m.entries[v2code.toUpperCase()] ?? m.entries[v2code.trim()];
  if (!e) return undefined;
  return { code: e[0], display: e[1] || undefined, system: e[2] || undefined };
}

export function mappedCoding(map: string, v2code: string | undefined): Coding | undefined {
  const m = mapCode(map, v2code);
  if (!m) return undefined;
  const c: Coding = {};
  if (m.system) c.system = m.system;
  c.code = m.code;
  if (m.display) c.display = m.display;
  return c;
}

/** Adds the mapped coding first when the first v2 code is in the concept map (original codings kept). */
export function withMapped(cc: CodeableConcept | undefined, map: string): CodeableConcept | undefined {
  if (!cc?.coding?.length) return cc;
  const mapped = mappedCoding(map, cc.coding[0].code);
  if (!mapped) return cc;
  if (cc.coding.some((c) => c.system === mapped.system && c.code === mapped.code)) return cc;
  return { ...cc, coding: [mapped, ...cc.coding] };
}

export const V2_TABLE = (n: string) => `http://terminology.hl7.org/CodeSystem/v2-${n}`;
