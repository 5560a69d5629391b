/**
 * Vendor FHIR R4 resource -> canonical FHIR R4 (Epic and Cerner):
 * - ids prefixed per vendor (`epic-<id>`, `cerner-<id>`) so two EHRs never collide, references
 *   rewritten the same way (absolute vendor URLs made relative);
 * - MRN identifiers recognised by the tenant's configured systems (Epic `urn:oid:1.2.840.114350…`,
 *   Cerner `urn:oid:2.16.840.1.113883.6.1000`) re-labelled with the canonical MRN system, typed
 *   v2-0203 `MR`, and put first (the FHIR sink keys conditional updates on the first identifier);
 * - vendor-proprietary codings kept beside the standard ones (LOINC, SNOMED…), untouched;
 * - merged patients (`active: false` + `link[type=replaced-by]`) surfaced in headers;
 * - vendor quirks that break R4 validation repaired (Cerner `telecom.rank` as a string, identifier
 *   values padded with spaces, empty strings);
 * - every resource passes Ferry's FHIR R4 validator (`validateFhirResource`, medplum's verdicts plus required
 *   bindings) or the message fails with the issues.
 */
import {
  ensureFhirDefinitions,
  inputError,
  resourceVersionKey,
  validateFhirResource,
  type MessageHeaders,
} from '@ferry/core';
import type { Bundle, Identifier, Resource } from '@medplum/fhirtypes';
import { createHash } from 'node:crypto';

export interface VendorProfile {
  vendor: 'epic' | 'cerner';
  /** Prefix of canonical ids. */
  idPrefix: string;
  /** Identifier systems that hold the MRN at this tenant. */
  mrnSystems: string[];
  /** The system MRNs get in canonical form. */
  canonicalMrnSystem: string;
  /** Message content type of raw vendor resources. */
  contentType: string;
}

export const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

export { ensureFhirDefinitions };

/** A valid FHIR id (`[A-Za-z0-9\-.]{1,64}`) for a vendor id; long or odd ids are hashed. */
export function canonicalId(prefix: string, id: string): string {
  const clean = id.replace(/[^A-Za-z0-9\-.]/g, '-');
  const candidate = `${prefix}-${clean}`;
  if (candidate.length <= 64 && clean === id) return candidate;
  return `${prefix}-${createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
}

const REF = /^(?:https?:\/\/[^\s]*?\/)?([A-Z][A-Za-z]+)\/([^/\s?#]+)(\/_history\/[^/\s]+)?$/;

function walk(node: unknown, fn: (o: Record<string, unknown>, key: string) => void): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(x, fn);
    return;
  }
  if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      fn(o, k);
      walk(o[k], fn);
    }
  }
}

/** Drop empty strings/arrays/objects the vendor sends (R4 forbids them). */
function prune(node: any): any {
  if (Array.isArray(node)) {
    const out = node.map(prune).filter((x) => x !== undefined);
    return out.length ? out : undefined;
  }
  if (node && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      const p = prune(v);
      if (p !== undefined) out[k] = p;
    }
    return Object.keys(out).length ? out : undefined;
  }
  if (typeof node === 'string' && node.trim() === '') return undefined;
  return node;
}

function isMrnIdentifier(i: Identifier, p: VendorProfile): boolean {
  return !!i.system && p.mrnSystems.includes(i.system);
}

export interface Normalized {
  resource: Resource;
  /** The patient's canonical reference (Patient itself or its subject), for ordering. */
  patientRef?: string;
  /** For a merged-away patient: the canonical reference of the surviving record. */
  replacedBy?: string;
  vendorId: string;
}

export function normalizeResource(raw: Resource, p: VendorProfile): Normalized {
  if (!raw || typeof raw !== 'object' || typeof (raw as Resource).resourceType !== 'string')
    throw inputError('VENDOR_RESOURCE', `${p.vendor}: the message is not a FHIR resource`);
  const r = prune(structuredClone(raw)) as any;
  const vendorId: string = r.id ?? '';
  if (r.id) r.id = canonicalId(p.idPrefix, r.id);
  // Server-managed fields of the vendor; keep the vendor version as a tag for traceability.
  const vendorVersion = r.meta?.versionId;
  if (r.meta) {
    delete r.meta.versionId;
    delete r.meta.lastUpdated;
  }
  r.meta = {
    ...(r.meta ?? {}),
    tag: [
      ...(r.meta?.tag ?? []),
      { system: 'urn:ferry:source-vendor', code: p.vendor },
      ...(vendorVersion ? [{ system: `urn:ferry:${p.vendor}:version`, code: String(vendorVersion) }] : []),
    ],
  };
  if (!Object.keys(r.meta).length) delete r.meta;

  walk(r, (o, k) => {
    const v = o[k];
    if (k === 'reference' && typeof v === 'string' && !v.startsWith('#') && !v.startsWith('urn:')) {
      const m = REF.exec(v);
      if (m) o[k] = `${m[1]}/${canonicalId(p.idPrefix, decodeURIComponent(m[2]))}`;
    }
    // A reference that carries the patient's MRN (Reference.identifier): re-labelled like the
    // Patient's own MRN, so the FHIR sink can resolve it on the target server by identifier.
    if (
      k === 'identifier' &&
      v &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      (typeof o.reference === 'string' || typeof o.type === 'string')
    ) {
      const i = v as Identifier;
      if (isMrnIdentifier(i, p))
        o[k] = {
          ...i,
          system: p.canonicalMrnSystem,
          ...(typeof i.value === 'string' ? { value: i.value.trim() } : {}),
        };
    }
    // Cerner sends telecom.rank as a string.
    if (k === 'rank' && typeof v === 'string' && /^\d+$/.test(v)) o[k] = Number(v);
  });

  if (Array.isArray(r.identifier)) {
    const ids: Identifier[] = r.identifier.map((i: Identifier) =>
      typeof i.value === 'string' ? { ...i, value: i.value.trim() } : i,
    );
    const mrn: Identifier[] = [];
    const rest: Identifier[] = [];
    for (const i of ids) {
      if (isMrnIdentifier(i, p)) {
        const codings = i.type?.coding ?? [];
        const type = codings.some((c) => c.system === V2_0203 && c.code === 'MR')
          ? i.type
          : {
              ...(i.type ?? {}),
              coding: [{ system: V2_0203, code: 'MR', display: 'Medical record number' }, ...codings],
              text: i.type?.text ?? 'MRN',
            };
        mrn.push({ ...i, system: p.canonicalMrnSystem, type });
      } else rest.push(i);
    }
    r.identifier = [...mrn, ...rest];
  }

  let replacedBy: string | undefined;
  if (r.resourceType === 'Patient') {
    const link = (r.link ?? []).find((l: any) => l.type === 'replaced-by');
    if (link?.other?.reference) replacedBy = link.other.reference;
  }
  const patientRef =
    r.resourceType === 'Patient'
      ? `Patient/${r.id}`
      : (r.subject?.reference ?? r.patient?.reference)?.startsWith('Patient/')
        ? (r.subject?.reference ?? r.patient?.reference)
        : undefined;

  const issues = validateFhirResource(r);
  if (issues.length) {
    const outcome = { resourceType: 'OperationOutcome' as const, issue: issues };
    const where = issues
      .map((i) => `${i.code}${i.expression?.length ? ` @ ${i.expression.join(',')}` : ''}`)
      .slice(0, 5)
      .join('; ');
    throw inputError(
      'VENDOR_RESOURCE_INVALID',
      `${p.vendor} ${r.resourceType} does not validate as FHIR R4 after normalisation: ${where}`,
      { outcome },
    );
  }
  return { resource: r as Resource, patientRef, replacedBy, vendorId };
}

/** The canonical bundle of one vendor resource. */
export function toCanonicalBundle(n: Normalized): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ fullUrl: `${n.resource.resourceType}/${n.resource.id}`, resource: n.resource }],
  };
}

/** Headers of a raw vendor resource message (routing, ordering, duplicates). */
export function vendorHeaders(raw: any, p: VendorProfile, sendingFacility?: string): MessageHeaders {
  const type = String(raw?.resourceType ?? 'Unknown');
  const id = String(raw?.id ?? '');
  // Epic often sends neither versionId nor lastUpdated: the version is then a digest of the content
  // (core vendor kit), so an amended resource is a new message and an unchanged re-read a duplicate.
  const version = resourceVersionKey(raw);
  const ref: string | undefined =
    type === 'Patient' ? `Patient/${id}` : (raw?.subject?.reference ?? raw?.patient?.reference);
  const m = ref ? REF.exec(ref) : null;
  const h: MessageHeaders = {
    messageType: type,
    controlId: `${type}/${id}/_history/${version}`,
    sendingApplication: p.vendor,
    ...(sendingFacility ? { sendingFacility } : {}),
    // The canonical id prefix of the tenant the resource came from (read by the transform).
    idPrefix: p.idPrefix,
  };
  if (m && m[1] === 'Patient') h.orderingKey = `Patient/${canonicalId(p.idPrefix, decodeURIComponent(m[2]))}`;
  if (type === 'Patient') {
    const link = (raw?.link ?? []).find((l: any) => l?.type === 'replaced-by');
    const other = link?.other?.reference ? REF.exec(link.other.reference) : null;
    if (other) {
      h.trigger = 'replaced-by';
      h.replacedBy = `Patient/${canonicalId(p.idPrefix, decodeURIComponent(other[2]))}`;
    }
  }
  return h;
}
