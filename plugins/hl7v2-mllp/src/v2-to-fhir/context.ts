import * as crypto from 'node:crypto';

// crypto.hash (one-shot, Node >= 20.12) is several times cheaper than createHash per id
const sha1hex: (s: string) => string =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (s) => (crypto as unknown as { hash: (alg: string, data: string, enc: string) => string }).hash('sha1', s, 'hex')
    : (s) => crypto.createHash('sha1').update(s).digest('hex');
import type { Bundle, BundleEntry, Reference, Resource } from '@medplum/fhirtypes';
import { identifierParam } from '@ferry/core';
import type { ConversionOptions } from './conversion.schema';

/** Deterministic UUID (v5-style layout) from a key: the same source identifiers give the same id. */
const uuidCache = new Map<string, string>();
export function stableUuid(key: string): string {
  let u = uuidCache.get(key);
  if (u === undefined) {
    u = uuidOf(key);
    if (uuidCache.size >= 20000) uuidCache.clear(); // bounded: shared ids (practitioners, locations) repeat across messages
    uuidCache.set(key, u);
  }
  return u;
}

/** Deterministic UUID without the cache (message-local keys never repeat). */
export function uuidOf(key: string): string {
  const h = sha1hex(key);
  const v = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${v}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * `urn:uuid:<id>`, one string per id: the entry's fullUrl and every reference to the resource share it.
 * Each reference used to build its own copy (a concatenation V8 keeps as a two-part string until something
 * reads its characters), so the validator's format check, the Bundle's serialization and the store paid
 * for each copy again (≈ 87 references and 39 fullUrls per corpus message, 39 distinct).
 */
const urlCache = new Map<string, string>();
export function uuidUrl(id: string): string {
  let u = urlCache.get(id);
  if (u === undefined) {
    u = `urn:uuid:${id}`;
    if (urlCache.size >= 20000) urlCache.clear(); // bounded, as uuidCache
    urlCache.set(id, u);
  }
  return u;
}

type AnyResource = Resource & { id?: string };

/**
 * Collects the resources of one message. Ids are deterministic (from source identifiers when
 * there are, else from the message's control id and the segment position), each entry is a
 * `PUT <type>/<id>` with fullUrl `urn:uuid:<id>`, and references point at those fullUrls, so they
 * resolve inside the Bundle and a FHIR server's transaction keeps the ids.
 */
export class BundleBuilder {
  private readonly entries: BundleEntry[] = [];
  private readonly byUrl = new Map<string, BundleEntry>();

  constructor(readonly messageKey: string) {}

  /** Id for a resource of `type` identified by `key` (source identifiers) or by a message-local key. */
  idFor(type: string, key: string, local = false): string {
    return local ? uuidOf(`${type}|${this.messageKey}|${key}`) : stableUuid(`${type}|${key}`);
  }

  /** Adds the resource (or returns the one already there with the same id). */
  add<T extends AnyResource>(resource: T): T {
    const url = uuidUrl(resource.id!);
    const prev = this.byUrl.get(url);
    // already there: the first one wins; already deleted in this message: stays a DELETE (the object is detached)
    if (prev) return (prev.resource ?? resource) as T;
    const entry: BundleEntry = {
      fullUrl: url,
      resource,
      request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
    };
    this.entries.push(entry);
    this.byUrl.set(url, entry);
    return resource;
  }

  get(id: string): AnyResource | undefined {
    return this.byUrl.get(uuidUrl(id))?.resource as AnyResource | undefined;
  }

  /**
   * Turns the entry into a DELETE (A23/A29, PRB delete...): a conditional delete on the resource's
   * first identifier when it has one (the target server's id for it is not ours), else by id.
   */
  markDelete(resource: AnyResource): void {
    const e = this.byUrl.get(uuidUrl(resource.id!));
    if (!e) return;
    const ident = (resource as { identifier?: { system?: string; value?: string }[] }).identifier?.find(
      (i) => i?.system && i?.value,
    );
    delete e.resource;
    e.request = {
      method: 'DELETE',
      url: ident
        ? `${resource.resourceType}?${identifierParam(ident.system!, ident.value!)}`
        : `${resource.resourceType}/${resource.id}`,
    };
  }

  resources(): AnyResource[] {
    return this.entries.filter((e) => e.resource).map((e) => e.resource as AnyResource);
  }

  unshift(resource: AnyResource): void {
    const url = uuidUrl(resource.id!);
    const entry: BundleEntry = {
      fullUrl: url,
      resource,
      request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
    };
    this.entries.unshift(entry);
    this.byUrl.set(url, entry);
  }

  build(id: string, timestamp?: string): Bundle {
    const b: Bundle = { resourceType: 'Bundle', id, type: 'transaction', entry: this.entries };
    if (timestamp) b.timestamp = timestamp;
    return b;
  }
}

export function ref(r: AnyResource, display?: string): Reference<any> {
  const out: Reference<any> = { reference: uuidUrl(r.id!) };
  if (display) out.display = display;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Systems

/** HL7 coding-system names (table 0396 and common ones) -> FHIR URIs. */
export const CODE_SYSTEMS: Record<string, string> = {
  LN: 'http://loinc.org',
  LOINC: 'http://loinc.org',
  SCT: 'http://snomed.info/sct',
  SNM: 'http://snomed.info/sct',
  SNOMED: 'http://snomed.info/sct',
  SNOMEDCT: 'http://snomed.info/sct',
  I9: 'http://hl7.org/fhir/sid/icd-9-cm',
  I9C: 'http://hl7.org/fhir/sid/icd-9-cm',
  I9CDX: 'http://hl7.org/fhir/sid/icd-9-cm',
  I10: 'http://hl7.org/fhir/sid/icd-10',
  'I10-CM': 'http://hl7.org/fhir/sid/icd-10-cm',
  I10C: 'http://hl7.org/fhir/sid/icd-10-cm',
  ICD10CM: 'http://hl7.org/fhir/sid/icd-10-cm',
  I10P: 'http://www.cms.gov/Medicare/Coding/ICD10',
  C4: 'http://www.ama-assn.org/go/cpt',
  CPT: 'http://www.ama-assn.org/go/cpt',
  CPT4: 'http://www.ama-assn.org/go/cpt',
  HCPCS: 'urn:oid:2.16.840.1.113883.6.285',
  CVX: 'http://hl7.org/fhir/sid/cvx',
  MVX: 'http://hl7.org/fhir/sid/mvx',
  NDC: 'http://hl7.org/fhir/sid/ndc',
  RXNORM: 'http://www.nlm.nih.gov/research/umls/rxnorm',
  RXN: 'http://www.nlm.nih.gov/research/umls/rxnorm',
  UCUM: 'http://unitsofmeasure.org',
  UCUMS: 'http://unitsofmeasure.org',
  ISO3166_1: 'urn:iso:std:iso:3166',
  ISO3166_2: 'urn:iso:std:iso:3166:-2',
  ISO4217: 'urn:iso:std:iso:4217',
  ISO639: 'urn:ietf:bcp:47',
  NUCC: 'http://nucc.org/provider-taxonomy',
  NPI: 'http://hl7.org/fhir/sid/us-npi',
  CDCREC: 'urn:oid:2.16.840.1.113883.6.238',
  NCIT: 'http://ncimeta.nci.nih.gov',
  FDDC: 'urn:oid:2.16.840.1.113883.6.63',
};

const OID = /^[0-2](\.(0|[1-9]\d*))+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const URI = /^[a-z][a-z0-9+.-]*:\S+$/i;

export class Systems {
  private readonly codeCache = new Map<string, string | undefined>();
  constructor(private readonly opts: ConversionOptions) {}

  /** A coding system name (CWE-3) -> URI; undefined for an empty name. */
  code(name: string | undefined): string | undefined {
    if (!name) return undefined;
    if (this.codeCache.has(name)) return this.codeCache.get(name);
    const v = this.codeUncached(name);
    if (this.codeCache.size > 5000) this.codeCache.clear();
    this.codeCache.set(name, v);
    return v;
  }

  private codeUncached(name: string): string | undefined {
    const n = name.trim();
    const configured = this.opts.codeSystems[n];
    if (configured) return configured;
    const up = n.toUpperCase();
    const known = CODE_SYSTEMS[up];
    if (known) return known;
    const tbl = /^HL7(\d{4})$/.exec(up) ?? /^HL7-?(\d{4})$/.exec(up);
    if (tbl) return `http://terminology.hl7.org/CodeSystem/v2-${tbl[1]}`;
    if (/^99[A-Z0-9]{3}$/.test(up) || up === 'L' || up === 'LOCAL')
      return `${this.opts.identifierSystemBase.replace(/:id:$/, ':cs:')}${encodeURIComponent(n)}`;
    if (OID.test(n)) return `urn:oid:${n}`;
    if (UUID.test(n)) return `urn:uuid:${n.toLowerCase()}`;
    if (URI.test(n)) return n;
    return `${this.opts.identifierSystemBase.replace(/:id:$/, ':cs:')}${encodeURIComponent(n)}`;
  }

  /**
   * An assigning authority -> identifier system: configured table (namespace, then universal id),
   * then an OID / UUID / URI universal id, then `<identifierSystemBase><namespace>`.
   */
  private readonly idCache = new Map<string, string | undefined>();
  identifier(namespace: string | undefined, universalId?: string, universalIdType?: string): string | undefined {
    const key = `${namespace ?? ''}\u0000${universalId ?? ''}\u0000${universalIdType ?? ''}`;
    if (this.idCache.has(key)) return this.idCache.get(key);
    const v = this.identifierUncached(namespace, universalId, universalIdType);
    if (this.idCache.size > 5000) this.idCache.clear();
    this.idCache.set(key, v);
    return v;
  }

  private identifierUncached(
    namespace: string | undefined,
    universalId?: string,
    universalIdType?: string,
  ): string | undefined {
    const t = this.opts.identifierSystems;
    if (namespace && t[namespace]) return t[namespace];
    if (universalId && t[universalId]) return t[universalId];
    if (universalId) {
      const u = universalId.trim();
      if (OID.test(u) || universalIdType === 'ISO') {
        if (OID.test(u)) return `urn:oid:${u}`;
      }
      if (UUID.test(u)) return `urn:uuid:${u.toLowerCase()}`;
      if (URI.test(u)) return u;
      if (!namespace) return `${this.opts.identifierSystemBase}${encodeURIComponent(u)}`;
    }
    if (namespace) return `${this.opts.identifierSystemBase}${encodeURIComponent(namespace.trim())}`;
    return undefined;
  }
}
