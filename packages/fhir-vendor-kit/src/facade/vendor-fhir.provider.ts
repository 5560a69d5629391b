/**
 * The FHIR facade's generic provider for a vendor FHIR R4 API (Epic, Oracle Health/Cerner): raw
 * vendor resources with the same content type and headers the plugin's sources store (`idPrefix` of
 * the tenant), so the facade's answer is the pipeline's canonical resource. One path, `fhir`. Reads
 * `GET {base}/{type}/{id}`; searches one page at a time, the vendor's `next` link (an opaque server
 * session, vendor-apis.md 3.3) kept as the cursor; required search shapes completed from `defaults`
 * (Epic Appointment: `service-category=appointment`); MRN searches on the canonical MRN system are
 * translated to the tenant's MRN system (3.4). Each plugin registers it with its own profile
 * (plugins/epic/src/facade/epic.provider.ts, plugins/cerner/src/facade/cerner.provider.ts).
 */
import {
  FerryError,
  facadeError,
  type FacadeCallContext,
  type FacadeCapability,
  type FacadeProvider,
  type FacadeProviderContext,
  type FacadeProviderRegistration,
  type FacadeRecord,
} from '@ferry/core';
import type { Resource } from '@medplum/fhirtypes';
import type { connectionSchema } from '../connection';
import { VendorConnection, type ConnectionConfig } from '../connection';
import { etagVersion, FhirClient, refineVendorError } from '../fhir-client';
import { canonicalId, vendorHeaders, type VendorProfile } from '../normalize';
import type { NormalizeConfig } from '../transforms/vendor-fhir.transform';
import type { VendorConnections } from '../vendor-connections';

/** Search parameters per type the facade passes on (vendor-apis.md 3.3 required shapes; Cerner 4.3 takes the same). */
export const VENDOR_FHIR_FACADE_PARAMS: Record<string, string[]> = {
  Patient: ['_id', 'identifier', 'family', 'given', 'birthdate', 'gender'],
  Observation: ['patient', 'category', 'code', 'date'],
  Appointment: ['patient', 'service-category', 'date', 'status'],
  Condition: ['patient', 'category', 'clinical-status'],
  Encounter: ['patient', 'date'],
  MedicationRequest: ['patient', 'status', 'intent'],
  AllergyIntolerance: ['patient'],
  DiagnosticReport: ['patient', 'category', 'code', 'date'],
  DocumentReference: ['patient', 'category', 'type', 'date'],
  Immunization: ['patient', 'date'],
  Procedure: ['patient', 'date'],
};

export interface VendorFhirFacadeOptions {
  profile: VendorProfile;
  normalize: NormalizeConfig;
  params: Record<string, string[]>;
  writeTypes: string[];
  /** Types the vendor updates in place (`PUT {type}/{id}`): Epic Observation, DocumentReference (3.3); Cerner its writes (4.3). */
  updateTypes?: string[];
  /** Why those types only (CapabilityStatement documentation, README decision table). */
  updateNote?: string;
  /** Search parameters to add when absent (Epic Appointment: service-category=appointment). */
  defaults?: Record<string, Record<string, string>>;
  /** The engine's `VendorConnections` (`() => reg.container.resolve(vendorConnectionsToken)`); absent: the provider's own. */
  connections?: () => VendorConnections;
}

export class VendorFhirFacadeProvider implements FacadeProvider {
  readonly vendor: string;
  readonly conn: VendorConnection;
  readonly client: FhirClient;
  private readonly profile: VendorProfile;

  constructor(
    ctx: FacadeProviderContext<ConnectionConfig>,
    private readonly o: VendorFhirFacadeOptions,
  ) {
    this.vendor = o.profile.vendor;
    this.conn = new VendorConnection(o.profile.vendor, ctx.config, ctx.logger, { shared: o.connections?.() });
    this.client = new FhirClient(this.conn);
    this.profile = {
      ...o.profile,
      idPrefix: ctx.config.idPrefix || o.profile.idPrefix,
      mrnSystems: o.normalize.mrnSystems,
      canonicalMrnSystem: o.normalize.canonicalMrnSystem,
    };
  }

  capabilities(): FacadeCapability[] {
    const caps: FacadeCapability[] = [];
    for (const [type, searchParams] of Object.entries(this.o.params)) {
      caps.push({ type, interaction: 'read', path: 'fhir', contentType: this.profile.contentType });
      caps.push({ type, interaction: 'search', path: 'fhir', contentType: this.profile.contentType, searchParams });
    }
    for (const type of this.o.writeTypes)
      caps.push({ type, interaction: 'create', path: 'fhir', contentType: this.profile.contentType });
    for (const type of this.o.updateTypes ?? [])
      caps.push({
        type,
        interaction: 'update',
        path: 'fhir',
        contentType: this.profile.contentType,
        note: this.o.updateNote,
      });
    return caps;
  }

  defaultPaths(): Record<string, string[]> {
    return { '*': ['fhir'] };
  }

  vendorId(_type: string, id: string): string | undefined {
    const prefix = `${this.profile.idPrefix}-`;
    if (!id.startsWith(prefix)) return undefined;
    const v = id.slice(prefix.length);
    // A hashed canonical id (odd or long vendor ids) is found only through the identity table.
    return canonicalId(this.profile.idPrefix, v) === id ? v : undefined;
  }

  private record(raw: Resource): FacadeRecord {
    return {
      contentType: this.profile.contentType,
      body: Buffer.from(JSON.stringify(raw)),
      headers: vendorHeaders(raw, this.profile),
      vendorId: raw.id!,
    };
  }

  private refine(e: unknown): unknown {
    const r = refineVendorError(e);
    if (FerryError.is(r) && r.details?.status === 404)
      return facadeError('not-found', `not found at ${this.vendor}`, {}, r);
    // A stale If-Match (Cerner 409, 4.3) or a failed precondition: someone changed it since it was read.
    if (FerryError.is(r) && (r.details?.status === 409 || r.details?.status === 412))
      return facadeError(
        'conflict',
        `${this.vendor} refused the write: the resource changed since it was read (read it again)`,
        { vendorMessage: r.message },
        r,
      );
    if (
      FerryError.is(r) &&
      r.kind === 'input' &&
      !r.retryable &&
      typeof r.details?.status === 'number' &&
      (r.details.status as number) < 500
    )
      return facadeError(
        'invalid',
        `${this.vendor} refused the request: ${r.message}`,
        { vendorMessage: r.message },
        r,
      );
    return r;
  }

  async read(type: string, vendorId: string, ctx: FacadeCallContext): Promise<FacadeRecord | undefined> {
    try {
      const { resource } = await this.client.read(type, vendorId, ctx.signal);
      return resource?.resourceType === type ? this.record(resource) : undefined;
    } catch (e) {
      throw this.refine(e);
    }
  }

  async search(
    type: string,
    params: Record<string, string[]>,
    page: { cursor?: string; count: number },
    ctx: FacadeCallContext,
  ) {
    let url: string;
    let query: Record<string, string | string[]> | undefined;
    if (page.cursor) {
      if (!page.cursor.startsWith(`${this.conn.baseUrl}/`))
        throw facadeError('invalid', `_cursor: not a ${this.vendor} page of this connection`);
      url = page.cursor;
    } else {
      query = { ...(this.o.defaults?.[type] ?? {}), _count: String(page.count) };
      for (const [k, vs] of Object.entries(params)) {
        const out: string[] = [];
        for (const v of vs) {
          if (k === 'patient' || k === 'subject') {
            const r = await ctx.resolve(v.includes('/') ? v : `Patient/${v}`);
            if (!r) throw facadeError('invalid', `${k}: not a patient of this connection`);
            out.push(r.vendorId);
          } else if (k === 'identifier' && v.startsWith(`${this.profile.canonicalMrnSystem}|`)) {
            // The canonical MRN system is the tenant's own (first configured) MRN system at the vendor.
            out.push(`${this.profile.mrnSystems[0]}|${v.slice(this.profile.canonicalMrnSystem.length + 1)}`);
          } else out.push(v);
        }
        query[k] = out.length === 1 ? out[0] : out;
      }
      url = type;
    }
    let body: any;
    try {
      body = (
        await this.conn.http.request({ url, query, signal: ctx.signal, headers: { Accept: 'application/fhir+json' } })
      ).json();
    } catch (e) {
      throw this.refine(e);
    }
    if (body?.resourceType !== 'Bundle')
      throw new FerryError('VENDOR_BAD_RESPONSE', `${this.vendor} search ${type} did not answer a Bundle`, {
        kind: 'transient',
      });
    // Epic: an empty result is an OperationOutcome entry (search.mode=outcome, 4101), not data (3.3).
    const records = (body.entry ?? [])
      .map((e: any) => e.resource)
      .filter((r: Resource | undefined): r is Resource => r?.resourceType === type && !!r.id)
      .map((r: Resource) => this.record(r));
    const next = (body.link ?? []).find((l: any) => l.relation === 'next' && l.url)?.url as string | undefined;
    return { records, next };
  }

  /**
   * A canonical resource in the vendor's form: its id the vendor's (or none), Ferry's meta tags
   * dropped, every canonical reference (`Patient/epic-<id>`) mapped to the vendor's id through the
   * identity table or the id scheme (a Patient reference that is not this connection's: 422), and
   * the canonical MRN system back to the tenant's.
   */
  private async toVendor(resource: Resource, ctx: FacadeCallContext, vendorId?: string): Promise<Resource> {
    const out = structuredClone(resource) as any;
    if (vendorId) out.id = vendorId;
    else delete out.id;
    if (out.meta) {
      out.meta.tag = (out.meta.tag ?? []).filter(
        (t: { system?: string }) => !String(t.system ?? '').startsWith('urn:ferry:'),
      );
      if (!out.meta.tag.length) delete out.meta.tag;
      delete out.meta.versionId;
      delete out.meta.lastUpdated;
      if (!Object.keys(out.meta).length) delete out.meta;
    }
    const refs: Record<string, any>[] = [];
    const mrns: Record<string, any>[] = [];
    const walk = (n: any): void => {
      if (Array.isArray(n)) return n.forEach(walk);
      if (!n || typeof n !== 'object') return;
      if (typeof n.reference === 'string' && /^[A-Z][A-Za-z]+\//.test(n.reference)) refs.push(n);
      if (typeof n.system === 'string' && n.system === this.profile.canonicalMrnSystem && typeof n.value === 'string')
        mrns.push(n);
      for (const v of Object.values(n)) walk(v);
    };
    walk(out);
    for (const o of refs) {
      const r = await ctx.resolve(o.reference);
      if (r) o.reference = `${r.type}/${r.vendorId}`;
      else if (o.reference.startsWith('Patient/'))
        throw facadeError(
          'invalid',
          `a Patient reference is not a patient of this connection (use the id the facade answers)`,
        );
    }
    for (const i of mrns) if (this.profile.mrnSystems[0]) i.system = this.profile.mrnSystems[0];
    return out as Resource;
  }

  async create(type: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (!this.o.writeTypes.includes(type)) throw facadeError('not-supported', `create of ${type} at ${this.vendor}`);
    const body = await this.toVendor(resource, ctx);
    let created: { id?: string };
    try {
      created = await this.client.create(body, ctx.signal);
    } catch (e) {
      throw this.refine(e);
    }
    if (!created.id)
      throw new FerryError('VENDOR_BAD_RESPONSE', `${this.vendor} created the ${type} but answered no Location`, {
        kind: 'transient',
      });
    return (await this.read(type, created.id, ctx))!;
  }

  /**
   * Update in place: `PUT {type}/{id}` with `If-Match` -- the vendor version the client read (the
   * canonical resource's `urn:ferry:<vendor>:version` tag), so a stale write is the vendor's 409,
   * answered `conflict`; without that tag, the version current at the vendor (last write wins).
   * Answers the resource read back.
   */
  async update(type: string, vendorId: string, resource: Resource, ctx: FacadeCallContext): Promise<FacadeRecord> {
    if (!(this.o.updateTypes ?? []).includes(type))
      throw facadeError('not-supported', `update of ${type} at ${this.vendor}`);
    const read = resource.meta?.tag?.find((t) => t.system === `urn:ferry:${this.vendor}:version`)?.code;
    const body = await this.toVendor(resource, ctx, vendorId);
    try {
      let version = read;
      if (!version) {
        const current = await this.client.read(type, vendorId, ctx.signal);
        version = etagVersion(current.etag) ?? current.resource.meta?.versionId;
      }
      await this.client.update(body, version ? `W/"${version}"` : undefined, ctx.signal);
    } catch (e) {
      throw this.refine(e);
    }
    const back = await this.read(type, vendorId, ctx);
    if (!back) throw facadeError('not-found', `${type} not found at ${this.vendor} after the update`);
    return back;
  }
}

export function vendorFhirFacadeProvider(
  base: Omit<VendorFhirFacadeOptions, 'normalize'>,
  normalize: () => NormalizeConfig,
  schema: ReturnType<typeof connectionSchema>,
  types: { sourceTypes: string[]; sinkTypes: string[] },
): FacadeProviderRegistration {
  return {
    connectionSchema: schema,
    ...types,
    create: (ctx) => new VendorFhirFacadeProvider(ctx, { ...base, normalize: normalize() }),
  };
}
