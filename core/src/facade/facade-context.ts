/**
 * What the facade's guard and route handlers share: the route table with each route's scope, the
 * audit trail (group commit) and the per-request helpers (target, base URL, vendor timeout, checks).
 */
import type { FastifyRequest } from 'fastify';
import type { Parameters as FhirParameters } from '@medplum/fhirtypes';
import type { ApiConfig } from '../config/engine.schema';
import { FerryError } from '../errors';
import type { AuditEntry, MessageStore } from '../store/message-store';
import { principalLabel } from '../admin/guard';
import { hasScope, topRole, type Principal } from '../admin/roles';
import type { FacadeService } from './facade.service';

export type FacadeAccess = 'public' | 'read' | 'write';

/** Every facade route with the scope it needs (the scope-matrix test walks this list). */
export const FACADE_ROUTES: { method: 'GET' | 'POST' | 'PUT'; url: string; access: FacadeAccess }[] = [
  { method: 'GET', url: '/health', access: 'public' },
  { method: 'GET', url: '/fhir/:conn/metadata', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type/:id', access: 'read' },
  { method: 'GET', url: '/fhir/:conn/:type/:id/:op', access: 'read' },
  { method: 'POST', url: '/fhir/:conn/:type', access: 'write' },
  { method: 'PUT', url: '/fhir/:conn/:type/:id', access: 'write' },
  { method: 'POST', url: '/fhir/:conn/:type/:id/:op', access: 'write' },
];

declare module 'fastify' {
  interface FastifyRequest {
    facadePrincipal?: Principal;
  }
  interface FastifyContextConfig {
    access?: FacadeAccess;
  }
}

/**
 * Audit entries of concurrent requests written in one transaction (group commit): each caller's
 * promise resolves once its entry is durable; entries arriving during a commit go in the next.
 */
export class AuditBatcher {
  private queue: { entry: AuditEntry; resolve(): void; reject(e: unknown): void }[] = [];
  private running = false;
  constructor(private readonly store: Pick<MessageStore, 'appendAudit'>) {}
  append(entry: AuditEntry): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ entry, resolve, reject });
      if (!this.running) void this.drain();
    });
  }
  private async drain(): Promise<void> {
    this.running = true;
    // Let the requests of this event-loop turn join the first commit.
    await new Promise((r) => setImmediate(r));
    while (this.queue.length) {
      const batch = this.queue.splice(0, 512);
      try {
        await this.store.appendAudit(batch.map((b) => b.entry));
        for (const b of batch) b.resolve();
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    }
    this.running = false;
  }
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export interface FacadeContext {
  api: ApiConfig;
  service: FacadeService;
  store: MessageStore;
  /** Audited before the answer is sent; concurrent requests share one durable commit. */
  audit: (req: FastifyRequest, e: Omit<AuditEntry, 'principal'>) => Promise<void>;
  /** The route pattern with the connection and type filled in (never the id or the query: they may hold PHI). */
  target: (req: FastifyRequest) => string;
  base: (req: FastifyRequest) => string;
  withTimeout: <T>(fn: (signal: AbortSignal) => Promise<T>) => Promise<T>;
  checkType: (type: string) => void;
  checkId: (id: string) => void;
  queryOf: (req: FastifyRequest) => Record<string, string[]>;
  /** A patient's identities at the connections this client may read (another connection's patient is its PHI). */
  visibleIdentities: (req: FastifyRequest, conn: string, id: string) => Promise<{ connection: string; id: string }[]>;
  cfg: (url: string, method: string) => { config: { access: FacadeAccess } };
  /** Identities as `Parameters.parameter` entries: `identity` { connection, patient: Reference(<base>/fhir/<conn>/Patient/<id>) }. */
  identityParameters: (
    req: FastifyRequest,
    ids: { connection: string; id: string }[],
  ) => NonNullable<FhirParameters['parameter']>;
}

export function facadeContext(
  api: ApiConfig,
  service: FacadeService,
  store: MessageStore,
  now: () => number,
): FacadeContext {
  const audits = new AuditBatcher(store);
  /** Audited before the answer is sent; concurrent requests share one durable commit. */
  const audit = async (req: FastifyRequest, e: Omit<AuditEntry, 'principal'>): Promise<void> => {
    const p = req.facadePrincipal;
    await audits.append({
      ...e,
      at: new Date(now()),
      principal: p ? principalLabel(p) : 'anonymous',
      role: p ? topRole(p) : undefined,
      remote: req.ip,
    });
  };
  /** The route pattern with the connection and type filled in (never the id or the query: they may hold PHI). */
  const target = (req: FastifyRequest) => {
    const prm = req.params as { conn?: string; type?: string; op?: string };
    return `${req.method} /fhir/${prm.conn ?? '?'}${prm.type ? `/${prm.type}` : ''}${(req.routeOptions.url ?? '').includes(':id') ? '/:id' : ''}${prm.op ? `/${prm.op}` : ''}`;
  };

  const base = (req: FastifyRequest) =>
    api.publicUrl
      ? api.publicUrl.replace(/\/+$/, '')
      : `${req.protocol}://${req.headers.host ?? `${api.host}:${api.port}`}`;
  const withTimeout = <T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    const ac = new AbortController();
    const t = api.vendorTimeoutMs
      ? setTimeout(
          () =>
            ac.abort(
              new FerryError('INPUT_FACADE_TIMEOUT', `the vendor did not answer within ${api.vendorTimeoutMs} ms`, {
                kind: 'input',
              }),
            ),
          api.vendorTimeoutMs,
        )
      : undefined;
    return fn(ac.signal)
      .catch((e) => Promise.reject(ac.signal.aborted ? ac.signal.reason : e))
      .finally(() => t && clearTimeout(t));
  };
  const checkType = (type: string) => {
    if (!RESOURCE_TYPE.test(type))
      throw new FerryError('INPUT_FACADE_TYPE', `not a resource type: ${type.slice(0, 64)}`, { kind: 'input' });
  };
  const checkId = (id: string) => {
    if (!ID.test(id)) throw new FerryError('INPUT_FACADE_ID', 'not a FHIR id', { kind: 'input' });
  };
  const queryOf = (req: FastifyRequest): Record<string, string[]> => {
    const out: Record<string, string[]> = {};
    for (const [k, v] of new URL(req.url, 'http://x').searchParams) (out[k] ??= []).push(v);
    return out;
  };

  /** A patient's identities at the connections this client may read (another connection's patient is its PHI). */
  const visibleIdentities = async (req: FastifyRequest, conn: string, id: string) => {
    const p = req.facadePrincipal!;
    return (await service.identities(conn, id)).filter(
      (i) => i.connection === conn || hasScope(p, i.connection, 'read'),
    );
  };

  const cfg = (url: string, method: string) => ({
    config: { access: FACADE_ROUTES.find((r) => r.url === url && r.method === method)!.access },
  });

  const identityParameters = (req: FastifyRequest, ids: { connection: string; id: string }[]) =>
    ids.map((i) => ({
      name: 'identity',
      part: [
        { name: 'connection', valueString: i.connection },
        { name: 'patient', valueReference: { reference: `${base(req)}/fhir/${i.connection}/Patient/${i.id}` } },
      ],
    }));

  return {
    api,
    service,
    store,
    audit,
    target,
    base,
    withTimeout,
    checkType,
    checkId,
    queryOf,
    visibleIdentities,
    cfg,
    identityParameters,
  };
}
