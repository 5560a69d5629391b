/**
 * The facade's write routes (create, update, Appointment `$book`/`$cancel`/`$checkin`) under
 * `Idempotency-Key`; Patient `$link`/`$unlink` (idempotent by nature) in facade-link-routes.ts.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Parameters as FhirParameters, Resource } from '@medplum/fhirtypes';
import { FerryError } from '../errors';
import type { FacadeContext } from './facade-context';
import { linkOperation } from './facade-link-routes';
import { errorAnswer, FHIR_JSON, outcome } from './facade-outcome';

export function registerFacadeWriteRoutes(app: FastifyInstance, ctx: FacadeContext): void {
  const { api, service, store, audit, target, base, withTimeout, checkType, checkId, cfg } = ctx;

  /** Runs a write under its Idempotency-Key (if any): a retry gets the first answer, never a second write. */
  type WriteAnswer = { status: number; body: Resource; location?: string; ok: boolean; error?: unknown };
  const idempotent = async (
    req: FastifyRequest,
    reply: FastifyReply,
    action: string,
    fn: () => Promise<{ status: number; body: Resource; location?: string }>,
  ): Promise<FastifyReply> => {
    const key = req.headers['idempotency-key'];
    const p = req.facadePrincipal!;
    const conn = (req.params as { conn: string }).conn;
    const send = (status: number, body: unknown, location?: string) => {
      if (location) reply.header('location', location);
      return reply.code(status).type(FHIR_JSON).send(body);
    };
    const run = async (): Promise<WriteAnswer> => {
      try {
        const r = await fn();
        return { ...r, ok: true };
      } catch (e) {
        const a = errorAnswer(e);
        if (a.status >= 500) throw e;
        return { status: a.status, body: a.body as Resource, ok: false, location: undefined, error: e };
      }
    };
    if (key === undefined) {
      const r = await run();
      await audit(req, { action, result: r.ok ? 'ok' : 'error', target: target(req), detail: detailOf(r) });
      return send(r.status, r.body, r.location);
    }
    if (typeof key !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(key))
      throw new FerryError('INPUT_FACADE_IDEMPOTENCY_KEY', 'Idempotency-Key: 1 to 200 visible ASCII characters', {
        kind: 'input',
      });
    const f = store.facade;
    if (!f) throw new FerryError('INTERNAL_FACADE_STORE', 'the store has no facade tables', { kind: 'internal' });
    const scope = `${conn}|${p.id}`;
    const hash = createHash('sha256')
      .update(`${req.method} ${req.url}\n${JSON.stringify(req.body ?? null)}`)
      .digest('hex');
    const st = await f.facadeIdempotencyBegin(scope, key, hash, api.idempotencyHours * 3_600_000);
    if (st.state !== 'new') {
      if (st.requestHash !== hash) {
        await audit(req, {
          action,
          result: 'denied',
          target: target(req),
          detail: 'idempotency key reused with another request',
        });
        return send(422, outcome('business-rule', 'Idempotency-Key already used for another request'));
      }
      if (st.state === 'pending')
        return send(409, outcome('conflict', 'a request with this Idempotency-Key is still in progress; retry later'));
      const saved = JSON.parse(st.response) as { body: unknown; location?: string };
      reply.header('idempotency-replayed', 'true');
      await audit(req, { action, result: 'ok', target: target(req), detail: `replayed status=${st.status}` });
      return send(st.status, saved.body, saved.location);
    }
    let r: WriteAnswer;
    try {
      r = await run();
    } catch (e) {
      // Vendor unreachable, timeout, internal: nothing known to be written; a retry may run it again.
      await f.facadeIdempotencyRelease(scope, key).catch(() => undefined);
      await audit(req, { action, result: 'error', target: target(req), detail: (e as FerryError).code ?? 'error' });
      throw e;
    }
    await f.facadeIdempotencyFinish(scope, key, r.status, JSON.stringify({ body: r.body, location: r.location }));
    await audit(req, { action, result: r.ok ? 'ok' : 'error', target: target(req), detail: detailOf(r) });
    return send(r.status, r.body, r.location);
  };
  const detailOf = (r: { ok: boolean; status: number; body: Resource; error?: unknown }) =>
    r.ok
      ? `${r.body.resourceType}/${r.body.id} status=${r.status}`
      : `status=${r.status} ${(r.error as FerryError)?.code ?? ''}`.trim();

  const bodyResource = (req: FastifyRequest, type: string): Resource => {
    const b = req.body as Resource | null;
    if (!b || typeof b !== 'object' || b.resourceType !== type)
      throw new FerryError('INPUT_FACADE_BODY', `the body must be a ${type} resource (application/fhir+json)`, {
        kind: 'input',
      });
    return b;
  };

  app.post<{ Params: { conn: string; type: string } }>(
    '/fhir/:conn/:type',
    cfg('/fhir/:conn/:type', 'POST'),
    async (req, reply) => {
      const { conn, type } = req.params;
      checkType(type);
      return idempotent(req, reply, 'facade.create', async () => {
        const r = await withTimeout((signal) =>
          service.write(conn, type, 'create', { resource: bodyResource(req, type) }, signal),
        );
        return { status: 201, body: r.resource, location: `${base(req)}/fhir/${conn}/${type}/${r.resource.id}` };
      });
    },
  );

  app.put<{ Params: { conn: string; type: string; id: string } }>(
    '/fhir/:conn/:type/:id',
    cfg('/fhir/:conn/:type/:id', 'PUT'),
    async (req, reply) => {
      const { conn, type, id } = req.params;
      checkType(type);
      checkId(id);
      return idempotent(req, reply, 'facade.update', async () => {
        const resource = bodyResource(req, type);
        if (resource.id && resource.id !== id)
          throw new FerryError('INPUT_FACADE_BODY', 'the body id differs from the URL id', { kind: 'input' });
        const r = await withTimeout((signal) => service.write(conn, type, 'update', { resource, id }, signal));
        return { status: 200, body: r.resource };
      });
    },
  );

  app.post<{ Params: { conn: string; type: string; id: string; op: string } }>(
    '/fhir/:conn/:type/:id/:op',
    cfg('/fhir/:conn/:type/:id/:op', 'POST'),
    async (req, reply) => {
      const { conn, type, id, op } = req.params;
      checkType(type);
      checkId(id);
      if (type === 'Patient' && (op === '$link' || op === '$unlink')) return linkOperation(ctx, req, reply);
      if (op !== '$book' && op !== '$cancel' && op !== '$checkin')
        throw new FerryError(
          'INPUT_FACADE_OPERATION',
          `unknown operation ${op.slice(0, 40)} (Appointment/{id}/$book, Appointment/{id}/$cancel, Appointment/{id}/$checkin, Patient/{id}/$link, Patient/{id}/$unlink)`,
          { kind: 'input' },
        );
      const body = (req.body ?? {}) as FhirParameters | Resource;
      const param = (name: string) =>
        body.resourceType === 'Parameters'
          ? (body as FhirParameters).parameter?.find((x) => x.name === name)
          : undefined;
      return idempotent(req, reply, `facade.${op.slice(1)}`, async () => {
        if (op === '$book') {
          const patient =
            param('patient')?.valueReference?.reference ??
            (body.resourceType === 'Appointment'
              ? (body as any).participant?.find((x: any) => /^Patient\//.test(x.actor?.reference ?? ''))?.actor
                  ?.reference
              : undefined);
          if (!patient)
            throw new FerryError(
              'INPUT_FACADE_BODY',
              '$book needs the patient: Parameters { patient: Reference(Patient/<id>) } or an Appointment with a Patient participant',
              { kind: 'input' },
            );
          const appointmentType = param('appointmentType')?.valueString ?? param('appointmentType')?.valueCode;
          const r = await withTimeout((signal) =>
            service.write(
              conn,
              type,
              'book',
              {
                id,
                patient,
                appointmentType,
                resource: body.resourceType === 'Appointment' ? (body as Resource) : undefined,
              },
              signal,
            ),
          );
          return { status: 200, body: r.resource };
        }
        if (op === '$checkin') {
          const r = await withTimeout((signal) => service.write(conn, type, 'checkin', { id }, signal));
          return { status: 200, body: r.resource };
        }
        const reason = param('reason')?.valueString;
        const r = await withTimeout((signal) => service.write(conn, type, 'cancel', { id, reason }, signal));
        return { status: 200, body: r.resource };
      });
    },
  );
}
