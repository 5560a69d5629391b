/**
 * athena FHIR R4 resource -> canonical FHIR R4 (reference 2.2, 2.6).
 *
 * - The athena id scheme (`a-{practiceid}.E-{patientid}`, `a-{p}.Department-{id}`, ...) is mapped
 *   both ways: `parseAthenaFhirId` / `athenaFhirId`.
 * - Identifier systems are normalised to the canonical ones the athena-rest transform produces
 *   (`urn:athenahealth:athenanet:patient:{p}` first, then athena's own `https://fhir.athena.io/sid/...`),
 *   so a patient read through REST or FHIR lands on the same target resource.
 * - References to athena resources become identifier references (canonical form).
 * - athena `ah-*` extensions (brand, chart-sharing group, provider group, department) are dropped
 *   or kept (`athenaExtensions: drop | keep`).
 */
import { inputError, resourceVersionKey, validateBundle, type MessageHeaders } from '@ferry/core';
import { athenaSystem, stableUuid } from '@ferry/fhir-vendor-kit';
import type { Bundle, BundleEntry, Identifier, Resource } from '@medplum/fhirtypes';

export const ATHENA_FHIR_CONTENT_TYPE = 'application/vnd.athena.fhir+json';
const AH_SID = 'https://fhir.athena.io/sid/';
const AH_EXT = 'https://fhir.athena.io/StructureDefinition/';

/** What the athena-fhir source stores. */
export interface AthenaFhirEnvelope {
  practiceid: string;
  resource: Resource;
  /** `drop` (default) or `keep` athena `ah-*` extensions. */
  athenaExtensions?: 'drop' | 'keep';
}

export interface AthenaFhirId {
  practiceId: string;
  /** `E` (patient), `Department`, `Practice`, `encounter`, `resultamb`... */
  kind: string;
  localId: string;
}

/** `a-195900.E-1` -> { practiceId: '195900', kind: 'E', localId: '1' }; `a-1.Practice-195900` -> practice org. */
export function parseAthenaFhirId(id: string): AthenaFhirId | undefined {
  const m = /^a-(\d+)\.([A-Za-z]+)-([A-Za-z0-9.-]+)$/.exec(id);
  if (!m) return undefined;
  if (m[1] === '1' && m[2] === 'Practice') return { practiceId: m[3], kind: 'Practice', localId: m[3] };
  return { practiceId: m[1], kind: m[2], localId: m[3] };
}

export function athenaFhirId(practiceId: string, kind: string, localId: string): string {
  return kind === 'Practice' ? `a-1.Practice-${localId}` : `a-${practiceId}.${kind}-${localId}`;
}

/** REST patient id -> FHIR Patient id, and back. */
export const restPatientToFhirId = (practiceId: string, patientId: string | number) =>
  athenaFhirId(practiceId, 'E', String(patientId));
export function fhirPatientToRestId(id: string): { practiceId: string; patientId: string } | undefined {
  const p = parseAthenaFhirId(id.replace(/^Patient\//, ''));
  return p && p.kind === 'E' ? { practiceId: p.practiceId, patientId: p.localId } : undefined;
}

const safeId = (s: string) => s.replace(/[^A-Za-z0-9\-.]/g, '-').slice(0, 64);

/** The canonical identifier for an athena resource id (REST systems where one exists). */
function canonicalIdentifier(type: string, id: AthenaFhirId): Identifier {
  if (id.kind === 'E') return { system: athenaSystem('patient', id.practiceId), value: id.localId };
  if (id.kind === 'Department') return { system: athenaSystem('department', id.practiceId), value: id.localId };
  return { system: `${AH_SID}ah-${type.toLowerCase()}`, value: athenaFhirId(id.practiceId, id.kind, id.localId) };
}

function rewriteReferences(node: unknown, practiceId: string): unknown {
  if (Array.isArray(node)) return node.map((x) => rewriteReferences(x, practiceId));
  if (!node || typeof node !== 'object') return node;
  const obj = node as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[k] = rewriteReferences(v, practiceId);
  if (typeof obj.reference === 'string') {
    const m = /^(?:.*\/)?([A-Z][A-Za-z]+)\/(a-\d+\.[A-Za-z]+-[A-Za-z0-9.-]+)$/.exec(obj.reference);
    const parsed = m ? parseAthenaFhirId(m[2]) : undefined;
    if (m && parsed) {
      delete out.reference;
      out.type = m[1];
      out.identifier = canonicalIdentifier(m[1], parsed);
    }
  }
  return out;
}

/** One athena FHIR resource in canonical form (not validated). */
export function athenaFhirToCanonical(env: AthenaFhirEnvelope): Resource {
  const src = env.resource as Resource & { identifier?: Identifier[]; extension?: { url: string }[] };
  if (!src?.resourceType || !src.id)
    throw inputError('ATHENA_FHIR_NO_ID', 'athena FHIR resource without resourceType/id');
  const parsed = parseAthenaFhirId(src.id);
  const practiceId = parsed?.practiceId ?? env.practiceid;
  const res = rewriteReferences(structuredClone(src), practiceId) as Resource & {
    identifier?: Identifier[];
    extension?: { url: string }[];
    meta?: unknown;
  };
  delete res.meta;
  if ((env.athenaExtensions ?? 'drop') === 'drop' && res.extension) {
    res.extension = res.extension.filter((e) => !e.url.startsWith(AH_EXT));
    if (!res.extension.length) delete res.extension;
  }
  // Identifiers: the canonical one first, athena's own kept, no duplicates.
  const ids: Identifier[] = [];
  const push = (i: Identifier) => {
    if (i.value && !ids.some((x) => x.system === i.system && x.value === i.value)) ids.push(i);
  };
  if (parsed) {
    const canon = canonicalIdentifier(src.resourceType, parsed);
    push(
      src.resourceType === 'Patient'
        ? {
            use: 'usual',
            ...canon,
            type: {
              coding: [
                {
                  system: 'http://terminology.hl7.org/CodeSystem/v2-0203',
                  code: 'MR',
                  display: 'Medical record number',
                },
              ],
            },
          }
        : canon,
    );
    push({ system: `${AH_SID}ah-${src.resourceType.toLowerCase()}`, value: src.id });
  }
  for (const i of res.identifier ?? []) push(i);
  if (!ids.length) push({ system: `${AH_SID}ah-${src.resourceType.toLowerCase()}`, value: src.id });
  res.identifier = ids;
  const kindWord = src.resourceType === 'Patient' ? 'patient' : src.resourceType.toLowerCase();
  res.id = safeId(
    parsed
      ? `athena-${practiceId}-${kindWord}-${parsed.kind === 'E' ? '' : `${parsed.kind}-`}${parsed.localId}`.replace(
          '--',
          '-',
        )
      : `athena-${practiceId}-${src.id}`,
  );
  return res;
}

export function parseFhirEnvelope(body: Buffer): AthenaFhirEnvelope {
  let env: any;
  try {
    env = JSON.parse(body.toString('utf8'));
  } catch {
    throw inputError('ATHENA_FHIR_NOT_JSON', 'athena FHIR message body is not JSON');
  }
  if (!env || typeof env.resource !== 'object' || !env.resource?.resourceType)
    throw inputError('ATHENA_FHIR_BAD_ENVELOPE', 'athena FHIR message must be { practiceid, resource }');
  return { ...env, practiceid: String(env.practiceid ?? '') };
}

export function athenaFhirToBundle(env: AthenaFhirEnvelope): Bundle {
  const res = athenaFhirToCanonical(env) as Resource & { identifier: Identifier[] };
  const key = res.identifier[0];
  const entry: BundleEntry = {
    fullUrl: `urn:uuid:${stableUuid(`${key.system}|${key.value}`)}`,
    resource: res,
    request: {
      method: 'PUT',
      url: `${res.resourceType}?identifier=${encodeURIComponent(`${key.system}|${key.value}`)}`,
    },
  };
  const bundle: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: [entry] };
  const outcome = validateBundle(bundle);
  if (outcome?.issue?.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
    throw inputError(
      'ATHENA_FHIR_INVALID',
      `canonical ${res.resourceType} failed FHIR validation: ${outcome.issue.length} issue(s)`,
      { outcome },
    );
  }
  return bundle;
}

export function athenaFhirHeaders(env: AthenaFhirEnvelope): MessageHeaders {
  const r = env.resource as Resource & {
    meta?: { versionId?: string; lastUpdated?: string };
    subject?: { reference?: string };
    patient?: { reference?: string };
  };
  const parsed = parseAthenaFhirId(r.id ?? '');
  const p = parsed?.practiceId ?? env.practiceid;
  // versionId, else lastUpdated, else a digest of the content (core vendor kit): every version its own control id.
  const version = resourceVersionKey(r);
  const patientRef = r.resourceType === 'Patient' ? `Patient/${r.id}` : (r.subject?.reference ?? r.patient?.reference);
  const patient = patientRef ? fhirPatientToRestId(patientRef.replace(/^.*\/(Patient\/)/, '$1')) : undefined;
  return {
    messageType: `athena.fhir.${r.resourceType}`,
    controlId: `${r.resourceType}/${r.id}/${version}`,
    sendingApplication: 'athenaOne-FHIR',
    sendingFacility: p,
    orderingKey: patient
      ? `${athenaSystem('patient', patient.practiceId)}|${patient.patientId}`
      : `athena:${p}:${r.resourceType}/${r.id}`,
  };
}
