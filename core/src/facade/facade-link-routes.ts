/**
 * `POST /fhir/{conn}/Patient/{id}/$link` and `$unlink`: an explicit link between the patient and one
 * at another connection, for EHRs that share no identifier. The body is a Parameters resource naming
 * the other patient -- `connection` (valueString) and `patient` (valueReference `Patient/<id>`), or
 * `patient` alone as the facade's own URL `<base>/fhir/<conn>/Patient/<id>` (what `$identities`
 * answers). The route's guard checks `connection:{conn}:write`; this checks the same scope on the
 * other connection (403, audited `access.denied`). Idempotent by nature: linking twice, or unlinking
 * what is not linked, answers 200 (`outcome`: `linked`, `already-linked`, `unlinked`, `not-linked`)
 * with the patient's identities the client may read. Audited `facade.link` / `facade.unlink`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Parameters as FhirParameters } from '@medplum/fhirtypes';
import { AuthError } from '../admin/auth';
import { principalLabel } from '../admin/guard';
import { hasScope } from '../admin/roles';
import { FerryError, inputError } from '../errors';
import type { FacadeContext } from './facade-context';
import { FHIR_JSON } from './facade-outcome';

/** The other patient a `$link` / `$unlink` body names. */
export function linkTarget(body: unknown): { connection: string; id: string } {
  const usage =
    'the body must be Parameters { connection: valueString <connection id>, patient: valueReference Patient/<id> } ' +
    '(or patient: <base>/fhir/<connection>/Patient/<id> alone)';
  const p = body as FhirParameters | null;
  if (!p || typeof p !== 'object' || p.resourceType !== 'Parameters') throw inputError('FACADE_BODY', usage);
  const param = (name: string) => p.parameter?.find((x) => x.name === name);
  const c = param('connection');
  const named = c?.valueString ?? c?.valueCode ?? c?.valueId;
  const pat = param('patient');
  const ref = pat?.valueReference?.reference ?? pat?.valueString;
  const m = typeof ref === 'string' ? /^(?:.*\/fhir\/([^/]+)\/)?Patient\/([^/]+)$/.exec(ref) : null;
  if (!m) throw inputError('FACADE_BODY', usage);
  const inRef = m[1] ? decodeURIComponent(m[1]) : undefined;
  if (named !== undefined && inRef !== undefined && named !== inRef)
    throw inputError('FACADE_BODY', `connection "${named}" differs from the patient reference's (${inRef})`);
  const connection = named ?? inRef;
  if (!connection) throw inputError('FACADE_BODY', usage);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(connection))
    throw inputError('FACADE_BODY', 'connection: not a connection id (letters, digits, dot, dash, underscore)');
  return { connection, id: m[2] };
}

export async function linkOperation(
  ctx: FacadeContext,
  req: FastifyRequest<{ Params: { conn: string; type: string; id: string; op: string } }>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const { service, audit, target, withTimeout, checkId, visibleIdentities, identityParameters } = ctx;
  const { conn, id, op } = req.params;
  const action = op === '$link' ? 'facade.link' : 'facade.unlink';
  const p = req.facadePrincipal!;
  let other: { connection: string; id: string };
  try {
    other = linkTarget(req.body);
    checkId(other.id);
  } catch (e) {
    await audit(req, { action, result: 'error', target: target(req), detail: `Patient/${id} ${codeOf(e)}` });
    throw e;
  }
  const pair = `Patient/${id} with=${other.connection}/Patient/${other.id}`;
  // Write on both connections: the guard checked the URL's.
  if (!hasScope(p, other.connection, 'write')) {
    await audit(req, {
      action: 'access.denied',
      result: 'denied',
      target: target(req),
      detail: `needs connection:${other.connection}:write (${op})`,
    });
    throw new AuthError(
      403,
      `forbidden: ${op} needs scope connection:${other.connection}:write too`,
      `needs connection:${other.connection}:write`,
    );
  }
  let changed: boolean;
  try {
    changed =
      op === '$link'
        ? await withTimeout((signal) => service.link(conn, id, other, principalLabel(p), signal))
        : await service.unlink(conn, id, other);
  } catch (e) {
    await audit(req, { action, result: 'error', target: target(req), detail: `${pair} ${codeOf(e)}` });
    throw e;
  }
  const outcome = op === '$link' ? (changed ? 'linked' : 'already-linked') : changed ? 'unlinked' : 'not-linked';
  // After an unlink the patient may be one the facade never answered (no identity): none to list then.
  const ids = await visibleIdentities(req, conn, id).catch((e) =>
    FerryError.is(e) && e.details?.facadeIssue === 'not-found' ? [] : Promise.reject(e),
  );
  await audit(req, { action, result: 'ok', target: target(req), detail: `${pair} ${outcome} links=${ids.length}` });
  const params: FhirParameters = {
    resourceType: 'Parameters',
    parameter: [{ name: 'outcome', valueCode: outcome }, ...identityParameters(req, ids)],
  };
  return reply.code(200).type(FHIR_JSON).send(params);
}

function codeOf(e: unknown): string {
  return (e as FerryError)?.code ?? 'error';
}
