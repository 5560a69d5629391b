/** The athena facade provider's documents: admin lists, clinical and admin reads, clinical document creation. */
import { facadeError, FerryError, type FacadeCallContext, type FacadeRecord } from '@ferry/core';
import type { DocumentReference } from '@medplum/fhirtypes';
import { athenaSystem } from '@ferry/fhir-vendor-kit';
import { AthenaContentType, type AthenaEnvelope } from '../to-fhir/athena-records';
import type { AthenaFacadeProvider } from './athena.provider';
import { fhirDateToAthena } from './athena-dates';
import { callAthena } from './athena-errors';
import { patientDepartment } from './athena-patient-chart';

/**
 * A document's record. Its vendor id (kept in the identity table) is `{class}/{patientid}/{id}`:
 * athena reads a document only under its patient (reference 1.4), so a read by canonical id needs both.
 */
export function documentRecord(
  athena: AthenaFacadeProvider,
  record: Record<string, any>,
  department: Record<string, any> | undefined,
  feed: string,
): FacadeRecord {
  const env: AthenaEnvelope = {
    practiceid: athena.p,
    kind: 'document',
    feed,
    record,
    ...(department ? { department } : {}),
  };
  const cls = feed === 'documents/admin' ? 'admin' : 'clinical';
  const vendorId = `${cls}/${record.patientid}/${String(record.clinicaldocumentid ?? record.adminid ?? record.documentid)}`;
  return { contentType: AthenaContentType.document, body: Buffer.from(JSON.stringify(env)), vendorId };
}

/**
 * A document by the vendor id the facade recorded when it listed or created it: a clinical one
 * through `GET /patients/{patientid}/documents/clinicaldocument/{id}` [U], an admin one found in
 * the patient's `GET /patients/{patientid}/documents/admin` list (the reference has no admin read by id).
 */
export async function readDocument(
  athena: AthenaFacadeProvider,
  vendorId: string,
  ctx: FacadeCallContext,
): Promise<FacadeRecord | undefined> {
  const m = /^(admin|clinical)\/(\d+)\/(\d+)$/.exec(vendorId);
  if (!m)
    throw facadeError(
      'not-found',
      'athena reads a document only under its patient: find it with DocumentReference?patient= (or create it) through this facade first',
    );
  const [, cls, pid, id] = m;
  const { d, department } = await patientDepartment(athena, pid, ctx);
  if (cls === 'clinical') {
    const [rec] = await callAthena(() =>
      athena.conn.get<Record<string, any>[]>(`/patients/${pid}/documents/clinicaldocument/${id}`, undefined, {
        signal: ctx.signal,
      }),
    );
    if (!rec) return undefined;
    return documentRecord(
      athena,
      { ...rec, clinicaldocumentid: id, documentclass: rec.documentclass ?? 'CLINICALDOCUMENT', patientid: pid },
      department,
      'documents/clinicaldocument',
    );
  }
  for (let offset = 0; ;) {
    const body = await callAthena(() =>
      athena.conn.get<any>(
        `/patients/${pid}/documents/admin`,
        { departmentid: d, limit: '100', offset: String(offset) },
        { signal: ctx.signal },
      ),
    );
    const items: Record<string, any>[] = (Array.isArray(body) ? body : (body?.admins ?? [])).filter(
      (x: unknown) => !!x && typeof x === 'object',
    );
    const hit = items.find((x) => String(x.adminid ?? x.documentid) === id);
    if (hit)
      return documentRecord(athena, { documentclass: 'ADMIN', ...hit, patientid: pid }, department, 'documents/admin');
    if (!body?.next || !items.length) return undefined;
    offset += items.length;
  }
}

/** A patient's admin documents (reference 1.4 `GET /patients/{patientid}/documents/admin`, departmentid required; list key `admins` [U]). */
export async function restDocuments(
  athena: AthenaFacadeProvider,
  params: Record<string, string[]>,
  page: { cursor?: string; count: number },
  ctx: FacadeCallContext,
) {
  const pv = params.patient?.[0];
  if (!pv || (params.patient?.length ?? 0) > 1)
    throw facadeError(
      'invalid',
      'DocumentReference search through athena REST needs exactly one patient (GET /patients/{patientid}/documents/admin, reference 1.4)',
    );
  const { pid, d, department } = await patientDepartment(athena, pv, ctx);
  const offset = page.cursor ?? '0';
  if (!/^\d+$/.test(offset)) throw facadeError('invalid', '_cursor: not a document page of this connection');
  const body = await callAthena(() =>
    athena.conn.get<any>(
      `/patients/${encodeURIComponent(pid)}/documents/admin`,
      { departmentid: d, limit: String(page.count), offset },
      { signal: ctx.signal },
    ),
  );
  const items: Record<string, any>[] = (Array.isArray(body) ? body : (body?.admins ?? [])).filter(
    (x: unknown) => !!x && typeof x === 'object',
  );
  const records = items.map((x) =>
    documentRecord(athena, { documentclass: 'ADMIN', ...x, patientid: pid }, department, 'documents/admin'),
  );
  return {
    records,
    next: body?.next ? String(Number(offset) + items.length) : undefined,
    total: body?.totalcount !== undefined ? Number(body.totalcount) : undefined,
  };
}

/**
 * A clinical document (reference 1.4 `POST /documents/clinicaldocument`, `{clinicaldocumentid,
 * success}` / `{success:false, errormessage}`), read back from athena for the answer
 * (`GET /patients/{patientid}/documents/clinicaldocument/{id}` [U]). From the DocumentReference:
 * subject (the patient), type (the athena document subclass: a code of
 * `urn:athenahealth:athenanet:documentsubclass`, else the first coding), description (internal
 * note), context.period.start (document date), content[0].attachment (data base64, contentType).
 */
export async function createDocument(
  athena: AthenaFacadeProvider,
  doc: DocumentReference,
  ctx: FacadeCallContext,
): Promise<FacadeRecord> {
  const subject =
    doc.subject?.reference ??
    (doc.subject?.identifier?.system === athenaSystem('patient', athena.p) ? doc.subject.identifier.value : undefined);
  if (!subject) throw facadeError('invalid', 'DocumentReference.subject: a Patient of this connection is required');
  const codings = doc.type?.coding ?? [];
  const sub = (codings.find((c) => c.system === 'urn:athenahealth:athenanet:documentsubclass') ?? codings[0])?.code;
  if (!sub)
    throw facadeError(
      'invalid',
      'DocumentReference.type: the athena document subclass is required (coding urn:athenahealth:athenanet:documentsubclass, e.g. CONSULTNOTE)',
    );
  const att = doc.content?.[0]?.attachment;
  const { pid, d, department } = await patientDepartment(athena, subject, ctx);
  // The department the document names (context.related Location with athena's department system), else the patient's.
  const named = doc.context?.related?.find((x) => x.identifier?.system === athenaSystem('department', athena.p))
    ?.identifier?.value;
  const form: Record<string, string> = { patientid: pid, departmentid: named ?? d, documentsubclass: sub };
  if (doc.description) form.internalnote = doc.description;
  const date = doc.context?.period?.start ?? doc.date;
  if (date) form.documentdate = fhirDateToAthena(date);
  if (att?.data) form.attachmentcontents = att.data;
  if (att?.contentType) form.attachmenttype = att.contentType;
  const out = await callAthena(() =>
    athena.conn.write<Record<string, any>>('POST', '/documents/clinicaldocument', form, { signal: ctx.signal }),
  );
  const id = out?.clinicaldocumentid;
  if (!id)
    throw new FerryError(
      'VENDOR_BAD_RESPONSE',
      'athena POST /documents/clinicaldocument answered no clinicaldocumentid',
      { kind: 'transient' },
    );
  const [rec] = await callAthena(() =>
    athena.conn.get<Record<string, any>[]>(
      `/patients/${encodeURIComponent(pid)}/documents/clinicaldocument/${encodeURIComponent(String(id))}`,
      undefined,
      { signal: ctx.signal },
    ),
  );
  return documentRecord(
    athena,
    {
      ...(rec ?? form),
      clinicaldocumentid: String(id),
      documentclass: rec?.documentclass ?? 'CLINICALDOCUMENT',
      patientid: pid,
    },
    department,
    'documents/clinicaldocument',
  );
}
