/** The facade's read routes: health, metadata, read, search and `Patient/{id}/$identities` (links by key and `$link`). */
import type { FastifyInstance } from 'fastify';
import type { Identifier, Parameters as FhirParameters, Patient, Resource } from '@medplum/fhirtypes';
import { FerryError } from '../errors';
import { CONNECTION_ID_SYSTEM } from './facade.service';
import type { FacadeContext } from './facade-context';
import { FHIR_JSON } from './facade-outcome';

export function registerFacadeReadRoutes(app: FastifyInstance, ctx: FacadeContext): void {
  const {
    service,
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
  } = ctx;

  app.get('/health', cfg('/health', 'GET'), async () => ({ status: 'ok' }));

  app.get<{ Params: { conn: string } }>(
    '/fhir/:conn/metadata',
    cfg('/fhir/:conn/metadata', 'GET'),
    async (req, reply) => {
      reply.type(FHIR_JSON);
      return service.capabilityStatement(req.params.conn, base(req));
    },
  );

  app.get<{ Params: { conn: string; type: string; id: string } }>(
    '/fhir/:conn/:type/:id',
    cfg('/fhir/:conn/:type/:id', 'GET'),
    async (req, reply) => {
      const { conn, type, id } = req.params;
      checkType(type);
      checkId(id);
      try {
        const r = await withTimeout((signal) => service.read(conn, type, id, signal));
        let resource = r.resource;
        let links = '';
        if (type === 'Patient' && service.connections.get(conn)?.entry.facade.identity?.linkedIdentifiers) {
          // The same patient at the other connections this client may read, as identifiers.
          const others = (await visibleIdentities(req, conn, resource.id!)).filter((i) => i.connection !== conn);
          const extra: Identifier[] = others.map((i) => ({
            use: 'secondary',
            system: `${CONNECTION_ID_SYSTEM}${i.connection}`,
            value: i.id,
          }));
          if (extra.length)
            resource = { ...resource, identifier: [...((resource as Patient).identifier ?? []), ...extra] } as Resource;
          links = ` links=${extra.length}`;
        }
        await audit(req, {
          action: 'facade.read',
          result: 'ok',
          target: target(req),
          detail: `${type}/${r.resource.id} from=${r.from} path=${r.path}${links}`,
        });
        reply.header('x-ferry-source', r.from);
        return reply.type(FHIR_JSON).send(resource);
      } catch (e) {
        await audit(req, {
          action: 'facade.read',
          result: 'error',
          target: target(req),
          detail: `${type}/${id} ${(e as FerryError).code ?? 'error'}`,
        });
        throw e;
      }
    },
  );

  app.get<{ Params: { conn: string; type: string } }>(
    '/fhir/:conn/:type',
    cfg('/fhir/:conn/:type', 'GET'),
    async (req, reply) => {
      const { conn, type } = req.params;
      checkType(type);
      try {
        const r = await withTimeout((signal) => service.search(conn, type, queryOf(req), signal));
        const b = base(req);
        const self = `${b}${req.url}`;
        const bundle = {
          resourceType: 'Bundle',
          type: 'searchset',
          ...(r.total !== undefined ? { total: r.total } : {}),
          link: [
            { relation: 'self', url: self },
            ...(r.next
              ? [
                  {
                    relation: 'next',
                    url: `${b}/fhir/${encodeURIComponent(conn)}/${type}?_count=${r.count}&_cursor=${encodeURIComponent(r.next)}`,
                  },
                ]
              : []),
          ],
          entry: r.resources.map((res) => ({
            fullUrl: `${b}/fhir/${encodeURIComponent(conn)}/${res.resourceType}/${res.id}`,
            resource: res,
            search: { mode: 'match' },
          })),
        };
        await audit(req, {
          action: 'facade.search',
          result: 'ok',
          target: target(req),
          detail: `${type} count=${r.resources.length} path=${r.path}${
            r.resources.length
              ? ` ids=${r.resources
                  .map((x) => x.id)
                  .join(',')
                  .slice(0, 1500)}`
              : ''
          }`,
        });
        return reply.type(FHIR_JSON).send(bundle);
      } catch (e) {
        await audit(req, {
          action: 'facade.search',
          result: 'error',
          target: target(req),
          detail: `${type} ${(e as FerryError).code ?? 'error'}`,
        });
        throw e;
      }
    },
  );

  app.get<{ Params: { conn: string; type: string; id: string; op: string } }>(
    '/fhir/:conn/:type/:id/:op',
    cfg('/fhir/:conn/:type/:id/:op', 'GET'),
    async (req, reply) => {
      const { conn, type, id, op } = req.params;
      if (type !== 'Patient' || op !== '$identities')
        throw new FerryError(
          'INPUT_FACADE_OPERATION',
          `unknown operation ${type}/:id/${op.slice(0, 40)} (GET Patient/{id}/$identities)`,
          { kind: 'input' },
        );
      checkId(id);
      const ids = await visibleIdentities(req, conn, id);
      const params: FhirParameters = { resourceType: 'Parameters', parameter: identityParameters(req, ids) };
      await audit(req, {
        action: 'facade.identities',
        result: 'ok',
        target: target(req),
        detail: `Patient/${id} links=${ids.length}`,
      });
      return reply.type(FHIR_JSON).send(params);
    },
  );
}
