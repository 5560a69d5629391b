import type { CodeableConcept, Coding } from '@medplum/fhirtypes';
import { CODE_MAPS } from './maps/codesystems.generated';

/**
 * The IG's concept maps (generated from ../shared/v2-to-fhir/mappings/codesystems, see
 * maps/codesystems.generated.ts). `mapCode('AdministrativeSex', 'F')` -> female.
 */
type Mapped = { readonly code: string; readonly display?: string; readonly system?: string };
const compiled = new Map<string, Map<string, Mapped>>();
function compile(map: string): Map<string, Mapped> {
  let c = compiled.get(map);
  if (c) return c;
  const m = CODE_MAPS[map];
  if (!m) throw new Error(`unknown concept map ${map}`);
  c = new Map();
  for (const [k, e] of Object.entries(m.entries)) {
    const v: Mapped = Object.freeze({
      code: e[0],
      ...(e[1] ? { display: e[1] } : {}),
      ...(e[2] ? { system: e[2] } : {}),
    });
    c.set(k, v);
    if (!c.has(k.toUpperCase())) c.set(k.toUpperCase(), v);
    if (!c.has(k.trim())) c.set(k.trim(), v);
  }
  compiled.set(map, c);
  return c;
}

export function mapCode(map: string, v2code: string | undefined): Mapped | undefined {
  if (!v2code) return undefined;
  const c = compile(map);
  return c.get(v2code) ?? c.get(v2code.trim().toUpperCase());
}

/**
 * A v2 value sent as words instead of a code (`Mother`, `Emergency Contact`) -> the concept map entry whose
 * FHIR display is the same words (case and blanks ignored); undefined when none matches.
 */
const byDisplay = new Map<string, Map<string, Mapped>>();
export function mapDisplay(map: string, text: string | undefined): Mapped | undefined {
  if (!text) return undefined;
  let d = byDisplay.get(map);
  if (!d) {
    d = new Map();
    for (const v of compile(map).values()) if (v.display) d.set(norm(v.display), v);
    byDisplay.set(map, d);
  }
  return d.get(norm(text));
}
const norm = (s: string) => s.trim().replace(/\s+/g, ' ').toLowerCase();

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
